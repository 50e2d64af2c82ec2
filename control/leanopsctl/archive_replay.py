"""``leanops archive replay``: archive the batches the archive's event source mapping gave up on
(docs/decisions/0014).

For each batch it gives up on, Lambda sends its on-failure destination the invocation record AWS documents
for DynamoDB streams: ``DDBStreamBatchInfo`` names the shard and the range of sequence numbers
(``shardId``, ``startSequenceNumber``, ``endSequenceNumber``, ``streamArn``, ``batchSize``, ...), not the
records. In AWS those are the messages of the stack's ``ArchiveDeadLetterQueue`` (output
``ArchiveDeadLetterQueueUrl``); locally, the lines of ``<home>/archive-dead-letters.jsonl``, which the local
event source mapping (:mod:`leanopsctl.local.streams`) writes in the same shape.

For each range (:func:`replay`):

1. the shard is read from ``startSequenceNumber`` (``GetShardIterator`` ``AT_SEQUENCE_NUMBER``) through
   ``endSequenceNumber`` (``GetRecords`` until a record past it); each record is shaped as Lambda delivers
   it and filtered by the mapping's filter: locally by the emulator's own code (its shaping, its marking of
   TTL deletions, the template's filter), in AWS by :data:`leanops.archive.EVENT_FILTER` (the template's);
2. the records are archived by the archive function's own steps, in this process (one
   :func:`leanops.archive.archived` per record, then :func:`leanops.archive.archive_batch`), into the
   archive root (``ArchiveRoot``, or ``<home>/archive``); records from a failure point on are archived
   again from there, as Lambda retries a partial batch;
3. only when the whole range is archived is its message deleted (its line removed, the file rewritten
   atomically). A range that cannot be read (its records trimmed from the stream, which keeps them 24
   hours; its shard or stream gone) or archived is reported in one line, and its message kept.

**Idempotent.** A range holds at most the mapping's batch size of matching records, so it is archived as
one batch that starts at its first record: a redelivery of the batch Lambda gave up on, which names the
objects that batch named and replaces them whole (the argument of :mod:`leanops.archive`), and a second
replay names them again: nothing is added. Objects the given-up batch's attempts wrote (before a bisection,
say) are named by records of the range too, so the replay also rewrites them to hold the range's records
only.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError

from leanops import archive
from leanops.data.storage import ObjectStore
from leanops.errors import ConfigError
from leanopsctl.local import streams
from leanopsctl.local.pool import Invocation
from leanopsctl.local.stack import StackRecord
from leanopsctl.local.template import read_template

#: The template's archive function, whose event source mapping gives batches up.
ARCHIVE_FUNCTION = "ArchiveFunction"
#: The stack outputs a replay reads (template.yaml ``Outputs``).
OUTPUT_ARCHIVE_ROOT = "ArchiveRoot"
OUTPUT_DEAD_LETTER_QUEUE = "ArchiveDeadLetterQueueUrl"
#: Records per archived batch: the template's ``BatchSize`` (and the most a stream batch holds), so a range
#: is archived as the one batch it was.
REPLAY_BATCH_SIZE = 1000
#: Times a batch is archived (again from its failure point) before its range is left for a later replay.
ATTEMPTS = 3
#: ``GetRecords`` answers with no record in a row, before the end of a range, after which it is reported as
#: not found (a shard's open end answers empty pages for ever).
EMPTY_PAGES = 20
#: Records per ``GetRecords`` call (the API's maximum).
READ_LIMIT = 1000
#: Seconds a received message stays hidden from other readers while its range is replayed (SQS).
VISIBILITY_SECONDS = 900
#: Seconds a receive waits for messages (long polling: every server of the queue answers).
WAIT_SECONDS = 2

#: A stream's errors that mean the range's records are no longer there to read.
_GONE = {
    "TrimmedDataAccessException": "its records were trimmed from the stream (kept 24 hours): cannot be "
    "replayed",
    "ResourceNotFoundException": "its shard or stream no longer exists (trimmed after 24 hours, or the "
    "stream was disabled): cannot be replayed",
}

Progress = Callable[[str], None]


class InvalidOnFailureRecord(ValueError):
    """A message that is not Lambda's on-failure record of a DynamoDB stream batch."""


class RangeUnavailable(Exception):
    """The range's records cannot be read from the stream (trimmed, or their shard or stream gone)."""


class RangeNotArchived(Exception):
    """The range's records were read but could not all be archived."""


@dataclass(frozen=True)
class BatchRange:
    """``DDBStreamBatchInfo``: the shard and the sequence numbers of a batch Lambda gave up on."""

    shard_id: str
    start: str
    end: str
    stream_arn: str
    batch_size: int | None = None
    condition: str | None = None

    @classmethod
    def parse(cls, body: str | bytes) -> BatchRange:
        """The range an on-failure record (the JSON text of a message or line) names.

        Raises
        ------
        InvalidOnFailureRecord
            Not JSON, no ``DDBStreamBatchInfo``, or a field missing or not of its type.
        """
        try:
            record = json.loads(body)
        except ValueError as exc:
            raise InvalidOnFailureRecord(f"not JSON ({exc})") from None
        info = record.get("DDBStreamBatchInfo") if isinstance(record, dict) else None
        if not isinstance(info, dict):
            raise InvalidOnFailureRecord("no DDBStreamBatchInfo (not a DynamoDB stream's on-failure record)")
        values = {}
        for name in ("shardId", "startSequenceNumber", "endSequenceNumber", "streamArn"):
            value = info.get(name)
            if not isinstance(value, str) or not value:
                raise InvalidOnFailureRecord(f"DDBStreamBatchInfo.{name} is {value!r}")
            values[name] = value
        for name in ("startSequenceNumber", "endSequenceNumber"):
            if not values[name].isdigit():
                raise InvalidOnFailureRecord(f"DDBStreamBatchInfo.{name} {values[name]!r} is not digits")
        if int(values["startSequenceNumber"]) > int(values["endSequenceNumber"]):
            raise InvalidOnFailureRecord("DDBStreamBatchInfo: startSequenceNumber after endSequenceNumber")
        size = info.get("batchSize")
        context = record.get("requestContext")
        condition = context.get("condition") if isinstance(context, dict) else None
        return cls(
            shard_id=values["shardId"],
            start=values["startSequenceNumber"],
            end=values["endSequenceNumber"],
            stream_arn=values["streamArn"],
            batch_size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            condition=condition if isinstance(condition, str) else None,
        )

    def describe(self) -> str:
        return f"shard {self.shard_id} of {self.stream_arn}, sequence numbers {self.start} to {self.end}"

    def to_json(self) -> dict[str, Any]:
        return {
            "shard_id": self.shard_id,
            "start_sequence_number": self.start,
            "end_sequence_number": self.end,
            "stream_arn": self.stream_arn,
            "batch_size": self.batch_size,
        }


# ------------------------------------------------------------------------------------------------------------
# Where the on-failure records are: the local file, the stack's queue
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """One on-failure record: its text, and what its source needs to delete it."""

    body: str
    handle: Any = None
    where: str = ""


class DeadLetters(Protocol):
    """The on-failure records of one destination."""

    description: str

    def __iter__(self) -> Iterator[DeadLetter]: ...

    def done(self, letter: DeadLetter) -> None:
        """The letter's range is archived: delete it."""

    def keep(self, letter: DeadLetter) -> None:
        """The letter's range is not archived: keep it for a later replay."""

    def close(self) -> None:
        """Release what the reading held (messages kept are visible again)."""


class DeadLetterFile:
    """``<home>/archive-dead-letters.jsonl``, the local stack's on-failure destination: one record a line.

    The lines are read once; a line is removed when its range is archived, by rewriting the file (a new file
    renamed over it, under :func:`~leanopsctl.local.streams.dead_letters_lock`, which the stack's poller
    appends under: a line it adds meanwhile is kept).
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / streams.DEAD_LETTERS_FILE
        self.description = str(self.path)

    def lines(self) -> list[str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line.strip()]

    def __iter__(self) -> Iterator[DeadLetter]:
        for number, line in enumerate(self.lines(), start=1):
            yield DeadLetter(line, number, f"{self.path}:{number}")

    def done(self, letter: DeadLetter) -> None:
        with streams.dead_letters_lock(self.home) as path:
            kept = self.lines()
            if letter.body in kept:
                kept.remove(letter.body)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temporary.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            temporary.replace(path)  # never half a file

    def keep(self, letter: DeadLetter) -> None:
        pass

    def close(self) -> None:
        pass


class DeadLetterQueue:
    """The stack's ``ArchiveDeadLetterQueue``: its messages, received (hidden from other readers while
    their ranges are replayed), deleted once archived; those kept are made visible again at :meth:`close`."""

    def __init__(
        self,
        client: Any,
        url: str,
        *,
        wait_seconds: int | None = None,
        visibility_seconds: int | None = None,
    ) -> None:
        self.client = client
        self.url = url
        self.description = url
        self.wait_seconds = WAIT_SECONDS if wait_seconds is None else wait_seconds
        self.visibility_seconds = VISIBILITY_SECONDS if visibility_seconds is None else visibility_seconds
        self._kept: list[DeadLetter] = []

    def __iter__(self) -> Iterator[DeadLetter]:
        seen: set[str] = set()
        while True:
            answer = self.client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=self.wait_seconds,
                VisibilityTimeout=self.visibility_seconds,
            )
            fresh = [m for m in answer.get("Messages", []) if m["MessageId"] not in seen]
            if not fresh:  # the queue is empty, or holds only messages this replay has kept
                return
            for message in fresh:
                seen.add(message["MessageId"])
                yield DeadLetter(
                    message.get("Body", ""), message["ReceiptHandle"], f"message {message['MessageId']}"
                )

    def done(self, letter: DeadLetter) -> None:
        self.client.delete_message(QueueUrl=self.url, ReceiptHandle=letter.handle)

    def keep(self, letter: DeadLetter) -> None:
        self._kept.append(letter)

    def close(self) -> None:
        kept, self._kept = self._kept, []
        for letter in kept:
            with contextlib.suppress(ClientError):  # else visible again after its timeout anyway
                self.client.change_message_visibility(
                    QueueUrl=self.url, ReceiptHandle=letter.handle, VisibilityTimeout=0
                )


# ------------------------------------------------------------------------------------------------------------
# Reading a range from the stream
# ------------------------------------------------------------------------------------------------------------

#: A range's records, shaped as Lambda delivers them and filtered as the mapping filters them.
RangeReader = Callable[[BatchRange], list[dict[str, Any]]]


def read_range(
    client: Any, stream_arn: str, batch: BatchRange, shape: Callable[[Mapping[str, Any]], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The records of ``batch``'s shard from its first sequence number through its last, shaped.

    Raises
    ------
    RangeUnavailable
        The records are no longer in the stream (trimmed; the shard or stream gone), or the stream does not
        hold the whole range.
    """
    first, last = int(batch.start), int(batch.end)
    found: list[dict[str, Any]] = []
    try:
        iterator: str | None = client.get_shard_iterator(
            StreamArn=stream_arn,
            ShardId=batch.shard_id,
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            SequenceNumber=batch.start,
        ).get("ShardIterator")
        empty = 0
        while iterator is not None:
            try:
                page = client.get_records(ShardIterator=iterator, Limit=READ_LIMIT)
            except ClientError as exc:
                if _code(exc) != "ExpiredIteratorException" or not found:
                    raise
                iterator = client.get_shard_iterator(
                    StreamArn=stream_arn,
                    ShardId=batch.shard_id,
                    ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                    SequenceNumber=found[-1]["dynamodb"]["SequenceNumber"],
                ).get("ShardIterator")
                continue
            records = page.get("Records") or []
            for raw in records:
                sequence = int(raw["dynamodb"]["SequenceNumber"])
                if not found and sequence > first:
                    raise RangeUnavailable(
                        f"its first record is no longer in the stream (the shard starts at {sequence}): "
                        "trimmed, cannot be replayed"
                    )
                if sequence > last:
                    return found
                if sequence >= first:
                    found.append(shape(raw))
                if sequence == last:
                    return found
            empty = 0 if records else empty + 1
            if empty >= EMPTY_PAGES:
                break
            iterator = page.get("NextShardIterator")
    except ClientError as exc:
        reason = _GONE.get(_code(exc))
        if reason is None:
            raise
        raise RangeUnavailable(reason) from exc
    raise RangeUnavailable(
        f"the shard holds no record at or after {found[-1]['dynamodb']['SequenceNumber']}"
        if found
        else "the shard holds none of its records"
    )


def local_reader(mapping: streams.StreamMapping) -> RangeReader:
    """Ranges of the local table's stream (DynamoDB Local's), through the local event source mapping's
    code: its client, its shaping and marking of TTL deletions, the template's filter."""

    def read(batch: BatchRange) -> list[dict[str, Any]]:
        stream_arn = mapping.stream_of(batch.stream_arn)
        if stream_arn is None:
            raise RangeUnavailable(
                f"the table {mapping.table_name} has no stream {batch.stream_arn} any more (deleted or "
                "re-created): cannot be replayed"
            )
        records = read_range(
            mapping.client, stream_arn, batch, lambda raw: streams.shape(raw, batch.stream_arn)
        )
        return [record for record in records if mapping.matches(record)]

    return read


def stack_reader(client: Any, filters: Sequence[Mapping[str, Any]] = (archive.EVENT_FILTER,)) -> RangeReader:
    """Ranges of a deployed table's stream (``client``: DynamoDB Streams), filtered as the archive's event
    source mapping filters (the template's pattern is :data:`leanops.archive.EVENT_FILTER`)."""
    matches = streams.RecordFilter(filters)

    def read(batch: BatchRange) -> list[dict[str, Any]]:
        records = read_range(
            client, batch.stream_arn, batch, lambda raw: streams.shape(raw, batch.stream_arn, local=False)
        )
        return [record for record in records if matches(record)]

    return read


def local_mapping(record: StackRecord, home: Path) -> streams.StreamMapping:
    """The local stack's event source mapping of the archive function (reading only: it invokes nothing)."""
    template = read_template(record.template)
    refs = template.local_refs(template.table_refs(record.table))
    mappings = streams.stream_mappings(
        template,
        refs,
        {ARCHIVE_FUNCTION: _no_invocation},
        dynamodb_endpoint=record.dynamodb_endpoint,
        home=home,
    )
    if not mappings:
        raise ConfigError(f"{record.template}: {ARCHIVE_FUNCTION} has no DynamoDB stream event to replay")
    return mappings[0]


def _no_invocation(payload: bytes) -> Invocation:
    raise AssertionError("a replay archives in its own process; it never invokes the function")


# ------------------------------------------------------------------------------------------------------------
# Archiving a range
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RangeArchived:
    """What :func:`archive_records` wrote: rows (one per record) and objects (an object written again
    counts again)."""

    records: int
    objects: int


def archive_records(
    records: Sequence[Mapping[str, Any]],
    store: ObjectStore,
    *,
    batch_size: int = REPLAY_BATCH_SIZE,
    attempts: int = ATTEMPTS,
) -> RangeArchived:
    """Archive ``records`` (a range's, in sequence order) as the archive function would, ``batch_size`` at a
    time; a batch that fails part-way is archived again from its failure point, ``attempts`` times at most.

    Raises
    ------
    RangeNotArchived
        A record has no row (it never will), or a write kept failing.
    """
    rows = objects = 0
    for start in range(0, len(records), batch_size):
        batch = list(records[start : start + batch_size])
        tries = 0
        while batch:
            written, reason = _archive_batch(batch, store)
            rows, objects = rows + written.failure_point, objects + written.objects
            if written.failure_point == len(batch):
                break
            tries += 1
            batch = batch[written.failure_point :]
            if reason is not None or tries >= attempts:
                first = batch[0]["dynamodb"]["SequenceNumber"]
                raise RangeNotArchived(
                    f"record {first} not archived: {reason or f'a write failed {tries} times (logged above)'}"
                    f"; {rows} record(s) before it archived"
                )
    return RangeArchived(rows, objects)


def _archive_batch(
    batch: Sequence[Mapping[str, Any]], store: ObjectStore
) -> tuple[archive.BatchArchived, str | None]:
    """The archive handler's logic (leanops.handlers.archive) on one batch: each record as the archive keeps
    it (:func:`leanops.archive.archived`), written by :func:`leanops.archive.archive_batch`; and, should
    ``archived`` refuse a record, why the batch stopped there (None if it did not)."""
    entries: list[archive.Archived] = []
    reason = None
    for record in batch:
        try:
            entries.append(archive.archived(record))
        except archive.MalformedRecord as exc:
            reason = str(exc)
            break
    written = archive.archive_batch(entries, store)
    return written, reason if written.failure_point == len(entries) else None


# ------------------------------------------------------------------------------------------------------------
# The replay
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Left:
    """A range not replayed, and why (its message is kept)."""

    where: str
    reason: str
    range: BatchRange | None = None

    def describe(self) -> str:
        if self.range is None:
            return f"{self.where}: {self.reason}; kept"
        return f"{self.range.describe()}: {self.reason}; kept ({self.where})"

    def to_json(self) -> dict[str, Any]:
        return {"where": self.where, "reason": self.reason, **(self.range.to_json() if self.range else {})}


@dataclass
class ReplayReport:
    """What :func:`replay` did."""

    source: str
    archive: str
    ranges_replayed: int = 0
    records_archived: int = 0
    objects_written: int = 0
    left: list[Left] = field(default_factory=list)

    @property
    def ranges_left(self) -> int:
        return len(self.left)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "archive": self.archive,
            "ranges_replayed": self.ranges_replayed,
            "records_archived": self.records_archived,
            "objects_written": self.objects_written,
            "ranges_left": self.ranges_left,
            "left": [left.to_json() for left in self.left],
        }


def replay(
    letters: DeadLetters,
    read: RangeReader,
    store: ObjectStore,
    *,
    batch_size: int = REPLAY_BATCH_SIZE,
    progress: Progress = lambda line: None,
    failed: Progress = lambda line: None,
) -> ReplayReport:
    """Archive the range of each on-failure record of ``letters`` from the stream, deleting each once its
    range is archived in full; a range that cannot be is reported through ``failed`` (one line) and kept.

    Errors other than a range's own (access denied, an endpoint unreachable) end the replay; the records
    deleted until then were archived.
    """
    report = ReplayReport(letters.description, store.uri)
    try:
        for letter in letters:
            left = _replay_one(letter, letters, read, store, batch_size, progress, report)
            if left is not None:
                letters.keep(letter)
                report.left.append(left)
                failed(left.describe())
    finally:
        letters.close()
    return report


def _replay_one(
    letter: DeadLetter,
    letters: DeadLetters,
    read: RangeReader,
    store: ObjectStore,
    batch_size: int,
    progress: Progress,
    report: ReplayReport,
) -> Left | None:
    try:
        batch = BatchRange.parse(letter.body)
    except InvalidOnFailureRecord as exc:
        return Left(letter.where, f"not an on-failure record of a DynamoDB stream batch: {exc}")
    size = f", {batch.batch_size} record(s)" if batch.batch_size is not None else ""
    progress(f"replaying {batch.describe()}{size}")
    try:
        records = read(batch)
        if not records and batch.batch_size:  # the batch Lambda gave up on held some: read or filter is off
            raise RangeNotArchived(
                f"none of the range's records passes the archive's filter (the record names "
                f"{batch.batch_size}): nothing archived"
            )
        done = archive_records(records, store, batch_size=batch_size)
    except (RangeUnavailable, RangeNotArchived) as exc:
        return Left(letter.where, str(exc), batch)
    letters.done(letter)
    report.ranges_replayed += 1
    report.records_archived += done.records
    report.objects_written += done.objects
    note = (
        f" (the record names {batch.batch_size})"
        if batch.batch_size is not None and batch.batch_size != done.records
        else ""
    )
    progress(f"archived {done.records} record(s) in {done.objects} object(s){note}; record removed")
    return None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
