"""Validation of everything the store is handed, before anything is written: bad input raises
`InvalidInput` with a message that says what was wrong."""
from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from typing import Any

from faceprov.provenance import pdq as pdqmod

from .db import InvalidInput

SYSTEM_ACTOR = "system"
MAX_LIMIT = 10_000
MAX_FACES = 256
_SHA = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")


def check_sha256(value: Any, what: str = "sha256") -> str:
    if not isinstance(value, str) or not _SHA.match(value.strip().lower()):
        raise InvalidInput(f"malformed {what}: expected 64 hex digits, got {str(value)[:80]!r}")
    return value.strip().lower()


def check_pdq(value: Any, what: str = "PDQ hash") -> str:
    try:
        return pdqmod.normalize_hash(value)
    except pdqmod.InvalidHash as e:
        raise InvalidInput(f"malformed {what}: expected 64 hex digits, got {str(value)[:80]!r}") from e


def check_uuid(value: Any, what: str = "id") -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, AttributeError, TypeError):
        raise InvalidInput(f"malformed {what} {str(value)[:80]!r}: expected a UUID") from None


def check_text(value: Any, what: str, max_len: int, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must be a non-empty string")
    if len(value) > max_len or "\x00" in value:
        raise InvalidInput(f"{what} is longer than {max_len} characters or holds NUL")
    return value


def check_limit(limit: Any, max_limit: int = MAX_LIMIT) -> int:
    try:
        n = int(limit)
    except (TypeError, ValueError):
        raise InvalidInput(f"limit must be an integer, got {limit!r}") from None
    if n < 1 or n > max_limit:
        raise InvalidInput(f"limit must be within 1..{max_limit}, got {n}")
    return n


def check_strength(value: Any) -> str:
    """A preset name ('low', 'mid', 'high', ...) or a finite number, stored as text."""
    if isinstance(value, bool):
        raise InvalidInput("strength must be a preset name or a number")
    if isinstance(value, (int, float)):
        if not math.isfinite(float(value)):
            raise InvalidInput("strength must be finite")
        return repr(float(value))
    if isinstance(value, str) and re.match(r"^[A-Za-z0-9_.+-]{1,32}$", value):
        try:
            if not math.isfinite(float(value)):
                raise InvalidInput("strength must be finite")
        except ValueError:
            pass
        return value
    raise InvalidInput(f"strength must be a preset name or a number, got {str(value)[:40]!r}")


def check_time(value: Any, what: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        d = value
    else:
        try:
            d = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"{what}: expected an ISO-8601 date/time, got {str(value)[:80]!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    try:
        return d.astimezone(dt.timezone.utc)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 lies past year 9999 in UTC
        raise InvalidInput(f"{what}: {str(value)[:80]!r} is outside the years 1-9999 in UTC") from None


def parse_recognizer(key: Any) -> tuple[str, str]:
    """'name@version' or (name, version)."""
    if isinstance(key, (tuple, list)) and len(key) == 2:
        name, version = str(key[0]), str(key[1])
    elif isinstance(key, str) and "@" in key:
        name, version = key.rsplit("@", 1)
    elif isinstance(key, str):
        name, version = key, "1"
    else:
        raise InvalidInput(f"recognizer must be 'name@version', got {key!r}")
    for part, what in ((name, "recognizer name"), (version, "recognizer version")):
        if not _NAME.match(part):
            raise InvalidInput(f"malformed {what} {part[:80]!r}")
    return name, version


def _iso(d: dt.datetime | None) -> str | None:
    if d is None:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
