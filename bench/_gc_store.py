"""Stores for bench/gc_vs_distribution.py: the same logical content in dockyard and in the
reference registry (CNCF distribution 2.8, Debian's ``docker-registry``).

The content (:class:`Plan`) is a set of repositories of small OCI images. Image ``i`` of
repository ``r`` has a manifest, a config and four layers::

    [global layer G[(7r + i) % 20], repository layer S_r[i % 2], unique layer, unique layer]

so configs and two layers per image are unique, two layers per repository are shared by
its images and twenty layers are shared by the whole registry. Deleting one image (other
than the first two of a repository, which anchor the shared layers) therefore makes
exactly three blobs unreferenced. Blob payloads are 64-512 random bytes (configs: JSON
padded into that range), deterministic for a seed.

* dockyard's store is written through dockyard's own API, in-process, on SQLite and the
  filesystem driver: ``registry.uploads.start/write/finish`` per blob (skipping blobs the
  repository already links, as a client does after ``HEAD``) and
  ``registry.manifests.put`` per image, with a :class:`FakeClock` in the past. So every row
  and review-queue entry is what a push produces. The garbage is made through the real
  delete path: ``lifecycle.deletes.delete_manifest`` by digest (the image turns pending_delete),
  then, with the clock past ``scrub_time``, the scrubber's purge step (the collector is
  not run: that is what the benchmark times).
* The reference's store is written directly in its on-disk layout (checked against a
  store written by ``skopeo copy`` to a running ``docker-registry``)::

      docker/registry/v2/blobs/sha256/<xx>/<hex>/data                 every blob and manifest
      docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link          config, layers
      .../<name>/_manifests/revisions/sha256/<hex>/link                        each manifest
      .../<name>/_manifests/tags/<tag>/current/link
      .../<name>/_manifests/tags/<tag>/index/sha256/<hex>/link
      .../<name>/_uploads/                                               (empty directory)

  link files hold ``sha256:<hex>`` without a newline. Its garbage is made through its
  normal delete path: ``DELETE /v2/<name>/manifests/<digest>`` against a running
  ``docker-registry serve`` on that store, which removes the revision link and the tags.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

IMAGES_PER_REPO = 50
REPO_SHARED = 2
GLOBAL_LAYERS = 20
ANCHORS = 2  # the first images of each repository are never deleted
MIN_SIZE, MAX_SIZE = 64, 512


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- the logical content ------------------------------------------------------------

@dataclass(frozen=True)
class Image:
    repo_index: int
    index: int
    repo: str
    tag: str
    blobs: tuple[str, ...]  # config first, then layers
    manifest: bytes
    digest: str

    @property
    def deletable(self) -> bool:
        return self.index >= ANCHORS


@dataclass
class Plan:
    seed: int
    images: list[Image] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def repos(self) -> list[str]:
        seen: dict[str, None] = {}
        for img in self.images:
            seen.setdefault(img.repo)
        return list(seen)

    def garbage(self, fraction: float) -> tuple[list[Image], set[str]]:
        """Images to delete so that about ``fraction`` of the blobs lose their last
        reference, and exactly which blobs then do (computed from the survivors)."""
        candidates = [img for img in self.images if img.deletable]
        want = max(1, round(fraction * len(self.blobs) / 3))
        if want > len(candidates):
            raise ValueError(f"garbage fraction {fraction} too large for this plan")
        step = len(candidates) / want
        chosen = [candidates[int(j * step)] for j in range(want)]
        gone = {img.digest for img in chosen}
        kept: set[str] = set()
        for img in self.images:
            if img.digest not in gone:
                kept.update(img.blobs)
        return chosen, set(self.blobs) - kept


def _blob_count(images: int) -> int:
    repos = math.ceil(images / IMAGES_PER_REPO)
    last = images - (repos - 1) * IMAGES_PER_REPO
    shared = (repos - 1) * REPO_SHARED + min(REPO_SHARED, last)
    return 3 * images + shared + GLOBAL_LAYERS


def make_plan(n_blobs: int, seed: int = 1) -> Plan:
    """Content with exactly ``n_blobs`` distinct blobs (configs + layers)."""
    images = max(ANCHORS + 1, (n_blobs - GLOBAL_LAYERS) // 4)
    while _blob_count(images + 1) <= n_blobs:
        images += 1
    while _blob_count(images) > n_blobs:
        images -= 1
    pad = n_blobs - _blob_count(images)  # extra unique layers on image 0 of repository 0
    rng = random.Random(seed)
    plan = Plan(seed)

    def payload() -> bytes:
        return rng.randbytes(rng.randint(MIN_SIZE, MAX_SIZE))

    def add(data: bytes) -> str:
        d = sha256(data)
        plan.blobs[d] = data
        return d

    globals_ = [add(payload()) for _ in range(GLOBAL_LAYERS)]
    shared: list[str] = []
    for n in range(images):
        r, i = divmod(n, IMAGES_PER_REPO)
        if i == 0:
            shared = []
        repo = f"team{r // 20:03d}/app{r:05d}"
        tag = f"v{i}"
        size = rng.randint(MIN_SIZE, MAX_SIZE)
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"image": f"{repo}:{tag}"}},
                          "rootfs": {"type": "layers", "diff_ids": []}}, separators=(",", ":"))
        config = (cfg[:-1] + ',"pad":"' + "x" * max(0, size - len(cfg) - 9) + '"}').encode()
        if len(shared) <= i % REPO_SHARED:
            shared.append(add(payload()))
        layers = [globals_[(7 * r + i) % GLOBAL_LAYERS], shared[i % REPO_SHARED], add(payload()), add(payload())]
        if n == 0:
            layers += [add(payload()) for _ in range(pad)]
        cdig = add(config)
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": OCI_CONFIG, "digest": cdig, "size": len(config)},
               "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": len(plan.blobs[d])} for d in layers]}
        body = json.dumps(doc, separators=(",", ":")).encode()
        plan.images.append(Image(r, i, repo, tag, (cdig, *layers), body, sha256(body)))
    assert len(plan.blobs) == n_blobs, (len(plan.blobs), n_blobs)
    return plan


# ---- dockyard ---------------------------------------------------------------------------

def clean_env() -> dict[str, str]:
    """The environment without any DOCKYARD_* setting (defaults apply)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}


def open_dockyard(data_dir: Path, start: float):
    """An in-process Registry on ``data_dir`` (SQLite + filesystem driver), clock at ``start``."""
    from dockyard.clock import FakeClock
    from dockyard.config import load
    from dockyard.meta.db import Database
    from dockyard.registry.context import Registry
    from dockyard.storage.checked import CheckedDriver
    from dockyard.storage.filesystem import FilesystemDriver

    cfg = load(env={}, data_dir=str(data_dir))
    db = Database(cfg.effective_database_url)
    db.migrate()  # as `dockyard serve` does at start (the schema may be newer than the store)
    # fsync only makes the build durable; it changes no row and no byte
    storage = CheckedDriver(FilesystemDriver(cfg.effective_storage_root, fsync=False))
    return Registry(config=cfg, db=db, storage=storage, clock=FakeClock(start))


_PLAN: Plan | None = None  # inherited by forked build workers


def _put_blob(reg, name: str, data: bytes, digest: str) -> int:
    """One blob push (POST, PATCH, PUT); returns how many times the POST had to be retried.

    With several processes pushing, the filesystem driver's ``delete`` of another push's
    staged upload prunes the then-empty ``uploads/`` directory. The driver re-creates a
    directory pruned under a write (``FilesystemDriver._retry_in_dir``); this function still
    repeats a failed POST, as a client would after a 500, and the bench prints how often it
    had to (expected: 0).
    """
    from dockyard.registry import uploads
    from dockyard.storage.base import InvalidKey, StorageError

    for attempt in range(10):
        try:
            up = uploads.start(reg, name)
            break
        except InvalidKey:
            raise
        except StorageError:
            if attempt == 9:
                raise
    up = uploads.write(reg, up, [data])
    uploads.finish(reg, name, up, digest)
    return attempt


def _dockyard_worker(args) -> tuple[int, int]:
    from dockyard.registry import manifests

    data_dir, repo_indexes, start = args
    plan = _PLAN
    assert plan is not None
    wanted = set(repo_indexes)
    reg = open_dockyard(Path(data_dir), start)
    pushed = retries = 0
    linked: dict[str, set[str]] = {}
    try:
        for img in plan.images:
            if img.repo_index not in wanted:
                continue
            have = linked.setdefault(img.repo, set())
            for d in img.blobs:
                if d not in have:  # a client HEADs first and skips blobs the repository has
                    retries += _put_blob(reg, img.repo, plan.blobs[d], d)
                    have.add(d)
                    pushed += 1
            manifests.put(reg, img.repo, img.tag, img.manifest, OCI_MANIFEST)
            reg.clock.advance(0.01)
    finally:
        reg.db.dispose()
    return pushed, retries


def build_dockyard(plan: Plan, data_dir: Path, start: float, workers: int = 2) -> tuple[int, int]:
    """Push every image of ``plan`` through dockyard's API (``workers`` processes, each a
    share of the repositories; SQLite serialises their write transactions). Returns
    (blob pushes, retried POSTs)."""
    global _PLAN
    from dockyard.config import load
    from dockyard.meta.db import Database

    cfg = load(env={}, data_dir=str(data_dir))
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    db = Database(cfg.effective_database_url)
    db.migrate()
    db.dispose()
    n_repos = plan.images[-1].repo_index + 1
    jobs = [(str(data_dir), list(range(w, n_repos, workers)), start + w * 0.001) for w in range(workers)]
    _PLAN = plan
    try:
        if workers == 1:
            done = [_dockyard_worker(jobs[0])]
        else:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                done = pool.map(_dockyard_worker, jobs)
        return sum(p for p, _ in done), sum(r for _, r in done)
    finally:
        _PLAN = None


def scrub_purge(reg) -> int:
    """What the scrubber does to pending_delete images past their scrub time (purge them
    and queue their references for review), without its collector pass."""
    from dockyard.report import Report

    try:
        from dockyard.lifecycle.scrubber import Scrubber
    except ImportError:
        Scrubber = None
    purged = 0
    if Scrubber is not None and hasattr(Scrubber, "_purge_batch"):
        scrubber = Scrubber.for_registry(reg)
        report = Report("scrub")
        while n := scrubber._purge_batch(report):
            purged += n
        try:
            from dockyard.meta.trash import TrashStore
        except ImportError:
            TrashStore = None
        if TrashStore is not None and hasattr(TrashStore, "expire"):
            with reg.db.write() as conn:
                TrashStore(conn).expire(reg.clock.now(), 100_000)
        return purged
    # no scrubber module: the same purge through the shared purge function
    from dockyard.lifecycle.collector import GcOptions
    from dockyard.meta.stores import Stores

    opts = GcOptions.from_config(reg.config)
    try:
        from dockyard.lifecycle.purge import purge_manifests
    except ImportError:  # the oldest API: one manifest at a time
        from dockyard.lifecycle.purge import purge_manifest
        from sqlalchemy import select

        from dockyard.meta.schema import PENDING_DELETE, manifests as mt

        with reg.db.write() as conn:
            rows = list(conn.execute(select(mt.c.id, mt.c.repository_id, mt.c.digest).where(
                mt.c.state == PENDING_DELETE, mt.c.scrub_after <= reg.clock.now())))
            for r in rows:
                purge_manifest(conn, r.id, r.repository_id, r.digest, reg.clock.now(), opts.purge, actor="scrubber")
        return len(rows)
    while True:
        with reg.db.write() as conn:
            targets = Stores(conn).manifests.claim_due_pending(reg.clock.now(), opts.batch_size)
            purge_manifests(conn, targets, reg.clock.now(), opts.purge, link_delay=0.0, actor="scrubber")
        if not targets:
            return purged
        purged += len(targets)


def delete_dockyard(data_dir: Path, images: list[Image], deleted_at: float, scrubbed_at: float) -> int:
    """DELETE of each image by digest at ``deleted_at``, then the scrubber's purge at ``scrubbed_at``."""
    from dockyard.lifecycle import deletes

    reg = open_dockyard(data_dir, deleted_at)
    try:
        for img in images:
            deletes.delete_manifest(reg, img.repo, img.digest, actor="bench")
        assert scrubbed_at >= deleted_at + reg.config.scrub_time, "scrub time has not passed"
        reg.clock.t = scrubbed_at
        return scrub_purge(reg)
    finally:
        reg.db.dispose()


# ---- the reference registry -------------------------------------------------------------

def _write(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def build_reference(plan: Plan, root: Path) -> None:
    """The reference's on-disk layout for ``plan``, as pushes would leave it."""
    v2 = root / "docker" / "registry" / "v2"
    written: set[str] = set()

    def blob(digest: str, data: bytes) -> None:
        if digest in written:
            return
        written.add(digest)
        hx = digest.split(":", 1)[1]
        _write(v2 / "blobs" / "sha256" / hx[:2] / hx / "data", data)

    layer_links: set[tuple[str, str]] = set()
    for img in plan.images:
        repo = v2 / "repositories" / img.repo
        for d in img.blobs:
            blob(d, plan.blobs[d])
            if (img.repo, d) not in layer_links:
                layer_links.add((img.repo, d))
                _write(repo / "_layers" / "sha256" / d.split(":", 1)[1] / "link", d.encode())
        blob(img.digest, img.manifest)
        hx = img.digest.split(":", 1)[1]
        link = img.digest.encode()
        _write(repo / "_manifests" / "revisions" / "sha256" / hx / "link", link)
        _write(repo / "_manifests" / "tags" / img.tag / "current" / "link", link)
        _write(repo / "_manifests" / "tags" / img.tag / "index" / "sha256" / hx / "link", link)
        (repo / "_uploads").mkdir(exist_ok=True)


def reference_blobs(root: Path) -> set[str]:
    """Digests of the blob files (``.../<hex>/data``) in the reference's store."""
    base = root / "docker" / "registry" / "v2" / "blobs"
    out = set()
    for algorithm in os.listdir(base) if base.exists() else ():
        for xx in os.scandir(base / algorithm):
            for entry in os.scandir(xx.path):
                if os.path.exists(os.path.join(entry.path, "data")):
                    out.add(f"{algorithm}:{entry.name}")
    return out


def delete_reference(root: Path, images: list[Image], workdir: Path, *, threads: int = 8) -> None:
    """``DELETE /v2/<name>/manifests/<digest>`` for each image against a running
    ``docker-registry serve`` on ``root``, which is stopped afterwards."""
    from _common import ServerProcess, distribution_config, free_port  # bench/ is on sys.path (the script's directory)

    port = free_port()
    cfg = distribution_config(workdir / "serve.yml", root, port=port, log_level="warn")
    server = ServerProcess("docker-registry", ["docker-registry", "serve", str(cfg)], port=port,
                           log_path=workdir / "serve.log")
    local = threading.local()
    failures: list[str] = []

    def delete(img: Image) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("DELETE", f"/v2/{img.repo}/manifests/{img.digest}")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 202:
            failures.append(f"{img.repo}@{img.digest}: {resp.status} {body[:200]!r}")

    with server.start():
        # the layout must be one the reference reads: pull one manifest by tag and one blob
        probe = images[0]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/v2/{probe.repo}/manifests/{probe.tag}", headers={"Accept": OCI_MANIFEST})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200 or body != probe.manifest:
            raise RuntimeError(f"reference cannot read the written layout: GET manifest -> {resp.status}")
        conn.request("GET", f"/v2/{probe.repo}/blobs/{probe.blobs[0]}")
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"reference cannot read the written layout: GET blob -> {resp.status}")
        conn.close()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(delete, images))
    if failures:
        raise RuntimeError(f"{len(failures)} reference deletes failed, e.g. {failures[0]}")


# ---- copies ---------------------------------------------------------------------------------

def copy_tree(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dst)], check=True)
