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
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote

from leanops.data.positions import format_position, parse_position
from leanops.data.source import Origin, Reject, Source, SourceBatch
from leanops.data.storage import ObjectInfo, ObjectMissing, ObjectStore, S3Store, open_store, opened_info
from leanops.errors import SinkClaimed, SinkError, UnreadableObject
from leanops.protocol.model import position_order
from leanops.schema import Rejected, Schema, UnwritableValue, conform, encode_json_line, write_parquet

#: A batch opens at most this many objects, whose keys total at most this many bytes (bounds its run state
#: and its output record, which must fit a DynamoDB item: leanops.protocol.model.MAX_OUTPUT_BYTES).
MAX_OBJECTS_PER_BATCH = 1000
MAX_OPENED_KEY_BYTES = 100_000
#: How often (in lines) a read asks whether to stop before the deadline.
STOP_CHECK_EVERY = 1024
FIRST_BATCH_STEM = "origin"
QUARANTINE_PREFIX = "_quarantine/"
#: The sink's marker: which state and topic it belongs to (FilesSink.claim). Hidden: never output.
MARKER = "_leanops.json"
FORMATS = {
    "jsonl": {"none": "jsonl", "gzip": "jsonl.gz"},
    "parquet": {"none": "parquet", "snappy": "parquet", "zstd": "parquet", "gzip": "parquet"},
}
DEFAULT_COMPRESSION = {"jsonl": "none", "parquet": "snappy"}
#: What follows ``<topic>.`` in an attempt's name: ``<stem>.<attempt>.<ext>`` (names written before attempts
#: had a random part, ``<fence>-<owner tag>``, still match).
_ATTEMPT_NAME = re.compile(
    r"(?P<stem>[^/]+)\.(?P<attempt>\d+-[0-9a-f]{8}(?:-[0-9a-f]{8})?)\.(?:jsonl|jsonl\.gz|parquet)"
)
#: A ``partition_by: day`` sink's folder of one UTC day: ``date=YYYY-MM-DD/``.
DAY_FOLDER = re.compile(r"date=\d{4}-\d{2}-\d{2}/")
#: File systems allow 255 bytes per name; S3 1,024 bytes per key. Stems that would pass them are fitted.
MAX_NAME_BYTES = 255
MAX_S3_KEY_BYTES = 1024
MAX_ATTEMPT_BYTES = 40
#: Marks a fitted stem (head + hash); ``quote`` never writes ``%~``, so no plain stem looks like one.
FITTED_MARK = "%~"


class FilesSource(Source):
    """Reads JSON Lines records after a checkpoint position (see the module docstring)."""

    def __init__(
        self, store: ObjectStore | str, *, max_objects: int = MAX_OBJECTS_PER_BATCH, until: str | None = None
    ) -> None:
        self.store = open_store(store) if isinstance(store, str) else store
        self.max_objects = max_objects
        #: Read nothing past this position (a backfill's end): lines before its offset in its key, and no
        #: later key. None: unbounded.
        self.until = parse_position(until) if until is not None else None

    def _past_until(self, key: str, line: int = 0) -> bool:
        """Whether line ``line`` of ``key`` lies past the bound (``until``)."""
        return self.until is not None and (key, line) >= self.until

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

    def has_records_after(self, after: str | None, resume: dict[str, Any] | None = None) -> bool:
        """With ``resume``, the hint of the batch that ended at ``after`` (the checkpoint keeps it), the
        checkpoint's own object costs one stat while it is the version the hint was made from (and a read
        from the hint's byte, if the batch ended inside it); changed in any way, it is read from its start."""
        start_key, skip, keys = self._keys_from(after)
        for key in keys:
            if self._past_until(key, skip if key == start_key else 0):
                return False
            if key != start_key:
                return True  # a later object (at worst only blank lines: the run then ends up to date)
            byte = _resume_byte(after, start_key, resume)
            if byte is not None:
                info = self._stat(key)
                if info is None or not _fits(resume, info):
                    byte = None  # not the version the hint was made from: read it from its start
                elif info.size == byte:
                    continue  # unchanged, and read to its end: no line after ``after`` in this object
            stream, numbered_from = self._open_at(key, True, skip, byte, resume)
            if stream is not None:
                with stream:
                    for index, line in _numbered(stream, key, numbered_from):
                        if self._past_until(key, index):
                            return False
                        if index >= skip and not line.isspace():
                            return True
        return False

    def _stat(self, key: str) -> ObjectInfo | None:
        try:
            return self.store.stat(key)
        except ObjectMissing:
            return None

    def read(
        self,
        after: str | None,
        limit: int,
        should_stop: Callable[[], bool] = lambda: False,
        resume: dict[str, Any] | None = None,
        cut: Callable[[dict[str, Any]], Any] | None = None,
    ) -> SourceBatch:
        start_key, skip, keys = self._keys_from(after)
        start_byte = _resume_byte(after, start_key, resume)
        self.store.skipped.clear()  # the batch reports what its own listing passes over
        records: list[dict[str, Any]] = []
        lines: list[int] = []  # the line number of each record in its object
        segments: list[tuple[int, str]] = []  # (index of the first record of an object, its key)
        rejects: list[Reject] = []
        opened: list[str] = []
        opened_bytes = 0
        end: str | None = None
        hint: dict[str, Any] | None = None  # for ``end`` when it is the end of an object read to its end

        def batch(more: bool, resume: dict[str, Any] | None = None) -> SourceBatch:
            skipped = [{"key": key, "reason": reason} for key, reason in self.store.skipped]
            origins = _origins(segments, lines)
            return SourceBatch(records, end, more, origins, rejects, opened, resume, skipped=skipped)

        for key in keys:
            resumed = key == start_key
            if self._past_until(key, skip if resumed else 0):
                return batch(more=False, resume=hint)
            taken = len(records) + len(rejects)
            full = len(opened) >= self.max_objects or opened_bytes + _escaped_len(key) > MAX_OPENED_KEY_BYTES
            if taken >= limit or (opened and full) or (taken and should_stop()):
                end = format_position(key, 0)  # the next batch starts at this object, unopened
                return batch(more=True)
            stream, numbered_from = self._open_at(key, resumed, skip, start_byte if resumed else None, resume)
            if stream is None:
                continue
            first = skip if resumed else 0
            opened.append(key)
            opened_bytes += _escaped_len(key)
            segments.append((len(records), key))
            index = numbered_from - 1
            with stream:
                for index, line in _numbered(stream, key, numbered_from):
                    if self.until is not None and self._past_until(key, index):
                        end = format_position(key, index)  # the bound itself
                        return batch(more=False)
                    if index < first or line.isspace():
                        continue
                    taken = len(records) + len(rejects)
                    if taken >= limit or (taken % STOP_CHECK_EVERY == 1 and should_stop()):
                        end = format_position(key, index)
                        # Where line ``index`` starts: the next batch of this run seeks there.
                        return batch(more=True, resume=_hint(key, stream, end, stream.tell() - len(line)))
                    try:
                        record = json.loads(line)
                    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
                        rejects.append(_reject(key, index, line, f"not valid JSON: {exc}"))
                        continue
                    if type(record) is dict:
                        if records and cut is not None and cut(record) != cut(records[0]):
                            end = format_position(key, index)  # the next batch starts at this record
                            return batch(more=True, resume=_hint(key, stream, end, stream.tell() - len(line)))
                        records.append(record)
                        lines.append(index)
                    else:
                        rejects.append(
                            _reject(key, index, line, f"not a JSON object: {type(record).__name__}")
                        )
                end = format_position(key, max(first, index + 1))
                # Where a next line would start (unless the object has fewer lines than ``end`` says).
                hint = _hint(key, stream, end, stream.tell()) if index + 1 >= first else None
        return batch(more=False, resume=hint)

    def _open_at(
        self, key: str, is_checkpoint_key: bool, line: int, byte: int | None, hint: dict[str, Any] | None
    ) -> tuple[IO[bytes] | None, int]:
        """The object's stream and the number of its first line: at ``byte``, the start of ``line`` per the
        resume hint ``hint``, when the object opened is the version the hint was made from and the byte
        before ``byte`` ends a line; otherwise from the start, line 0."""
        if byte:
            stream = self._open(key, is_checkpoint_key=is_checkpoint_key, start=byte - 1)
            if stream is None:
                return stream, line
            info = opened_info(stream)
            if info is not None and _fits(hint, info) and stream.read(1) == b"\n":
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
        return _Gunzip(raw) if _gzipped(key) else raw  # type: ignore[return-value]


def _gzipped(key: str) -> bool:
    """Whether an object is read through gunzip: any key ending in ``.gz`` (``.jsonl.gz``, ``.json.gz``,
    ``.gz``)."""
    return key.endswith(".gz")


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


def _escaped_len(key: str) -> int:
    """A key's size as JSON text with non-ASCII escaped (how a Lambda result carries it): the bound that
    keeps a batch's run state under Step Functions' 256 KB and its output record under DynamoDB's 400 KB."""
    return len(json.dumps(key))


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _resume_byte(after: str | None, start_key: str | None, resume: dict[str, Any] | None) -> int | None:
    """The byte offset of ``after``'s line in its object, from the previous batch's hint, if it is for this
    very position and the object can seek (not gzip)."""
    if not resume or after is None or resume.get("position") != after or start_key is None:
        return None
    byte = resume.get("byte")
    return byte if type(byte) is int and byte > 0 and not _gzipped(start_key) else None


def _hint(key: str, stream: IO[bytes], position: str, byte: int) -> dict[str, Any] | None:
    """A resume hint for ``position``: ``byte``, where its line starts (or would start) in ``key``, and the
    version of ``key`` read (its ``size`` and ``version`` stamp when opened). None for gzip objects (no
    seeking into them) and when the version is unknown."""
    info = opened_info(stream)
    if _gzipped(key) or info is None or info.version is None:
        return None
    return {"position": position, "byte": byte, "size": info.size, "version": info.version}


def _fits(hint: dict[str, Any] | None, info: ObjectInfo) -> bool:
    """Whether the object, at version ``info``, is exactly the one ``hint`` was made from: same size and
    same version stamp. Any change (a rewrite, a replacement, an append) fails it, and the object is read
    from its start: a hint never changes what is read, only how fast."""
    hint = hint or {}
    return info.version is not None and (hint.get("size"), hint.get("version")) == (info.size, info.version)


def _numbered(stream: IO[bytes], key: str, first: int = 0) -> Iterator[tuple[int, bytes]]:
    """The object's lines, numbered from ``first``; a read or decompression error mid-stream (a truncated
    or corrupt ``.gz``: ``BadGzipFile``, ``zlib.error``, ``EOFError``) is an :class:`UnreadableObject`
    naming the object and the cause."""
    try:
        yield from enumerate(stream, first)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise UnreadableObject(
            f"object {key} is unreadable ({cause}): replace it with a complete copy or remove it"
        ) from exc


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


def new_attempt(fence: int, owner: str) -> str:
    """A name for one attempt at writing a batch: ``<fence>-<owner tag>-<random>``. Unique per attempt, even
    for two attempts of one execution (a retried task, or Express running an execution twice), so no write
    ever replaces another attempt's object, and a commit names exactly the object it committed."""
    return f"{fence}-{owner_tag(owner)}-{secrets.token_hex(4)}"


class FilesSink:
    """Writes one object per batch attempt and its quarantine (see the module docstring)."""

    def __init__(
        self,
        store: ObjectStore | str,
        topic: str,
        *,
        format: str = "jsonl",
        compression: str | None = None,
        partition_by: str | None = None,
    ) -> None:
        self.store = open_store(store) if isinstance(store, str) else store
        self.topic, self.format = topic, format
        #: ``day``: each batch's object goes under ``date=YYYY-MM-DD/`` (:meth:`object_name`'s folder).
        self.partition_by = partition_by
        self.compression = compression or DEFAULT_COMPRESSION[format]
        self.extension = FORMATS[format][self.compression]

    def fit_stem(self, stem: str) -> str:
        """``stem``, or when a name built from it would pass a file system's 255-byte name limit (or S3's
        1,024-byte key limit, prefix included), its head and a hash of the whole: still one name per stem."""
        budget = MAX_NAME_BYTES
        if isinstance(self.store, S3Store):
            folder = max(len(QUARANTINE_PREFIX), len("date=YYYY-MM-DD/"))
            budget = min(budget, MAX_S3_KEY_BYTES - len(self.store.prefix.encode()) - folder)
        room = budget - len(f"{self.topic}...jsonl.gz".encode()) - MAX_ATTEMPT_BYTES
        if len(stem.encode()) <= room:
            return stem
        digest = hashlib.sha256(stem.encode()).hexdigest()[:32]  # 128 bits: no collision by search
        head = stem.encode()[: max(0, room - len(digest) - len(FITTED_MARK))].decode(errors="ignore")
        return f"{head}{FITTED_MARK}{digest}"

    def object_name(self, stem: str, attempt: str, folder: str = "") -> str:
        """An attempt's object, in ``folder`` (``date=YYYY-MM-DD/`` for a day sink; else the sink's root)."""
        return f"{folder}{self.topic}.{stem}.{attempt}.{self.extension}"

    def quarantine_name(self, stem: str, attempt: str) -> str:
        return f"{QUARANTINE_PREFIX}{self.topic}.{stem}.{attempt}.jsonl"

    def prepare(self, records: list[dict[str, Any]], schema: Schema | None = None) -> Prepared:
        """``records`` made ready for one object, and the ones that cannot be written, with the column and
        the reason: JSON Lines encodes each record (valid JSON only: no NaN, dates as ISO 8601); Parquet
        conforms them to the topic's ``schema`` (kept in its state; widened safely, never a field dropped)."""
        if self.format == "parquet":
            conformed = conform(records, schema or Schema())
            return Prepared(
                len(conformed.rows), conformed.rejected, rows=conformed.rows, schema=conformed.schema
            )
        lines, rejected = [], []
        for index, record in enumerate(records):
            try:
                lines.append(encode_json_line(record))
            except UnwritableValue as exc:
                rejected.append(Rejected(index, exc.column, exc.reason))
        return Prepared(len(lines), rejected, lines=lines)

    def write(self, name: str, prepared: Prepared | list[dict[str, Any]]) -> None:
        """Write ``name`` atomically (a new name: attempts never share one) with prepared records, or with
        plain records that must all be writable (:class:`SinkError` naming the first that is not)."""
        if isinstance(prepared, list):
            prepared = self.prepare(prepared)
            if prepared.rejected:
                first = prepared.rejected[0]
                raise SinkError(f"record {first.index} cannot be written: {first.reason}")
        if prepared.rows is not None:
            rows, schema = prepared.rows, prepared.schema or Schema()
            self._put(name, lambda out: write_parquet(out, rows, schema, self.compression))
        elif self.compression == "gzip":
            self._put(name, lambda out: _write_lines_gzip(out, prepared.lines or []))
        else:
            self._put(name, lambda out: _write_lines(out, prepared.lines or []))

    def write_quarantine(self, name: str, rejects: list[Reject]) -> None:
        self._put(name, lambda out: _write_lines(out, [_quarantine_line(r) for r in rejects]))

    def _put(self, name: str, fill: Callable[[IO[bytes]], None]) -> None:
        stream = self.store.writer()
        try:
            fill(stream)
            stream.flush()
            self.store.put(name, stream)
        finally:
            self.store.discard(stream)

    def delete(self, names: Iterable[str | None]) -> None:
        """Delete ``names``. Callers go through :mod:`leanops.sink_gc`, which decides what may go."""
        for name in names:
            if name:
                self.store.delete(name)

    def attempts(self, stem: str | None = None, folder: str | None = None) -> Iterator[tuple[str, str]]:
        """``(name, stem)`` of every attempt's object and quarantine in the sink (of one ``stem``, if given):
        the names this sink writes, and nothing else (a user's file, the marker) ever matches. A day sink's
        objects lie in day folders: given a ``folder`` (a stem's object's day folder, or ``""``: none), only
        it and the quarantine are listed; without one, the whole sink."""
        topic = f"{self.topic}."
        everywhere = self.partition_by is not None and folder is None
        places = [None] if everywhere else [folder or "", QUARANTINE_PREFIX]
        for place in places:
            start = "" if place is None else place + topic + (f"{stem}." if stem is not None else "")
            for name in self.store.keys(prefix=start, include_hidden=True):
                head, _, base = name.rpartition("/")
                head = head + "/" if head else ""
                if head not in ("", QUARANTINE_PREFIX) and not DAY_FOLDER.fullmatch(head):
                    continue
                parsed = _ATTEMPT_NAME.fullmatch(base[len(topic) :]) if base.startswith(topic) else None
                if parsed is not None and (stem is None or parsed["stem"] == stem):
                    yield name, parsed["stem"]

    def claim(
        self, state: str, table: str, *, committed: Callable[[], bool], holder: str | None = None
    ) -> None:
        """Bind the sink to ``holder`` (this topic, or a backfill ``<topic>/<id>``) of this state, or refuse
        it: the first run writes the sink's marker (``_leanops.json``: state identity, table, holder); a run
        of another state, topic or backfill then raises :class:`SinkClaimed` before it writes or deletes
        anything. Two states writing one sink would each commit every record, and each clean up what the
        other committed. Refusals are decided by :meth:`check_claim`, which writes nothing."""
        holder = holder or self.topic
        for attempt in range(5):  # a concurrent first write may be in progress (S3: 409): it lands soon
            if self.check_claim(state, table, committed=committed, holder=holder):
                return
            ours = {"topic": holder, "state": state, "table": table}
            if self.store.create(MARKER, json.dumps({"leanops_sink": 1, **ours}).encode()):
                return
            time.sleep(0.1 * (attempt + 1))
        raise SinkError(f"cannot claim sink {self.store.uri}: its marker {MARKER} keeps changing")

    def check_claim(
        self, state: str, table: str, *, committed: Callable[[], bool], holder: str | None = None
    ) -> bool:
        """Whether the sink is ``holder``'s of this state already (True) or unclaimed (False: a claim would
        write the marker); :class:`SinkClaimed` if a claim would be refused. Writes nothing.

        A sink without a marker is claimed only if it holds no attempt of this topic, or if this state has
        ``committed()`` a batch of it before (a sink written before markers existed): a state that never
        wrote the sink must not adopt another's output, then delete it as uncommitted."""
        holder = holder or self.topic  # a backfill's sink is held by its state, ``<topic>/<backfill id>``
        ours = {"topic": holder, "state": state, "table": table}
        raw = self.store.read_bytes(MARKER)
        if raw is None:
            if next(self.attempts(), None) is not None and not committed():
                raise SinkClaimed(
                    f"sink {self.store.uri} holds objects of topic {self.topic!r} but no {MARKER}, and "
                    f"{holder!r} of this state ({state}, table {table}) never committed a batch: run it "
                    "with the state that wrote the sink (LEANOPS_HOME or the project folder), or use an "
                    "empty sink"
                )
            return False
        marker = _marker(raw)
        if marker is None:
            raise SinkClaimed(
                f"sink {self.store.uri}: {MARKER} is not a leanops marker (JSON with topic, state and "
                "table): restore it from the state that owns the sink; until then no run writes here"
            )
        claimed = {key: marker.get(key) for key in ours}
        if claimed == ours:
            return True
        if (claimed["state"], claimed["table"]) == (state, table):
            raise SinkClaimed(
                f"sink {self.store.uri} belongs to {claimed['topic']!r}, not to {holder!r}: every topic "
                f"and backfill writes a sink of its own ({MARKER} says whose it is)"
            )
        raise SinkClaimed(
            f"sink {self.store.uri} belongs to topic {claimed['topic']!r} of another state "
            f"({claimed['state']}, table {claimed['table']}), not to topic {holder!r} of this one "
            f"({state}, table {table}): give the topic a sink of its own, or run it with the state that "
            f"wrote this sink (LEANOPS_HOME, or the project folder) ({MARKER} says whose it is)"
        )

    def objects(self) -> list[str]:
        """Every visible object under the sink (committed or not: see ``leanops output`` for committed)."""
        return list(self.store.keys())


@dataclass(frozen=True)
class Prepared:
    """Records ready for one sink object (:meth:`FilesSink.prepare`): encoded JSON lines, or rows conformed
    to ``schema`` for Parquet; ``rejected`` indexes the records that cannot be written (column, reason)."""

    count: int
    rejected: list[Rejected]
    lines: list[str] | None = None
    rows: list[dict[str, Any]] | None = None
    schema: Schema | None = None


def _write_lines(out: IO[bytes], lines: list[str], chunk: int = 8192) -> None:
    for first in range(0, len(lines), chunk):
        out.write(("\n".join(lines[first : first + chunk]) + "\n").encode())


def _write_lines_gzip(out: IO[bytes], lines: list[str]) -> None:
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as compressed:
        _write_lines(compressed, lines)  # type: ignore[arg-type]


def _marker(raw: bytes) -> dict[str, Any] | None:
    """A sink marker's content, or None if it is not one."""
    try:
        marker = json.loads(raw)
    except ValueError:
        return None
    return marker if isinstance(marker, dict) and {"topic", "state", "table"} <= set(marker) else None


def _quarantine_line(reject: Reject) -> str:
    """A quarantine line; a raw record that is not valid JSON itself (NaN, an object) is kept as its repr."""
    try:
        return encode_json_line(reject.to_json())
    except UnwritableValue:
        return encode_json_line({**reject.to_json(), "raw": repr(reject.raw)})
