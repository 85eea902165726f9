"""``dockyard host ...`` and ``dockyard image ...``: hosts running ``dockyard agent`` and their images."""

from __future__ import annotations

import argparse
import sys
import time

from dockyard.cli.common import _admin_common, _emit, _human, _registry, examples


def _fail(exc) -> int:
    print(f"dockyard: {exc.message}: {exc.detail}", file=sys.stderr)
    return 1


def cmd_host_add(args: argparse.Namespace) -> int:
    from dockyard.errors import RegistryError
    from dockyard.hosts import service

    try:
        token = service.add_host(_registry(args), args.host)
    except RegistryError as exc:
        return _fail(exc)
    _emit(args, {"host": args.host, "token": token},
          f"{token}\n(host {args.host} added; give this token to its agent: DOCKYARD_HOST_TOKEN or --token-file; "
          f"it is not shown again)")
    return 0


def cmd_host_remove(args: argparse.Namespace) -> int:
    from dockyard.hosts import service

    if not service.remove_host(_registry(args), args.host):
        print(f"dockyard: no active host {args.host!r}", file=sys.stderr)
        return 1
    _emit(args, {"host": args.host, "revoked": True}, f"host {args.host}: credential revoked")
    return 0


def cmd_host_list(args: argparse.Namespace) -> int:
    from dockyard.hosts import service

    hosts = service.list_hosts(_registry(args))
    now = time.time()
    lines = [f"{'host':<24} {'state':<8} {'address':<22} {'version':<10} {'last seen':>10} {'images':>7} {'bytes':>14}"]
    for h in hosts:
        seen = _human(now - h["last_seen"]) + " ago" if h["last_seen"] else "never"
        lines.append(f"{h['name']:<24} {h['state']:<8} {(h['address'] or '-'):<22} {(h['version'] or '-'):<10} "
                     f"{seen:>10} {h['images']:>7} {h['bytes']:>14}")
    _emit(args, {"hosts": hosts}, "\n".join(lines))
    return 0


def cmd_host_images(args: argparse.Namespace) -> int:
    from dockyard.errors import RegistryError
    from dockyard.hosts import service

    try:
        data = service.host_images(_registry(args), args.host)
    except RegistryError as exc:
        return _fail(exc)
    lines = [f"host {args.host} ({data['state']})",
             f"{'image':<60} {'managed':<8} {'bytes':>12} {'containers':<20} delete"]
    for i in data["images"]:
        ref = f"{i['repository']}{':' + i['tag'] if i['tag'] else ''}@{i['digest'][:19]}"
        d = i["delete"]
        delete = "-" if d is None else d["state"] + (f": {d['error']}" if d["error"] else "")
        lines.append(f"{ref:<60} {'yes' if i['managed'] else 'no':<8} {i['bytes']:>12} "
                     f"{','.join(i['containers'])[:20] or '-':<20} {delete}")
    for w in data["work"]:
        if w["kind"] == "pull":
            lines.append(f"pull {w['repository']}:{w['reference']} {w['state']}{': ' + w['error'] if w['error'] else ''}")
    _emit(args, data, "\n".join(lines))
    return 0


def cmd_image_pull(args: argparse.Namespace) -> int:
    from dockyard.errors import RegistryError
    from dockyard.hosts import service

    try:
        report = service.request(_registry(args), args.host, "pull", args.reference, "cli")
    except RegistryError as exc:
        return _fail(exc)
    _emit(args, report, f"pull of {args.reference} queued for host {args.host} (work {report['id']}); the row "
                        f"appears when the host confirms")
    return 0


def cmd_image_delete(args: argparse.Namespace) -> int:
    from dockyard.errors import RegistryError
    from dockyard.hosts import service

    reg = _registry(args)
    try:
        if args.host:
            report = service.request(reg, args.host, "delete", args.reference, "cli", dry_run=args.dry_run)
            text = (f"delete of {args.reference} on host {args.host} would free {report['bytes']} bytes (dry run)"
                    if args.dry_run else
                    f"delete of {args.reference} ({report['reference'][:19]}) queued for host {args.host} "
                    f"(work {report['id']}, {report['bytes']} bytes); its row goes when the host confirms "
                    f"(dockyard host images {args.host})")
        else:
            report = service.delete_in_registry(reg, args.reference, "cli", dry_run=args.dry_run)
            held = ", ".join(report["hosts_holding"]) or "none"
            text = (f"{args.reference}: {'would be deleted' if args.dry_run else 'deleted'} in the registry; "
                    f"hosts still holding a copy: {held}")
    except RegistryError as exc:
        return _fail(exc)
    _emit(args, report, text)
    return 0


def register(sub) -> None:
    host = sub.add_parser("host", help="compute hosts running dockyard agent",
                          **examples("dockyard host add compute-1", "dockyard host list",
                                     "dockyard host images compute-1", "dockyard host remove compute-1"))
    hs = host.add_subparsers(dest="host_command", required=True)
    for name, fn, text, lines in (
            ("add", cmd_host_add, "add a host and print its token (shown once)",
             ("dockyard host add compute-1", "dockyard host add compute-1 --output json")),
            ("remove", cmd_host_remove, "revoke a host's credential",
             ("dockyard host remove compute-1",)),
            ("images", cmd_host_images, "what a host holds, with pending and failed deletes",
             ("dockyard host images compute-1", "dockyard host images compute-1 --output json"))):
        p = hs.add_parser(name, help=text, **examples(*lines))
        _admin_common(p)
        p.add_argument("host", help="the host's name (as its agent's --name), e.g. compute-1")
        p.set_defaults(func=fn)
    p = hs.add_parser("list", help="hosts, their state and last heartbeat",
                      **examples("dockyard host list", "dockyard host list --output json"))
    _admin_common(p)
    p.set_defaults(func=cmd_host_list)

    image = sub.add_parser("image", help="images on hosts, and deletes that report host copies",
                           **examples("dockyard image pull --host compute-1 team/app:v1",
                                      "dockyard image delete --host compute-1 team/app:v1 --dry-run",
                                      "dockyard image delete team/app:v1"))
    im = image.add_subparsers(dest="image_command", required=True)
    p = im.add_parser("pull", help="make a managed image on a host: --host HOST REPO:TAG",
                      **examples("dockyard image pull --host compute-1 team/app:v1",
                                 "dockyard image pull --host compute-1 team/app@sha256:<digest>"))
    _admin_common(p)
    p.add_argument("--host", required=True, help="the host that pulls the image (dockyard host list)")
    p.add_argument("reference", help="an image in this registry: REPO:TAG or REPO@DIGEST")
    p.set_defaults(func=cmd_image_pull)
    p = im.add_parser("delete", help="delete on one host (--host), or in the registry (lists hosts holding it)",
                      **examples("dockyard image delete --host compute-1 team/app:v1 --dry-run",
                                 "dockyard image delete --host compute-1 team/app:v1",
                                 "# in the registry (into the trash); host copies stay and are listed",
                                 "dockyard image delete team/app:v1"))
    _admin_common(p)
    p.add_argument("--host", help="delete the host's copy only (never the registry's)")
    p.add_argument("--dry-run", action="store_true", help="report what would be deleted (and the bytes), change nothing")
    p.add_argument("reference", help="the image: REPO:TAG or REPO@DIGEST")
    p.set_defaults(func=cmd_image_delete)
