"""Periodic cleanup on a host: what the agent removes without being asked.

- Unmanaged images (pulled implicitly by the runtime, not through ``dockyard image pull
  --host``) that no container has used for ``unmanaged_min_age``: the runtime image, its tar
  and its record. Never one a container uses (the runtime refuses, and it is checked first);
  never a managed image (only an explicit delete removes one).
- Residual files no image owns, older than :data:`TEMP_GRACE`: tars and records of images the
  runtime does not hold, and temporaries in ``tmp/``.

A dry run lists the same and the bytes, and removes nothing. One log line per object removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from dockyard import faults
from dockyard.agent.files import ImagesDir, remove, size
from dockyard.agent.runtime import Runtime, RuntimeRefused

log = logging.getLogger(__name__)
TEMP_GRACE = 600.0
"""Residual files younger than this are left alone: a pull beside the agent (``dockyard agent
create-container``) installs its tar before the runtime loads it. The agent removes every
temporary when it starts."""


def _mtime(path) -> float:
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


@dataclass
class CleanupReport:
    dry_run: bool
    images: list[dict] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(i["bytes"] for i in self.images) + sum(f["bytes"] for f in self.files)

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "images": self.images, "files": self.files, "refused": self.refused,
                "bytes": self.bytes}

    def table(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"{verb} image {i['repository']}@{i['digest'][:19]} ({i['bytes']} bytes): {i['reason']}"
                 for i in self.images]
        lines += [f"{verb} file {f['path']} ({f['bytes']} bytes): {f['reason']}" for f in self.files]
        lines += [f"kept {r['digest'][:19]}: {r['error']}" for r in self.refused]
        lines.append(f"total: {verb} {len(self.images)} images and {len(self.files)} residual files, "
                     f"{self.bytes} bytes" + (" (dry run)" if self.dry_run else ""))
        return "\n".join(lines)


def cleanup(files: ImagesDir, runtime: Runtime, now: float, min_age: float, *, dry_run: bool) -> CleanupReport:
    report = CleanupReport(dry_run)
    held: set[str] = set()
    doomed = []
    for img in runtime.images():
        held.add(img.digest)
        record = files.record(img.digest) or {}
        if record.get("managed") or img.containers:
            continue
        since = max(record.get("last_used") or 0, record.get("pulled_at") or 0)
        if not since or now - since < min_age:
            continue
        tar = files.tar_path(img.digest)
        doomed.append(img)
        report.images.append({"repository": img.repository, "tag": img.tag, "digest": img.digest,
                              "bytes": img.bytes + (size(tar) if tar.exists() else 0),
                              "reason": f"unmanaged, unused for {now - since:.0f}s (min age {min_age:.0f}s)"})
    faults.point("agent.cleanup_planned")
    if not dry_run:
        for img, entry in zip(list(doomed), list(report.images)):
            try:
                runtime.remove(img.digest)
            except RuntimeRefused as exc:  # a container took it meanwhile: kept
                report.images.remove(entry)
                report.refused.append({"digest": img.digest, "error": str(exc)})
                continue
            remove(files.tar_path(img.digest))
            remove(files.state_path(img.digest))
            held.discard(img.digest)
            log.info("cleanup: removed unmanaged image %s@%s (%d bytes)", img.repository, img.digest, entry["bytes"])
    gone = {i["digest"] for i in report.images}
    young = lambda path: now - _mtime(path) < TEMP_GRACE  # noqa: E731 (a pull or load may be under way)
    for digest, path in files.tar_files():
        if (digest is None or (digest not in held and digest not in gone)) and not young(path):
            report.files.append({"path": str(path), "bytes": size(path), "reason": "tar of no image"})
    for digest, path in files.records():
        if digest not in held and digest not in gone and not young(path):
            report.files.append({"path": str(path), "bytes": size(path), "reason": "record of no image"})
    for path, n in files.temporaries():
        if young(path):
            continue
        report.files.append({"path": str(path), "bytes": n, "reason": "temporary"})
    if not dry_run:
        for f in report.files:
            remove(files.root / f["path"])
            log.info("cleanup: removed %s (%d bytes, %s)", f["path"], f["bytes"], f["reason"])
    return report
