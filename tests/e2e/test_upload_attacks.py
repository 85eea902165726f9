"""Upload sessions attacked from raw sockets, against a real server on every backend.

The invariant, checked by reading everything back: no byte is stored or served under a
digest it does not hash to, a blob's recorded size is its stored size, and the bytes a
session acknowledged are exactly the bytes a commit uses.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.support import sha256


def raw(server, head: str, body: bytes = b"") -> socket.socket:
    """Open a connection and send ``head`` (request line + headers) and ``body``; the caller
    may send more later, or close it half-way."""
    u = urlsplit(server.url)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    s.sendall(head.encode() + b"\r\n" + body)
    return s


def response(s: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest


def start(client, repo: str) -> str:
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return r.headers["Location"]


def assert_blob(client, repo: str, data: bytes) -> None:
    digest = sha256(data)
    head = client.head(f"/v2/{repo}/blobs/{digest}")
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
    got = client.get(f"/v2/{repo}/blobs/{digest}")
    assert got.status_code == 200 and got.content == data and sha256(got.content) == digest


def test_a_second_request_on_a_busy_session_is_refused_and_changes_nothing(server, client, repo):
    loc = start(client, repo)
    honest = b"H" * 4096
    slow = raw(server, f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                       f"Content-Length: {len(honest)}\r\n")
    time.sleep(1.0)  # the slow request has claimed the session and waits for its body
    intruder = client.patch(loc, content=b"E" * 4096, headers={"Content-Type": "application/octet-stream"})
    assert intruder.status_code == 409, intruder.text
    assert intruder.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    slow.sendall(honest)
    status, _ = response(slow)
    slow.close()
    assert status == 202
    r = client.put(loc, params={"digest": sha256(honest)})
    assert r.status_code == 201, r.text
    assert_blob(client, repo, honest)
    # and the intruder's bytes were never stored under any digest
    assert client.head(f"/v2/{repo}/blobs/{sha256(b'E' * 4096)}").status_code == 404


def test_concurrent_patches_never_poison_a_shared_blob(server, client, repo):
    """The attack of the issue: bytes X under the digest of Y, then a victim pushes Y."""
    loc = start(client, repo)
    victim_bytes, evil = b"V" * 8192, b"X" * 8192
    slow = raw(server, f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(evil)}\r\n")
    time.sleep(1.0)
    client.patch(loc, content=victim_bytes)  # refused while the slow one holds the session
    slow.sendall(evil)
    response(slow)
    slow.close()
    r = client.put(loc, params={"digest": sha256(victim_bytes)})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    # the victim's honest push elsewhere is stored as itself
    r = client.post(f"/v2/{repo}-victim/blobs/uploads/", params={"digest": sha256(victim_bytes)},
                    content=victim_bytes)
    assert r.status_code == 201
    assert_blob(client, f"{repo}-victim", victim_bytes)


def test_a_chunk_longer_than_its_content_range_leaves_nothing(server, client, repo):
    loc = start(client, repo)
    body = b"A" * 40
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    s = raw(server, f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Range: 0-9\r\nTransfer-Encoding: chunked\r\n",
            chunked)
    status, payload = response(s)
    s.close()
    assert status == 400 and b"SIZE_INVALID" in payload
    status = client.get(loc)
    assert status.status_code == 204 and status.headers["Range"] == "0-0"  # nothing acknowledged
    # a commit now holds exactly the acknowledged bytes: none
    r = client.put(loc, params={"digest": sha256(body[:10])})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    loc = start(client, repo)
    r = client.patch(loc, content=body[:10], headers={"Content-Range": "0-9"})
    assert r.status_code == 202
    assert client.put(loc, params={"digest": sha256(body[:10])}).status_code == 201
    assert_blob(client, repo, body[:10])


def test_a_client_that_disconnects_mid_patch_can_finish_with_what_was_acknowledged(server, client, repo):
    loc = start(client, repo)
    first = bytes(range(256)) * 4096  # 1 MiB
    r = client.patch(loc, content=first, headers={"Content-Range": f"0-{len(first) - 1}"})
    assert r.status_code == 202
    s = raw(server, f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(first)}\r\n"
                    f"Content-Range: {len(first)}-{2 * len(first) - 1}\r\n", b"Z" * (len(first) // 2))
    time.sleep(0.5)
    s.close()  # gone half-way
    deadline = time.monotonic() + 30
    while True:  # the server notices the disconnect, cuts the staged data back and lets go
        status = client.get(loc)
        if status.headers.get("Range") == f"0-{len(first) - 1}":
            r = client.put(loc, params={"digest": sha256(first)})
            if r.status_code != 409 or time.monotonic() > deadline:
                break
        time.sleep(0.2)
    assert r.status_code == 201, r.text
    assert_blob(client, repo, first)
    assert "Traceback" not in server.log()


def test_body_shorter_than_announced_is_not_acknowledged(server, client, repo):
    loc = start(client, repo)
    s = raw(server, f"PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nContent-Range: 0-99\r\n", b"s" * 10)
    s.shutdown(socket.SHUT_WR)
    s.close()
    time.sleep(0.5)
    r = client.patch(loc, content=b"t" * 5)  # a fresh start at 0, once the server let go
    for _ in range(50):
        if r.status_code != 409:
            break
        time.sleep(0.2)
        r = client.patch(loc, content=b"t" * 5)
    assert r.status_code == 202 and r.headers["Range"] == "0-4"
    assert client.put(loc, params={"digest": sha256(b"t" * 5)}).status_code == 201
    assert_blob(client, repo, b"t" * 5)


@pytest.mark.parametrize("content_range", ["0-" + "9" * 5000, "9" * 5000 + "-1", "bytes=0-1/" + "9" * 5000])
def test_absurd_content_range_is_a_4xx(client, repo, content_range):
    loc = start(client, repo)
    r = client.patch(loc, content=b"ab", headers={"Content-Range": content_range})
    assert 400 <= r.status_code < 500
