"""Repository names and tags, checked against the distribution spec's grammar.

A name that passes :func:`check_name` is safe to use as part of a storage key:
it has no ``..``, no leading ``/``, no empty component and only ``[a-z0-9._/-]``.
"""

from __future__ import annotations

import re

NAME_MAX = 255
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")


def is_valid_name(name: str) -> bool:
    return 0 < len(name) <= NAME_MAX and NAME_RE.match(name) is not None


def is_valid_tag(tag: str) -> bool:
    return TAG_RE.match(tag) is not None
