"""The bounds hostile input meets before it reaches int(), json or the database (issue 10)."""

import json

import pytest

from dockyard.api.errors import status_and_headers
from dockyard.api.blobs import parse_range
from dockyard.api.common import MAX_UINT, parse_uint
from dockyard.config import ConfigError
from dockyard.errors import RegistryError
from dockyard.policies import MAX_DURATION, Policy
from dockyard.oci.manifest import JSONTooDeep, ManifestInvalid, loads_bounded, nesting, parse


def error():
    return RegistryError("PAGINATION_NUMBER_INVALID", "bad number")


@pytest.mark.parametrize("text,value", [("0", 0), ("7", 7), ("007", 7), ("0" * 5000 + "12", 12),
                                        (str(MAX_UINT), MAX_UINT)])
def test_parse_uint_accepts(text, value):
    assert parse_uint(text, error) == value


@pytest.mark.parametrize("text", ["", "-1", "+1", " 1", "1 ", "1e3", "0x1", "\u00b2", "\u0661", "1.0",
                                  str(MAX_UINT + 1), "9" * 20, "9" * 5000])
def test_parse_uint_refuses(text):
    with pytest.raises(RegistryError) as info:
        parse_uint(text, error)
    assert info.value.code == "PAGINATION_NUMBER_INVALID"


def test_parse_uint_saturates_and_bounds():
    assert parse_uint("9" * 5000, error, saturate=True) == MAX_UINT
    assert parse_uint("11", error, maximum=10, saturate=True) == 10
    with pytest.raises(RegistryError):
        parse_uint("11", error, maximum=10)


def test_parse_range_with_numbers_past_any_blob():
    huge = "9" * 5000
    assert parse_range(f"bytes=2-{huge}", 10) == (2, 9)
    assert parse_range(f"bytes=-{huge}", 10) == (0, 9)
    for header in (f"bytes={huge}-", f"bytes={huge}-{huge}", "bytes=10-"):
        with pytest.raises(RegistryError) as info:
            parse_range(header, 10)
        assert status_and_headers(info.value) == (416, {"Content-Range": "bytes */10"})
    assert parse_range("bytes=\u0661-", 10) is None  # not ASCII digits: not a range this server knows


def test_nesting_counts_levels_without_recursion():
    assert nesting(1) == 0 and nesting([]) == 1 and nesting({"a": [1, {"b": []}]}) == 4
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert nesting(deep, stop_after=64) == 65


@pytest.mark.parametrize("depth", [65, 500, 999, 1000, 100_000])
def test_loads_bounded_refuses_deep_json(depth):
    for text in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        with pytest.raises(JSONTooDeep):
            loads_bounded(text)
    with pytest.raises(ValueError):  # unclosed: too deep or not JSON, whichever the parser meets first
        loads_bounded("[" * depth)


def test_loads_bounded_allows_64_levels_and_brackets_in_strings():
    assert nesting(loads_bounded("[" * 64 + "]" * 64)) == 64
    assert loads_bounded(json.dumps({"a": "[" * 5000})) == {"a": "[" * 5000}


def test_manifest_parse_deep_json_is_manifest_invalid():
    with pytest.raises(ManifestInvalid, match="nested too deep"):
        parse(b"[" * 1000 + b"]" * 1000)


@pytest.mark.parametrize("doc", [
    {"keep_pushed_within": float("nan")}, {"keep_pushed_within": float("inf")},
    {"keep_pulled_within": 1e300}, {"keep_pushed_within": 10**400}, {"keep_pushed_within": "9" * 400 + "d"},
    {"keep_pushed_within": MAX_DURATION + 1}, {"keep_recent": 1, "schedule": float("nan")},
    {"keep_recent": 2**31}, {"keep_tag_revisions": 10**30},
])
def test_policy_refuses_absurd_values(doc):
    with pytest.raises(ConfigError):
        Policy.parse("p", doc)


def test_policy_accepts_long_but_sane_values():
    p = Policy.parse("p", {"keep_pushed_within": "36500d", "keep_recent": 2**31 - 1, "schedule": "1w"})
    assert p.keep_pushed_within == MAX_DURATION and json.dumps(p.to_doc(), allow_nan=False)


@pytest.mark.parametrize("text", ["3", " 3 ", "7.5"])
def test_a_policy_duration_written_as_text_needs_a_unit(text):
    """``dockyard prune --keep-younger-than 3`` meant three seconds: it is refused instead."""
    with pytest.raises(ConfigError, match="needs a unit"):
        Policy.parse("ad-hoc", {"keep_pushed_within": text})
    assert Policy.parse("ad-hoc", {"keep_pushed_within": f"{text.strip()}d"}).keep_pushed_within > 0
    assert Policy.parse("stored", {"keep_pushed_within": 259200}).keep_pushed_within == 259200  # documents keep seconds


def test_prune_refuses_a_bare_number_for_keep_younger_than(tmp_path, capsys):
    from dockyard.cli import main

    assert main(["prune", "--data-dir", str(tmp_path), "--keep-younger-than", "3"]) == 2
    assert "needs a unit" in capsys.readouterr().err


def test_a_maintenance_command_where_no_registry_is_says_so_and_creates_nothing(tmp_path, capsys):
    from dockyard.cli import main

    where = tmp_path / "not-a-registry"
    assert main(["gc", "--data-dir", str(where)]) == 2
    assert "no registry in" in capsys.readouterr().err
    assert not where.exists()
