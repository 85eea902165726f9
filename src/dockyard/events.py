"""Events: what every change of the registry says, and where it is sent (pure definitions).

An event is written to the outbox (``meta.events``) in the transaction of the change it
describes, so it exists exactly when the change does. Kinds::

    push      a manifest pushed (by digest, or by tag: ``tag`` is set)
    delete    a tag or an image deleted (to the trash), a layer link or a repository deleted
    restore   an image or a tag restored from the trash
    purge     an image purged from the trash (its data goes with the next collection)
    prune     a confirmed prune run (one event per run; repository empty)
    gc        a collection run that reclaimed something (one event per run)
    quota     a quota's soft threshold crossed upwards by a push

Delivery (``api.webhooks``) POSTs each event as JSON to every ``[notifications.NAME]``
endpoint that subscribes to its kind, signed with HMAC-SHA256 of the body under the
endpoint's secret (``X-Dockyard-Signature: sha256=<hex>``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Mapping

from dockyard.values import ConfigError, parse_duration

KINDS = ("push", "delete", "restore", "purge", "prune", "gc", "quota")
SIGNATURE_HEADER = "X-Dockyard-Signature"


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    events: tuple[str, ...] = KINDS
    secret: str = ""
    timeout: float = 5.0

    def wants(self, kind: str) -> bool:
        return kind in self.events

    @classmethod
    def parse(cls, name: str, doc: Any) -> "Endpoint":
        if not isinstance(doc, Mapping):
            raise ConfigError(f"notifications.{name} must be a table")
        unknown = set(doc) - {"url", "events", "secret", "timeout"}
        if unknown:
            raise ConfigError(f"notifications.{name}: unknown keys {', '.join(sorted(unknown))}")
        url = str(doc.get("url", ""))
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"notifications.{name}: url must be http:// or https://, got {url!r}")
        events = doc.get("events", list(KINDS))
        if isinstance(events, str):
            events = [e.strip() for e in events.split(",") if e.strip()]
        if not isinstance(events, (list, tuple)) or not all(e in KINDS for e in events):
            raise ConfigError(f"notifications.{name}: events must be a list of {', '.join(KINDS)}")
        timeout = parse_duration(doc.get("timeout", 5.0))
        if timeout <= 0:
            raise ConfigError(f"notifications.{name}: timeout must be positive")
        return cls(name, url, tuple(events), str(doc.get("secret", "")), timeout)


def parse_notifications(value: Any) -> dict[str, Endpoint]:
    """The ``notifications`` setting: a TOML table of tables, or JSON text from the environment."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise ConfigError(f"notifications must be JSON: {exc}") from exc
    if not isinstance(value, Mapping):
        raise ConfigError("notifications must map endpoint names to tables")
    return {name: Endpoint.parse(name, doc) for name, doc in value.items()}


def body(event_id: int, kind: str, repository: str | None, actor: str | None, at: float,
         payload: Mapping[str, Any]) -> bytes:
    """The JSON document an endpoint receives (and ``dockyard events --output json`` lists)."""
    doc = {"id": event_id, "kind": kind, "repository": repository, "actor": actor, "at": at, **payload}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: str, data: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def verify(secret: str, data: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, data), signature or "")
