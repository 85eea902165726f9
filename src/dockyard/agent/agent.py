"""``dockyard agent``: keeps one compute host's images and reports them to the registry.

One loop, one thread: it heartbeats every ``poll_interval``, and long-polls the registry for
its pending work (pull or delete of one image; the poll answers as soon as there is some, or
after ``poll_interval``), does it and confirms it; it reports its inventory
every ``inventory_interval`` and after a cleanup removed images; it runs the cleanup every
``cleanup_interval``. Work is confirmed only once done, so an agent killed in the middle, or
a host down for a while, simply does it (again) when it is back: pulls and deletes are
idempotent. Temporaries left by a crash are removed when it starts.
"""

from __future__ import annotations

import logging
import subprocess
import tarfile
import threading
import time
from typing import Callable, Iterator

import httpx

from dockyard import __version__, faults
from dockyard.agent.cleanup import CleanupReport, cleanup
from dockyard.agent.client import RegistryClient, RegistryRefused
from dockyard.agent.files import DigestMismatch, ImagesDir, remove
from dockyard.agent.pull import fetch
from dockyard.agent.runtime import Runtime, RuntimeRefused

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, client: RegistryClient, files: ImagesDir, runtime: Runtime, *, poll_interval: float = 5.0,
                 inventory_interval: float = 60.0, cleanup_interval: float = 3600.0,
                 unmanaged_min_age: float = 86400.0, address: str | None = None,
                 clock: Callable[[], float] = time.time):
        self.client, self.files, self.runtime = client, files, runtime
        self.poll_interval = poll_interval
        self.inventory_interval = inventory_interval
        self.cleanup_interval = cleanup_interval
        self.unmanaged_min_age = unmanaged_min_age
        self.address = address
        self.clock = clock
        self._next_inventory = self._next_heartbeat = 0.0
        self._next_cleanup = clock() + cleanup_interval
        self.stopping = threading.Event()

    def start(self) -> None:
        n = self.files.clear_temporaries()
        if n:
            log.info("removed %d temporaries left by an earlier run", n)

    def run_forever(self) -> None:
        self.start()
        while not self.stopping.is_set():
            try:
                self.step(wait=self.poll_interval)
            except (httpx.HTTPError, RegistryRefused) as exc:  # registry away or refusing: try again later
                log.warning("registry: %s", exc)
                self._next_inventory = self._next_heartbeat = 0.0
                self.stopping.wait(self.poll_interval)

    def step(self, wait: float = 0.0) -> None:
        """One round: heartbeat (when due), work (waiting up to ``wait`` for some), cleanup and
        inventory when due."""
        if self.clock() >= self._next_heartbeat:
            self.client.heartbeat(self.address, __version__)
            self._next_heartbeat = self.clock() + self.poll_interval
        changed = False
        work = self.client.poll(wait)
        if work:  # the confirmation updates the registry's rows: no inventory needed for it
            self.client.confirm([self.do(w) for w in work])
        if self.clock() >= self._next_cleanup:
            self._next_cleanup = self.clock() + self.cleanup_interval
            report = self.cleanup(dry_run=False)
            changed = changed or bool(report.images)
        if changed or self.clock() >= self._next_inventory:
            self.report_inventory()

    def report_inventory(self) -> dict:
        counts = self.client.inventory(self.inventory())
        self._next_inventory = self.clock() + self.inventory_interval
        return counts

    def cleanup(self, *, dry_run: bool) -> CleanupReport:
        return cleanup(self.files, self.runtime, self.clock(), self.unmanaged_min_age, dry_run=dry_run)

    # ---- work ---------------------------------------------------------------------
    def do(self, work: dict) -> dict:
        try:
            image = self.pull(work["repository"], work["reference"], managed=True) if work["kind"] == "pull" \
                else self.delete(work["reference"])
            return {"id": work["id"], "ok": True, "image": image}
        except (RuntimeRefused, DigestMismatch, ValueError, OSError, tarfile.TarError, subprocess.SubprocessError) as exc:
            log.warning("%s %s@%s failed: %s", work["kind"], work["repository"], work["reference"], exc)
            return {"id": work["id"], "ok": False, "error": str(exc)}
        except RegistryRefused as exc:
            if exc.status in (401, 403):
                raise  # our credential: nothing to record on the work
            return {"id": work["id"], "ok": False, "error": str(exc)}

    def pull(self, repository: str, reference: str, *, managed: bool) -> dict:
        pulled = fetch(self.client, self.files, repository, reference)
        self.runtime.load(pulled.tar, repository, pulled.tag, pulled.digest)
        old = self.files.record(pulled.digest) or {}
        record = {"repository": repository, "tag": pulled.tag, "digest": pulled.digest,
                  "managed": managed or bool(old.get("managed")), "bytes": pulled.bytes,
                  "pulled_at": self.clock(), "last_used": old.get("last_used")}
        self.files.write_json(self.files.state_path(pulled.digest), record)
        log.info("pulled %s@%s (%d bytes, %s)", repository, pulled.digest, pulled.bytes,
                 "managed" if record["managed"] else "unmanaged")
        return {**record, "containers": []}

    def delete(self, digest: str) -> None:
        """The runtime image and every file of it: tar, record (and temporaries, by cleanup)."""
        removed = self.runtime.remove(digest)  # RuntimeRefused: kept, the work fails with the reason
        faults.point("agent.delete_runtime_removed")
        tar = self.files.tar_path(digest)
        remove(tar)
        remove(self.files.state_path(digest))
        log.info("deleted %s (runtime image %s, tar and record removed)", digest,
                 "removed" if removed else "already gone")

    # ---- inventory ----------------------------------------------------------------
    def inventory(self) -> Iterator[dict]:
        """Every image the runtime holds, one at a time (memory does not grow with their number)."""
        now = self.clock()
        for img in self.runtime.images():
            if not img.repository:
                continue  # not an image of this registry
            record = self.files.record(img.digest)
            if record is None:  # the runtime pulled it on its own: unmanaged, first seen now
                record = {"repository": img.repository, "tag": img.tag, "digest": img.digest, "managed": False,
                          "bytes": img.bytes, "pulled_at": now, "last_used": None}
                self.files.write_json(self.files.state_path(img.digest), record)
            if img.containers:
                record["last_used"] = now
                self.files.write_json(self.files.state_path(img.digest), record)
            yield {"repository": img.repository, "tag": img.tag, "digest": img.digest,
                   "managed": bool(record.get("managed")), "bytes": img.bytes, "pulled_at": record.get("pulled_at"),
                   "last_used": record.get("last_used"), "containers": img.containers}
