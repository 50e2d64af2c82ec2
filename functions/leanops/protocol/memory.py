"""An in-memory :class:`StateStore` for fast unit tests: the same conditions as DynamoDB, under a mutex."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from leanops.protocol.model import Checkpoint, LockState, OutputRecord, TopicRef
from leanops.protocol.store import CommitRejected, LockConflict, StateStore, page_limit


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
    ) -> LockState:
        with self._mutex:
            self.requests += 1
            lock = self.locks.get(topic)
            free = lock is None or lock.owner is None
            if not free and lock is not None and not lock.lease_expires_at_ms < expired_before_ms:
                raise LockConflict(lock)
            new = LockState(
                owner=owner,
                fence=(lock.fence if lock and lock.fence else now_ms) + 1,
                lease_expires_at_ms=lease_expires_at_ms,
                acquired_at_ms=now_ms,
                checkpoint=lock.checkpoint if lock else None,
                last_owner=lock.last_owner if lock else None,
                released_at_ms=lock.released_at_ms if lock else None,
            )
            if lock is not None:  # the run health survives a new holder, as it does on the DynamoDB item
                new = replace(
                    new,
                    last_outcome=lock.last_outcome,
                    last_run_at_ms=lock.last_run_at_ms,
                    failures=lock.failures,
                    last_error=lock.last_error,
                    last_cause=lock.last_cause,
                    last_failed=lock.last_failed,
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
        self, topic: TopicRef, owner: str, fence: int | None, *, now_ms: int, outcome: str | None = None
    ) -> None:
        with self._mutex:
            self.requests += 1
            lock = self._owned(topic, owner, fence)
            if lock is None:
                raise LockConflict(self.locks.get(topic))
            if outcome is not None:
                lock = replace(lock, last_outcome=outcome, last_run_at_ms=now_ms, failures=0)
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
    ) -> None:
        with self._mutex:
            self.requests += 1
            current = self.checkpoints.get(topic)
            if expected.seq == 0:
                checkpoint_ok = current is None
            else:
                checkpoint_ok = (
                    current is not None
                    and current.position == expected.position
                    and current.seq == expected.seq
                )
            lock = self._owned(topic, owner, fence)
            if not checkpoint_ok or lock is None:
                raise CommitRejected(
                    checkpoint_failed=not checkpoint_ok,
                    lock_failed=lock is None,
                    checkpoint=current if not checkpoint_ok else None,
                    lock=self.locks.get(topic) if lock is None else None,
                )
            self.checkpoints[topic] = new
            if schema is not None:
                self.schemas[topic] = copy.deepcopy(dict(schema))
            if output is not None:
                record = OutputRecord(new.seq, now_ms, copy.deepcopy(dict(output)))
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
                    failures=0,
                )
            else:
                self.locks[topic] = replace(
                    lock, checkpoint=new.as_copy(), lease_expires_at_ms=lease_expires_at_ms
                )

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
        """Page by page like a ``Query`` (one request each), resuming after the last ``seq`` returned."""
        last: int | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            size = page_limit(page_size, remaining)
            with self._mutex:
                self.requests += 1
                records = self.outputs_by_topic.get(topic, {})
                seqs = sorted(records, reverse=newest_first)
                if last is not None:
                    seqs = [seq for seq in seqs if (seq < last if newest_first else seq > last)]
                page = [replace(records[seq], data=copy.deepcopy(records[seq].data)) for seq in seqs[:size]]
            yield from page
            if remaining is not None:
                remaining -= len(page)
            if len(seqs) <= len(page):
                return
            last = page[-1].seq

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
