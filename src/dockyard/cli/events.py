"""``dockyard events``: recent events and their delivery state per endpoint."""

from __future__ import annotations

import argparse
import time

from dockyard.cli.common import _admin_common, _emit, _registry, examples


def cmd_events(args: argparse.Namespace) -> int:
    from dockyard.api import webhooks

    reg = _registry(args)
    data = webhooks.listing(reg, args.limit, args.kind, args.repository)
    rows = [f"{'ID':>8}  {'AT (UTC)':19}  {'KIND':8}  {'REPOSITORY':30}  DETAIL / DELIVERIES"]
    for e in data["events"]:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["at"]))
        detail = e.get("digest") or e.get("policy") or e.get("quota") or (e.get("totals") or {}).get("objects", "")
        if e.get("tag"):
            detail = f"{e['tag']} -> {detail}"
        deliveries = ", ".join(f"{n}: {s}" for n, s in e["deliveries"].items())
        rows.append(f"{e['id']:>8}  {at:19}  {e['kind']:8}  {(e['repository'] or '-')[:30]:30}  {detail}"
                    + (f"  [{deliveries}]" if deliveries else ""))
    for name, ep in data["endpoints"].items():
        rows.append(f"endpoint {name}: delivered {ep['delivered']}, dropped {ep['dropped']}"
                    + (f", retrying ({ep.get('attempts')} attempts): {ep.get('last_error')}"
                       if ep.get("last_error") else ""))
    rows.append(f"{data['outbox']} events in the outbox")
    _emit(args, data, "\n".join(rows))
    return 0


def register(sub) -> None:
    from dockyard.events import KINDS

    p = sub.add_parser("events", help="list recent events (push, delete, restore, purge, prune, gc, quota) and "
                                      "their delivery to the notification endpoints",
                       **examples("dockyard events", "dockyard events --kind push --repository team/app --limit 20",
                                  "dockyard events --kind gc --output json"))
    _admin_common(p)
    p.add_argument("--limit", type=int, default=50, help="show at most this many events, newest first (default 50)")
    p.add_argument("--kind", choices=KINDS, help="only events of this kind")
    p.add_argument("--repository", metavar="REPO", help="only events of this repository, e.g. team/app")
    p.set_defaults(func=cmd_events)
