"""Database faults on a real server: the database goes away, comes back, turns read-only.

The server reaches PostgreSQL through a small TCP proxy on loopback that the test cuts
(every open connection closed, new ones refused) and restores: the shared PostgreSQL
server itself is never stopped. A fault is a 503 with Retry-After and one log line per
request, never a traceback; the server recovers by itself. A read-only database still
serves pulls.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx
import sqlalchemy as sa

from tests.support import OCI_MANIFEST, PG_URL, postgres_database, \
    push_image, sha256, start_server

NO_JOBS = {"DOCKYARD_GC_ENABLED": "false", "DOCKYARD_SCRUB_ENABLED": "false", "DOCKYARD_PULL_FLUSH_INTERVAL": "1s"}


class CuttableProxy:
    """Forwards 127.0.0.1:port to PostgreSQL until cut; ``restore`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:
                client.close()
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _pg_target() -> tuple[str, int]:
    url = sa.engine.make_url(PG_URL)
    return url.host or "127.0.0.1", url.port or 5432


def _assert_unavailable(r: httpx.Response, head: bool = False) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert int(r.headers["Retry-After"]) > 0
    if not head:
        assert r.json()["errors"][0]["code"] == "UNAVAILABLE"


@contextmanager
def server_behind_cuttable_proxy(tmp_path, extra_env: dict):
    """A real server on a fresh PostgreSQL database reached through a proxy the test can cut."""
    with postgres_database() as url:
        proxy = CuttableProxy(_pg_target())
        name = url.rsplit("/", 1)[1]
        server = start_server(tmp_path / "data", database_url=f"postgresql://127.0.0.1:{proxy.port}/{name}",
                              extra_env=extra_env)
        try:
            yield server, proxy
        finally:
            server.stop()


def test_database_down_is_503_one_line_and_recovers(tmp_path):
    with server_behind_cuttable_proxy(tmp_path, NO_JOBS) as (server, proxy):
        with server.client() as c:
            digest, manifest, blobs = push_image(c, "team/app", "v1", "before")
            assert c.get("/v2/team/app/manifests/v1").content == manifest

        proxy.cut()
        failing = 0
        with server.client() as c:
            for _ in range(3):
                _assert_unavailable(c.get("/v2/team/app/manifests/v1"))
                _assert_unavailable(c.head("/v2/team/app/manifests/v1"), head=True)
                _assert_unavailable(c.get(f"/v2/team/app/blobs/{sha256(blobs[0])}"))
                _assert_unavailable(c.put(f"/v2/team/app/manifests/{digest}", content=manifest,
                                          headers={"Content-Type": OCI_MANIFEST}))
                _assert_unavailable(c.post("/v2/team/app/blobs/uploads/"))
                _assert_unavailable(c.get("/v2/_catalog"))
                failing += 6
        time.sleep(1.5)  # a pull-time flush runs against the dead database too
        log = server.log()
        assert "Traceback" not in log
        assert log.count("503 UNAVAILABLE") == failing  # one line per failed request

        proxy.restore()
        deadline = time.monotonic() + 20
        with server.client() as c:
            while c.get("/v2/team/app/manifests/v1").status_code != 200:
                assert time.monotonic() < deadline, "the server did not recover"
                time.sleep(0.2)
            assert c.get("/v2/team/app/manifests/v1").content == manifest
            assert c.get(f"/v2/team/app/blobs/{sha256(blobs[1])}").content == blobs[1]
            digest2, manifest2, blobs2 = push_image(c, "team/app", "v2", "after")
            assert c.get("/v2/team/app/manifests/v2").content == manifest2
        assert "Traceback" not in server.log()
        proxy.cut()


def _set_read_only(url: str, on: bool) -> None:
    name = url.rsplit("/", 1)[1]
    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                              isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}')
    engine.dispose()


def test_pulls_need_no_writable_database(tmp_path):
    """Pulls succeed, byte-exact, while every write fails: the link review a blob read would
    postpone (gc_delay is short, so the postponement is due) and the pull times are best effort."""
    env = {**NO_JOBS, "DOCKYARD_GC_DELAY": "2s"}
    with postgres_database() as url:
        server = start_server(tmp_path / "data", database_url=url, extra_env=env)
        try:
            with server.client() as c:
                digest, manifest, blobs = push_image(c, "team/app", "v1", "ro")
        finally:
            server.stop()
        _set_read_only(url, True)
        time.sleep(1.5)  # past gc_delay / 2: every blob read wants to postpone its link review
        server = start_server(tmp_path / "data", database_url=url, extra_env=env)
        try:
            with server.client() as c:
                for _ in range(3):
                    r = c.get("/v2/team/app/manifests/v1")
                    assert r.status_code == 200 and r.content == manifest
                    assert c.head(f"/v2/team/app/manifests/{digest}").status_code == 200
                    for b in blobs:
                        assert c.head(f"/v2/team/app/blobs/{sha256(b)}").status_code == 200
                        r = c.get(f"/v2/team/app/blobs/{sha256(b)}")
                        assert r.status_code == 200 and r.content == b
                # a push needs the database: a 503, not a 500
                _assert_unavailable(c.post("/v2/team/app/blobs/uploads/"))
            time.sleep(1.5)  # a pull-time flush fails meanwhile
            log = server.log()
            assert "Traceback" not in log
            assert log.count("cannot postpone link reviews") == 1  # throttled: one line per interval
            assert log.count("cannot record") == 1
        finally:
            server.stop()
            _set_read_only(url, False)
