"""The ``files`` source and sink over local directories: JSON Lines objects, optionally gzip-compressed.

Source: objects are read in lexical key order after the checkpoint position, streaming line by line, so
memory is bounded by the batch. A batch may end inside an object; the next resumes exactly there.
Sink: one object per batch, named from the topic and the batch's start position (its first record), written
atomically (temporary ``_`` name, then rename), so a retry of a batch from the same start replaces what a
crashed attempt left. Names starting with ``_`` or ``.`` are never input nor output.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from leanops.data.positions import format_position, parse_position
from leanops.errors import ConfigError, SourceError


@dataclass(frozen=True)
class SourceBatch:
    """Records read after a position, with where the batch started and ended.

    ``start`` is the position of the first record read (None if none), ``end`` the position after the last
    line consumed (None if nothing was consumed), ``more`` whether the source has lines after ``end``.
    """

    records: list[dict[str, Any]]
    start: str | None
    end: str | None
    more: bool


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


class LocalDirectory:
    """Objects under a local directory, keyed by their relative POSIX path."""

    def __init__(self, root: str | os.PathLike[str], *, must_exist: bool = True) -> None:
        self.root = Path(root)
        if must_exist and not self.root.is_dir():
            raise ConfigError(f"directory {self.root} does not exist: create it or fix the topic's uri")

    def keys(self, start_key: str | None = None) -> list[str]:
        """Keys in lexical order, from ``start_key`` (inclusive) on, skipping hidden names."""
        keys: list[str] = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not _hidden(d)]
            relative = Path(folder).relative_to(self.root)
            keys.extend((relative / f).as_posix() for f in files if not _hidden(f))
        return sorted(k for k in keys if start_key is None or k >= start_key)

    def open_text(self, key: str) -> IO[str]:
        path = self.root / key
        try:
            raw: Any = gzip.open(path, "rb") if key.endswith(".gz") else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror}") from exc
        return io.TextIOWrapper(raw, encoding="utf-8")

    def write_atomically(self, key: str, lines: Iterator[str]) -> None:
        """Write ``key`` whole or not at all: a temporary ``_`` name in the same folder, then a rename."""
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f"_tmp-{uuid.uuid4().hex}"
        try:
            with open(temporary, "w", encoding="utf-8") as out:
                out.writelines(lines)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)


class FilesSource:
    """Reads JSON Lines records after a checkpoint position (see the module docstring)."""

    def __init__(self, uri: str) -> None:
        self.directory = LocalDirectory(uri)

    def has_records_after(self, after: str | None) -> bool:
        """Whether a non-blank line follows ``after`` (a cheap look before a run invokes its process task)."""
        start_key, skip = parse_position(after) if after else (None, 0)
        keys = self.directory.keys(start_key)
        if any(key != start_key for key in keys):
            return True  # a later object (at worst only blank lines: the run then ends up to date)
        if not keys:
            return False
        # Only the checkpoint's own object is left: read past the lines already done.
        with self.directory.open_text(keys[0]) as lines:
            return any(line.strip() for index, line in enumerate(_lines(lines, keys[0])) if index >= skip)

    def read(
        self, after: str | None, limit: int, should_stop: Callable[[], bool] = lambda: False
    ) -> SourceBatch:
        """Up to ``limit`` records after position ``after``; stops early once ``should_stop()`` is true."""
        start_key, skip = parse_position(after) if after else (None, 0)
        records: list[dict[str, Any]] = []
        start: str | None = None
        end: str | None = None
        for key in self.directory.keys(start_key):
            first_line = skip if key == start_key else 0
            with self.directory.open_text(key) as lines:
                for index, line in enumerate(_lines(lines, key)):
                    if index < first_line:
                        continue
                    if line.strip():  # blank lines are consumed without counting, never cut a batch
                        if len(records) >= limit or (records and should_stop()):
                            return SourceBatch(records, start, end, more=True)
                        records.append(_record(line, key, index))
                        start = start or format_position(key, index)
                    end = format_position(key, index + 1)
        return SourceBatch(records, start, end, more=False)


def _lines(stream: IO[str], key: str) -> Iterator[str]:
    try:
        yield from stream
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise SourceError(f"object {key} is unreadable: {exc}") from exc


def _record(line: str, key: str, index: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SourceError(f"object {key} line {index}: not valid JSON ({exc.msg})") from exc
    if not isinstance(record, dict):
        raise SourceError(f"object {key} line {index}: expected a JSON object, got {type(record).__name__}")
    return record


def batch_object_name(topic: str, start: str) -> str:
    """The sink object of the batch whose first record is at ``start``: ``<topic>.<key>.<offset>.jsonl``.

    The start position is quoted into one file name (``/`` becomes ``%2F``), so names sort like positions
    within one source key and never collide.
    """
    key, offset = parse_position(start)
    return f"{topic}.{quote(key, safe='=-_.')}.{offset:010d}.jsonl"


class FilesSink:
    """Writes one JSON Lines object per batch (see the module docstring)."""

    def __init__(self, uri: str, topic: str) -> None:
        self.directory = LocalDirectory(uri, must_exist=False)
        self.topic = topic

    def write(self, start: str, records: list[dict[str, Any]]) -> str:
        """Write the batch starting at ``start``; returns the object's key. Replaces an earlier attempt."""
        key = batch_object_name(self.topic, start)
        self.directory.write_atomically(key, (json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        return key

    def objects(self) -> list[str]:
        """The output objects (hidden ``_`` names, such as temporary files, excluded)."""
        return self.directory.keys() if self.directory.root.is_dir() else []
