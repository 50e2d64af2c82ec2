"""The table stream's event source mappings, locally: DynamoDB Local's stream read as Lambda reads it, and the
template's stream function (the archive) invoked with what Lambda would give it (design §5-§6).

For each function of ``template.yaml`` with a ``DynamoDB`` event on a table's stream, a
:class:`StreamMapping` does what Lambda's event source mapping does in AWS:

- **Shards**: every stream of the table (``ListStreams``, oldest first), every shard of it
  (``DescribeStream``, paged), a child only once its parent is read to its end; shards that appear later are
  picked up on the next pass.
- **Positions**: each shard is read from ``TRIM_HORIZON`` the first time, then ``AFTER_SEQUENCE_NUMBER`` of
  its position, kept in ``<home>/archive-stream.json`` and written only once a batch is done (succeeded, or
  given up on). A stopped stack resumes where it left off; :meth:`StreamMapping.reset` forgets the positions
  (the next pass delivers the stream again, from its trim horizon).
- **Records as Lambda delivers them** (:func:`shape`): ``eventSourceARN`` added, the region and account the
  local stack pretends to be in, ``ApproximateCreationDateTime`` in epoch seconds, binary values base64 as in
  Lambda's JSON. DynamoDB Local's TTL deletions differ from AWS's in two ways, both made good here:

  * they carry no ``userIdentity``: AWS's ``{"type": "Service", "principalId": "dynamodb.amazonaws.com"}``
    is added to a removal whose old image's ``expires_at`` had passed when it was removed (see
    :func:`is_ttl_removal` for how that is decided with a creation time rounded down to the minute);
  * DynamoDB Local 3.3.1 names them ``UNKNOWN_TO_SDK_VERSION`` (the SDK's name for an operation type it does
    not know) where AWS names them ``REMOVE``: such a record (an old image and no new one) is a ``REMOVE``.

- **Filtering** (``FilterCriteria``): each record is matched against the template's patterns with moto's
  EventBridge pattern matcher (the syntax Lambda's filters share); a record no pattern matches is never
  delivered, and counts as processed.
- **Batching**: up to the event's ``BatchSize`` matching records of one shard per invocation, sent as soon as
  the shard has nothing more (no ``MaximumBatchingWindowInSeconds`` wait: a local stack wants its archive
  now).
- **Invocation** through the callable it is given: in the local stack, the function's warm pool, so the
  handler runs as the template's function, in its own process, with its environment (``LEANOPS_ARCHIVE`` =
  ``<home>/archive``, :func:`local_environment`).
- **Failures**, as Lambda handles them: a response with ``batchItemFailures`` (``ReportBatchItemFailures``)
  is retried from its lowest sequence number (an empty or unknown identifier fails the whole batch); a
  function error splits the batch in two when ``BisectBatchOnFunctionError`` is set (a split does not count
  as a retry), else retries it whole; after ``MaximumRetryAttempts`` retries the records are given up on:
  their shard and sequence range go to ``<home>/archive-dead-letters.jsonl`` as the invocation record Lambda
  sends its on-failure destination (the shape AWS documents for DynamoDB streams: ``requestContext``,
  ``responseContext``, ``version``, ``timestamp``, ``DDBStreamBatchInfo``), one line each, appended under
  :func:`dead_letters_lock` (``leanops archive replay`` reads them back, and rewrites the file under it);
  one clear line is logged, and the stream moves on. An error of the Lambda service itself (``Lambda.*``:
  no free environment, the stack stopping) is no attempt: the pass stops there, and the next one delivers
  the batch again.

Not emulated: ``MaximumRecordAgeInSeconds`` (a local stack is often stopped for longer than a record's
allowed age; its records are archived when it comes back), ``StartingPosition: LATEST`` (read as
``TRIM_HORIZON``: a local table's stream starts with the table), ``ParallelizationFactor``, tumbling
windows.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from leanops.constants import ENV_ARCHIVE
from leanops.errors import ConfigError
from leanops.protocol.table import TTL_ATTRIBUTE
from leanopsctl.local import dynamodb_local
from leanopsctl.local.pool import Invocation
from leanopsctl.local.template import LOCAL_REGION, Template, lambda_arn, load_yaml

logger = logging.getLogger("leanops.stack.streams")

#: Names inside the local home.
ARCHIVE_DIR = "archive"
POSITIONS_FILE = "archive-stream.json"
DEAD_LETTERS_FILE = "archive-dead-letters.jsonl"
#: Held while the dead-letters file is appended to or rewritten (:func:`dead_letters_lock`).
DEAD_LETTERS_LOCK = ".archive-dead-letters.lock"
#: Seconds a writer of the dead-letters file waits for the lock.
DEAD_LETTERS_LOCK_TIMEOUT_SECONDS = 30.0
#: Seconds between two passes of the stack's poller (Lambda polls a shard four times a second; a pass costs
#: DynamoDB Local four requests, and an archive a second late is on time).
POLL_INTERVAL_SECONDS = 1.0
#: Records per ``GetRecords`` call (the API's maximum).
READ_LIMIT = 1000

#: The ``userIdentity`` of a record DynamoDB's TTL deleted, as AWS delivers it.
TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
#: DynamoDB Local's ``eventName`` for its own TTL deletions (AWS: ``REMOVE``).
LOCAL_TTL_EVENT_NAME = "UNKNOWN_TO_SDK_VERSION"
#: DynamoDB Local rounds ``ApproximateCreationDateTime`` down to the minute: the record was made within this
#: many seconds after it.
CREATION_TIME_RESOLUTION_SECONDS = 60
#: Above this, an epoch time is in milliseconds, not seconds (1e11 s is the year 5138).
_EPOCH_MS_THRESHOLD = 1e11

#: Lambda's defaults for what a template's event leaves out (the DynamoDB event source mapping's).
DEFAULT_BATCH_SIZE = 100
DEFAULT_MAXIMUM_RETRY_ATTEMPTS = -1

#: One invocation of the mapped function: the event's JSON in, Lambda's answer out.
Invoker = Callable[[bytes], Invocation]


# ------------------------------------------------------------------------------------------------------------
# The template's stream events
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamEventSource:
    """A function's ``DynamoDB`` event in the template: the event source mapping Lambda would create."""

    function: str
    event: str
    #: The logical id of the table whose stream it reads (``Stream: !GetAtt <Table>.StreamArn``).
    table: str
    batch_size: int = DEFAULT_BATCH_SIZE
    starting_position: str = "TRIM_HORIZON"
    bisect_on_error: bool = False
    #: -1: retry until the record leaves the stream.
    maximum_retry_attempts: int = DEFAULT_MAXIMUM_RETRY_ATTEMPTS
    report_batch_item_failures: bool = False
    #: ``FilterCriteria.Filters[].Pattern``, parsed; a record is delivered when any matches (or none is set).
    filters: tuple[Mapping[str, Any], ...] = ()
    #: The logical id (or ARN) of the ``DestinationConfig.OnFailure`` destination, if any.
    on_failure: str | None = None


def stream_event_sources(template: Template) -> list[StreamEventSource]:
    """The ``DynamoDB`` events of the template's functions, in the template's order.

    Raises
    ------
    ConfigError
        An event lacks what the local mapping needs (a ``Stream`` given as ``!GetAtt <Table>.StreamArn``,
        JSON filter patterns); the message names the function and the key.
    """
    resources = load_yaml(template.path).get("Resources") or {}
    found = []
    for logical_id in template.functions:
        properties = (resources.get(logical_id) or {}).get("Properties") or {}
        for name, event in (properties.get("Events") or {}).items():
            if not isinstance(event, dict) or event.get("Type") != "DynamoDB":
                continue
            found.append(_event_source(template, logical_id, name, event.get("Properties") or {}))
    return found


def _event_source(
    template: Template, function: str, name: str, properties: Mapping[str, Any]
) -> StreamEventSource:
    where = f"{template.path}: Resources.{function}.Properties.Events.{name}.Properties"
    stream = properties.get("Stream")
    target = stream.get("Fn::GetAtt") if isinstance(stream, dict) else None
    if isinstance(target, str):
        target = target.split(".", 1)
    if not (isinstance(target, list) and len(target) == 2 and target[1] == "StreamArn"):
        raise ConfigError(
            f"{where}.Stream: the local stack reads `!GetAtt <Table>.StreamArn`, not {stream!r}"
        )
    filters = []
    for index, entry in enumerate((properties.get("FilterCriteria") or {}).get("Filters") or []):
        try:
            pattern = json.loads(entry["Pattern"])
        except (TypeError, KeyError, ValueError) as exc:
            raise ConfigError(f"{where}.FilterCriteria.Filters[{index}].Pattern: not a JSON pattern") from exc
        filters.append(pattern)
    on_failure = ((properties.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
    if isinstance(on_failure, dict):  # !GetAtt Queue.Arn, !Ref Topic
        ref = on_failure.get("Fn::GetAtt") or on_failure.get("Ref")
        on_failure = (ref.split(".")[0] if isinstance(ref, str) else str(ref[0])) if ref else "OnFailure"
    return StreamEventSource(
        function=function,
        event=name,
        table=str(target[0]),
        batch_size=int(properties.get("BatchSize", DEFAULT_BATCH_SIZE)),
        starting_position=str(properties.get("StartingPosition", "TRIM_HORIZON")),
        bisect_on_error=bool(properties.get("BisectBatchOnFunctionError", False)),
        maximum_retry_attempts=int(properties.get("MaximumRetryAttempts", DEFAULT_MAXIMUM_RETRY_ATTEMPTS)),
        report_batch_item_failures="ReportBatchItemFailures"
        in (properties.get("FunctionResponseTypes") or []),
        filters=tuple(filters),
        on_failure=on_failure,
    )


def archive_root(home: Path) -> Path:
    """Where the local archive lives: ``<home>/archive``."""
    return home / ARCHIVE_DIR


def local_environment(home: Path) -> dict[str, str]:
    """What the local stack's functions get beside the template's environment: the archive's local root."""
    return {ENV_ARCHIVE: str(archive_root(home))}


@contextlib.contextmanager
def dead_letters_lock(home: Path) -> Iterator[Path]:
    """Hold the lock of ``<home>/archive-dead-letters.jsonl`` (an ``flock`` on a file beside it, released by
    the kernel if the holder dies); yields the file's path. The stack's poller appends under it and
    ``leanops archive replay`` rewrites under it, so neither loses the other's lines."""
    home.mkdir(parents=True, exist_ok=True)
    with dynamodb_local._exclusive_lock(
        home / DEAD_LETTERS_LOCK, DEAD_LETTERS_LOCK_TIMEOUT_SECONDS, "another writer of the dead letters"
    ):
        yield home / DEAD_LETTERS_FILE


# ------------------------------------------------------------------------------------------------------------
# Records as Lambda delivers them
# ------------------------------------------------------------------------------------------------------------


def epoch_seconds(value: Any) -> int | float:
    """An ``ApproximateCreationDateTime`` as Lambda gives it: epoch seconds, a whole number when it is one
    (DynamoDB Local's is, rounded down to the minute). Milliseconds, a datetime or a numeric string are
    converted."""
    if isinstance(value, datetime):
        seconds = value.timestamp()
    else:
        seconds = float(value)
        if seconds > _EPOCH_MS_THRESHOLD:
            seconds /= 1000.0
    return int(seconds) if seconds == int(seconds) else seconds


def is_ttl_removal(record: Mapping[str, Any]) -> bool:
    """Whether a stream record (DynamoDB Local's, as read) is the removal of an item whose TTL had passed.

    A removal (``REMOVE``, or DynamoDB Local's name for a TTL deletion) whose old image's ``expires_at``
    (a number, epoch seconds) is at or before the record's creation time. DynamoDB Local rounds that time
    down to the minute, so the record was made at some time in ``[t, t + 60 s)``: ``expires_at <= t`` is an
    item that had expired for sure; ``t < expires_at < t + 60 s`` is one only when DynamoDB Local itself
    named the record a TTL deletion (a user's ``DeleteItem`` of an item that would have expired within the
    minute is not); a later ``expires_at`` never is.
    """
    name = record.get("eventName")
    stream = record.get("dynamodb") or {}
    if name not in ("REMOVE", LOCAL_TTL_EVENT_NAME) or "NewImage" in stream or "OldImage" not in stream:
        return False
    try:
        expires = float((stream["OldImage"].get(TTL_ATTRIBUTE) or {})["N"])
        created = float(epoch_seconds(stream["ApproximateCreationDateTime"]))
    except (KeyError, TypeError, ValueError):
        return False
    if expires <= created:
        return True
    return name == LOCAL_TTL_EVENT_NAME and expires < created + CREATION_TIME_RESOLUTION_SECONDS


def shape(
    record: Mapping[str, Any], event_source_arn: str, region: str = LOCAL_REGION, *, local: bool = True
) -> dict[str, Any]:
    """The record (DynamoDB Local's ``GetRecords``, raw JSON values) as Lambda puts it in ``Records``.

    ``local=False`` shapes a record of DynamoDB's own stream (boto3's values: a datetime, bytes): its
    ``eventName``, ``userIdentity`` and ``awsRegion`` are kept as they are (the identity's keys named as
    Lambda names them), nothing is marked.
    """
    stream = dict(record["dynamodb"])
    stream["ApproximateCreationDateTime"] = epoch_seconds(stream["ApproximateCreationDateTime"])
    for key in ("Keys", "NewImage", "OldImage"):
        if key in stream:
            stream[key] = {name: _attribute(value) for name, value in stream[key].items()}
    ttl = local and is_ttl_removal(record)
    name = record["eventName"]
    if local and name == LOCAL_TTL_EVENT_NAME and "OldImage" in stream and "NewImage" not in stream:
        name = "REMOVE"
    if not local:
        region = str(record.get("awsRegion", region))
    shaped: dict[str, Any] = {
        "eventID": record["eventID"],
        "eventName": name,
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": record.get("eventSource", "aws:dynamodb"),
        "awsRegion": region,
        "dynamodb": stream,
    }
    if "userIdentity" in record:  # the streams API's PrincipalId and Type are Lambda's principalId and type
        shaped["userIdentity"] = {k[:1].lower() + k[1:]: v for k, v in record["userIdentity"].items()}
    elif ttl:
        shaped["userIdentity"] = dict(TTL_IDENTITY)
    shaped["eventSourceARN"] = event_source_arn
    return shaped


def _attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """An attribute value in Lambda's JSON: binary values base64 (as read raw, they already are)."""
    ((kind, inner),) = value.items()
    if kind == "B":
        return {kind: _base64(inner)}
    if kind == "BS":
        return {kind: [_base64(item) for item in inner]}
    if kind == "M":
        return {kind: {k: _attribute(v) for k, v in inner.items()}}
    if kind == "L":
        return {kind: [_attribute(v) for v in inner]}
    return {kind: inner}


def _base64(value: Any) -> str:
    return base64.b64encode(value).decode() if isinstance(value, bytes | bytearray) else str(value)


class RecordFilter:
    """The event's ``FilterCriteria``: a record passes when any pattern matches it (all pass without one).

    Patterns are evaluated by moto's EventBridge pattern matcher (Lambda's filters share EventBridge's
    syntax: exact values, ``prefix``, ``anything-but``, ``exists``, ``numeric``, ...).
    """

    def __init__(self, patterns: Sequence[Mapping[str, Any]]) -> None:
        from moto.events.models import EventPattern

        self.patterns = [EventPattern.load(json.dumps(pattern)) for pattern in patterns]

    def __call__(self, record: Mapping[str, Any]) -> bool:
        event: Any = dict(record)
        return not self.patterns or any(pattern.matches_event(event) for pattern in self.patterns)


# ------------------------------------------------------------------------------------------------------------
# The mapping
# ------------------------------------------------------------------------------------------------------------


@dataclass
class DrainReport:
    """What a :meth:`StreamMapping.drain` did."""

    #: Stream records read (every kind, before filtering).
    read: int = 0
    #: Records that passed the filter and were delivered (each once, however often it was retried).
    delivered: int = 0
    invocations: int = 0
    #: Invocations answered with ``batchItemFailures`` or a function error.
    failed_invocations: int = 0
    #: Records given up on (recorded in the dead-letter file).
    dead_lettered: int = 0
    #: The pass stopped early (the stack is stopping, or the Lambda service failed): what is left is
    #: delivered by the next one.
    interrupted: bool = False


class _Interrupted(Exception):
    """The pass stops here; positions stay where the last finished batch left them."""


@dataclass
class _Batch:
    records: list[dict[str, Any]]
    #: Failed invocations counted against ``MaximumRetryAttempts`` (a split counts none).
    retries: int = 0
    invocations: int = 0
    last_error: str | None = field(default=None)


class StreamMapping:
    """One event source mapping: the stream of ``table_name`` delivered to ``invoke``.

    Thread-safe: :meth:`drain` runs one pass at a time (the stack's poller and a caller may both call it).
    """

    def __init__(
        self,
        source: StreamEventSource,
        *,
        table_name: str,
        table_arn: str,
        dynamodb_endpoint: str,
        invoke: Invoker,
        home: Path,
        function_arn: str | None = None,
    ) -> None:
        self.source = source
        self.table_name = table_name
        #: The table's ARN as the functions see it (the local account and region): records'
        #: ``eventSourceARN`` is its stream's.
        self.table_arn = table_arn
        self.invoke = invoke
        self.home = home
        self.function_arn = function_arn or lambda_arn(source.function)
        self.positions_path = home / POSITIONS_FILE
        self.dead_letters_path = home / DEAD_LETTERS_FILE
        self.matches = RecordFilter(source.filters)
        self._client = _streams_client(dynamodb_endpoint)
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None

    # -- public -----------------------------------------------------------------------------------------

    def drain(self, stop: threading.Event | None = None) -> DrainReport:
        """Deliver everything the stream holds beyond the positions, until a pass finds nothing new."""
        report = DrainReport()
        with self._lock:
            self._stop = stop
            try:
                while True:
                    before = (report.read, report.delivered)
                    progressed = self._pass(report)
                    if not progressed and (report.read, report.delivered) == before:
                        return report
            except _Interrupted:
                report.interrupted = True
                return report
            finally:
                self._stop = None

    def poll(self, stop: threading.Event, interval: float = POLL_INTERVAL_SECONDS) -> None:
        """Drain every ``interval`` seconds until ``stop`` is set (the local stack's thread)."""
        failing = False
        while not stop.wait(interval):
            try:
                self.drain(stop)
            except (BotoCoreError, ClientError, OSError) as exc:  # DynamoDB Local restarting, a table gone
                if not failing:
                    logger.warning(
                        "%s: cannot read the stream of %s (retrying): %s",
                        self.source.function,
                        self.table_name,
                        exc,
                    )
                failing = True
            except Exception:  # a bug here must not end the thread: the archive would stop unnoticed
                if not failing:
                    logger.exception("%s: the stream of %s (retrying)", self.source.function, self.table_name)
                failing = True
            else:
                if failing:
                    logger.info("%s: reading the stream of %s again", self.source.function, self.table_name)
                failing = False

    def reset(self) -> None:
        """Forget every position: the next pass delivers the table's stream again from its trim horizon."""
        with self._lock:
            self.positions_path.unlink(missing_ok=True)

    @property
    def client(self) -> Any:
        """The DynamoDB Streams client of DynamoDB Local (values kept as Lambda's JSON carries them)."""
        return self._client

    def stream_of(self, event_source_arn: str) -> str | None:
        """The ARN DynamoDB Local knows the table's stream by whose records carry ``event_source_arn`` (the
        ``streamArn`` of an on-failure record), or None if the table has no such stream any more."""
        for stream_arn, label in self._streams():
            if self._source_arn(label) == event_source_arn:
                return stream_arn
        return None

    def records(self) -> list[dict[str, Any]]:
        """Every record the table's streams hold, shaped as delivered (filtered or not), oldest first; reads
        only (no position moves, nothing is invoked)."""
        found = []
        for stream_arn, label in self._streams():
            for shard in self._shards(stream_arn):
                iterator = self._iterator(stream_arn, shard["ShardId"], None)
                for page in self._pages(iterator):
                    found += [shape(r, self._source_arn(label)) for r in page]
        return found

    # -- one pass ---------------------------------------------------------------------------------------

    def _pass(self, report: DrainReport) -> bool:
        """Read each ready shard to its current end; whether a shard was finished (a child may be ready)."""
        positions = self._read_positions()
        streams = self._streams()
        finished = False
        for stream_arn, label in streams:
            shards = self._shards(stream_arn)
            known = {shard["ShardId"] for shard in shards}
            state = positions.setdefault(stream_arn, {})
            for shard in shards:
                shard_id = shard["ShardId"]
                parent = shard.get("ParentShardId")
                if state.get(shard_id, {}).get("done"):
                    continue
                if isinstance(parent, str) and parent in known and not state.get(parent, {}).get("done"):
                    continue  # its parent's records first
                if self._drain_shard(stream_arn, label, shard_id, positions, report):
                    state.setdefault(shard_id, {})["done"] = True
                    self._write_positions(positions)
                    finished = True
            for gone in set(state) - known:  # trimmed from the stream: nothing left to read
                del state[gone]
        for gone in set(positions) - {arn for arn, _label in streams}:
            del positions[gone]
        return finished

    def _drain_shard(
        self,
        stream_arn: str,
        label: str,
        shard_id: str,
        positions: dict[str, dict[str, dict[str, Any]]],
        report: DrainReport,
    ) -> bool:
        """Deliver the shard's records after its position; whether the shard is closed and read to its end."""
        state = positions[stream_arn].setdefault(shard_id, {})
        committed = state.get("after")
        iterator: str | None = self._iterator(stream_arn, shard_id, committed)
        pending: list[dict[str, Any]] = []
        last_read = committed
        source_arn = self._source_arn(label)

        def commit(sequence: str | None) -> None:
            nonlocal committed
            if sequence is not None and sequence != committed:
                state["after"] = committed = sequence
                self._write_positions(positions)

        while iterator is not None:
            self._check_stop()
            try:
                page = self._client.get_records(ShardIterator=iterator, Limit=READ_LIMIT)
            except ClientError as exc:
                if _code(exc) != "ExpiredIteratorException":
                    raise
                # read again from the last finished batch (what was read since is not delivered yet)
                iterator, pending, last_read = self._iterator(stream_arn, shard_id, committed), [], committed
                continue
            iterator = page.get("NextShardIterator")
            raw_records = page.get("Records") or []
            for raw in raw_records:
                report.read += 1
                last_read = raw["dynamodb"]["SequenceNumber"]
                record = shape(raw, source_arn)
                if self.matches(record):
                    pending.append(record)
                if len(pending) >= self.source.batch_size:
                    self._deliver(shard_id, pending, report)
                    pending = []
                    commit(last_read)
            if not raw_records:
                break  # the shard has nothing more for now (or, with no next iterator, ever)
        if pending:
            self._deliver(shard_id, pending, report)
        commit(last_read)
        return iterator is None

    # -- delivery: Lambda's retries, splits and on-failure destination ----------------------------------

    def _deliver(self, shard_id: str, records: list[dict[str, Any]], report: DrainReport) -> None:
        """Deliver ``records`` until each succeeded or was given up on (then it is in the dead letters)."""
        report.delivered += len(records)
        work = [_Batch(list(records))]
        while work:
            self._check_stop()
            batch = work.pop()
            failed_from, error = self._invoke(batch, report)
            if failed_from is None and error is None:
                continue
            report.failed_invocations += 1
            batch.last_error = error
            if failed_from is not None:  # a partial batch response: retry from its lowest failure
                batch = _Batch(batch.records[failed_from:], batch.retries + 1, batch.invocations, error)
            elif self.source.bisect_on_error and len(batch.records) > 1:  # a split is no retry
                half = len(batch.records) // 2
                work.append(_Batch(batch.records[half:], batch.retries, batch.invocations, error))
                work.append(_Batch(batch.records[:half], batch.retries, batch.invocations, error))
                continue
            else:
                batch.retries += 1
            if self._exhausted(batch):
                self._give_up(shard_id, batch, report)
            else:
                work.append(batch)

    def _invoke(self, batch: _Batch, report: DrainReport) -> tuple[int | None, str | None]:
        """One invocation: ``(None, None)`` when it succeeded, ``(i, why)`` when records from the i-th on
        failed (a partial batch response), ``(None, why)`` when the whole batch failed."""
        payload = json.dumps({"Records": batch.records}).encode()
        answer = self.invoke(payload)
        batch.invocations += 1
        report.invocations += 1
        body = _json(answer.payload)
        if answer.function_error is not None:
            error_type = str(body.get("errorType", "")) if isinstance(body, dict) else ""
            if error_type.startswith("Lambda."):  # the service failed, not the function: no attempt
                logger.warning("%s: %s; delivered again later", self.source.function, _why(body))
                raise _Interrupted
            return None, _why(body)
        failures = body.get("batchItemFailures") if isinstance(body, dict) else None
        if not self.source.report_batch_item_failures or not failures:
            return None, None
        positions = {record["dynamodb"]["SequenceNumber"]: i for i, record in enumerate(batch.records)}
        identifiers = [f.get("itemIdentifier") if isinstance(f, dict) else None for f in failures]
        if not all(isinstance(i, str) and i in positions for i in identifiers):
            return None, f"batchItemFailures names records not in the batch: {identifiers!r}"
        lowest = min(identifiers, key=lambda identifier: int(str(identifier)))
        return positions[str(lowest)], f"batchItemFailures from {lowest} ({len(identifiers)} reported)"

    def _exhausted(self, batch: _Batch) -> bool:
        limit = self.source.maximum_retry_attempts
        return limit >= 0 and batch.retries > limit

    def _give_up(self, shard_id: str, batch: _Batch, report: DrainReport) -> None:
        """Lambda's on-failure destination, locally: the invocation record it would send, one JSON line."""
        first, last = batch.records[0], batch.records[-1]
        info = {
            "shardId": shard_id,
            "startSequenceNumber": first["dynamodb"]["SequenceNumber"],
            "endSequenceNumber": last["dynamodb"]["SequenceNumber"],
            "approximateArrivalOfFirstRecord": _iso(first["dynamodb"]["ApproximateCreationDateTime"]),
            "approximateArrivalOfLastRecord": _iso(last["dynamodb"]["ApproximateCreationDateTime"]),
            "batchSize": len(batch.records),
            "streamArn": first["eventSourceARN"],
        }
        record = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.function_arn,
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": batch.invocations,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "DDBStreamBatchInfo": info,
        }
        if self.source.on_failure is not None:
            with dead_letters_lock(self.home), self.dead_letters_path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")
        report.dead_lettered += len(batch.records)
        logger.error(
            "%s: gave up on %d record(s) of shard %s of %s, sequence numbers %s to %s, after %d retries "
            "(last: %s); %s",
            self.source.function,
            len(batch.records),
            shard_id,
            info["streamArn"],
            info["startSequenceNumber"],
            info["endSequenceNumber"],
            batch.retries - 1,
            batch.last_error,
            f"recorded in {self.dead_letters_path}"
            if self.source.on_failure is not None
            else "no on-failure destination: dropped",
        )

    # -- the streams API --------------------------------------------------------------------------------

    def _streams(self) -> list[tuple[str, str]]:
        """The table's streams, oldest first: ``(arn, label)``."""
        found = []
        arguments: dict[str, Any] = {"TableName": self.table_name}
        while True:
            page = self._client.list_streams(**arguments)
            found += [(s["StreamArn"], s["StreamLabel"]) for s in page.get("Streams", [])]
            if not page.get("LastEvaluatedStreamArn"):
                break
            arguments["ExclusiveStartStreamArn"] = page["LastEvaluatedStreamArn"]
        return sorted(found, key=lambda stream: stream[1])

    def _shards(self, stream_arn: str) -> list[dict[str, Any]]:
        """The stream's shards, by their first sequence number (a parent before its children)."""
        shards: list[dict[str, Any]] = []
        arguments: dict[str, Any] = {"StreamArn": stream_arn}
        while True:
            try:
                description = self._client.describe_stream(**arguments)["StreamDescription"]
            except ClientError as exc:
                if _code(exc) == "ResourceNotFoundException":
                    return shards  # the table went away meanwhile
                raise
            shards += description.get("Shards", [])
            if not description.get("LastEvaluatedShardId"):
                break
            arguments["ExclusiveStartShardId"] = description["LastEvaluatedShardId"]
        return sorted(
            shards, key=lambda s: int(s.get("SequenceNumberRange", {}).get("StartingSequenceNumber", 0))
        )

    def _iterator(self, stream_arn: str, shard_id: str, after: str | None) -> str | None:
        arguments = {"StreamArn": stream_arn, "ShardId": shard_id}
        if after is not None:
            try:
                return str(
                    self._client.get_shard_iterator(
                        **arguments, ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=after
                    )["ShardIterator"]
                )
            except ClientError as exc:
                if _code(exc) not in ("TrimmedDataAccessException", "ResourceNotFoundException"):
                    raise
                logger.warning(
                    "%s: records of shard %s after %s left the stream unread: reading from its trim horizon",
                    self.source.function,
                    shard_id,
                    after,
                )
        answer = self._client.get_shard_iterator(**arguments, ShardIteratorType="TRIM_HORIZON")
        return answer.get("ShardIterator")

    def _pages(self, iterator: str | None) -> Iterator[list[dict[str, Any]]]:
        while iterator is not None:
            page = self._client.get_records(ShardIterator=iterator, Limit=READ_LIMIT)
            if not page.get("Records"):
                return
            yield page["Records"]
            iterator = page.get("NextShardIterator")

    def _source_arn(self, label: str) -> str:
        return f"{self.table_arn}/stream/{label}"

    def _check_stop(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise _Interrupted

    # -- positions --------------------------------------------------------------------------------------

    def _read_positions(self) -> dict[str, dict[str, dict[str, Any]]]:
        try:
            data = json.loads(self.positions_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning(
                "%s unreadable (%s): delivering the stream from its trim horizon", self.positions_path, exc
            )
            return {}
        streams = data.get("streams") if isinstance(data, dict) else None
        return streams if isinstance(streams, dict) else {}

    def _write_positions(self, positions: Mapping[str, Any]) -> None:
        self.positions_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.positions_path.with_name(f".{self.positions_path.name}.{os.getpid()}.tmp")
        text = json.dumps({"table": self.table_name, "streams": positions}, indent=2, sort_keys=True)
        temporary.write_text(text + "\n", encoding="utf-8")
        temporary.replace(self.positions_path)  # never half a file


# ------------------------------------------------------------------------------------------------------------
# Wiring
# ------------------------------------------------------------------------------------------------------------


def stream_mappings(
    template: Template,
    refs: Mapping[str, str],
    invokers: Mapping[str, Invoker],
    *,
    dynamodb_endpoint: str,
    home: Path,
) -> list[StreamMapping]:
    """A mapping for each ``DynamoDB`` event of the template whose function ``invokers`` serves.

    ``refs`` are the local values of the template's references (:meth:`Template.local_refs`): a table's
    logical id names the local table, ``<Table>.Arn`` its ARN.
    """
    mappings = []
    for source in stream_event_sources(template):
        if source.function not in invokers:
            continue
        table = refs.get(source.table, source.table)
        mappings.append(
            StreamMapping(
                source,
                table_name=table,
                table_arn=refs.get(f"{source.table}.Arn") or _table_arn(table),
                dynamodb_endpoint=dynamodb_endpoint,
                invoke=invokers[source.function],
                home=home,
                function_arn=refs.get(f"{source.function}.Arn"),
            )
        )
    return mappings


def start_pollers(mappings: Sequence[StreamMapping], stop: threading.Event) -> list[threading.Thread]:
    """One thread per mapping, polling until ``stop`` is set."""
    threads = []
    for mapping in mappings:
        thread = threading.Thread(
            target=mapping.poll, args=(stop,), daemon=True, name=f"stream-{mapping.source.function}"
        )
        thread.start()
        threads.append(thread)
    return threads


def _streams_client(endpoint: str) -> Any:
    """A DynamoDB Streams client for DynamoDB Local that keeps values as sent: timestamps as numbers and
    binary values as base64 text, the forms Lambda's JSON carries."""
    session = boto3.session.Session(
        aws_access_key_id=dynamodb_local.LOCAL_ACCESS_KEY,
        aws_secret_access_key=dynamodb_local.LOCAL_SECRET_KEY,
        region_name=dynamodb_local.LOCAL_REGION,
    )
    factory = session._session.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=lambda value: value, blob_parser=lambda value: value)
    config = Config(
        connect_timeout=2.0,
        read_timeout=10.0,
        retries={"total_max_attempts": 3, "mode": "standard"},
        proxies={},
    )
    return session.client("dynamodbstreams", endpoint_url=endpoint, config=config)


def _table_arn(table: str) -> str:
    from leanopsctl.local.template import LOCAL_ACCOUNT_ID, LOCAL_PARTITION

    return f"arn:{LOCAL_PARTITION}:dynamodb:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:table/{table}"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _json(payload: bytes) -> Any:
    with contextlib.suppress(ValueError):
        return json.loads(payload) if payload else None
    return None


def _why(body: Any) -> str:
    if isinstance(body, dict) and ("errorType" in body or "errorMessage" in body):
        return f"{body.get('errorType')}: {body.get('errorMessage')}"
    return repr(body)[:500]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
