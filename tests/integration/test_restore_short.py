"""Restore and purge take the short digests ``dockyard trash list`` prints (issue 13)."""

import pytest

from dockyard.errors import RegistryError
from dockyard.lifecycle import deletes, trash
from dockyard.registry import manifests
from tests.lifecycle_support import make_registry, put_image
from tests.support import image_manifest, make_config, make_layer, sha256


@pytest.fixture
def reg(tmp_path, request):
    with make_registry(tmp_path, getattr(request, "param", "sqlite")) as r:
        yield r


def _colliding_seeds(chars: int) -> tuple[str, str, str]:
    """Two seeds whose images' digests share their first ``chars`` hex digits (a birthday search)."""
    seen = {}
    for i in range(100_000):
        seed = f"collide-{i}"
        digest = sha256(image_manifest(make_config(seed), [make_layer(seed)]))
        prefix = digest[: 7 + chars]
        if prefix in seen:
            return seen[prefix], seed, prefix
        seen[prefix] = seed
    raise AssertionError("no collision found")


def test_restore_by_short_digest(reg):
    d, _ = put_image(reg, "team/app", "v1", "short")
    deletes.delete_manifest(reg, "team/app", d)
    short = d[:19]  # sha256: + 12 hex, what trash list prints
    result = trash.restore(reg, f"team/app@{short}")
    assert result.digest == d and result.restored_tags == ["v1"]
    assert manifests.get(reg, "team/app", "v1").digest == d


def test_purge_by_short_digest(reg):
    d, _ = put_image(reg, "team/app", "v1", "purge-short")
    deletes.delete_manifest(reg, "team/app", d)
    result = trash.purge(reg, f"team/app@{d[:25]}", dry_run=True)
    assert result.reference == f"team/app@{d}"
    trash.purge(reg, f"team/app@{d[:19]}")
    assert trash.listing(reg)["images"] == []


@pytest.mark.parametrize("reg", ["sqlite", "postgres"], indirect=True)
def test_too_short_unknown_and_ambiguous(reg):
    d, _ = put_image(reg, "team/app", "v1", "x")
    deletes.delete_manifest(reg, "team/app", d)
    with pytest.raises(RegistryError, match="at least 12 hex digits") as e:
        trash.restore(reg, f"team/app@{d[:15]}")
    assert e.value.code == "DIGEST_INVALID"
    with pytest.raises(RegistryError, match="no image of team/app has a digest starting with") as e:
        trash.restore(reg, "team/app@sha256:000000000000")
    assert e.value.code == "MANIFEST_UNKNOWN"
    first, second, prefix = _colliding_seeds(3)
    digests = []
    for seed in (first, second):
        digest, _ = put_image(reg, "team/twins", None, seed)
        deletes.delete_manifest(reg, "team/twins", digest)
        digests.append(digest)
    with pytest.raises(RegistryError, match=f"{prefix} is ambiguous: 2 images of team/twins start with it") as e:
        trash.expand_short(reg, f"team/twins@{prefix}", min_hex=3)
    assert e.value.code == "DIGEST_INVALID" and sorted(e.value.detail["candidates"]) == sorted(digests)
    # one of the two restored: the prefix names the one still in the trash
    trash.restore(reg, f"team/twins@{digests[0]}")
    assert trash.expand_short(reg, f"team/twins@{prefix}", min_hex=3) == f"team/twins@{digests[1]}"


def test_restore_cli_takes_the_printed_short_digest(tmp_path, capsys):
    from dockyard.cli import main

    with make_registry(tmp_path, "sqlite") as reg:
        d, _ = put_image(reg, "app", "v1", "cli-short")
        deletes.delete_manifest(reg, "app", d)
    assert main(["trash", "list", "--data-dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    printed = next(line.split()[0] for line in listed.splitlines() if line.startswith("app@"))
    assert printed == f"app@{d[:19]}"
    assert main(["restore", printed, "--data-dir", str(tmp_path)]) == 0
    assert f"restored app@{d}" in capsys.readouterr().out
    assert main(["restore", "app@sha256:0123456789ab", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no image of app has a digest starting with sha256:0123456789ab" in err
    # errors read as sentences: details as "key: value", never a dict's repr
    assert err.strip() == ("dockyard: cannot restore app@sha256:0123456789ab: no image of app has a digest "
                           "starting with sha256:0123456789ab (reference: app@sha256:0123456789ab)")
    assert main(["trash", "purge", "app@sha256:" + "0" * 64, "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (f"dockyard: cannot purge app@sha256:{'0' * 64}: image is not in the trash "
                           f"(reference: app@sha256:{'0' * 64})")
