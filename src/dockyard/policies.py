"""Retention policies: what they say, how they are written, which repositories and tags they touch.

A policy, in the configuration file::

    [retention.nightly]
    repositories = ["team/*"]         # globs (fnmatch; * also crosses /)
    tags_include = ["*"]              # tags the policy may act on
    tags_exclude = ["release-*"]      # ... and those it never acts on
    keep_tag_revisions = 3            # the 3 most recent images each tag pointed at
    keep_recent = 10                  # the 10 most recently pushed manifests
    keep_pushed_within = "30d"
    keep_pulled_within = "7d"
    untagged = "delete"               # or "keep"
    immutable_tags = ["v*.*.*"]       # no policy, delete or push may touch these tags
    schedule = "24h"                  # run inside dockyard serve (with jitter); off if absent

The semantics, the only one: a manifest is kept if any keep rule keeps it. The keep rules
are the four ``keep_*`` settings, ``untagged = "keep"`` for untagged manifests, a current
tag outside ``tags_include``/``tags_exclude``, an immutable tag, a reference from a running
workload, and being a child of a kept index or a referrer of a kept subject. Everything
else in the policy's repositories is deleted (into the trash). A policy with no keep rule
is refused: it would delete everything.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from dockyard.values import ConfigError, parse_duration

_KEYS = {"repositories", "tags_include", "tags_exclude", "keep_tag_revisions", "keep_recent", "keep_pushed_within",
         "keep_pulled_within", "untagged", "immutable_tags", "schedule"}


def _globs(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key} must be a list of glob patterns")
    return tuple(value)


MAX_COUNT = 2**31 - 1
MAX_DURATION = 100 * 365 * 86400.0
"""Longer than any registry keeps anything: larger values (or NaN, Infinity) are typos or attacks,
and a non-finite one cannot even be written back as JSON."""


def _count(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ConfigError(f"{key} must be an integer from 0 to {MAX_COUNT}")
    return value


def _duration(value: Any, key: str) -> float:
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        # "--keep-younger-than 3" meant 3 seconds, and a prune then deleted nearly everything
        raise ConfigError(f"{key} {value.strip()!r} needs a unit (e.g. 30m, 12h, 7d): a bare number would be seconds")
    too_long = ConfigError(f"{key} must be a duration from 0 to 100 years (36500d)")
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_DURATION:
        raise too_long  # before float(): an int of 400 digits overflows it
    seconds = parse_duration(value)
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_DURATION:
        raise too_long
    return seconds


@dataclass(frozen=True)
class Policy:
    name: str
    repositories: tuple[str, ...] = ("*",)
    tags_include: tuple[str, ...] = ("*",)
    tags_exclude: tuple[str, ...] = ()
    keep_tag_revisions: int | None = None
    keep_recent: int | None = None
    keep_pushed_within: float | None = None
    keep_pulled_within: float | None = None
    untagged: str = "delete"
    immutable_tags: tuple[str, ...] = ()
    schedule: float | None = None

    @classmethod
    def parse(cls, name: str, doc: Mapping[str, Any]) -> "Policy":
        if not isinstance(doc, Mapping):
            raise ConfigError(f"policy {name}: must be a table")
        unknown = set(doc) - _KEYS
        if unknown:
            raise ConfigError(f"policy {name}: unknown keys {', '.join(sorted(unknown))}")
        try:
            untagged = doc.get("untagged", "delete")
            if untagged not in ("delete", "keep"):
                raise ConfigError("untagged must be 'delete' or 'keep'")
            policy = cls(
                name=name,
                repositories=_globs(doc.get("repositories", ["*"]), "repositories"),
                tags_include=_globs(doc.get("tags_include", ["*"]), "tags_include"),
                tags_exclude=_globs(doc.get("tags_exclude", []), "tags_exclude") if doc.get("tags_exclude") else (),
                keep_tag_revisions=_count(doc.get("keep_tag_revisions"), "keep_tag_revisions"),
                keep_recent=_count(doc.get("keep_recent"), "keep_recent"),
                keep_pushed_within=_duration(doc["keep_pushed_within"], "keep_pushed_within") if doc.get("keep_pushed_within") is not None else None,
                keep_pulled_within=_duration(doc["keep_pulled_within"], "keep_pulled_within") if doc.get("keep_pulled_within") is not None else None,
                untagged=untagged,
                immutable_tags=_globs(doc.get("immutable_tags", []), "immutable_tags") if doc.get("immutable_tags") else (),
                schedule=_duration(doc["schedule"], "schedule") if doc.get("schedule") else None,
            )
        except ConfigError as exc:
            raise ConfigError(f"policy {name}: {exc}") from exc
        if not policy.has_keep_rule:
            raise ConfigError(f"policy {name}: no keep rule (keep_tag_revisions, keep_recent, keep_pushed_within, "
                              f"keep_pulled_within or untagged = 'keep'); it would delete everything")
        return policy

    @property
    def has_keep_rule(self) -> bool:
        return any(v is not None for v in (self.keep_tag_revisions, self.keep_recent, self.keep_pushed_within,
                                           self.keep_pulled_within)) or self.untagged == "keep"

    def applies_to(self, repository: str) -> bool:
        return any(fnmatch.fnmatchcase(repository, g) for g in self.repositories)

    def tag_in_scope(self, tag: str) -> bool:
        return (any(fnmatch.fnmatchcase(tag, g) for g in self.tags_include)
                and not any(fnmatch.fnmatchcase(tag, g) for g in self.tags_exclude))

    def to_doc(self) -> dict:
        doc = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k != "name"}
        return {k: v for k, v in doc.items() if v is not None and v != []}


def parse_policies(value: Any) -> dict[str, Policy]:
    """The ``retention`` setting: a TOML table of tables, or JSON text from the environment."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise ConfigError(f"retention must be JSON: {exc}") from exc
    if not isinstance(value, Mapping):
        raise ConfigError("retention must map policy names to policies")
    return {name: Policy.parse(name, doc) for name, doc in value.items()}


@dataclass
class ImmutableRules:
    """``immutable_tags`` setting entries ``"REPO_GLOB:TAG_GLOB"`` plus each policy's tag globs."""

    rules: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def build(cls, setting: tuple[str, ...] | list[str], policies: Mapping[str, Policy]) -> "ImmutableRules":
        rules = []
        for entry in setting:
            repo, sep, tag = entry.rpartition(":")
            rules.append((repo if sep else "*", tag))
        for p in policies.values():
            rules.extend((r, t) for r in p.repositories for t in p.immutable_tags)
        return cls(rules)

    def matches(self, repository: str, tag: str) -> bool:
        return any(fnmatch.fnmatchcase(repository, r) and fnmatch.fnmatchcase(tag, t) for r, t in self.rules)
