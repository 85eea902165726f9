"""Lifecycle commands against a running server (``--server URL``), and ``dockyard login``.

The admin API answers the same report dicts the local commands build, and the CLI prints
both through the same renderers, so ``dockyard gc --server URL`` reads like ``dockyard gc``
run beside the database. Credentials, first found wins: ``DOCKYARD_TOKEN`` (a bearer
token), ``DOCKYARD_USER`` + ``DOCKYARD_PASSWORD`` (basic), the token ``dockyard login``
stored in ``~/.config/dockyard/tokens.json`` (``$XDG_CONFIG_HOME``; mode 0600) for that server.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import time
from pathlib import Path

from dockyard import config as config_mod
from dockyard.cli.common import examples


class RemoteError(Exception):
    """The server refused or could not be reached; the message is a sentence for the operator."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def tokens_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "dockyard" / "tokens.json"


def _stored() -> dict:
    try:
        return json.loads(tokens_path().read_text())
    except (OSError, ValueError):
        return {}


def normalize(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise config_mod.ConfigError(f"--server {url!r} must be a URL such as https://registry.example.com")
    return url


def describe_error(response) -> str:
    """An error answer as a sentence: 'HTTP 403 DENIED: requires the admin role (user: bob)'."""
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        errors = []
    if not errors:
        return f"HTTP {response.status_code}: {response.text.strip()[:200] or response.reason_phrase}"
    parts = []
    for e in errors:
        detail = e.get("detail")
        text = f"{e.get('code')}: {e.get('message')}"
        if isinstance(detail, dict) and detail:
            text += " (" + "; ".join(f"{k}: {_plain(v)}" for k, v in detail.items()) + ")"
        elif detail:
            text += f" ({_plain(detail)})"
        parts.append(text)
    return f"HTTP {response.status_code} " + "; ".join(parts)


def _plain(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


class Remote:
    """The admin API of one server."""

    def __init__(self, server: str, timeout: float = 3600.0):
        import httpx

        logging.getLogger("httpx").setLevel(logging.WARNING)  # a request line per call is noise here
        self.server = normalize(server)
        headers, auth = {}, None
        if os.environ.get("DOCKYARD_TOKEN"):
            headers["Authorization"] = f"Bearer {os.environ['DOCKYARD_TOKEN']}"
        elif os.environ.get("DOCKYARD_USER"):
            auth = (os.environ["DOCKYARD_USER"], os.environ.get("DOCKYARD_PASSWORD", ""))
        else:
            entry = _stored().get(self.server)
            if entry:
                if entry.get("expires_at", 0) < time.time():
                    raise RemoteError(f"the token dockyard login stored for {self.server} expired at "
                                      f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(entry['expires_at']))}; "
                                      "log in again (its lifetime is the server's token_ttl)")
                headers["Authorization"] = f"Bearer {entry['token']}"
        self.client = httpx.Client(base_url=self.server, headers=headers, auth=auth, timeout=timeout)

    def call(self, method: str, path: str, params: dict | None = None, content: str | None = None) -> dict:
        import httpx

        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            r = self.client.request(method, path, params=params, content=content)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach {self.server}: {exc}", exit_code=75) from exc
        if r.status_code == 401:
            raise RemoteError(f"{self.server} wants credentials ({describe_error(r)}): set DOCKYARD_USER and "
                              "DOCKYARD_PASSWORD, or DOCKYARD_TOKEN, or run dockyard login --server "
                              f"{self.server}")
        if r.status_code >= 400:
            raise RemoteError(f"{self.server} refused {method} {path}: {describe_error(r)}",
                              exit_code=75 if r.status_code in (502, 503, 504) else 1)
        return r.json() if r.content else {}


def flag(value: bool) -> str:
    return "true" if value else "false"


# ---- dockyard login ------------------------------------------------------------------

def cmd_login(args: argparse.Namespace) -> int:
    import httpx

    server = normalize(args.server)
    user = args.username or os.environ.get("DOCKYARD_USER") or input("username: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = os.environ.get("DOCKYARD_PASSWORD") or getpass.getpass("password: ")
    try:
        r = httpx.get(server + "/auth/token", params={"service": "dockyard"}, auth=(user, password), timeout=60)
    except httpx.HTTPError as exc:
        print(f"dockyard: cannot reach {server}: {exc}", file=sys.stderr)
        return 75
    if r.status_code != 200:
        print(f"dockyard: {server} did not log {user} in: {describe_error(r)}", file=sys.stderr)
        return 1
    answer = r.json()
    stored = _stored()
    stored[server] = {"token": answer["token"], "user": user,
                      "expires_at": time.time() + float(answer.get("expires_in", 60))}
    path = tokens_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)  # also when an older file of another mode was left behind
        json.dump(stored, fh)
    os.replace(path.with_suffix(".tmp"), path)
    print(f"Logged in to {server} as {user}; the token is stored in {path} and is valid for "
          f"{int(answer.get('expires_in', 0))} seconds (the server's token_ttl).")
    return 0


def register(sub) -> None:
    login = sub.add_parser("login", help="log in to a running server for the --server commands",
                           description="Stores a bearer token for --server commands (gc, fsck, trash, "
                                       "restore, prune) in ~/.config/dockyard/tokens.json. The password comes "
                                       "from --password-stdin, DOCKYARD_PASSWORD or a prompt.",
                           **examples("dockyard login --server https://registry.example.com --username ops",
                                      "echo \"$PASS\" | dockyard login --server https://registry.example.com "
                                      "--username ops --password-stdin",
                                      "dockyard gc --status --server https://registry.example.com"))
    login.add_argument("--server", required=True, help="the registry's URL, e.g. https://registry.example.com")
    login.add_argument("--username", help="default: DOCKYARD_USER, else asked")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.set_defaults(func=cmd_login)
