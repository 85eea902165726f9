"""In-process registry for lifecycle tests: real database (SQLite or PostgreSQL), real
filesystem driver, a fake clock so grace periods pass in no time."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from dockyard.clock import FakeClock
from dockyard.config import load
from dockyard.meta.db import Database
from dockyard.registry import manifests, uploads
from dockyard.registry.context import Registry
from dockyard.storage.checked import CheckedDriver
from dockyard.storage.filesystem import FilesystemDriver
from tests.support import OCI_MANIFEST, image_manifest, make_config, make_layer, postgres_database, sha256


@contextmanager
def make_registry(tmp: Path, backend: str, *, moto=None, **settings):
    """backend: sqlite | postgres | s3 (PostgreSQL + the S3 driver on ``moto``)."""
    cfg_settings = {"data_dir": str(tmp), "gc_delay": 60, "upload_ttl": 3600, **settings}
    with (postgres_database() if backend in ("postgres", "s3") else _nullctx("")) as url:
        cfg = load(env={}, database_url=url or None, **cfg_settings)
        db = Database(cfg.effective_database_url)
        db.migrate()
        if backend == "s3":
            import os
            import uuid

            from dockyard.storage.s3 import S3Driver
            from tests.support import AWS_TEST_ENV

            os.environ.update({k: v for k, v in AWS_TEST_ENV.items() if k not in os.environ})
            bucket = f"b-{uuid.uuid4().hex[:12]}"
            moto.make_bucket(bucket)
            driver = S3Driver(bucket, endpoint_url=moto.url, region="us-east-1", path_style=True)
        else:
            driver = FilesystemDriver(tmp / "storage")
        reg = Registry(config=cfg, db=db, storage=CheckedDriver(driver), clock=FakeClock())
        try:
            yield reg
        finally:
            db.dispose()


@contextmanager
def _nullctx(value):
    yield value


def put_blob(reg: Registry, name: str, data: bytes) -> str:
    up = uploads.start(reg, name)
    up = uploads.write(reg, up, [data])
    return uploads.finish(reg, name, up, sha256(data)).digest


def put_image(reg: Registry, name: str, tag: str | None, seed: str, shared: list[bytes] = (),
              subject: dict | None = None) -> tuple[str, list[bytes]]:
    config = make_config(seed)
    blobs = [config, *shared, make_layer(seed)]
    for b in blobs:
        put_blob(reg, name, b)
    body = image_manifest(config, blobs[1:], subject=subject)
    ref = tag or sha256(body)
    manifests.put(reg, name, ref, body, OCI_MANIFEST)
    return sha256(body), blobs


def put_index(reg: Registry, name: str, tag: str | None, children: list[str]) -> str:
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": [{"mediaType": OCI_MANIFEST, "digest": d, "size": 1} for d in children]}).encode()
    manifests.put(reg, name, tag or sha256(body), body, "application/vnd.oci.image.index.v1+json")
    return sha256(body)


def stored_blobs(reg: Registry) -> set[str]:
    from dockyard.storage import paths

    return {paths.digest_from_blob_key(o.key) for o in reg.storage.list(paths.BLOBS)}
