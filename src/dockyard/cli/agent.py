"""``dockyard agent``: the host agent (run, cleanup, create-container)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from dockyard.cli.common import examples
from dockyard.values import parse_duration


def _agent(args: argparse.Namespace):
    from dockyard.agent.agent import Agent
    from dockyard.agent.client import RegistryClient
    from dockyard.agent.files import ImagesDir
    from dockyard.agent.podman import PodmanRuntime
    from dockyard.agent.runtime import DirectoryRuntime
    from dockyard.config import ConfigError

    token = Path(args.token_file).read_text().strip() if args.token_file else os.environ.get("DOCKYARD_HOST_TOKEN", "")
    if not token:
        raise ConfigError("a host token is needed: --token-file FILE or DOCKYARD_HOST_TOKEN (dockyard host add HOST)")
    client = RegistryClient(args.registry, args.name, token)
    files = ImagesDir(Path(args.images_dir))
    runtime = (PodmanRuntime(client.registry_host, args.podman_arg) if args.runtime == "podman"
               else DirectoryRuntime(files))
    return Agent(client, files, runtime, poll_interval=parse_duration(args.poll_interval),
                 inventory_interval=parse_duration(args.inventory_interval),
                 cleanup_interval=parse_duration(args.cleanup_interval),
                 unmanaged_min_age=parse_duration(args.unmanaged_min_age), address=args.address)


def cmd_agent(args: argparse.Namespace) -> int:
    from dockyard.logsetup import setup

    setup(args.log_level)
    agent = _agent(args)
    if args.action == "cleanup":
        report = agent.cleanup(dry_run=args.dry_run)
        if not args.dry_run:
            agent.report_inventory()
        print(json.dumps(report.as_dict(), indent=2) if args.output == "json" else report.table())
        return 0
    if args.action == "create-container":
        # what a runtime does when a container is created from an image it lacks: an implicit
        # (unmanaged) pull, then the container
        if not args.container or not args.image:
            print("dockyard: create-container needs --container NAME and --image REPO:TAG", file=sys.stderr)
            return 2
        repo, _, ref = args.image.rpartition("@") if "@" in args.image else args.image.rpartition(":")
        agent.start()
        image = agent.pull(repo, ref, managed=False)
        agent.runtime.create_container(args.container, image["digest"])
        print(f"container {args.container} uses {repo}@{image['digest']}")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    try:
        agent.run_forever()
    except KeyboardInterrupt:
        pass
    return 0


def register(sub) -> None:
    p = sub.add_parser("agent", help="run the host agent (keeps this host's images, reports them, takes work)",
                       **examples("DOCKYARD_HOST_TOKEN=<token> dockyard agent --registry https://registry.example.com "
                                  "--name compute-1 --images-dir /var/lib/dockyard-agent --runtime directory",
                                  "dockyard agent cleanup --dry-run --registry https://registry.example.com "
                                  "--name compute-1 --images-dir /var/lib/dockyard-agent "
                                  "--token-file /etc/dockyard/host-token",
                                  "dockyard agent create-container --container web --image team/app:v1 "
                                  "--registry https://registry.example.com --name compute-1 "
                                  "--images-dir /var/lib/dockyard-agent --token-file /etc/dockyard/host-token"))
    p.add_argument("action", nargs="?", default="run", choices=("run", "cleanup", "create-container"),
                   help="run (default): the agent loop; cleanup: one cleanup now (--dry-run: list only); "
                        "create-container: an implicit pull + a container, as a runtime does")
    p.add_argument("--registry", required=True, help="registry URL, e.g. http://registry:5000")
    p.add_argument("--name", required=True, help="this host's name (as given to dockyard host add)")
    p.add_argument("--images-dir", required=True, help="directory of the agent's files (tars, records, temporaries)")
    p.add_argument("--runtime", choices=("directory", "podman"), default="directory",
                   help="where images live: directory (default; image tars in --images-dir) or podman")
    p.add_argument("--podman-arg", action="append", default=[], help="extra podman global option (repeatable), "
                                                                      "e.g. --podman-arg=--root=/srv/podman")
    p.add_argument("--token-file", help="file holding the host token (else DOCKYARD_HOST_TOKEN)")
    p.add_argument("--address", help="address reported to the registry")
    p.add_argument("--poll-interval", default="5s",
                   help="heartbeat and work long-poll interval, a duration such as 5s (default 5s)")
    p.add_argument("--inventory-interval", default="60s",
                   help="how often the image inventory is reported, a duration such as 60s (default 60s)")
    p.add_argument("--cleanup-interval", default="1h",
                   help="how often the cleanup runs, a duration such as 1h (default 1h)")
    p.add_argument("--unmanaged-min-age", default="24h",
                   help="unmanaged images no container used for this long are removed by the cleanup "
                        "(default 24h)")
    p.add_argument("--dry-run", action="store_true", help="cleanup: list what would go and the bytes")
    p.add_argument("--container", help="create-container: the container's name")
    p.add_argument("--image", help="create-container: REPO:TAG or REPO@DIGEST")
    p.add_argument("--output", choices=("table", "json"), default="table",
                   help="cleanup report: table for people (default), json for scripts")
    p.add_argument("--log-level", default="info", help="debug, info (default), warning or error")
    p.set_defaults(func=cmd_agent)
