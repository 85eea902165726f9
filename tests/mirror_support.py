"""Upstreams for the mirror tests and benchmark: the reference registry (Debian's
``docker-registry``, optionally with htpasswd auth or in proxy mode) and a tiny hostile
registry that serves what the test tells it to (wrong bytes, a truncated body, junk)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt
import httpx

from tests.support import free_port


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    path.write_text("".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                            for u, p in users.items()))
    return path


@dataclass
class Distribution:
    url: str
    proc: subprocess.Popen
    log_path: Path

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_distribution(root: Path, *, htpasswd: Path | None = None, proxy: str | None = None,
                       proxy_auth: tuple[str, str] | None = None) -> Distribution:
    """``docker-registry serve`` on a free loopback port (filesystem storage under ``root``)."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    auth = f"auth:\n  htpasswd:\n    realm: upstream\n    path: {htpasswd}\n" if htpasswd else ""
    proxy_doc = ""
    if proxy:
        proxy_doc = f"proxy:\n  remoteurl: {proxy}\n"
        if proxy_auth:
            proxy_doc += f"  username: {proxy_auth[0]}\n  password: {proxy_auth[1]}\n"
    cfg = root / "config.yml"
    cfg.write_text(f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root / 'data'}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
  secret: dockyard-mirror-test
{auth}{proxy_doc}""")
    log_path = root / "registry.log"
    proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=open(log_path, "wb"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log_path.read_text()}")
        try:
            httpx.get(url + "/v2/", timeout=1)
            return Distribution(url, proc, log_path)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"docker-registry did not start: {log_path.read_text()}")


class Hostile:
    """A registry on loopback that serves ``routes[path] = (status, headers, body, cut)``: the
    body is sent with its full Content-Length but only ``cut`` bytes of it (None: all)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict, bytes, int | None]] = {}
        self.hits: list[str] = []
        self.connections: list = []
        routes, hits, connections = self.routes, self.hits, self.connections

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                connections.append(self.connection)

            def _answer(self, body_too: bool) -> None:
                hits.append(f"{self.command} {self.path}")
                if self.path == "/v2/":
                    status, headers, body, cut = 200, {}, b"{}", None
                else:
                    status, headers, body, cut = routes.get(self.path, (404, {}, b'{"errors":[]}', None))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                if cut is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                if body_too:
                    self.wfile.write(body if cut is None else body[:cut])
                    self.wfile.flush()
                if cut is not None:
                    self.close_connection = True

            def do_GET(self) -> None:
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def manifest(self, repo: str, reference: str, body: bytes, media_type: str, digest: str | None = None,
                 cut: int | None = None) -> None:
        headers = {"Content-Type": media_type}
        if digest:
            headers["Docker-Content-Digest"] = digest
        self.routes[f"/v2/{repo}/manifests/{reference}"] = (200, headers, body, cut)

    def blob(self, repo: str, digest: str, body: bytes, cut: int | None = None) -> None:
        self.routes[f"/v2/{repo}/blobs/{digest}"] = (200, {"Content-Type": "application/octet-stream"}, body, cut)

    def image(self, repo: str, tag: str, manifest: bytes, blobs: list[bytes], media_type: str) -> None:
        from tests.support import sha256

        for b in blobs:
            self.blob(repo, sha256(b), b)
        self.manifest(repo, tag, manifest, media_type, sha256(manifest))
        self.manifest(repo, sha256(manifest), manifest, media_type, sha256(manifest))

    def stop(self) -> None:
        """Down for real: no listener, and every kept-alive connection cut."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass


def mirrors_env(mirrors: dict, **settings) -> dict[str, str]:
    env = {"DOCKYARD_MIRRORS": json.dumps(mirrors)}
    env.update({f"DOCKYARD_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def push_two_step(client: httpx.Client, name: str, tag: str, seed: str, layers: int = 2,
                  shared: list[bytes] | None = None, layer_size: int = 2048) -> tuple[str, bytes, list[bytes]]:
    """Push an image with POST + PUT uploads (what every registry takes, distribution too)."""
    from tests.support import image_manifest, make_config, make_layer, sha256

    config = make_config(seed)
    blobs = [config, *(shared or []), *(make_layer(f"{seed}-{i}", layer_size) for i in range(layers))]
    for b in blobs:
        r = client.post(f"/v2/{name}/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        sep = "&" if "?" in location else "?"
        r = client.put(f"{location}{sep}digest={sha256(b)}", content=b,
                       headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
    manifest = image_manifest(config, blobs[1:])
    r = client.put(f"/v2/{name}/manifests/{tag}", content=manifest,
                   headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201, r.text
    return sha256(manifest), manifest, blobs
