"""S3-compatible object storage driver (boto3).

Blobs are one object each (``<prefix>blobs/sha256/ab/<hex>``). An upload session's staging
data is a set of part objects plus a small index object, because objects cannot be appended
to::

    <prefix>uploads/<id>/index          JSON: [[offset, size, part key], ...]
    <prefix>uploads/<id>/p<offset>      one object per write_at call

``move`` (commit) composes the parts into the blob key server-side: one CopyObject for a
single part, UploadPartCopy for several parts of at least 5 MiB; only an upload made of
several small chunks is streamed through (bounded memory). Writes of unknown length are
streamed with multipart uploads (``upload_fileobj``). Credentials come from the usual AWS
chain (environment, config files, instance roles). Throttling and 5xx answers are retried
with backoff by botocore's standard retry mode. Nothing here lists the bucket except
``list``, which only fsck calls, page by page.
"""

from __future__ import annotations

import io
import json
from typing import Iterable, Iterator

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from dockyard.storage.base import ObjectInfo, PathNotFound, StorageError

MIN_PART = 5 * 1024 * 1024
COPY_LIMIT = 5 * 1024 * 1024 * 1024
READ_CHUNK = 1024 * 1024
UPLOADS = "uploads/"


class _IterReader(io.RawIOBase):
    """A file-like view of an iterator of chunks, for upload_fileobj."""

    def __init__(self, chunks: Iterable[bytes]):
        self._it = iter(chunks)
        self._buf = b""
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self.total += n
        return n


def _is_missing(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


class S3Driver:
    name = "s3"

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None, region: str | None = None,
                 path_style: bool = False, max_attempts: int = 3, client=None):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        # bounded timeouts: a delete never outlives the collector's lease on its tombstone
        cfg = BotoConfig(retries={"mode": "standard", "max_attempts": max_attempts},
                         connect_timeout=5, read_timeout=10,
                         s3={"addressing_style": "path" if path_style else "auto"},
                         max_pool_connections=64)
        self.s3 = client or boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None,
                                         config=cfg)
        from boto3.s3.transfer import TransferConfig

        self.transfer = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024,
                                       max_concurrency=2, use_threads=True)

    # ---- helpers -------------------------------------------------------------
    def _k(self, key: str) -> str:
        return self.prefix + key

    def _err(self, exc: Exception, key: str) -> StorageError:
        if isinstance(exc, ClientError) and _is_missing(exc):
            return PathNotFound("not found", driver=self.name, key=key)
        return StorageError(str(exc), driver=self.name, key=key)

    @staticmethod
    def _is_upload(key: str) -> bool:
        return key.startswith(UPLOADS) and key.count("/") == 1

    def _index(self, key: str, *, pending: bool = False) -> list[list] | None:
        """The parts of an upload; a part being written (size -1) only with ``pending``."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self._k(key + "/index"))["Body"].read()
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise self._err(exc, key) from exc
        return [p for p in json.loads(body) if pending or p[1] >= 0]

    def _put_index(self, key: str, parts: list[list]) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._k(key + "/index"), Body=json.dumps(parts).encode())

    # ---- protocol ------------------------------------------------------------
    def write_at(self, key: str, offset: int, chunks: Iterable[bytes]) -> int:
        if not self._is_upload(key):
            raise StorageError("write_at is for upload staging keys only", driver=self.name, key=key)
        try:
            listed = self._index(key, pending=True) or []
            parts = [p for p in listed if p[1] >= 0]
            size = sum(p[1] for p in parts)
            if offset > size:
                raise StorageError(f"write at {offset} past end {size}", driver=self.name, key=key)
            keep = [p for p in parts if p[0] + p[1] <= offset]
            drop = [p for p in listed if p not in keep]  # incl. parts a crashed write left pending
            for start, size, part_key in drop:
                if size >= 0 and start < offset < start + size:  # rare (a client rewinding): keep the part's head
                    head_key = f"{key}/p{start:020d}-{offset}"
                    self.s3.upload_fileobj(_IterReader(self._read_object(self._k(part_key), 0, offset - start)),
                                           self.bucket, self._k(head_key), Config=self.transfer)
                    keep.append([start, offset - start, head_key])
            reader = _IterReader(chunks)
            part_key = f"{key}/p{offset:020d}"
            # the index names the part before it is written, so a crash in between leaves
            # nothing that delete() would not find
            self._put_index(key, sorted(keep) + [[offset, -1, part_key]])
            self.s3.upload_fileobj(reader, self.bucket, self._k(part_key), Config=self.transfer)
            if reader.total:
                keep.append([offset, reader.total, part_key])
            keep.sort()
            self._put_index(key, keep)
            stale = [p[2] for p in drop if p[2] != part_key]
            if not reader.total:
                stale.append(part_key)
            self._delete_many(stale)
            return offset + reader.total
        except ClientError as exc:
            raise self._err(exc, key) from exc

    def move(self, src: str, dst: str) -> None:
        try:
            if not self._is_upload(src):
                self._copy(self._k(src), self._k(dst))
                self.s3.delete_object(Bucket=self.bucket, Key=self._k(src))
                return
            parts = self._index(src)
            if parts is None:
                raise PathNotFound("no such upload", driver=self.name, key=src)
            if not parts:
                self.s3.put_object(Bucket=self.bucket, Key=self._k(dst), Body=b"")
            elif len(parts) == 1:
                self._copy(self._k(parts[0][2]), self._k(dst), parts[0][1])
            elif all(p[1] >= MIN_PART for p in parts[:-1]) and all(p[1] <= COPY_LIMIT for p in parts):
                self._compose(parts, self._k(dst))
            else:
                self.s3.upload_fileobj(_IterReader(self._read_parts(parts, 0, None)), self.bucket, self._k(dst),
                                       Config=self.transfer)
            self.delete(src)
        except ClientError as exc:
            raise self._err(exc, src) from exc

    def _copy(self, src_key: str, dst_key: str, size: int | None = None) -> None:
        if size is None:
            size = self.s3.head_object(Bucket=self.bucket, Key=src_key)["ContentLength"]
        if size <= COPY_LIMIT:
            self.s3.copy_object(Bucket=self.bucket, Key=dst_key, CopySource={"Bucket": self.bucket, "Key": src_key})
            return
        step = 512 * 1024 * 1024
        ranges = [(o, min(o + step, size) - 1) for o in range(0, size, step)]
        self._multipart_copy([(src_key, f"bytes={a}-{b}") for a, b in ranges], dst_key)

    def _compose(self, parts: list[list], dst_key: str) -> None:
        self._multipart_copy([(self._k(p[2]), None) for p in parts], dst_key)

    def _multipart_copy(self, sources: list[tuple[str, str | None]], dst_key: str) -> None:
        mpu = self.s3.create_multipart_upload(Bucket=self.bucket, Key=dst_key)
        done = []
        try:
            for n, (src_key, rng) in enumerate(sources, 1):
                kw = {"CopySourceRange": rng} if rng else {}
                r = self.s3.upload_part_copy(Bucket=self.bucket, Key=dst_key, UploadId=mpu["UploadId"], PartNumber=n,
                                             CopySource={"Bucket": self.bucket, "Key": src_key}, **kw)
                done.append({"ETag": r["CopyPartResult"]["ETag"], "PartNumber": n})
            self.s3.complete_multipart_upload(Bucket=self.bucket, Key=dst_key, UploadId=mpu["UploadId"],
                                              MultipartUpload={"Parts": done})
        except Exception:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=dst_key, UploadId=mpu["UploadId"])
            raise

    def _read_object(self, full_key: str, offset: int, length: int | None) -> Iterator[bytes]:
        if length == 0:
            return
        rng = f"bytes={offset}-" if length is None else f"bytes={offset}-{offset + length - 1}"
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=full_key, **({"Range": rng} if offset or length else {}))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return
            raise
        try:
            for chunk in body.iter_chunks(READ_CHUNK):
                yield chunk
        finally:
            body.close()

    def _read_parts(self, parts: list[list], offset: int, length: int | None) -> Iterator[bytes]:
        end = None if length is None else offset + length
        for start, size, part_key in parts:
            lo, hi = max(offset, start), start + size if end is None else min(end, start + size)
            if hi > lo:
                yield from self._read_object(self._k(part_key), lo - start, hi - lo)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        if self._is_upload(key):
            parts = self._index(key)
            if parts is None:
                raise PathNotFound("no such upload", driver=self.name, key=key)
            return self._read_parts(parts, offset, length)
        info = self.stat(key)
        if info is None:
            raise PathNotFound("not found", driver=self.name, key=key)
        return self._read_object(self._k(key), offset, length)

    def stat(self, key: str) -> ObjectInfo | None:
        if self._is_upload(key):
            parts = self._index(key)
            return None if parts is None else ObjectInfo(key, sum(p[1] for p in parts), 0.0)
        try:
            r = self.s3.head_object(Bucket=self.bucket, Key=self._k(key))
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise self._err(exc, key) from exc
        return ObjectInfo(key, r["ContentLength"], r["LastModified"].timestamp())

    def delete(self, key: str) -> None:
        try:
            if self._is_upload(key):
                parts = self._index(key, pending=True) or []
                failed = self._delete_many([p[2] for p in parts] + [key + "/index"])
                if failed:
                    raise next(iter(failed.values()))
                return
            self.s3.delete_object(Bucket=self.bucket, Key=self._k(key))
        except ClientError as exc:
            if not _is_missing(exc):
                raise self._err(exc, key) from exc

    def delete_many(self, keys: Iterable[str]) -> dict[str, StorageError | None]:
        """One DeleteObjects per 1,000 keys (the cap of AWS, and of Ceph RGW 16.2); an upload
        session (an index and its parts, several objects) goes through :meth:`delete`. A call
        that fails as a whole is the error of each key it carried."""
        out: dict[str, StorageError | None] = {}
        objects = []
        for key in dict.fromkeys(keys):
            if self._is_upload(key):
                try:
                    self.delete(key)
                    out[key] = None
                except StorageError as exc:
                    out[key] = exc
                except BotoCoreError as exc:
                    out[key] = StorageError(str(exc), driver=self.name, key=key)
            else:
                objects.append(key)
        failed = self._delete_many(objects, whole_call_errors=True)
        out.update((k, failed.get(k)) for k in objects)
        return out

    def _delete_many(self, keys: list[str], *, whole_call_errors: bool = False) -> dict[str, StorageError]:
        """One DeleteObjects call per 1,000 keys; the keys it could not delete, with their
        errors (``Errors`` of the response; a missing key is not one). With
        ``whole_call_errors`` a failed call is the error of each of its keys instead of raised."""
        failed: dict[str, StorageError] = {}
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            try:
                r = self.s3.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": self._k(k)} for k in batch], "Quiet": True})
            except (ClientError, BotoCoreError) as exc:
                if not whole_call_errors:
                    raise
                for k in batch:
                    failed[k] = StorageError(f"DeleteObjects: {exc}", driver=self.name, key=k)
                continue
            for e in r.get("Errors", []):
                if e.get("Code") in ("NoSuchKey", "NotFound", "404"):
                    continue
                k = e.get("Key", "")
                k = k[len(self.prefix):] if k.startswith(self.prefix) else k
                failed[k] = StorageError(f"{e.get('Code', '?')}: {e.get('Message', '')}", driver=self.name, key=k)
        return failed

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.s3.get_paginator("list_objects_v2")
        pending: dict[str, list] = {}
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._k(prefix), PaginationConfig={"PageSize": 1000}):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix):]
                if key.startswith(UPLOADS) and key.count("/") >= 2:
                    # staging parts: one entry per upload session
                    upload = "/".join(key.split("/")[:2])
                    entry = pending.setdefault(upload, [0, 0.0])
                    entry[0] += obj["Size"] if not key.endswith("/index") else 0
                    entry[1] = max(entry[1], obj["LastModified"].timestamp())
                    continue
                yield ObjectInfo(key, obj["Size"], obj["LastModified"].timestamp())
        for upload, (size, modified) in sorted(pending.items()):
            yield ObjectInfo(upload, size, modified)

    def local_path(self, key: str) -> str | None:
        return None

    def redirect_url(self, key: str, ttl: int) -> str:
        return self.s3.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": self._k(key)},
                                              ExpiresIn=ttl)
