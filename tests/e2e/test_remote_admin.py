"""The lifecycle commands against a running server (``--server URL``, issue 13): the CLI talks
to a real ``dockyard serve`` through the admin API and prints what the same command run
beside the database prints."""

import json
import os
import re
import stat

import bcrypt
import httpx
import pytest

from dockyard.cli import main
from tests.support import push_image, start_server

USERS = {"root": "admin", "bob": "push"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("remote-admin")
    htpasswd = data / "htpasswd"
    htpasswd.write_text("".join(f"{u}:{bcrypt.hashpw(f'{u}-pw'.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                                for u in USERS))
    server = start_server(data, extra_env={
        "DOCKYARD_GC_ENABLED": "false", "DOCKYARD_SCRUB_ENABLED": "false", "DOCKYARD_AUTH_HTPASSWD": str(htpasswd),
        "DOCKYARD_AUTH_ROLES": ",".join(f"{u}={r}" for u, r in USERS.items())})
    with httpx.Client(base_url=server.url, auth=("root", "root-pw"), timeout=30) as c:
        for i in range(3):
            push_image(c, "team/app", f"v{i}", f"remote-{i}")
        gone, _, _ = push_image(c, "team/old", "v1", "remote-old")
        assert c.delete(f"/v2/team/old/manifests/{gone}").status_code == 202
    try:
        yield server, gone
    finally:
        server.stop()


@pytest.fixture
def cli(served, monkeypatch, capsys, tmp_path):
    server, _ = served
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("DOCKYARD_USER", "DOCKYARD_PASSWORD", "DOCKYARD_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    def run(*args, remote=True, user="root"):
        monkeypatch.delenv("DOCKYARD_USER", raising=False)
        if user:
            monkeypatch.setenv("DOCKYARD_USER", user)
            monkeypatch.setenv("DOCKYARD_PASSWORD", f"{user}-pw")
        where = ["--server", server.url] if remote else ["--data-dir", str(server.data_dir)]
        code = main([*args, *where])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _same(cli, *args):
    local = cli(*args, remote=False)
    over_http = cli(*args)
    assert over_http[0] == local[0] == 0, (local, over_http)
    ages = re.compile(r"pushed \d+[smhd] ago")  # a second may pass between the two
    assert ages.sub("pushed N ago", over_http[1]) == ages.sub("pushed N ago", local[1])
    return over_http[1]


def test_trash_list_fsck_prune_and_gc_status_print_the_same(cli):
    assert "team/old@sha256:" in _same(cli, "trash", "list")
    assert "storage objects scanned" in _same(cli, "fsck", "--no-requeue")
    out = _same(cli, "prune", "--keep-recent", "1")
    assert "team/app: keep 1, would delete 2" in out and "(dry run; --confirm to delete)" in out
    local, remote = (json.loads(cli("prune", "--keep-recent", "1", "--output", "json", remote=r)[1])
                     for r in (False, True))
    local.pop("duration_seconds"), remote.pop("duration_seconds")
    ages = re.compile(r"pushed \d+[smhd] ago")
    assert ages.sub("", json.dumps(remote)) == ages.sub("", json.dumps(local)) and remote["totals"]["deleted"] == 2
    assert "queue" in _same(cli, "gc", "--status")


def test_gc_dry_run_reports_the_same(cli):
    def strip(text):
        doc = json.loads(text)
        doc.pop("duration_seconds")
        for w in doc["waiting"].values():
            w.pop("first_due_in_seconds")
        return doc

    local = cli("gc", "--dry-run", "--output", "json", remote=False)
    remote = cli("gc", "--dry-run", "--output", "json")
    assert local[0] == remote[0] == 0
    assert strip(remote[1]) == strip(local[1])
    assert strip(remote[1])["grace"] == {"seconds": 3600.0, "from": "gc_delay"}
    code, out, _ = cli("gc", "--dry-run")
    assert code == 0 and out.startswith("gc would reclaim in")


def test_purge_dry_run_and_restore_by_short_digest(cli, served):
    _, gone = served
    short = f"team/old@{gone[:19]}"
    local = cli("trash", "purge", short, "--dry-run", remote=False)
    remote = cli("trash", "purge", short, "--dry-run")
    assert remote[:2] == local[:2] and "purging it would free" in remote[1]
    code, out, err = cli("restore", short)
    assert code == 0, err
    assert out.strip() == f"restored team/old@{gone} (1 manifests); tags: v1"
    code, _, err = cli("restore", short)  # no longer in the trash
    assert code == 1 and "image is not deleted" in err and "{" not in err


def test_refusals_read_as_sentences(cli, served):
    code, _, err = cli("gc", user="bob")
    assert code == 1
    assert "refused POST /admin/v1/gc: HTTP 403 DENIED: requires the admin role (user: bob)" in err
    code, _, err = cli("gc", "--status", user=None)
    assert code == 1 and "wants credentials" in err and "dockyard login --server" in err
    code, _, err = cli("gc", "--grace", "600")
    assert code == 1 and "grace '600' needs a unit" in err
    code, _, err = cli("gc", "--grace", "1m")
    assert code == 1 and "below 5 minutes" in err
    code, _, err = cli("fsck", "--delete")
    assert code == 2 and "the admin API reports only" in err
    code, _, err = cli("trash", "list", "--server", "http://127.0.0.1:9", remote=False)
    assert code == 75 and "cannot reach http://127.0.0.1:9" in err


def test_login_stores_a_private_token(cli, served, monkeypatch, tmp_path):
    server, _ = served
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("root-pw\n"))
    code, out, err = cli("login", "--username", "root", "--password-stdin", user=None)
    assert code == 0, err
    assert out.startswith(f"Logged in to {server.url} as root")
    path = tmp_path / "config" / "dockyard" / "tokens.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    code, out, err = cli("gc", "--status", user=None)  # no credentials in the environment: the stored token
    assert code == 0 and "queue" in out, err


def test_prune_confirm_and_gc_run_over_http(cli):
    """Last in this module: it deletes. The local command then sees what the remote one did."""
    code, out, err = cli("prune", "--keep-recent", "1", "--repository", "team/app", "--confirm")
    assert code == 0, err
    assert "team/app: keep 1, deleted 2" in out and "dry run" not in out
    code, out, _ = cli("trash", "list", remote=False)
    assert out.count("team/app@sha256:") == 2
    code, out, err = cli("gc")
    assert code == 0, err
    assert out.startswith("gc reclaimed in") and "still in their grace period (gc_delay 1h)" in out
