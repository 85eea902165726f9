"""A collector killed at any point loses nothing and leaks nothing, on SQLite and PostgreSQL.

A real ``dockyard serve`` (background collector off; ``storage_latency`` 20 ms,
``gc_workers`` 2, ``gc_max_deletes_per_second`` 30 and batches of 25, so collecting the
store takes some 30-40 s of steps that a kill can interrupt anywhere) gets 300 images whose layers partly come
from a shared pool, blobs pushed without a manifest, and half-written upload sessions.
Most of it is then deleted: images untagged (``delete_untagged``) or deleted by digest,
one repository deleted with the admin API, the manifest-less blobs unlinked or left to
their link review; a quarter of the images is kept tagged to be untagged one by one
while the collectors are being killed, so there is always fresh review work.

Then ``python -m dockyard gc`` is started and SIGKILLed after a random delay until 50
running collectors have been killed (``DOCKYARD_CRASH_KILLS``); on PostgreSQL every other
round runs two at once. The delay is uniform(0.05, 0.6) s after the command's start-up, which
is estimated as the running median time from spawn to a collector's first log line (its
first purge or link removal) minus 0.2 s, per round size (about 0.7-1.5 s on a 2-CPU
machine), so most kills land in the collector's work (claiming reviews, purging, writing
tombstones, deleting data, settling tombstones) rather than in the interpreter's start-up.
A run that ends before its kill time is not counted.

The server serves throughout: a reader keeps pulling the images nobody touches, and a
pusher pushes new images that reuse layers of deleted ones (HEAD, then upload: the push
has to wait for, or win against, whatever tombstone a killed collector left).

Then a clean ``dockyard gc`` until nothing is due, and: every tagged image pulls intact
(manifest digest, each blob's sha256); ``dockyard fsck`` (grace 0) reports no leak, no
missing and no corrupt blob; the blob files under ``<data_dir>/storage/blobs`` are
exactly the blobs the kept images reference (every garbage blob is gone); no staged
upload is left; no error or stack trace in the server log.

Deletes run with ``DOCKYARD_DELAYED_DELETE=false`` when that setting exists (see
``gc_workload.delete_semantics``), so untags and deletes by digest make garbage at once.

``upload_ttl`` is 70 s, longer than the 60 s a push waits for a tombstone
(``registry.uploads.TOMBSTONE_WAIT``): with a shorter one a push waiting in ``finish``
looks idle and its session is reclaimed under it, which would blur what failed.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.e2e.gc_workload import (Http, Image, Model, Recorder, backlog_pending, config_blob, delete_semantics,
                                   docker_push, dockyard_env, gc_argv, gc_status, log_problems, manifest_for,
                                   random_blob, run_fsck, run_gc, sha256, staged_uploads, stored_blobs,
                                   upload_blob, verify_image)
from tests.support import postgres_database, start_server

pytestmark = pytest.mark.slow  # a long race, kill or soak: the README's test command runs it too

KILLS = int(os.environ.get("DOCKYARD_CRASH_KILLS", "35"))
KILL_PHASE_MAX = 110.0  # seconds: stop starting rounds after this even with fewer kills
IMAGES = 300
REPOS = [f"crash/r{i}" for i in range(10)]
DOOMED_REPO = REPOS[-1]  # deleted whole with the admin API
POOL = 40
ABANDONED_BLOBS = 60
GC_DELAY = 3.0
UPLOAD_TTL = 70.0


@pytest.fixture
def database_url(backend):
    """A fresh database per test (the session-wide one is shared with other servers)."""
    if backend not in ("sqlite", "postgres"):
        pytest.skip("the GC proof tests run on SQLite and PostgreSQL with the filesystem driver (they read the "
                    "blob files under data_dir/storage); bench/gc_soak.py is the long run")
    if backend == "sqlite":
        yield ""
    else:
        with postgres_database() as url:
            yield url


def crash_env() -> dict[str, str]:
    # no background collection in the server (nor the scrubber's): the killed `dockyard gc`
    # processes are the only collectors, and a slow push while the store is built cannot lose
    # its links to one
    return {**delete_semantics()[0], "DOCKYARD_GC_ENABLED": "false", "DOCKYARD_SCRUB_ENABLED": "false",
            "DOCKYARD_STORAGE_LATENCY": "20ms",
            "DOCKYARD_GC_WORKERS": "2", "DOCKYARD_GC_DELAY": f"{GC_DELAY}s", "DOCKYARD_DELETE_UNTAGGED": "true",
            "DOCKYARD_UPLOAD_TTL": f"{UPLOAD_TTL}s", "DOCKYARD_GC_BATCH_SIZE": "25",
            "DOCKYARD_GC_MAX_DELETES_PER_SECOND": "30"}


@pytest.fixture
def crash_server(tmp_path, database_url):
    server = start_server(tmp_path / "data", database_url=database_url, extra_env=crash_env())
    yield server
    server.stop()


def import_seconds(env: dict) -> float:
    """How long ``python -m dockyard gc`` takes to import what it needs (median of 3)."""
    code = ("import dockyard.cli, dockyard.server, dockyard.lifecycle.collector, dockyard.progress, "
            "dockyard.api.app, sqlalchemy.dialects.postgresql, alembic.command")
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        times.append(time.monotonic() - t0)
    return statistics.median(times)


_LOG_TIME = re.compile(r"^time=(\S+ \S+) level=\w+ logger=dockyard\.lifecycle", re.M)


def first_work_offset(log_text: str, spawned_at: float) -> float | None:
    """Seconds from the spawn to the collector's first log line (its first purge or removal)."""
    m = _LOG_TIME.search(log_text)
    if m is None:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - spawned_at


def db_url(database_url: str, data_dir: Path) -> str:
    return (database_url.replace("postgresql://", "postgresql+psycopg://", 1) if database_url
            else f"sqlite:///{data_dir / 'dockyard.db'}")


def tombstones(engine: sa.Engine) -> list[dict]:
    """The tombstone rows (read directly: who holds them, and until when)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT key, kind, attempts, next_attempt_at, lease_owner, last_error "
                                    "FROM gc_tombstones ORDER BY next_attempt_at")).mappings().all()
        return [dict(r) for r in rows]


class Store:
    """Builds the garbage-rich store through the HTTP API and remembers what must stay."""

    def __init__(self, url: str, rec: Recorder, model: Model, seed: str):
        self.url, self.rec, self.model, self.seed = url, rec, model, seed
        self.pool = [random_blob(f"cpool-{seed}-{i}", 1024 * (1 + i % 4)) for i in range(POOL)]
        self.local = threading.local()

    def http(self) -> Http:
        if not hasattr(self.local, "http"):
            self.local.http = Http(self.url, self.rec)
        return self.local.http

    def push(self, i: int) -> Image:
        rng = random.Random(f"{self.seed}-img-{i}")
        repo = REPOS[i % len(REPOS)]
        seed = f"{self.seed}-{i}"
        config = config_blob(seed)
        layers = rng.sample(self.pool, rng.randint(1, 2)) + [random_blob(f"{seed}-u{j}", 1500) for j in range(3)]
        res = docker_push(self.http(), "build", repo, f"v{i}", config, layers, rng)
        manifest = manifest_for(config, layers)
        img = Image(repo, f"v{i}", sha256(manifest), manifest, {sha256(b): b for b in [config, *layers]}, "pool")
        self.model.pushed(img, res.ok)
        return img

    def abandon(self, i: int) -> None:
        rng = random.Random(f"{self.seed}-ab-{i}")
        repo = REPOS[i % (len(REPOS) - 1)]
        data = random_blob(f"{self.seed}-ab-{i}", 2000)
        if upload_blob(self.http(), "build", repo, data, rng) is not None:
            self.model.uploaded([sha256(data)])
            if i % 2 == 0:  # unlinked by the client; the others wait for their link review
                self.http().call("build", "delete:blob", "DELETE", f"/v2/{repo}/blobs/{sha256(data)}", ok=(202,))

    def half_written_session(self, i: int) -> None:
        repo = REPOS[i % (len(REPOS) - 1)]
        r = self.http().call("build", "push:start", "POST", f"/v2/{repo}/blobs/uploads/", ok=(202,))
        if r is not None:
            self.http().call("build", "push:patch", "PATCH", r.headers["location"], ok=(202,),
                             content=random_blob(f"{self.seed}-half-{i}", 4000),
                             headers={"Content-Type": "application/octet-stream"})

    def build(self) -> tuple[list[Image], list[Image]]:
        """Returns (stable images nobody touches, images to untag during the kills)."""
        with ThreadPoolExecutor(12) as pool:
            list(pool.map(self.half_written_session, range(10)))  # first: the oldest sessions
            images = list(pool.map(self.push, range(IMAGES)))
            list(pool.map(self.abandon, range(ABANDONED_BLOBS)))
        rng = random.Random(f"{self.seed}-fates")
        http = self.http()
        stable, churn = [], []
        for img in images:
            if img.state != "tagged" or img.repo == DOOMED_REPO:
                continue
            fate = rng.random()
            if fate < 0.12:
                stable.append(img)
            elif fate < 0.37:
                churn.append(img)
            elif fate < 0.45:
                if http.call("build", "delete:manifest", "DELETE", f"/v2/{img.repo}/manifests/{img.digest}",
                             ok=(202,)) is not None:
                    self.model.set_state(img, "deleted")
            elif http.call("build", "delete:untag", "DELETE", f"/v2/{img.repo}/manifests/{img.tag}",
                           ok=(202,)) is not None:
                self.model.set_state(img, "untagged")
        if http.call("build", "delete:repository", "DELETE", f"/admin/v1/repositories/{DOOMED_REPO}",
                     ok=(202,)) is not None:
            for img in images:
                if img.repo == DOOMED_REPO and img.state == "tagged":
                    self.model.set_state(img, "deleted")
        return stable, churn


def serve_throughout(url: str, rec: Recorder, model: Model, store: Store, stable: list[Image], churn: list[Image],
                     stop: threading.Event, seed: str) -> list[threading.Thread]:
    """A reader that keeps pulling the stable images, a churner that untags the churn images one
    by one (fresh review work for every round), and a pusher that reuses deleted images' layers."""

    def reader() -> None:
        http = Http(url, rec)
        rng = random.Random(f"{seed}-reader")
        try:
            while not stop.is_set() and stable:
                problems = verify_image(http, rng.choice(stable), category="pull-during-kills")
                if problems:
                    rec.count("pull_problems", len(problems))
                rec.count("pulls")
                stop.wait(0.05)
        finally:
            http.close()

    repushed: list[Image] = []

    def churner() -> None:
        """Every 0.6 s: untag the next churn image, and most of the images the pusher pushed
        (after 2 s), so layers keep going from live to garbage while collectors die."""
        http = Http(url, rec)
        rng = random.Random(f"{seed}-churner")
        todo = list(churn)
        try:
            while not stop.wait(0.6):
                victims = [todo.pop(0)] if todo else []
                with model.lock:
                    old = [i for i in repushed if time.monotonic() - i.pushed_at > 2.0]
                    for i in old:
                        repushed.remove(i)
                victims += [i for i in old if rng.random() < 0.75]
                for img in victims:
                    if http.call("churn", "delete:untag", "DELETE", f"/v2/{img.repo}/manifests/{img.tag}",
                                 ok=(202,)) is not None:
                        model.set_state(img, "untagged")
                        rec.count("churn_untags")
        finally:
            http.close()

    def pusher() -> None:
        http = Http(url, rec, timeout=120)
        rng = random.Random(f"{seed}-repusher")
        n = 0
        try:
            while not stop.is_set():
                n += 1
                with model.lock:
                    gone = [i for i in model.images if i.state == "untagged"]
                if not gone:
                    return
                # the donor's own layers (the last two) are garbage the collectors are deleting
                layers = list(rng.choice(gone).blobs.values())[-2:]
                layers.append(rng.choice([b for b in store.pool if b not in layers]))
                cfg = config_blob(f"{seed}-re{n}")
                repo = rng.choice(REPOS[:-1])
                res = docker_push(http, "push-during-kills", repo, f"re{n}", cfg, layers, rng,
                                  budget=GC_DELAY / 2)
                manifest = manifest_for(cfg, layers)
                img = Image(repo, f"re{n}", sha256(manifest), manifest, {sha256(b): b for b in [cfg, *layers]},
                            "repush")
                model.pushed(img, res.ok)
                model.uploaded(res.uploaded)
                rec.count("repushes" if res.ok else "repush_failures")
                if res.ok:
                    with model.lock:
                        repushed.append(img)
                stop.wait(1.0)
        finally:
            http.close()

    threads = [threading.Thread(target=f, daemon=True) for f in (reader, churner, pusher)]
    for t in threads:
        t.start()
    return threads


def test_killed_collectors_lose_and_leak_nothing(backend, database_url, crash_server, tmp_path):
    started = time.monotonic()
    server = crash_server
    seed = f"{random.randrange(1 << 30):x}"
    rec = Recorder()
    model = Model(delete_semantics()[1])
    env = dockyard_env(database_url, crash_env())
    data_dir = server.data_dir
    sessions_created = time.time()

    store = Store(server.url, rec, model, seed)
    stable, churn = store.build()
    build_failures = [f.line() for f in rec.failures]
    assert not build_failures, "building the store failed:\n" + "\n".join(build_failures[:20])
    built = time.monotonic() - started
    garbage = model.ever_stored - model.kept_blobs()
    print(f"\n[{backend}] built {len(model.images)} images, {len(model.ever_stored)} blobs, {len(garbage)} of them "
          f"garbage ({len(churn)} images more to be untagged during the kills), in {built:.1f}s", flush=True)
    time.sleep(GC_DELAY + 0.5)  # the first reviews are due

    t_import = import_seconds(env)
    offsets: dict[int, list[float]] = {1: [], 2: []}  # spawn -> first collector log line, per round size

    def start_estimate(n: int) -> float:
        seen = offsets[n][-9:]
        return max(0.3, statistics.median(seen) - 0.2) if seen else t_import * n

    host = socket.gethostname()
    db = sa.create_engine(db_url(database_url, data_dir))
    status_http = Http(server.url, rec)
    stop = threading.Event()
    clients = serve_throughout(server.url, rec, model, store, stable, churn, stop, seed)
    rng = random.Random(seed)
    kills = completed = rounds = worked = 0
    stranding_kills = stranded = 0
    delays = []
    logs = tmp_path / "gc-logs"
    logs.mkdir()
    phase_start = time.monotonic()
    while kills < KILLS and time.monotonic() - phase_start < KILL_PHASE_MAX:
        n = 2 if backend == "postgres" and rounds % 2 else 1
        procs = []
        spawned_at = time.time()
        t0 = time.monotonic()
        for k in range(n):
            path = logs / f"round{rounds}-{k}.log"
            err = open(path, "wb")
            procs.append((subprocess.Popen(gc_argv(data_dir), env=env, stdout=subprocess.DEVNULL, stderr=err),
                          err, start_estimate(n) + rng.uniform(0.05, 0.6), path))
        rounds += 1
        for proc, err, delay, path in sorted(procs, key=lambda p: p[2]):
            time.sleep(max(0.0, t0 + delay - time.monotonic()))
            killed = proc.poll() is None
            if killed:
                proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            err.close()
            text = path.read_text(errors="replace")
            offset = first_work_offset(text, spawned_at)
            if offset is not None:
                offsets[n].append(offset)
            if not killed:
                completed += 1  # ran to the end before its kill time
                if proc.returncode != 0 or log_problems(text, path.name):
                    rec.fail("gc-process", "gc", "exec", "python -m dockyard gc", proc.returncode,
                             "\n".join(log_problems(text, path.name, 2)) or text[-2000:])
                continue
            kills += 1
            delays.append(delay)
            with db.connect() as conn:
                left = conn.execute(sa.text("SELECT count(*) FROM gc_tombstones WHERE lease_owner = :o"),
                                    {"o": f"{host}:{proc.pid}"}).scalar()
            if left:
                stranding_kills += 1
                stranded += left
            if left or "logger=dockyard.lifecycle" in text:
                worked += 1
    kill_phase = time.monotonic() - phase_start
    stop.set()
    for t in clients:
        t.join(150)
    status_http.close()

    left_by_kills = tombstones(db)
    now = time.time()
    leased = [t for t in left_by_kills if t["lease_owner"] and t["next_attempt_at"] > now]

    # the clean run: dockyard gc until a run reclaims nothing and nothing is due (without the
    # simulated latency and the rate limit, which only made the killed runs slow)
    clean_env = {**env, "DOCKYARD_STORAGE_LATENCY": "0s", "DOCKYARD_GC_MAX_DELETES_PER_SECOND": "0"}
    time.sleep(max(0.0, sessions_created + UPLOAD_TTL + 1 - time.time()))  # half-written sessions are stale
    http = Http(server.url, rec)
    clean_runs = []
    deadline = time.monotonic() + 60
    while True:
        res = run_gc(data_dir, clean_env)
        clean_runs.append(res)
        backlog = (gc_status(http) or {}).get("backlog", {})
        objects = (res.report or {}).get("totals", {}).get("objects", -1)
        due = sum(v.get("due", 0) for v in backlog.values())
        queued = backlog_pending(backlog, tombstones=False)
        if (objects == 0 and due == 0 and queued == 0) or time.monotonic() > deadline:
            break
        if objects == 0:
            time.sleep(0.5)

    pull_problems = []
    tagged = model.tagged()
    for img in tagged:
        pull_problems += verify_image(http, img)
    http.close()
    fsck = run_fsck(data_dir, clean_env)
    report = fsck.report or {"error": f"rc={fsck.rc} {fsck.stderr[-2000:]}"}
    stored = stored_blobs(data_dir)
    kept = model.kept_blobs()
    lost = sorted(kept - stored)
    garbage_left = sorted(stored - kept)
    staged = staged_uploads(data_dir)
    remaining_tombstones = tombstones(db)
    db.dispose()
    server_errors = log_problems(server.log(), "server log")
    clean_errors = [p for i, r in enumerate(clean_runs) for p in log_problems(r.stderr, f"clean gc run {i}", 2)]
    reclaimed_clean = sum((r.report or {}).get("totals", {}).get("objects", 0) for r in clean_runs)
    c = rec.counts
    garbage = model.ever_stored - kept
    print(f"[{backend}] crash test: {kills} running gc processes SIGKILLed in {rounds} rounds ({completed} runs "
          f"ended before their kill time), kill delays {min(delays, default=0):.2f}-{max(delays, default=0):.2f}s "
          f"(imports {t_import:.2f}s; first collector log after "
          f"{', '.join(f'{statistics.median(v):.2f}s' for v in offsets.values() if v)} from spawn), "
          f"kill phase {kill_phase:.0f}s\n"
          f"  kills that landed in collector work: {worked}; kills that left claimed tombstones behind: "
          f"{stranding_kills} ({stranded} tombstones)\n"
          f"  during the kills: {c['pulls']} pulls ({c['pull_problems']} problems), {c['churn_untags']} untags, "
          f"{c['repushes']} pushes reusing deleted layers ({c['repush_failures']} failed)\n"
          f"  after the kills: {len(left_by_kills)} tombstones, {len(leased)} of them leased to killed processes "
          f"(next attempt in up to {max((t['next_attempt_at'] - now for t in leased), default=0):.0f}s)\n"
          f"  clean gc: {len(clean_runs)} runs, reclaimed {reclaimed_clean} objects\n"
          f"  end: {len(tagged)} tagged images verified, {len(stored)} blobs stored, {len(kept)} expected; "
          f"{len(garbage & stored)} of {len(garbage)} garbage blobs still stored; fsck leaks={report.get('leaks')} "
          f"missing={len(report.get('missing', []))} corrupt={len(report.get('corrupt', []))}\n"
          f"  total {time.monotonic() - started:.0f}s", flush=True)

    def listing(items, n=25):
        items = list(items)
        return "\n  " + "\n  ".join(map(str, items[:n])) + (f"\n  ... {len(items) - n} more" if len(items) > n else "")

    problems = []
    failures = [f.line() for f in rec.failures]
    if failures:
        problems.append(f"{len(failures)} failed requests / gc processes:" + listing(failures))
    if pull_problems:
        problems.append("tagged images do not pull intact:" + listing(pull_problems))
    if lost:
        problems.append("blobs of kept images are gone from storage:" + listing(lost))
    if report.get("leaks") or report.get("missing") or report.get("corrupt") or "error" in report:
        problems.append(f"fsck: {({k: report.get(k) for k in ('leaks', 'leak_keys', 'missing', 'corrupt', 'error')})}")
    if garbage_left:
        now = time.time()
        live_lease = [t for t in remaining_tombstones if t["lease_owner"] and t["next_attempt_at"] > now]
        problems.append(
            f"{len(garbage_left)} of {len(garbage)} garbage blobs are still stored after the clean gc run; "
            f"{len(remaining_tombstones)} tombstones left, {len(live_lease)} of them leased to killed collectors "
            f"(owners {sorted({t['lease_owner'] for t in live_lease})[:8]}, claimable again in "
            f"{min((t['next_attempt_at'] - now for t in live_lease), default=0):.0f}-"
            f"{max((t['next_attempt_at'] - now for t in live_lease), default=0):.0f}s):"
            + listing(({**t, "next_attempt_in_s": round(t["next_attempt_at"] - now, 1)}
                       for t in remaining_tombstones), 8)
            + "\n garbage still stored:" + listing(garbage_left, 8))
    if staged:
        problems.append("staged uploads left in storage:" + listing(staged))
    if server_errors or clean_errors:
        problems.append("errors / stack traces:\n" + "\n---\n".join(server_errors + clean_errors))
    if kills < KILLS:
        problems.append(f"only {kills} running collectors were killed in {kill_phase:.0f}s ({completed} runs "
                        f"ended before their kill time)")
    assert not problems, "\n\n".join(problems) + f"\nserver log: {server.log_path}; gc logs: {logs}"
