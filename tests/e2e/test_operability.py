"""Running dockyard in production (issue 13), against real ``dockyard serve`` processes.

Probes (``/healthz``, ``/readyz``), start-up checks (one line on stderr, a non-zero exit, no
traceback), TLS and mutual TLS, and the request log. Every server binds 127.0.0.1 only; the
refusal to listen beyond loopback is tested by asking for 0.0.0.0 and seeing the process exit
before it binds anything.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.support import free_port, push_image, sha256, start_server

NO_JOBS = {"DOCKYARD_GC_ENABLED": "false", "DOCKYARD_SCRUB_ENABLED": "false"}


def _htpasswd(path: Path, user: str = "alice", password: str = "alice-pw") -> Path:
    path.write_text(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    return path


def _wait_ready(client: httpx.Client, status: int, deadline: float = 10.0) -> httpx.Response:
    """/readyz caches its checks for a second: poll until it answers ``status``."""
    end = time.monotonic() + deadline
    while True:
        r = client.get("/readyz")
        if r.status_code == status or time.monotonic() > end:
            return r
        time.sleep(0.2)


# ---- 1. probes ---------------------------------------------------------------

def test_probes_answer_without_credentials_when_auth_is_on(backend, database_url, tmp_path):
    env = {**NO_JOBS, "DOCKYARD_AUTH_HTPASSWD": str(_htpasswd(tmp_path / "htpasswd"))}
    server = start_server(tmp_path / "data", database_url=database_url, extra_env=env)
    try:
        with server.client() as c:
            assert c.get("/v2/").status_code == 401  # auth is really on
            r = c.get("/healthz")
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            r = c.get("/readyz")
            assert r.status_code == 200, r.text
            assert r.json() == {"status": "ready",
                                "checks": {"database": "ok", "migrations": "ok", "storage": "ok"}}
            assert c.head("/readyz").status_code == 200
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_readyz_names_storage_and_migrations_failures_and_recovers(tmp_path):
    store = tmp_path / "store"
    data = tmp_path / "data"
    server = start_server(data, extra_env={**NO_JOBS, "DOCKYARD_STORAGE_ROOT": str(store)})
    try:
        with server.client() as c:
            push_image(c, "team/app", "v1", "probe")
            assert _wait_ready(c, 200).status_code == 200
            # storage gone: the root is now a file, so a stat under it fails
            store.rename(tmp_path / "store-away")
            store.write_text("not a directory")
            r = _wait_ready(c, 503)
            assert r.status_code == 503, r.text
            assert r.json()["failed"] == ["storage"]
            assert r.json()["checks"]["storage"] == "unreachable"
            assert r.json()["checks"]["database"] == "ok"
            assert c.get("/healthz").status_code == 200  # alive all the same
            store.unlink()
            (tmp_path / "store-away").rename(store)
            assert _wait_ready(c, 200).status_code == 200

            # the schema is behind what this version expects
            db = sqlite3.connect(data / "dockyard.db")
            (head,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
            db.execute("UPDATE alembic_version SET version_num = '0000'")
            db.commit()
            r = _wait_ready(c, 503)
            assert r.status_code == 503 and r.json()["failed"] == ["migrations"], r.text
            db.execute("UPDATE alembic_version SET version_num = ?", (head,))
            db.commit()
            db.close()
            assert _wait_ready(c, 200).status_code == 200
        log = server.log()
        assert "Traceback" not in log
        assert log.count("not ready: storage unreachable") == 1  # once per change, not per probe
        assert log.count("not ready: migrations not at head") == 1
    finally:
        server.stop()


def test_readyz_names_an_unreachable_database(tmp_path):
    from tests.e2e.test_database_faults import CuttableProxy, _pg_target
    from tests.support import postgres_database

    with postgres_database() as url:
        proxy = CuttableProxy(_pg_target())
        name = url.rsplit("/", 1)[1]
        server = start_server(tmp_path / "data", database_url=f"postgresql://127.0.0.1:{proxy.port}/{name}",
                              extra_env=NO_JOBS)
        try:
            with server.client() as c:
                assert _wait_ready(c, 200).status_code == 200
                proxy.cut()
                r = _wait_ready(c, 503)
                assert r.status_code == 503, r.text
                assert r.json()["failed"] == ["database", "migrations"]
                assert r.json()["checks"] == {"database": "unreachable", "migrations": "unknown", "storage": "ok"}
                assert c.get("/healthz").status_code == 200
                proxy.restore()
                assert _wait_ready(c, 200, deadline=20).status_code == 200
            assert "Traceback" not in server.log()
        finally:
            server.stop()
