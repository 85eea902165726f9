"""The agent's only way to the registry: HTTP with its host token (httpx).

Host calls go to ``/admin/v1/hosts/<name>/...``; images come through the normal ``/v2/`` API.
"""

from __future__ import annotations

import contextlib
import json
from typing import Iterable, Iterator

import httpx

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
])
MAX_MANIFEST = 4 * 1024 * 1024


class RegistryRefused(Exception):
    """The registry answered with an error (its status and body are in the message)."""

    def __init__(self, response: httpx.Response):
        self.status = response.status_code
        try:
            text = response.text[:300]
        except httpx.ResponseNotRead:
            text = ""
        super().__init__(f"{response.request.method} {response.request.url.path}: {self.status} {text}")


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        response.read()
        raise RegistryRefused(response)
    return response


class RegistryClient:
    def __init__(self, url: str, host: str, token: str, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.host = host
        self.http = httpx.Client(base_url=self.url, timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"})
        self.base = f"/admin/v1/hosts/{host}"

    @property
    def registry_host(self) -> str:
        return httpx.URL(self.url).netloc.decode()

    def close(self) -> None:
        self.http.close()

    def heartbeat(self, address: str | None, version: str) -> None:
        _check(self.http.post(f"{self.base}/heartbeat", json={"address": address, "version": version}))

    def poll(self, wait: float = 0.0) -> list[dict]:
        """Pending work; with ``wait`` a long poll that answers as soon as there is some."""
        return _check(self.http.get(f"{self.base}/work", params={"wait": f"{wait:g}"},
                                    timeout=self.http.timeout.read + wait)).json()["work"]

    def confirm(self, results: list[dict]) -> dict:
        return _check(self.http.post(f"{self.base}/work/results", json={"results": results})).json()

    def inventory(self, images: Iterable[dict]) -> dict:
        """Every image, streamed as one JSON object per line (the agent holds one at a time)."""

        def lines() -> Iterator[bytes]:
            for image in images:
                yield json.dumps(image, separators=(",", ":")).encode() + b"\n"

        return _check(self.http.put(f"{self.base}/inventory", content=lines(),
                                    headers={"Content-Type": "application/x-ndjson"})).json()

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str, str | None]:
        r = _check(self.http.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES}))
        if len(r.content) > MAX_MANIFEST:
            raise ValueError("manifest too large")
        return r.content, r.headers.get("content-type", ""), r.headers.get("docker-content-digest")

    @contextlib.contextmanager
    def blob(self, repository: str, digest: str) -> Iterator[Iterator[bytes]]:
        with self.http.stream("GET", f"/v2/{repository}/blobs/{digest}", follow_redirects=True) as r:
            _check(r)
            yield r.iter_bytes(1 << 20)
