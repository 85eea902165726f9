"""The htpasswd file of a running ``dockyard serve --workers 2`` is re-read when it changes:
a user added to the file logs in without a restart, a removed user and an old password stop
working (the password cache is emptied), in every worker."""

from __future__ import annotations

import time

import bcrypt
import httpx

from tests.support import start_server

CHECK = 1.0  # auth.HTPASSWD_CHECK: how long a worker may still answer from the file it read before


def _line(user: str, password: str) -> str:
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"


_HTTP = httpx.Client(timeout=30, headers={"Connection": "close"})  # a fresh connection per request


def _status(url: str, user: str, password: str, path: str = "/v2/") -> int:
    """GET ``path`` as ``user`` on a fresh connection (so both workers answer some)."""
    return _HTTP.get(url + path, auth=(user, password)).status_code


def test_users_added_removed_and_changed_without_restart(tmp_path):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(_line("alice", "alice-pw"))
    server = start_server(tmp_path / "data", args=["--workers", "2"],
                          extra_env={"DOCKYARD_AUTH_HTPASSWD": str(htpasswd), "DOCKYARD_GC_ENABLED": "false",
                                     "DOCKYARD_SCRUB_ENABLED": "false"})
    try:
        for _ in range(4):  # every worker has alice cached now
            assert _status(server.url, "alice", "alice-pw") == 200
        assert _status(server.url, "bob", "bob-pw") == 401  # one failure: far from the lockout

        # add bob by appending (as `htpasswd -B FILE bob` does)
        with htpasswd.open("a") as fh:
            fh.write(_line("bob", "bob-pw"))
        time.sleep(CHECK + 0.2)
        for _ in range(6):
            assert _status(server.url, "bob", "bob-pw") == 200
            assert _status(server.url, "bob", "bob-pw", "/auth/token") == 200
        assert _status(server.url, "alice", "alice-pw") == 200

        # replace the file atomically: alice gets a new password, bob is removed
        new = tmp_path / "htpasswd.new"
        new.write_text(_line("alice", "alice-new"))
        new.replace(htpasswd)
        time.sleep(CHECK + 0.2)
        for _ in range(4):
            assert _status(server.url, "alice", "alice-new") == 200
        assert _status(server.url, "alice", "alice-pw") == 401  # the cached old password is gone
        assert _status(server.url, "bob", "bob-pw") == 401
        log = server.log()
        assert "re-read: 2 users" in log and "re-read: 1 users" in log, log[-3000:]
        assert "Traceback" not in log
    finally:
        server.stop()
