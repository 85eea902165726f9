"""``/metrics`` of a real ``dockyard serve --workers 2``: one registry for all workers.

Real traffic over fresh connections (so both workers answer), then scrapes on the main port
(with credentials; either worker answers) and on ``metrics_listen`` (the parent, none needed):
the counts are exact whichever process answers, bytes in and out match what was pushed and
pulled, storage usage matches what is stored, every type is right, and every metric the
Grafana dashboard (deploy/grafana/dockyard.json) queries is in the output. Then both workers
are killed (SIGKILL) while one holds a request in flight: the server still counts what the
dead ones answered, and their in-flight gauge is gone.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import bcrypt
import httpx
import pytest
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from dockyard.metrics import HELP
from tests.support import REPO_ROOT, free_port, push_image, sha256, start_server

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dockyard.json"
CATALOG = "/v2/_catalog"
ROUNDS = 16


# metrics of features this test's server has not configured (they appear on first use)
NOT_RUN_HERE = ("dockyard_mirror_", "dockyard_cache_", "dockyard_host", "dockyard_event", "dockyard_quota")


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(text: str, sample: str, **labels) -> float:
    """Sum of the samples named ``sample`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def wait_until(scrape, check, what: str, timeout: float = 10.0) -> str:
    """Scrape until ``check(text)`` holds (a request's metrics are recorded just after its last
    byte left, so a scrape right after may miss it); the last text when it never does."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape()
        if check(text) or time.monotonic() > deadline:
            assert check(text), f"{what}: not reached in {timeout} s"
            return text
        time.sleep(0.1)


def worker_counts(directory: Path, pid: int, route: str) -> float:
    """What one worker alone counted for ``route``: its own files, read by prometheus_client."""
    alone = directory.parent / f"only-{pid}"
    alone.mkdir(exist_ok=True)
    for f in directory.glob(f"*_{pid}.db"):
        shutil.copy(f, alone / f.name)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(alone))
    total = sum(s.value for fam in registry.collect() for s in fam.samples
                if s.name == "dockyard_http_requests_total" and s.labels.get("route") == route)
    shutil.rmtree(alone)
    return total


def children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def test_one_registry_for_all_workers(tmp_path):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt.hashpw(b'alice-pw', bcrypt.gensalt(rounds=4)).decode()}\n")
    metrics_port = free_port()
    conf = tmp_path / "dockyard.toml"
    conf.write_text(f"""
auth_htpasswd = "{htpasswd}"
metrics_listen = "127.0.0.1:{metrics_port}"
gc_interval = "2s"
wakeup_time = "2s"
[auth_roles]
alice = "admin"
""")
    data = tmp_path / "data"
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = data / f"metrics-{gone.pid}"  # what a killed serve left: removed at the next start
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"\0" * 8)
    server = start_server(data, args=["--config", str(conf), "--workers", "2"])
    auth = ("alice", "alice-pw")
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        directory = data / f"metrics-{server.proc.pid}"
        assert directory.is_dir() and not stale.exists(), list(data.iterdir())

        # ---- traffic: pushes, pulls, listings, each on a fresh connection ------------------
        pushed: dict[str, bytes] = {}
        for n in range(2):
            with httpx.Client(base_url=server.url, auth=auth, timeout=30) as c:
                _, manifest, blobs = push_image(c, f"team/app{n}", "v1", f"metrics-{n}")
                pushed.update({sha256(b): b for b in blobs})
        pulled = 0  # body bytes of every answer on the blob route, 404 envelopes too
        for n, (digest, blob) in enumerate(pushed.items()):
            r = httpx.get(f"{server.url}/v2/team/app{n % 2}/blobs/{digest}", auth=auth)
            if r.status_code == 200:  # a blob lives in the repository it was pushed to
                assert r.content == blob
            pulled += len(r.content)
        assert pulled
        served = 0
        while True:
            with httpx.Client(auth=auth, headers={"Connection": "close"}) as fresh:  # a connection per request
                for _ in range(ROUNDS):
                    assert fresh.get(server.url + CATALOG).status_code == 200
            served += ROUNDS
            pids = {int(p.name.rsplit("_", 1)[1][:-3]) for p in directory.glob("counter_*.db")}
            per_worker = {pid: worker_counts(directory, pid, CATALOG) for pid in pids}
            if sum(1 for c in per_worker.values() if c) >= 2 or served >= 4 * ROUNDS:
                break
        assert sum(1 for c in per_worker.values() if c) >= 2, f"one worker answered everything: {per_worker}"

        # ---- the main port: credentials needed; any worker's scrape counts every worker -----
        assert httpx.get(server.url + "/metrics").status_code == 401

        scraper = httpx.Client(auth=auth, headers={"Connection": "close"})

        def scrape_main() -> str:
            r = scraper.get(server.url + "/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
            return r.text

        def scrape_listener() -> str:
            r = scraper.get(metrics_url, auth=None)  # no credentials
            assert r.status_code == 200, r.text
            return r.text

        def catalog_count(text):
            return value(text, "dockyard_http_requests_total", route=CATALOG, status="200", method="GET")

        for scrape in (scrape_main, scrape_listener):
            for _ in range(6):  # fresh connections: both workers answer some of them
                text = wait_until(scrape, lambda t: catalog_count(t) == served, "catalog requests counted")
                assert sum(per_worker.values()) == served
        text = wait_until(scrape_main, lambda t: value(t, "dockyard_gc_run_seconds_count") >= 2
                          and value(t, "dockyard_scrub_runs_total") >= 1, "background runs counted", timeout=20)

        # types and names: counters end in _total, every HELP entry has its declared type
        found = families(text)
        kinds = {"dockyard_http_requests": "counter", "dockyard_http_received_bytes": "counter",
                 "dockyard_http_sent_bytes": "counter", "dockyard_http_request_duration_seconds": "histogram",
                 "dockyard_http_requests_in_flight": "gauge", "dockyard_gc_run_seconds": "histogram",
                 "dockyard_gc_backlog": "gauge", "dockyard_gc_runs": "counter", "dockyard_scrub_runs": "counter",
                 "dockyard_storage_bytes": "gauge", "dockyard_repository_bytes": "gauge",
                 "dockyard_upload_sessions": "gauge"}
        for name, kind in kinds.items():
            assert name in found and found[name].type == kind, (name, found.get(name))
        for name, entry in HELP.items():
            if name.startswith(NOT_RUN_HERE):  # features this server does not use: no series yet
                continue
            family = name[: -len("_total")] if entry[0] == "counter" else name
            assert family in found, name
            assert found[family].type == entry[0].partition(":")[0], name
        assert not [n for n in found if "{name:path}" in n]
        routes = {s.labels["route"] for s in found["dockyard_http_requests"].samples}
        assert routes >= {"/v2/", CATALOG, "/v2/{name}/blobs/uploads/", "/v2/{name}/manifests/{reference}",
                          "/v2/{name}/blobs/{digest}"}, routes
        assert not any("team/" in r for r in routes)  # templates, not raw paths

        # bytes in and out, storage usage
        blobs_in = sum(len(b) for b in pushed.values())
        assert value(text, "dockyard_http_received_bytes_total", route="/v2/{name}/blobs/uploads/") == blobs_in
        assert value(text, "dockyard_http_sent_bytes_total", route="/v2/{name}/blobs/{digest}", method="GET") == pulled
        assert value(text, "dockyard_storage_blobs") == len(pushed)
        assert value(text, "dockyard_storage_bytes") == blobs_in
        assert value(text, "dockyard_repositories") == 2
        assert value(text, "dockyard_upload_sessions") == 0
        per_repo = {s.labels["repository"]: s.value for s in found["dockyard_repository_bytes"].samples}
        assert set(per_repo) == {"team/app0", "team/app1"} and sum(per_repo.values()) == blobs_in, per_repo
        assert value(text, "dockyard_http_request_duration_seconds_count", route=CATALOG) == served

        # every metric the dashboard queries exists
        exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
        used = {m for e in exprs for m in re.findall(r"\bdockyard_[a-z_]+\b", e)}
        names = {s.name for fam in found.values() for s in fam.samples}
        assert used and not used - names, sorted(used - names)

        # ---- kill both workers, one with a request in flight --------------------------------
        digest = "sha256:" + "0" * 64
        slow = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
        basic = base64.b64encode(b"alice:alice-pw").decode()
        slow.sendall(f"POST /v2/team/slow/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Basic {basic}\r\nContent-Length: 100000\r\n\r\n".encode() + b"x" * 10)
        wait_until(scrape_listener, lambda t: value(t, "dockyard_http_requests_in_flight") == 1, "request in flight")
        workers = {int(p.name.rsplit("_", 1)[1][:-3]) for p in directory.glob("*_*.db")} & children(server.proc.pid)
        assert len(workers) == 2, workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        slow.close()
        # the parent answers while uvicorn starts new workers: their live gauges go, their totals stay
        text = wait_until(scrape_listener, lambda t: value(t, "dockyard_http_requests_in_flight") == 0,
                          "the dead worker's request no longer in flight")
        assert catalog_count(text) == served
        assert not [p for pid in workers for p in directory.glob(f"gauge_live*_{pid}.db")]
        assert "Traceback" not in server.log()
        server.proc.send_signal(signal.SIGTERM)  # a clean stop (it may be starting new workers: give it time)
        assert server.proc.wait(90) == 0
        assert not directory.exists()  # serve removes its metrics directory when it stops
    finally:
        server.stop()


def test_metrics_listen_that_cannot_be_used_is_one_line(tmp_path):
    from dockyard import config
    from tests.e2e.test_operability import _serve_fails

    with pytest.raises(config.ConfigError, match="setting metrics_listen: port must be a number from 1 to 65535"):
        config.load(env={"DOCKYARD_METRICS_LISTEN": "127.0.0.1:99999"})
    assert config.load(env={}).metrics_listen == ""  # off by default
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, stderr, _ = _serve_fails(tmp_path, env={"DOCKYARD_METRICS_LISTEN": f"127.0.0.1:{port}"})
    assert code == 1 and f"metrics_listen 127.0.0.1:{port}: " in stderr and "Traceback" not in stderr, stderr
