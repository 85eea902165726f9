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

from tests.support import ServerProcess, free_port, push_image, sha256, start_server

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
    from tests.e2e.test_database_faults import server_behind_cuttable_proxy

    with server_behind_cuttable_proxy(tmp_path, NO_JOBS) as (server, proxy):
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


# ---- 2-4. start-up checks: one line on stderr, a non-zero exit, nothing bound ----------------

def _serve_fails(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[int, str, float]:
    """Run ``dockyard serve`` that must not start: (exit code, stderr, seconds it took)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    if not any(a == "--data-dir" for a in args):
        args = ("--data-dir", str(tmp_path / "data"), *args)
    if not any(a == "--listen" for a in args):
        args = (*args, "--listen", f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "dockyard", "serve", *args], env={**base, **(env or {})},
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"dockyard serve {' '.join(args)} did not exit: {exc.stderr}")
    return proc.returncode, proc.stderr, time.monotonic() - started


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("dockyard: "), stderr
    return lines[0]


@pytest.mark.parametrize("listen, message", [
    ("127.0.0.1:99999", "port must be a number from 1 to 65535, got '99999'"),
    ("127.0.0.1:0", "port must be a number from 1 to 65535"),
    ("127.0.0.1:http", "port must be a number from 1 to 65535"),
    ("127.0.0.1", "listen must be HOST:PORT"),
    ("::1:5000", "an IPv6 address goes in brackets, e.g. [::1]:5000"),
    ("[127.0.0.1]:5000", "in brackets is not an IPv6 address"),
    ("999.0.0.1:5000", "'999.0.0.1' is not an IP address or host name"),
])
def test_bad_listen_address_is_one_line_and_exit_2(tmp_path, listen, message):
    code, stderr, _ = _serve_fails(tmp_path, "--listen", listen)
    assert code == 2
    assert message in _one_line(stderr)


def test_listen_parsing_keeps_ipv6_and_names():
    from dockyard.config import split_listen

    assert split_listen("[::1]:5000") == ("::1", 5000)
    assert split_listen("127.0.0.1:65535") == ("127.0.0.1", 65535)
    assert split_listen("registry.internal:443") == ("registry.internal", 443)


def test_open_registry_beyond_loopback_is_refused_before_binding(tmp_path):
    port = free_port()
    code, stderr, took = _serve_fails(tmp_path, "--listen", f"0.0.0.0:{port}")
    assert code == 2 and took < 15
    line = _one_line(stderr)
    assert "refusing to listen on 0.0.0.0" in line and "anonymous_role" in line and "auth_htpasswd" in line
    assert not (tmp_path / "data" / "dockyard.db").exists()  # refused before the database was touched


def test_exposure_rule():
    from dockyard.config import load
    from dockyard.server import check_exposure

    for listen in ("127.0.0.1:5000", "127.1.2.3:5000", "[::1]:5000", "localhost:5000"):
        check_exposure(load(env={}, listen=listen))  # loopback: the default admin is fine
    for listen in ("0.0.0.0:5000", "[::]:5000", "10.0.0.5:5000", "registry.internal:5000"):
        with pytest.raises(Exception, match="refusing to listen"):
            check_exposure(load(env={}, listen=listen))
        check_exposure(load(env={}, listen=listen, anonymous_role="admin"))  # open on purpose
        check_exposure(load(env={}, listen=listen, anonymous_role="pull"))
        check_exposure(load(env={}, listen=listen, auth_htpasswd="/etc/dockyard/htpasswd"))
        check_exposure(load(env={}, listen=listen, tls_cert="c.pem", tls_key="k.pem", tls_client_ca="ca.pem"))


def test_unreachable_database_is_one_line_and_hides_the_password(tmp_path):
    url = f"postgresql://dockyard:s3cret-pw@127.0.0.1:{free_port()}/nothing"
    code, stderr, _ = _serve_fails(tmp_path, "--database-url", url)
    assert code == 1
    line = _one_line(stderr)
    assert "cannot use the database" in line and "127.0.0.1" in line and "s3cret-pw" not in line


def test_wrong_database_url_scheme_is_one_line(tmp_path):
    code, stderr, _ = _serve_fails(tmp_path, "--database-url", "mysql://u:p@127.0.0.1/db")
    assert code == 2
    assert "unsupported database URL scheme 'mysql'" in _one_line(stderr)


def test_data_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    code, stderr, _ = _serve_fails(tmp_path, "--data-dir", str(tmp_path / "afile"))
    assert code == 1
    assert f"data_dir {tmp_path / 'afile'} is not a directory" in _one_line(stderr)


def _unwritable_dir(tmp_path: Path) -> Path:
    """A directory this process cannot create files in (as root, chmod is no obstacle: sysfs)."""
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o500)
    for candidate in (ro, Path("/sys/kernel")):
        try:
            (candidate / ".probe").touch()
            (candidate / ".probe").unlink()
        except OSError:
            return candidate
    pytest.skip("no directory here refuses writes to this user")


def test_unwritable_data_dir_is_one_line(tmp_path):
    target = _unwritable_dir(tmp_path)
    code, stderr, _ = _serve_fails(tmp_path, "--data-dir", str(target))
    assert code == 1
    assert f"data_dir {target} is not writable" in _one_line(stderr)


def test_invalid_log_level_is_one_line(tmp_path):
    code, stderr, _ = _serve_fails(tmp_path, env={"DOCKYARD_LOG_LEVEL": "loud"})
    assert code == 2
    assert "unknown log level 'loud'" in _one_line(stderr)


def test_missing_htpasswd_is_one_line(tmp_path):
    missing = tmp_path / "no-such-htpasswd"
    code, stderr, _ = _serve_fails(tmp_path, env={"DOCKYARD_AUTH_HTPASSWD": str(missing)})
    assert code == 2
    assert f"auth_htpasswd {missing}: No such file or directory" in _one_line(stderr)


# ---- 5. TLS and mutual TLS ---------------------------------------------------------------------

def _make_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    files: dict[str, Path] = {}

    def write_key(key, name):
        files[name] = directory / f"{name}.key"
        files[name].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))

    def cert(name, subject, key, issuer, issuer_key, *, ca=False, eku=None, san=None):
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                            critical=True)
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        made = builder.sign(issuer_key, hashes.SHA256())
        files[name] = directory / f"{name}.crt"
        files[name].write_bytes(made.public_bytes(serialization.Encoding.PEM))
        return made

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("ca", "dockyard test CA", ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockyard test CA")]),
              ca_key, ca=True)
    for name, eku, san in (("server", ExtendedKeyUsageOID.SERVER_AUTH,
                            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                           ("client", ExtendedKeyUsageOID.CLIENT_AUTH, None)):
        key = ec.generate_private_key(ec.SECP256R1())
        write_key(key, name + "-key")
        cert(name, f"dockyard test {name}", key, ca.subject, ca_key, eku=eku, san=san)
    return files


def _tls_context(pki: dict[str, Path], *, client_cert: bool = False):
    import ssl

    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    if client_cert:
        ctx.load_cert_chain(pki["client"], pki["client-key"])
    return ctx


def _start_tls(data: Path, env: dict, ctx) -> ServerProcess:
    port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    log_path = data / f"server-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "dockyard", "serve", "--data-dir", str(data),
                             "--listen", f"127.0.0.1:{port}"], stdout=open(log_path, "wb"),
                            stderr=subprocess.STDOUT, env={**base, **NO_JOBS, **env})
    server = ServerProcess(f"https://127.0.0.1:{port}", data, proc, log_path, env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {server.log()}")
        try:
            httpx.get(server.url + "/healthz", verify=ctx, timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not start: {server.log()}")


def test_tls_serves_httpx_and_skopeo_with_the_ca_only(tmp_path):
    from tests.conftest import require_tool
    from tests.e2e.images import build_image_layout
    from tests.e2e.test_skopeo import Skopeo
    from tests.support import push_blob

    pki = _make_pki(tmp_path / "pki")
    ctx = _tls_context(pki)
    server = _start_tls(tmp_path / "data", {"DOCKYARD_TLS_CERT": str(pki["server"]),
                                            "DOCKYARD_TLS_KEY": str(pki["server-key"])}, ctx)
    try:
        assert "listening on https://127.0.0.1:" in server.log()
        with httpx.Client(base_url=server.url, verify=ctx, timeout=60) as c:
            assert c.get("/v2/").status_code == 200
            blob = os.urandom(300_000)
            digest = push_blob(c, "tls/app", blob)
            assert c.get(f"/v2/tls/app/blobs/{digest}").content == blob
        with pytest.raises(httpx.ConnectError):  # not trusted without the CA
            httpx.get(server.url + "/v2/", timeout=5)
        with pytest.raises(httpx.HTTPError):  # and no plain HTTP on the port
            httpx.get(server.url.replace("https://", "http://") + "/v2/", timeout=5).raise_for_status()

        certs = tmp_path / "certs.d"
        certs.mkdir()
        (certs / "ca.crt").write_bytes(pki["ca"].read_bytes())
        skopeo = Skopeo(require_tool("skopeo"), tmp_path / "skopeo-home", server)
        src = build_image_layout(tmp_path / "src", "v1", "tls-skopeo", layer_sizes=(100, 70_000))
        skopeo.run("copy", "--retry-times", "0", "--dest-cert-dir", str(certs), f"oci:{src.root}:v1",
                   skopeo.ref("tls/skopeo", "v1"))
        with httpx.Client(base_url=server.url, verify=ctx, timeout=60) as c:
            r = c.get("/v2/tls/skopeo/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            assert r.status_code == 200 and r.content == src.images[0].manifest_bytes
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_mutual_tls_refuses_a_client_without_a_certificate(tmp_path):
    pki = _make_pki(tmp_path / "pki")
    with_cert = _tls_context(pki, client_cert=True)
    server = _start_tls(tmp_path / "data", {"DOCKYARD_TLS_CERT": str(pki["server"]),
                                            "DOCKYARD_TLS_KEY": str(pki["server-key"]),
                                            "DOCKYARD_TLS_CLIENT_CA": str(pki["ca"])}, with_cert)
    try:
        with httpx.Client(base_url=server.url, verify=with_cert, timeout=30) as c:
            assert c.get("/v2/").status_code == 200
            assert c.get("/readyz").status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url + "/v2/", verify=_tls_context(pki), timeout=10)
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_bad_tls_settings_are_one_line(tmp_path):
    pki = _make_pki(tmp_path / "pki")
    code, stderr, _ = _serve_fails(tmp_path, env={"DOCKYARD_TLS_CERT": str(pki["server"])})
    assert code == 2 and "tls_cert and tls_key go together" in _one_line(stderr)
    code, stderr, _ = _serve_fails(tmp_path, env={"DOCKYARD_TLS_CERT": str(pki["server"]),
                                                  "DOCKYARD_TLS_KEY": str(pki["client-key"])})
    assert code == 2 and "tls_cert" in _one_line(stderr)  # a key that does not match the certificate
    code, stderr, _ = _serve_fails(tmp_path, env={"DOCKYARD_TLS_CERT": str(pki["server"]),
                                                  "DOCKYARD_TLS_KEY": str(pki["server-key"]),
                                                  "DOCKYARD_TLS_CLIENT_CA": str(tmp_path / "nope.pem")})
    assert code == 2 and "tls_client_ca" in _one_line(stderr)


# ---- 6. the request log ------------------------------------------------------------------------

def _traffic(client: httpx.Client, seen: list[httpx.Response]) -> None:
    """A push, pulls, a 404, a HEAD, a probe; every response lands in ``seen``."""
    client.event_hooks["response"] = [lambda r: (r.read(), seen.append(r))]
    digest, manifest, blobs = push_image(client, "log/app", "v1", "requestlog")
    assert client.get("/v2/log/app/manifests/v1").content == manifest
    assert client.head(f"/v2/log/app/blobs/{sha256(blobs[1])}").status_code == 200
    assert client.get(f"/v2/log/app/blobs/{sha256(blobs[1])}").content == blobs[1]
    assert client.get("/v2/log/app/manifests/nope").status_code == 404
    assert client.get("/healthz").status_code == 200
    r = client.get("/v2/", headers={"X-Request-Id": "edge-proxy-42"})
    assert r.headers["X-Request-Id"] == "edge-proxy-42"  # a well-formed id from a proxy is kept
    r = client.get("/v2/", headers={"X-Request-Id": "bad id\twith spaces"})
    assert r.headers["X-Request-Id"] != "bad id\twith spaces" and len(r.headers["X-Request-Id"]) == 32
    assert len({r.headers["X-Request-Id"] for r in seen}) == len(seen)  # every request its own id


def _access_records(server, parse, seen: list[httpx.Response]) -> list[dict]:
    wanted = {r.headers["X-Request-Id"] for r in seen}
    deadline = time.monotonic() + 10
    while True:  # a line is written when its request ends, which may be just after the client saw it
        records = [parse(line) for line in server.log().splitlines() if "dockyard.access" in line]
        if wanted <= {rec["id"] for rec in records} or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def _check_one_line_each(seen: list[httpx.Response], records: list[dict], user: str) -> None:
    by_id: dict[str, list[dict]] = {}
    for rec in records:
        by_id.setdefault(rec["id"], []).append(rec)
    for r in seen:
        lines = by_id.get(r.headers["X-Request-Id"], [])
        assert len(lines) == 1, (r.request.method, r.request.url, lines)
        rec = lines[0]
        assert rec["method"] == r.request.method and rec["path"] == r.request.url.path
        assert int(rec["status"]) == r.status_code
        assert int(rec["bytes"]) == (0 if r.request.method == "HEAD" else len(r.content))
        assert float(rec["ms"]) >= 0
        assert rec["user"] == (user if r.request.url.path.startswith("/v2/") else "-")


def test_request_log_json_one_object_per_line(tmp_path):
    server = start_server(tmp_path / "data", extra_env={**NO_JOBS, "DOCKYARD_LOG_FORMAT": "json"})
    try:
        seen: list[httpx.Response] = []
        with server.client() as c:
            _traffic(c, seen)
        records = _access_records(server, json.loads, seen)
        for line in server.log().splitlines():  # every line of the process, not only the request log
            doc = json.loads(line)
            assert {"time", "level", "logger", "msg"} <= set(doc), line
        assert all(rec["msg"] == "request" and isinstance(rec["status"], int) for rec in records)
        _check_one_line_each(seen, records, user="-")
    finally:
        server.stop()


def test_request_log_text_names_the_user(tmp_path):
    import re

    env = {**NO_JOBS, "DOCKYARD_AUTH_HTPASSWD": str(_htpasswd(tmp_path / "htpasswd")),
           "DOCKYARD_AUTH_ROLES": "alice=admin"}
    server = start_server(tmp_path / "data", extra_env=env)
    try:
        seen: list[httpx.Response] = []
        with server.client(auth=("alice", "alice-pw")) as c:
            _traffic(c, seen)
        parse = lambda line: dict(re.findall(r" (\w+)=(\S+)", line.split(" msg=request", 1)[1]))
        records = _access_records(server, parse, seen)
        _check_one_line_each(seen, records, user="alice")
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_log_format_is_validated(tmp_path):
    code, stderr, _ = _serve_fails(tmp_path, env={"DOCKYARD_LOG_FORMAT": "xml"})
    assert code == 2 and "setting log_format: 'xml' is not one of text, json" in _one_line(stderr)
