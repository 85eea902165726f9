"""Thousands of random lifecycle sequences against the reference model (issue 18).

The suite's ``tests/integration/test_lifecycle_model.py`` runs a few dozen sequences per
variant; this runs the same state machine with many more (``--examples``), each variant in
its own pytest process, and prints a table. Every sequence ends by deleting everything,
letting every grace pass and collecting: storage and tables must be empty.

    python bench/lifecycle_model_soak.py --examples 2000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "sqlite, delete_untagged off": "TestLifecycleModel",
    "sqlite, delete_untagged on": "TestLifecycleModelDeleteUntagged",
    "postgresql, delete_untagged on": "TestLifecycleModelPostgres",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=1000,
                    help="sequences per SQLite variant (PostgreSQL runs an eighth: a database each)")
    ap.add_argument("--variant", choices=sorted(VARIANTS), action="append", help="run only these (repeatable)")
    args = ap.parse_args()
    rows = []
    for name, test in VARIANTS.items():
        if args.variant and name not in args.variant:
            continue
        env = {**os.environ, "DOCKYARD_MODEL_EXAMPLES": str(args.examples)}
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               f"tests/integration/test_lifecycle_model.py::{test}"],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        sequences = args.examples if "postgres" not in name else max(5, args.examples // 8)
        rows.append((name, sequences, time.monotonic() - t0, "passed" if proc.returncode == 0 else "FAILED"))
        if proc.returncode:
            print(proc.stdout[-6000:], proc.stderr[-2000:], file=sys.stderr)
    print(f"{'variant':34} {'sequences':>9} {'seconds':>8}  result")
    for name, n, secs, result in rows:
        print(f"{name:34} {n:>9} {secs:>8.1f}  {result}")
    return 0 if all(r[3] == "passed" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
