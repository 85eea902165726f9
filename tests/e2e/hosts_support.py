"""Agents as real processes (``python -m dockyard agent``) for the host tests and the bench."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import ServerProcess


def cli(server: ServerProcess, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dockyard", *args, "--data-dir", str(server.data_dir)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def cli_json(server: ServerProcess, *args: str) -> dict:
    return json.loads(cli(server, *args, "--output", "json").stdout)


def add_host(server: ServerProcess, name: str) -> str:
    return cli_json(server, "host", "add", name)["token"]


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class AgentProcess:
    server: ServerProcess
    name: str
    token: str
    images_dir: Path
    args: list[str]
    env: dict
    proc: subprocess.Popen | None = None

    def command(self, action: str = "run", *extra: str) -> list[str]:
        return [sys.executable, "-m", "dockyard", "agent", action, "--registry", self.server.url, "--name", self.name,
                "--images-dir", str(self.images_dir), *self.args, *extra]

    def environ(self) -> dict:
        return {**{k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")},
                "DOCKYARD_HOST_TOKEN": self.token, **self.env}

    def start(self) -> "AgentProcess":
        self.images_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.images_dir.parent / f"agent-{self.name}.log", "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.environ())
        return self

    def run(self, action: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(action, *extra), capture_output=True, text=True, env=self.environ(),
                              timeout=120)

    def log(self) -> str:
        return (self.images_dir.parent / f"agent-{self.name}.log").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def host_images(server: ServerProcess, name: str) -> dict:
    r = httpx.get(f"{server.url}/admin/v1/hosts/{name}/images", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def image_row(server: ServerProcess, host: str, digest: str) -> dict | None:
    return next((i for i in host_images(server, host)["images"] if i["digest"] == digest), None)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def queue(server: ServerProcess, host: str, kind: str, reference: str) -> dict:
    r = httpx.post(f"{server.url}/admin/v1/hosts/{host}/work", params={"kind": kind, "reference": reference},
                   timeout=10)
    assert r.status_code == 202, r.text
    return r.json()


def create_container(agent: AgentProcess, container: str, repository: str, reference: str) -> str:
    """What ``dockyard agent create-container`` does, in this process: the runtime pulls the image
    on its own (unmanaged) and creates a container that uses it."""
    from dockyard.agent.agent import Agent
    from dockyard.agent.client import RegistryClient
    from dockyard.agent.files import ImagesDir
    from dockyard.agent.runtime import DirectoryRuntime

    client = RegistryClient(agent.server.url, agent.name, agent.token)
    files = ImagesDir(agent.images_dir)
    try:
        image = Agent(client, files, DirectoryRuntime(files)).pull(repository, reference, managed=False)
    finally:
        client.close()
    DirectoryRuntime(files).create_container(container, image["digest"])
    return image["digest"]
