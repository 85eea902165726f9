#!/usr/bin/env python3
"""What a small-image push costs inside SQLite's writer's turn (issue 16), in one process.

    python bench/push_turn.py [--images 200] [--rounds 4]

The registry's services in-process (no HTTP), on SQLite and the filesystem in a temporary
directory, one thread: each image is a config and 3 layers of 4 KiB, each blob pushed as the
throughput benchmark's client does (``POST`` = a session, ``PUT`` with the body = claim,
append, verify, commit, ready mark), then the manifest ``PUT`` by tag. One thread means no
group transactions (17 writer's turns per image) and no GIL contention: what is measured is
the work a turn does, not the queue in front of it.

Rounds alternate between the push path's fixed statements straight on SQLite's driver
(``driver_execute``, the default) and through SQLAlchemy (``DRIVER_STATEMENTS`` off, what
they cost before), each round on a fresh database, so the machine's load drifts over both
alike. Printed per image, median over the rounds of each mode (min-max): SQLAlchemy
executes, writer's turns, the turn held (``BEGIN`` to ``COMMIT``) and the holder's CPU
meanwhile, and the process's CPU for the whole image.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sqlalchemy import event  # noqa: E402

from dockyard.meta import db as meta_db  # noqa: E402
from dockyard.registry import manifests, uploads  # noqa: E402
from tests.lifecycle_support import make_registry  # noqa: E402
from tests.support import OCI_MANIFEST, image_manifest, make_config, sha256  # noqa: E402


def _round(images: int, driver: bool) -> dict[str, float]:
    meta_db.DRIVER_STATEMENTS = driver
    executes = [0]
    with tempfile.TemporaryDirectory() as tmp, make_registry(Path(tmp), "sqlite") as reg:
        event.listen(reg.db.engine, "before_cursor_execute", lambda *a: executes.__setitem__(0, executes[0] + 1))

        def push(i: int) -> None:
            name = f"bench/r{i % 16}"
            config = make_config(f"{driver}-{i}")
            layers = [os.urandom(4096) for _ in range(3)]
            for blob in (config, *layers):
                upload = uploads.start(reg, name)
                uploads.finish_id(reg, name, upload.id, sha256(blob), [blob], len(blob))
            manifests.put(reg, name, f"t{i}", image_manifest(config, layers), OCI_MANIFEST)

        for i in range(16):  # warm-up: every repository exists, every statement cached
            push(i)
        db = reg.db
        executes[0] = 0
        turns, held, cpu = db.turns, db.turn_seconds, db.turn_cpu_seconds
        began = time.process_time()
        for i in range(16, 16 + images):
            push(i)
        spent = time.process_time() - began
        return {"executes": executes[0] / images, "turns": (db.turns - turns) / images,
                "held_ms": (db.turn_seconds - held) * 1000 / images,
                "turn_cpu_ms": (db.turn_cpu_seconds - cpu) * 1000 / images, "cpu_ms": spent * 1000 / images}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200, help="images per round (default 200)")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per mode, alternating (default 4)")
    args = ap.parse_args()
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for driver in (False, True):
            results[driver].append(_round(args.images, driver))
            load.append(os.getloadavg()[0])
    meta_db.DRIVER_STATEMENTS = True
    print(f"small-image pushes in-process, one thread, SQLite: {args.rounds} rounds x {args.images} images per mode; "
          f"load average (1 min) {min(load):.2f}-{max(load):.2f}")
    print(f"{'per image':<34} {'SQLAlchemy (before)':>22} {'driver (after)':>22}")
    for key, label in (("executes", "SQLAlchemy executes"), ("turns", "writer's turns"),
                       ("held_ms", "turn held, ms"), ("turn_cpu_ms", "holder's CPU in the turn, ms"),
                       ("cpu_ms", "process CPU, ms")):
        cells = []
        for driver in (False, True):
            values = [r[key] for r in results[driver]]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"{label:<34} {cells[0]:>22} {cells[1]:>22}")


if __name__ == "__main__":
    main()
