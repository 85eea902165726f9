"""A full disk, for real: the registry's data directory on a small tmpfs, filled by pushes.

What must hold: a push that does not fit gets a 503 (never a 500, never a traceback), every
push acknowledged before pulls byte-exact, deletes and the collector can still free space
(the disk reserve is released for them), and once there is room again pushes work again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import httpx
import pytest

from tests.support import OCI_MANIFEST, image_manifest, make_config, sha256, start_server

DISK = 40 * 1024 * 1024
LAYER = 2 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def push(client, name: str, seed: int) -> tuple[int, str | None, list[bytes]]:
    """Push an image with one 2 MiB layer of its own; (status of the first failure or 201, digest, blobs)."""
    config, layer = make_config(f"full-{seed}"), os.urandom(LAYER)
    for blob in (config, layer):
        r = client.post(f"/v2/{name}/blobs/uploads/", params={"digest": sha256(blob)}, content=blob)
        if r.status_code != 201:
            return r.status_code, None, []
    body = image_manifest(config, [layer])
    r = client.put(f"/v2/{name}/manifests/{sha256(body)}", content=body, headers={"Content-Type": OCI_MANIFEST})
    return r.status_code, (sha256(body) if r.status_code == 201 else None), [config, layer]


def pulls(client, name: str, digest: str, blobs: list[bytes]) -> None:
    assert client.get(f"/v2/{name}/manifests/{digest}", headers={"Accept": OCI_MANIFEST}).status_code == 200
    for blob in blobs:
        r = client.get(f"/v2/{name}/blobs/{sha256(blob)}")
        assert r.status_code == 200 and r.content == blob


def test_a_full_disk_refuses_pushes_cleanly_keeps_pulls_and_can_still_be_reclaimed(small_disk, tmp_path):
    server = start_server(small_disk, log_dir=tmp_path, extra_env={
        "DOCKYARD_DISK_RESERVE": "6MiB", "DOCKYARD_GC_DELAY": "1s", "DOCKYARD_GC_INTERVAL": "0.5s",
        "DOCKYARD_DELAYED_DELETE": "false", "DOCKYARD_SCRUB_ENABLED": "false"})
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            images, failures = [], []
            for seed in range(40):  # 80 MiB of layers for a 40 MiB disk
                status, digest, blobs = push(client, "full/app", seed)
                if digest is None:
                    failures.append(status)
                    if len(failures) >= 3:
                        break
                else:
                    images.append((digest, blobs))
            assert failures and set(failures) == {503}, failures  # refused, never a 500
            assert len(images) >= 5
            assert "released the" in server.log()  # the reserve went to reclamation
            for digest, blobs in images:  # everything acknowledged pulls
                pulls(client, "full/app", digest, blobs)
            keep, drop = images[:2], images[2:]
            for digest, _ in drop:  # deletes work on the full disk (retried like any 503)
                for _ in range(50):
                    r = client.delete(f"/v2/full/app/manifests/{digest}")
                    if r.status_code != 503:
                        break
                    time.sleep(0.2)
                assert r.status_code == 202, r.text
            deadline = time.monotonic() + 60
            while shutil.disk_usage(small_disk).free < DISK // 2 and time.monotonic() < deadline:
                time.sleep(0.5)  # the background collector frees the space
            assert shutil.disk_usage(small_disk).free >= DISK // 2
            for _ in range(60):  # the reserve comes back and pushes are accepted again
                status, digest, blobs = push(client, "full/app", 1000)
                if status != 503:
                    break
                time.sleep(0.5)
            assert status == 201
            pulls(client, "full/app", digest, blobs)
            for digest, blobs in keep:
                pulls(client, "full/app", digest, blobs)
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-3000:]


def test_a_database_write_on_a_full_disk_releases_the_reserve_and_then_succeeds(small_disk):
    from dockyard.lifecycle.reserve import DiskReserve
    from dockyard.meta.db import Database, DatabaseUnavailable
    from dockyard.meta.repositories import RepositoryStore

    db = Database(f"sqlite:///{small_disk / 'dockyard.db'}")
    db.migrate()
    reserve = DiskReserve(small_disk / "disk-reserve", 4 * 1024 * 1024)
    assert reserve.ensure()
    db.on_disk_full = reserve.release
    with open(small_disk / "filler", "wb") as fh:  # everything else the disk has
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    big = "x" * 200_000
    with pytest.raises(DatabaseUnavailable) as err:
        for i in range(100):
            with db.write() as conn:
                RepositoryStore(conn).ensure(f"r{i}/{big[:200]}", 0.0)
                conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS ballast (v TEXT)")
                conn.exec_driver_sql("INSERT INTO ballast VALUES (?)", (big,))
    assert err.value.disk_full
    assert not (small_disk / "disk-reserve").exists() and reserve.refuses_uploads()
    with db.write() as conn:  # the released room lets the next write (a delete, the collector) through
        RepositoryStore(conn).ensure("after/release", 0.0)
    with db.read() as conn:
        assert RepositoryStore(conn).get("after/release") is not None
    db.dispose()
