"""``dockyard mirror list|evict|prune``: the pull-through mirrors, from the command line
(the same reports as ``/admin/v1/mirrors``; ``list`` probes each upstream once)."""

from __future__ import annotations

import argparse
import sys

from dockyard.cli.common import _admin_common, _emit, _registry, examples


def _prefixes(reg) -> dict[str, str]:
    return {name: m["prefix"] for name, m in reg.config.mirrors.items()}


def _probe(reg) -> dict:
    from dockyard.mirror.upstream import Upstream, UpstreamError, UpstreamState

    states = {}
    for name, m in reg.config.mirrors.items():
        up = Upstream(name, m["url"], m["username"], m["password"], timeout=10.0)
        try:
            up.ping()
            states[name] = UpstreamState(True, "", reg.now())
        except UpstreamError as exc:
            states[name] = UpstreamState(False, exc.message, 0.0)
        finally:
            up.close()
    return states


def cmd_list(args: argparse.Namespace) -> int:
    from dockyard.mirror import bound

    reg = _registry(args)
    report = bound.listing(reg, _prefixes(reg), _probe(reg))
    rows = [f"{'mirror':<12} {'prefix':<16} {'images':>7} {'bytes':>14}  reachable  url / last error"]
    for m in report["mirrors"]:
        rows.append(f"{m['name']:<12} {m['prefix']:<16} {m['images']:>7} {m['bytes']:>14}  "
                    f"{'yes' if m['reachable'] else 'NO':<9}  {m['url']} {m['last_error']}")
    rows.append(f"total {report['bytes']} bytes; bound mirror_max_size = {report['max_size'] or 'none'}")
    _emit(args, report, "\n".join(rows))
    return 0


def _report_table(report: dict) -> str:
    verb = "would evict" if report["dry_run"] else "evicted"
    lines = [f"{verb} {i['repository']}@{i['digest']} ({i['bytes']} bytes)" for i in report["images"]]
    lines.append(f"{verb} {report['evicted']} images, {report['bytes']} bytes (the collector reclaims "
                 "their blobs after gc_delay; blobs other repositories use stay)")
    return "\n".join(lines)


def cmd_evict(args: argparse.Namespace) -> int:
    from dockyard.errors import RegistryError
    from dockyard.mirror import bound

    reg = _registry(args)
    try:
        report = bound.evict_one(reg, _prefixes(reg), args.reference, dry_run=args.dry_run)
    except RegistryError as exc:
        print(f"dockyard: cannot evict {args.reference}: {exc.message} {exc.detail or ''}", file=sys.stderr)
        return 1
    _emit(args, report, _report_table(report))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from dockyard.mirror import bound

    reg = _registry(args)
    report = bound.prune(reg, _prefixes(reg), dry_run=args.dry_run)
    _emit(args, report, _report_table(report))
    return 0


def register(sub) -> None:
    p = sub.add_parser("mirror", help="pull-through mirrors: list, evict an image, prune to mirror_max_size",
                       **examples("dockyard mirror list --data-dir /var/lib/dockyard",
                                  "dockyard mirror evict hub/library/alpine:3.20 --dry-run",
                                  "dockyard mirror prune --output json"))
    group = p.add_subparsers(dest="mirror_command", required=True)
    ls = group.add_parser("list", help="each upstream: reachable, bytes and images mirrored",
                          **examples("dockyard mirror list", "dockyard mirror list --output json"))
    _admin_common(ls)
    ls.set_defaults(func=cmd_list)
    ev = group.add_parser("evict", help="evict one mirrored image: REPO:TAG or REPO@DIGEST",
                          **examples("dockyard mirror evict hub/library/alpine:3.20 --dry-run",
                                     "dockyard mirror evict hub/library/alpine@sha256:4bcff6..."))
    _admin_common(ev)
    ev.add_argument("reference", help="a mirrored image: REPO:TAG or REPO@DIGEST")
    ev.add_argument("--dry-run", action="store_true", help="report what would be evicted, change nothing")
    ev.set_defaults(func=cmd_evict)
    pr = group.add_parser("prune", help="evict least recently pulled images down to mirror_max_size",
                          **examples("dockyard mirror prune --dry-run", "dockyard mirror prune --output json"))
    _admin_common(pr)
    pr.add_argument("--dry-run", action="store_true", help="report what would be evicted, change nothing")
    pr.set_defaults(func=cmd_prune)
