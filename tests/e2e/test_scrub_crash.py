"""The scrubber killed with SIGKILL at random points finishes the work on its next run."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from dockyard.lifecycle import deletes
from dockyard.registry import manifests
from tests.lifecycle_support import make_registry, put_image, stored_blobs
from tests.support import sha256

pytestmark = pytest.mark.slow  # a long race, kill or soak: the README's test command runs it too

ROUNDS = int(os.environ.get("DOCKYARD_SCRUB_KILLS", "18"))
# a purged image's layer links keep gc_delay (of the real clock: the CLI runs on it) before
# its blobs can go, so the final collection waits that long after the final scrub
GC_DELAY = 1.0


def _cli(data, url, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    # small batches: with batched storage deletes a run must still last long enough for the kills
    env.update({"DOCKYARD_DATABASE_URL": url, "DOCKYARD_STORAGE_LATENCY": "150ms", "DOCKYARD_SCRUB_POOL_SIZE": "2",
                "DOCKYARD_GC_BATCH_SIZE": "2",
                "DOCKYARD_GC_DELAY": f"{GC_DELAY}s", "DOCKYARD_FSCK_GRACE": "0s", "DOCKYARD_LOG_LEVEL": "warning"})
    return [sys.executable, "-m", "dockyard", *args, "--data-dir", str(data)], env


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_killed_scrubber_loses_nothing(tmp_path, db):
    rng = random.Random(7)
    with make_registry(tmp_path, db, scrub_time=60) as reg:
        # the fake clock stands years in the past, so every scrub time below has passed for real
        url = reg.config.database_url
        doomed, kept = [], []
        for i in range(120):
            d, content = put_image(reg, f"scrub/r{i % 6}", f"t{i}", f"doomed{i}")
            doomed.append((d, content))
        for i in range(15):
            d, content = put_image(reg, f"scrub/r{i % 6}", f"keep{i}", f"kept{i}")
            kept.append((f"scrub/r{i % 6}", d, content))
        for i, (d, _) in enumerate(doomed):
            deletes.delete_manifest(reg, f"scrub/r{i % 6}", d)
        reg.db.dispose()

        kills = 0
        for _ in range(ROUNDS):
            cmd, env = _cli(tmp_path, url, "scrub")
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.4, 1.6))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        assert kills >= ROUNDS // 2, "the scrubber finished too fast for the kills to land"

        cmd, env = _cli(tmp_path, url, "scrub", "--output", "json")
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
        time.sleep(GC_DELAY + 0.5)
        cmd, env = _cli(tmp_path, url, "gc", "--output", "json")
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)

        stored = stored_blobs(reg)
        for d, content in doomed:
            assert not {sha256(c) for c in content} & stored, f"data of purged {d} left behind"
        for name, d, content in kept:
            m = manifests.get(reg, name, d)
            assert m.digest == d
            assert {sha256(c) for c in content} <= stored
        cmd, env = _cli(tmp_path, url, "fsck", "--output", "json")
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        report = json.loads(out.stdout)
        assert report["leaks"] == 0 and report["missing"] == [], report
        print(f"[{db}] {kills} scrubbers killed; {len(doomed)} images purged, {len(kept)} kept intact")
