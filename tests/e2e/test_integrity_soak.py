"""Integrity soak, short version (issue 10): ``bench/integrity_soak.py`` for ~50 s.

A real ``dockyard serve`` on PostgreSQL + filesystem with its collector (gc_delay 8 s), 20
pushers sharing layers (monolithic, streamed and chunked uploads, mounts), pullers doing
digest-verified pulls of acknowledged images, tag and manifest deletes, prunes through the
admin API and the CLI; then a final collection and ``dockyard fsck --verify``. The same
code as the benchmark (``run_soak``), only shorter.

Asserted: no 5xx answer (nor a request without an answer), no acknowledged image that
fails a digest-verified pull (during the run, before and after the final collection), no
fsck finding. A push refused with a clean 4xx is allowed (counted and printed). And the
workload really ran: pushes acknowledged, pulls, deletes and prunes that pruned images.

``DOCKYARD_SOAK_SECONDS`` (default 35) sets the duration; ``python bench/integrity_soak.py``
is the 600 s version.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a long race, kill or soak: the README's test command runs it too

SOAK_SECONDS = float(os.environ.get("DOCKYARD_SOAK_SECONDS", "35"))

def _bench():
    path = Path(__file__).resolve().parents[2] / "bench" / "integrity_soak.py"
    spec = importlib.util.spec_from_file_location("dockyard_bench_integrity_soak", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.postgres
def test_acknowledged_pushes_stay_pullable_under_soak(tmp_path):
    bench = _bench()
    settings = bench.SoakSettings(duration=SOAK_SECONDS, backend="postgres", pushers=20, pullers=4, deleters=2,
                                  gc_delay=8.0, gc_interval=0.5, prune_every=8.0)
    res = bench.run_soak(settings, tmp_path / "data", log=lambda m: print(m, flush=True), progress_every=10.0)
    details = res.details()
    print("\n" + bench.render(res) + ("\n" + details if details else "") + f"\nserver log: {res.server_log}",
          flush=True)

    where = f"\n{details}\nserver log: {res.server_log}"
    assert not res.server_errors, f"{len(res.server_errors)} 5xx answers / requests without an answer" + where
    assert not res.losses, f"{len(res.losses)} acknowledged images failed a digest-verified pull" + where
    assert res.fsck_findings == 0, f"fsck --verify: {res.fsck_findings} findings" + where
    # the soak really soaked
    c = res.counts
    assert res.acked > 100 and c["pulls"] > 100, res.rows()
    assert c["tag deletes"] > 10 and c["manifest deletes"] > 10, res.rows()
    assert c["prunes"] >= 2 and c["images pruned"] > 0, res.rows()
    assert c["chunked"] > 0 and c["monolithic"] > 0 and c["mount"] > 0, res.rows()
