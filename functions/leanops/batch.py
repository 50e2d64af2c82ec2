"""One batch: source -> processor -> sink, within the Lambda's time budget.

Reading stops before the deadline (leaving ``reserve_ms`` for the processor, the sink write and the
commit), so a batch is cut short rather than lost: what was read is written and committed, and the next
batch resumes exactly after it. Input that is not a record (a malformed line) or that the processor
rejects goes to the batch's quarantine object, or fails the batch if the topic says ``on_malformed: fail``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from leanops.config import TopicConfig
from leanops.data import open_sink, open_source
from leanops.data.files import new_attempt
from leanops.data.source import Origin, Reject
from leanops.errors import ConfigError, LeanopsError, MalformedInput
from leanops.isolation import import_processor
from leanops.schema import Schema, merge_declared

#: The times a record's timestamp_field may hold: the years 1 to 9999 (what datetime and readers take).
MIN_EPOCH_SECONDS = datetime(1, 1, 1, tzinfo=UTC).timestamp()
MAX_EPOCH_SECONDS = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
#: At most this many skipped source entries travel in a batch's result (the run state stays small).
MAX_SKIPPED_REPORTED = 20

Processor = Callable[[list[dict[str, Any]], "ProcessorContext"], list[dict[str, Any]]]


@dataclass
class ProcessorContext:
    """What a processor may know about its batch, and :meth:`reject` to quarantine a record."""

    topic: str
    batch_id: str
    fence: int
    logger: logging.Logger | Any
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)
    origin: Callable[[int], Origin] = field(default=lambda i: {}, repr=False)
    fail_on_reject: bool = False
    rejects: list[Reject] = field(default_factory=list, repr=False)
    _index: dict[int, int] | None = field(default=None, repr=False)

    def reject(self, record: dict[str, Any], reason: str) -> None:
        """Quarantine ``record`` (one of the batch's input records) with ``reason``; the processor then
        leaves it out of what it returns. With ``on_malformed: fail`` the batch fails here instead."""
        origin = self.origin_of(record)  # the index is built on the first reject: others pay nothing
        if self.fail_on_reject:
            raise MalformedInput(
                f"batch {self.batch_id}: {_where(origin)}rejected by the processor: {reason}"
            )
        self.rejects.append(Reject(origin, reason, record))

    def origin_of(self, record: dict[str, Any]) -> Origin:
        """Where ``record`` came from when it is one of the batch's input records (a processor may return
        them as they are); else empty."""
        if self._index is None:
            self._index = {id(r): i for i, r in enumerate(self.records)}
        index = self._index.get(id(record))
        return self.origin(index) if index is not None else {}

    def taken_back(self, output: list[Any], inputs: list[int]) -> None:
        """``output`` came back from an isolated processor (copies): ``inputs[i]`` is the index of the input
        record ``output[i]`` was (-1: a new record), so that :meth:`origin_of` still finds them."""
        self._index = {id(r): i for r, i in zip(output, inputs, strict=True) if i >= 0}


@dataclass(frozen=True)
class BatchResult:
    """References to what a batch did (never its data): positions, counts, the objects it wrote."""

    after: str | None
    end: str | None
    records: int
    more: bool
    seconds: float
    written: int = 0
    quarantined: int = 0
    object: str | None = None
    quarantine: str | None = None
    #: The batch's start in sink names, and this attempt's name (unique): the output record keeps both.
    stem: str | None = None
    attempt: str | None = None
    source_keys: list[str] = field(default_factory=list)
    last_ingested_ts: int | float | None = None
    last_snapshot_id: int | str | None = None
    #: The source's hint for reading after ``end`` (Source.read): the run's next batch passes it back.
    resume: dict[str, Any] | None = None
    #: Entries the source passed over, with the reason (a symlink out of its root, a FIFO, a bad name).
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: The sink schema (JSON) when this batch changed it (Parquet): its commit records it, atomically.
    schema: dict[str, Any] | None = None
    #: A day sink's folder of the batch (``date=YYYY-MM-DD/``), written to or not: where its attempts lie.
    folder: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "after": self.after,
            "end": self.end,
            "records": self.records,
            "written": self.written,
            "quarantined": self.quarantined,
            "more": self.more,
            "object": self.object,
            "quarantine": self.quarantine,
            "stem": self.stem,
            "attempt": self.attempt,
            "source_keys": self.source_keys,
            "seconds": round(self.seconds, 3),
            "last_ingested_ts": self.last_ingested_ts,
            "last_snapshot_id": self.last_snapshot_id,
            "resume": self.resume,
            "skipped": self.skipped[:MAX_SKIPPED_REPORTED],
            "schema": self.schema,
            "folder": self.folder or None,
        }


def passthrough(records: list[dict[str, Any]], ctx: ProcessorContext) -> list[dict[str, Any]]:
    """The default processor: writes the input records as they are."""
    return records


def load_processor(spec: str | None, folder: Path) -> Processor:
    """Import ``package.module:function`` into this process, with the topics file's ``folder`` on
    ``sys.path`` (a topic with ``isolation: process`` imports it in its child instead: leanops.isolation)."""
    return passthrough if spec is None else import_processor(spec, folder)


def run_batch(
    topic: TopicConfig,
    after: str | None,
    processor: Processor,
    *,
    fence: int,
    owner: str,
    logger: Any,
    should_stop: Callable[[], bool] = lambda: False,
    before_write: Callable[[], None] = lambda: None,
    resume: dict[str, Any] | None = None,
    schema: dict[str, Any] | None = None,
    clock: Callable[[], int] | None = None,
) -> BatchResult:
    """Read up to ``batch_size`` records after ``after``, process them, write one sink object and, if
    anything was refused, one quarantine object.

    ``before_write`` runs before the writes: the process task checks there that no renewal found its lease
    taken over, to spare a write that could not be committed. It is a saving, not a guard: the commit is
    the fence, and names are the attempt's own, so a write after a takeover only leaves an orphan.
    ``resume`` is the previous batch's :attr:`BatchResult.resume` (a faster start; same records).
    ``schema`` is the topic's sink schema as its state keeps it (Parquet sinks): the batch starts from it.
    ``clock`` (epoch ms) is the protocol's: a source's ``min_age_seconds`` counts from it.
    A ``partition_by: day`` sink gets batches of one UTC day (by ``timestamp_field``), each written in its
    day's folder; records without that time are quarantined (or fail the batch with ``on_malformed: fail``).
    """
    began = time.monotonic()
    source = open_source(topic.source, clock)
    day = _day_of(topic.timestamp_field) if topic.sink.partition_by == "day" else None
    read = source.read(after, topic.batch_size, should_stop, resume, cut=day)
    folder = ""
    if day is not None and read.records:
        batch_day = day(read.records[0])
        if batch_day is None:  # the batch holds the records without a time (the cut keeps them together)
            reason = f"no {topic.timestamp_field} time to place the record by day (sink partition_by: day)"
            timeless = [Reject(read.origin(i), reason, r) for i, r in enumerate(read.records)]
            read = replace(read, records=[], rejects=read.rejects + timeless)
        else:
            folder = f"date={batch_day}/"
    if not read.records and not read.rejects:  # nothing to process (maybe blank lines consumed)
        return BatchResult(
            after,
            read.end,
            0,
            read.more,
            time.monotonic() - began,
            source_keys=read.keys,
            resume=read.resume,
            skipped=read.skipped,
        )
    batch_id = after or "origin"
    fail = topic.on_malformed == "fail"
    if read.rejects and fail:
        first = read.rejects[0]
        raise MalformedInput(f"batch {batch_id}: {_where(first.origin)}{first.reason}")
    context = ProcessorContext(
        topic.name, batch_id, fence, logger, read.records, read.origin, fail_on_reject=fail
    )
    try:
        output = processor(read.records, context) if read.records else []
    except LeanopsError:
        raise
    except Exception as exc:
        _name_batch(exc, batch_id)
        raise
    if not isinstance(output, list):
        raise ConfigError(
            f"processor of {topic.name} returned {type(output).__name__}; expected a list of dicts"
        )
    sink = open_sink(topic.sink, topic.name)
    kept = Schema.from_json(schema) if schema else None
    prepared = sink.prepare(
        output, merge_declared(kept, topic.schema) if topic.sink.format == "parquet" else None
    )
    refused = [
        Reject(context.origin_of(output[r.index]), r.reason, output[r.index]) for r in prepared.rejected
    ]
    if refused and fail:
        raise MalformedInput(
            f"batch {batch_id}: {_where(refused[0].origin)}cannot be written: {refused[0].reason}"
        )
    rejects = read.rejects + context.rejects + refused
    stem, attempt = sink.fit_stem(source.stem(after)), new_attempt(fence, owner)
    name = sink.object_name(stem, attempt, folder) if prepared.count else None
    quarantine = sink.quarantine_name(stem, attempt) if rejects else None
    before_write()
    # New names of this attempt's own: nothing here replaces or deletes another attempt's object. What is
    # left by an attempt that fails from here on is deleted once the state shows it settled (sink_gc).
    if name:
        sink.write(name, prepared)
    if quarantine:
        sink.write_quarantine(quarantine, rejects)
    return BatchResult(
        after,
        read.end,
        len(read.records) + len(read.rejects),
        read.more,
        time.monotonic() - began,
        written=prepared.count,
        quarantined=len(rejects),
        object=name,
        quarantine=quarantine,
        stem=stem,
        attempt=attempt,
        source_keys=read.keys,
        last_ingested_ts=max_timestamp(read.records, topic.timestamp_field),
        resume=read.resume,
        skipped=read.skipped,
        schema=prepared.schema.to_json() if prepared.schema and prepared.schema != kept else None,
        folder=folder,
    )


def epoch_seconds(value: Any) -> int | float | None:
    """A record's time in epoch seconds: a number is epoch seconds, a string ISO 8601
    (``2026-11-25T10:00:00Z``; without an offset, UTC); anything else, or a time outside the years 1 to
    9999 (NaN, 10**400), None."""
    if type(value) is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        value = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    elif type(value) not in (int, float):
        return None
    return value if MIN_EPOCH_SECONDS <= value <= MAX_EPOCH_SECONDS else None  # NaN compares False


def max_timestamp(records: list[dict[str, Any]], field_name: str | None) -> int | float | None:
    """The newest ``field_name`` among ``records``, in epoch seconds (:func:`epoch_seconds`). Values of
    neither kind are ignored (they do not stop a batch)."""
    if field_name is None:
        return None
    times = [t for t in (epoch_seconds(record.get(field_name)) for record in records) if t is not None]
    return max(times) if times else None


def _day_of(field_name: str | None) -> Callable[[dict[str, Any]], str | None]:
    """A record's UTC day (``YYYY-MM-DD``) by ``field_name``, or None without a readable time."""

    def day(record: dict[str, Any]) -> str | None:
        seconds = epoch_seconds(record.get(field_name)) if field_name else None
        if seconds is None:
            return None
        try:
            return datetime.fromtimestamp(seconds, UTC).date().isoformat()
        except (OverflowError, OSError, ValueError):
            return None

    return day


def _where(origin: Origin) -> str:
    """``source_key=day=1/a.jsonl line=7: `` — where a refused record came from, for error messages."""
    return " ".join(f"{k}={v}" for k, v in origin.items()) + (": " if origin else "")


def _name_batch(exc: BaseException, batch_id: str) -> None:
    """Put the batch id in the error's message, keeping its class (the Step Functions error name)."""
    if exc.args and isinstance(exc.args[0], str):
        exc.args = (f"batch {batch_id}: {exc.args[0]}", *exc.args[1:])
    else:
        exc.args = (f"batch {batch_id}: {exc!r}",)
