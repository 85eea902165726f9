"""Pure parsers of setting values (durations, sizes, booleans) and the error they raise.

The bottom of the settings layer: ``config`` (the settings) and ``policies`` (retention
policy documents) both parse with these, and neither imports the other's users.
"""

from __future__ import annotations

import re
from typing import Any


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


class ConfigError(ValueError):
    """A setting has a value dockyard cannot use."""


def parse_duration(value: Any) -> float:
    """``90``, ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"2w"`` -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"negative duration {value}")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(f"invalid duration {value!r} (use e.g. 30s, 15m, 1h, 7d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


_SIZE = re.compile(r"^\s*(\d{1,15})\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


MAX_SIZE = 2 ** 62


def parse_size(value: Any) -> int:
    """``1048576``, ``"512KiB"``, ``"64MiB"``, ``"2G"`` -> bytes (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        m = _SIZE.match(str(value)[:64])
        if not m:
            raise ConfigError(f"invalid size {str(value)[:64]!r} (use e.g. 512KiB, 64MiB, 2GiB)")
        size = int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "")[:1].lower()]
    if size < 0:
        raise ConfigError(f"negative size {size}")
    if size > MAX_SIZE:  # a database integer column holds it, with room to add
        raise ConfigError(f"size {str(value)[:64]!r} is larger than 4 EiB")
    return size


def format_duration(seconds: float) -> str:
    """Seconds as a duration with its unit, the way settings are written: 600 -> ``10m``,
    604800 -> ``7d``, 90 -> ``90s``, 0.02 -> ``20ms``; parse_duration reads it back."""
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        if seconds >= _UNITS[unit] and (seconds / _UNITS[unit]).is_integer():
            return f"{int(seconds // _UNITS[unit])}{unit}"
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    """Bytes with a binary unit when exact: 67108864 -> ``64MiB``; parse_size reads it back."""
    for unit, factor in (("TiB", 1024 ** 4), ("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"invalid boolean {value!r}")
