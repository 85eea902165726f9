"""The retention policies and immutable-tag rules in force: those configured, and those
stored through the admin API (the configuration wins on a name clash)."""

from __future__ import annotations

import logging

from dockyard.errors import RegistryError
from dockyard.meta.retention import RetentionStore
from dockyard.policies import ImmutableRules, Policy

log = logging.getLogger(__name__)


def policies(reg) -> dict[str, Policy]:
    """Configured policies and those declared through the admin API (config wins on a name clash)."""
    with reg.db.read() as conn:
        return policies_in(conn, reg.config)


def policies_in(conn, cfg) -> dict[str, Policy]:
    """:func:`policies` inside the caller's transaction. A stored policy that no longer parses
    (stored by an older version that accepted it) is skipped with a warning, never a 500."""
    found = dict(cfg.retention)
    for name, body in RetentionStore(conn).policies().items():
        if name in found:
            continue
        try:
            found[name] = Policy.parse(name, body)
        except ValueError as exc:
            log.warning("retention policy %s is stored but invalid, ignored until replaced or deleted: %s", name, exc)
    return found


def immutable_rules(conn, cfg) -> ImmutableRules:
    """Immutable tag patterns: the setting, the configured policies and those declared by API."""
    return ImmutableRules.build(cfg.immutable_tags, policies_in(conn, cfg))


def check_mutable(conn, cfg, repo_name: str, tag_names) -> None:
    rules = immutable_rules(conn, cfg)
    frozen = sorted(t for t in tag_names if rules.matches(repo_name, t))
    if frozen:
        raise RegistryError("DENIED", "tag is immutable", {"repository": repo_name, "tags": frozen})


def store_policy(reg, name: str, policy: Policy, actor: str | None) -> None:
    """Declare (or replace) a retention policy through the admin API."""
    with reg.db.write() as conn:
        RetentionStore(conn).put_policy(name, policy.to_doc(), reg.now(), actor)


def delete_policy(reg, name: str) -> bool:
    """Remove a policy declared through the admin API; False if there was none."""
    with reg.db.write() as conn:
        return RetentionStore(conn).delete_policy(name)


def prune_audit(reg) -> list:
    """The audit trail of prune runs."""
    with reg.db.read() as conn:
        return RetentionStore(conn).audit_log()
