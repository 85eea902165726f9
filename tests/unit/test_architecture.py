"""The structure of the code, checked from the code itself (issue 15).

Dependencies run one way, top to bottom (README "Architecture")::

    cli, server, agent           entry points: build the process, may use everything (the agent: HTTP only)
    api                          HTTP only: routes, auth, the one error table, the dashboard
    mirror                       pull-through mirrors (its upstream client is its only HTTP)
    registry | hosts             reads and pushes (HTTP-free services) | the registry's side of host agents
    lifecycle                    every delete, trash, restore, purge, retention, gc, scrub, fsck, jobs
    cache                        the per-replica blob cache in front of storage reads
    meta | storage               the only SQL | the storage drivers
    logsetup, progress           logging and progress output
    config, validate             the settings; client-input checks
    policies, errors, access, events, quotas    documents, the domain error tree, pure definitions
    oci, values, clock, faults, metrics, lru    pure parsing and small leaf modules

Every import counts, function-local ones too (a local import is no way around a rule).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "dockyard"

RANK = {
    "oci": 0, "values": 0, "clock": 0, "faults": 0, "metrics": 0, "lru": 0, "report": 0,
    "policies": 1, "errors": 1, "access": 1,
    "config": 2, "validate": 2,
    "logsetup": 3, "progress": 3,
    "meta": 4, "storage": 4,
    "cache": 4.5,
    "lifecycle": 5,
    "registry": 6, "hosts": 6,
    "mirror": 6.5,
    "api": 7,
    "server": 8, "cli": 9, "__main__": 10,
    "agent": 8,
}
RANK.update({"events": 1, "quotas": 1})


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in SRC.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out[name] = ast.parse(path.read_text(), str(path))
    return out


MODULES = _modules()


def _unit(module: str) -> str:
    """``dockyard.meta.blobs`` -> ``meta``; ``dockyard.config`` -> ``config``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "dockyard"


def _imports(tree: ast.Module, module: str) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dockyard"):
            if node.module == "dockyard":  # from dockyard import faults (a module) or __version__
                found += [(f"dockyard.{a.name}" if f"dockyard.{a.name}" in MODULES else "dockyard", node.lineno)
                          for a in node.names]
            else:
                base = node.module
                found += [(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base, node.lineno)
                          for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("dockyard")]
    return found


def test_every_package_has_a_rank():
    assert {_unit(m) for m in MODULES} - {"dockyard"} <= set(RANK)


def test_dependencies_run_one_way():
    wrong = []
    for module, tree in MODULES.items():
        src = _unit(module)
        for target, line in _imports(tree, module):
            dst = _unit(target)
            if dst in (src, "dockyard"):
                continue
            if RANK[dst] >= RANK[src]:
                wrong.append(f"{module}:{line} imports {target} ({src} may not depend on {dst})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = defaultdict(set)
    for module, tree in MODULES.items():
        for target, _ in _imports(tree, module):
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != module and target in MODULES and not MODULES[target].body == []:
                graph[module].add(target)
    # packages' __init__ re-export nothing here, so a cycle through one is a real cycle
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()

    for m in sorted(MODULES):
        visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_sql_only_in_meta():
    wrong = [f"{m}:{line}" for m, tree in MODULES.items() if _unit(m) != "meta"
             for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for line in [node.lineno]
             if (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("sqlalchemy", "alembic"))
             or (isinstance(node, ast.Import) and any(a.name.split(".")[0] in ("sqlalchemy", "alembic")
                                                      for a in node.names))]
    assert not wrong, wrong


def test_storage_deletes_only_in_the_collector():
    allowed = {"dockyard.lifecycle.deleter"}  # the collector's delete pool
    wrong = []
    for module, tree in MODULES.items():
        if module in allowed or _unit(module) == "storage":
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("delete", "delete_many")
                    and "storage" in ast.unparse(node.func.value)):
                wrong.append(f"{module}:{node.lineno}: {ast.unparse(node.func)}")
    assert not wrong, wrong


def test_http_only_in_api():
    """No HTTP status or header is chosen below api/ (domain errors are typed)."""
    wrong = []
    for module, tree in MODULES.items():
        if _unit(module) in ("api", "server", "cli", "__main__", "agent") or module == "dockyard.mirror.upstream":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg in ("status", "status_code", "headers"):
                        wrong.append(f"{module}:{node.lineno}: {kw.arg}=")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                if any(n.split(".")[0] in ("starlette", "uvicorn", "httpx") for n in names):
                    wrong.append(f"{module}:{node.lineno}: imports {names}")
    assert not wrong, wrong
