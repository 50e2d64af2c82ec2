"""Positions in a ``files`` source: ``<object key>#<line offset>``, readable and typeable.

``day=2026-11-25/part-0003.jsonl.gz#700`` means: the first 700 lines of that object are done; the next
record is line 700 (0-based). Order: by key, then by offset as a number
(:func:`leanops.protocol.model.position_order`).
"""

from __future__ import annotations

from leanops.errors import InvalidInput


def format_position(key: str, offset: int) -> str:
    return f"{key}#{offset}"


def parse_position(position: str) -> tuple[str, int]:
    """``(key, offset)`` of a position; :class:`InvalidInput` if it has no ``#<offset>`` suffix."""
    key, sep, offset = position.rpartition("#")
    if not sep or not key or not offset.isdigit():
        raise InvalidInput(
            f"invalid position {position!r}: expected <object key>#<line offset>, e.g. part-0001.jsonl#700"
        )
    return key, int(offset)
