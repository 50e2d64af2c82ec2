"""The four Lambda tasks of the topic-run state machine, as plain functions over the run state.

The run state is the JSON that flows between states (references only, never data)::

    {"topic", "partition", "outcome", "lease", "checkpoint", "batches", "records", "released", "max_batches",
     "resume", "backfill", "settings", "started_at_ms"}

A backfill's run (input ``{"topic", "backfill": <id>}``) has the backfill's id as its partition, and carries
its definition under ``backfill``: the topic's settings with the backfill's bound and sink.

``outcome`` ends as ``processed``, ``up_to_date``, ``skipped_locked``, ``paused`` (an operator paused the
topic) or ``duplicate``; ``released`` tells the ``MoreBacklog?`` choice whether this execution still holds
the lock.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from leanops import health, sink_gc, validation
from leanops.batch import BatchResult, load_processor, run_batch
from leanops.config import TopicCatalog, TopicConfig, config_path, parse_settings
from leanops.constants import DEFAULT_SKEW_MARGIN_MS, ENV_SKEW_MARGIN_MS
from leanops.data import open_sink, open_source
from leanops.data.files import FilesSink
from leanops.data.late import LookbackExpired, late_objects
from leanops.errors import CheckpointConflict, ConfigError, InvalidInput, LeanopsError, LockLost
from leanops.heartbeat import Heartbeat
from leanops.isolation import IsolatedProcessor
from leanops.observability import logger, metrics
from leanops.protocol import (
    Acquired,
    Advance,
    Backfill,
    Checkpoint,
    Lease,
    Paused,
    Protocol,
    RunRecord,
    TopicRef,
)
from leanops.protocol.dynamodb import DynamoDBStore
from leanops.registry import PushedTopics

#: The audit event a process or advance task raises once it has its run state (sys.addaudithook observers).
TASK_AUDIT_EVENT = "leanops.task"
#: Reading stops when less than this is left before the Lambda deadline (capped at a quarter of the budget).
DEADLINE_RESERVE_MS = 10_000


@dataclass(frozen=True)
class RunState:
    """What one execution knows between tasks."""

    topic: TopicRef
    outcome: str
    lease: Lease | None
    checkpoint: Checkpoint
    batches: int = 0
    records: int = 0
    released: bool = False
    max_batches: int = 1
    #: The last committed batch's source hint for the next one (BatchResult.resume); advisory.
    resume: dict[str, Any] | None = None
    #: The backfill this run replays (its definition, read once by acquire), None for the topic's own runs.
    backfill: Backfill | None = None
    #: The topic's settings as acquire read them (TopicConfig.to_settings): every task of the run works by
    #: these, whatever is pushed meanwhile.
    settings: dict[str, Any] | None = None
    #: When the execution started (``$$.Execution.StartTime``): names the run's record.
    started_at_ms: int | None = None

    def config(self, topics: TopicCatalog) -> TopicConfig:
        """The settings this run works by: the topic's as acquire read them, narrowed to its backfill if it
        replays one, or to its partition."""
        name = self.topic.topic
        if self.settings is not None:
            config = parse_settings(name, self.settings, f"run state of topic {name!r}")
        else:
            config = topics.topic(name)
        if self.backfill:
            return config.for_backfill(self.backfill)
        return config.for_partition(self.topic.partition) if self.topic.partition is not None else config

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic.topic,
            "partition": self.topic.partition,
            "outcome": self.outcome,
            "lease": self.lease.to_json() if self.lease else None,
            "checkpoint": self.checkpoint.to_json(),
            "batches": self.batches,
            "records": self.records,
            "released": self.released,
            "max_batches": self.max_batches,
            "resume": self.resume,
            "backfill": self.backfill.to_json() if self.backfill else None,
            # As text: a JSON object's key order is not kept by every carrier, and a schema's is meaning.
            "settings": json.dumps(self.settings) if self.settings is not None else None,
            "started_at_ms": self.started_at_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        try:
            return cls(
                topic=TopicRef(data["topic"], data.get("partition")),
                outcome=data["outcome"],
                lease=Lease.from_json(data["lease"]) if data.get("lease") else None,
                checkpoint=Checkpoint.from_json(data.get("checkpoint")),
                batches=int(data.get("batches", 0)),
                records=int(data.get("records", 0)),
                released=bool(data.get("released", False)),
                max_batches=int(data.get("max_batches", 1)),
                resume=data["resume"] if isinstance(data.get("resume"), dict) else None,
                backfill=Backfill.from_json(data["backfill"])
                if isinstance(data.get("backfill"), dict)
                else None,
                settings=_settings(data.get("settings")),
                started_at_ms=int(data["started_at_ms"]) if data.get("started_at_ms") is not None else None,
            )
        except KeyError as exc:
            raise InvalidInput(f"run state lacks {exc.args[0]!r}: {sorted(data)}") from exc


def _settings(carried: object) -> dict[str, Any] | None:
    """A run state's settings: the JSON text :meth:`RunState.to_json` wrote (or an object, as it is)."""
    if isinstance(carried, str):
        carried = json.loads(carried)
    return carried if isinstance(carried, dict) else None


def observe_run(topic: TopicRef, execution: str) -> None:
    """Every log line names the topic and execution; every metric has the topic as a dimension (the
    per-topic alarms and dashboard of template.yaml select on it)."""
    logger.append_keys(topic=str(topic), execution=execution)
    # A backfill's metrics are its own (``<topic>/<id>``): its old records must not trip the topic's alarms.
    metrics.add_dimension(name="topic", value=str(topic))


def default_topics(protocol: Protocol) -> PushedTopics:
    """The topics pushed to the protocol's table; processors import from the package's folder (the
    topics file's folder locally: ``LEANOPS_CONFIG``)."""
    return PushedTopics(protocol.store, config_path().parent)


def default_protocol() -> Protocol:
    """The protocol on the configured table (``LEANOPS_STATE_TABLE``) and skew margin."""
    skew = int(os.environ.get(ENV_SKEW_MARGIN_MS, DEFAULT_SKEW_MARGIN_MS))
    return Protocol(DynamoDBStore(), skew_margin_ms=skew)


def started_at_ms(started: object, protocol: Protocol) -> int:
    """The execution's start (``$$.Execution.StartTime``, ISO 8601; epoch ms from EventBridge), or now for a
    caller that passes none (a test calling a task directly)."""
    if isinstance(started, int | float) and not isinstance(started, bool):
        return int(started)
    if isinstance(started, str):
        try:
            return int(datetime.fromisoformat(started).timestamp() * 1000)
        except ValueError:
            logger.warning("execution start time not understood; using now", extra={"started": started})
    return protocol.clock()


def run_record(
    state: RunState,
    outcome: str,
    protocol: Protocol,
    *,
    execution: str,
    checkpoint: Checkpoint | None = None,
    error: str | None = None,
    cause: str | None = None,
) -> RunRecord:
    """The record of ``state``'s run ending now with ``outcome`` (docs/decisions/0014)."""
    now = protocol.clock()
    checkpoint = checkpoint or state.checkpoint
    ingested = checkpoint.last_ingested_ts
    return RunRecord(
        execution=execution,
        outcome=outcome,
        started_at_ms=state.started_at_ms if state.started_at_ms is not None else now,
        ended_at_ms=now,
        batches=state.batches,
        records=state.records,
        position=checkpoint.position,
        lag_ms=now - int(float(ingested) * 1000) if ingested is not None else None,
        fence=state.lease.fence if state.lease else None,
        error=error,
        cause=cause,
    )


def record_quietly(protocol: Protocol, topic: TopicRef, run: RunRecord) -> None:
    """The record of a run that took nothing (skipped, paused): a store error is logged, never the run's."""
    try:
        protocol.record_run(topic, run)
    except LeanopsError as exc:
        logger.warning("run record not written", extra={"outcome": run.outcome, "error": str(exc)})


def run_key(start: dict[str, Any], execution_name: str) -> str:
    """design §4: ``scheduled:<time>`` for scheduled starts, ``manual:<execution name>`` otherwise."""
    scheduled = start.get("scheduled_time")
    return f"scheduled:{scheduled}" if scheduled else f"manual:{execution_name}"


def acquire(event: dict[str, Any], protocol: Protocol, topics: TopicCatalog) -> RunState:
    """Claim the run key, then take the topic's lock with the execution as owner."""
    start, owner = event.get("input") or {}, validation.owner_id(event.get("execution"))
    topic = TopicRef.from_input(start)
    config = topics.topic(topic.topic)
    settings = config.to_settings()
    backfill = None
    if start.get("backfill") is not None and config.partitions:
        raise ConfigError(
            f"topic {topic.topic} is partitioned: backfills of partitioned topics are not supported"
        )
    if topic.partition is not None and start.get("backfill") is None:
        config = config.for_partition(topic.partition)  # an undeclared partition: refused, nothing written
    elif config.partitions:
        raise ConfigError(
            f"topic {topic.topic} has {len(config.partitions)} partitions: start a run per partition, with "
            f'input {{"topic": "{topic.topic}", "partition": "{config.partitions[0]}"}} (docs/decisions/0015)'
        )
    elif topic.partition is not None:
        backfill = protocol.read_backfill(topic, topic.partition)
        if backfill is None:  # before any lock is taken: an unknown id leaves no state behind
            raise ConfigError(
                f"topic {topic.topic} has no backfill {topic.partition!r}: start backfills with "
                "`leanops backfill` (`leanops backfill TOPIC --list` shows them)"
            )
        config = config.for_backfill(backfill)
    observe_run(topic, owner)
    claim = protocol.claim_run(topic, run_key(start, str(event.get("execution_name") or owner)), owner)
    if not claim.first:  # the run that claimed the key records it; a duplicate start is no run of its own
        logger.info(
            "duplicate start: run key already claimed", extra={"run_key": claim.run_key, "by": claim.owner}
        )
        return RunState(topic, "duplicate", None, Checkpoint(), released=True, backfill=backfill)
    started = started_at_ms(event.get("started"), protocol)
    result = protocol.acquire(topic, owner, config.lease_seconds)
    health.report_start(topic, config, result, protocol.clock())
    if isinstance(result, Paused):  # nothing was acquired, so nothing to release
        logger.info(
            "topic paused by an operator",
            extra={"by": result.paused_by, "reason": result.paused_reason, "since": result.paused_at_ms},
        )
        health.report_outcome(topic, failed=False)
        ended = RunState(
            topic, "paused", None, Checkpoint(), released=True, backfill=backfill, started_at_ms=started
        )
        record_quietly(protocol, topic, run_record(ended, "paused", protocol, execution=owner))
        return ended
    if not isinstance(result, Acquired):
        metrics.add_metric(name="LockContention", unit=MetricUnit.Count, value=1)
        logger.info(
            "topic locked by another run",
            extra={"holder": result.holder, "until": result.lease_expires_at_ms},
        )
        health.report_outcome(topic, failed=False)
        ended = RunState(
            topic,
            "skipped_locked",
            None,
            Checkpoint(),
            released=True,
            backfill=backfill,
            started_at_ms=started,
        )
        record_quietly(protocol, topic, run_record(ended, "skipped_locked", protocol, execution=owner))
        return ended
    metrics.add_metric(name="LockAcquired", unit=MetricUnit.Count, value=1)
    logger.info("lock acquired", extra={"fence": result.lease.fence, "reentrant": result.reentrant})
    # The last commit's hint (the lock's copy of the checkpoint keeps it): a cheap up-to-date check, and
    # the first batch's resume.
    resume = dict(result.checkpoint.resume) if result.checkpoint.resume is not None else None
    source = open_source(config.source, protocol.clock)
    try:
        source.check()  # a missing directory, bucket or table fails the run with one clear line
        claim_sink(protocol, config, topic)  # refused before any write
        if backfill is None:  # a backfill starts where it is told: keys before its start are not late
            report_late_objects(protocol, topic, config, result.checkpoint.position)
        has_more = source.has_records_after(result.checkpoint.position, resume)
    except Exception:
        protocol.release(result.lease)
        raise
    held = RunState(
        topic,
        "acquired",
        result.lease,
        result.checkpoint,
        max_batches=config.max_batches_per_run,
        resume=resume,
        backfill=backfill,
        settings=settings,
        started_at_ms=started,
    )
    if not has_more:
        # Nothing new: end here rather than pay three more transitions and a process invocation.
        record = run_record(held, "up_to_date", protocol, execution=owner)
        protocol.release(result.lease, outcome="up_to_date", run=record)
        metrics.add_metric(name="UpToDate", unit=MetricUnit.Count, value=1)
        health.report_outcome(topic, failed=False)
        return RunState(
            topic,
            "up_to_date",
            None,
            result.checkpoint,
            released=True,
            backfill=backfill,
            started_at_ms=started,
        )
    return held


#: Sinks this process has seen claimed for (sink, topic or backfill, state location): a warm Lambda checks
#: each once.
_claimed_sinks: set[tuple[str, str, str]] = set()


def claim_sink(protocol: Protocol, config: TopicConfig, topic: TopicRef) -> None:
    """The sink belongs to this state and topic or backfill (:func:`sink_gc.claim_sink`); once per
    process."""
    key = (config.sink.uri, str(topic), protocol.store.location)
    if key not in _claimed_sinks:
        sink_gc.claim_sink(protocol, config, topic=topic)
        _claimed_sinks.add(key)


def report_late_objects(
    protocol: Protocol, topic: TopicRef, config: TopicConfig, position: str | None
) -> None:
    """Every run looks back for late objects and reports them (metric and log): never a silent skip."""
    try:
        late = late_objects(protocol, topic, config, position)
    except LookbackExpired as exc:  # the run goes on; the look-back is back with its next commit
        metrics.add_metric(name="LateLookbackExpired", unit=MetricUnit.Count, value=1)
        logger.warning("late objects not looked for", extra={"reason": str(exc)})
        return
    if late:
        metrics.add_metric(name="LateObjects", unit=MetricUnit.Count, value=len(late))
        logger.warning(
            "late objects: keys that sort before the checkpoint were never read; rewind the checkpoint or "
            "re-land them under later keys",
            extra={"count": len(late), "keys": late[:20], "checkpoint": position},
        )


def process(
    state: RunState, protocol: Protocol, topics: TopicCatalog, remaining_ms: Callable[[], int]
) -> BatchResult:
    """Process the next batch after the checkpoint, renewing the lease and stopping before the deadline."""
    if state.lease is None:
        raise InvalidInput("process needs a run state that holds the lock (lease missing)")
    config = state.config(topics)
    observe_run(state.topic, state.lease.owner)
    sys.audit(TASK_AUDIT_EVENT, state.topic.topic)  # for observers (the chaos harness); free without one
    # At least 1 ms: a task that starts with no time left still takes one record per batch, never all.
    reserve = max(1, min(DEADLINE_RESERVE_MS, remaining_ms() // 4))
    # isolation: process runs it in a child scoped to the topic's data, never holding the state's access;
    # a topic without a processor runs no code of its user (leanops' passthrough): nothing to isolate.
    processor = (
        IsolatedProcessor(config, topics.folder, remaining_ms)
        if config.isolation == "process" and config.processor is not None
        else load_processor(config.processor, topics.folder)
    )
    with Heartbeat(protocol, state.lease, config.lease_seconds, logger) as heartbeat:
        batch = run_batch(
            config,
            state.checkpoint.position,
            processor,
            fence=state.lease.fence,
            owner=state.lease.owner,
            logger=logger,
            should_stop=lambda: remaining_ms() < reserve,
            before_write=heartbeat.check,
            resume=state.resume,
            schema=protocol.read_schema(state.topic) if config.sink.format == "parquet" else None,
            clock=protocol.clock,
        )
    metrics.add_metric(name="BatchSeconds", unit=MetricUnit.Seconds, value=batch.seconds)
    if batch.quarantined:
        metrics.add_metric(name="Quarantined", unit=MetricUnit.Count, value=batch.quarantined)
    if batch.skipped:
        metrics.add_metric(name="SkippedSourceEntries", unit=MetricUnit.Count, value=len(batch.skipped))
        logger.warning(
            "source entries skipped: not regular files inside the source, or names that are not UTF-8",
            extra={"count": len(batch.skipped), "skipped": batch.skipped[:20]},
        )
    logger.info("batch processed", extra=batch.to_json())
    return batch


def advance(state: RunState, batch: dict[str, Any], protocol: Protocol, topics: TopicCatalog) -> RunState:
    """Commit the batch (releasing the lock when the run is done); with nothing new, just release."""
    if state.lease is None:
        raise InvalidInput("advance needs a run state that holds the lock (lease missing)")
    config = state.config(topics)
    observe_run(state.topic, state.lease.owner)
    sys.audit(TASK_AUDIT_EVENT, state.topic.topic)  # for observers (the chaos harness); free without one
    end = batch.get("end")
    if end is None or end == state.checkpoint.position:
        metrics.add_metric(name="UpToDate", unit=MetricUnit.Count, value=1)
        outcome = "processed" if state.batches else "up_to_date"
        record = run_record(state, outcome, protocol, execution=state.lease.owner)
        protocol.release(state.lease, outcome=outcome, run=record)
        health.report_outcome(state.topic, failed=False)
        return replace(state, outcome=outcome, lease=None, released=True)
    batches, records = state.batches + 1, state.records + int(batch.get("records", 0))
    finish = not batch.get("more") or batches >= state.max_batches
    attempt = str(batch.get("attempt") or "")
    output = {
        "object": batch.get("object"),
        "quarantine": batch.get("quarantine"),
        "stem": batch.get("stem"),
        "attempt": attempt or None,
        "after": state.checkpoint.position,
        "end": end,
        "records": int(batch.get("records", 0)),
        "written": int(batch.get("written", 0)),
        "quarantined": int(batch.get("quarantined", 0)),
        "source_keys": list(batch.get("source_keys") or []),
        "folder": batch.get("folder"),
        "fence": state.lease.fence,
        "owner": state.lease.owner,
    }
    sink = open_sink(config.sink, config.name)
    ingested = [
        ts for ts in (state.checkpoint.last_ingested_ts, batch.get("last_ingested_ts")) if ts is not None
    ]
    ending = replace(state, batches=batches, records=records)
    record = run_record(
        ending,
        "processed",
        protocol,
        execution=state.lease.owner,
        checkpoint=Checkpoint(position=end, last_ingested_ts=max(ingested) if ingested else None),
    )
    try:
        done = protocol.commit(
            state.lease,
            state.checkpoint,
            Advance(
                end,
                batch.get("last_ingested_ts"),
                batch.get("last_snapshot_id"),
                output=output,
                schema=batch.get("schema") if isinstance(batch.get("schema"), dict) else None,
                resume=batch.get("resume") if isinstance(batch.get("resume"), dict) else None,
            ),
            release=finish,
            lease_seconds=config.lease_seconds,
            order=open_source(config.source).order,
            run=record,
        )
    except (LockLost, CheckpointConflict) as refused:
        # Deleted only if the state shows this attempt's commit did not land and never can (sink_gc).
        settled = sink_gc.discard_attempt(
            protocol, state.lease, state.checkpoint, attempt, [output["object"], output["quarantine"]], sink
        )
        logger.warning("commit refused", extra={"reason": str(refused), "attempt": settled.value})
        raise
    if done.already_committed:  # which attempt landed: the state says (its output record)
        collect_after_commit(protocol, state.topic, done.checkpoint.seq, sink)
    elif state.batches == 0:  # this attempt's commit landed: the transaction said so
        collect_after_commit(protocol, state.topic, done.checkpoint.seq, sink, output)
    metrics.add_metric(name="Batches", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="Records", unit=MetricUnit.Count, value=int(batch.get("records", 0)))
    health.report_lag(state.topic, config, done.checkpoint, protocol.clock())
    stopped = done.lease is None  # released, or (after a retried commit) no longer ours
    if stopped:
        health.report_outcome(state.topic, failed=False)
        if not finish:  # a retried commit found the topic moved on: this run ends without a release
            protocol.record_run(state.topic, record)
    return replace(
        state,
        outcome="processed" if stopped else "acquired",
        lease=done.lease,
        checkpoint=done.checkpoint.as_copy(),
        batches=batches,
        records=records,
        released=stopped,
        resume=batch.get("resume") if isinstance(batch.get("resume"), dict) else None,
    )


def collect_after_commit(
    protocol: Protocol, topic: TopicRef, seq: int, sink: FilesSink, committed: dict[str, Any] | None = None
) -> None:
    """Delete what other attempts at the batch just committed left (a crashed run's, a retried task's). A
    failure here costs orphans, never the run: the batch is committed; ``leanops gc`` finishes the job."""
    try:
        collected = sink_gc.collect_batch(protocol, topic, seq, sink, committed)
    except LeanopsError as exc:
        logger.warning("sink clean-up failed; `leanops gc` removes what is left", extra={"error": str(exc)})
        return
    if collected.deleted:
        metrics.add_metric(name="OrphansDeleted", unit=MetricUnit.Count, value=len(collected.deleted))
        logger.info("orphans of the committed batch deleted", extra={"deleted": collected.deleted})


def _failed_run(
    event: dict[str, Any], state: dict[str, Any], protocol: Protocol, error: str, cause: str
) -> RunRecord:
    """The record of a run that failed with the run state it last had (the execution's input, if acquire
    failed)."""
    try:
        last = RunState.from_json(state)
    except (InvalidInput, KeyError, TypeError, ValueError):
        last = RunState(TopicRef.from_input(state), "failed", None, Checkpoint())
    started = started_at_ms(event.get("started", last.started_at_ms), protocol)
    return run_record(
        replace(last, started_at_ms=started),
        "failed",
        protocol,
        execution=str(event["owner"]),
        error=error,
        cause=cause,
    )


def release_after_failure(event: dict[str, Any], protocol: Protocol) -> dict[str, Any]:
    """Free the lock the failed execution holds, if it still does. Never raises for a bad state: the
    execution fails with the original error either way."""
    state, owner = event.get("state") or {}, event.get("owner")
    try:
        topic = TopicRef.from_input(state)
        owner = validation.owner_id(owner)
    except InvalidInput as exc:
        logger.warning("nothing to release", extra={"reason": str(exc)})
        return {"released": False}
    observe_run(topic, owner)
    health.report_outcome(topic, failed=True)
    result = protocol.release_owned_by(topic, owner)
    caught = state.get("error")
    error: dict[str, Any] = caught if isinstance(caught, dict) else {}
    name, cause = str(error.get("Error") or "unknown"), str(error.get("Cause") or "")
    protocol.record_failure(topic, owner, name, cause, run=_failed_run(event, state, protocol, name, cause))
    logger.warning("run failed; lock release", extra={"result": result.value, "error": state.get("error")})
    return {"released": result.value == "released"}
