"""Values of the protocol: topic references, checkpoints, leases and the typed results of each operation.

All values are frozen dataclasses; times are integer epoch **milliseconds** (``*_ms``) except the TTL
attribute, which DynamoDB requires in epoch seconds.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from leanops import validation
from leanops.errors import InvalidInput
from leanops.protocol.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE

Scalar = int | float | str | None
#: Backfill ids (:meth:`Backfill.id_for`); a topic's own partitions never take this prefix.
BACKFILL_ID_PREFIX = validation.BACKFILL_ID_PREFIX


@dataclass(frozen=True, order=True)
class TopicRef:
    """A topic, optionally narrowed to one partition (a sub-stream with its own lock and checkpoint)."""

    topic: str
    partition: str | None = None

    def __post_init__(self) -> None:
        validation.topic_name(self.topic)
        if self.partition is not None:
            validation.topic_name(self.partition, what="partition name")

    @classmethod
    def from_input(cls, data: dict[str, Any]) -> TopicRef:
        """The state an execution's input or run state names: ``topic``, and an optional ``partition``, or a
        ``backfill`` (its id, or its definition in a run state), whose state is the partition of that id."""
        partition, backfill = data.get("partition"), data.get("backfill")
        if backfill is not None:
            backfill_id = validation.backfill_id(
                backfill.get("id") if isinstance(backfill, dict) else backfill
            )
            if partition is not None and partition != backfill_id:
                raise InvalidInput(f"run input names partition {partition!r} and backfill {backfill_id!r}")
            partition = backfill_id
        return cls(str(data.get("topic") or ""), partition)

    @property
    def key(self) -> str:
        """The partition key of this topic's items. ``/`` cannot occur in names, so keys never collide."""
        return f"topic#{self.topic}" + (f"/{self.partition}" if self.partition is not None else "")

    def __str__(self) -> str:
        return self.topic if self.partition is None else f"{self.topic}/{self.partition}"


def position_order(position: str) -> tuple[str, int]:
    """Sort key of a position ``<object key>#<offset>``: the key lexically, then the offset numerically.

    A position without a numeric ``#offset`` suffix sorts as offset 0 of that key.
    """
    head, sep, tail = position.rpartition("#")
    if sep and tail.isdigit():
        return head, int(tail)
    return position, 0


@dataclass(frozen=True)
class Checkpoint:
    """A topic's high water mark. ``position=None`` and ``seq=0``: nothing committed yet (the beginning).

    ``seq`` counts commits (and operator changes); together with ``position`` it is the exact previous
    state a commit is conditioned on. ``batch_start``, ``committed_by`` and ``fence`` describe the last
    commit, so a lost-response retry of that same commit is recognised as already done. ``resume`` is the
    source's hint for reading after ``position`` (:attr:`Advance.resume`), kept with it so a run's up-to-date
    check can be cheap; advisory, never part of a commit's condition; an operator's override has none.
    """

    position: str | None = None
    last_ingested_ts: int | float | None = None
    last_snapshot_id: int | str | None = None
    seq: int = 0
    updated_at_ms: int | None = None
    committed_by: str | None = None
    fence: int | None = None
    batch_start: str | None = None
    resume: Mapping[str, Any] | None = None

    def as_copy(self) -> Checkpoint:
        """What the lock item keeps of it: enough to be the next commit's expected state and to check that
        the topic is up to date (``resume``: acquire returns the copy), and no more (the lock item is written
        on every acquire and commit; small items cost fewer write units)."""
        return Checkpoint(
            self.position,
            self.last_ingested_ts,
            self.last_snapshot_id,
            self.seq,
            self.updated_at_ms,
            resume=self.resume,
        )

    def to_json(self) -> dict[str, Any]:
        """The public JSON shape (design §4): position, last_ingested_ts, last_snapshot_id, and seq."""
        return {
            "position": self.position,
            "last_ingested_ts": self.last_ingested_ts,
            "last_snapshot_id": self.last_snapshot_id,
            "seq": self.seq,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Checkpoint:
        """Inverse of :meth:`to_json` (a run state carries the checkpoint its next commit expects)."""
        if not data:
            return BEGINNING
        try:
            return cls(
                position=data.get("position"),
                last_ingested_ts=data.get("last_ingested_ts"),
                last_snapshot_id=data.get("last_snapshot_id"),
                seq=int(data.get("seq", 0)),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"invalid checkpoint {data!r}: {exc}") from exc


BEGINNING = Checkpoint()


#: The output field naming the attempt that wrote a batch's objects (unique per attempt): how a retried
#: commit, and the clean-up of sink objects, tell "our commit landed" from "another attempt's did".
ATTEMPT_FIELD = "attempt"

#: Names an output may not use: its record's own fields (those the protocol writes: where the checkpoint
#: moved, the record's kind, its supersession), and the output item's key, time and TTL attributes (a TTL
#: would let DynamoDB delete a manifest entry).
RESERVED_OUTPUT_NAMES = frozenset(
    {
        "seq",
        "committed_at_ms",
        "committed_at",
        "position",
        "kind",
        "superseded_by",
        "superseded_at_ms",
        PARTITION_KEY,
        SORT_KEY,
        TTL_ATTRIBUTE,
    }
)
#: DynamoDB refuses an item over 400 KB only when the commit is sent, as an error that looks like an outage;
#: an output's JSON size is close to its item's, so this bound refuses it here, before anything is written.
#: (Far smaller is the norm: an output names objects, it does not list records; each started KB of the item
#: costs 2 write units per commit.)
MAX_OUTPUT_BYTES = 300_000


@dataclass(frozen=True)
class Advance:
    """What one processed batch moves the checkpoint to.

    ``output`` is what the batch committed (sink object, counts, source keys...): a small JSON-able mapping
    that the commit transaction records as a manifest entry (:class:`OutputRecord`), so the committed output
    is exactly what commits name. It is kept as a JSON copy (tuples become lists, as DynamoDB returns them),
    so later changes by the caller do not leak in.
    """

    position: str
    last_ingested_ts: int | float | None = None
    last_snapshot_id: int | str | None = None
    output: Mapping[str, Any] | None = None
    #: The sink schema (JSON) when this batch changed it: committed with the batch, or not at all.
    schema: Mapping[str, Any] | None = None
    #: The source's hint for reading after ``position`` (SourceBatch.resume): kept with the checkpoint.
    resume: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        validation.position(self.position, what="checkpoint position")
        if self.output is not None:
            object.__setattr__(self, "output", _checked_output(self.output))
        if self.resume is not None:
            object.__setattr__(self, "resume", _checked_resume(self.resume, self.position))


#: A resume hint names a position and a few numbers: its JSON is far smaller than this, or it is not kept.
MAX_RESUME_BYTES = 4_000


def _checked_resume(resume: object, position: str) -> dict[str, Any] | None:
    """A JSON copy of ``resume`` if it is a small hint for ``position``; None otherwise (hints are advisory:
    one that would not fit is dropped, never an error)."""
    if not isinstance(resume, Mapping) or resume.get("position") != position:
        return None
    try:
        text = json.dumps(dict(resume), allow_nan=False)
    except (TypeError, ValueError):
        return None
    copied: dict[str, Any] = json.loads(text)
    return copied if len(text.encode()) <= MAX_RESUME_BYTES else None


def _checked_output(output: object) -> dict[str, Any]:
    """A JSON copy of ``output`` if it can be a manifest entry: non-empty string names, none reserved, JSON
    values (no NaN or infinity, which DynamoDB cannot store), at most :data:`MAX_OUTPUT_BYTES` as JSON."""
    if not isinstance(output, Mapping) or not all(isinstance(name, str) and name for name in output):
        raise InvalidInput(f"invalid batch output {output!r}: expected a mapping with non-empty string names")
    reserved = sorted(RESERVED_OUTPUT_NAMES.intersection(output))
    if reserved:
        raise InvalidInput(
            f"invalid batch output: {', '.join(reserved)} are reserved names; rename those fields"
        )
    try:
        text = json.dumps(dict(output), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"invalid batch output: not JSON-able ({exc})") from exc
    size = len(text.encode())
    if size > MAX_OUTPUT_BYTES:
        raise InvalidInput(
            f"invalid batch output of {size} bytes as JSON: at most {MAX_OUTPUT_BYTES} fit in an item; "
            "name objects, do not list records"
        )
    copied: dict[str, Any] = json.loads(text)
    return copied


class OutputKind(StrEnum):
    """What made an output record's ``seq``."""

    #: A commit of a processed batch: ``data`` names its objects.
    BATCH = "batch"
    #: An operator's checkpoint override (set or rewind): names no object and starts no batch.
    OVERRIDE = "override"


@dataclass(frozen=True)
class OutputRecord:
    """One commit's manifest entry: the caller's ``data`` (its :attr:`Advance.output`), the ``seq`` of the
    commit that wrote it and when (the committer's clock).

    ``position`` is where the checkpoint moved with this ``seq`` (None: the beginning, for an override; or,
    for a batch, a record written before positions were recorded). A rewind past this record marks it
    superseded (``superseded_by`` is the rewind's ``seq``): its objects are no longer committed output.
    """

    seq: int
    committed_at_ms: int
    data: dict[str, Any]
    position: str | None = None
    kind: OutputKind = OutputKind.BATCH
    superseded_by: int | None = None
    superseded_at_ms: int | None = None

    @property
    def superseded(self) -> bool:
        return self.superseded_by is not None

    @property
    def live(self) -> bool:
        """A batch whose objects are committed output: not an override, not superseded."""
        return self.kind is OutputKind.BATCH and not self.superseded

    def to_json(self) -> dict[str, Any]:
        """The caller's fields with ``seq`` and ``committed_at_ms``; an override adds its ``kind`` and
        ``position``, a superseded record ``superseded_by`` and ``superseded_at_ms``."""
        extra: dict[str, Any] = {}
        if self.kind is not OutputKind.BATCH:
            extra.update(kind=self.kind.value, position=self.position)
        if self.superseded:
            extra.update(superseded_by=self.superseded_by, superseded_at_ms=self.superseded_at_ms)
        return {"seq": self.seq, "committed_at_ms": self.committed_at_ms, **extra, **self.data}


#: Run records' sort keys start with this; the rest is the execution's start (13 digits of ms) and a tag of
#: its ARN, so a topic's runs sort by start and every task of one execution names the same record.
RUN_RECORD_PREFIX = "runlog#"
#: How runs end (a run record's ``outcome``); the first two are runs that ended well.
RUN_OUTCOMES = ("processed", "up_to_date", "failed", "timed_out", "aborted", "skipped_locked", "paused")
DAY_SECONDS = 86_400


@dataclass(frozen=True)
class Retention:
    """How many days each kind of history item stays in the state table before its TTL lets DynamoDB
    delete it (and the archive keep it): run records, output records (batches and overrides), and audit
    and config records. Checkpoints, locks at rest and settings never expire. docs/decisions/0014."""

    runs_days: int = 7
    outputs_days: int = 7
    audit_days: int = 90

    def __post_init__(self) -> None:
        for kind in ("runs_days", "outputs_days", "audit_days"):
            days = getattr(self, kind)
            if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
                raise InvalidInput(
                    f"retention of {kind.removesuffix('_days')} must be a whole number of days from 1 to "
                    f"{MAX_RETENTION_DAYS}, got {days!r}"
                )

    def runs_expire_at_s(self, ended_at_ms: int) -> int:
        return ended_at_ms // 1000 + self.runs_days * DAY_SECONDS

    def outputs_expire_at_s(self, committed_at_ms: int) -> int:
        return committed_at_ms // 1000 + self.outputs_days * DAY_SECONDS

    def audit_expire_at_s(self, at_ms: int) -> int:
        return at_ms // 1000 + self.audit_days * DAY_SECONDS


#: Ten years: DynamoDB's TTL takes any future time, but a longer retention is no retention.
MAX_RETENTION_DAYS = 3650


@dataclass(frozen=True)
class RunRecord:
    """One execution of a topic's run, as it ended: written once by the task that ended it (in the same
    write as the lock's release when there is one), or by the safety net for an execution that timed out
    or was aborted. Every task of one execution names the same item, so a retried task writes nothing new.
    """

    execution: str
    outcome: str
    started_at_ms: int
    ended_at_ms: int
    batches: int = 0
    records: int = 0
    #: The checkpoint's position when the run ended (None before the first commit).
    position: str | None = None
    #: ``ended_at_ms`` minus the checkpoint's ``last_ingested_ts``: how far behind its source the topic was.
    lag_ms: int | None = None
    #: The acquisition's fence (None: the run never held the lock).
    fence: int | None = None
    error: str | None = None
    cause: str | None = None

    @property
    def key(self) -> str:
        tag = hashlib.sha256(self.execution.encode()).hexdigest()[:8]
        return f"{RUN_RECORD_PREFIX}{self.started_at_ms:013d}#{tag}"

    def to_json(self) -> dict[str, Any]:
        return {
            "execution": self.execution,
            "outcome": self.outcome,
            "started_at_ms": self.started_at_ms,
            "ended_at_ms": self.ended_at_ms,
            "batches": self.batches,
            "records": self.records,
            "position": self.position,
            "lag_ms": self.lag_ms,
            "fence": self.fence,
            "error": self.error,
            "cause": self.cause,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        optional = ("lag_ms", "fence")
        return cls(
            execution=str(data["execution"]),
            outcome=str(data["outcome"]),
            started_at_ms=int(data["started_at_ms"]),
            ended_at_ms=int(data["ended_at_ms"]),
            batches=int(data.get("batches") or 0),
            records=int(data.get("records") or 0),
            position=data.get("position"),
            error=data.get("error"),
            cause=data.get("cause"),
            **{name: int(data[name]) if data.get(name) is not None else None for name in optional},
        )


#: Audit records' sort keys start with this; the rest is the time (13 digits of ms) and a random part.
AUDIT_PREFIX = "audit#"
#: An operator change's ``reason`` is at most this long.
MAX_REASON_CHARS = 1000


@dataclass(frozen=True)
class AuditRecord:
    """One operator change, written in the transaction that makes it and never changed afterwards."""

    key: str
    action: str
    actor: str
    reason: str
    at_ms: int
    before: dict[str, Any]
    after: dict[str, Any]

    @classmethod
    def new(
        cls, action: str, actor: str, reason: str, at_ms: int, before: dict[str, Any], after: dict[str, Any]
    ) -> AuditRecord:
        """A record with a fresh key: ``audit#<13-digit epoch ms>#<random hex>`` sorts by time."""
        return cls(
            f"{AUDIT_PREFIX}{at_ms:013d}#{secrets.token_hex(8)}", action, actor, reason, at_ms, before, after
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "action": self.action,
            "actor": self.actor,
            "reason": self.reason,
            "at_ms": self.at_ms,
            "before": self.before,
            "after": self.after,
        }


def range_text(start: str | None, end: str) -> str:
    """A replay's bounds as messages say them: ``after P up to Q`` (``after (the beginning)`` for none)."""
    return f"after {start or '(the beginning)'} up to {end}"


@dataclass(frozen=True)
class Backfill:
    """A bounded replay of a topic into another sink, under a state of its own (the partition ``id`` of the
    topic): records after ``start`` (None: the beginning) up to and including ``end``. Defined once by an
    operator (``leanops backfill``), immutable; ``id`` is derived from the topic and the sink, so a sink
    holds one backfill and running the same command again resumes it."""

    id: str
    topic: str
    start: str | None
    end: str
    sink: str
    format: str
    compression: str
    actor: str
    reason: str
    created_at_ms: int

    @property
    def ref(self) -> TopicRef:
        """The backfill's own state: lock, checkpoint, run keys and output records."""
        return TopicRef(self.topic, self.id)

    @staticmethod
    def id_for(topic: str, sink: str) -> str:
        """``bf-`` and 12 hex digits of a hash of the topic and the sink URI."""
        digest = hashlib.sha256(f"{topic}\n{sink}".encode()).hexdigest()
        return f"{BACKFILL_ID_PREFIX}{digest[:12]}"

    @property
    def range_text(self) -> str:
        """``after <start> up to <end>``, as messages say it."""
        return range_text(self.start, self.end)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "topic": self.topic,
            "start": self.start,
            "end": self.end,
            "sink": self.sink,
            "format": self.format,
            "compression": self.compression,
            "actor": self.actor,
            "reason": self.reason,
            "created_at_ms": self.created_at_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Backfill:
        try:
            return cls(
                id=validation.backfill_id(data["id"]),
                topic=validation.topic_name(data["topic"]),
                start=data.get("start"),
                end=str(data["end"]),
                sink=str(data["sink"]),
                format=str(data["format"]),
                compression=str(data["compression"]),
                actor=str(data.get("actor") or ""),
                reason=str(data.get("reason") or ""),
                created_at_ms=int(data.get("created_at_ms") or 0),
            )
        except KeyError as exc:
            raise InvalidInput(f"backfill definition lacks {exc.args[0]!r}: {sorted(data)}") from exc


@dataclass(frozen=True)
class Lease:
    """Proof of holding a topic's lock: the owner (execution id) and the fence of this acquisition."""

    topic: TopicRef
    owner: str
    fence: int
    expires_at_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic.topic,
            "partition": self.topic.partition,
            "owner": self.owner,
            "fence": self.fence,
            "expires_at_ms": self.expires_at_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lease:
        try:
            return cls(
                topic=TopicRef(data["topic"], data.get("partition")),
                owner=validation.owner_id(data["owner"]),
                fence=validation.positive_int(data["fence"], what="fence"),
                expires_at_ms=int(data["expires_at_ms"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInput):
                raise
            raise InvalidInput(f"invalid lease {data!r}: {exc}") from exc


@dataclass(frozen=True)
class LockState:
    """The lock item as stored. ``owner=None``: free (released, or never taken)."""

    owner: str | None
    fence: int
    lease_expires_at_ms: int
    acquired_at_ms: int | None = None
    checkpoint: Checkpoint | None = None
    last_owner: str | None = None
    released_at_ms: int | None = None
    #: How the topic's last run ended (``processed``, ``up_to_date``, ``failed``) and when; ``failures``
    #: counts failed runs since the last one that ended well; the last failure's error, cause, execution.
    last_outcome: str | None = None
    last_run_at_ms: int | None = None
    failures: int = 0
    last_error: str | None = None
    last_cause: str | None = None
    last_failed: str | None = None
    #: When a run last ended well (``processed``, ``up_to_date``): the "no successful run" alarm's clock
    #: (``last_run_at_ms`` is also a failure's). None: no run of the topic ever did.
    last_success_at_ms: int | None = None
    #: An operator paused the topic: no run acquires the lock until it is resumed (who, why, when).
    paused: bool = False
    paused_by: str | None = None
    paused_reason: str | None = None
    paused_at_ms: int | None = None


class LockStatus(StrEnum):
    """How an observer sees a lock at a given time."""

    FREE = "free"
    HELD = "held"
    #: The lease has passed but the item is still there (normal: TTL deletes it much later).
    EXPIRED = "expired"


@dataclass(frozen=True)
class Acquired:
    """The caller holds the lock; ``checkpoint`` is where its next batch starts."""

    lease: Lease
    checkpoint: Checkpoint
    reentrant: bool = False
    outcome: str = field(default="acquired", init=False)
    #: The lock item as the acquire left it (its run history: leanops.health), when the store returned it.
    lock: LockState | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Held:
    """Another run holds the lock until ``lease_expires_at_ms`` (plus the skew margin before takeover)."""

    holder: str
    fence: int
    lease_expires_at_ms: int
    outcome: str = field(default="held", init=False)
    #: The lock item as the refused acquire found it (when the holder took it, its checkpoint copy, run
    #: history: leanops.health).
    lock: LockState | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Paused:
    """An operator paused the topic: nothing was acquired."""

    paused_by: str | None
    paused_reason: str | None
    paused_at_ms: int | None
    outcome: str = field(default="paused", init=False)
    #: The lock item as the refused acquire found it (its checkpoint copy: leanops.health).
    lock: LockState | None = field(default=None, compare=False, repr=False)


AcquireResult = Acquired | Held | Paused


@dataclass(frozen=True)
class Committed:
    """A commit that took effect (or had already taken effect: ``already_committed``)."""

    checkpoint: Checkpoint
    lease: Lease | None
    released: bool
    already_committed: bool = False


class Release(StrEnum):
    """Result of a release: the lock was ours and is now free, or it was not ours (any more)."""

    RELEASED = "released"
    NOT_HELD = "not_held"


class Settlement(StrEnum):
    """What the state says of one attempt's commit (:meth:`leanops.protocol.Protocol.settlement`)."""

    #: The commit landed: the committed output names the attempt's objects.
    LANDED = "landed"
    #: The commit did not land and never can (the lease is gone or the batch was committed by another).
    NOT_LANDED = "not_landed"
    #: The attempt still holds the lock and the checkpoint has not moved: its commit may still land.
    UNSETTLED = "unsettled"


@dataclass(frozen=True)
class RunClaim:
    """Result of claiming a run key: ``first`` unless another execution already claimed it."""

    run_key: str
    owner: str
    first: bool


@dataclass(frozen=True)
class TopicStatus:
    """What an operator sees for one topic."""

    topic: TopicRef
    checkpoint: Checkpoint
    lock: LockState | None
    lock_status: LockStatus

    @property
    def paused(self) -> bool:
        return self.lock is not None and self.lock.paused


@dataclass(frozen=True)
class Unlocked:
    """What :meth:`~leanops.protocol.Protocol.force_unlock` did: the lock as it was and as it is now.
    ``unlocked=False``: the lock was free, nothing changed and no audit record was written."""

    unlocked: bool
    before_owner: str | None
    before_fence: int
    after_owner: str | None
    after_fence: int
    audit: AuditRecord | None = None


@dataclass(frozen=True)
class PauseChange:
    """What :meth:`~leanops.protocol.Protocol.pause` or ``resume`` did: whether the topic is ``paused`` now,
    and the pause set, kept or lifted (who, why, since when). ``changed=False``: the topic already was as
    asked, nothing was written and no audit record."""

    paused: bool
    changed: bool
    paused_by: str | None
    paused_reason: str | None
    paused_at_ms: int | None
    audit: AuditRecord | None = None


@dataclass(frozen=True)
class Overridden:
    """A checkpoint override under an operator's lease: the checkpoint before and after, and the ``seq`` of
    the output records it superseded (a rewind's)."""

    before: Checkpoint
    after: Checkpoint
    superseded: tuple[int, ...]
    audit: AuditRecord


@dataclass(frozen=True)
class PushedTopic:
    """One topic's settings as pushed to the state table (``leanops topics push``): what every run of the
    topic reads at its start. ``settings`` is the topic's entry of the topics file with its paths resolved
    (:meth:`leanops.config.TopicConfig.to_settings`); ``version`` counts the topic's pushes (1 the first),
    and each version is also kept, never changed, as the topic's config history."""

    name: str
    settings: dict[str, Any]
    version: int
    digest: str
    pushed_by: str
    pushed_at_ms: int
    #: History records only: the push removed the topic (``settings`` are the last ones it had).
    removed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "settings": self.settings,
            "version": self.version,
            "digest": self.digest,
            "pushed_by": self.pushed_by,
            "pushed_at_ms": self.pushed_at_ms,
            "removed": self.removed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PushedTopic:
        return cls(
            name=str(data["name"]),
            settings=dict(data["settings"]),
            version=int(data["version"]),
            digest=str(data["digest"]),
            pushed_by=str(data["pushed_by"]),
            pushed_at_ms=int(data["pushed_at_ms"]),
            removed=bool(data.get("removed", False)),
        )
