"""What every source gives the batch runner: records after a position, where each came from, what it
could not parse, and an order on its positions (commits only move forward).

A *position* is a string a user can read and type back (design §4): ``<object key>#<line offset>`` for
``files`` sources, ``N:<number>`` or ``S:<string>`` (the last sort key read) for ``dynamodb`` sources.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Where a record or a malformed line came from, as written to quarantine objects, e.g.
#: ``{"source_key": "day=1/a.jsonl", "line": 7}`` (files) or ``{"table": "events", "sort_key": 17}``.
Origin = dict[str, Any]


@dataclass(frozen=True)
class Reject:
    """Input a source or a processor refused: where it came from, why, and the raw line or record."""

    origin: Origin
    reason: str
    raw: Any

    def to_json(self) -> dict[str, Any]:
        return {**self.origin, "reason": self.reason, "raw": self.raw}


@dataclass(frozen=True)
class SourceBatch:
    """Records read after a position.

    ``end`` is the position after the last item consumed (None if nothing was consumed; it may move
    past malformed or blank lines even when ``records`` is empty), ``more`` whether the source may hold
    items after ``end``, ``origin(i)`` where ``records[i]`` came from, ``rejects`` the malformed input the
    source could not parse, ``keys`` the objects the read opened (files sources; late-object detection),
    ``resume`` an optional hint for reading after ``end`` faster (see :meth:`Source.read`), ``skipped`` what
    the read's listing passed over without reading it (``[{"key": ..., "reason": ...}]``, files sources: a
    FIFO, a symlink out of the folder, a name that is not UTF-8), for the runner to report.
    """

    records: list[dict[str, Any]]
    end: str | None
    more: bool
    origin: Callable[[int], Origin]
    rejects: list[Reject] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    resume: dict[str, Any] | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)


class Source(ABC):
    """A topic's input (see the module docstring for positions)."""

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`~leanops.errors.ConfigError` with one clear line if the source does not exist
        (missing directory, bucket or table; wrong key schema)."""

    @abstractmethod
    def read(
        self,
        after: str | None,
        limit: int,
        should_stop: Callable[[], bool] = lambda: False,
        resume: dict[str, Any] | None = None,
        cut: Callable[[dict[str, Any]], Any] | None = None,
    ) -> SourceBatch:
        """Up to ``limit`` records after position ``after`` (None: from the beginning), streaming, so memory
        is bounded by the batch. Stops early, with at least one record read, once ``should_stop()``, and
        before the first record whose ``cut(record)`` differs from the first record's (a sink placing each
        batch by day reads one day per batch).
        Raises :class:`~leanops.errors.SourceError` for an object or item that cannot be read at all.

        ``resume`` is the ``resume`` of the batch that ended at ``after`` (the run state carries it from one
        batch to the next): advisory, JSON, checked by the source before use; the records read are the same
        with or without it. The position stays the only truth."""

    @abstractmethod
    def has_records_after(self, after: str | None, resume: dict[str, Any] | None = None) -> bool:
        """Whether anything follows ``after`` (a cheap look before a run invokes its process task).
        ``resume`` is the hint of the batch that ended at ``after`` (the checkpoint keeps it): advisory, as
        in :meth:`read`; the answer is the same with or without it."""

    @abstractmethod
    def order(self, position: str) -> Any:
        """A sort key for positions of this source: commits only move the checkpoint forward."""

    @abstractmethod
    def stem(self, after: str | None) -> str:
        """The part of a sink object's name that identifies a batch starting after ``after``: the same for
        every attempt of that batch, filename-safe, never starting with ``_`` or ``.``."""
