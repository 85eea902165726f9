#!/usr/bin/env python3
"""dockyard's online garbage collector vs the reference registry's stop-the-world one.

    python bench/gc_vs_distribution.py [--quick] [--sizes 20000,100000] [--garbage 0.01,0.2]
                                       [--no-latency] [--profile] [--workdir D] [--reuse] [--keep]

For each store size N (blobs: configs + layers; default 20,000 and 100,000, --quick 2,000
and 10,000) both registries get the same logical content (bench/_gc_store.py: repositories
of 50 small OCI images, a config and four layers each, two layers shared per repository and
twenty across the registry; blobs of 64-512 bytes). dockyard's store is pushed through its
own API in-process (uploads + manifests on SQLite and the filesystem driver, clock in the
past); the reference's store is written in its on-disk layout. A first ``dockyard gc`` on
the fresh store reviews every "uploaded" layer link a push queues (reported: "first gc after
import"), as the background collector of a running registry would have long done. Then,
for each garbage fraction (default 1% and 20%), a copy of each store gets the same images
deleted through its normal delete path (dockyard: ``deletes.delete_manifest`` by digest, then the
scrubber's purge past ``scrub_time``; reference: ``DELETE /v2/<name>/manifests/<digest>``
on a running ``docker-registry``), which leaves that fraction of the blobs unreferenced,
and each registry runs one full collection:

* dockyard: ``python -m dockyard gc --data-dir D`` (defaults: gc_workers=4, batch 200);
* reference: ``docker-registry garbage-collect config.yml`` (registry stopped).

dockyard's package gets its bytecode compiled first, as an installed one has it (see
``precompile``). Both are timed as subprocesses (wall seconds; peak RSS from ``wait4``), and the blob files
are counted before and after: each must have removed exactly the unreferenced blobs (the
reference also removes the deleted manifests, which it stores as blobs). dockyard's
command then runs once more on the collected store, where nothing is due: its CPU is the
fixed cost (interpreter, imports, migration check, an idle pass), and the first run's CPU
above it, divided by the blobs reclaimed, is the collection's CPU per reclaimed blob
(target <= 0.1 ms; it includes reviewing and removing each blob's layer links).

With 20 ms per storage call (an object store): dockyard runs again on another copy with
``DOCKYARD_STORAGE_LATENCY=20ms`` and gc_workers 4 and 16 (measured). The reference's
cost is estimated: its storage-driver calls are counted (a ``--dry-run`` of its GC under
``strace`` for the filesystem driver's walks, whose List/Stat calls it does not log, plus
its debug log, which names every other driver call; plus one Delete per blob it removes)
and multiplied by 20 ms (its GC issues them one at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

from _common import blob_files, distribution_config  # noqa: E402
from _gc_store import (  # noqa: E402
    build_dockyard,
    build_reference,
    clean_env,
    copy_tree,
    delete_dockyard,
    delete_reference,
    make_plan,
    reference_blobs,
)

LATENCY = 0.020
TIME = "/usr/bin/time"  # GNU time
PLAN_VERSION = 1
_ELIGIBLE = re.compile(r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion")
_TRACE = re.compile(r'\b(openat|newfstatat)\(AT_FDCWD, "([^"]*)"')
_DRIVER_CALL = re.compile(r'msg="filesystem\.(\w+)\(')


# ---- running and measuring --------------------------------------------------------------

@dataclass
class Run:
    wall: float
    rss_mb: float
    cpu: float
    load: float
    rc: int
    stdout: Path
    stderr: Path

    def text(self) -> str:
        return self.stdout.read_text(errors="replace")


def run_measured(argv: list[str], stdout: Path, stderr: Path, env: dict | None = None) -> Run:
    """Run ``argv`` to completion under GNU time: wall seconds, peak RSS and CPU seconds of
    that process. (Not wait4 from here: a child forked from this big process and then
    exec'd inherits this process's RSS high-water mark in its ru_maxrss.)"""
    usage = stderr.with_suffix(".time")
    load = os.getloadavg()[0]
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.run([TIME, "-f", "%M %U %S", "-o", str(usage), *argv], stdout=out, stderr=err,
                              stdin=subprocess.DEVNULL, env=env)
        wall = time.perf_counter() - t0
    fields = usage.read_text().strip().splitlines()[-1].split()
    rss_kb, user, system = int(fields[0]), float(fields[1]), float(fields[2])
    return Run(wall, rss_kb / 1024, user + system, load, proc.returncode, stdout, stderr)


def dockyard_gc(data_dir: Path, logs: Path, label: str, *, latency: float = 0.0, workers: int | None = None) -> dict:
    env = clean_env()
    if latency:
        env["DOCKYARD_STORAGE_LATENCY"] = f"{latency * 1000:g}ms"
    if workers is not None:
        env["DOCKYARD_GC_WORKERS"] = str(workers)
    run = run_measured([sys.executable, "-m", "dockyard", "gc", "--data-dir", str(data_dir), "--output", "json"],
                       logs / f"{label}.json", logs / f"{label}.log", env=env)
    if run.rc != 0:
        raise RuntimeError(f"dockyard gc failed ({run.rc}); see {run.stderr}")
    report = json.loads(run.text())
    kinds = report["kinds"]
    return {"seconds": run.wall, "rss_mb": run.rss_mb, "cpu": run.cpu, "load": run.load,
            "collector_seconds": report["duration_seconds"],
            "blobs": kinds["blobs"]["objects"], "links": kinds["links"]["objects"],
            "failures": report["totals"]["failures"]}


def precompile() -> str:
    """Compile the bytecode of the dockyard package that ``python -m dockyard`` runs, as an
    installation (pip, a distribution package) has it: where none is cached and none may be
    written (``PYTHONDONTWRITEBYTECODE``, a read-only tree), every ``dockyard gc`` compiled
    some 70 modules from source first, 0.15-0.2 s of CPU the reference's compiled binary
    does not spend either."""
    where = subprocess.run([sys.executable, "-c", "import dockyard, os; print(os.path.dirname(dockyard.__file__))"],
                           capture_output=True, text=True, env=clean_env(), check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", where], check=True, stdout=subprocess.DEVNULL)
    return f"compiled {where}"


def reference_gc(root: Path, work: Path, label: str) -> dict:
    cfg = distribution_config(work / f"{label}.yml", root)
    run = run_measured(["docker-registry", "garbage-collect", str(cfg)], work / f"{label}.out", work / f"{label}.log")
    if run.rc != 0:
        raise RuntimeError(f"docker-registry garbage-collect failed ({run.rc}); see {run.stderr}")
    m = _ELIGIBLE.search(run.text())
    if not m:
        raise RuntimeError(f"no summary line in {run.stdout}")
    return {"seconds": run.wall, "rss_mb": run.rss_mb, "cpu": run.cpu, "load": run.load,
            "marked": int(m.group(1)), "eligible_blobs": int(m.group(2)),
            "eligible_manifests": int(m.group(3))}


def push_probe(data_dir: Path, logs: Path, label: str, alone_seconds: float = 3.0) -> dict:
    """A push's latency while ``dockyard gc`` collects ``data_dir``, and then with nothing
    else running: this process pushes small blobs (POST, PATCH, PUT: three write
    transactions, each waiting for the writer's turn the collector's transactions hold)
    into the same store one after the other, through dockyard's API in-process, for as long
    as the command runs, then for ``alone_seconds``."""
    import hashlib

    from _gc_store import _put_blob, open_dockyard

    reg = open_dockyard(data_dir, time.time())
    seq = 0

    def push() -> float:
        nonlocal seq
        seq += 1
        data = f"push probe {label} {seq} {time.time()}".encode()
        t0 = time.perf_counter()
        _put_blob(reg, "probe/pushes", data, "sha256:" + hashlib.sha256(data).hexdigest())
        return time.perf_counter() - t0

    push()  # warm (the first push opens connections, builds statements)
    during, alone = [], []
    try:
        with open(logs / f"{label}.json", "wb") as out, open(logs / f"{label}.log", "wb") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "dockyard", "gc", "--data-dir", str(data_dir),
                                     "--output", "json"], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    env=clean_env())
            while proc.poll() is None:
                during.append(push())
            gc_wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"dockyard gc failed ({proc.returncode}); see {logs / (label + '.log')}")
        end = time.perf_counter() + alone_seconds
        while time.perf_counter() < end:
            alone.append(push())
    finally:
        reg.db.dispose()
    blobs = json.loads((logs / f"{label}.json").read_text())["kinds"]["blobs"]["objects"]

    def stats(xs: list[float]) -> dict:
        xs = sorted(xs)
        pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")
        return {"pushes": len(xs), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": xs[-1] * 1000 if xs else 0.0}

    return {"gc_seconds": gc_wall, "blobs": blobs, "during": stats(during), "alone": stats(alone)}


def reference_calls(root: Path, work: Path) -> dict:
    """Storage-driver calls of the reference's GC walk, from a --dry-run (deletes: added by the caller).

    Its debug log names every driver call that goes through the driver's base layer
    (GetContent, Stat, Reader, Walk, ...), but not the List/Stat calls the filesystem
    driver's Walk makes inside (one List per directory, one Stat per entry, as in
    ``WalkFallback``): those are counted with strace as ``openat`` of a directory and
    ``newfstatat`` under the storage root, minus the Stat calls the log already names.
    """
    cfg = distribution_config(work / "gc-debug.yml", root, log_level="debug")
    trace = work / "gc-dry-run.strace"
    debug = work / "gc-dry-run.debug.log"
    with open(debug, "wb") as err:
        subprocess.run(["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=openat,newfstatat", "-o", str(trace),
                        "docker-registry", "garbage-collect", "--dry-run", str(cfg)],
                       stdout=subprocess.DEVNULL, stderr=err, check=True)
    prefix = str(root.resolve()) + "/"
    sys_calls: Counter[str] = Counter()
    with open(trace, errors="replace") as fh:
        for line in fh:
            m = _TRACE.search(line)
            if not m or not m.group(2).startswith(prefix):
                continue
            path = m.group(2)
            if m.group(1) == "newfstatat":
                sys_calls["stat"] += 1
            elif path.endswith("/data") or path.endswith("/link"):
                sys_calls["read"] += 1
            else:
                sys_calls["list"] += 1
    logged: Counter[str] = Counter()
    with open(debug, errors="replace") as fh:
        for line in fh:
            m = _DRIVER_CALL.search(line)
            if m:
                logged[m.group(1)] += 1
    trace.unlink()
    walk_list = sys_calls["list"] - logged.get("List", 0)
    walk_stat = sys_calls["stat"] - logged.get("Stat", 0)
    outside = sum(n for op, n in logged.items() if op != "Walk")
    reads = logged.get("GetContent", 0) + logged.get("Reader", 0)
    return {"walk_list": walk_list, "walk_stat": walk_stat, "logged": dict(logged), "outside_walks": outside,
            "reads": reads, "read_syscalls": sys_calls["read"], "walk_calls": walk_list + walk_stat}


# ---- profiling (py-spy) -------------------------------------------------------------------

# Where the main thread's time goes, in order: a sample counts for the first phase whose
# marker frame is on its stack.
PHASES = [
    ("Database.migrate: alembic import (mako, pygments) + upgrade check", ("Database.migrate",)),
    ("collector: manifest reviews", ("Collector._review_manifests",)),
    ("collector: link reviews", ("Collector._review_links",)),
    ("collector: blob reviews", ("Collector._review_blobs",)),
    ("collector: repository reviews", ("Collector._review_repositories",)),
    ("collector: claim + commit of review batches", ("Collector._queue",)),
    ("collector: waiting for the delete pool (storage deletes)", ("InFlight.result", "DeletePool.delete_all")),
    ("collector: settling deleted tombstones (row deletes, log lines)", ("Collector._settle",)),
    ("collector: claiming tombstones, commits", ("Collector._tombstones",)),
    ("collector: stale uploads check", ("Collector._uploads",)),
    ("collector: recording the run, backlog", ("Collector._finish",)),
    ("collector: other", ("Collector.run",)),
    ("imports (dockyard, SQLAlchemy, ...)", ("_find_and_load",)),
]
# cross-cutting costs (inclusive) in the main thread
CROSS = [
    ("SQLite statement execution (cursor.execute/fetch)", ("DefaultDialect.do_execute", "DefaultDialect.do_executemany",
                                                           "DefaultDialect.do_execute_no_params", "CursorResult.",
                                                           "CursorFetchStrategy.")),
    ("SQLite commits", ("DefaultDialect.do_commit",)),
    ("SQLAlchemy statement building + compiling", ("SQLCompiler.", "Compiled.__init__", "ClauseElement._compile_w_cache",
                                                   "coercions.", "HasCacheKey._generate_cache_key", "Select.",
                                                   "Insert.", "Delete.", "Update.")),
    ("logging (one INFO line per object)", ("Logger.info", "Logger._log")),
]


def profile_dockyard(data_dir: Path, out_dir: Path, label: str, top: int = 15) -> dict:
    """py-spy (every thread, idle included) of one `dockyard gc`; the main thread's samples
    are its wall time, broken down by phase and by function."""
    out = out_dir / f"{label}.pyspy.txt"
    cmd = ["py-spy", "record", "--threads", "--idle", "--rate", "200", "--format", "raw", "--output", str(out), "--",
           sys.executable, "-m", "dockyard", "gc", "--data-dir", str(data_dir), "--output", "json"]
    t0 = time.perf_counter()
    with open(out_dir / f"{label}.log", "wb") as err:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err, env=clean_env(), check=True)
    wall = time.perf_counter() - t0
    stacks: list[tuple[str, list[str], int]] = []
    names: dict[str, str] = {}
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        head, *frames = stack.split(";")
        m = re.match(r"thread \((\w+)\)(?:: (.*))?", head)
        tid = m.group(1) if m else head
        if m and m.group(2):
            names[tid] = m.group(2)
        stacks.append((tid, [_frame_name(f) for f in frames], int(count)))
    main = next((t for t, n in names.items() if n == "MainThread"), stacks[0][0] if stacks else "")
    main_stacks = [(fr, n) for t, fr, n in stacks if t == main]
    total = sum(n for _, n in main_stacks) or 1
    phases: Counter[str] = Counter()
    cross: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    generic = ("<frozen", "<module> (dockyard/__main__.py)", "main (dockyard/cli.py)", "cmd_gc (dockyard/cli.py)")
    for frames, n in main_stacks:
        for label_, markers in PHASES:
            if any(mk in f for f in frames for mk in markers):
                phases[label_] += n
                break
        else:
            phases["other (interpreter start, settings, CLI, output, exit)"] += n
        for label_, markers in CROSS:
            if any(f.startswith(mk) or mk in f.split(" (")[0] for f in frames for mk in markers):
                cross[label_] += n
        for name in {f for f in frames if not any(g in f for g in generic)}:
            inclusive[name] += n
        if frames:
            own[frames[-1]] += n
    workers = [(fr, n) for t, fr, n in stacks if names.get(t, "").startswith("dockyard-delete")]
    wtotal = sum(n for _, n in workers)
    wdelete = sum(n for fr, n in workers if any(f.startswith("FilesystemDriver.delete") for f in fr))
    return {"raw": str(out), "wall": wall, "main_samples": total,
            "phases": [(k, v / total) for k, v in phases.most_common()],
            "cross": [(k, cross[k] / total) for k, _ in CROSS],
            "inclusive": [(k, v / total) for k, v in inclusive.most_common(top)],
            "self": [(k, v / total) for k, v in own.most_common(top)],
            "delete_threads": {"samples": wtotal, "in_delete": wdelete / wtotal if wtotal else 0.0}}


def _frame_name(frame: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:LINE)"; drop the line, shorten the path
    m = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame.strip())
    if not m:
        return frame.strip()
    func, path = m.groups()
    for marker in ("site-packages/", "src/", "lib/python3.11/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


# ---- one configuration --------------------------------------------------------------------

@dataclass
class Times:
    build: float
    deleted_at: float
    scrubbed_at: float


@dataclass
class Result:
    n: int
    fraction: float
    garbage_blobs: int
    deleted_images: int
    dockyard: dict
    reference: dict
    checks: list[str] = field(default_factory=list)
    latency: dict = field(default_factory=dict)
    profile: dict | None = None
    push_probe: dict | None = None


def base_stores(n: int, work: Path, times: Times, args) -> tuple:
    plan = make_plan(n, seed=args.seed)
    base = work / f"n{n}"
    dy, ref = base / "dockyard", base / "reference"
    marker = base / "built.json"
    key = {"n": n, "seed": args.seed, "plan": PLAN_VERSION}
    if args.reuse and marker.exists() and dy.exists() and ref.exists():
        info = json.loads(marker.read_text())
        if info.get("key") == key:
            print(f"[N={n}] reusing the stores in {base}", flush=True)
            return plan, dy, ref, info
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    print(f"[N={n}] {len(plan.images)} images in {len(plan.repos)} repositories, {len(plan.blobs)} blobs", flush=True)
    t0 = time.perf_counter()
    pushes, retries = build_dockyard(plan, dy, times.build, workers=args.build_workers)
    t_dy = time.perf_counter() - t0
    print(f"[N={n}] dockyard store pushed through its API in {t_dy:.0f}s ({pushes} blob pushes, "
          f"{len(plan.images)} manifests; {retries} upload starts retried after a directory-pruning race)", flush=True)
    t0 = time.perf_counter()
    build_reference(plan, ref)
    t_ref = time.perf_counter() - t0
    print(f"[N={n}] reference store written in {t_ref:.0f}s", flush=True)
    # the first collection after the import reviews every "uploaded" link (nothing to reclaim)
    first = dockyard_gc(dy, base, "first-gc")
    if first["blobs"] or first["links"]:
        raise RuntimeError(f"first gc after the import reclaimed something: {first}")
    print(f"[N={n}] first dockyard gc after the import: {first['seconds']:.2f}s, {first['rss_mb']:.0f} MB", flush=True)
    info = {"key": key, "build_seconds": {"dockyard": t_dy, "reference": t_ref}, "first_gc": first,
            "upload_start_retries": retries}
    marker.write_text(json.dumps(info))
    return plan, dy, ref, info


def run_config(plan, base_dy: Path, base_ref: Path, fraction: float, work: Path, times: Times, args) -> Result:
    n = len(plan.blobs)
    images, garbage = plan.garbage(fraction)
    cdir = work / f"n{n}" / f"g{fraction:g}"
    if cdir.exists():
        shutil.rmtree(cdir)
    cdir.mkdir(parents=True)
    dy, ref = cdir / "dockyard", cdir / "reference"
    tag = f"[N={n} garbage={fraction:.0%}]"
    copy_tree(base_dy, dy)
    if not args.no_reference:
        copy_tree(base_ref, ref)
    purged = delete_dockyard(dy, images, times.deleted_at, times.scrubbed_at)
    if purged != len(images):
        raise RuntimeError(f"scrubber purged {purged} of {len(images)} deleted images")
    if not args.no_reference:
        delete_reference(ref, images, cdir)
    print(f"{tag} deleted {len(images)} images in both ({len(garbage)} blobs now unreferenced)", flush=True)
    copies = {}
    if not args.no_latency:
        for w in args.latency_workers:
            copies[w] = cdir / f"dockyard-latency-w{w}"
            copy_tree(dy, copies[w])
    if args.profile:
        copy_tree(dy, cdir / "dockyard-profile")

    checks = []
    manifests = {img.digest for img in images}
    all_manifests = {img.digest for img in plan.images}
    calls = None if args.no_latency else reference_calls(ref, cdir)  # a read-only dry run
    dy_runs, ref_runs = [], []
    for i in range(args.repeat):
        # each repetition on a fresh copy of the prepared stores, dockyard and reference in turn
        run_dy, run_ref = cdir / "dockyard-run", cdir / "reference-run"
        copy_tree(dy, run_dy)
        before = blob_files(run_dy)
        d = dockyard_gc(run_dy, cdir, f"dockyard-gc-{i + 1}")
        gone = before - blob_files(run_dy)
        d["reclaimed_files"] = len(gone)
        # the same command again on the collected store, nothing due: start-up, migration check,
        # an idle pass; what the first run spent above it went into the collection
        idle = dockyard_gc(run_dy, cdir, f"dockyard-gc-idle-{i + 1}")
        d["idle_cpu"] = idle["cpu"]
        d["cpu_ms_per_blob"] = (d["cpu"] - idle["cpu"]) / max(1, d["blobs"]) * 1000
        checks.append(_check(f"dockyard run {i + 1}", before == set(plan.blobs) and gone == garbage,
                             f"{len(before)} blob files before, {len(gone)} removed, {len(garbage)} expected"))
        dy_runs.append(d)
        shutil.rmtree(run_dy)
        if args.no_reference:  # dockyard's figures only (the reference's columns show nan)
            nan = float("nan")
            ref_gone: set = set()
            ref_runs.append(r := {"seconds": nan, "cpu": nan, "rss_mb": nan, "load": d["load"]})
        else:
            copy_tree(ref, run_ref)
            ref_before = reference_blobs(run_ref)
            r = reference_gc(run_ref, cdir, f"reference-gc-{i + 1}")
            ref_gone = ref_before - reference_blobs(run_ref)
            r["reclaimed_files"] = len(ref_gone)
            checks.append(_check(f"reference run {i + 1}",
                                 ref_before == set(plan.blobs) | all_manifests and ref_gone == garbage | manifests,
                                 f"{len(ref_before)} blob files before, {len(ref_gone)} removed, "
                                 f"{len(garbage)} + {len(manifests)} deleted manifests expected"))
            ref_runs.append(r)
            shutil.rmtree(run_ref)
        print(f"{tag} run {i + 1}: dockyard gc {d['seconds']:.2f}s ({d['cpu']:.2f} CPU s, {d['rss_mb']:.0f} MB,"
              f" {len(gone)} blobs, {d['cpu_ms_per_blob']:.3f} CPU ms/blob over an idle run of"
              f" {d['idle_cpu']:.2f} CPU s); reference gc {r['seconds']:.2f}s ({r['cpu']:.2f} CPU s, {r['rss_mb']:.0f} MB,"
              f" {len(ref_gone)} blobs); load {d['load']:.1f}/{r['load']:.1f}", flush=True)
    d, r = _best(dy_runs), _best(ref_runs)

    result = Result(n, fraction, len(garbage), len(images), d, r, checks)
    if calls is not None:
        deletes = r["eligible_blobs"]
        total = calls["walk_calls"] + calls["outside_walks"] + deletes
        checks.append(_check("reference call count", calls["reads"] == calls["read_syscalls"],
                             f"{calls['read_syscalls']} file opens under strace, {calls['reads']} GetContent/Reader"
                             " calls in its debug log"))
        result.latency["reference"] = {**calls, "deletes": deletes, "calls": total,
                                       "estimate_seconds": total * LATENCY,
                                       "estimate_without_walk_seconds": (calls["outside_walks"] + deletes) * LATENCY}
        for w, copy in copies.items():
            lat = dockyard_gc(copy, cdir, f"dockyard-gc-latency-w{w}", latency=LATENCY, workers=w)
            ok = lat["blobs"] == len(garbage) and lat["failures"] == 0
            checks.append(_check(f"dockyard 20ms w{w}", ok, f"{lat['blobs']} blobs reclaimed"))
            result.latency[f"dockyard_w{w}"] = lat
            print(f"{tag} dockyard gc at 20 ms/call, {w} workers: {lat['seconds']:.2f}s", flush=True)
            shutil.rmtree(copy)
    if args.push_probe:
        probe_dy = cdir / "dockyard-probe"
        copy_tree(dy, probe_dy)
        result.push_probe = p = push_probe(probe_dy, cdir, "dockyard-gc-probe")
        checks.append(_check("dockyard gc beside pushes", p["blobs"] == len(garbage),
                             f"{p['blobs']} blobs reclaimed, {len(garbage)} expected"))
        print(f"{tag} pushes while dockyard gc ran ({p['gc_seconds']:.2f}s): {p['during']}; alone: {p['alone']}",
              flush=True)
        shutil.rmtree(probe_dy)
    if args.profile:
        prof_dir = work / "profiles"
        prof_dir.mkdir(exist_ok=True)
        result.profile = profile_dockyard(cdir / "dockyard-profile", prof_dir, f"dockyard-gc-n{n}-g{fraction:g}")
        shutil.rmtree(cdir / "dockyard-profile")
    if not args.keep:
        shutil.rmtree(dy)
        shutil.rmtree(ref, ignore_errors=True)
    return result


def _best(runs: list[dict]) -> dict:
    """The fastest of the repetitions (the machine may be shared), with every run's numbers."""
    best = dict(min(runs, key=lambda x: x["seconds"]))
    best["runs"] = [{k: v for k, v in x.items() if k != "runs"} for x in runs]
    best["rss_mb_max"] = max(x["rss_mb"] for x in runs)
    best["load_max"] = max(x["load"] for x in runs)
    return best


def _check(what: str, ok: bool, detail: str) -> str:
    return f"{'ok' if ok else 'MISMATCH'}: {what}: {detail}"


# ---- output ------------------------------------------------------------------------------

def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def report(results: list[Result], bases: dict, args) -> str:
    out = []
    out.append(f"Full collection (local filesystem, page cache warm): wall seconds (fastest of {args.repeat}),"
               " peak RSS (GNU time) and CPU seconds of the process")
    rows = []
    for r in results:
        d, ref = r.dockyard, r.reference
        rows.append([f"{r.n:,}", f"{r.fraction:.0%}", f"{r.garbage_blobs:,}", f"{d['seconds']:.2f}",
                     f"{d['collector_seconds']:.2f}", f"{d['cpu']:.2f}", f"{d['rss_mb_max']:.0f}",
                     f"{ref['seconds']:.2f}", f"{ref['cpu']:.2f}", f"{ref['rss_mb_max']:.0f}",
                     f"{ref['seconds'] / d['seconds']:.1f}x", f"{ref['cpu'] / d['cpu']:.1f}x",
                     f"{d['idle_cpu']:.2f}", f"{d['cpu_ms_per_blob']:.3f}"])
    out.append(table(["N blobs", "garbage", "unref. blobs", "dockyard s", "(collector s)", "dockyard CPU s",
                      "dockyard MB", "reference s", "reference CPU s", "reference MB", "speedup ref/dockyard",
                      "CPU ratio", "idle gc CPU s", "CPU ms/blob"], rows))
    loads = [x["load"] for r in results for side in (r.dockyard, r.reference) for x in side["runs"]]
    out.append(f"  1-minute load average at the timed runs: {min(loads):.1f} to {max(loads):.1f}"
               f" on {os.cpu_count()} CPUs (other work on the machine inflates wall times; CPU s does not).")
    out.append("  idle gc CPU s: the same `dockyard gc` again on the collected store (nothing due: interpreter start,"
               " imports, migration check, an idle pass); CPU ms/blob: (dockyard CPU s - idle gc CPU s) / blobs"
               " reclaimed, the collection's own CPU per blob (its links and reviews included).")
    out.append("  dockyard s: `python -m dockyard gc` end to end (interpreter start, migration check, collection);"
               " (collector s): the collection alone, from its report. MB: the highest of the runs.")
    out.append("  reference s: `docker-registry garbage-collect config.yml`. It must run with the registry stopped"
               " (or read-only): no push is possible for that whole time. dockyard needs no such window: its"
               " collector runs against the live registry (it is what `dockyard serve` runs in the background).")
    out.append("  reference also removes the deleted manifests (stored as blobs); dockyard keeps manifests in its database.")
    out.append("")
    out.append("First dockyard gc after the import (reviews every layer link a push queued; reclaims nothing):")
    out.append(table(["N blobs", "seconds", "peak MB", "build dockyard s", "build reference s"],
                     [[f"{n:,}", f"{b['first_gc']['seconds']:.2f}", f"{b['first_gc']['rss_mb']:.0f}",
                       f"{b['build_seconds']['dockyard']:.0f}", f"{b['build_seconds']['reference']:.0f}"]
                      for n, b in sorted(bases.items())]))
    lat = [r for r in results if r.latency]
    if lat:
        out.append("")
        out.append("With 20 ms per storage call (object-store-like): dockyard measured "
                   "(DOCKYARD_STORAGE_LATENCY=20ms); reference estimated = its storage calls x 20 ms")
        ws = args.latency_workers
        rows = []
        for r in lat:
            ref = r.latency["reference"]
            row = [f"{r.n:,}", f"{r.fraction:.0%}"]
            for w in ws:
                row.append(f"{r.latency[f'dockyard_w{w}']['seconds']:.1f}")
            row += [f"{ref['walk_calls']:,}", f"{ref['outside_walks']:,}", f"{ref['deletes']:,}", f"{ref['calls']:,}",
                    f"{ref['estimate_seconds']:.0f}"]
            for w in ws:
                row.append(f"{ref['estimate_seconds'] / r.latency[f'dockyard_w{w}']['seconds']:.1f}x")
            row.append(f"{ref['estimate_without_walk_seconds']:.0f}")
            rows.append(row)
        headers = (["N blobs", "garbage"] + [f"dockyard s (w={w})" for w in ws]
                   + ["ref walk calls", "ref other calls", "ref deletes", "ref calls", "ref est. s"]
                   + [f"speedup (w={w})" for w in ws] + ["ref est. s w/o walk"])
        out.append(table(headers, rows))
        out.append("  dockyard's storage calls are its deletes only (one per unreferenced blob), in gc_workers threads.")
        out.append("  ref walk calls: List (one per directory) + Stat (one per entry) that the filesystem driver's"
                   " Walk makes over repositories/ and blobs/ (strace of a --dry-run); ref other calls: the driver calls"
                   " its debug log names (GetContent/Stat/Reader of links and manifests); ref deletes: one Delete per"
                   " removed blob. Its GC makes them one at a time.")
        out.append("  ref est. s w/o walk: leaves the walk calls out entirely: a lower bound even for an object"
                   " store whose listing returns 1,000 keys per call.")
    out.append("")
    out.append("Checks (blob files counted before/after each collection):")
    for r in results:
        for c in r.checks:
            out.append(f"  N={r.n:,} garbage={r.fraction:.0%}: {c}")
    out.append("")
    out.append(targets(results, args))
    probed = [r for r in results if r.push_probe]
    if probed:
        out.append("")
        out.append("A push's latency while `dockyard gc` runs (--push-probe): small blobs pushed one after the other"
                   " into the store being collected (POST, PATCH, PUT through dockyard's API in this process, three"
                   " write transactions each), then for 3 s with nothing else running:")
        rows = []
        for r in probed:
            p = r.push_probe
            rows.append([f"{r.n:,}", f"{r.fraction:.0%}", f"{p['gc_seconds']:.2f}"]
                        + [f"{p[k]['pushes']}" if m == "pushes" else f"{p[k][m]:.1f}"
                           for k in ("during", "alone") for m in ("pushes", "p50_ms", "p99_ms", "max_ms")])
        out.append(table(["N blobs", "garbage", "gc s", "pushes during gc", "p50 ms", "p99 ms", "max ms",
                          "pushes alone", "p50 ms", "p99 ms", "max ms"], rows))
    prof = [r for r in results if r.profile]
    for r in prof:
        out.append("")
        p = r.profile
        out.append(f"py-spy profile of `dockyard gc`, N={r.n:,} garbage={r.fraction:.0%}: {p['wall']:.2f}s under py-spy,"
                   f" {p['main_samples']} main-thread samples at 200 Hz, idle included (fractions are of the main"
                   f" thread's wall time); raw stacks: {p['raw']}")
        out.append("  by phase:")
        out += [f"    {f:6.1%}  {name}" for name, f in p["phases"]]
        out.append("  cross-cutting (inclusive):")
        out += [f"    {f:6.1%}  {name}" for name, f in p["cross"]]
        out.append("  functions, inclusive:")
        out += [f"    {f:6.1%}  {name}" for name, f in p["inclusive"]]
        out.append("  functions, self:")
        out += [f"    {f:6.1%}  {name}" for name, f in p["self"]]
        d = p["delete_threads"]
        out.append(f"  delete-pool threads: {d['samples']} samples, {d['in_delete']:.0%} of them in FilesystemDriver.delete"
                   " (the rest idle, waiting for work)")
    return "\n".join(out)


def targets(results: list[Result], args) -> str:
    out = ["Targets (issue): at 100,000 blobs dockyard >= 20x faster with 1% garbage, >= 3x with 20%;"
           " <= 0.1 ms of CPU per reclaimed blob; dockyard's peak RSS does not grow with store size."]
    biggest = max(r.n for r in results)
    note = "" if biggest >= 100_000 else f" (largest size here is {biggest:,}, not 100,000)"
    for r in results:
        if r.n != biggest:
            continue
        goal = 20 if r.fraction <= 0.01 else 3 if r.fraction >= 0.2 else None
        if goal is None:
            continue
        s = r.reference["seconds"] / r.dockyard["seconds"]
        line = f"  N={r.n:,} garbage={r.fraction:.0%}: speedup {s:.1f}x (target >= {goal}x): {'met' if s >= goal else 'MISSED'}"
        if r.latency:
            for w in args.latency_workers:
                sl = r.latency["reference"]["estimate_seconds"] / r.latency[f"dockyard_w{w}"]["seconds"]
                line += f"; at 20 ms/call w={w}: {sl:.1f}x {'met' if sl >= goal else 'MISSED'}"
        out.append(line + note)
    for r in results:
        if r.n == biggest:
            c = r.dockyard["cpu_ms_per_blob"]
            out.append(f"  N={r.n:,} garbage={r.fraction:.0%}: CPU per reclaimed blob {c:.3f} ms (target <= 0.1 ms): "
                       f"{'met' if c <= 0.1 else 'MISSED'}")
    sizes = sorted({r.n for r in results})
    if len(sizes) > 1:
        for frac in sorted({r.fraction for r in results}):
            by = {r.n: r.dockyard["rss_mb_max"] for r in results if r.fraction == frac}
            lo, hi = by[sizes[0]], by[sizes[-1]]
            grows = hi > lo * 1.10 + 2
            out.append(f"  peak RSS, garbage={frac:.0%}: {lo:.0f} MB at {sizes[0]:,} -> {hi:.0f} MB at {sizes[-1]:,} "
                       f"blobs: {'GROWS' if grows else 'flat'} (reference: "
                       + " -> ".join(f"{r.reference['rss_mb_max']:.0f}" for r in sorted(
                           (r for r in results if r.fraction == frac), key=lambda r: r.n)) + " MB)")
    return "\n".join(out)


# ---- main ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="sizes 2,000 and 10,000 blobs")
    p.add_argument("--sizes", help="comma-separated store sizes in blobs (default 20000,100000)")
    p.add_argument("--garbage", default="0.01,0.2", help="comma-separated garbage fractions")
    p.add_argument("--no-latency", action="store_true", help="skip the 20 ms-per-call runs")
    p.add_argument("--latency-workers", default="4,16", help="gc_workers for the 20 ms runs")
    p.add_argument("--profile", action="store_true", help="also profile each dockyard gc with py-spy")
    p.add_argument("--no-reference", action="store_true",
                   help="time dockyard only (no reference copy, delete or run: its columns show nan)")
    p.add_argument("--push-probe", action="store_true",
                   help="also time small blob pushes into the store while dockyard gc collects it")
    p.add_argument("--workdir", help="where the stores go (default: a new directory in /tmp)")
    p.add_argument("--reuse", action="store_true", help="reuse base stores already built in --workdir")
    p.add_argument("--keep", action="store_true", help="keep every store afterwards")
    p.add_argument("--build-workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes pushing dockyard's store")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per configuration (the fastest is shown)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([2000, 10000] if args.quick else [20000, 100000])
    fractions = [float(f) for f in args.garbage.split(",")]
    args.latency_workers = [int(w) for w in args.latency_workers.split(",")]
    for tool in ["docker-registry"] + ([] if args.no_latency else ["strace"]) + (["py-spy"] if args.profile else []):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2

    from _common import machine_info, tool_version
    from dockyard.config import load

    cfg = load(env={})
    now = time.time()
    # everything happened in the past, so `dockyard gc` (real clock) finds it due:
    # pushed 40 days ago; deleted more than scrub_time + 2 gc_delay ago; scrubbed once scrub_time had passed
    times = Times(build=now - cfg.scrub_time - 40 * 86400,
                  deleted_at=now - cfg.scrub_time - 2 * cfg.gc_delay - 3600,
                  scrubbed_at=now - 2 * cfg.gc_delay - 3600)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dockyard-gc-bench-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    rev = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, {info['memory']}; {info['python']}")
    print(f"dockyard {rev or '?'}; reference: {tool_version(['docker-registry', '--version'])}")
    print(f"stores in {work}; sizes {sizes}, garbage {fractions}", flush=True)

    print(f"bytecode: {precompile()}", flush=True)
    results: list[Result] = []
    bases: dict[int, dict] = {}
    started = time.perf_counter()
    for n in sizes:
        plan, base_dy, base_ref, base_info = base_stores(n, work, times, args)
        bases[n] = base_info
        for frac in fractions:
            results.append(run_config(plan, base_dy, base_ref, frac, work, times, args))
        if not args.keep and not args.reuse:  # --reuse keeps the base stores for the next run
            shutil.rmtree(work / f"n{n}", ignore_errors=True)
    text = report(results, bases, args)
    print()
    print(text)
    print(f"\n(total {time.perf_counter() - started:.0f}s; results in {work / 'results.json'})")
    (work / "results.json").write_text(json.dumps(
        {"results": [vars(r) for r in results], "bases": {str(k): v for k, v in bases.items()}}, indent=2, default=str))
    (work / "report.txt").write_text(text + "\n")
    return 0 if all(c.startswith("ok") for r in results for c in r.checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
