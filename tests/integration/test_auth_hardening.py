"""Authentication under attack, on real server processes (issue 10, "Authentication").

Clients pick their source address on the loopback network (127.0.0.0/8 all reaches the
server), so one test process plays a legitimate client, a botnet of guessers with a fresh
address per request, a single persistent guesser, and a reverse proxy.
"""

from __future__ import annotations

import os
import random
import secrets
import stat
import statistics
import sys
import threading
import time
from collections import Counter

import bcrypt
import httpx
import pytest

from dockyard.api.auth import Authenticator, FailureThrottle
from dockyard.config import ConfigError, load
from tests.support import start_server

COST = 12  # ~0.2 s per bcrypt here: the cost real htpasswd files use


def htpasswd(path, users: dict[str, str], rounds: int) -> str:
    path.write_text("".join(
        f"{u}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=rounds)).decode().replace('$2b$', '$2y$')}\n"
        for u, pw in users.items()))
    return str(path)


def fresh_address() -> str:
    """A loopback source address of its own: a guesser per request, as in a distributed attack."""
    return f"127.{random.randint(100, 199)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def client_from(address: str, base_url: str, **kw) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=60, transport=httpx.HTTPTransport(local_address=address), **kw)


def get_from(address: str, url: str, **kw) -> httpx.Response:
    with httpx.Client(timeout=60, transport=httpx.HTTPTransport(local_address=address)) as c:
        return c.get(url, **kw)


def realm(response: httpx.Response) -> str:
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="'), challenge
    return challenge.split('"')[1]


@pytest.fixture(scope="module")
def hard_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("auth-hard")
    proc = start_server(data, extra_env={
        "DOCKYARD_AUTH_HTPASSWD": htpasswd(data / "htpasswd", {"alice": "alice-pw", "bob": "bob-pw"}, COST),
    })
    yield proc
    proc.stop()


# ---- 1. password checks off the event loop, bounded, throttled per address -----------

def test_wrong_passwords_do_not_slow_down_a_cached_login(hard_server):
    url = hard_server.url + "/v2/"
    legit = client_from("127.0.0.2", hard_server.url, auth=("alice", "alice-pw"))
    assert legit.get("/v2/").status_code == 200  # verified once; later requests hit the cache
    stop = threading.Event()
    answered: Counter = Counter()

    def guess():
        while not stop.is_set():
            answered[get_from(fresh_address(), url, auth=("alice", secrets.token_hex(6))).status_code] += 1

    guessers = [threading.Thread(target=guess) for _ in range(4)]
    for t in guessers:
        t.start()
    try:
        time.sleep(0.5)
        latencies = []
        for _ in range(20):
            t0 = time.perf_counter()
            r = legit.get("/v2/")
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200
            time.sleep(0.05)
    finally:
        stop.set()
        for t in guessers:
            t.join()
        legit.close()
    assert sum(answered.values()) >= 4 and set(answered) <= {401, 429}, answered
    assert statistics.median(latencies) < 0.1, f"median {statistics.median(latencies) * 1000:.0f} ms, {answered}"


def test_repeated_failures_from_one_address_are_throttled(hard_server):
    url = hard_server.url + "/v2/"
    guesser = "127.0.0.77"
    statuses = [get_from(guesser, url, auth=("bob", f"guess-{i}")).status_code for i in range(6)]
    assert statuses == [401] * 5 + [429]  # 5 free failures, then a 2 s lockout
    # locked out: even the right password is refused, on the registry API and the token endpoint
    for path in ("/v2/", "/auth/token"):
        r = get_from(guesser, hard_server.url + path, auth=("bob", "bob-pw"))
        assert r.status_code == 429
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert int(r.headers["Retry-After"]) >= 1
    # other addresses are not affected
    assert get_from("127.0.0.78", url, auth=("bob", "bob-pw")).status_code == 200
    # the lockout ends (it was at most Retry-After long when the last 429 said so), and a
    # success clears the address's record
    time.sleep(int(r.headers["Retry-After"]))
    assert get_from(guesser, url, auth=("bob", "bob-pw")).status_code == 200
    assert get_from(guesser, url, auth=("bob", "wrong")).status_code == 401


def test_throttle_lockouts_grow_are_forgotten_and_bounded():
    now = [1000.0]
    throttle = FailureThrottle(lambda: now[0], free=3, max_lockout=8, memory=60, capacity=100)
    for _ in range(2):
        throttle.failed("a")
    assert throttle.retry_after("a") == 0
    lockouts = []
    for _ in range(6):
        throttle.failed("a")
        lockouts.append(throttle.retry_after("a"))
    assert lockouts == [2, 4, 8, 8, 8, 8] and throttle.retry_after("b") == 0
    now[0] += 61  # quiet for longer than `memory`: a fresh start
    throttle.failed("a")
    assert throttle.retry_after("a") == 0
    throttle.succeeded("a")
    for i in range(1000):
        for _ in range(3):
            throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 100 and throttle.retry_after("10.0.3.231") == 2


# ---- 2. no user enumeration by timing ---------------------------------------------------

def test_unknown_user_and_wrong_password_take_the_same_time(hard_server):
    url = hard_server.url + "/v2/"

    def elapsed(user: str, password: str) -> float:
        t0 = time.perf_counter()
        r = get_from(fresh_address(), url, auth=(user, password))
        assert r.status_code == 401
        return time.perf_counter() - t0

    unknown, wrong = [], []
    for i in range(10):
        unknown.append(elapsed(f"nobody-{i}", "pw"))
        wrong.append(elapsed("alice", f"wrong-{i}"))
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.6 < ratio < 1.6, (f"unknown user {statistics.median(unknown) * 1000:.0f} ms, "
                               f"wrong password {statistics.median(wrong) * 1000:.0f} ms")


# ---- 3. the realm never comes from an untrusted Host header -----------------------------

def test_forged_host_is_not_echoed_in_the_realm(hard_server):
    for headers in ({"Host": "evil.example"}, {"Host": "evil.example", "X-Forwarded-Host": "evil.example",
                                                "X-Forwarded-Proto": "https"}):
        r = httpx.get(hard_server.url + "/v2/", headers=headers)
        assert r.status_code == 401
        assert realm(r) == hard_server.url + "/auth/token"


@pytest.fixture(scope="module")
def proxied_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("auth-proxied")
    proc = start_server(data, extra_env={
        "DOCKYARD_AUTH_HTPASSWD": htpasswd(data / "htpasswd", {"alice": "alice-pw"}, 4),
        "DOCKYARD_TRUSTED_PROXIES": "127.0.0.9, 10.0.0.0/8",
    })
    yield proc
    proc.stop()


def test_forwarded_headers_count_only_from_trusted_proxies(proxied_server):
    url = proxied_server.url + "/v2/"
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "registry.example.com", "Host": "evil.example"}
    assert realm(get_from("127.0.0.9", url, headers=forwarded)) == "https://registry.example.com/auth/token"
    assert realm(get_from("127.0.0.10", url, headers=forwarded)) == proxied_server.url + "/auth/token"
    bad = {"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": 'x" evil="1'}
    assert realm(get_from("127.0.0.9", url, headers=bad)) == proxied_server.url + "/auth/token"


@pytest.fixture(scope="module")
def public_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("auth-public")
    proc = start_server(data, extra_env={
        "DOCKYARD_AUTH_HTPASSWD": htpasswd(data / "htpasswd", {"alice": "alice-pw"}, 4),
        "DOCKYARD_PUBLIC_URL": "https://registry.example.com:8443/",
    })
    yield proc
    proc.stop()


def test_public_url_is_the_realm(public_server):
    r = httpx.get(public_server.url + "/v2/", headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"})
    assert realm(r) == "https://registry.example.com:8443/auth/token"


def test_public_url_and_trusted_proxies_are_validated():
    cfg = load(env={"DOCKYARD_PUBLIC_URL": "https://r.example/", "DOCKYARD_TRUSTED_PROXIES": "10.0.0.1,fd00::/8"})
    assert cfg.public_url == "https://r.example" and cfg.trusted_proxies == ("10.0.0.1", "fd00::/8")
    for env in ({"DOCKYARD_PUBLIC_URL": "r.example"}, {"DOCKYARD_PUBLIC_URL": "https://r.example/?x=1"},
                {"DOCKYARD_TRUSTED_PROXIES": "10.0.0.0/33"}, {"DOCKYARD_TRUSTED_PROXIES": "proxy.local"}):
        with pytest.raises(ConfigError):
            load(env=env)


# ---- 4. the token secret is never readable by others, not even for an instant -----------

def test_token_secret_is_created_private(tmp_path):
    path = tmp_path / "token-secret"
    seen: list[int] = []
    armed = [True]

    def watch(event, args):
        if armed[0]:
            armed[0] = False  # os.stat below must not re-enter
            try:
                seen.append(stat.S_IMODE(os.stat(path).st_mode))
            except FileNotFoundError:
                pass
            finally:
                armed[0] = True

    sys.addaudithook(watch)
    try:
        secret = Authenticator._secret(load(env={}, data_dir=str(tmp_path)))
    finally:
        armed[0] = False  # audit hooks cannot be removed; this one stays off
    assert seen and all(mode & 0o077 == 0 for mode in seen), [oct(m) for m in seen]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(secret) == 64
    assert Authenticator._secret(load(env={}, data_dir=str(tmp_path))) == secret
    assert [p.name for p in tmp_path.iterdir()] == ["token-secret"]


# ---- 5. undecodable credentials are a 401, not a 500 ------------------------------------

@pytest.mark.parametrize("header", [
    b"Bearer \xc3\xa9\xff.\xfe",
    b"Bearer abc.\xc3\xa9",
    b"Basic \xc3\xa9\xff",
    b"Basic " + __import__("base64").b64encode(b"\xff\xfe:\xc3"),
])
def test_non_ascii_credentials_are_unauthorized(hard_server, header):
    r = httpx.get(hard_server.url + "/v2/", headers={"Authorization": header})
    assert r.status_code == 401, r.text
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    r = httpx.get(hard_server.url + "/auth/token", headers={"Authorization": header})
    assert r.status_code == 401, r.text
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
