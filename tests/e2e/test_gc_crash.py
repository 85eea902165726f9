"""A collector killed at any point loses nothing and leaks nothing, on SQLite and PostgreSQL.

A real ``dockyard serve`` (background collector off, ``storage_latency`` 20 ms so a
collection takes seconds) gets 300 images whose layers partly come from a shared pool,
blobs pushed without a manifest, and half-written upload sessions. Most of it is then
deleted: images untagged (``delete_untagged``) or deleted by digest, one repository
deleted with the admin API, the manifest-less blobs unlinked or left to their link
review. Then, at least 50 times, ``python -m dockyard gc`` is started and SIGKILLed
after a random delay (on PostgreSQL every other round runs two at once). The delay is
the measured start-up time of the command (imports) plus uniform(0.05, 0.6) s, so the
kills land in the collector's work: claiming reviews, purging, writing tombstones,
deleting data, settling tombstones.

The server serves throughout: a reader pulls the kept images over and over, and a
pusher pushes new images that reuse layers of deleted ones (HEAD, then upload: the
push has to wait for, or win against, whatever tombstone a killed collector left).

Then a clean ``dockyard gc`` until nothing is due, and: every tagged image pulls intact
(manifest digest, each blob's sha256); ``dockyard fsck`` (grace 0) reports no leak, no
missing and no corrupt blob; the blob files under ``<data_dir>/storage/blobs`` are
exactly the blobs the kept images reference (every garbage blob is gone); no staged
upload is left; no error or stack trace in the server log.

``DOCKYARD_CRASH_KILLS`` (default 50) sets the number of kill rounds.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.e2e.gc_workload import (Http, Image, Model, Recorder, backlog_pending, config_blob, delete_semantics,
                                   docker_push, dockyard_env, gc_argv, gc_status, log_problems, manifest_for,
                                   random_blob, run_fsck, run_gc, sha256, staged_uploads, stored_blobs,
                                   upload_blob, verify_image)
from tests.support import postgres_database, start_server

KILL_ROUNDS = int(os.environ.get("DOCKYARD_CRASH_KILLS", "50"))
IMAGES = 300
REPOS = [f"crash/r{i}" for i in range(10)]
DOOMED_REPO = REPOS[-1]  # deleted whole with the admin API
POOL = 40
ABANDONED_BLOBS = 60
GC_DELAY = 3.0
UPLOAD_TTL = 5.0


@pytest.fixture
def database_url(backend):
    """A fresh database per test (the session-wide one is shared with other servers)."""
    if backend == "sqlite":
        yield ""
    else:
        with postgres_database() as url:
            yield url


def crash_env() -> dict[str, str]:
    return {**delete_semantics()[0], "DOCKYARD_GC_ENABLED": "false", "DOCKYARD_STORAGE_LATENCY": "20ms",
            "DOCKYARD_GC_WORKERS": "2", "DOCKYARD_GC_DELAY": f"{GC_DELAY}s", "DOCKYARD_DELETE_UNTAGGED": "true",
            "DOCKYARD_UPLOAD_TTL": f"{UPLOAD_TTL}s"}


@pytest.fixture
def crash_server(tmp_path, database_url):
    server = start_server(tmp_path / "data", database_url=database_url, extra_env=crash_env())
    yield server
    server.stop()


def startup_seconds(env: dict) -> float:
    """How long ``python -m dockyard gc`` takes to import what it needs (median of 3)."""
    code = ("import dockyard.cli, dockyard.server, dockyard.lifecycle.collector, dockyard.progress, "
            "dockyard.api.app, sqlalchemy.dialects.postgresql, alembic.command")
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def tombstones(database_url: str, data_dir: Path) -> list[dict]:
    """The tombstone rows left (read directly, for the failure message)."""
    url = (database_url.replace("postgresql://", "postgresql+psycopg://", 1) if database_url
           else f"sqlite:///{data_dir / 'dockyard.db'}")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT key, kind, attempts, next_attempt_at, lease_owner, last_error "
                                        "FROM gc_tombstones ORDER BY next_attempt_at")).mappings().all()
            return [dict(r) for r in rows]
    finally:
        engine.dispose()


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
        layers = rng.sample(self.pool, rng.randint(1, 2)) + [random_blob(f"{seed}-u{j}", 1500) for j in range(2)]
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
        if i % 6 == 0:  # a session left half-written
            r = self.http().call("build", "push:start", "POST", f"/v2/{repo}/blobs/uploads/", ok=(202,))
            if r is not None:
                self.http().call("build", "push:patch", "PATCH", r.headers["location"], ok=(202,),
                                 content=random_blob(f"{self.seed}-half-{i}", 4000),
                                 headers={"Content-Type": "application/octet-stream"})

    def build(self) -> None:
        with ThreadPoolExecutor(12) as pool:
            images = list(pool.map(self.push, range(IMAGES)))
            list(pool.map(self.abandon, range(ABANDONED_BLOBS)))
        rng = random.Random(f"{self.seed}-fates")
        http = self.http()
        for img in images:
            if img.state != "tagged" or img.repo == DOOMED_REPO:
                continue
            fate = rng.random()
            if fate < 0.15:
                continue  # kept
            if fate < 0.23:
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


def serve_throughout(url: str, rec: Recorder, model: Model, store: Store, stop: threading.Event,
                     seed: str) -> list[threading.Thread]:
    """A reader that keeps pulling kept images, and a pusher that reuses deleted images' layers."""

    def reader() -> None:
        http = Http(url, rec)
        rng = random.Random(f"{seed}-reader")
        try:
            while not stop.is_set():
                tagged = model.tagged()
                if tagged:
                    problems = verify_image(http, rng.choice(tagged), category="pull-during-kills")
                    if problems:
                        rec.count("pull_problems", len(problems))
                    rec.count("pulls")
                stop.wait(0.05)
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
                stop.wait(0.2)
        finally:
            http.close()

    threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=pusher, daemon=True)]
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

    store = Store(server.url, rec, model, seed)
    store.build()
    build_failures = [f.line() for f in rec.failures]
    assert not build_failures, "building the store failed:\n" + "\n".join(build_failures[:20])
    built = time.monotonic() - started
    garbage = model.ever_stored - model.kept_blobs()
    print(f"\n[{backend}] built {len(model.images)} images, {len(model.ever_stored)} blobs, "
          f"{len(garbage)} of them garbage, in {built:.1f}s", flush=True)
    time.sleep(GC_DELAY + 0.5)  # the first reviews are due

    t_import = startup_seconds(env)
    status_http = Http(server.url, rec)
    stop = threading.Event()
    clients = serve_throughout(server.url, rec, model, store, stop, seed)
    rng = random.Random(seed)
    kills = completed = worked = rounds_with_backlog = 0
    delays = []
    logs = tmp_path / "gc-logs"
    logs.mkdir()
    for rnd in range(KILL_ROUNDS):
        st = gc_status(status_http) or {}
        if backlog_pending(st.get("backlog", {})):
            rounds_with_backlog += 1
        n = 2 if backend == "postgres" and rnd % 2 else 1
        procs = []
        for k in range(n):
            err = open(logs / f"round{rnd}-{k}.log", "wb")
            procs.append((subprocess.Popen(gc_argv(data_dir), env=env, stdout=subprocess.DEVNULL, stderr=err),
                          err, t_import + rng.uniform(0.05, 0.6), logs / f"round{rnd}-{k}.log"))
        t0 = time.monotonic()
        for proc, err, delay, path in sorted(procs, key=lambda p: p[2]):
            time.sleep(max(0.0, t0 + delay - time.monotonic()))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                delays.append(delay)
            else:
                completed += 1  # ran to the end before its kill time
                text = path.read_text(errors="replace")
                if proc.returncode != 0:
                    rec.fail("gc-process", "gc", "exec", "python -m dockyard gc", proc.returncode, text[-2000:])
            proc.wait(30)
            err.close()
            if "logger=dockyard.lifecycle" in path.read_text(errors="replace"):
                worked += 1
    kill_phase = time.monotonic() - t0
    stop.set()
    for t in clients:
        t.join(150)
    status_http.close()

    left_by_kills = tombstones(database_url, data_dir)
    now = time.time()
    leased = [t for t in left_by_kills if t["lease_owner"] and t["next_attempt_at"] > now]

    # the clean run: dockyard gc until a run reclaims nothing and nothing is due
    http = Http(server.url, rec)
    clean_runs = []
    deadline = time.monotonic() + 60
    while True:
        res = run_gc(data_dir, env)
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
    fsck = run_fsck(data_dir, env)
    report = fsck.report or {"error": f"rc={fsck.rc} {fsck.stderr[-2000:]}"}
    stored = stored_blobs(data_dir)
    kept = model.kept_blobs()
    lost = sorted(kept - stored)
    garbage_left = sorted(stored - kept)
    staged = staged_uploads(data_dir)
    remaining_tombstones = tombstones(database_url, data_dir)
    server_errors = log_problems(server.log(), "server log")
    clean_errors = [p for i, r in enumerate(clean_runs) for p in log_problems(r.stderr, f"clean gc run {i}", 2)]
    reclaimed_clean = sum((r.report or {}).get("totals", {}).get("objects", 0) for r in clean_runs)
    c = rec.counts
    print(f"[{backend}] crash test: {kills} gc processes SIGKILLed in {KILL_ROUNDS} rounds "
          f"({completed} finished before their kill time; {worked} had logged collector work; "
          f"{rounds_with_backlog} rounds started with work pending), kill delays {min(delays, default=0):.2f}-"
          f"{max(delays, default=0):.2f}s (start-up {t_import:.2f}s), kill phase {kill_phase:.0f}s\n"
          f"  during the kills: {c['pulls']} pulls ({c['pull_problems']} problems), {c['repushes']} pushes reusing "
          f"deleted layers ({c['repush_failures']} failed)\n"
          f"  left by the kills: {len(left_by_kills)} tombstones, {len(leased)} leased to killed processes\n"
          f"  clean gc: {len(clean_runs)} runs, reclaimed {reclaimed_clean} objects\n"
          f"  end: {len(tagged)} tagged images verified, {len(stored)} blobs stored, {len(kept)} expected, "
          f"{len(model.ever_stored) - len(stored)} reclaimed; fsck leaks={report.get('leaks')} "
          f"missing={len(report.get('missing', []))} corrupt={len(report.get('corrupt', []))}\n"
          f"  total {time.monotonic() - started:.0f}s", flush=True)

    def listing(items, n=25):
        items = list(items)
        return "\n  " + "\n  ".join(map(str, items[:n])) + (f"\n  ... {len(items) - n} more" if len(items) > n else "")

    failures = [f.line() for f in rec.failures]
    assert not failures, f"{len(failures)} failed requests / gc processes:" + listing(failures)
    assert not pull_problems, "tagged images do not pull intact:" + listing(pull_problems)
    assert not lost, "blobs of kept images are gone from storage:" + listing(lost)
    assert not (report.get("leaks") or report.get("missing") or report.get("corrupt") or "error" in report), \
        f"fsck: {({k: report.get(k) for k in ('leaks', 'leak_keys', 'missing', 'corrupt', 'error')})}"
    assert not garbage_left, (
        f"{len(garbage_left)} garbage blobs are still stored after the clean gc run (of {len(garbage)} garbage "
        f"blobs); tombstones left: {len(remaining_tombstones)}:" + listing(
            {**t, "next_attempt_in_s": round(t["next_attempt_at"] - time.time(), 1)} for t in remaining_tombstones)
        + "\n garbage:" + listing(garbage_left, 10))
    assert not staged, "staged uploads left in storage:" + listing(staged)
    assert not server_errors and not clean_errors, "\n---\n".join(server_errors + clean_errors)
    assert kills >= KILL_ROUNDS, f"only {kills} of {KILL_ROUNDS} rounds killed a running collector"
