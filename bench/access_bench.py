"""What access rules cost per request: dockyard.access's role question for growing rule sets,
and the catalog filter over many repository names. Prints a table.

    PYTHONPATH=src python3 bench/access_bench.py [--repos 100000]
"""

from __future__ import annotations

import argparse
import time

from dockyard.access import Access, parse_groups, parse_rules


def policy(n_rules: int) -> Access:
    groups = parse_groups({f"team-{i}": [f"user-{i}-{j}" for j in range(10)] for i in range(n_rules)})
    rules = parse_rules([{"repositories": f"team-{i}/*", "groups": [f"team-{i}"], "role": "push"}
                         for i in range(n_rules)] + [{"repositories": "public/*", "users": ["*"], "role": "pull"}])
    return Access({}, "none", "none", groups, rules)


def per_call(fn, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repos", type=int, default=100_000)
    args = ap.parse_args()
    print(f"{'rules':>6} {'role() us':>10} {'best_role() us':>15} {'catalog filter of ' + str(args.repos) + ' names, s':>34}")
    for n in (1, 10, 100, 1000):
        p = policy(n)
        role_us = per_call(lambda i: p.role("user-0-0", f"team-{i % n}/app"), 20_000)
        best_us = per_call(lambda i: p.best_role("user-0-0"), 2_000)
        names = [f"team-{i % n}/app-{i}" for i in range(args.repos)]
        t0 = time.perf_counter()
        visible = [x for x in names if p.role("user-0-0", x) != "none"]
        print(f"{n:>6} {role_us:>10.2f} {best_us:>15.2f} {time.perf_counter() - t0:>34.3f}  ({len(visible)} visible)")


if __name__ == "__main__":
    main()
