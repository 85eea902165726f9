"""The notifications and quotas settings: TOML tables or JSON text, refused with a clear message."""

from __future__ import annotations

import pytest

from dockyard import config, events
from dockyard.quotas import Quota
from dockyard.values import ConfigError


def test_toml_tables(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[notifications.ci]\nurl = "http://127.0.0.1:9/h"\nevents = ["push"]\nsecret = "k"\n'
                    'timeout = "2s"\n[quotas.team-a]\nrepositories = "team-a/*"\nhard = "10GiB"\nsoft = 0.8\n')
    cfg = config.load(path, env={})
    ep = cfg.notifications["ci"]
    assert (ep.url, ep.events, ep.secret, ep.timeout) == ("http://127.0.0.1:9/h", ("push",), "k", 2.0)
    assert ep.wants("push") and not ep.wants("delete")
    assert cfg.quotas["team-a"] == Quota("team-a", "team-a/*", 10 << 30, 0.8)


def test_json_from_the_environment():
    cfg = config.load(env={"DOCKYARD_NOTIFICATIONS": '{"a": {"url": "https://x.example/h"}}',
                           "DOCKYARD_QUOTAS": '{"q": {"repositories": "t/*", "hard": 100}}'})
    assert cfg.notifications["a"].events == events.KINDS
    assert cfg.quotas["q"].soft == 0.8


@pytest.mark.parametrize("value, message", [
    ({"a": {"url": "ftp://x"}}, "url must be http"),
    ({"a": {"url": "http://x", "events": ["pushed"]}}, "events must be a list"),
    ({"a": {"url": "http://x", "timeout": "0s"}}, "timeout must be positive"),
    ({"a": {"url": "http://x", "retries": 3}}, "unknown keys retries"),
    ("{not json", "notifications must be JSON"),
])
def test_bad_notifications(value, message):
    with pytest.raises(ConfigError, match=message):
        events.parse_notifications(value)


@pytest.mark.parametrize("doc, message", [
    ({"hard": 1}, "repositories must be a glob"),
    ({"repositories": "t/[ab]", "hard": 1}, "no \\[..\\] classes"),
    ({"repositories": "t/*"}, "hard .* is required"),
    ({"repositories": "t/*", "hard": "lots"}, "invalid size"),
    ({"repositories": "t/*", "hard": 1, "soft": 1.5}, "soft must be a fraction"),
])
def test_bad_quotas(doc, message):
    with pytest.raises(ConfigError, match=message):
        Quota.parse("q", doc)


def test_glob_and_its_like_pattern_agree():
    q = Quota("q", "team_a/*/x?", 1)
    assert q.applies_to("team_a/app/x1") and q.applies_to("team_a/a/b/x2")
    assert not q.applies_to("teamba/app/x1") and not q.applies_to("team_a/app/x")
    assert q.like() == "team\\_a/%/x_"


def test_signature_round_trip():
    body = events.body(7, "push", "t/a", "alice", 1.5, {"digest": "sha256:00"})
    sig = events.sign("k", body)
    assert sig.startswith("sha256=") and events.verify("k", body, sig)
    assert not events.verify("other", body, sig) and not events.verify("k", body + b" ", sig)
