"""Input rules shared by the protocol, the topics file and the CLI, written once.

Every rule raises :class:`~leanops.errors.InvalidInput` with one line naming the value, what was expected
and how to fix it, *before* anything is written.
"""

from __future__ import annotations

import re

from leanops.errors import InvalidInput

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_OWNER_LENGTH = 1024
BACKFILL_ID_PREFIX = "bf-"
BACKFILL_ID_PATTERN = re.compile(r"bf-[0-9a-f]{12}")


def topic_name(value: object, *, what: str = "topic name") -> str:
    """Return ``value`` if it is a valid topic (or partition) name: ``[A-Za-z0-9_.-]``, 1..128 characters."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        shown = repr(value) if not isinstance(value, str) or len(value) <= 40 else repr(value[:40] + "...")
        length = f" ({len(value)} characters)" if isinstance(value, str) else ""
        raise InvalidInput(f"invalid {what} {shown}{length}: use 1 to 128 characters from A-Z a-z 0-9 _ . -")
    return value


def backfill_id(value: object) -> str:
    """Return ``value`` if it is a backfill id: ``bf-`` and 12 lowercase hex digits (``leanops backfill
    TOPIC --list`` shows them)."""
    if not isinstance(value, str) or not BACKFILL_ID_PATTERN.fullmatch(value):
        shown = repr(value)[:60]
        raise InvalidInput(
            f"invalid backfill id {shown}: expected bf- and 12 hex digits, e.g. bf-0123456789ab"
        )
    return value


def positive_int(value: object, *, what: str) -> int:
    """Return ``value`` if it is an integer > 0 (booleans are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"invalid {what} {value!r}: expected a whole number greater than 0")
    return value


def owner_id(value: object) -> str:
    """Return ``value`` if it can own a lock: a non-blank string (the execution ARN) of sane length."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_OWNER_LENGTH:
        raise InvalidInput(
            f"invalid lock owner {value!r}: expected the execution id, a non-empty string of at most "
            f"{MAX_OWNER_LENGTH} characters"
        )
    return value


def position(value: object, *, what: str = "position") -> str:
    """Return ``value`` if it is a non-empty position string."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"invalid {what} {value!r}: expected a non-empty position string")
    return value
