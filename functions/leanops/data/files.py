"""The ``files`` source and sink: JSON Lines objects (optionally ``.gz``) under a directory or an
``s3://bucket/prefix``, one code path for both (:mod:`leanops.data.storage`).

Source: objects are read in lexical key order after the checkpoint position ``<key>#<line offset>``,
streaming line by line, so memory is bounded by the batch, never by an object's size. A batch may end
inside an object; the next resumes exactly there. Keys must sort in arrival order (date/hour prefixes):
an object that lands with a key before the checkpoint is *late* (:mod:`leanops.data.late`).
Lines that are not JSON objects are not records: they are returned as rejects, for quarantine.

Sink: one object per batch, ``<topic>.<stem>.<fence>-<owner tag>.<jsonl|jsonl.gz|parquet>``, where the
stem names the position the batch starts after — the same for every attempt of that batch — and the
fence and owner tag name the writer, so a fenced-out writer never replaces the committed object of the
run that took over. Writes are atomic. Rejected input goes to ``_quarantine/<same name>.jsonl``.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any
from urllib.parse import quote

from leanops.data.positions import format_position, parse_position
from leanops.data.source import Origin, Reject, Source, SourceBatch
from leanops.data.storage import ObjectMissing, ObjectStore, open_store
from leanops.errors import SinkError, SourceError
from leanops.protocol.model import position_order

#: A batch opens at most this many objects, whose keys total at most this many bytes (bounds its run state
#: and its output record, which must fit a DynamoDB item: leanops.protocol.model.MAX_OUTPUT_BYTES).
MAX_OBJECTS_PER_BATCH = 1000
MAX_OPENED_KEY_BYTES = 100_000
#: How often (in lines) a read asks whether to stop before the deadline.
STOP_CHECK_EVERY = 1024
FIRST_BATCH_STEM = "origin"
QUARANTINE_PREFIX = "_quarantine/"
FORMATS = {
    "jsonl": {"none": "jsonl", "gzip": "jsonl.gz"},
    "parquet": {"none": "parquet", "snappy": "parquet", "zstd": "parquet", "gzip": "parquet"},
}
DEFAULT_COMPRESSION = {"jsonl": "none", "parquet": "snappy"}
_WRITER_SUFFIX = re.compile(r"\d+-[0-9a-f]{8}\.(jsonl|jsonl\.gz|parquet)")
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class FilesSource(Source):
    """Reads JSON Lines records after a checkpoint position (see the module docstring)."""

    def __init__(self, store: ObjectStore | str, *, max_objects: int = MAX_OBJECTS_PER_BATCH) -> None:
        self.store = open_store(store) if isinstance(store, str) else store
        self.max_objects = max_objects

    def check(self) -> None:
        self.store.check()

    def order(self, position: str) -> Any:
        parse_position(position)
        return position_order(position)

    def stem(self, after: str | None) -> str:
        if after is None:
            return FIRST_BATCH_STEM
        key, offset = parse_position(after)
        return f"{quote(key, safe='=-_.')}.{offset:010d}"

    def _keys_from(self, after: str | None) -> tuple[str | None, int, Iterator[str]]:
        """The checkpoint's own key (resumed at its line offset) first, then every later key."""
        if after is None:
            return None, 0, self.store.keys()
        key, skip = parse_position(after)
        return key, skip, _chain(key, self.store.keys(after=key))

    def has_records_after(self, after: str | None) -> bool:
        start_key, skip, keys = self._keys_from(after)
        for key in keys:
            if key != start_key:
                return True  # a later object (at worst only blank lines: the run then ends up to date)
            stream = self._open(key, is_checkpoint_key=True)
            if stream is not None:
                with stream:
                    if any(not line.isspace() for index, line in _numbered(stream, key) if index >= skip):
                        return True
        return False

    def read(
        self,
        after: str | None,
        limit: int,
        should_stop: Callable[[], bool] = lambda: False,
        resume: dict[str, Any] | None = None,
    ) -> SourceBatch:
        start_key, skip, keys = self._keys_from(after)
        start_byte = _resume_byte(after, start_key, resume)
        records: list[dict[str, Any]] = []
        lines: list[int] = []  # the line number of each record in its object
        segments: list[tuple[int, str]] = []  # (index of the first record of an object, its key)
        rejects: list[Reject] = []
        opened: list[str] = []
        opened_bytes = 0
        end: str | None = None

        def batch(more: bool, resume: dict[str, Any] | None = None) -> SourceBatch:
            return SourceBatch(records, end, more, _origins(segments, lines), rejects, opened, resume)

        for key in keys:
            taken = len(records) + len(rejects)
            full = len(opened) >= self.max_objects or opened_bytes + len(key.encode()) > MAX_OPENED_KEY_BYTES
            if taken >= limit or (opened and full) or (taken and should_stop()):
                end = format_position(key, 0)  # the next batch starts at this object, unopened
                return batch(more=True)
            resumed = key == start_key
            stream, numbered_from = self._open_at(key, resumed, skip, start_byte if resumed else None)
            if stream is None:
                continue
            first = skip if resumed else 0
            opened.append(key)
            opened_bytes += len(key.encode())
            segments.append((len(records), key))
            index = -1
            with stream:
                for index, line in _numbered(stream, key, numbered_from):
                    if index < first or line.isspace():
                        continue
                    taken = len(records) + len(rejects)
                    if taken >= limit or (taken % STOP_CHECK_EVERY == 1 and should_stop()):
                        end = format_position(key, index)
                        # Where line ``index`` starts: the next batch of this run seeks there.
                        seekable = not key.endswith(".gz")
                        hint = {"position": end, "byte": stream.tell() - len(line)} if seekable else None
                        return batch(more=True, resume=hint)
                    try:
                        record = json.loads(line)
                    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
                        rejects.append(_reject(key, index, line, f"not valid JSON: {exc}"))
                        continue
                    if type(record) is dict:
                        records.append(record)
                        lines.append(index)
                    else:
                        rejects.append(
                            _reject(key, index, line, f"not a JSON object: {type(record).__name__}")
                        )
            end = format_position(key, max(first, index + 1))
        return batch(more=False)

    def _open_at(
        self, key: str, is_checkpoint_key: bool, line: int, byte: int | None
    ) -> tuple[IO[bytes] | None, int]:
        """The object's stream and the number of its first line: at ``byte``, the start of ``line`` per a
        resume hint, when the byte before it ends a line (a cheap check that the hint fits the object);
        otherwise from the start, line 0."""
        if byte:
            stream = self._open(key, is_checkpoint_key=is_checkpoint_key, start=byte - 1)
            if stream is None or stream.read(1) == b"\n":
                return stream, line
            stream.close()
        return self._open(key, is_checkpoint_key=is_checkpoint_key), 0

    def _open(self, key: str, *, is_checkpoint_key: bool, start: int = 0) -> IO[bytes] | None:
        """The object's lines; None if the checkpoint's own object is gone (deleted by retention, say:
        nothing more can be read from it). Any other missing object is an error."""
        try:
            raw = self.store.open(key, start)
        except ObjectMissing:
            if is_checkpoint_key:
                return None
            raise
        return _Gunzip(raw) if key.endswith(".gz") else raw  # type: ignore[return-value]


class _Gunzip(gzip.GzipFile):
    """Decompresses ``raw`` and, unlike GzipFile, closes it too."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self.raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.raw.close()


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _resume_byte(after: str | None, start_key: str | None, resume: dict[str, Any] | None) -> int | None:
    """The byte offset of ``after``'s line in its object, from the previous batch's hint, if it is for this
    very position and the object can seek (not gzip)."""
    if not resume or after is None or resume.get("position") != after or start_key is None:
        return None
    byte = resume.get("byte")
    return byte if type(byte) is int and byte > 0 and not start_key.endswith(".gz") else None


def _numbered(stream: IO[bytes], key: str, first: int = 0) -> Iterator[tuple[int, bytes]]:
    try:
        yield from enumerate(stream, first)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SourceError(f"object {key} is unreadable: {exc}") from exc


def _reject(key: str, index: int, line: bytes, reason: str) -> Reject:
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    return Reject({"source_key": key, "line": index + 1}, reason, text)


def _origins(segments: list[tuple[int, str]], lines: list[int]) -> Callable[[int], Origin]:
    firsts = [first for first, _ in segments]

    def origin(i: int) -> Origin:
        key = segments[bisect.bisect_right(firsts, i) - 1][1]
        return {"source_key": key, "line": lines[i] + 1}  # 1-based, as editors count

    return origin


def owner_tag(owner: str) -> str:
    """Eight hex digits naming the writer (an execution): unique across runs even if fences restart."""
    return hashlib.sha256(owner.encode()).hexdigest()[:8]


class FilesSink:
    """Writes one object per batch and its quarantine (see the module docstring)."""

    def __init__(
        self, store: ObjectStore | str, topic: str, *, format: str = "jsonl", compression: str | None = None
    ) -> None:
        self.store = open_store(store) if isinstance(store, str) else store
        self.topic, self.format = topic, format
        self.compression = compression or DEFAULT_COMPRESSION[format]
        self.extension = FORMATS[format][self.compression]

    def object_name(self, stem: str, fence: int, owner: str) -> str:
        return f"{self.topic}.{stem}.{fence}-{owner_tag(owner)}.{self.extension}"

    def quarantine_name(self, stem: str, fence: int, owner: str) -> str:
        return f"{QUARANTINE_PREFIX}{self.topic}.{stem}.{fence}-{owner_tag(owner)}.jsonl"

    def write(self, name: str, records: list[dict[str, Any]]) -> None:
        """Replace ``name`` atomically with ``records``."""
        if self.format == "parquet":
            self._put(name, lambda out: _write_parquet(out, records, self.compression))
        elif self.compression == "gzip":
            self._put(name, lambda out: _write_jsonl_gzip(out, records))
        else:
            self._put(name, lambda out: _write_jsonl(out, records))

    def write_quarantine(self, name: str, rejects: list[Reject]) -> None:
        self._put(name, lambda out: _write_jsonl(out, [r.to_json() for r in rejects]))

    def _put(self, name: str, fill: Callable[[IO[bytes]], None]) -> None:
        stream = self.store.writer()
        try:
            fill(stream)
            stream.flush()
            self.store.put(name, stream)
        finally:
            self.store.discard(stream)

    def delete(self, names: Iterable[str | None]) -> None:
        for name in names:
            if name:
                self.store.delete(name)

    def sweep(self, stem: str, keep: Iterable[str | None]) -> list[str]:
        """Delete what earlier attempts of the batch starting at ``stem`` left (objects and quarantine
        written by other writers); returns the names deleted."""
        kept, deleted = set(keep), []
        for prefix in (f"{self.topic}.{stem}.", f"{QUARANTINE_PREFIX}{self.topic}.{stem}."):
            for name in list(self.store.keys(prefix=prefix, include_hidden=True)):
                if name not in kept and _WRITER_SUFFIX.fullmatch(name[len(prefix) :]):
                    self.store.delete(name)
                    deleted.append(name)
        return deleted

    def objects(self) -> list[str]:
        """Every visible object under the sink (committed or not: see ``leanops output`` for committed)."""
        return list(self.store.keys())


def _write_jsonl(out: IO[bytes], records: list[dict[str, Any]], chunk: int = 8192) -> None:
    for first in range(0, len(records), chunk):
        out.write(("\n".join(map(_encode, records[first : first + chunk])) + "\n").encode())


def _write_jsonl_gzip(out: IO[bytes], records: list[dict[str, Any]]) -> None:
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as compressed:
        _write_jsonl(compressed, records)  # type: ignore[arg-type]


def _write_parquet(out: IO[bytes], records: list[dict[str, Any]], compression: str) -> None:
    import pyarrow as pa  # imported on use: only Parquet sinks pay its import time
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SinkError(f"records cannot be written as one Parquet table: {exc}") from exc
    pq.write_table(table, out, compression=compression)
