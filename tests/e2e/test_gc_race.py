"""The online collector races real clients, on SQLite and PostgreSQL.

A real ``dockyard serve`` runs its background collector continuously (``gc_interval``
0.2 s, ``gc_delay`` 2 s, ``delete_untagged``) while, over plain HTTP:

- 6 pushers push images whose layers come from a pool of 30 shared layers, with the
  docker protocol: HEAD every blob and skip those that exist, mount (from another
  repository) or upload the others, PUT the manifest. Layers constantly turn garbage
  (the untaggers' work) and are needed again, so pushes keep relying on, re-uploading
  and mounting digests the collector is reviewing or deleting;
- 2 untaggers keep only a few pool images tagged (untagged manifests are collected,
  then their links, then their blobs); a digest deleter deletes private images by digest
  (``pending_delete``: their blobs must stay);
- an abandoner pushes blobs without a manifest (and half-written upload sessions) into
  scratch repositories and unlinks part of them within gc_delay/4 of the upload (the
  link must still be there), and now and then pushes an image into a fresh repository
  that it deletes with the admin API;
- on PostgreSQL, two ``python -m dockyard gc`` processes run in a loop besides the
  server's collector.

Timing: a HEAD that says "exists" protects the link for ``gc_delay / 2`` at least (see
``registry.blobs.stat``), so a push must be done within ``gc_delay / 2`` of its first
HEAD; on localhost a push takes a few tens of milliseconds, far below the 1 s budget at
``gc_delay`` = 2 s. Failures report the push's duration and whether it was within budget.

Then: no push step may have failed; every still-tagged image pulls intact (manifest
digest and each blob's sha256); after gc_delay, ``dockyard gc`` runs until a run reclaims
nothing with an empty backlog; ``dockyard fsck`` (grace 0, --verify) finds no leak and no
missing or corrupt blob; exactly the blobs of tagged and pending_delete images are
stored; no stack trace in the server or gc logs.

``DOCKYARD_RACE_SECONDS`` (default 75) is the workload's duration per backend; the long
version is ``bench/gc_soak.py``.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.e2e.gc_workload import RaceSettings, RaceWorkload
from tests.support import postgres_database, start_server

RACE_SECONDS = float(os.environ.get("DOCKYARD_RACE_SECONDS", "75"))


@pytest.fixture
def database_url(backend):
    """A fresh database per test (the session-wide one is shared with other servers)."""
    if backend == "sqlite":
        yield ""
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def race_settings(backend) -> RaceSettings:
    return RaceSettings(seconds=RACE_SECONDS, gc_delay=2.0, gc_interval=0.2, upload_ttl=4.0,
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
          f"in all (data dir {gc_server.data_dir})\n{wl.summary(out)}", flush=True)

    problems = dict(out.problems())
    assert "push failures" not in problems, problems["push failures"] + f"\nserver log: {gc_server.log_path}"
    assert wl.rec.counts["pushes"] > 100 and wl.rec.counts["untags"] > 50, wl.summary(out)
    assert not problems, "\n\n".join(f"{k}: {v}" for k, v in problems.items()) + f"\nserver log: {gc_server.log_path}"
