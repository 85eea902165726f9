"""Who may do what on which repository: global roles plus access rules on repository globs.

Roles are ordered ``none`` < ``pull`` < ``push`` < ``admin``. A user's role on a repository
is the highest of

- the global role: ``auth_roles[user]``, else ``auth_default_role`` for a signed-in user,
  ``anonymous_role`` for a request without credentials (it applies to every repository);
- the role of every access rule that names the user (directly, through a group, through
  ``"*"`` = every signed-in user, or ``"anonymous"``) and whose glob matches the repository.

In the configuration file::

    auth_default_role = "none"        # the default once access rules exist
    [groups]
    team-a = ["alice", "bob"]
    [[access]]
    repositories = "team-a/*"         # globs (fnmatch; * also crosses /), one or a list
    groups = ["team-a"]               # and/or users = ["carol"]; "*" = every signed-in user
    role = "push"
    [[access]]
    repositories = "*"
    users = ["*"]
    role = "pull"

Rules only add rights; administration (the ``/admin`` API) needs the global ``admin`` role.
This module is pure: no HTTP, no database. ``api/auth.py`` asks it one question per request.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from dockyard.oci.names import is_valid_name
from dockyard.values import ConfigError

ROLES = ("none", "pull", "push", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
EVERYONE = "*"
ANONYMOUS = "anonymous"
_RULE_KEYS = {"repositories", "users", "groups", "role"}
MAX_CACHED_USERS = 10_000


def higher(a: str, b: str) -> str:
    return a if RANK[a] >= RANK[b] else b


def lower(a: str, b: str) -> str:
    return a if RANK[a] <= RANK[b] else b


def _names(value: Any, key: str, *, allow_empty: bool = True) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{key} must be a list of non-empty strings")
    if not value and not allow_empty:
        raise ConfigError(f"{key} must not be empty")
    return tuple(v.strip() for v in value)


def _document(value: Any, what: str) -> Any:
    """A TOML value as is; the environment's text as JSON."""
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ConfigError(f"{what} in the environment must be JSON: {exc}") from exc
    return value


def parse_groups(value: Any) -> dict[str, tuple[str, ...]]:
    """``{"team-a": ["alice", "bob"]}`` (TOML ``[groups]``, or JSON in the environment)."""
    doc = _document(value, "groups")
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError("groups must be a table of group = [users]")
    return {str(name): _names(members, f"group {name!r}") for name, members in doc.items()}


@dataclass(frozen=True, slots=True)
class Rule:
    repositories: tuple[str, ...]
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    role: str = "pull"


def parse_rules(value: Any) -> tuple[Rule, ...]:
    """A list of ``{repositories, users | groups, role}`` (TOML ``[[access]]``, or JSON)."""
    doc = _document(value, "access")
    if doc is None:
        return ()
    if isinstance(doc, Mapping):
        doc = [doc]
    if not isinstance(doc, (list, tuple)):
        raise ConfigError("access must be a list of rules ([[access]] tables)")
    rules = []
    for i, item in enumerate(doc, 1):
        if isinstance(item, Rule):
            rules.append(item)
            continue
        if not isinstance(item, Mapping):
            raise ConfigError(f"access rule {i} must be a table")
        unknown = set(item) - _RULE_KEYS
        if unknown:
            raise ConfigError(f"access rule {i}: unknown keys {', '.join(sorted(unknown))}")
        role = str(item.get("role", "")).strip()
        if role not in ROLES[1:]:
            raise ConfigError(f"access rule {i}: role must be pull, push or admin, not {role!r}")
        users = _names(item.get("users", ()), f"access rule {i}: users")
        groups = _names(item.get("groups", ()), f"access rule {i}: groups")
        if not users and not groups:
            raise ConfigError(f"access rule {i} names no users and no groups")
        if "repositories" not in item:
            raise ConfigError(f"access rule {i} names no repositories")
        repos = _names(item["repositories"], f"access rule {i}: repositories", allow_empty=False)
        rules.append(Rule(repos, users, groups, role))
    return tuple(rules)


@dataclass(frozen=True)
class Access:
    """Everything the role question needs; built once from the settings."""

    roles: Mapping[str, str]
    default_role: str
    anonymous_role: str
    groups: Mapping[str, tuple[str, ...]]
    rules: tuple[Rule, ...] = ()

    def __post_init__(self):
        missing = {g for r in self.rules for g in r.groups} - set(self.groups) - {EVERYONE, ANONYMOUS}
        if missing:
            raise ConfigError(f"access rules name groups that [groups] does not define: {', '.join(sorted(missing))}")
        member_of: dict[str, set[str]] = {}
        for group, users in self.groups.items():
            for user in users:
                member_of.setdefault(user, set()).add(group)
        object.__setattr__(self, "_member_of", member_of)
        object.__setattr__(self, "_matchers", {})  # user -> ((role, one regex of its globs), ...)

    def global_role(self, user: str | None) -> str:
        if user is None:
            return self.anonymous_role
        return self.roles.get(user, self.default_role)

    def _applies(self, rule: Rule, user: str | None) -> bool:
        if user is None:
            return ANONYMOUS in rule.users or ANONYMOUS in rule.groups
        if user in rule.users or EVERYONE in rule.users or EVERYONE in rule.groups:
            return True
        groups = self._member_of.get(user, ())
        return any(g in groups for g in rule.groups)

    def _matcher(self, user: str | None) -> tuple[tuple[str, re.Pattern], ...]:
        """The rules that name ``user``, as one compiled pattern per role, highest role first
        (built once per user: a request costs at most three regex matches, whatever the rules)."""
        found = self._matchers.get(user)
        if found is None:
            globs: dict[str, list[str]] = {}
            for rule in self.rules:
                if self._applies(rule, user):
                    globs.setdefault(rule.role, []).extend(rule.repositories)
            found = tuple((role, re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs[role])))
                          for role in reversed(ROLES) if role in globs)
            if len(self._matchers) >= MAX_CACHED_USERS:
                self._matchers.clear()
            self._matchers[user] = found
        return found

    def role(self, user: str | None, repository: str | None = None) -> str:
        """The role of ``user`` (None = anonymous) on ``repository``; without one, the global role."""
        role = self.global_role(user)
        if repository is None:
            return role
        for granted, pattern in self._matcher(user):
            if RANK[granted] <= RANK[role]:
                break
            if pattern.match(repository):
                return granted
        return role

    def best_role(self, user: str | None) -> str:
        """The highest role ``user`` holds on any repository (what ``GET /v2/`` asks)."""
        role = self.global_role(user)
        matchers = self._matcher(user)
        return higher(role, matchers[0][0]) if matchers else role

    def restricted(self, user: str | None, role: str = "pull") -> bool:
        """True if ``user`` lacks ``role`` on some repository (listings must be filtered)."""
        return RANK[self.global_role(user)] < RANK[role]


# ---- the docker token protocol's actions ------------------------------------

def role_of_actions(actions: Iterable[str]) -> str:
    """The role a token's actions on a repository amount to."""
    actions = set(actions)
    if actions & {"push", "delete", "*"}:
        return "admin" if "*" in actions else "push"
    return "pull" if "pull" in actions else "none"


def actions_of_role(role: str, requested: Iterable[str]) -> list[str]:
    """The requested actions (``pull``, ``push``, ``delete``, ``*``) a role allows."""
    allowed = {"none": set(), "pull": {"pull"}, "push": {"pull", "push", "delete"},
               "admin": {"pull", "push", "delete", "*"}}[role]
    return sorted(a for a in set(requested) if a in allowed)


MAX_SCOPES = 64
"""Repositories one token may name (a token is a header: it must stay small)."""


def parse_scopes(values: Iterable[str]) -> dict[str, set[str]]:
    """``repository:NAME:pull,push`` scope parameters -> {NAME: actions}; other types, invalid
    names and unknown actions are ignored, and at most :data:`MAX_SCOPES` repositories kept.
    A parameter may hold several scopes separated by spaces (the token spec allows both forms)."""
    out: dict[str, set[str]] = {}
    for value in values:
        for scope in value.split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = {a for a in actions.split(",") if a in ("pull", "push", "delete", "*")}
            if kind == "repository" and is_valid_name(name) and wanted:
                if name not in out and len(out) >= MAX_SCOPES:
                    continue
                out.setdefault(name, set()).update(wanted)
    return out
