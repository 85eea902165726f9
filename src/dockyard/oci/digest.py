"""Content digests (``algorithm:hex``) as the OCI image spec defines them.

Only sha256 and sha512 are accepted: they are the registered algorithms, and
a registry must be able to verify every digest it stores.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

ALGORITHMS = {"sha256": 64, "sha512": 128}
_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_HEX = re.compile(r"^[a-f0-9]+$")


class InvalidDigest(ValueError):
    """The string is not a digest this registry can verify."""


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, value: str) -> "Digest":
        if not value or len(value) > 256 or not _GRAMMAR.match(value):
            raise InvalidDigest(f"invalid digest {value!r}")
        algorithm, _, encoded = value.partition(":")
        length = ALGORITHMS.get(algorithm)
        if length is None:
            raise InvalidDigest(f"unsupported digest algorithm {algorithm!r}")
        if len(encoded) != length or not _HEX.match(encoded):
            raise InvalidDigest(f"invalid {algorithm} digest {value!r}")
        return cls(algorithm, encoded)

    def hasher(self) -> "hashlib._Hash":
        return hashlib.new(self.algorithm)


def compute(data: bytes, algorithm: str = "sha256") -> Digest:
    return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())

