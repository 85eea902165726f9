"""Client input, checked once, as domain errors: repository names, digests, manifest references.

Pure (no database, no HTTP): the registry's reads and pushes and the lifecycle's deletes
check what a client sent with these before anything else happens.
"""

from __future__ import annotations

from dockyard.errors import RegistryError, digest_invalid
from dockyard.oci.digest import Digest, InvalidDigest
from dockyard.oci.names import is_valid_name, is_valid_tag


def check_name(name: str) -> str:
    if not is_valid_name(name):
        raise RegistryError("NAME_INVALID", "invalid repository name", {"name": name})
    return name


def check_digest(value: str) -> Digest:
    try:
        return Digest.parse(value)
    except InvalidDigest as exc:
        raise digest_invalid(str(exc), value) from exc


def is_digest_reference(reference: str) -> bool:
    return ":" in reference


def check_reference(reference: str, *, for_write: bool = False) -> str:
    """A tag or a digest, as a manifest reference.

    Reading an invalid tag answers 404 like any unknown reference (the conformance
    suite asks for that); pushing to one is a 400.
    """
    if is_digest_reference(reference):
        return str(check_digest(reference))
    if not is_valid_tag(reference):
        if for_write:
            raise RegistryError("MANIFEST_INVALID", "invalid tag", {"tag": reference})
        raise RegistryError("MANIFEST_UNKNOWN", "manifest unknown", {"reference": reference})
    return reference
