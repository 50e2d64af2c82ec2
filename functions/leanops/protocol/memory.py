"""An in-memory :class:`StateStore` for fast unit tests: the same conditions as DynamoDB, under a mutex."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from leanops.protocol.model import (
    AuditRecord,
    Backfill,
    Checkpoint,
    LockState,
    OutputKind,
    OutputRecord,
    PushedTopic,
    RunRecord,
    TopicRef,
)
from leanops.protocol.store import (
    AuditKeyTaken,
    BackfillDefined,
    CommitRejected,
    LockConflict,
    StateStore,
    TopicPushConflict,
    page_limit,
)

Key = TypeVar("Key", int, str)
Value = TypeVar("Value")


class InMemoryStore(StateStore):
    """Items in dicts; every operation is atomic. ``requests`` counts calls, as DynamoDB requests would."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self.locks: dict[TopicRef, LockState] = {}
        self.checkpoints: dict[TopicRef, Checkpoint] = {}
        self.runs: dict[tuple[TopicRef, str], str] = {}
        self.outputs_by_topic: dict[TopicRef, dict[int, OutputRecord]] = {}
        self.requests = 0
        self.state_id: str | None = None
        self.table_name = "in-memory"
        self.schemas: dict[TopicRef, dict[str, Any]] = {}
        self.audits: dict[TopicRef, dict[str, AuditRecord]] = {}
        self.backfill_definitions: dict[TopicRef, dict[str, Backfill]] = {}
        self.pushed: dict[str, PushedTopic] = {}
        self.topic_histories: dict[str, dict[int, PushedTopic]] = {}
        #: Run records by topic and key (no TTL here: DynamoDB's is tested against DynamoDB Local).
        self.run_records: dict[TopicRef, dict[str, RunRecord]] = {}

    @property
    def location(self) -> str:
        return f"in-memory:{id(self)}"

    def _owned(self, topic: TopicRef, owner: str, fence: int | None) -> LockState | None:
        """The lock if ``owned`` holds (any fence when ``fence`` is None), else None."""
        lock = self.locks.get(topic)
        if lock is None or lock.owner != owner or (fence is not None and lock.fence != fence):
            return None
        return lock

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
        with self._mutex:
            self.requests += 1
            lock = self.locks.get(topic)
            free = lock is None or lock.owner is None
            expired = lock is not None and lock.lease_expires_at_ms < expired_before_ms
            if lock is not None and ((lock.paused and not even_if_paused) or not (free or expired)):
                raise LockConflict(lock)
            # Every other attribute (checkpoint copy, run health, a pause) survives, as on the DynamoDB item.
            current = lock or LockState(owner=None, fence=0, lease_expires_at_ms=0)
            new = replace(
                current,
                owner=owner,
                fence=(current.fence or now_ms) + 1,
                lease_expires_at_ms=lease_expires_at_ms,
                acquired_at_ms=now_ms,
            )
            self.locks[topic] = new
            return new

    def renew_lock(
        self, topic: TopicRef, owner: str, fence: int, *, lease_expires_at_ms: int, gc_at_s: int
    ) -> LockState:
        with self._mutex:
            self.requests += 1
            lock = self._owned(topic, owner, fence)
            if lock is None:
                raise LockConflict(self.locks.get(topic))
            self.locks[topic] = replace(lock, lease_expires_at_ms=lease_expires_at_ms)
            return self.locks[topic]

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
        with self._mutex:
            self.requests += 1
            lock = self._owned(topic, owner, fence)
            if lock is None:
                raise LockConflict(self.locks.get(topic))
            self._put_run(topic, run)
            if outcome is not None:
                lock = replace(
                    lock, last_outcome=outcome, last_run_at_ms=now_ms, last_success_at_ms=now_ms, failures=0
                )
            self.locks[topic] = replace(lock, owner=None, last_owner=owner, released_at_ms=now_ms)

    def record_failure(self, topic: TopicRef, *, execution: str, error: str, cause: str, now_ms: int) -> None:
        with self._mutex:
            self.requests += 1
            lock = self.locks.get(topic) or LockState(owner=None, fence=0, lease_expires_at_ms=0)
            self.locks[topic] = replace(
                lock,
                last_outcome="failed",
                last_error=error,
                last_cause=cause,
                last_run_at_ms=now_ms,
                last_failed=execution,
                failures=lock.failures + 1,
            )

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
        with self._mutex:
            self.requests += 1
            lock = self._checked_commit(topic, owner, fence, expected)
            self._put_run(topic, run)
            self.checkpoints[topic] = new
            if schema is not None:
                self.schemas[topic] = copy.deepcopy(dict(schema))
            if output is not None:
                record = OutputRecord(new.seq, now_ms, copy.deepcopy(dict(output)), position=new.position)
                self.outputs_by_topic.setdefault(topic, {})[new.seq] = record
            if release:
                self.locks[topic] = replace(
                    lock,
                    owner=None,
                    checkpoint=new.as_copy(),
                    last_owner=owner,
                    released_at_ms=now_ms,
                    last_outcome="processed",
                    last_run_at_ms=now_ms,
                    last_success_at_ms=now_ms,
                    failures=0,
                )
            else:
                self.locks[topic] = replace(
                    lock, checkpoint=new.as_copy(), lease_expires_at_ms=lease_expires_at_ms
                )

    def put_run_record(self, topic: TopicRef, run: RunRecord) -> None:
        with self._mutex:
            self.requests += 1
            self.run_records.setdefault(topic, {}).setdefault(run.key, run)

    def _put_run(self, topic: TopicRef, run: RunRecord | None) -> None:
        """Put ``run``'s record (call under the mutex, after the write's conditions held)."""
        if run is not None:
            self.run_records.setdefault(topic, {})[run.key] = run

    def _checked_commit(
        self, topic: TopicRef, owner: str, fence: int, expected: Checkpoint, *, outputs_ok: bool = True
    ) -> LockState:
        """The lock, if ``checkpoint_unchanged AND owned`` (and the caller's output checks) hold; else raise
        :class:`CommitRejected` as a cancelled transaction would. Call under the mutex."""
        current = self.checkpoints.get(topic)
        if expected.seq == 0:
            checkpoint_ok = current is None
        else:
            checkpoint_ok = (
                current is not None and current.position == expected.position and current.seq == expected.seq
            )
        lock = self._owned(topic, owner, fence)
        if not checkpoint_ok or lock is None or not outputs_ok:
            raise CommitRejected(
                checkpoint_failed=not checkpoint_ok,
                lock_failed=lock is None,
                checkpoint=current if not checkpoint_ok else None,
                lock=self.locks.get(topic) if lock is None else None,
                outputs_failed=not outputs_ok,
            )
        return lock

    def read_checkpoint(self, topic: TopicRef) -> Checkpoint | None:
        with self._mutex:
            self.requests += 1
            return self.checkpoints.get(topic)

    def read_lock(self, topic: TopicRef) -> LockState | None:
        with self._mutex:
            self.requests += 1
            return self.locks.get(topic)

    def outputs(
        self, topic: TopicRef, *, newest_first: bool, limit: int | None, page_size: int | None = None
    ) -> Iterator[OutputRecord]:
        pages = self._pages(lambda: self.outputs_by_topic.get(topic, {}), newest_first, limit, page_size)
        for record in pages:
            yield replace(record, data=copy.deepcopy(record.data))

    def _pages(
        self,
        items: Callable[[], dict[Key, Value]],
        newest_first: bool,
        limit: int | None,
        page_size: int | None,
    ) -> Iterator[Value]:
        """The ``items()`` in key order, page by page like a ``Query`` (one request each, reading the items
        under the mutex), resuming after the last key returned."""
        last: Key | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            size = page_limit(page_size, remaining)
            with self._mutex:
                self.requests += 1
                current = items()
                keys = sorted(current, reverse=newest_first)
                if last is not None:
                    keys = [key for key in keys if (key < last if newest_first else key > last)]
                page = keys[:size]
                values = [current[key] for key in page]
            yield from values
            if remaining is not None:
                remaining -= len(page)
            if len(keys) <= len(page):
                return
            last = page[-1]

    def read_schema(self, topic: TopicRef) -> dict[str, Any] | None:
        with self._mutex:
            self.requests += 1
            schema = self.schemas.get(topic)
            return copy.deepcopy(schema) if schema is not None else None

    def identity(self, proposed: str) -> str:
        with self._mutex:
            self.requests += 1
            if self.state_id is None:
                self.state_id = proposed
            return self.state_id

    def read_output(self, topic: TopicRef, seq: int) -> OutputRecord | None:
        with self._mutex:
            self.requests += 1
            record = self.outputs_by_topic.get(topic, {}).get(seq)
            return replace(record, data=copy.deepcopy(record.data)) if record else None

    def claim_run(self, topic: TopicRef, run_key: str, owner: str, *, now_ms: int, gc_at_s: int) -> str:
        with self._mutex:
            self.requests += 1
            return self.runs.setdefault((topic, run_key), owner)

    # --- operator changes ---------------------------------------------------------------------------

    def force_unlock(
        self, topic: TopicRef, owner: str, fence: int, *, now_ms: int, audit: AuditRecord
    ) -> None:
        def unlock(lock: LockState) -> LockState:
            return replace(
                lock,
                owner=None,
                fence=fence + 1,
                last_owner=owner,
                released_at_ms=now_ms,
                last_outcome="unlocked",
                last_run_at_ms=now_ms,
            )

        self._change_lock(topic, lambda lock: self._owned(topic, owner, fence) is not None, unlock, audit)

    def pause(self, topic: TopicRef, *, actor: str, reason: str, now_ms: int, audit: AuditRecord) -> None:
        def pause(lock: LockState) -> LockState:
            fence = lock.fence if lock.fence else now_ms  # a new lock item's fence starts at the clock
            return replace(
                lock, fence=fence, paused=True, paused_by=actor, paused_reason=reason, paused_at_ms=now_ms
            )

        self._change_lock(topic, lambda lock: not lock.paused, pause, audit)

    def resume(self, topic: TopicRef, *, paused_at_ms: int, audit: AuditRecord) -> None:
        def resume(lock: LockState) -> LockState:
            return replace(lock, paused=False, paused_by=None, paused_reason=None, paused_at_ms=None)

        self._change_lock(
            topic, lambda lock: lock.paused and lock.paused_at_ms == paused_at_ms, resume, audit
        )

    def _change_lock(
        self,
        topic: TopicRef,
        condition: Callable[[LockState], bool],
        change: Callable[[LockState], LockState],
        audit: AuditRecord,
    ) -> None:
        """If ``condition`` holds of the lock item (an absent one has no attributes): ``change`` it and
        record ``audit``, atomically."""
        with self._mutex:
            self.requests += 1
            current = self.locks.get(topic)
            lock = current or LockState(owner=None, fence=0, lease_expires_at_ms=0)
            if not condition(lock):
                raise LockConflict(current)
            self._new_audit(topic, audit)
            self.locks[topic] = change(lock)

    def _new_audit(self, topic: TopicRef, audit: AuditRecord) -> None:
        audits = self.audits.setdefault(topic, {})
        if audit.key in audits:
            raise AuditKeyTaken(audit.key)
        audits[audit.key] = copy.deepcopy(audit)

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
        with self._mutex:
            self.requests += 1
            records = self.outputs_by_topic.setdefault(topic, {})
            live = all(seq in records and not records[seq].superseded for seq in supersede)
            lock = self._checked_commit(
                topic, owner, fence, expected, outputs_ok=live and new.seq not in records
            )
            self._new_audit(topic, audit)
            self.checkpoints[topic] = new
            self.locks[topic] = replace(lock, checkpoint=new.as_copy())
            records[new.seq] = OutputRecord(
                new.seq, now_ms, copy.deepcopy(dict(record)), position=new.position, kind=OutputKind.OVERRIDE
            )
            for seq in supersede:
                records[seq] = replace(records[seq], superseded_by=new.seq, superseded_at_ms=now_ms)

    def define_backfill(
        self,
        backfill: Backfill,
        *,
        start: Checkpoint | None,
        record: Mapping[str, Any],
        now_ms: int,
        audit: AuditRecord,
    ) -> None:
        topic, state = TopicRef(backfill.topic), backfill.ref
        with self._mutex:
            self.requests += 1
            defined = self.backfill_definitions.setdefault(topic, {})
            if backfill.id in defined:
                raise BackfillDefined(defined[backfill.id])
            if start is not None and (
                state in self.checkpoints or start.seq in self.outputs_by_topic.get(state, {})
            ):
                raise BackfillDefined(None)
            self._new_audit(topic, audit)
            defined[backfill.id] = backfill
            if start is not None:
                self.checkpoints[state] = start
                self.outputs_by_topic.setdefault(state, {})[start.seq] = OutputRecord(
                    start.seq,
                    now_ms,
                    copy.deepcopy(dict(record)),
                    position=start.position,
                    kind=OutputKind.OVERRIDE,
                )

    def read_backfill(self, topic: TopicRef, backfill_id: str) -> Backfill | None:
        with self._mutex:
            self.requests += 1
            return self.backfill_definitions.get(topic, {}).get(backfill_id)

    def backfills(self, topic: TopicRef) -> Iterator[Backfill]:
        with self._mutex:
            self.requests += 1
            defined = dict(self.backfill_definitions.get(topic, {}))
        yield from (defined[key] for key in sorted(defined))

    def audit_records(
        self, topic: TopicRef, *, limit: int | None, page_size: int | None = None
    ) -> Iterator[AuditRecord]:
        for audit in self._pages(lambda: self.audits.get(topic, {}), True, limit, page_size):
            yield copy.deepcopy(audit)

    # --- pushed topic settings ----------------------------------------------------------------------------

    def read_pushed_topic(self, name: str) -> PushedTopic | None:
        with self._mutex:
            self.requests += 1
            return self.pushed.get(name)

    def pushed_topics(self) -> Iterator[PushedTopic]:
        with self._mutex:
            self.requests += 1
            topics = [self.pushed[name] for name in sorted(self.pushed)]
        yield from topics

    def push_topic(self, topic: PushedTopic, *, expected_version: int | None) -> None:
        with self._mutex:
            self.requests += 1
            self._check_pushed(topic.name, expected_version)
            self._add_history(topic)
            self.pushed[topic.name] = topic

    def remove_pushed_topic(self, removal: PushedTopic, *, expected_version: int) -> None:
        with self._mutex:
            self.requests += 1
            self._check_pushed(removal.name, expected_version)
            self._add_history(removal)
            del self.pushed[removal.name]

    def topic_history(self, name: str, *, limit: int | None) -> Iterator[PushedTopic]:
        with self._mutex:
            self.requests += 1
            history = self.topic_histories.get(name, {})
            versions = [history[v] for v in sorted(history, reverse=True)]
        yield from versions[:limit] if limit is not None else versions

    def _check_pushed(self, name: str, expected_version: int | None) -> None:
        current = self.pushed.get(name)
        found = current.version if current is not None else None
        if found != expected_version:
            raise TopicPushConflict(name, found)

    def _add_history(self, topic: PushedTopic) -> None:
        history = self.topic_histories.setdefault(topic.name, {})
        if topic.version in history:  # written once, like DynamoDB's attribute_not_exists
            raise TopicPushConflict(topic.name, max(history))
        history[topic.version] = topic
