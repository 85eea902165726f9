import pytest

from dockyard.cache.prefetch import _platform_matches, canonical_target
from dockyard.errors import RegistryError

D = "sha256:" + "a" * 64


def test_targets_are_digests_or_references_without_host():
    assert canonical_target(D) == D
    assert canonical_target("alpine:latest") == "alpine:latest"
    assert canonical_target(f"team/app@{D}") == f"team/app@{D}"
    for bad in ("registry.example.com/team/app:v1", "team/app", "not a reference", "../x:1", "team/app:bad tag"):
        with pytest.raises(RegistryError):
            canonical_target(bad)


def test_platforms():
    assert _platform_matches({"os": "linux", "architecture": "amd64"}, ("linux/amd64",))
    assert not _platform_matches({"os": "linux", "architecture": "arm64"}, ("linux/amd64",))
    assert _platform_matches({"os": "linux", "architecture": "arm", "variant": "v7"}, ("linux/arm/v7",))
    assert not _platform_matches(None, ("linux/amd64",))
