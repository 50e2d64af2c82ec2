"""The storage seam: conditional writes on the lock, checkpoint and run-key items.

A store only maps values to items and applies conditions atomically; the rules (expiry maths with the
skew margin, owner and fence checks, forward-only, recognising our own landed writes) live once, in
:mod:`leanops.protocol.service`. Two implementations: :class:`~leanops.protocol.dynamodb.DynamoDBStore`
(the real one) and :class:`~leanops.protocol.memory.InMemoryStore` (a fake for fast unit tests).

The conditions every implementation must apply, by name:

========================  ===============================================================================
``lock_free``             the lock item has no ``owner`` (never taken, or released)
``lease_expired``         ``lease_expires_at < expired_before`` (caller's clock minus the skew margin)
``owned``                 ``owner = :owner AND fence = :fence``
``checkpoint_unchanged``  checkpoint ``position`` and ``seq`` equal the expected ones (absent if seq 0;
                          ``position`` NULL after a rewind to the beginning)
``run_unclaimed``         the run-key item does not exist, or its owner is the caller
``not_paused``            the lock item has no ``paused`` attribute
``live_output``           the output record exists and has no ``superseded_by``
``new_item``              the item does not exist (audit records, override records: written once)
========================  ===============================================================================

Operator changes (force unlock, pause, resume, checkpoint overrides) each write their audit record in the
same transaction as the change, under ``new_item``: an audit record is never updated, and leaves the table
only by its TTL (into the archive).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from leanops.errors import StoreUnavailable
from leanops.protocol.model import (
    AuditRecord,
    Backfill,
    Checkpoint,
    LockState,
    OutputRecord,
    PushedTopic,
    RunRecord,
    TopicRef,
)

#: DynamoDB's limit on the items of one TransactWriteItems.
MAX_TRANSACTION_ITEMS = 100


def page_limit(page_size: int | None, remaining: int | None) -> int | None:
    """How many records the next page may hold: no more than asked for in all, nor than a page holds."""
    bounds = [n for n in (page_size, remaining) if n is not None]
    return min(bounds) if bounds else None


class LockConflict(Exception):
    """A lock condition failed; ``current`` is the lock item as it was (``ALL_OLD``), None if absent."""

    def __init__(self, current: LockState | None) -> None:
        super().__init__(f"lock condition failed; current holder {current.owner if current else None!r}")
        self.current = current


class CommitRejected(Exception):
    """A commit transaction was cancelled; which conditions failed and the items as they were."""

    def __init__(
        self,
        *,
        checkpoint_failed: bool,
        lock_failed: bool,
        checkpoint: Checkpoint | None,
        lock: LockState | None,
        outputs_failed: bool = False,
    ) -> None:
        super().__init__(
            f"commit rejected (checkpoint_failed={checkpoint_failed}, lock_failed={lock_failed}, "
            f"outputs_failed={outputs_failed})"
        )
        self.checkpoint_failed = checkpoint_failed
        self.lock_failed = lock_failed
        self.checkpoint = checkpoint
        self.lock = lock
        #: An override's output records were not as read (one superseded already, or its own seq taken).
        self.outputs_failed = outputs_failed


class AuditKeyTaken(StoreUnavailable):
    """An audit record's key exists already: the change was not made (records are written once)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"audit record {key!r} exists already; nothing was changed")
        self.key = key


class BackfillDefined(Exception):
    """A backfill's definition exists already (``current``: as it was read after the refusal), or its
    state does without one (``current`` None); nothing was written."""

    def __init__(self, current: Backfill | None) -> None:
        super().__init__(f"backfill defined already: {current.id if current else 'state without definition'}")
        self.current = current


class TopicPushConflict(Exception):
    """A topic's pushed settings were not at the version the push expected (another push came first);
    ``current`` is the version found (None: not pushed). Nothing was written."""

    def __init__(self, name: str, current: int | None) -> None:
        super().__init__(f"topic {name}: pushed settings changed meanwhile (now version {current})")
        self.name = name
        self.current = current


class StateStore(ABC):
    """Atomic conditional operations on one topic's items."""

    #: The table's name (sink markers and messages name it).
    table_name: str

    @property
    def location(self) -> str:
        """Where the state lives, unique per state (a cache key)."""
        return self.table_name

    @abstractmethod
    def acquire_lock(
        self,
        topic: TopicRef,
        owner: str,
        *,
        now_ms: int,
        lease_expires_at_ms: int,
        expired_before_ms: int,
        gc_at_s: int,
        even_if_paused: bool = False,
    ) -> LockState:
        """If ``(lock_free OR lease_expired) AND not_paused`` (without ``not_paused`` if ``even_if_paused``):
        take the lock, bump the fence, return the new item (with the checkpoint copy, if any). Else raise
        :class:`LockConflict` carrying the current item.

        A lock item without a fence (new, or recreated after TTL deleted a dead run's) starts it at
        ``now_ms``: fences then never repeat, even across TTL deletions, so an (owner, fence) pair names one
        acquisition for ever — a paused holder can never find its pair current again."""

    @abstractmethod
    def renew_lock(
        self, topic: TopicRef, owner: str, fence: int, *, lease_expires_at_ms: int, gc_at_s: int
    ) -> LockState:
        """If ``owned``: extend the lease and return the new item. Else raise :class:`LockConflict`."""

    @abstractmethod
    def release_lock(
        self,
        topic: TopicRef,
        owner: str,
        fence: int | None,
        *,
        now_ms: int,
        outcome: str | None = None,
        run: RunRecord | None = None,
    ) -> None:
        """If ``owned`` (with ``fence=None``: if ``owner`` holds it under any fence): free the lock, keeping
        the item, its fence counter and checkpoint copy, and dropping its TTL; with an ``outcome``, record it
        as the last run's, and its time as the last success's, and reset the failure count; with a ``run``,
        put its record in the same write. Else raise :class:`LockConflict` and write nothing."""

    @abstractmethod
    def record_failure(self, topic: TopicRef, *, execution: str, error: str, cause: str, now_ms: int) -> None:
        """Record a failed run on the lock item (last outcome, error, cause, time; failures + 1), whoever
        holds the lock: it touches none of the lock's own attributes, so it needs no condition."""

    @abstractmethod
    def put_run_record(self, topic: TopicRef, run: RunRecord) -> None:
        """Put the record of a run that ended with no other write, unless its item exists."""

    @abstractmethod
    def commit(
        self,
        topic: TopicRef,
        owner: str,
        fence: int,
        *,
        expected: Checkpoint,
        new: Checkpoint,
        release: bool,
        now_ms: int,
        lease_expires_at_ms: int,
        gc_at_s: int,
        output: Mapping[str, Any] | None,
        schema: Mapping[str, Any] | None = None,
        run: RunRecord | None = None,
    ) -> None:
        """Atomically, if ``checkpoint_unchanged AND owned``: write ``new`` to the checkpoint item and its
        copy to the lock item, then either release the lock (outcome ``processed``) or extend its lease;
        with an ``output``, also put the output record of ``new.seq`` with ``new.position`` (no condition of
        its own: the other two guard it); with a ``schema``, also put it as the topic's sink schema (same
        guard). Else raise :class:`CommitRejected` and write nothing."""

    @abstractmethod
    def read_schema(self, topic: TopicRef) -> dict[str, Any] | None:
        """The topic's sink schema as its last commit that changed it wrote it (strongly consistent)."""

    @abstractmethod
    def read_checkpoint(self, topic: TopicRef) -> Checkpoint | None:
        """The checkpoint item, strongly consistent; None if the topic never committed."""

    @abstractmethod
    def read_lock(self, topic: TopicRef) -> LockState | None:
        """The lock item, strongly consistent; None if absent."""

    @abstractmethod
    def outputs(
        self, topic: TopicRef, *, newest_first: bool, limit: int | None, page_size: int | None = None
    ) -> Iterator[OutputRecord]:
        """The topic's output records in ``seq`` order (descending if ``newest_first``), at most ``limit``,
        strongly consistent, read ``page_size`` records per request (None: as many as one response holds)."""

    @abstractmethod
    def identity(self, proposed: str) -> str:
        """The state's identity: ``proposed`` if none was recorded yet (recorded now, once, atomically),
        else the one on record. A sink records it, so it is never written by two states."""

    @abstractmethod
    def read_output(self, topic: TopicRef, seq: int) -> OutputRecord | None:
        """The output record of commit ``seq``, strongly consistent; None if that commit carried none (or
        has not happened). Immutable once written: ``seq`` never repeats."""

    @abstractmethod
    def claim_run(self, topic: TopicRef, run_key: str, owner: str, *, now_ms: int, gc_at_s: int) -> str:
        """If ``run_unclaimed``: record ``owner`` as the run key's owner. Return the owner on record."""

    # --- operator changes: each one transaction, with its audit record ---------------------------------

    @abstractmethod
    def force_unlock(
        self, topic: TopicRef, owner: str, fence: int, *, now_ms: int, audit: AuditRecord
    ) -> None:
        """Atomically, if ``owned`` (the lock exactly as the caller read it): free the lock (drop the owner
        and the TTL, keep ``last_owner``), set the fence to ``fence + 1`` so the old holder's fenced writes
        fail, record the last outcome ``unlocked``, and put ``audit`` if ``new_item``. Else raise
        :class:`LockConflict` carrying the lock item (or :class:`AuditKeyTaken`) and write nothing."""

    @abstractmethod
    def pause(self, topic: TopicRef, *, actor: str, reason: str, now_ms: int, audit: AuditRecord) -> None:
        """Atomically, if ``not_paused``: mark the lock item paused (by ``actor``, for ``reason``, at
        ``now_ms``), creating it if absent with its fence at ``now_ms`` (as a new lock item's), and put
        ``audit``. Else raise :class:`LockConflict` carrying the lock item and write nothing."""

    @abstractmethod
    def resume(self, topic: TopicRef, *, paused_at_ms: int, audit: AuditRecord) -> None:
        """Atomically, if the lock item is paused since ``paused_at_ms`` (the pause the caller read): remove
        the pause and put ``audit``. Else raise :class:`LockConflict` carrying the lock item."""

    @abstractmethod
    def override_checkpoint(
        self,
        topic: TopicRef,
        owner: str,
        fence: int,
        *,
        expected: Checkpoint,
        new: Checkpoint,
        record: Mapping[str, Any],
        supersede: Sequence[int],
        now_ms: int,
        audit: AuditRecord,
    ) -> None:
        """Atomically, if ``checkpoint_unchanged AND owned``: write ``new`` to the checkpoint item and its
        copy to the lock item (the lease is neither released nor extended); put the override's output
        record of ``new.seq`` (``record``, kind ``override``, ``position``) if ``new_item``; mark each output
        record of ``supersede`` superseded by ``new.seq`` if ``live_output``; and put ``audit``. Else raise
        :class:`CommitRejected` (or :class:`AuditKeyTaken`) and write nothing."""

    @abstractmethod
    def define_backfill(
        self,
        backfill: Backfill,
        *,
        start: Checkpoint | None,
        record: Mapping[str, Any],
        now_ms: int,
        audit: AuditRecord,
    ) -> None:
        """Atomically, each if ``new_item``: put the definition and ``audit`` under the topic (the live
        state's partition key, so a topic's backfills are listed with one query), and when ``start`` is
        given, the backfill's checkpoint ``start`` and its override output record (``record``, kind
        ``override``) of ``start.seq`` under the backfill's own state. Else raise :class:`BackfillDefined`
        (or :class:`AuditKeyTaken`) and write nothing."""

    @abstractmethod
    def read_backfill(self, topic: TopicRef, backfill_id: str) -> Backfill | None:
        """The topic's backfill ``backfill_id``, strongly consistent; None if it was never defined."""

    @abstractmethod
    def backfills(self, topic: TopicRef) -> Iterator[Backfill]:
        """Every backfill of the topic, in id order, strongly consistent."""

    @abstractmethod
    def audit_records(
        self, topic: TopicRef, *, limit: int | None, page_size: int | None = None
    ) -> Iterator[AuditRecord]:
        """The topic's audit records, newest first, at most ``limit``, strongly consistent, read
        ``page_size`` per request (None: as many as one response holds)."""

    # --- pushed topic settings (``leanops topics push``) ------------------------------------------------

    @abstractmethod
    def read_pushed_topic(self, name: str) -> PushedTopic | None:
        """The topic's pushed settings, strongly consistent; None if it is not pushed (or was removed)."""

    @abstractmethod
    def pushed_topics(self) -> Iterator[PushedTopic]:
        """Every pushed topic, in name order, strongly consistent."""

    @abstractmethod
    def push_topic(self, topic: PushedTopic, *, expected_version: int | None) -> None:
        """Atomically, if the topic's pushed version is ``expected_version`` (None: not pushed): make
        ``topic`` its settings, and add it to the topic's history (written once). Else raise
        :class:`TopicPushConflict` and write nothing."""

    @abstractmethod
    def remove_pushed_topic(self, removal: PushedTopic, *, expected_version: int) -> None:
        """Atomically, if the topic's pushed version is ``expected_version``: delete its settings and add
        ``removal`` (``removed``, the next version) to its history. The topic's state (lock, checkpoint,
        output records) is not touched. Else raise :class:`TopicPushConflict` and write nothing."""

    @abstractmethod
    def topic_history(self, name: str, *, limit: int | None) -> Iterator[PushedTopic]:
        """The topic's pushed versions, newest first, at most ``limit``."""
