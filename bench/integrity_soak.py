"""Integrity soak: does every push the registry acknowledged stay pullable, byte for byte,
while many clients push, pull, delete and prune and the collector runs? (issue 10)

    python bench/integrity_soak.py                      # 600 s on PostgreSQL + filesystem
    python bench/integrity_soak.py --duration 120 --pushers 24 --backend sqlite

A real ``dockyard serve`` (PostgreSQL database, filesystem storage, background collector
every ``--gc-interval`` with a short ``--gc-delay``, ``delete_untagged``, no trash) in a
temporary directory, and against it, over plain HTTP (httpx, one connection per thread):

- ``--pushers`` threads (20+) push images whose layers mostly come from one shared pool
  (a window sliding over it, so layers keep turning garbage and being needed again). The
  docker protocol: HEAD every blob and skip those that exist, mount the others from another
  repository (sometimes) or upload them: monolithic (``POST ?digest=`` with the body, or
  ``POST`` + ``PUT`` with the body), streamed (one ``PATCH``) or chunked (several ``PATCH``
  with ``Content-Range``), then ``PUT`` the manifest under a unique tag. A push is
  *acknowledged* when that PUT answers 201 with the manifest's digest;
- pullers: digest-verified pulls of random acknowledged, not deleted images (manifest by
  digest, then every blob; every body must hash to its digest and equal what was pushed);
- deleters: tag deletes and manifest deletes (by digest) of acknowledged images;
- a prune now and then (policy ``soak-ci``, keep the 4 most recent, on the ``soak/ci*``
  repositories), alternately through ``POST /admin/v1/prune`` and ``dockyard prune``;
- the server's collector (and a monitor of ``GET /admin/v1/gc`` for the table).

The model: every acknowledged image (unique config, unique tag) is expected to pull until a
delete of it was *sent* (tag delete, manifest delete) or a prune that *answered* its digest
as deleted was sent. A failed pull counts as a loss unless such a delete was sent before
the failing answer arrived. After ``--duration`` seconds: every live image is pulled, a
final collection runs (``dockyard gc`` until idle, after gc_delay), every live image is
pulled again, and ``dockyard fsck --verify`` (grace 0) runs.

Targets (exit status 1 if one is missed): 5xx answers (and requests without an answer) 0,
acknowledged images that fail a digest-verified pull 0, fsck findings 0. A push refused
with a clean 4xx is allowed (the DESIGN's "a push that loses a race gets a clean 4xx"); the
table counts them by OCI error code, next to the anchor: Quay's published GC soak, 40
failed pushes in 104,135 events.

``run_soak`` is the one implementation; tests/e2e/test_integrity_soak.py runs it for ~50 s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urljoin

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.gc_workload import (  # noqa: E402
    OCI_MANIFEST, Failure, Http, LayerPool, RaceSettings, Recorder, RunTally, config_blob, dockyard_env,
    gc_status, log_problems, manifest_for, percentile, random_blob, run_fsck, settle, sha256,
)
from tests.support import postgres_database, start_server  # noqa: E402

QUAY_ANCHOR = (40, 104_135)  # failed pushes, events: Quay's published GC soak
PRUNE_POLICY = "soak-ci"


@dataclass
class SoakSettings:
    duration: float = 600.0
    backend: str = "postgres"
    pushers: int = 24
    pullers: int = 4
    deleters: int = 2
    gc_delay: float = 8.0           # a push must finish within gc_delay/2 of its first HEAD
    gc_interval: float = 0.5
    prune_every: float = 10.0
    ci_keep: int = 4                # the prune policy keeps the N most recent manifests per ci repository
    pool_size: int = 40
    app_repos: int = 4
    ci_repos: int = 2
    ci_share: float = 0.2           # share of pushes that go to the pruned repositories
    live_target: int = 40           # deleters keep about this many acknowledged images in the app repositories
    mount_chance: float = 0.25
    seed: int = 0

    def race_settings(self) -> RaceSettings:
        return RaceSettings(seconds=self.duration, gc_delay=self.gc_delay, gc_interval=self.gc_interval,
                            upload_ttl=self.gc_delay + 2, seed=self.seed)

    def server_env(self) -> dict[str, str]:
        policy = {PRUNE_POLICY: {"repositories": ["soak/ci*"], "keep_recent": self.ci_keep}}
        return {**self.race_settings().server_env(), "DOCKYARD_RETENTION": json.dumps(policy)}

    @property
    def push_budget(self) -> float:
        return self.gc_delay / 2


# ---- the model of acknowledged images ------------------------------------------------

@dataclass
class Img:
    repo: str
    tag: str
    digest: str
    blobs: dict[str, bytes]
    acked_at: float
    ci: bool
    deleted_at: float | None = None   # when a delete of it was sent (seconds since the start)
    deleted_by: str = ""


@dataclass
class PullFailure:
    img: Img
    at: float
    detail: str
    phase: str  # run | final | after-gc

    def counts(self) -> bool:
        """A loss unless a delete of the image was sent before the failing answer arrived."""
        return self.img.deleted_at is None or self.img.deleted_at > self.at


class Model:
    """Acknowledged images; every time is ``clock()`` (seconds since the soak started)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.images: list[Img] = []
        self.by_digest: dict[str, Img] = {}
        self.live_app: list[Img] = []
        self.live_ci: list[Img] = []
        self.pruned: dict[str, float] = {}  # digests a prune answered as deleted -> when it was sent
        self.pull_failures: list[PullFailure] = []

    def acked(self, img: Img) -> None:
        with self.lock:
            self.images.append(img)
            self.by_digest[img.digest] = img
            if img.digest in self.pruned:  # the prune answered before this pusher recorded its ack
                img.deleted_at, img.deleted_by = self.pruned[img.digest], "prune"
            else:
                (self.live_ci if img.ci else self.live_app).append(img)

    def claim_delete(self, rng: random.Random, keep: int, how: str) -> Img | None:
        """An acknowledged app image to delete (marked deleted before the request is sent)."""
        with self.lock:
            live = self.live_app
            if len(live) > keep:
                idx = rng.randrange(max(1, len(live) // 2)) if rng.random() < 0.7 else rng.randrange(len(live))
            elif live and rng.random() < 0.03:
                idx = len(live) - 1  # right after its push
            else:
                return None
            img = live.pop(idx)
            img.deleted_at, img.deleted_by = self.clock(), how
            return img

    def mark_pruned(self, digests: list[str], sent_at: float) -> int:
        n = 0
        with self.lock:
            for d in digests:
                self.pruned.setdefault(d, sent_at)
                img = self.by_digest.get(d)
                if img is not None and img.deleted_at is None:
                    img.deleted_at, img.deleted_by = sent_at, "prune"
                    if img in self.live_ci:
                        self.live_ci.remove(img)
                    n += 1
        return n

    def pick_live(self, rng: random.Random) -> Img | None:
        with self.lock:
            total = len(self.live_app) + len(self.live_ci)
            if not total:
                return None
            i = rng.randrange(total)
            return self.live_app[i] if i < len(self.live_app) else self.live_ci[i - len(self.live_app)]

    def live(self) -> list[Img]:
        with self.lock:
            return [i for i in self.images if i.deleted_at is None]

    def pull_failed(self, img: Img, at: float, detail: str, phase: str) -> None:
        with self.lock:
            self.pull_failures.append(PullFailure(img, at, detail, phase))

    def excused(self) -> int:
        """Pull failures of images whose delete was sent before the failing answer (the race worked)."""
        with self.lock:
            return sum(1 for f in self.pull_failures if not f.counts())

    def losses(self) -> list[PullFailure]:
        """Pull failures that count, one per image (the first)."""
        with self.lock:
            seen, out = set(), []
            for f in self.pull_failures:
                if f.counts() and f.img.digest not in seen:
                    seen.add(f.img.digest)
                    out.append(f)
            return out


# ---- protocol ----------------------------------------------------------------------

def oci_code(f: Failure | None) -> str:
    """The refusal's reason: the first OCI error code of the body, else the status."""
    if f is None:
        return "unknown"
    if f.status is None:
        return "no answer"
    try:
        errors = json.loads(f.detail).get("errors") or []
        if errors and errors[0].get("code"):
            return str(errors[0]["code"])
    except (ValueError, AttributeError):
        pass
    return f"HTTP {f.status}"


def _finish(http: Http, repo: str, location: str, data: bytes, rng: random.Random, method: str) -> bool:
    """Send ``data`` into the upload session at ``location`` and commit it under its digest."""
    d = sha256(data)
    base = http.base_url + "/"
    location = urljoin(base, location)

    def commit_url(loc: str) -> str:  # httpx params= would replace the Location's own query
        return f"{loc}{'&' if '?' in loc else '?'}digest={d}"
    if method == "post-put":
        r = http.call("push", "push:put", "PUT", commit_url(location), ok=(201,), content=data,
                      headers={"Content-Type": "application/octet-stream"})
    else:
        if method == "chunked" and len(data) > 1:
            cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 3))))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        else:  # streamed: one PATCH without Content-Range
            pieces = [data]
        last_in_put = method == "chunked" and len(pieces) > 1 and rng.random() < 0.3
        body_pieces = pieces[:-1] if last_in_put else pieces
        offset = 0
        for piece in body_pieces:
            headers = {"Content-Type": "application/octet-stream"}
            if method == "chunked":
                headers["Content-Range"] = f"{offset}-{offset + len(piece) - 1}"
            r = http.call("push", "push:patch", "PATCH", location, ok=(202,), content=piece, headers=headers)
            if r is None:
                return False
            offset += len(piece)
            location = urljoin(base, r.headers.get("location", location))
        if last_in_put:
            r = http.call("push", "push:put", "PUT", commit_url(location), ok=(201,), content=pieces[-1],
                          headers={"Content-Type": "application/octet-stream"})
        else:
            r = http.call("push", "push:put", "PUT", commit_url(location), ok=(201,),
                          headers={"Content-Length": "0"})
    if r is None:
        return False
    if r.headers.get("docker-content-digest") != d:
        http.fail("push", "push:put", "PUT", location, r.status_code,
                  f"Docker-Content-Digest {r.headers.get('docker-content-digest')} != {d}")
        return False
    return True


def upload(http: Http, repo: str, data: bytes, rng: random.Random, counts: Counter, mount_from: str | None) -> bool:
    d = sha256(data)
    if mount_from is not None:
        r = http.call("push", "push:mount", "POST", f"/v2/{repo}/blobs/uploads/", ok=(201, 202),
                      params={"mount": d, "from": mount_from})
        if r is None:
            return False
        if r.status_code == 201:
            counts["mount"] += 1
            return True
        counts["mount refused -> upload"] += 1
        method = rng.choice(["post-put", "streamed", "chunked"])
        counts[method] += 1
        return _finish(http, repo, r.headers.get("location", ""), data, rng, method)
    method = rng.choices(["monolithic", "post-put", "streamed", "chunked"], [2, 2, 3, 3])[0]
    counts[method] += 1
    if method == "monolithic":
        r = http.call("push", "push:post", "POST", f"/v2/{repo}/blobs/uploads/", ok=(201,), params={"digest": d},
                      content=data, headers={"Content-Type": "application/octet-stream"})
        if r is None:
            return False
        if r.headers.get("docker-content-digest") != d:
            http.fail("push", "push:post", "POST", f"/v2/{repo}/blobs/uploads/", r.status_code,
                      f"Docker-Content-Digest {r.headers.get('docker-content-digest')} != {d}")
            return False
        return True
    r = http.call("push", "push:start", "POST", f"/v2/{repo}/blobs/uploads/", ok=(202,))
    if r is None:
        return False
    return _finish(http, repo, r.headers.get("location", ""), data, rng, method)


@dataclass
class Push:
    ok: bool
    seconds: float
    failure: Failure | None = None


def push_image(http: Http, repo: str, tag: str, config: bytes, layers: list[bytes], rng: random.Random,
               counts: Counter, mount_sources: list[str], mount_chance: float) -> Push:
    t0 = time.monotonic()
    http.last_failure = None

    def failed() -> Push:
        return Push(False, time.monotonic() - t0, http.last_failure)

    blobs = list(dict.fromkeys([config, *layers]))
    missing = []
    for b in blobs:
        d = sha256(b)
        r = http.call("push", "push:head", "HEAD", f"/v2/{repo}/blobs/{d}", ok=(200, 404))
        if r is None:
            return failed()
        if r.status_code == 200:
            if int(r.headers.get("content-length", -1)) != len(b):
                http.fail("push", "push:head", "HEAD", f"/v2/{repo}/blobs/{d}", 200,
                          f"Content-Length {r.headers.get('content-length')} != {len(b)}")
                return failed()
            counts["HEAD said exists (skipped)"] += 1
        else:
            missing.append(b)
    for b in missing:
        src = rng.choice(mount_sources) if mount_sources and rng.random() < mount_chance else None
        if not upload(http, repo, b, rng, counts, src):
            return failed()
    manifest = manifest_for(config, layers)
    r = http.call("push", "push:manifest", "PUT", f"/v2/{repo}/manifests/{tag}", ok=(201,), content=manifest,
                  headers={"Content-Type": OCI_MANIFEST})
    if r is None:
        return failed()
    if r.headers.get("docker-content-digest") != sha256(manifest):
        http.fail("push", "push:manifest", "PUT", f"/v2/{repo}/manifests/{tag}", r.status_code,
                  f"Docker-Content-Digest {r.headers.get('docker-content-digest')} != {sha256(manifest)}")
        return failed()
    return Push(True, time.monotonic() - t0)


def pull_image(http: Http, img: Img, category: str = "pull") -> str | None:
    """Digest-verified pull; the first problem, or None."""
    url = f"/v2/{img.repo}/manifests/{img.digest}"
    r = http.call(category, "pull:manifest", "GET", url, ok=(200,), headers={"Accept": OCI_MANIFEST})
    if r is None:
        return f"GET {url} -> {http.last_failure.status} {http.last_failure.detail[:300]}"
    if sha256(r.content) != img.digest or r.headers.get("docker-content-digest") != img.digest:
        return f"GET {url}: body sha256 {sha256(r.content)}, Docker-Content-Digest {r.headers.get('docker-content-digest')}"
    for d, data in img.blobs.items():
        url = f"/v2/{img.repo}/blobs/{d}"
        r = http.call(category, "pull:blob", "GET", url, ok=(200,))
        if r is None:
            return f"GET {url} -> {http.last_failure.status} {http.last_failure.detail[:300]}"
        if r.content != data:
            return f"GET {url}: {len(r.content)} bytes with sha256 {sha256(r.content)} (pushed {len(data)} bytes)"
    return None


# ---- the soak ------------------------------------------------------------------------

@dataclass
class SoakResult:
    settings: SoakSettings
    seconds: float = 0.0
    acked: int = 0
    refused: Counter = field(default_factory=Counter)         # OCI error code -> pushes
    refusals: list[str] = field(default_factory=list)         # failure lines of refused pushes
    server_errors: list[Failure] = field(default_factory=list)  # 5xx answers and requests without answer
    losses: list[PullFailure] = field(default_factory=list)
    excused: int = 0                                          # pull failures after a delete was sent
    other_4xx: Counter = field(default_factory=Counter)       # "step status" -> answers (pushes aside)
    command_failures: list[str] = field(default_factory=list)  # dockyard prune runs that failed (rc != 0)
    fsck: dict = field(default_factory=dict)
    fsck_findings: int = 0
    settled: bool = False
    log_problems: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    push_seconds: list[float] = field(default_factory=list)
    reclaimed: Counter = field(default_factory=Counter)
    live_at_end: int = 0
    server_log: str = ""

    @property
    def pushes(self) -> int:
        return self.acked + sum(self.refused.values())

    @property
    def events(self) -> int:
        c = self.counts
        return self.pushes + c["pulls"] + c["tag deletes"] + c["manifest deletes"] + c["prunes"]

    @property
    def five_xx(self) -> int:
        return len(self.server_errors)

    def targets(self) -> list[tuple[str, int, bool]]:
        return [("5xx answers (and requests without an answer)", self.five_xx, self.five_xx == 0),
                ("acknowledged images failing a digest-verified pull", len(self.losses), not self.losses),
                ("fsck --verify findings", self.fsck_findings, self.fsck_findings == 0)]

    @property
    def ok(self) -> bool:
        return all(ok for _, _, ok in self.targets())

    def rows(self) -> list[tuple[str, str]]:
        c, s = self.counts, self.settings
        refused = sum(self.refused.values())
        anchor = QUAY_ANCHOR[0] / QUAY_ANCHOR[1]
        rows = [
            ("pushes acknowledged (2xx)", f"{self.acked}"),
            ("pushes refused (clean 4xx)", f"{refused}  ({refused / max(1, self.events):.4%} of events; Quay anchor "
                                           f"{QUAY_ANCHOR[0]} in {QUAY_ANCHOR[1]:,} = {anchor:.4%})"),
        ]
        for code, n in self.refused.most_common():
            rows.append((f"  refused: {code}", str(n)))
        rows += [
            ("5xx answers / no answer", f"{sum(1 for f in self.server_errors if f.status)} / "
                                        f"{sum(1 for f in self.server_errors if not f.status)}"),
            ("acknowledged images unpullable", f"{len(self.losses)}  (pulled {c['pulls']} times during the run, "
                                               f"{self.live_at_end} live images pulled before and after the "
                                               f"final collection)"),
            ("  pull failures excused (delete sent first)", str(self.excused)),
            ("other 4xx answers (not pushes)", ", ".join(f"{k}: {n}" for k, n in self.other_4xx.most_common(8)) or "0"),
            ("fsck --verify findings", f"{self.fsck_findings}  (leaks {self.fsck.get('leaks')}, missing "
                                       f"{len(self.fsck.get('missing') or [])}, corrupt "
                                       f"{len(self.fsck.get('corrupt') or [])}"
                                       f"{', error' if 'error' in self.fsck else ''})"),
            ("events (pushes, pulls, deletes, prunes)", f"{self.events}"),
            ("tag deletes / manifest deletes", f"{c['tag deletes']} / {c['manifest deletes']}"),
            ("prunes (API / CLI), images pruned", f"{c['prunes']} ({c['prunes via API']} / {c['prunes via CLI']}), "
                                                  f"{c['images pruned']}"),
            ("prunes failed (API 5xx or CLI rc != 0)", f"{c['prunes failed']} (CLI: {len(self.command_failures)})"),
            ("blob uploads: monolithic / post+put / streamed / chunked",
             f"{c['monolithic']} / {c['post-put']} / {c['streamed']} / {c['chunked']}"),
            ("mounts (refused -> upload)", f"{c['mount']} ({c['mount refused -> upload']})"),
            ("HEAD said exists (upload skipped)", str(c["HEAD said exists (skipped)"])),
            ("push seconds p50/p99/max", f"{percentile(self.push_seconds, 50):.2f}/"
                                         f"{percentile(self.push_seconds, 99):.2f}/{max(self.push_seconds, default=0):.2f}"
                                         f" (budget gc_delay/2 = {s.push_budget:.1f}; over: {c['pushes over budget']})"),
            ("collector reclaimed (server runs seen)", ", ".join(f"{k} {v}" for k, v in sorted(self.reclaimed.items())
                                                                   if v) or "-"),
            ("final collection settled", "yes" if self.settled else "NO"),
            ("server log errors / tracebacks", str(len(self.log_problems))),
        ]
        return rows

    def details(self) -> str:
        out = []
        if self.server_errors:
            out.append(f"5xx / no answer ({len(self.server_errors)}):")
            out += ["  " + f.line() for f in self.server_errors[:30]]
        if self.losses:
            out.append(f"acknowledged images that failed a digest-verified pull ({len(self.losses)}):")
            for f in self.losses[:30]:
                i = f.img
                out.append(f"  [{f.phase}] {i.repo}:{i.tag}@{i.digest} acked at t={i.acked_at:.2f}s, failed at "
                           f"t={f.at:.2f}s{'' if i.deleted_at is None else f', deleted ({i.deleted_by}) at t={i.deleted_at:.2f}s'}: "
                           f"{f.detail}")
        if self.fsck_findings:
            keys = ("leaks", "leaked_bytes", "leak_keys", "missing", "corrupt", "error")
            out.append("fsck: " + json.dumps({k: self.fsck.get(k) for k in keys})[:3000])
        if self.command_failures:
            out.append(f"dockyard prune failures ({len(self.command_failures)}; not an HTTP answer, not a target):")
            out += ["  " + line for line in self.command_failures[:10]]
        if self.refusals:
            out.append(f"refused pushes (first {min(10, len(self.refusals))}):")
            out += ["  " + line for line in self.refusals[:10]]
        if self.log_problems:
            clip = ["\n".join(line if len(line) <= 400 else line[:400] + " ..." for line in p.splitlines())
                    for p in self.log_problems[:4]]
            out.append(f"server log problems ({len(self.log_problems)}; not a target, the registry should log "
                       f"none):\n" + "\n---\n".join(clip))
        return "\n".join(out)


class Soak:
    def __init__(self, url: str, data_dir: Path, database_url: str, s: SoakSettings,
                 log: Callable[[str], None] = print):
        self.url, self.data_dir, self.s, self.log = url, data_dir, s, log
        self.rec = Recorder()
        self.model = Model(self.rec.elapsed)
        self.tally = RunTally()
        self.stop = threading.Event()
        self.counts: Counter = Counter()
        self.counts_lock = threading.Lock()
        self.refused: Counter = Counter()
        self.refusals: list[str] = []
        self.command_failures: list[str] = []
        self.push_seconds: list[float] = []
        self.run_id = f"{s.seed:x}{os.getpid():x}{int(time.time() * 1000) % 100000:x}"
        self.pool = LayerPool(self.run_id, s.pool_size, window=12, period=max(1.0, s.gc_delay))
        self.app_repos = [f"soak/app{i}" for i in range(s.app_repos)]
        self.ci_repos = [f"soak/ci{i}" for i in range(s.ci_repos)]
        self.env = dockyard_env(database_url, s.server_env())
        self.threads: list[threading.Thread] = []

    def t(self) -> float:
        return self.rec.elapsed()

    def add(self, counts: Counter) -> None:
        with self.counts_lock:
            self.counts.update(counts)

    def _thread(self, name: str, fn, idx: int) -> None:
        rng = random.Random(f"{self.s.seed}-{name}-{idx}")
        http = Http(self.url, self.rec)
        try:
            fn(http, rng, idx)
        except Exception as exc:  # a bug of the workload: loud
            self.rec.fail("workload", name, "-", "-", None, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            http.close()

    # ---- threads ----
    def pusher(self, http: Http, rng: random.Random, idx: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            counts: Counter = Counter()
            ci = rng.random() < self.s.ci_share
            repo = rng.choice(self.ci_repos if ci else self.app_repos)
            seed = f"{self.run_id}-p{idx}-{n}"
            config = config_blob(seed)
            layers = self.pool.pick(rng, rng.randint(1, 4))
            if rng.random() < 0.5:
                layers.append(random_blob(f"{seed}-u", rng.choice([1500, 20_000, 200_000])))
            tag = f"p{idx}-{n}"
            sources = [r for r in self.app_repos + self.ci_repos if r != repo]
            res = push_image(http, repo, tag, config, layers, rng, counts, sources, self.s.mount_chance)
            if res.ok:
                img = Img(repo, tag, sha256(manifest_for(config, layers)),
                          {sha256(b): b for b in [config, *layers]}, self.t(), ci)
                self.model.acked(img)
                counts["acked"] += 1
                with self.counts_lock:
                    self.push_seconds.append(res.seconds)
            else:
                f = res.failure
                if f is not None and (f.status is None or f.status >= 500):
                    counts["pushes failed (5xx / no answer)"] += 1  # counted with the server errors
                else:
                    code = oci_code(f)
                    with self.counts_lock:
                        self.refused[code] += 1
                        if f is not None:
                            self.refusals.append(f"{f.line()} push_seconds={res.seconds:.2f}")
            if res.seconds > self.s.push_budget:
                counts["pushes over budget"] += 1
            self.add(counts)

    def puller(self, http: Http, rng: random.Random, idx: int) -> None:
        while not self.stop.is_set():
            img = self.model.pick_live(rng)
            if img is None:
                time.sleep(0.05)
                continue
            problem = pull_image(http, img)
            self.add(Counter(pulls=1))
            if problem:
                self.model.pull_failed(img, self.t(), problem, "run")

    def deleter(self, http: Http, rng: random.Random, idx: int) -> None:
        while not self.stop.is_set():
            by_tag = rng.random() < 0.6
            img = self.model.claim_delete(rng, self.s.live_target, "tag delete" if by_tag else "manifest delete")
            if img is None:
                time.sleep(0.02)
                continue
            ref = img.tag if by_tag else img.digest
            # sent: from now on the image need not pull (deleted_at was set by the claim)
            r = http.call("delete", "delete:tag" if by_tag else "delete:manifest", "DELETE",
                          f"/v2/{img.repo}/manifests/{ref}", ok=(202,))
            if r is not None:
                self.add(Counter({"tag deletes" if by_tag else "manifest deletes": 1}))
            time.sleep(rng.uniform(0, 0.03))

    def pruner(self, http: Http, rng: random.Random, idx: int) -> None:
        n = 0
        while not self.stop.wait(self.s.prune_every * rng.uniform(0.6, 1.4)):
            n += 1
            sent = self.t()
            plan = self._prune_api(http) if n % 2 else self._prune_cli(n)
            if plan is None:  # failed: it may have pruned part of the repositories before failing
                pruned = self._reconcile_ci(http, sent)
                self.add(Counter({"images pruned": pruned, "prunes failed": 1}))
                continue
            digests = [d["digest"] for r in plan.get("repositories", []) for d in r.get("deleted", [])]
            pruned = self.model.mark_pruned(digests, sent)
            self.add(Counter({"prunes": 1, f"prunes via {'API' if n % 2 else 'CLI'}": 1, "images pruned": pruned}))

    def _prune_api(self, http: Http) -> dict | None:
        r = http.call("prune", "prune:api", "POST", "/admin/v1/prune", ok=(200,),
                      params={"policy": PRUNE_POLICY, "confirm": "true"})
        return r.json() if r is not None else None

    def _prune_cli(self, n: int) -> dict | None:
        argv = [sys.executable, "-m", "dockyard", "prune", "--data-dir", str(self.data_dir), "--policy",
                PRUNE_POLICY, "--confirm", "--output", "json"]
        t0 = self.t()
        p = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=300)
        try:
            plan = json.loads(p.stdout)
        except json.JSONDecodeError:
            plan = None
        if p.returncode != 0 or plan is None:
            # not an HTTP answer: reported on its own line (the targets are about what clients see)
            logs = self.data_dir / "prune-logs"
            logs.mkdir(exist_ok=True)
            path = logs / f"prune-{n}.log"
            path.write_text(p.stderr)
            last = next((line for line in reversed(p.stderr.splitlines()) if line.strip()), "")
            with self.counts_lock:
                self.command_failures.append(f"[t={t0:7.2f}s] dockyard prune --policy {PRUNE_POLICY} --confirm: "
                                             f"rc={p.returncode}: {last[:500]} (stderr: {path})")
            return None
        return plan

    def _reconcile_ci(self, http: Http, sent: float) -> int:
        """After a failed prune: the ci images it deleted are those whose tag is gone (nothing else deletes
        there). Only images acknowledged before the tags lists were read are judged."""
        listed_at = self.t()
        tags: set[tuple[str, str]] = set()
        for repo in self.ci_repos:
            r = http.call("prune", "prune:reconcile", "GET", f"/v2/{repo}/tags/list", ok=(200, 404),
                          params={"n": "10000"})
            if r is None:
                return 0
            if r.status_code == 200:
                tags |= {(repo, t) for t in (r.json().get("tags") or [])}
        with self.model.lock:
            gone = [i.digest for i in self.model.live_ci if i.acked_at < listed_at and (i.repo, i.tag) not in tags]
        return self.model.mark_pruned(gone, sent)

    def monitor(self, http: Http, rng: random.Random, idx: int) -> None:
        while not self.stop.wait(1.0):
            st = gc_status(http)
            if st is not None:
                self.tally.absorb(st)

    # ---- running ----
    def run(self, progress_every: float = 30.0) -> None:
        s = self.s
        plan = ([("pusher", self.pusher)] * s.pushers + [("puller", self.puller)] * s.pullers
                + [("deleter", self.deleter)] * s.deleters + [("pruner", self.pruner), ("monitor", self.monitor)])
        seen: Counter = Counter()
        for name, fn in plan:
            t = threading.Thread(target=self._thread, args=(name, fn, seen[name]), name=f"{name}-{seen[name]}",
                                 daemon=True)
            seen[name] += 1
            self.threads.append(t)
            t.start()
        end = time.monotonic() + s.duration
        next_report = time.monotonic() + progress_every
        while time.monotonic() < end:
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))
            if time.monotonic() >= next_report:
                next_report += progress_every
                c = self.counts
                self.log(f"t={self.t():6.1f}s acked={c['acked']} refused={sum(self.refused.values())} "
                         f"pulls={c['pulls']} deletes={c['tag deletes'] + c['manifest deletes']} "
                         f"prunes={c['prunes']} errors={len(self.server_errors())} "
                         f"backlog={self.tally.last_backlog}")
        self.stop.set()
        deadline = time.monotonic() + 300
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:
            self.rec.fail("workload", "stop", "-", "-", None, f"threads still running: {stuck}")

    def server_errors(self) -> list[Failure]:
        with self.rec.lock:
            return [f for f in self.rec.failures if f.status is None or f.status >= 500]

    def verify_live(self, phase: str) -> int:
        http = Http(self.url, self.rec)
        try:
            live = self.model.live()
            for img in live:
                problem = pull_image(http, img, category=f"pull:{phase}")
                if problem:
                    self.model.pull_failed(img, self.t(), problem, phase)
            return len(live)
        finally:
            http.close()

    def finish(self, server_log: Callable[[], str]) -> SoakResult:
        s = self.s
        self.log(f"t={self.t():.1f}s workload stopped; pulling every live image ...")
        self.verify_live("final")
        time.sleep(s.gc_delay + 2.5)  # past gc_delay (and upload_ttl = gc_delay + 2)
        self.log(f"t={self.t():.1f}s final collection ...")
        http = Http(self.url, self.rec)
        try:
            st = settle(self.data_dir, self.env, lambda: gc_status(http), timeout=max(90.0, 10 * s.gc_delay),
                        log=self.log)
            last = gc_status(http)
            if last is not None:
                self.tally.absorb(last)
        finally:
            http.close()
        live = self.verify_live("after-gc")
        self.log(f"t={self.t():.1f}s dockyard fsck --verify ...")
        fsck = run_fsck(self.data_dir, self.env, verify=True)
        report = fsck.report or {"error": f"rc={fsck.rc} {fsck.stderr[-2000:]}"}
        findings = (int(report.get("leaks") or 0) + len(report.get("missing") or []) + len(report.get("corrupt") or [])
                    + (1 if "error" in report else 0))
        text = server_log()
        res = SoakResult(settings=s, seconds=self.t(), acked=self.counts["acked"], refused=Counter(self.refused),
                         refusals=list(self.refusals), server_errors=self.server_errors(),
                         losses=self.model.losses(), excused=self.model.excused(), fsck=report, fsck_findings=findings, settled=st["settled"],
                         log_problems=log_problems(text, "server log", 10), counts=Counter(self.counts),
                         push_seconds=list(self.push_seconds), live_at_end=live,
                         command_failures=list(self.command_failures))
        res.reclaimed = self.tally.totals()[0]
        with self.rec.lock:
            res.other_4xx = Counter(f"{f.step} {f.status}" for f in self.rec.failures
                                    if f.category != "push" and f.status is not None and 400 <= f.status < 500)
        for r in st["runs"]:
            for kind, k in ((r.get("report") or {}).get("kinds") or {}).items():
                res.reclaimed[kind] += k.get("objects", 0)
        workload_bugs = [f for f in self.rec.failures if f.category == "workload"]
        if workload_bugs:
            raise RuntimeError("the soak workload itself failed:\n" + "\n".join(f.line() for f in workload_bugs))
        return res


def run_soak(settings: SoakSettings, data_dir: Path | None = None, log: Callable[[str], None] = print,
             progress_every: float = 30.0) -> SoakResult:
    """Start a server (a fresh PostgreSQL database, or SQLite), run the soak, stop everything."""
    s = settings
    if not s.seed:
        s.seed = int(time.time())
    tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="dockyard-integrity-")
    data = Path(data_dir) if data_dir else Path(tmp.name) / "data"
    db = postgres_database() if s.backend == "postgres" else nullcontext("")
    try:
        with db as database_url:
            server = start_server(data, database_url=database_url, extra_env=s.server_env())
            try:
                log(f"integrity soak: {s.backend} + filesystem, {s.duration:.0f}s, {s.pushers} pushers, "
                    f"{s.pullers} pullers, {s.deleters} deleters, prune every ~{s.prune_every:.0f}s, gc_delay "
                    f"{s.gc_delay}s, gc_interval {s.gc_interval}s, seed {s.seed}; server {server.url}, data {data}")
                soak = Soak(server.url, data, database_url, s, log)
                soak.run(progress_every)
                res = soak.finish(server.log)
            finally:
                server.stop()
            res.server_log = str(server.log_path) + ("" if tmp is None else " (temporary; use --data-dir to keep)")
            return res
    finally:
        if tmp is not None:
            tmp.cleanup()


def render(res: SoakResult) -> str:
    """The table (rich if installed, else plain text) and the targets."""
    s = res.settings
    title = (f"integrity soak: {s.backend} + filesystem, {s.duration:.0f}s workload ({res.seconds:.0f}s in all), "
             f"{s.pushers} pushers / {s.pullers} pullers / {s.deleters} deleters, gc_delay {s.gc_delay}s")
    targets = [(name, str(v), "0", "ok" if ok else "MISSED") for name, v, ok in res.targets()]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        width = max(len(k) for k, _ in res.rows())
        lines = [title] + [f"{k:<{width}}  {v}" for k, v in res.rows()] + ["", "targets:"]
        lines += [f"  {n:<52} {v:>6}  target {t}  {ok}" for n, v, t, ok in targets]
        return "\n".join(lines)
    console = Console(file=io.StringIO(), record=True, width=140, force_terminal=False)
    table = Table(title=title, show_lines=False)
    table.add_column("measure")
    table.add_column("value", overflow="fold")
    for k, v in res.rows():
        table.add_row(k, v)
    console.print(table)
    t2 = Table(title="targets (issue 10)")
    for col in ("target", "value", "goal", "result"):
        t2.add_column(col)
    for n, v, t, ok in targets:
        t2.add_row(n, v, t, ok)
    console.print(t2)
    return console.export_text()


def main(argv: list[str] | None = None) -> int:
    d = SoakSettings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=d.duration, help="seconds of workload")
    p.add_argument("--backend", choices=("postgres", "sqlite"), default=d.backend)
    p.add_argument("--pushers", type=int, default=d.pushers)
    p.add_argument("--pullers", type=int, default=d.pullers)
    p.add_argument("--deleters", type=int, default=d.deleters)
    p.add_argument("--gc-delay", type=float, default=d.gc_delay, help="seconds (pushes must finish within half)")
    p.add_argument("--gc-interval", type=float, default=d.gc_interval)
    p.add_argument("--prune-every", type=float, default=d.prune_every, help="seconds between prunes (jittered)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="keep the data (and server log) here instead of a temporary directory")
    p.add_argument("--progress", type=float, default=30.0, help="seconds between progress lines")
    a = p.parse_args(argv)
    s = SoakSettings(duration=a.duration, backend=a.backend, pushers=a.pushers, pullers=a.pullers,
                     deleters=a.deleters, gc_delay=a.gc_delay, gc_interval=a.gc_interval, prune_every=a.prune_every,
                     seed=a.seed)
    res = run_soak(s, Path(a.data_dir) / "data" if a.data_dir else None,
                   log=lambda m: print(m, flush=True), progress_every=a.progress)
    print()
    print(render(res))
    details = res.details()
    if details:
        print(details)
    print(f"server log: {res.server_log}")
    print("OK: every target met" if res.ok else "FAILED: " + ", ".join(n for n, _, ok in res.targets() if not ok))
    return 0 if res.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
