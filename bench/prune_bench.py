#!/usr/bin/env python3
"""The retention planner (``dockyard prune``) on a large store: wall, CPU and peak memory.

    python bench/prune_bench.py [--manifests 100000] [--repos 1000] [--backend sqlite|postgres] [--quick]
                                [--repeat 3] [--profile] [--what-if] [--no-cli] [--no-confirm] [--no-series]
                                [--workdir D] [--keep] [--reuse]

The store
---------
Built with SQLAlchemy Core straight into the schema (after ``Database(url).migrate()``),
row for row what the registry's push path writes (``registry/uploads.finish``,
``registry/manifests.put``, ``meta/manifests.ManifestStore.put``, ``meta/tags.TagStore``,
``lifecycle/deletes.delete_manifest`` by tag), so no HTTP and no blob files (planning reads no
data). Every manifest payload is real JSON and goes through ``dockyard.oci.manifest.parse``
to fill ``media_type``, ``artifact_type``, ``subject_digest``, ``annotations`` and its
``manifest_references`` exactly as a push does; digests are ``sha256`` of the payload.
Ids are assigned in global time order (as a live registry hands them out).

Each repository (``team-NN/svc-NNNN``) has the same number of manifests (100 by default),
pushed over 90 days (20% of repositories went quiet 31-80 days ago) by a CI user:

* tagged single-arch images (``latest`` plus 1-4 of main/dev/staging/nightly/edge/feature-x):
  each push moves the tag, so a tag has a history of many revisions (``tag_history``
  push/move rows);
* multi-arch indexes (amd64 + arm64 children pushed by digest, then the index by tag);
* images pushed by digest only (untagged);
* referrers (cosign signatures / SBOMs, ``subject`` = the image just pushed);
* promotions (``prod`` / ``stable`` / ``vX.Y.Z`` pointed at the current ``latest``: history only)
  and a few tag deletes (``tag_history`` delete, ``trashed_tags`` if within scrub_time).

Layers: one of 24 global base layers (per arch), sometimes one of 8 global extras, a
per-repository runtime and dependency layer that change now and then, one unique app
layer, and a unique config; sizes are log-normal (KB to tens of MB). ``last_pulled_at`` is
set for about half the manifests. Pending review-queue entries exist only for what was
pushed within ``gc_delay`` of "now" (the collector drains older ones).

What is measured
----------------
Each measurement runs in a fresh subprocess (so peak RSS is its own) on a Registry built
like ``tests/lifecycle_support.make_registry`` (real DB, FilesystemDriver, FakeClock at the
store's "now"); timed is exactly::

    Pruner(reg, Policy.parse("bench", {"keep_tag_revisions": 3, "keep_pushed_within": "30d"}),
           confirm=False).run()

wall (perf_counter), CPU (process_time: every thread, SQLite included; PostgreSQL backends'
CPU apart, from /proc), peak RSS during the call (VmHWM after resetting it through
/proc/self/clear_refs) and over the child's life (setup included; not ru_maxrss, which a
forked child inherits from the big parent). Then:

* ``python -m dockyard prune --data-dir D --keep-tag-revisions 3 --keep-younger-than 30d
  --output json`` as a subprocess (whole command, JSON to a file; its plan must equal the
  in-process one; max RSS from wait4, started by a small launcher process);
* memory vs. repositories: the same for N/10, 3N/10 and N repositories at constant
  manifests per repository, plus a tracemalloc run that records, after each repository
  (the ``progress`` callback), the peak allocated while planning that repository above
  what was allocated before it (the per-repository working set), and what stays
  allocated at the end (the Plan);
* ``confirm=True`` once on a copy of the store (it deletes into the trash), verified: the
  deleted set equals the dry run's, those manifests are pending_delete with their tags in
  the trash, every remaining tag points at an active manifest, nothing pushed within 30
  days went;
* the queries one repository's plan runs (captured from the Pruner), with SQLite's / PostgreSQL's
  query plan and their time, so a per-repository query that scans the whole table shows;
* when the target is missed (or with --profile): cProfile of the dry run; on SQLite also
  (or with --what-if) the dry run on copies of the store with ``ANALYZE`` applied and with one
  extra index (``manifests (repository_id, state)``), each checked to give the same plan,
  with the CPU time of each phase of ``Pruner.run`` (wrappers around the RetentionStore
  queries, ``plan_repository``, ``_bytes``, ``_audit`` in the child; the first dry run is timed
  the same way), and a cProfile of the indexed copy: the next hot spots once the first is
  gone. cProfile uses a CPU-time timer, so other load on the machine does not skew it.
  dockyard's code is never changed.

Wall time depends on what else runs on the machine: each run reports the cores other
processes kept busy meanwhile (from /proc/stat); CPU time does not depend on it.

Target (from the issue): planning over 100,000 manifests in 1,000 repositories under 10 s,
memory flat per repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT / "src"), str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from _common import machine_info, pg_create, pg_drop, pg_url, sa_url, system_busy_seconds  # noqa: E402

DAY = 86_400.0
SPAN = 90 * DAY
KEEP_WITHIN = 30 * DAY
BOUNDARY_GAP = 6 * 3600.0   # no push within 6 h of now-30d: the CLI (system clock) decides as the in-process run
GC_DELAY = 3_600.0          # defaults of the settings, spelled out
SCRUB_TIME = 7 * DAY
ACTOR = "ci"
POLICY = {"keep_tag_revisions": 3, "keep_pushed_within": "30d"}
CLI_RULES = ["--keep-tag-revisions", "3", "--keep-younger-than", "30d"]
TARGET_SECONDS = 10.0
WHAT_IF = [("analyze", "query-planner statistics", "ANALYZE"),
           ("index", "an index on manifests (repository_id, state)",
            "CREATE INDEX ix_bench_manifests_repo_state ON manifests (repository_id, state)")]

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # b"{}"
SIG_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SIG_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
SBOM_TYPE = "application/spdx+json"

TAG_POOL = ["main", "dev", "staging", "nightly", "edge", "feature-x"]
TEAMS = [f"team-{i:02d}" for i in range(37)]
ARCHES = ("amd64", "arm64")


# ---- the content ------------------------------------------------------------------------------

def blob_digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def lognormal_size(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, rng.lognormvariate(math.log(median), sigma))))


def repo_name(r: int) -> str:
    return f"{TEAMS[r % len(TEAMS)]}/svc-{r:04d}"


class StoreBuilder:
    """Generates every row of the store in memory; ``insert`` writes them."""

    def __init__(self, now: float, seed: int = 1):
        from dockyard.oci import mediatypes as mt
        from dockyard.oci.digest import compute
        from dockyard.oci.manifest import parse

        self.mt, self.compute, self.parse = mt, compute, parse
        self.now = now
        g = random.Random(f"global-{seed}")
        self.seed = seed
        # global layers: (digest, size) per arch
        self.bases = [{a: (blob_digest(f"base-{i}-{a}"), lognormal_size(g, 25e6, 0.6, 2_000_000, 120_000_000))
                       for a in ARCHES} for i in range(24)]
        self.extras = [{a: (blob_digest(f"extra-{i}-{a}"), lognormal_size(g, 400e3, 1.0, 20_000, 5_000_000))
                        for a in ARCHES} for i in range(8)]
        self.repos: list[dict] = []                 # name, created_at
        self.blobs: dict[str, list] = {}            # digest -> [size, created_at]
        self.links: dict[tuple[int, str], float] = {}  # (repo index, digest) -> created_at
        self.manifests: list[dict] = []
        self.history: list[tuple] = []              # (at, order, repo, tag, digest, action)
        self.tags: dict[tuple[int, str], tuple[int, float]] = {}  # (repo, tag) -> (manifest index, updated_at)
        self.tag_deletes: list[tuple] = []          # (repo, tag, manifest index, at)
        self.manifest_reviews: dict[int, float] = {}  # manifest index -> review_after
        self._order = 0

    # ---- one push, as registry.manifests.put + uploads.finish write it -------------------
    def _tick(self) -> int:
        self._order += 1
        return self._order

    def _push(self, repo: int, payload: bytes, t: float, kind: str) -> int:
        parsed = self.parse(payload, json.loads(payload)["mediaType"])
        for d in parsed.blobs:  # the client uploads what the repository does not link yet
            if (repo, d.digest) not in self.links:
                self.links[(repo, d.digest)] = t - 1.0
                self.blobs.setdefault(d.digest, [d.size, t - 1.0])
        refs = sorted({("blob", d.digest) for d in parsed.blobs} | {("manifest", d.digest) for d in parsed.children})
        m = dict(repo=repo, digest=str(self.compute(payload)), media_type=parsed.media_type,
                 artifact_type=parsed.artifact_type, size=len(payload), payload=payload,
                 subject_digest=parsed.subject.digest if parsed.subject else None,
                 annotations=json.dumps(parsed.annotations) if parsed.annotations else None,
                 pushed_at=t, refs=refs, kind=kind, tagged=False, order=self._tick(), last_pulled_at=None)
        self.manifests.append(m)
        return len(self.manifests) - 1

    def _set_tag(self, repo: int, tag: str, mi: int, t: float) -> None:
        """TagStore.set: no history row when the tag already points there."""
        cur = self.tags.get((repo, tag))
        if cur is not None and cur[0] == mi:
            return
        self.tags[(repo, tag)] = (mi, t)
        self.manifests[mi]["tagged"] = True
        self.history.append((t, self._tick(), repo, tag, self.manifests[mi]["digest"],
                             "push" if cur is None else "move"))

    def _delete_tag(self, repo: int, tag: str, t: float) -> None:
        mi, _ = self.tags.pop((repo, tag))
        self.history.append((t, self._tick(), repo, tag, self.manifests[mi]["digest"], "delete"))
        self.tag_deletes.append((repo, tag, mi, t))

    # ---- payloads ----------------------------------------------------------------------------
    def _image(self, st: dict, arch: str, rng: random.Random, annotations: bool) -> bytes:
        docker = st["docker"]
        st["seq"] += 1
        name, seq = st["name"], st["seq"]
        if rng.random() < 0.02:
            st["base"] = rng.randrange(len(self.bases))
        if rng.random() < 0.03:
            st["runtime"] += 1
        if rng.random() < 0.2:
            st["deps"] += 1
        layers = [self.bases[st["base"]][arch]]
        if st["extra"] is not None:
            layers.append(self.extras[st["extra"]][arch])
        for part in ("runtime", "deps"):
            key = f"{name}/{part}-{st[part]}-{arch}"
            size = st["sizes"].setdefault(key, lognormal_size(rng, 8e6 if part == "runtime" else 3e6, 1.0,
                                                              10_000, 200_000_000))
            layers.append((blob_digest(key), size))
        layers.append((blob_digest(f"{name}/app-{seq}-{arch}"), lognormal_size(rng, 1.5e6, 1.3, 2_000, 80_000_000)))
        config = (blob_digest(f"{name}/config-{seq}-{arch}"), rng.randint(1_200, 9_000))
        doc = {"schemaVersion": 2,
               "mediaType": self.mt.DOCKER_MANIFEST if docker else self.mt.OCI_MANIFEST,
               "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, "digest": config[0], "size": config[1]},
               "layers": [{"mediaType": DOCKER_LAYER if docker else OCI_LAYER, "digest": d, "size": s}
                          for d, s in layers]}
        if annotations and not docker:
            doc["annotations"] = {"org.opencontainers.image.revision": hashlib.sha1(f"{name}{seq}".encode()).hexdigest(),
                                  "org.opencontainers.image.source": f"https://git.example.com/{name}"}
        return json.dumps(doc, separators=(",", ":")).encode()

    def _index(self, st: dict, children: list[int]) -> bytes:
        docker = st["docker"]
        entries = [{"mediaType": self.manifests[c]["media_type"], "digest": self.manifests[c]["digest"],
                    "size": self.manifests[c]["size"], "platform": {"architecture": a, "os": "linux"}}
                   for c, a in zip(children, ARCHES)]
        doc = {"schemaVersion": 2, "mediaType": self.mt.DOCKER_MANIFEST_LIST if docker else self.mt.OCI_INDEX,
               "manifests": entries}
        return json.dumps(doc, separators=(",", ":")).encode()

    def _referrer(self, st: dict, subject: int, rng: random.Random) -> bytes:
        s = self.manifests[subject]
        st["seq"] += 1
        sbom = rng.random() < 0.3
        key = f"{st['name']}/{'sbom' if sbom else 'sig'}-{st['seq']}"
        layer = (blob_digest(key), rng.randint(20_000, 900_000) if sbom else rng.randint(230, 400))
        doc = {"schemaVersion": 2, "mediaType": self.mt.OCI_MANIFEST,
               "artifactType": SBOM_TYPE if sbom else SIG_TYPE,
               "config": {"mediaType": self.mt.OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2},
               "layers": [{"mediaType": SBOM_TYPE if sbom else SIG_LAYER, "digest": layer[0], "size": layer[1]}],
               "subject": {"mediaType": s["media_type"], "digest": s["digest"], "size": s["size"]},
               "annotations": {"org.opencontainers.image.created": time.strftime(
                   "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now))}}
        return json.dumps(doc, separators=(",", ":")).encode()

    # ---- one repository -------------------------------------------------------------------------
    def repository(self, r: int, count: int) -> None:
        rng = random.Random(f"repo-{self.seed}-{r}")
        now = self.now
        repo = len(self.repos)
        name = repo_name(r)
        start = now - SPAN + rng.uniform(0, 3 * DAY)
        end = now - (rng.uniform(31, 80) * DAY if rng.random() < 0.2 else rng.uniform(300.0, DAY))
        tags = ["latest"] + rng.sample(TAG_POOL, rng.randint(1, 4))
        weights = [10] + [rng.choice((2, 3, 5, 8)) for _ in tags[1:]]
        promote = rng.sample(["prod", "stable"], rng.randint(0, 2))
        st = dict(name=name, docker=rng.random() < 0.3, seq=0, base=rng.randrange(len(self.bases)),
                  extra=rng.randrange(len(self.extras)) if rng.random() < 0.3 else None, runtime=0, deps=0,
                  sizes={}, releases=rng.randint(0, 3), release=[1, rng.randint(0, 5), 0])
        # the sequence of events, using exactly ``count`` manifests
        events, left = [], count
        while left > 0:
            x = rng.random()
            kind = ("image" if x < 0.58 else "index" if x < 0.66 else "untagged" if x < 0.78 else
                    "referrer" if x < 0.86 else "promote" if x < 0.97 else "untag")
            if kind == "index" and left < 3:
                kind = "image"
            events.append(kind)
            left -= {"image": 1, "index": 3, "untagged": 1, "referrer": 1}.get(kind, 0)
        boundary = now - KEEP_WITHIN
        times = []
        for _ in events:
            t = rng.uniform(start, end)
            if abs(t - boundary) < BOUNDARY_GAP:
                t += -2 * BOUNDARY_GAP if t < boundary else 2 * BOUNDARY_GAP
            times.append(min(t, now - 300.0))
        times.sort()
        self.repos.append(dict(name=name, created_at=times[0] - 5.0))
        last_tagged = None
        first = len(self.manifests)
        for kind, t in zip(events, times):
            if kind in ("promote", "untag") and last_tagged is None:
                continue  # nothing tagged yet
            if kind == "image":
                tag = rng.choices(tags, weights)[0]
                mi = self._push(repo, self._image(st, "amd64", rng, rng.random() < 0.7), t, "image")
                self._set_tag(repo, tag, mi, t)
                last_tagged = mi
            elif kind == "index":
                tag = rng.choices(tags, weights)[0]
                ann = rng.random() < 0.7
                kids = [self._push(repo, self._image(st, a, rng, ann), t - 2.0 + i, "child")
                        for i, a in enumerate(ARCHES)]
                mi = self._push(repo, self._index(st, kids), t, "index")
                self._set_tag(repo, tag, mi, t)
                last_tagged = mi
            elif kind == "untagged":
                self._push(repo, self._image(st, "amd64", rng, rng.random() < 0.7), t, "untagged")
            elif kind == "referrer":
                if last_tagged is None:  # nothing to sign yet: an image pushed by digest instead
                    self._push(repo, self._image(st, "amd64", rng, rng.random() < 0.7), t, "untagged")
                    continue
                mi = self._push(repo, self._referrer(st, last_tagged, rng), t + 30.0, "referrer")
                if t + 30.0 + GC_DELAY > now:  # put() queues an untagged push with a subject
                    self.manifest_reviews[mi] = t + 30.0 + GC_DELAY
            elif kind == "promote":
                src = self.tags.get((repo, "latest")) or self.tags.get((repo, tags[1]))
                mi = src[0] if src else last_tagged
                if promote and (not st["releases"] or rng.random() < 0.6):
                    self._set_tag(repo, rng.choice(promote), mi, t)
                elif st["releases"]:
                    st["releases"] -= 1
                    rel = st["release"]
                    rel[2] += 1
                    if rng.random() < 0.3:
                        rel[1], rel[2] = rel[1] + 1, 0
                    self._set_tag(repo, f"v{rel[0]}.{rel[1]}.{rel[2]}", mi, t)
                else:
                    self._set_tag(repo, "latest", last_tagged, t)
            elif kind == "untag":
                live = [n for (rp, n) in self.tags if rp == repo and n != "latest" and not n.startswith("v")]
                if live:
                    self._delete_tag(repo, rng.choice(live), t)
        assert len(self.manifests) - first == count, (name, len(self.manifests) - first, count)

    def pulls(self) -> None:
        rng = random.Random(f"pulls-{self.seed}")
        now = self.now
        for m in self.manifests:
            p = {"image": 0.65, "index": 0.7, "child": 0.5, "untagged": 0.15, "referrer": 0.4}[m["kind"]]
            if rng.random() < p:
                life = rng.expovariate(1 / (20 * DAY))
                m["last_pulled_at"] = min(now - 60.0, m["pushed_at"] + rng.uniform(60.0, max(120.0, life)))

    # ---- rows -----------------------------------------------------------------------------------
    def insert(self, db, chunk: int = 5000) -> dict:
        from dockyard.meta import schema as s

        repo_order = sorted(range(len(self.repos)), key=lambda i: (self.repos[i]["created_at"], i))
        repo_id = {ri: n + 1 for n, ri in enumerate(repo_order)}
        m_order = sorted(range(len(self.manifests)), key=lambda i: (self.manifests[i]["pushed_at"],
                                                                     self.manifests[i]["order"]))
        m_id = {mi: n + 1 for n, mi in enumerate(m_order)}
        now = self.now
        counts = {}

        def put(conn, table, rows):
            n = 0
            batch = []
            for row in rows:
                batch.append(row)
                if len(batch) >= chunk:
                    conn.execute(table.insert(), batch)
                    n += len(batch)
                    batch = []
            if batch:
                conn.execute(table.insert(), batch)
                n += len(batch)
            counts[table.name] = n

        with db.write() as conn:
            put(conn, s.repositories, ({"id": repo_id[ri], "name": self.repos[ri]["name"],
                                        "created_at": self.repos[ri]["created_at"], "deleted_at": None}
                                       for ri in repo_order))
            put(conn, s.blobs, ({"digest": d, "size": v[0], "created_at": v[1], "state": s.READY}
                                for d, v in sorted(self.blobs.items(), key=lambda kv: kv[1][1])))
            put(conn, s.repository_blobs, ({"repository_id": repo_id[r], "digest": d, "created_at": t}
                                           for (r, d), t in sorted(self.links.items(), key=lambda kv: kv[1])))
            put(conn, s.manifests, ({"id": m_id[mi], "repository_id": repo_id[m["repo"]], "digest": m["digest"],
                                     "media_type": m["media_type"], "artifact_type": m["artifact_type"],
                                     "size": m["size"], "payload": m["payload"], "subject_digest": m["subject_digest"],
                                     "annotations": m["annotations"], "state": s.ACTIVE, "created_at": m["pushed_at"],
                                     "pushed_at": m["pushed_at"], "deleted_at": None, "deleted_by": None,
                                     "scrub_after": None, "last_pulled_at": m["last_pulled_at"]}
                                    for mi in m_order for m in (self.manifests[mi],)))
            put(conn, s.manifest_references, ({"manifest_id": m_id[mi], "repository_id": repo_id[m["repo"]],
                                               "kind": k, "digest": d}
                                              for mi in m_order for m in (self.manifests[mi],) for k, d in m["refs"]))
            put(conn, s.tags, ({"repository_id": repo_id[r], "name": tag, "manifest_id": m_id[mi], "updated_at": t}
                               for (r, tag), (mi, t) in sorted(self.tags.items(), key=lambda kv: kv[1][1])))
            put(conn, s.tag_history, ({"id": n + 1, "repository_id": repo_id[r], "tag": tag, "manifest_digest": d,
                                       "action": action, "at": at, "actor": ACTOR}
                                      for n, (at, _o, r, tag, d, action) in enumerate(sorted(self.history))))
            # lifecycle.deletes.delete_manifest by tag: the tag goes to the trash until scrub_time (then expired)
            put(conn, s.trashed_tags, ({"repository_id": repo_id[r], "tag": tag, "manifest_id": m_id[mi],
                                        "with_manifest": 0, "deleted_at": t, "deleted_by": ACTOR,
                                        "scrub_after": t + SCRUB_TIME}
                                       for r, tag, mi, t in self.tag_deletes if t + SCRUB_TIME > now))
            # review-queue entries not yet due (the collector has drained the older ones)
            put(conn, s.gc_link_reviews, ({"repository_id": repo_id[r], "digest": d, "review_after": t + GC_DELAY,
                                           "reason": "uploaded"}
                                          for (r, d), t in self.links.items() if t + GC_DELAY > now))
            put(conn, s.gc_manifest_reviews, ({"manifest_id": m_id[mi], "review_after": when,
                                               "reason": "pushed_untagged"}
                                              for mi, when in self.manifest_reviews.items()))
            if db.is_postgres:  # explicit ids: move the sequences past them
                for table in ("repositories", "manifests", "tag_history", "trashed_tags"):
                    conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                         f"COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)")
        if db.is_postgres:  # what autovacuum would have done on a registry this old
            with db.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        return counts


def build_store(data_dir: Path, database_url: str, repos: int, manifests: int, now: float, seed: int = 1) -> dict:
    from dockyard.meta.db import Database

    data_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    b = StoreBuilder(now, seed)
    base, extra = divmod(manifests, repos)
    for r in range(repos):
        b.repository(r, base + (1 if r < extra else 0))
    b.pulls()
    t_gen = time.perf_counter() - t0
    url = database_url or f"sqlite:///{data_dir / 'dockyard.db'}"
    db = Database(url)
    db.migrate()
    counts = b.insert(db)
    db.dispose()
    kinds = {}
    for m in b.manifests:
        kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
    meta = {"repos": repos, "manifests": manifests, "now": now, "seed": seed, "database_url": database_url,
            "rows": counts, "kinds": kinds, "history_actions": {a: sum(1 for h in b.history if h[5] == a)
                                                                for a in ("push", "move", "delete")},
            "live_tags": len(b.tags), "pulled": sum(1 for m in b.manifests if m["last_pulled_at"] is not None),
            "within_30d": sum(1 for m in b.manifests if m["pushed_at"] > now - KEEP_WITHIN),
            "generate_s": t_gen, "build_s": time.perf_counter() - t0}
    (data_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


# ---- one measurement (in a child process) --------------------------------------------------------

def _vm(field: str) -> int:
    """A /proc/self/status value in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _proc_cpu(pid: int) -> float | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = raw[raw.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def plan_digest(pairs) -> str:
    return hashlib.sha256("\n".join(sorted(pairs)).encode()).hexdigest()[:16]


def open_registry(data_dir: Path, database_url: str, now: float, on_db=None):
    """A Registry as tests/lifecycle_support.make_registry builds it, on an existing store."""
    from dockyard.clock import FakeClock
    from dockyard.config import load
    from dockyard.meta.db import Database
    from dockyard.registry.context import Registry
    from dockyard.storage.checked import CheckedDriver
    from dockyard.storage.filesystem import FilesystemDriver

    cfg = load(env={}, database_url=database_url or None, data_dir=str(data_dir), gc_delay=60, upload_ttl=3600)
    db = Database(cfg.effective_database_url)
    if on_db:
        on_db(db)
    db.migrate()
    return Registry(config=cfg, db=db, storage=CheckedDriver(FilesystemDriver(data_dir / "storage")),
                    clock=FakeClock(now))


PHASE_KEYS = ["RetentionStore.manifests", "RetentionStore.tags", "RetentionStore.history", "RetentionStore.references",
              "RetentionStore.blob_use_counts", "plan_repository", "Pruner._bytes", "Pruner._audit"]


def instrument() -> dict[str, list]:
    """Wrap the planner's phases (in this process only) to add up their wall and CPU time: a few
    thousand calls of a wrapper, so negligible next to what they measure."""
    from dockyard.lifecycle import prune
    from dockyard.meta import retention

    acc: dict[str, list] = {k: [0.0, 0.0, 0] for k in PHASE_KEYS}

    def wrap(owner, name: str, key: str) -> None:
        inner = getattr(owner, name)

        def timed(*a, **kw):
            w, c = time.perf_counter(), time.process_time()
            try:
                return inner(*a, **kw)
            finally:
                x = acc[key]
                x[0] += time.perf_counter() - w
                x[1] += time.process_time() - c
                x[2] += 1
        setattr(owner, name, timed)

    for n in ("manifests", "tags", "history", "references", "blob_use_counts"):
        wrap(retention.RetentionStore, n, f"RetentionStore.{n}")
    wrap(prune, "plan_repository", "plan_repository")  # Pruner.run looks the name up at each call
    wrap(prune.Pruner, "_bytes", "Pruner._bytes")
    wrap(prune.Pruner, "_audit", "Pruner._audit")
    return acc


def child(spec: dict) -> dict:
    import gc
    import resource

    from sqlalchemy import event

    from dockyard.policies import Policy
    from dockyard.lifecycle.prune import Pruner

    data_dir = Path(spec["data_dir"])
    backends: dict[int, float] = {}

    def track_backends(db) -> None:
        if db.is_postgres:
            @event.listens_for(db.engine, "connect")
            def _pid(dbapi_conn, _rec):
                backends[dbapi_conn.info.backend_pid] = 0.0

    reg = open_registry(data_dir, spec["database_url"], spec["now"], track_backends)
    db = reg.db
    policy = Policy.parse("bench", POLICY)
    with reg.db.read() as conn:  # warm-up: the connection, pragmas, statement compilation of a simple query
        active = conn.exec_driver_sql("SELECT count(*) FROM manifests WHERE state = 'active'").scalar()
    mode = spec["mode"]
    trace: list[tuple[int, int]] = []
    progress = None
    if mode == "trace":
        import tracemalloc

        def record(_plan) -> None:
            trace.append(tracemalloc.get_traced_memory())
            tracemalloc.reset_peak()
        progress = record
    gc.collect()
    for pid in backends:
        backends[pid] = _proc_cpu(pid) or 0.0
    rss0 = _vm("VmRSS")
    hwm_setup = _vm("VmHWM")  # imports, migrate, warm-up
    hwm_reset = _reset_hwm()
    if mode == "trace":
        tracemalloc.start()
        traced0 = tracemalloc.get_traced_memory()[0]
        trace.append((traced0, traced0))
    phases = instrument() if spec.get("phases") else None
    pruner = Pruner(reg, policy, confirm=spec["confirm"], progress=progress)
    prof = None
    busy0 = system_busy_seconds()
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "profile":
        import cProfile

        prof = cProfile.Profile(time.process_time)  # CPU time: other load on the machine does not count
        plan = prof.runcall(pruner.run)
    else:
        plan = pruner.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    busy = system_busy_seconds() - busy0
    out = {"mode": mode, "confirm": spec["confirm"], "active_before": active, "wall": wall, "cpu": cpu,
           "plan_duration": plan.duration, "totals": plan.totals,
           "rss_before_kib": rss0, "hwm_kib": _vm("VmHWM") if hwm_reset else None,
           "hwm_setup_kib": hwm_setup,
           "deleted_digest": plan_digest(f"{r.repository}@{d.digest}" for r in plan.repositories for d in r.deleted),
           "kept_digest": plan_digest(f"{r.repository}@{d.digest}" for r in plan.repositories for d in r.kept)}
    out["process_peak_kib"] = max(hwm_setup, out["hwm_kib"] or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    if phases is not None:
        out["phases"] = phases
    if backends:
        ends = {pid: _proc_cpu(pid) for pid in backends}
        out["db_cpu"] = None if any(v is None for v in ends.values()) else sum(ends[p] - backends[p] for p in backends)
        out["db_backends"] = len(backends)
    # cores kept busy meanwhile by everything else on the machine (the wall time is only comparable when ~0)
    out["other_cores"] = max(0.0, (busy - cpu - (out.get("db_cpu") or 0.0)) / wall) if wall else 0.0
    if mode == "trace":
        end_cur, end_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        per_repo = [peak - trace[i - 1][0] for i, (cur, peak) in enumerate(trace) if i > 0]
        rest = per_repo[1:] or per_repo  # the first repository also fills one-time caches (compiled SQL, ...)
        out["trace"] = {"repos": len(per_repo), "per_repo_first": per_repo[0], "per_repo_max": max(rest),
                        "per_repo_median": statistics.median(rest),
                        "per_repo_p99": sorted(rest)[int(0.99 * (len(rest) - 1))],
                        "retained_after_planning": trace[-1][0] - traced0,
                        "tail_peak": end_peak - trace[-1][0],  # _bytes + _audit, above the planned state
                        "retained_end": end_cur - traced0,
                        "overall_peak": max(max(p for _, p in trace), end_peak) - traced0}
        out["trace_curve"] = [c - traced0 for c, _ in trace[1::max(1, len(trace) // 10)]]
    if prof is not None:
        prof.dump_stats(spec["profile_out"])
    if spec.get("dump_deleted"):
        Path(spec["dump_deleted"]).write_text("\n".join(sorted(
            f"{r.repository}@{d.digest}" for r in plan.repositories for d in r.deleted)))
    db.dispose()
    return out


def run_child(spec: dict, log_path: Path) -> dict:
    out_path = Path(str(log_path) + ".json")
    spec = {**spec, "out": str(out_path)}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--_child", json.dumps(spec)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, _ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec['mode']} failed ({proc.returncode}); log {log_path}:\n"
                           + log_path.read_text(errors="replace")[-3000:])
    res = json.loads(out_path.read_text())
    return res


_SPAWN = """
import json, os, subprocess, sys, time
spec = json.loads(sys.argv[1])
t0 = time.perf_counter()
with open(spec["stdout"], "wb") as out, open(spec["stderr"], "wb") as err:
    proc = subprocess.Popen(spec["argv"], stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=spec["env"])
    _, status, ru = os.wait4(proc.pid, 0)
wall = time.perf_counter() - t0
print(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "wall": wall, "cpu": ru.ru_utime + ru.ru_stime,
                  "maxrss_kib": ru.ru_maxrss}))
"""


def run_cli(data_dir: Path, database_url: str, work: Path) -> dict:
    argv = [sys.executable, "-m", "dockyard", "prune", "--data-dir", str(data_dir), *CLI_RULES, "--output", "json"]
    if database_url:
        argv += ["--database-url", database_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out_path, err_path = work / "cli.json", work / "cli.stderr"
    # started by a small launcher process: the kernel starts a child's max RSS from the RSS of the
    # process it was forked from, and this one holds the generated store
    spawn = {"argv": argv, "stdout": str(out_path), "stderr": str(err_path), "env": env}
    res = subprocess.run([sys.executable, "-S", "-c", _SPAWN, json.dumps(spawn)], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, check=True)
    ru = json.loads(res.stdout)
    if ru["returncode"] != 0:
        raise RuntimeError(f"dockyard prune failed ({ru['returncode']}):\n{err_path.read_text()[-3000:]}")
    doc = json.loads(out_path.read_text())
    return {"argv": argv, "wall": ru["wall"], "cpu": ru["cpu"], "maxrss_kib": ru["maxrss_kib"],
            "plan_duration": doc["duration_seconds"], "totals": doc["totals"], "json_bytes": out_path.stat().st_size,
            "deleted_digest": plan_digest(f"{r['repository']}@{d['digest']}" for r in doc["repositories"]
                                          for d in r["deleted"]),
            "kept_digest": plan_digest(f"{r['repository']}@{d['digest']}" for r in doc["repositories"]
                                       for d in r["kept"])}


# ---- the queries one repository's plan runs, with their query plans ----------------------------------

def _label(sql: str) -> str:
    low = " ".join(sql.split()).lower()
    if "from tag_history" in low:
        return "RetentionStore.history"
    if "from manifest_references join manifests" in low:
        return "RetentionStore.references"
    if "from manifest_references join blobs" in low:
        return "RetentionStore.blob_use_counts"
    if "from manifests" in low:
        return "RetentionStore.manifests"
    if "from tags" in low:
        return "RetentionStore.tags"
    if "from repositories" in low:
        return "RetentionStore.repositories"
    if "retention_policies" in low:
        return "policies"
    return low[:40]


def explain(data_dir: Path, database_url: str, now: float, repository: str) -> list[dict]:
    """Run the dry-run plan of one repository, capture its SELECTs, show their plans and time them."""
    from sqlalchemy import event

    from dockyard.policies import Policy
    from dockyard.lifecycle.prune import Pruner

    reg = open_registry(data_dir, database_url, now)
    captured: list[tuple[str, object]] = []

    def cap(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and not executemany:
            captured.append((statement, parameters))

    event.listen(reg.db.engine, "before_cursor_execute", cap)
    Pruner(reg, Policy.parse("bench", POLICY), repository=repository).run()
    event.remove(reg.db.engine, "before_cursor_execute", cap)
    out, seen = [], set()
    raw = reg.db.engine.raw_connection()
    try:
        for stmt, params in captured:
            label = _label(stmt)
            if label in seen or label in ("policies", "RetentionStore.repositories"):
                continue
            seen.add(label)
            cur = raw.cursor()
            if reg.db.is_postgres:
                cur.execute("EXPLAIN " + stmt, params)
                plan = [r[0].strip() for r in cur.fetchall()]
            else:
                cur.execute("EXPLAIN QUERY PLAN " + stmt, params)
                plan = [r[-1] for r in cur.fetchall()]
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                cur.execute(stmt, params)
                rows = len(cur.fetchall())
                times.append(time.perf_counter() - t0)
            out.append({"query": label, "plan": plan, "ms": 1000 * min(times), "rows": rows})
            cur.close()
        raw.rollback()
    finally:
        raw.close()
        reg.db.dispose()
    return out


# ---- checks of the confirmed copy ------------------------------------------------------------------

def verify_confirm(url: str, now: float, deleted_file: Path, expected_deleted: int) -> dict:
    import sqlalchemy as sa

    eng = sa.create_engine(url)
    with eng.connect() as c:
        q = lambda sql: c.exec_driver_sql(sql).scalar()  # noqa: E731
        pending = {f"{n}@{d}" for n, d in c.exec_driver_sql(
            "SELECT r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id "
            "WHERE m.state = 'pending_delete'")}
        res = {
            "pending_delete": len(pending),
            "pending_equals_plan": pending == set(deleted_file.read_text().split("\n")) - {""},
            "deleted_by": sorted(r[0] for r in c.exec_driver_sql(
                "SELECT DISTINCT deleted_by FROM manifests WHERE state = 'pending_delete'")),
            "scrub_after_ok": q(f"SELECT count(*) FROM manifests WHERE state = 'pending_delete' AND "
                                f"abs(scrub_after - (deleted_at + {SCRUB_TIME})) > 1") == 0,
            "tags_trashed_with_manifest": q("SELECT count(*) FROM trashed_tags WHERE with_manifest = 1"),
            "tag_history_deletes_by_prune": q("SELECT count(*) FROM tag_history WHERE action = 'delete' "
                                              "AND actor = 'prune:bench'"),
            "tags_on_inactive": q("SELECT count(*) FROM tags t JOIN manifests m ON m.id = t.manifest_id "
                                  "WHERE m.state <> 'active'"),
            "recent_deleted": q(f"SELECT count(*) FROM manifests WHERE state = 'pending_delete' "
                                f"AND pushed_at > {now - KEEP_WITHIN}"),
            "audit_rows_confirmed": q("SELECT count(*) FROM prune_audit WHERE confirmed = 1"),
        }
    eng.dispose()
    res["ok"] = (res["pending_delete"] == expected_deleted and res["pending_equals_plan"]
                 and res["deleted_by"] == ["prune:bench"] and res["scrub_after_ok"]
                 and res["tags_trashed_with_manifest"] == res["tag_history_deletes_by_prune"]
                 and res["tags_on_inactive"] == 0 and res["recent_deleted"] == 0 and res["audit_rows_confirmed"] == 1)
    return res


# ---- reporting ----------------------------------------------------------------------------------------

def table(headers: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def _short(file: str) -> str:
    for marker in ("/src/dockyard/", "/site-packages/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


PHASES = [("Pruner.run", "lifecycle/prune.py", "run"),
          ("  plan_repository (all repos)", "lifecycle/prune.py", "plan_repository"),
          ("    RetentionStore.manifests", "meta/retention.py", "manifests"),
          ("    RetentionStore.tags", "meta/retention.py", "tags"),
          ("    RetentionStore.history", "meta/retention.py", "history"),
          ("    RetentionStore.references", "meta/retention.py", "references"),
          ("    InUse.keys", "lifecycle/inuse.py", "keys"),
          ("    Policy.tag_in_scope", "lifecycle/policies.py", "tag_in_scope"),
          ("    ImmutableRules.matches", "lifecycle/policies.py", "matches"),
          ("  Pruner._bytes", "lifecycle/prune.py", "_bytes"),
          ("    RetentionStore.blob_use_counts", "meta/retention.py", "blob_use_counts"),
          ("  Pruner._audit", "lifecycle/prune.py", "_audit")]


def phase_table(variants: list[tuple[str, dict]]) -> str:
    """CPU seconds (and share) of each phase of Pruner.run, one column per variant."""
    def rows_of(r: dict) -> list[tuple[str, float]]:
        ph, cpu = r["phases"], r["cpu"]
        c = {k: v[1] for k, v in ph.items()}
        store = sum(c[f"RetentionStore.{n}"] for n in ("manifests", "tags", "history", "references"))
        return [("plan_repository (1 call per repository)", c["plan_repository"]),
                ("  RetentionStore.manifests", c["RetentionStore.manifests"]),
                ("  RetentionStore.tags", c["RetentionStore.tags"]),
                ("  RetentionStore.history", c["RetentionStore.history"]),
                ("  RetentionStore.references", c["RetentionStore.references"]),
                ("  rules, closure, decisions (Python)", c["plan_repository"] - store),
                ("Pruner._bytes", c["Pruner._bytes"]),
                ("  RetentionStore.blob_use_counts", c["RetentionStore.blob_use_counts"]),
                ("  the rest of _bytes (Python)", c["Pruner._bytes"] - c["RetentionStore.blob_use_counts"]),
                ("Pruner._audit", c["Pruner._audit"]),
                ("rest of Pruner.run (transactions, accumulators)",
                 cpu - c["plan_repository"] - c["Pruner._bytes"] - c["Pruner._audit"]),
                ("total (CPU s of Pruner.run)", cpu)]
    cols = [rows_of(r) for _n, r in variants]
    body = []
    for i, (label, _v) in enumerate(cols[0]):
        body.append([label] + [f"{col[i][1]:.2f} ({100 * col[i][1] / max(1e-9, col[-1][1]):.0f}%)"
                               for col in cols])
    return table(["phase (CPU s, share)"] + [n for n, _r in variants], body)


def profile_summary(path: str, top: int = 20, brief: bool = False) -> str:
    import pstats

    st = pstats.Stats(path)
    total = max(v[3] for v in st.stats.values())  # Pruner.run's cumulative time
    rows = [(tt, ct, nc, f"{func} ({_short(file)}:{line})")
            for (file, line, func), (cc, nc, tt, ct, _callers) in st.stats.items()]
    hdr = ["function", "own s", "own %", "cum s", "cum %", "calls"]
    fmt = lambda r: [r[3], f"{r[0]:.3f}", f"{100 * r[0] / total:.1f}", f"{r[1]:.3f}", f"{100 * r[1] / total:.1f}",  # noqa: E731
                     str(r[2])]
    out = [f"cProfile (CPU-time timer) of Pruner.run (dry run): {total:.2f} CPU s under the profiler; "
           f"top {top} by own time"]
    out.append(table(hdr, [fmt(r) for r in sorted(rows, reverse=True)[:top]]))
    if not brief:
        out.append(f"\ntop {top} by cumulative time (dockyard and sqlalchemy)")
        mine = [r for r in rows if "dockyard" in r[3] or "sqlalchemy" in r[3] or "prune.py" in r[3]
                or "retention.py" in r[3]]
        out.append(table(hdr, [fmt(r) for r in sorted(mine, key=lambda r: r[1], reverse=True)[:top]]))
    phase_rows = []
    for label, file, func in PHASES:
        hits = [(tt, ct, nc) for (f, _l, fn), (_cc, nc, tt, ct, _c) in st.stats.items()
                if fn == func and f.endswith(file)]
        if hits:
            ct = max(h[1] for h in hits) if label.startswith("Pruner.run") else sum(h[1] for h in hits)
            phase_rows.append([label, f"{ct:.3f}", f"{100 * ct / total:.1f}", str(sum(h[2] for h in hits))])
    out.append("\nphases (cumulative)")
    out.append(table(["phase", "cum s", "%", "calls"], phase_rows))
    return "\n".join(out)


# ---- main ------------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="prune-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.pg = args.backend == "postgres"
        self.pg_names: list[str] = []

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def store(self, repos: int, manifests: int, now: float) -> tuple[Path, str, dict]:
        tag = f"r{repos}_m{manifests}"
        data_dir = self.work / tag
        url = ""
        if self.pg:
            name = f"dockyard_prune_bench_{tag}"
            url = pg_url(name)
        meta_path = data_dir / "meta.json"
        if self.args.reuse and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta["repos"] == repos and meta["manifests"] == manifests:
                self.log(f"reusing store {data_dir} ({manifests} manifests, {repos} repositories)")
                if self.pg:
                    self.pg_names.append(name)
                return data_dir, url, meta
        if data_dir.exists():
            shutil.rmtree(data_dir)
        if self.pg:
            pg_create(name)
            self.pg_names.append(name)
        self.log(f"building store {data_dir} ({manifests} manifests, {repos} repositories, {self.args.backend})")
        meta = build_store(data_dir, url, repos, manifests, now)
        self.log(f"  built in {meta['build_s']:.1f} s (generation {meta['generate_s']:.1f} s): {meta['rows']}")
        return data_dir, url, meta

    def copy(self, data_dir: Path, url: str, meta: dict) -> tuple[Path, str]:
        dest = self.work / (data_dir.name + "_confirm")
        if dest.exists():
            shutil.rmtree(dest)
        if self.pg:
            src_name = url.rsplit("/", 1)[1]
            name = src_name + "_c"
            new_url = pg_create(name, template=src_name)
            self.pg_names.append(name)
            shutil.copytree(data_dir, dest)
            return dest, new_url
        shutil.copytree(data_dir, dest)  # the children closed every connection: the WAL is checkpointed
        return dest, ""

    def cleanup(self) -> None:
        if self.args.keep:
            self.log(f"kept {self.work}" + (f" and databases {', '.join(self.pg_names)}" if self.pg_names else ""))
            return
        for name in self.pg_names:
            pg_drop(name)
        shutil.rmtree(self.work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifests", type=int, default=None, help="manifests in the store (default 100000; --quick 10000)")
    p.add_argument("--repos", type=int, default=None, help="repositories (default 1000; --quick 100)")
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--quick", action="store_true", help="10,000 manifests in 100 repositories")
    p.add_argument("--repeat", type=int, default=3, help="dry runs of the full store (each in a fresh process)")
    p.add_argument("--profile", action="store_true", help="profile the dry run even if the target is met")
    p.add_argument("--what-if", action="store_true",
                   help="SQLite: also time copies with ANALYZE / an extra index even if the target is met")
    p.add_argument("--no-cli", action="store_true")
    p.add_argument("--no-confirm", action="store_true")
    p.add_argument("--no-series", action="store_true", help="skip the memory-vs-repositories series")
    p.add_argument("--workdir", help="where the stores go (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the stores (and PostgreSQL databases) afterwards")
    p.add_argument("--reuse", action="store_true", help="reuse stores found in --workdir")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        spec = json.loads(args._child)
        res = child(spec)
        Path(spec["out"]).write_text(json.dumps(res))
        return 0
    repos = args.repos or (100 if args.quick else 1000)
    manifests = args.manifests or (10_000 if args.quick else 100_000)
    per_repo = manifests // repos
    if per_repo < 3:
        p.error("need at least 3 manifests per repository")
    started = time.time()
    bench = Bench(args)
    try:
        return run(bench, repos, manifests, per_repo, started)
    finally:
        bench.cleanup()


def run(bench: Bench, repos: int, manifests: int, per_repo: int, started: float) -> int:
    args = bench.args
    now = float(int(time.time()))
    info = machine_info()
    bench.log(f"machine: {info['nproc']} CPUs, {info['cpu']}, {info['memory']}; {info['python']}")
    data_dir, url, meta = bench.store(repos, manifests, now)
    now = meta["now"]
    logs = bench.work / "logs"
    logs.mkdir(exist_ok=True)
    spec = {"data_dir": str(data_dir), "database_url": url, "now": now, "confirm": False}

    # 1. dry runs, in-process
    dry = []
    for i in range(args.repeat):
        # the first one also adds up the time of each phase (a wrapper around ~5,000 calls: no measurable cost)
        res = run_child({**spec, "mode": "plan", "phases": i == 0,
                         "dump_deleted": str(bench.work / "deleted.txt") if i == 0 else None},
                        logs / f"plan-{i}.log")
        bench.log(f"dry run {i + 1}/{args.repeat}: {res['wall']:.2f} s wall, {res['cpu']:.2f} s CPU, "
                  f"peak RSS {mib(res['hwm_kib'])} MiB, {res['totals']}")
        dry.append(res)
    ref = dry[0]
    same = all(r["deleted_digest"] == ref["deleted_digest"] and r["kept_digest"] == ref["kept_digest"] for r in dry)

    # the queries of one repository's plan: their query plans and times
    expl = explain(data_dir, url, now, repo_name(repos // 2))

    # 2. the command line
    cli = None
    if not args.no_cli:
        cli = run_cli(data_dir, url, bench.work)
        bench.log(f"dockyard prune (CLI): {cli['wall']:.2f} s wall, plan {cli['plan_duration']:.2f} s, "
                  f"{cli['cpu']:.2f} s CPU, max RSS {mib(cli['maxrss_kib'])} MiB")

    # 3. memory vs. repositories, constant manifests per repository
    series = []
    if not args.no_series:
        sizes = sorted({max(1, repos // 10), max(1, 3 * repos // 10), repos})
        for n in sizes:
            if n == repos and n * per_repo == manifests:
                d, u = data_dir, url
                plan_res = ref
            else:
                d, u, _m = bench.store(n, n * per_repo, now)
                plan_res = run_child({**spec, "data_dir": str(d), "database_url": u, "mode": "plan"},
                                     logs / f"series-{n}-plan.log")
            tr = run_child({**spec, "data_dir": str(d), "database_url": u, "mode": "trace"},
                           logs / f"series-{n}-trace.log")
            bench.log(f"series {n} repositories: peak RSS {mib(plan_res['hwm_kib'])} MiB, per-repository "
                      f"working set max {tr['trace']['per_repo_max'] / 1024:.0f} KiB")
            series.append((n, n * per_repo, plan_res, tr))

    # 4. --confirm on a copy
    confirm = None
    if not args.no_confirm:
        cdir, curl = bench.copy(data_dir, url, meta)
        confirm = run_child({**spec, "data_dir": str(cdir), "database_url": curl, "mode": "plan", "confirm": True},
                            logs / "confirm.log")
        confirm["verify"] = verify_confirm(sa_url(curl, cdir), now, bench.work / "deleted.txt",
                                           ref["totals"]["deleted"])
        bench.log(f"confirm: {confirm['wall']:.2f} s wall, {confirm['cpu']:.2f} s CPU; verified: "
                  f"{confirm['verify']['ok']}")

    median_wall = statistics.median(r["wall"] for r in dry)
    missed = median_wall >= TARGET_SECONDS
    prof_text = None
    if missed or args.profile:
        prof_path = bench.work / "plan.prof"
        pr = run_child({**spec, "mode": "profile", "profile_out": str(prof_path)}, logs / "profile.log")
        prof_text = profile_summary(str(prof_path))
        if args.keep:
            prof_text += f"\n(profile data: {prof_path}; e.g. python -m pstats {prof_path})"
        prof_text = f"(wall under cProfile: {pr['wall']:.2f} s)\n" + prof_text

    # what if: the same store with query-planner statistics, or with one more index (copies; no code change)
    whatif = []
    whatif_prof = None
    if not bench.pg and (missed or args.what_if):
        import sqlite3

        for key, label, sql in WHAT_IF:
            d = bench.work / f"{data_dir.name}_{key}"
            if d.exists():
                shutil.rmtree(d)
            shutil.copytree(data_dir, d)
            c = sqlite3.connect(d / "dockyard.db")
            t0 = time.perf_counter()
            c.execute(sql)
            c.commit()
            c.close()
            took = time.perf_counter() - t0
            res = run_child({**spec, "data_dir": str(d), "mode": "plan", "phases": True}, logs / f"whatif-{key}.log")
            bench.log(f"what if {label}: {res['wall']:.2f} s wall, {res['cpu']:.2f} s CPU")
            whatif.append((key, label, sql, took, res, d))
        key, label, sql, took, res, d = whatif[-1]
        wprof = bench.work / f"whatif-{key}.prof"
        pw = run_child({**spec, "data_dir": str(d), "mode": "profile", "profile_out": str(wprof)},
                       logs / f"whatif-{key}-profile.log")
        whatif_prof = (f"profile of the dry run with {label} (cProfile adds {pw['cpu'] / max(1e-9, res['cpu']):.1f}x "
                       f"CPU here, mostly to the Python-heavy parts: use the phase table above for shares):\n"
                       + profile_summary(str(wprof), top=15, brief=True))
        if not args.keep:
            for *_x, d in whatif:
                shutil.rmtree(d, ignore_errors=True)

    # ---- report ----
    out = []
    out.append(f"\n=== dockyard prune planner benchmark ({args.backend}) ===")
    out.append(f"machine: {info['nproc']} CPUs, {info['cpu']}, {info['memory']}; {info['python']}; "
               f"kernel {info['kernel']}")
    out.append(f"store: {manifests} manifests in {repos} repositories ({per_repo}/repository), built in "
               f"{meta['build_s']:.1f} s; rows: " + ", ".join(f"{k} {v}" for k, v in meta["rows"].items() if v))
    out.append(f"  manifests by kind: {meta['kinds']}; tag_history actions: {meta['history_actions']}; "
               f"live tags {meta['live_tags']}; with last_pulled_at {meta['pulled']}; pushed within 30 d "
               f"{meta['within_30d']}")
    out.append(f"policy: {POLICY}; plan: {ref['totals']}")
    pg = bench.pg
    hdr = ["run", "wall s", "CPU s", *(["DB CPU s"] if pg else []), "other load (cores)", "peak RSS MiB (during run)",
           "RSS before MiB", "process max RSS MiB", "same plan"]
    rows = []
    for i, r in enumerate(dry):
        rows.append([f"dry run #{i + 1} (in-process)", f"{r['wall']:.2f}", f"{r['cpu']:.2f}",
                     *([f"{r.get('db_cpu') or 0:.2f}"] if pg else []), f"{r['other_cores']:.1f}", mib(r["hwm_kib"]),
                     mib(r["rss_before_kib"]), mib(r["process_peak_kib"]),
                     "yes" if r["deleted_digest"] == ref["deleted_digest"] else "NO"])
    if cli:
        rows.append(["dockyard prune CLI (whole command)", f"{cli['wall']:.2f}", f"{cli['cpu']:.2f}",
                     *(["-"] if pg else []), "-", "-", "-", mib(cli["maxrss_kib"]),
                     "yes" if (cli["deleted_digest"], cli["kept_digest"]) == (ref["deleted_digest"], ref["kept_digest"])
                     else "NO"])
    if confirm:
        rows.append(["--confirm (in-process, on a copy)", f"{confirm['wall']:.2f}", f"{confirm['cpu']:.2f}",
                     *([f"{confirm.get('db_cpu') or 0:.2f}"] if pg else []), f"{confirm['other_cores']:.1f}",
                     mib(confirm["hwm_kib"]),
                     mib(confirm["rss_before_kib"]), mib(confirm["process_peak_kib"]),
                     "yes" if confirm["deleted_digest"] == ref["deleted_digest"] else "NO"])
    out.append("\n" + table(hdr, rows))
    if cli:
        out.append(f"CLI: plan duration reported in its JSON {cli['plan_duration']:.2f} s; JSON output "
                   f"{cli['json_bytes'] / 1e6:.1f} MB; command: {' '.join(cli['argv'][1:])}")
    if confirm:
        v = confirm["verify"]
        out.append(f"confirm verification: {'OK' if v['ok'] else 'FAILED'} — {v['pending_delete']} pending_delete "
                   f"(= plan: {v['pending_equals_plan']}), {v['tags_trashed_with_manifest']} tags to the trash, "
                   f"tags on inactive manifests {v['tags_on_inactive']}, deleted though pushed within 30 d "
                   f"{v['recent_deleted']}, deleted_by {v['deleted_by']}")
    out.append(f"\nqueries of one repository's plan ({repo_name(repos // 2)}; best of 3; the plan runs the first "
               f"four once per repository, blob_use_counts once per 500 candidate blobs)")
    out.append(table(["query", "rows", "ms", "x repositories = s", "query plan"],
                     [[e["query"], str(e["rows"]), f"{e['ms']:.2f}",
                       f"{e['ms'] * repos / 1000:.2f}" if e["query"] != "RetentionStore.blob_use_counts" else "-",
                       " | ".join(e["plan"])[:160]] for e in expl], left=(0, 4)))
    if series:
        hdr = ["repositories", "manifests", "wall s", "CPU s", "other load (cores)", "peak RSS MiB", "RSS growth MiB",
               "per-repo working set KiB (1st repo | others: median / p99 / max)", "retained after planning MiB",
               "bytes phase peak MiB", "tracemalloc peak MiB"]
        rows = []
        for n, m, pr_, tr in series:
            t = tr["trace"]
            rows.append([str(n), str(m), f"{pr_['wall']:.2f}", f"{pr_['cpu']:.2f}", f"{pr_['other_cores']:.1f}",
                         mib(pr_["hwm_kib"]),
                         mib((pr_["hwm_kib"] or 0) - pr_["rss_before_kib"]),
                         f"{t['per_repo_first'] / 1024:.0f} | {t['per_repo_median'] / 1024:.0f} / "
                         f"{t['per_repo_p99'] / 1024:.0f} / {t['per_repo_max'] / 1024:.0f}",
                         f"{t['retained_after_planning'] / 2**20:.1f}", f"{t['tail_peak'] / 2**20:.1f}",
                         f"{t['overall_peak'] / 2**20:.1f}"])
        out.append(f"\nmemory vs. repositories ({per_repo} manifests per repository; dry run; each row a fresh process)")
        out.append(table(hdr, rows))
        if len(series) >= 2:
            (n0, m0, a, ta), (n1, m1, b, tb) = series[0], series[-1]
            slope_rss = ((b["hwm_kib"] or 0) - (a["hwm_kib"] or 0)) * 1024 / (n1 - n0)
            slope_ret = (tb["trace"]["retained_after_planning"] - ta["trace"]["retained_after_planning"]) / (m1 - m0)
            ws_ratio = tb["trace"]["per_repo_max"] / max(1, ta["trace"]["per_repo_max"])
            out.append(f"per-repository working set (after the first): max {ta['trace']['per_repo_max'] / 1024:.0f} KiB at {n0} "
                       f"repositories vs {tb['trace']['per_repo_max'] / 1024:.0f} KiB at {n1} (x{ws_ratio:.2f} for "
                       f"x{n1 / n0:.0f} repositories)")
            out.append("  (median: what planning one repository allocates and frees; the max over repositories are "
                       "one-off resizes of the run-wide accumulators - Pruner.run's deleted_ids set and candidates "
                       "dict, Plan.repositories - which grow with everything planned so far)")
            out.append(f"peak RSS grows {slope_rss / 1024:.1f} KiB per added repository "
                       f"({slope_rss / per_repo:.0f} B per manifest); the Plan kept in memory accounts for "
                       f"{slope_ret:.0f} B per manifest (tracemalloc)")
    verdict = "MET" if not missed else "MISSED"
    out.append(f"\ntarget: plan {manifests} manifests / {repos} repositories < {TARGET_SECONDS:.0f} s -> "
               f"median {median_wall:.2f} s (min {min(r['wall'] for r in dry):.2f}): {verdict}"
               + ("" if (repos, manifests) == (1000, 100_000) else " (not the issue's size)"))
    out.append(f"  CPU: median {statistics.median(r['cpu'] for r in dry):.2f} s (wall is inflated by the other load "
               f"on the machine, shown in its column; CPU is not)")
    if not same:
        out.append("WARNING: the dry runs did not produce the same plan")
    out.append("\nwhere the CPU goes: the phases of Pruner.run (dry run #1" + (" and the what-if runs" if whatif else "")
               + "), timed by wrappers in the child process")
    out.append(phase_table([("as built", ref)] + [(f"with {label}", res) for _k, label, _s, _t, res, _d in whatif]))
    if whatif:
        out.append("\nwhat if (the same store copied, one statement applied with sqlite3; dockyard's code unchanged)")
        out.append(table(["variant", "applied in s", "wall s", "CPU s", "other load (cores)", "peak RSS MiB",
                          "same plan"],
                         [["as built (as the registry leaves it)", "-", f"{ref['wall']:.2f}", f"{ref['cpu']:.2f}",
                           f"{ref['other_cores']:.1f}", mib(ref["hwm_kib"]), "-"]]
                         + [[f"with {label}", f"{took:.2f}", f"{res['wall']:.2f}", f"{res['cpu']:.2f}",
                             f"{res['other_cores']:.1f}", mib(res["hwm_kib"]),
                             "yes" if (res["deleted_digest"], res["kept_digest"]) == (ref["deleted_digest"],
                                                                                    ref["kept_digest"]) else "NO"]
                            for _k, label, sql, took, res, _d in whatif]))
        out.append("statements: " + "; ".join(f"{label}: {sql}" for _k, label, sql, *_r in whatif))
    if prof_text:
        out.append("\n" + prof_text)
    if whatif_prof:
        out.append("\n" + whatif_prof)
    out.append(f"\ntotal benchmark time {time.time() - started:.0f} s; workdir {bench.work}")
    print("\n".join(out), flush=True)
    ok = same and (not cli or cli["deleted_digest"] == ref["deleted_digest"]) and (not confirm or confirm["verify"]["ok"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
