"""Shared workload of the online-GC proof tests (race, crash) and of ``bench/gc_soak.py``.

Everything talks to a real ``dockyard serve`` process over plain HTTP and runs the real
``python -m dockyard gc`` / ``fsck`` commands; nothing here imports the registry.

Pushes follow the docker client's protocol: HEAD every blob first and skip the upload of
those that exist (the dangerous case for a collector: the client relies on a blob it did
not send), mount or upload the others (POST, PATCH, PUT ?digest=; or POST + monolithic
PUT), then PUT the manifest. Every request whose status is not the expected one is
recorded with its step, status, body excerpt and time.

Protection window (read from ``registry.blobs.stat``): a HEAD that answers 200 pushes a
pending review of that layer link back to ``now + gc_delay`` when it is due within
``gc_delay / 2``; a new review of an existing link is never due before ``now + gc_delay``.
So a client that saw "exists" may rely on the link for ``gc_delay / 2`` at least: a push
must finish (manifest PUT answered) within ``gc_delay / 2`` of its first HEAD. Every push
records that duration and failures say whether the push was within that budget.

The model: every pushed manifest is unique (unique config) and has a unique tag, so the
expected end state is exact: tagged images must pull intact, images deleted by digest
(``pending_delete``) keep their blobs, and every other blob must be reclaimed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urljoin

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_blob(seed: str) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"seed": seed}},
                       "rootfs": {"type": "layers", "diff_ids": []}}, sort_keys=True).encode()


def random_blob(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def manifest_for(config: bytes, layers: list[bytes]) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
           "layers": [{"mediaType": OCI_LAYER, "digest": sha256(b), "size": len(b)} for b in layers]}
    return json.dumps(doc).encode()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def delete_semantics() -> tuple[dict[str, str], bool]:
    """(settings, whether a delete by digest keeps the image's blobs).

    With the trash (setting ``delayed_delete``, default on) an untag keeps the manifest
    restorable until ``scrub_time``, so nothing an untag frees is garbage within a test;
    these tests turn it off, which also makes a delete by digest purge the image at once
    (its blobs become garbage). Without that setting a delete by digest leaves the image
    ``pending_delete`` with its blobs (no scrubber).
    """
    from dockyard.config import SETTINGS

    if any(s.name == "delayed_delete" for s in SETTINGS):
        return {"DOCKYARD_DELAYED_DELETE": "false"}, False
    return {}, True


# ---- recording ------------------------------------------------------------------

@dataclass
class Failure:
    category: str          # push | abandoned-push | delete | unlink | pull | gc-process | repush ...
    step: str              # e.g. push:head, push:patch, push:manifest, delete:untag
    method: str
    url: str
    status: int | None
    detail: str
    at: float              # seconds since the workload started
    extra: dict = field(default_factory=dict)

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (f"[t={self.at:7.2f}s] {self.category} {self.step}: {self.method} {self.url} -> "
                f"{self.status} {self.detail[:300]} {extra}").rstrip()


class Recorder:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.failures: list[Failure] = []
        self.push_seconds: list[float] = []
        self.latency: dict[str, list[float]] = {}

    def timed(self, step: str, seconds: float) -> None:
        with self.lock:
            self.latency.setdefault(step, []).append(seconds)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def fail(self, category: str, step: str, method: str, url: str, status: int | None, detail: str,
             **extra) -> Failure:
        f = Failure(category, step, method, url, status, detail, self.elapsed(), extra)
        with self.lock:
            self.failures.append(f)
        return f

    def failures_of(self, *categories: str) -> list[Failure]:
        with self.lock:
            return [f for f in self.failures if f.category in categories]


class Http:
    """One keep-alive connection per thread; ``call`` records every unexpected answer."""

    def __init__(self, base_url: str, rec: Recorder, timeout: float = 60.0):
        self.base_url = base_url
        self.rec = rec
        self.client = httpx.Client(base_url=base_url, timeout=timeout)
        self.last_failure: Failure | None = None

    def close(self) -> None:
        self.client.close()

    def fail(self, category: str, step: str, method: str, url: str, status: int | None, detail: str) -> Failure:
        self.last_failure = self.rec.fail(category, step, method, url, status, detail)
        return self.last_failure

    def call(self, category: str, step: str, method: str, url: str, ok: Iterable[int], **kw) -> httpx.Response | None:
        ok = tuple(ok)
        t0 = time.monotonic()
        try:
            r = self.client.request(method, url, **kw)
            self.rec.timed(step, time.monotonic() - t0)
        except httpx.HTTPError as exc:
            self.fail(category, step, method, url, None, f"{type(exc).__name__}: {exc}")
            return None
        if r.status_code not in ok:
            body = r.text if method != "HEAD" else ""
            self.fail(category, step, method, url, r.status_code, body)
            return None
        return r


# ---- images ---------------------------------------------------------------------

@dataclass
class Image:
    repo: str
    tag: str
    digest: str
    manifest: bytes
    blobs: dict[str, bytes]      # config and layers, digest -> bytes
    kind: str                    # pool | private | doomed
    state: str = "pushing"       # pushing | tagged | untagged | deleted | failed
    pushed_at: float = 0.0


class Model:
    """What the clients did, so the end state is known exactly."""

    def __init__(self, deleted_keeps_blobs: bool = True) -> None:
        self.deleted_keeps_blobs = deleted_keeps_blobs
        self.lock = threading.Lock()
        self.images: list[Image] = []
        self.live: dict[str, list[Image]] = {"pool": [], "private": []}
        self.ever_stored: set[str] = set()

    def pushed(self, img: Image, ok: bool) -> None:
        with self.lock:
            self.images.append(img)
            self.ever_stored.update(img.blobs)
            img.state = "tagged" if ok else "failed"
            img.pushed_at = time.monotonic()
            if ok and img.kind in self.live:
                self.live[img.kind].append(img)

    def uploaded(self, digests: Iterable[str]) -> None:
        with self.lock:
            self.ever_stored.update(digests)

    def take_live(self, kind: str, rng: random.Random, keep: int, fresh_chance: float = 0.0) -> Image | None:
        """A tagged image to delete, if more than ``keep`` are live (removed from the live list)."""
        with self.lock:
            live = self.live[kind]
            if not live:
                return None
            if len(live) > keep:
                # mostly the older half, sometimes any
                idx = rng.randrange(max(1, len(live) // 2)) if rng.random() < 0.7 else rng.randrange(len(live))
            elif fresh_chance and rng.random() < fresh_chance:
                idx = len(live) - 1  # untag right after the push: manifest still within gc_delay
            else:
                return None
            return live.pop(idx)

    def give_back(self, img: Image) -> None:
        with self.lock:
            self.live[img.kind].append(img)

    def set_state(self, img: Image, state: str) -> None:
        with self.lock:
            img.state = state

    def tagged(self) -> list[Image]:
        with self.lock:
            return [i for i in self.images if i.state == "tagged"]

    def kept_blobs(self) -> set[str]:
        """Blobs that must still be stored: those of tagged images, and of images deleted by
        digest if deletes leave them pending_delete."""
        keep = ("tagged", "deleted") if self.deleted_keeps_blobs else ("tagged",)
        with self.lock:
            out: set[str] = set()
            for i in self.images:
                if i.state in keep:
                    out.update(i.blobs)
            return out

    def states(self) -> Counter:
        with self.lock:
            return Counter(i.state for i in self.images)


class LayerPool:
    """Shared layers. Pushers mostly take them from a window that slides over the pool, so a
    layer leaves use (and turns garbage) and comes back (while it is being collected)."""

    def __init__(self, seed: str, size: int = 30, window: int = 10, period: float = 3.0):
        self.layers = [random_blob(f"pool-{seed}-{i}", 256 * 1024 if i % 7 == 0 else 1024 * (1 + i % 8))
                       for i in range(size)]
        self.by_digest = {sha256(b): b for b in self.layers}
        self.window = window
        self.period = period
        self.t0 = time.monotonic()

    def pick(self, rng: random.Random, n: int) -> list[bytes]:
        start = int((time.monotonic() - self.t0) / self.period) * 3
        out: list[bytes] = []
        while len(out) < n:
            if rng.random() < 0.85:
                layer = self.layers[(start + rng.randrange(self.window)) % len(self.layers)]
            else:
                layer = rng.choice(self.layers)
            if layer not in out:
                out.append(layer)
        return out


# ---- the docker push protocol -----------------------------------------------------

@dataclass
class PushResult:
    ok: bool
    seconds: float
    skipped: list[str]           # digests the HEAD said exist (not uploaded)
    uploaded: list[str]
    mounted: list[str]
    failure: Failure | None = None


def upload_blob(http: Http, category: str, repo: str, data: bytes, rng: random.Random,
                mount_from: str | None = None) -> str | None:
    """Mount or upload one blob; returns "mounted", "uploaded" or None (failure recorded)."""
    d = sha256(data)
    rec = http.rec
    if mount_from is not None:
        r = http.call(category, "push:mount", "POST", f"/v2/{repo}/blobs/uploads/",
                      ok=(201, 202), params={"mount": d, "from": mount_from})
        if r is None:
            return None
        if r.status_code == 201:
            rec.count("mounts")
            return "mounted"
        rec.count("mount_fallbacks")
        location = r.headers.get("location")
    else:
        r = http.call(category, "push:start", "POST", f"/v2/{repo}/blobs/uploads/", ok=(202,))
        if r is None:
            return None
        location = r.headers.get("location")
    if not location:
        http.fail(category, "push:start", "POST", f"/v2/{repo}/blobs/uploads/", r.status_code, "no Location header")
        return None
    location = urljoin(http.base_url + "/", location)
    sep = "&" if "?" in location else "?"
    if rng.random() < 0.7:  # docker: PATCH the bytes, then PUT ?digest= without a body
        r = http.call(category, "push:patch", "PATCH", location, ok=(202,), content=data,
                      headers={"Content-Type": "application/octet-stream"})
        if r is None:
            return None
        location = urljoin(http.base_url + "/", r.headers.get("location", location))
        sep = "&" if "?" in location else "?"
        r = http.call(category, "push:finish", "PUT", f"{location}{sep}digest={d}", ok=(201,),
                      headers={"Content-Length": "0"})
    else:  # containerd style: monolithic PUT
        r = http.call(category, "push:finish", "PUT", f"{location}{sep}digest={d}", ok=(201,), content=data,
                      headers={"Content-Type": "application/octet-stream"})
    if r is None:
        return None
    if r.headers.get("docker-content-digest") != d:
        http.fail(category, "push:finish", "PUT", location, r.status_code,
                 f"Docker-Content-Digest {r.headers.get('docker-content-digest')} != {d}")
        return None
    rec.count("uploads")
    return "uploaded"


def docker_push(http: Http, category: str, repo: str, ref: str, config: bytes, layers: list[bytes],
                rng: random.Random, mount_sources: list[str] = (), mount_chance: float = 0.0,
                budget: float | None = None, upload_manifest: bool = True) -> PushResult:
    rec = http.rec
    t0 = time.monotonic()
    blobs: list[bytes] = []
    for b in [config, *layers]:
        if b not in blobs:
            blobs.append(b)
    skipped, uploaded, mounted = [], [], []
    http.last_failure = None

    def failed() -> PushResult:
        secs = time.monotonic() - t0
        f = http.last_failure
        if f is not None:
            f.extra.update({"repo": repo, "ref": ref, "push_seconds": round(secs, 3),
                            "within_budget": budget is None or secs <= budget,
                            "head_said_exists": ",".join(d[7:19] for d in skipped) or "-",
                            "uploaded": ",".join(d[7:19] for d in uploaded) or "-"})
        rec.count(f"{category}_failures")
        return PushResult(False, secs, skipped, uploaded, mounted, f)

    missing = []
    for b in blobs:
        d = sha256(b)
        r = http.call(category, "push:head", "HEAD", f"/v2/{repo}/blobs/{d}", ok=(200, 404))
        if r is None:
            return failed()
        if r.status_code == 200:
            if int(r.headers.get("content-length", -1)) != len(b):
                http.fail(category, "push:head", "HEAD", f"/v2/{repo}/blobs/{d}", 200,
                         f"Content-Length {r.headers.get('content-length')} != {len(b)}")
                return failed()
            skipped.append(d)
            rec.count("head_exists")
        else:
            missing.append(b)
            rec.count("head_missing")
    for b in missing:
        src = rng.choice(mount_sources) if mount_sources and rng.random() < mount_chance else None
        how = upload_blob(http, category, repo, b, rng, src)
        if how is None:
            return failed()
        (mounted if how == "mounted" else uploaded).append(sha256(b))
    if upload_manifest:
        manifest = manifest_for(config, layers)
        r = http.call(category, "push:manifest", "PUT", f"/v2/{repo}/manifests/{ref}", ok=(201,), content=manifest,
                      headers={"Content-Type": OCI_MANIFEST})
        if r is None:
            return failed()
        if r.headers.get("docker-content-digest") != sha256(manifest):
            http.fail(category, "push:manifest", "PUT", f"/v2/{repo}/manifests/{ref}", r.status_code,
                     f"Docker-Content-Digest {r.headers.get('docker-content-digest')} != {sha256(manifest)}")
            return failed()
    secs = time.monotonic() - t0
    if upload_manifest:
        with rec.lock:
            rec.push_seconds.append(secs)
        if budget is not None and secs > budget:
            rec.count("pushes_over_budget")
    return PushResult(True, secs, skipped, uploaded, mounted)


def verify_image(http: Http, img: Image, category: str = "pull") -> list[str]:
    """Pull by tag: the manifest digest and every blob's sha256 must match what was pushed."""
    problems = []
    url = f"/v2/{img.repo}/manifests/{img.tag}"
    r = http.call(category, "pull:manifest", "GET", url, ok=(200,), headers={"Accept": OCI_MANIFEST})
    if r is None:
        return [f"{img.repo}:{img.tag} ({img.digest}): manifest GET failed: {http.last_failure.line()}"]
    if r.headers.get("docker-content-digest") != img.digest or sha256(r.content) != img.digest:
        problems.append(f"{img.repo}:{img.tag}: manifest digest {r.headers.get('docker-content-digest')} / "
                        f"sha256(body) {sha256(r.content)} != pushed {img.digest}")
        return problems
    for d, data in img.blobs.items():
        r = http.call(category, "pull:blob", "GET", f"/v2/{img.repo}/blobs/{d}", ok=(200,))
        if r is None:
            problems.append(f"{img.repo}:{img.tag}: blob {d} GET failed: {http.last_failure.line()}")
        elif sha256(r.content) != d or r.content != data:
            problems.append(f"{img.repo}:{img.tag}: blob {d} content has sha256 {sha256(r.content)} "
                            f"({len(r.content)} bytes, pushed {len(data)})")
    return problems


# ---- the commands ------------------------------------------------------------------

def dockyard_env(database_url: str, settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    env["DOCKYARD_DATABASE_URL"] = database_url
    env["DOCKYARD_LOG_LEVEL"] = "info"
    env.update(settings)
    return env


def gc_argv(data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dockyard", "gc", "--data-dir", str(data_dir), "--output", "json", *extra]


@dataclass
class CommandResult:
    rc: int
    report: dict | None
    stderr: str
    seconds: float


def run_command(argv: list[str], env: dict, timeout: float = 300.0) -> CommandResult:
    t0 = time.monotonic()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    try:
        report = json.loads(p.stdout) if p.stdout.strip() else None
    except json.JSONDecodeError:
        report = None
    return CommandResult(p.returncode, report, p.stderr, time.monotonic() - t0)


def run_gc(data_dir: Path, env: dict, timeout: float = 300.0) -> CommandResult:
    return run_command(gc_argv(data_dir), env, timeout)


def run_fsck(data_dir: Path, env: dict, *, verify: bool = True, timeout: float = 300.0) -> CommandResult:
    argv = [sys.executable, "-m", "dockyard", "fsck", "--data-dir", str(data_dir), "--output", "json"]
    if verify:
        argv.append("--verify")
    return run_command(argv, {**env, "DOCKYARD_FSCK_GRACE": "0s"}, timeout)


def stored_blobs(data_dir: Path) -> set[str]:
    """Digests of the blob files under <data_dir>/storage/blobs/<alg>/<xx>/<hex>."""
    root = data_dir / "storage" / "blobs"
    out = set()
    if root.is_dir():
        for alg in root.iterdir():
            for fan in alg.iterdir():
                for f in fan.iterdir():
                    out.add(f"{alg.name}:{f.name}")
    return out


def staged_uploads(data_dir: Path) -> list[str]:
    root = data_dir / "storage" / "uploads"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


_TRACE = re.compile(r"^Traceback \(most recent call last\):$")


def _is_problem(line: str) -> bool:
    return ("level=ERROR" in line or "level=CRITICAL" in line or line.startswith("ERROR:")
            or line.startswith("CRITICAL:") or bool(_TRACE.match(line)))


def log_problems(text: str, source: str, limit: int = 4) -> list[str]:
    """Stack traces and ERROR lines in a log, as excerpts (the registry must log neither)."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines) and len(out) < limit:
        if not _is_problem(lines[i]):
            i += 1
            continue
        j = i + 1  # the block: up to the next structured log line
        while j < len(lines) and not lines[j].startswith("time=") and not lines[j].startswith("INFO:"):
            j += 1
        block = lines[i:j]
        if len(block) > 40:  # keep the first lines, dockyard's own frames and the error itself
            keep = set(range(6)) | set(range(len(block) - 10, len(block)))
            for k, line in enumerate(block):
                if "/dockyard/" in line and line.lstrip().startswith("File "):
                    keep |= {k, k + 1}
            out_lines, last = [], -1
            for k in sorted(x for x in keep if x < len(block)):
                if k != last + 1:
                    out_lines.append("    ...")
                out_lines.append(block[k])
                last = k
            block = out_lines
        out.append(f"{source} line {i + 1}:\n" + "\n".join(block))
        i = j
    return out


def count_log_problems(text: str) -> int:
    return sum(1 for line in text.splitlines() if _is_problem(line))


# ---- gc status (GET /admin/v1/gc) ------------------------------------------------

class RunTally:
    """Accumulates the collector runs that GET /admin/v1/gc lists, by run id: the last 10 while the
    workload runs, the whole kept history (500) at the end, so a busy machine's runs are all counted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[int, dict] = {}
        self.max_backlog: Counter[str] = Counter()
        self.last_backlog: dict = {}

    def absorb(self, status: dict) -> None:
        with self.lock:
            for run in status.get("runs", []):
                self.runs.setdefault(run["id"], run)
            self.last_backlog = status.get("backlog", {})
            for queue, counts in self.last_backlog.items():
                self.max_backlog[queue] = max(self.max_backlog[queue], counts.get("pending", 0))

    def totals(self) -> tuple[Counter, Counter, int, int]:
        """(objects per kind, failures per kind, runs seen, highest run id)."""
        objects: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        with self.lock:
            for run in self.runs.values():
                if run.get("dry_run"):
                    continue
                for kind, k in run["report"].get("kinds", {}).items():
                    objects[kind] += k.get("objects", 0)
                    failures[kind] += k.get("failures", 0)
            return objects, failures, len(self.runs), max(self.runs, default=0)


def gc_status(http: Http, runs: int = 10) -> dict | None:
    r = http.call("admin", "admin:gc-status", "GET", f"/admin/v1/gc?runs={runs}", ok=(200,))
    return r.json() if r is not None else None


def backlog_pending(backlog: dict, *, tombstones: bool = True) -> int:
    return sum(v.get("pending", 0) for k, v in backlog.items() if tombstones or k != "tombstones")


def settle(data_dir: Path, env: dict, status: Callable[[], dict | None], *, timeout: float,
           log: Callable[[str], None] = lambda s: None) -> dict:
    """Run ``dockyard gc`` until a run reclaims nothing and no queue or tombstone is pending."""
    deadline = time.monotonic() + timeout
    runs = []
    while True:
        res = run_gc(data_dir, env)
        objects = (res.report or {}).get("totals", {}).get("objects", -1)
        st = status() or {}
        backlog = st.get("backlog", {})
        runs.append({"rc": res.rc, "objects": objects, "seconds": round(res.seconds, 2),
                     "pending": backlog_pending(backlog), "report": res.report, "stderr": res.stderr})
        log(f"settle: gc run {len(runs)} rc={res.rc} reclaimed={objects} backlog={backlog}")
        if res.report is not None and objects == 0 and backlog_pending(backlog) == 0:
            return {"settled": True, "runs": runs, "backlog": backlog}
        if time.monotonic() > deadline:
            return {"settled": False, "runs": runs, "backlog": backlog}
        if objects == 0:
            time.sleep(0.5)


# ---- the race workload -----------------------------------------------------------

@dataclass
class RaceSettings:
    seconds: float = 75.0
    gc_delay: float = 2.0
    gc_interval: float = 0.2
    upload_ttl: float = 4.0
    pushers: int = 6
    untaggers: int = 2
    digest_deleters: int = 1
    abandoners: int = 1
    gc_processes: int = 0
    pool_size: int = 30
    app_repos: int = 3
    scratch_repos: int = 2
    live_pool_target: int = 8
    live_private_target: int = 4
    storage_latency: str = ""
    seed: int = 0
    extra_env: dict = field(default_factory=lambda: delete_semantics()[0])

    def server_env(self) -> dict[str, str]:
        env = {**self.extra_env, "DOCKYARD_GC_ENABLED": "true",
               "DOCKYARD_GC_DELAY": f"{self.gc_delay}s",
               "DOCKYARD_GC_INTERVAL": f"{self.gc_interval}s", "DOCKYARD_DELETE_UNTAGGED": "true",
               "DOCKYARD_UPLOAD_TTL": f"{self.upload_ttl}s", "DOCKYARD_GC_WORKERS": "4"}
        if self.storage_latency:
            env["DOCKYARD_STORAGE_LATENCY"] = self.storage_latency
        return env

    @property
    def push_budget(self) -> float:
        return self.gc_delay / 2


class RaceWorkload:
    """Pushers, untaggers, digest deleters, abandoned pushes with unlinks, ``dockyard gc``
    processes in a loop, and a monitor of GET /admin/v1/gc, all against one server."""

    def __init__(self, url: str, data_dir: Path, database_url: str, s: RaceSettings,
                 log: Callable[[str], None] = lambda m: None):
        self.url = url
        self.data_dir = data_dir
        self.s = s
        self.log = log
        self.rec = Recorder()
        self.model = Model(delete_semantics()[1])
        self.tally = RunTally()
        self.stop = threading.Event()
        self.run_id = f"{s.seed:x}{os.getpid():x}{int(time.time() * 1000) % 100000:x}"
        self.pool = LayerPool(self.run_id, s.pool_size, period=max(1.0, s.gc_delay))
        self.app_repos = [f"race/app{i}" for i in range(s.app_repos)]
        self.scratch_repos = [f"race/scratch{i}" for i in range(s.scratch_repos)]
        self.env = dockyard_env(database_url, s.server_env())
        self.gc_results: list[CommandResult] = []
        self.gc_lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    # ---- threads ----
    def _thread(self, name: str, fn: Callable[[Http, random.Random], None], idx: int) -> None:
        rng = random.Random(f"{self.s.seed}-{name}-{idx}")
        http = Http(self.url, self.rec)
        try:
            fn(http, rng, idx)
        except Exception as exc:  # a bug in the workload itself: make it loud
            self.rec.fail("workload", name, "-", "-", None, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            http.close()

    def pusher(self, http: Http, rng: random.Random, idx: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            repo = rng.choice(self.app_repos)
            seed = f"{self.run_id}-p{idx}-{n}"
            config = config_blob(seed)
            if rng.random() < 0.2:
                kind = "private"
                layers = [random_blob(f"{seed}-u", 2048)]
            else:
                kind = "pool"
                layers = self.pool.pick(rng, rng.randint(2, 4))
                if rng.random() < 0.5:
                    layers.append(random_blob(f"{seed}-u", 1024 + rng.randrange(4096)))
            tag = f"p{idx}-{n}"
            sources = [r for r in self.app_repos + self.scratch_repos if r != repo]
            res = docker_push(http, "push", repo, tag, config, layers, rng, sources, 0.3, self.s.push_budget)
            manifest = manifest_for(config, layers)
            img = Image(repo, tag, sha256(manifest), manifest, {sha256(b): b for b in [config, *layers]}, kind)
            self.model.pushed(img, res.ok)
            self.model.uploaded(res.uploaded)
            self.rec.count("pushes" if res.ok else "pushes_failed")

    def untagger(self, http: Http, rng: random.Random, idx: int) -> None:
        while not self.stop.is_set():
            img = self.model.take_live("pool", rng, self.s.live_pool_target, fresh_chance=0.05)
            if img is None:
                time.sleep(0.01)
                continue
            r = http.call("delete", "delete:untag", "DELETE", f"/v2/{img.repo}/manifests/{img.tag}", ok=(202,))
            if r is None:
                self.model.give_back(img)
                time.sleep(0.05)
                continue
            self.model.set_state(img, "untagged")
            self.rec.count("untags")

    def digest_deleter(self, http: Http, rng: random.Random, idx: int) -> None:
        while not self.stop.is_set():
            img = self.model.take_live("private", rng, self.s.live_private_target)
            if img is None:
                time.sleep(0.02)
                continue
            r = http.call("delete", "delete:manifest", "DELETE", f"/v2/{img.repo}/manifests/{img.digest}", ok=(202,))
            if r is None:
                self.model.give_back(img)
                time.sleep(0.05)
                continue
            self.model.set_state(img, "deleted")
            self.rec.count("digest_deletes")
            time.sleep(rng.uniform(0, 0.05))

    def abandoner(self, http: Http, rng: random.Random, idx: int) -> None:
        """Pushes that never PUT a manifest (blobs only, some sessions left half-written), then
        unlinks of part of what they uploaded; sometimes a whole image into a fresh repository
        that an admin deletes."""
        n = 0
        while not self.stop.is_set():
            n += 1
            seed = f"{self.run_id}-a{idx}-{n}"
            if n % 10 == 0:
                self._doomed_repository(http, rng, seed)
                continue
            repo = rng.choice(self.scratch_repos)
            blobs = self.pool.pick(rng, rng.randint(1, 3)) + [random_blob(f"{seed}-u", 1500)]
            res = docker_push(http, "abandoned-push", repo, "-", blobs[0], blobs[1:], rng, upload_manifest=False)
            self.model.uploaded(res.uploaded)
            if not res.ok:
                continue
            self.rec.count("abandoned_pushes")
            if rng.random() < 0.3:  # an upload session left half-written: reclaimed after upload_ttl
                r = http.call("abandoned-push", "push:start", "POST", f"/v2/{repo}/blobs/uploads/", ok=(202,))
                if r is not None:
                    loc = urljoin(self.url + "/", r.headers["location"])
                    if http.call("abandoned-push", "push:patch", "PATCH", loc, ok=(202,),
                                 content=random_blob(f"{seed}-half", 3000),
                                 headers={"Content-Type": "application/octet-stream"}) is not None:
                        self.rec.count("abandoned_sessions")
            # unlink part of what this push uploaded, well within gc_delay of the upload: the
            # links must still be there (fresh uploads are protected for gc_delay)
            time.sleep(rng.uniform(0, self.s.gc_delay / 4))
            for d in res.uploaded:
                if rng.random() < 0.6:
                    if http.call("unlink", "delete:blob", "DELETE", f"/v2/{repo}/blobs/{d}", ok=(202,)) is not None:
                        self.rec.count("unlinks")
            time.sleep(rng.uniform(0, 0.05))

    def _doomed_repository(self, http: Http, rng: random.Random, seed: str) -> None:
        repo = f"race/doomed-{seed}"
        config = config_blob(seed)
        layers = [random_blob(f"{seed}-d{i}", 2000) for i in range(2)]
        res = docker_push(http, "push", repo, "v1", config, layers, rng)
        manifest = manifest_for(config, layers)
        img = Image(repo, "v1", sha256(manifest), manifest, {sha256(b): b for b in [config, *layers]}, "doomed")
        self.model.pushed(img, res.ok)
        if not res.ok:
            return
        self.rec.count("pushes")
        if http.call("delete", "delete:repository", "DELETE", f"/admin/v1/repositories/{repo}", ok=(202,)) is not None:
            self.model.set_state(img, "deleted")  # manifests pending_delete: blobs kept
            self.rec.count("repository_deletes")

    def gc_loop(self, http: Http, rng: random.Random, idx: int) -> None:
        while not self.stop.is_set():
            res = run_gc(self.data_dir, self.env, timeout=600)
            with self.gc_lock:
                self.gc_results.append(res)
                n = len(self.gc_results)
            logs = self.data_dir / "gc-logs"
            logs.mkdir(exist_ok=True)
            (logs / f"gc-{idx}-{n}.log").write_text(res.stderr)
            self.rec.count("gc_process_runs")
            if res.rc != 0 or res.report is None or count_log_problems(res.stderr):
                self.rec.fail("gc-process", "gc", "exec", "python -m dockyard gc", res.rc,
                              "\n".join(log_problems(res.stderr, f"gc process #{idx}", 2)) or res.stderr[-2000:])
            time.sleep(rng.uniform(0, 0.3))

    def monitor(self, http: Http, rng: random.Random, idx: int) -> None:
        while not self.stop.is_set():
            st = gc_status(http)
            if st is not None:
                self.tally.absorb(st)
            self.stop.wait(0.25)
        st = gc_status(http)
        if st is not None:
            self.tally.absorb(st)

    # ---- running ----
    def start(self) -> None:
        s = self.s
        plan = ([("pusher", self.pusher)] * s.pushers + [("untagger", self.untagger)] * s.untaggers
                + [("digest-deleter", self.digest_deleter)] * s.digest_deleters
                + [("abandoner", self.abandoner)] * s.abandoners + [("gc-loop", self.gc_loop)] * s.gc_processes
                + [("monitor", self.monitor)])
        counts: Counter[str] = Counter()
        for name, fn in plan:
            t = threading.Thread(target=self._thread, args=(name, fn, counts[name]), name=f"{name}-{counts[name]}",
                                 daemon=True)
            counts[name] += 1
            self.threads.append(t)
            t.start()

    def run(self, seconds: float, progress_every: float = 10.0) -> None:
        self.start()
        end = time.monotonic() + seconds
        next_report = time.monotonic() + progress_every
        while time.monotonic() < end:
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))
            if time.monotonic() >= next_report:
                next_report += progress_every
                c = self.rec.counts
                self.log(f"t={self.rec.elapsed():6.1f}s pushes={c['pushes']} failed={c['push_failures']} "
                         f"untags={c['untags']} deletes={c['digest_deletes']} unlinks={c['unlinks']} "
                         f"gc-procs={c['gc_process_runs']} backlog={self.tally.last_backlog}")
        self.halt()

    def halt(self, timeout: float = 180.0) -> list[str]:
        """Stop every thread; gc processes finish their run (never killed: a killed collector is
        the crash test's business)."""
        self.stop.set()
        stuck = []
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
            if t.is_alive():
                stuck.append(t.name)
        return stuck

    # ---- the end -----
    def final_checks(self, server_log: Callable[[], str], *, settle_timeout: float = 90.0) -> "RaceOutcome":
        out = RaceOutcome()
        out.push_failures = self.rec.failures_of("push", "abandoned-push")
        out.other_failures = [f for f in self.rec.failures if f.category not in ("push", "abandoned-push")]
        http = Http(self.url, self.rec)
        try:
            # 1. every still-tagged image pulls intact, and the tags lists are exactly the model's
            tagged = self.model.tagged()
            out.pulled = len(tagged)
            for img in tagged:
                out.pull_problems += verify_image(http, img)
            for repo in self.app_repos:
                r = http.call("pull", "pull:tags", "GET", f"/v2/{repo}/tags/list", ok=(200, 404))
                have = set((r.json().get("tags") or []) if r is not None and r.status_code == 200 else [])
                want = {i.tag for i in tagged if i.repo == repo}
                if have != want:
                    out.pull_problems.append(f"{repo}: tags list differs from the pushes: missing "
                                             f"{sorted(want - have)[:10]}, unexpected {sorted(have - want)[:10]}")
            # 2. wait out gc_delay (and upload_ttl for abandoned sessions), then gc until idle
            time.sleep(max(self.s.gc_delay, self.s.upload_ttl) + 0.5)
            out.settle = settle(self.data_dir, self.env, lambda: gc_status(http), timeout=settle_timeout,
                                log=self.log)
            st = gc_status(http, runs=500)
            if st is not None:
                self.tally.absorb(st)
            # 3. fsck (grace 0): no leaks, no missing, no corrupt blob
            res = run_fsck(self.data_dir, self.env)
            out.fsck = res.report or {"error": f"rc={res.rc} {res.stderr[-2000:]}"}
            # 4. exactly the blobs of tagged and pending_delete images are stored
            stored = stored_blobs(self.data_dir)
            kept = self.model.kept_blobs()
            out.stored = len(stored)
            out.lost = sorted(kept - stored)
            out.garbage_left = sorted(stored - kept)
            out.staged_left = staged_uploads(self.data_dir)
            out.reclaimed_blobs = len(self.model.ever_stored - stored)
            # 5. and the final collections did not touch the live images
            for img in tagged:
                out.pull_problems_after += verify_image(http, img)
        finally:
            http.close()
        out.log_problems = log_problems(server_log(), "server log")
        for i, res in enumerate(self.gc_results + [CommandResult(0, None, r["stderr"], 0)
                                                   for r in (out.settle or {}).get("runs", [])]):
            out.log_problems += log_problems(res.stderr, f"gc process run {i}", 2)
        return out

    def resurrections(self, server_log: str) -> tuple[int, int]:
        """(shared layers deleted by a collector, of which pushed again afterwards), from the logs."""
        stamp = r"time=(\S+ \S+) .*"
        deleted: dict[str, str] = {}
        texts = [server_log] + [r.stderr for r in self.gc_results]
        for text in texts:
            for m in re.finditer(stamp + r"gc: deleted blob (sha256:[0-9a-f]{64})", text):
                if m.group(2) in self.pool.by_digest:
                    deleted[m.group(2)] = min(deleted.get(m.group(2), m.group(1)), m.group(1))
        again = set()
        for m in re.finditer(stamp + r"blob (sha256:[0-9a-f]{64}) committed", server_log):
            if m.group(2) in deleted and m.group(1) > deleted[m.group(2)]:
                again.add(m.group(2))
        return len(deleted), len(again)

    def summary(self, out: "RaceOutcome | None" = None, server_log: str | None = None) -> str:
        c = self.rec.counts
        objects, failures, seen, top = self.tally.totals()
        gc_proc = Counter()
        for res in self.gc_results:
            for kind, k in ((res.report or {}).get("kinds") or {}).items():
                gc_proc[kind] += k.get("objects", 0)
        secs = self.rec.push_seconds
        rows = [
            ("pushes (ok)", c["pushes"]), ("push failures", c["push_failures"]),
            ("abandoned pushes", c["abandoned_pushes"]), ("abandoned push failures", c["abandoned-push_failures"]),
            ("HEAD said exists (upload skipped)", c["head_exists"]), ("HEAD said missing", c["head_missing"]),
            ("blob uploads", c["uploads"]), ("cross-repo mounts", c["mounts"]),
            ("mounts refused -> upload", c["mount_fallbacks"]),
            ("untags", c["untags"]), ("manifest deletes (by digest)", c["digest_deletes"]),
            ("blob unlinks", c["unlinks"]), ("abandoned upload sessions", c["abandoned_sessions"]),
            ("repository deletes", c["repository_deletes"]),
            ("push seconds p50/p99/max", f"{percentile(secs, 50):.3f}/{percentile(secs, 99):.3f}/"
                                          f"{max(secs, default=0):.3f} (budget {self.s.push_budget:.2f})"),
            ("pushes over budget", c["pushes_over_budget"]),
            ("failed requests (all)", len(self.rec.failures)),
            ("gc runs seen via GET /admin/v1/gc", f"{seen} (highest run id {top})"),
        ]
        for kind in ("manifests", "links", "blobs", "repositories", "uploads", "tombstones"):
            rows.append((f"  reclaimed {kind}", f"{objects[kind]} (failures {failures[kind]})"))
        rows.append(("dockyard gc processes (loop)", f"{c['gc_process_runs']} runs, reclaimed "
                                                       f"{sum(gc_proc.values())} objects {dict(gc_proc)}"))
        rows.append(("max backlog pending", dict(self.tally.max_backlog)))
        if server_log is not None:
            n_del, n_again = self.resurrections(server_log)
            rows.append(("shared layers deleted / then pushed again",
                         f"{n_del} / {n_again} (of {len(self.pool.layers)})"))
        with self.rec.lock:
            lat = {k: list(v) for k, v in self.rec.latency.items()}
        rows.append(("request ms p50/p99/max", ", ".join(
            f"{k} {percentile(v, 50) * 1000:.0f}/{percentile(v, 99) * 1000:.0f}/{max(v) * 1000:.0f}"
            for k, v in sorted(lat.items()) if k.startswith(("push", "delete")))))
        rows.append(("images by final state", dict(self.model.states())))
        if out is not None:
            rows += [("tagged images pulled + verified", out.pulled),
                     ("settle", f"{'ok' if out.settle and out.settle['settled'] else 'NOT SETTLED'} after "
                                f"{len((out.settle or {}).get('runs', []))} gc runs"),
                     ("fsck leaks/missing/corrupt", f"{out.fsck.get('leaks')}/{len(out.fsck.get('missing', []))}/"
                                                    f"{len(out.fsck.get('corrupt', []))}"),
                     ("blobs stored at the end", out.stored), ("blobs reclaimed (ever stored - stored)",
                                                               out.reclaimed_blobs),
                     ("live blobs lost", len(out.lost)), ("garbage blobs left", len(out.garbage_left)),
                     ("staged uploads left", len(out.staged_left)),
                     ("server/gc log errors + tracebacks", len(out.log_problems))]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@dataclass
class RaceOutcome:
    push_failures: list[Failure] = field(default_factory=list)
    other_failures: list[Failure] = field(default_factory=list)
    pulled: int = 0
    pull_problems: list[str] = field(default_factory=list)
    pull_problems_after: list[str] = field(default_factory=list)
    settle: dict | None = None
    fsck: dict = field(default_factory=dict)
    stored: int = 0
    reclaimed_blobs: int = 0
    lost: list[str] = field(default_factory=list)
    garbage_left: list[str] = field(default_factory=list)
    staged_left: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)

    def problems(self) -> list[tuple[str, str]]:
        """(check, message) for every failed check, push failures first."""
        out = []

        def lines(items, n=40):
            items = list(items)
            more = f"\n  ... and {len(items) - n} more" if len(items) > n else ""
            return "\n  " + "\n  ".join(str(x) for x in items[:n]) + more

        if self.push_failures:
            out.append(("push failures", f"{len(self.push_failures)} push step(s) failed:"
                                         + lines(f.line() for f in self.push_failures)))
        if self.other_failures:
            out.append(("other failed requests", f"{len(self.other_failures)}:"
                                                 + lines(f.line() for f in self.other_failures)))
        if self.pull_problems:
            out.append(("pull after the workload", lines(self.pull_problems)))
        if self.settle is not None and not self.settle["settled"]:
            out.append(("settle", f"gc did not reach an idle state: backlog {self.settle['backlog']}; runs "
                                  + lines(({k: v for k, v in r.items() if k not in ('report', 'stderr')}
                                           for r in self.settle["runs"][-5:]))))
        if self.fsck.get("leaks") or self.fsck.get("missing") or self.fsck.get("corrupt") or "error" in self.fsck:
            keys = ("leaks", "leaked_bytes", "leak_keys", "missing", "corrupt", "error")
            out.append(("fsck", json.dumps({k: self.fsck.get(k) for k in keys})[:4000]))
        if self.lost:
            out.append(("live blobs lost", lines(self.lost)))
        if self.garbage_left:
            out.append(("garbage blobs left in storage", lines(self.garbage_left)))
        if self.staged_left:
            out.append(("staged uploads left in storage", lines(self.staged_left)))
        if self.pull_problems_after:
            out.append(("pull after the final collections", lines(self.pull_problems_after)))
        if self.log_problems:
            out.append(("errors / stack traces in logs", "\n" + "\n---\n".join(self.log_problems)))
        return out
