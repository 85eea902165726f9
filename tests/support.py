"""Test support: real server processes, free ports, PostgreSQL databases, image builders."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import sqlalchemy as sa

PG_URL = os.environ.get("DOCKYARD_TEST_POSTGRES_URL", "postgresql://127.0.0.1/test")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server, dropped afterwards."""
    name = f"dockyard_t_{uuid.uuid4().hex[:12]}"
    admin_url = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


@dataclass
class ServerProcess:
    url: str
    data_dir: Path
    proc: subprocess.Popen
    log_path: Path
    env: dict = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_server(data_dir: Path, *, database_url: str = "", extra_env: dict | None = None,
                 args: list[str] | None = None, log_dir: Path | None = None) -> ServerProcess:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    # one worker unless a test asks for more (the default follows the cores): a test that kills
    # the server or reads its in-memory state (metrics, hashers) means this one process
    env.update({"DOCKYARD_DATABASE_URL": database_url, "DOCKYARD_LOG_LEVEL": "info", "DOCKYARD_WORKERS": "1"})
    env.update(extra_env or {})
    log_path = (log_dir or data_dir) / f"server-{port}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dockyard", "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}",
         *(args or [])],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()}")
        try:
            httpx.get(url + "/v2/", timeout=1)
            return ServerProcess(url, data_dir, proc, log_path, env)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start: {log_path.read_text()}")


# ---- content builders ----------------------------------------------------

def make_layer(seed: str, size: int = 2048) -> bytes:
    """A small deterministic gzip'd tar layer."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = (seed.encode() * (size // max(len(seed), 1) + 1))[:size]
        info = tarfile.TarInfo(name=f"file-{seed}.txt")
        info.size = len(data)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def make_config(seed: str, arch: str = "amd64") -> bytes:
    return json.dumps({"architecture": arch, "os": "linux", "config": {"Labels": {"seed": seed}},
                       "rootfs": {"type": "layers", "diff_ids": []}}).encode()


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def image_manifest(config: bytes, layers: list[bytes], *, subject: dict | None = None,
                   artifact_type: str | None = None, config_type: str = OCI_CONFIG) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(config_type, config),
           "layers": [descriptor(OCI_LAYER, layer) for layer in layers]}
    if subject:
        doc["subject"] = subject
    if artifact_type:
        doc["artifactType"] = artifact_type
    return json.dumps(doc).encode()


def push_blob(client: httpx.Client, name: str, data: bytes) -> str:
    digest = sha256(data)
    r = client.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return digest


def push_image(client: httpx.Client, name: str, tag: str | None, seed: str, layers: int = 2,
               shared: list[bytes] | None = None) -> tuple[str, bytes, list[bytes]]:
    config = make_config(seed)
    blobs = list(shared or []) + [make_layer(f"{seed}-{i}") for i in range(layers)]
    for b in [config, *blobs]:
        push_blob(client, name, b)
    manifest = image_manifest(config, blobs)
    r = client.put(f"/v2/{name}/manifests/{tag or sha256(manifest)}", content=manifest,
                   headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return sha256(manifest), manifest, [config, *blobs]


@dataclass
class MotoServer:
    """moto in server mode: a separate process speaking the S3 HTTP API on loopback.
    No real S3 can run here; nothing in dockyard depends on moto."""

    url: str
    proc: subprocess.Popen
    log_path: Path

    def env(self, bucket: str, prefix: str = "") -> dict:
        return {"DOCKYARD_STORAGE": "s3", "DOCKYARD_S3_ENDPOINT_URL": self.url, "DOCKYARD_S3_BUCKET": bucket,
                "DOCKYARD_S3_PREFIX": prefix, "DOCKYARD_S3_REGION": "us-east-1", "DOCKYARD_S3_PATH_STYLE": "true",
                **AWS_TEST_ENV}

    def make_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                     aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket=name)

    def delete_calls(self) -> list[str]:
        """Paths of every DELETE request the store answered (from its request log)."""
        import re

        return re.findall(r'"DELETE (/\S+) HTTP', self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto(log_dir: Path) -> MotoServer:
    import shutil

    port = free_port()
    log_path = log_dir / f"moto-{port}.log"
    exe = shutil.which("moto_server")
    cmd = [exe] if exe else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=open(log_path, "wb"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/", timeout=1)
            return MotoServer(url, proc, log_path)
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"moto server did not start: {log_path.read_text()}")


# ---- a real S3-compatible server: Ceph's RADOS Gateway ------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent
CEPH_RGW_SCRIPT = REPO_ROOT / "scripts" / "ceph-rgw"


@dataclass
class CephGateway:
    """A throwaway single-node Ceph cluster (mon + memstore OSD) with a RADOS Gateway on
    loopback, started by ``scripts/ceph-rgw``: the real S3 server beside moto. Its keys are
    its own (not AWS_TEST_ENV), so clients take them from :meth:`env` / :attr:`aws_env`."""

    url: str
    access_key: str
    secret_key: str
    directory: Path
    startup_seconds: float

    @property
    def aws_env(self) -> dict:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1"}

    @property
    def log_path(self) -> Path:
        """The gateway's log; at the default debug level it has one access-log line per request."""
        return self.directory / "log" / "client.rgw.log"

    def env(self, bucket: str, prefix: str = "") -> dict:
        return {"DOCKYARD_STORAGE": "s3", "DOCKYARD_S3_ENDPOINT_URL": self.url, "DOCKYARD_S3_BUCKET": bucket,
                "DOCKYARD_S3_PREFIX": prefix, "DOCKYARD_S3_REGION": "us-east-1", "DOCKYARD_S3_PATH_STYLE": "true",
                **self.aws_env}

    def client(self):
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, config=BotoConfig(s3={"addressing_style": "path"}))

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in the bucket under ``prefix`` (all pages)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def delete_calls(self) -> list[str]:
        """Paths of every DELETE request the gateway answered (from its access log)."""
        import re

        return re.findall(r'"DELETE (/\S+) HTTP', self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        subprocess.run(["bash", str(CEPH_RGW_SCRIPT), "stop", str(self.directory)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def start_ceph_rgw(directory: Path) -> CephGateway:
    """Start the gateway under ``directory`` (or find it running there); its daemons stop when
    this process exits even without :meth:`CephGateway.stop` (``CEPH_RGW_WATCH_PID``)."""
    env = {**os.environ, "CEPH_RGW_WATCH_PID": str(os.getpid())}
    r = subprocess.run(["bash", str(CEPH_RGW_SCRIPT), "start", str(directory)], env=env, capture_output=True,
                       text=True, timeout=180)
    if r.returncode != 0:
        raise RuntimeError(f"scripts/ceph-rgw start failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    values = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    return CephGateway(values["CEPH_RGW_ENDPOINT"], values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"],
                       Path(directory), float(values.get("CEPH_RGW_STARTUP_SECONDS", 0)))
