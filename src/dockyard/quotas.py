"""Storage quotas (pure definitions): a repository glob, a hard limit, a soft threshold.

``[quotas.NAME] repositories = "team-a/*", hard = "10GiB", soft = 0.8``. The glob matches
whole repository names (``*`` any run of characters, ``/`` included; ``?`` one character).
Usage is the bytes of the distinct blobs the matching repositories link (a layer shared by
two repositories of the namespace counts once), kept in ``quota_usage`` by
``lifecycle.quotas``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Mapping

from dockyard.values import ConfigError, parse_size


@dataclass(frozen=True)
class Quota:
    name: str
    repositories: str
    hard: int
    soft: float = 0.8

    def applies_to(self, repository: str) -> bool:
        return fnmatchcase(repository, self.repositories)

    @property
    def soft_bytes(self) -> int:
        return int(self.hard * self.soft)

    def like(self) -> str:
        """The glob as a SQL LIKE pattern (escape character ``\\``)."""
        out = []
        for ch in self.repositories:
            out.append({"*": "%", "?": "_", "%": "\\%", "_": "\\_", "\\": "\\\\"}.get(ch, ch))
        return "".join(out)

    def to_doc(self) -> dict:
        return {"repositories": self.repositories, "hard": self.hard, "soft": self.soft}

    @classmethod
    def parse(cls, name: str, doc: Any) -> "Quota":
        if not isinstance(doc, Mapping):
            raise ConfigError(f"quota {name}: must be a table")
        unknown = set(doc) - {"repositories", "hard", "soft"}
        if unknown:
            raise ConfigError(f"quota {name}: unknown keys {', '.join(sorted(unknown))}")
        glob = doc.get("repositories")
        if not isinstance(glob, str) or not glob or "[" in glob or len(glob) > 255:
            raise ConfigError(f"quota {name}: repositories must be a glob such as 'team-a/*' (no [..] classes)")
        if "hard" not in doc:
            raise ConfigError(f"quota {name}: hard (a size, e.g. 10GiB) is required")
        hard = parse_size(doc["hard"])
        soft = doc.get("soft", 0.8)
        if isinstance(soft, bool) or not isinstance(soft, (int, float)) or not 0 < soft <= 1:
            raise ConfigError(f"quota {name}: soft must be a fraction of hard in (0, 1], e.g. 0.8")
        if not name or len(name) > 128:
            raise ConfigError("a quota name has 1 to 128 characters")
        return cls(name, glob, hard, float(soft))


def parse_quotas(value: Any) -> dict[str, Quota]:
    """The ``quotas`` setting: a TOML table of tables, or JSON text from the environment."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise ConfigError(f"quotas must be JSON: {exc}") from exc
    if not isinstance(value, Mapping):
        raise ConfigError("quotas must map quota names to tables")
    return {name: Quota.parse(name, doc) for name, doc in value.items()}
