"""The ``mirrors`` setting: TOML tables or JSON, checked up front."""

import pytest

from dockyard.config import ConfigError, from_values


def test_mirrors_from_toml_tables_and_json():
    cfg = from_values({"mirrors": {"hub": {"prefix": "hub/", "url": "http://127.0.0.1:5001/", "username": "u",
                                           "password": "p"}},
                       "mirror_manifest_ttl": "5m", "mirror_max_size": "2GiB"})
    assert cfg.mirrors == {"hub": {"prefix": "hub/", "url": "http://127.0.0.1:5001", "username": "u",
                                   "password": "p"}}
    assert cfg.mirror_manifest_ttl == 300 and cfg.mirror_max_size == 2 * 1024 ** 3
    env = from_values({"mirrors": '{"q": {"prefix": "quay/io/", "url": "https://quay.io"}}'})
    assert env.mirrors["q"]["prefix"] == "quay/io/" and env.mirrors["q"]["username"] == ""


@pytest.mark.parametrize("doc, message", [
    ({"hub": {"prefix": "hub", "url": "http://x"}}, "prefix must be a repository path ending in '/'"),
    ({"hub": {"prefix": "../", "url": "http://x"}}, "prefix must be"),
    ({"hub": {"prefix": "hub/"}}, "url is required"),
    ({"hub": {"prefix": "hub/", "url": "ftp://x"}}, "url must be http"),
    ({"hub": {"prefix": "hub/", "url": "http://x", "token": "t"}}, "unknown keys token"),
    ({"a": {"prefix": "hub/", "url": "http://x"}, "b": {"prefix": "hub/lib/", "url": "http://y"}}, "overlaps"),
    ("not json", "mirrors must be JSON"),
])
def test_bad_mirrors_are_refused(doc, message):
    with pytest.raises(ConfigError, match=message):
        from_values({"mirrors": doc})
