"""The online collector races real clients, on SQLite and PostgreSQL.

A real ``dockyard serve`` runs its background collector continuously (``gc_interval``
0.2 s, ``delete_untagged``, a short ``gc_delay``) while, over plain HTTP:

- 6 pushers push images whose layers come from a pool of 30 shared layers, with the
  docker protocol: HEAD every blob and skip those that exist, mount (from another
  repository) or upload the others, PUT the manifest. Layers constantly turn garbage
  (the untaggers' work) and are needed again, so pushes keep relying on, re-uploading
  and mounting digests the collector is reviewing or deleting;
- 2 untaggers keep only a few pool images tagged (untagged manifests are collected,
  then their links, then their blobs); a deleter deletes private images by digest;
- an abandoner pushes blobs without a manifest (and half-written upload sessions) into
  scratch repositories and unlinks part of them within gc_delay/4 of the upload (the
  link must still be there), and now and then pushes an image into a fresh repository
  that it deletes with the admin API;
- on PostgreSQL, two ``python -m dockyard gc`` processes run in a loop besides the
  server's collector.

Timing. A HEAD that says "exists" protects the layer link for ``gc_delay / 2`` only
(``registry.blobs.stat`` postpones a pending review to ``now + gc_delay`` when it is due
within ``gc_delay / 2``, and leaves a later one alone), so a push must be finished within
``gc_delay / 2`` of its first HEAD, or a failure says nothing about the collector. Measured
on a shared 2-CPU machine with this load, pushes take p50 0.25-0.4 s / p99 1.6 s / max 2.5 s
on SQLite (write-lock waits) and p50 0.6-0.75 s / p99 1.1-4.2 s / max 5.2 s on PostgreSQL
(plus the gc processes' CPU), so ``gc_delay`` is 8 s (budget 4 s) rather than 1-2 s;
``DOCKYARD_RACE_GC_DELAY`` overrides it. Every failure reports its push's duration and whether it was within budget,
and the summary prints the push-time percentiles.

Checks, all gathered before asserting (push failures are asserted first): no push step
failed; every still-tagged image pulls intact (manifest digest and each blob's sha256);
the tags lists are exactly the pushes not deleted; after gc_delay, ``dockyard gc`` runs
until a run reclaims nothing with an empty backlog; ``dockyard fsck`` (grace 0, --verify)
finds no leak and no missing or corrupt blob; exactly the blobs of the kept images are
stored; no staged upload is left; no error or stack trace in the server or gc logs.

Deletes: with the trash (``delayed_delete``, on by default) an untag keeps the manifest
restorable until ``scrub_time``, so the server runs with ``DOCKYARD_DELAYED_DELETE=false``
(when that setting exists): untagged manifests are collected after gc_delay and a delete
by digest purges the image at once (see ``gc_workload.delete_semantics``).

``DOCKYARD_RACE_SECONDS`` (default 50) is the workload's duration per backend; the long
version is ``bench/gc_soak.py``.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.e2e.gc_workload import RaceSettings, RaceWorkload
from tests.support import postgres_database, start_server

pytestmark = pytest.mark.slow  # a long race, kill or soak: the README's test command runs it too

RACE_SECONDS = float(os.environ.get("DOCKYARD_RACE_SECONDS", "50"))
GC_DELAY = float(os.environ.get("DOCKYARD_RACE_GC_DELAY", "8"))


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


@pytest.fixture
def race_settings(backend) -> RaceSettings:
    return RaceSettings(seconds=RACE_SECONDS, gc_delay=GC_DELAY, gc_interval=0.2, upload_ttl=GC_DELAY + 2,
                        gc_processes=2 if backend == "postgres" else 0, seed=int(time.time()))


@pytest.fixture
def gc_server(tmp_path, database_url, race_settings):
    server = start_server(tmp_path / "data", database_url=database_url, extra_env=race_settings.server_env())
    yield server
    server.stop()


def test_collector_races_pushes_deletes_and_other_collectors(backend, database_url, gc_server, race_settings):
    started = time.monotonic()
    wl = RaceWorkload(gc_server.url, gc_server.data_dir, database_url, race_settings,
                      log=lambda m: print(f"[{backend}] {m}", flush=True))
    wl.run(race_settings.seconds)
    out = wl.final_checks(gc_server.log)
    print(f"\n[{backend}] race test, {race_settings.seconds:.0f}s workload, {time.monotonic() - started:.0f}s "
          f"in all (data dir {gc_server.data_dir})\n{wl.summary(out, gc_server.log())}", flush=True)

    if wl.rec.counts["pushes_over_budget"]:
        print(f"[{backend}] WARNING: {wl.rec.counts['pushes_over_budget']} pushes took longer than gc_delay/2 = "
              f"{race_settings.push_budget:.1f}s; a failure of such a push may be the workload's, not the collector's",
              flush=True)
    problems = dict(out.problems())
    assert "push failures" not in problems, problems["push failures"] + f"\nserver log: {gc_server.log_path}"
    assert not problems, "\n\n".join(f"{k}: {v}" for k, v in problems.items()) + f"\nserver log: {gc_server.log_path}"
    # and the race really raced: clients relied on existing layers, layers were collected and pushed again
    c = wl.rec.counts
    reclaimed = wl.tally.totals()[0]
    assert c["pushes"] > 100 and c["untags"] > 50 and c["head_exists"] > 100 and c["unlinks"] > 10, wl.summary(out)
    assert reclaimed["manifests"] > 20 and reclaimed["links"] > 50 and reclaimed["blobs"] > 50, wl.summary(out)
