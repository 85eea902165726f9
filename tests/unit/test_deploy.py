"""The deployment examples in deploy/ are valid: every TOML file loads through config.load
with the example EnvironmentFile and passes serve's start-up checks, the replicas agree on
what they must share, the load balancer sends to exactly those replicas, and the systemd unit
verifies (``systemd-analyze verify`` when installed) and has its hardening."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dockyard import config
from dockyard.server import check_exposure, preflight

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "systemd" / "dockyard.service"
ENV_FILE = DEPLOY / "systemd" / "dockyard.env"
REPLICAS = sorted((DEPLOY / "replicas").glob("*.toml"))


def env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile reads them (comments and blanks skipped)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), line
            out[key] = value
    return out


def unit_sections(text: str) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, sep, value = line.partition("=")
        assert current and sep and re.fullmatch(r"[A-Za-z]+", key), line
        sections[current].append((key, value))
    return sections


def load(path: Path) -> config.Config:
    return config.load(path, env=env_file(ENV_FILE.read_text()))


def test_every_example_configuration_loads_and_validates():
    files = sorted(DEPLOY.rglob("*.toml"))
    assert DEPLOY / "single-node.toml" in files and len(REPLICAS) == 3
    for path in files:
        cfg = load(path)
        check_exposure(cfg)  # beyond loopback with authentication
        assert cfg.auth_htpasswd.startswith("/etc/dockyard/") and cfg.log_format == "json", path
        assert cfg.token_secret and cfg.metrics_listen, path  # shared secret from the EnvironmentFile


def test_single_node_passes_the_start_up_checks(tmp_path):
    """The single-node file with its paths moved under tmp_path and real files there: serve's
    preflight (exposure, htpasswd, TLS certificate and key that load and match, directories)."""
    from tests.e2e.test_operability import _make_pki

    pki = _make_pki(tmp_path / "tls")
    (tmp_path / "htpasswd").write_text("ops:$2b$04$abcdefghijklmnopqrstuu6sZ0W8A2WzWd2mJHWX7v8n5gqZ2aWmS\n")
    text = (DEPLOY / "single-node.toml").read_text()
    text = (text.replace("/etc/dockyard/tls/registry.crt", str(pki["server"]))
            .replace("/etc/dockyard/tls/registry.key", str(pki["server-key"]))
            .replace("/etc/dockyard/htpasswd", str(tmp_path / "htpasswd"))
            .replace("/var/lib/dockyard", str(tmp_path / "data")))
    values = "\n".join(line.split("#")[0] for line in text.splitlines())
    assert "/etc/" not in values and "/var/" not in values
    (tmp_path / "node.toml").write_text(text)
    cfg = load(tmp_path / "node.toml")
    preflight(cfg)
    assert cfg.tls_cert and cfg.retention["nightly"].schedule == 86400 and cfg.scrub_time == 7 * 86400


def test_replicas_share_what_they_must_and_the_load_balancer_knows_them():
    cfgs = [load(p) for p in REPLICAS]
    for field in ("database_url", "storage", "s3_bucket", "s3_endpoint_url", "s3_prefix", "token_secret",
                  "auth_htpasswd", "auth_roles", "public_url", "gc_delay", "scrub_time", "trusted_proxies"):
        assert len({repr(getattr(c, field)) for c in cfgs}) == 1, field
    assert cfgs[0].database_url.startswith("postgresql://") and cfgs[0].storage == "s3"
    listens = [c.listen for c in cfgs]
    assert len(set(listens)) == 3
    haproxy = (DEPLOY / "replicas" / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s*server\s+\S+\s+(\S+)\s+check\b", haproxy, re.M)
    assert sorted(servers) == sorted(listens)
    assert "uri /readyz" in haproxy and "option forwardfor" in haproxy
    balancers = set(re.findall(r"\d+\.\d+\.\d+\.\d+", " ".join(cfgs[0].trusted_proxies)))
    assert balancers and not balancers & {h.split(":")[0] for h in listens}


def test_systemd_unit_has_its_hardening_and_runs_serve_with_the_documented_files():
    sections = unit_sections(UNIT.read_text())
    assert {"Unit", "Service", "Install"} <= set(sections)
    service = dict(sections["Service"])
    assert service["EnvironmentFile"].lstrip("-") == "/etc/dockyard/dockyard.env"
    assert re.fullmatch(r"/\S+/dockyard serve --config /etc/dockyard/dockyard\.toml( .*)?", service["ExecStart"])
    assert service["User"] == "dockyard" and service["StateDirectory"] == "dockyard"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
                       "RestrictSUIDSGID": "yes", "ProtectKernelTunables": "yes",
                       "SystemCallArchitectures": "native", "RestartPreventExitStatus": "2"}.items():
        assert service.get(key) == value, key
    assert dict(sections["Install"])["WantedBy"] == "multi-user.target"


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the unit's sections and keys are checked above")
    # verify wants ExecStart's program to exist: point it at this checkout's entry point
    program = shutil.which("dockyard") or shutil.which("true")
    unit = tmp_path / "dockyard.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={program}", UNIT.read_text(), flags=re.M))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (r.stdout + r.stderr).splitlines() if "dockyard.service" in line]
    assert r.returncode == 0 and not complaints, r.stdout + r.stderr
