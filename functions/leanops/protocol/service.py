"""The lock / checkpoint / run-key protocol: every rule of design §3 written once, over a :class:`StateStore`.

Examples
--------
>>> from leanops.protocol import Protocol, TopicRef, Advance
>>> from leanops.protocol.memory import InMemoryStore
>>> protocol = Protocol(InMemoryStore())
>>> got = protocol.acquire(TopicRef("vehicle_telemetry"), owner="exec-1", lease_seconds=60)
>>> got.outcome, got.checkpoint.position
('acquired', None)
>>> done = protocol.commit(got.lease, got.checkpoint, Advance("day=01/part-0.jsonl#700"), release=True)
>>> done.checkpoint.position, done.released
('day=01/part-0.jsonl#700', True)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from leanops import validation
from leanops.constants import DEFAULT_SKEW_MARGIN_MS
from leanops.errors import CheckpointConflict, InvalidInput, LockLost
from leanops.protocol.model import (
    ATTEMPT_FIELD,
    BEGINNING,
    Acquired,
    AcquireResult,
    Advance,
    Checkpoint,
    Committed,
    Held,
    Lease,
    LockState,
    LockStatus,
    OutputRecord,
    Release,
    RunClaim,
    Settlement,
    TopicRef,
    TopicStatus,
    position_order,
)
from leanops.protocol.store import CommitRejected, LockConflict, StateStore

Clock = Callable[[], int]

#: How long after its lease a dead run's lock item stays before TTL may delete it (design §3).
DEFAULT_LOCK_GC_GRACE_SECONDS = 86_400
#: A failure's cause is kept to this length on the lock item (status shows its start).
MAX_CAUSE_CHARS = 1000
#: How long a run key deduplicates starts (Scheduler retries span at most 24 hours).
DEFAULT_RUN_KEY_TTL_SECONDS = 7 * 86_400


def wall_clock_ms() -> int:
    """The caller's clock in epoch milliseconds. DynamoDB has no server clock for conditions."""
    return time.time_ns() // 1_000_000


class Protocol:
    """Per-topic lease, forward-only checkpoint and run-key deduplication.

    Parameters
    ----------
    store:
        Where items live (DynamoDB, or the in-memory fake in unit tests).
    clock:
        Epoch milliseconds of *this* caller. Other callers' clocks may differ by up to ``skew_margin_ms``.
    skew_margin_ms:
        A lease is taken over only once ``lease_expires_at + skew_margin_ms`` has passed on the taker's
        clock, so two callers whose clocks differ by less than the margin never both believe they hold it.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        clock: Clock = wall_clock_ms,
        skew_margin_ms: int = DEFAULT_SKEW_MARGIN_MS,
        lock_gc_grace_seconds: int = DEFAULT_LOCK_GC_GRACE_SECONDS,
        run_key_ttl_seconds: int = DEFAULT_RUN_KEY_TTL_SECONDS,
    ) -> None:
        if isinstance(skew_margin_ms, bool) or not isinstance(skew_margin_ms, int) or skew_margin_ms < 0:
            raise InvalidInput(f"invalid skew margin {skew_margin_ms!r}: expected milliseconds >= 0")
        self.store = store
        self.clock = clock
        self.skew_margin_ms = skew_margin_ms
        self.lock_gc_grace_seconds = validation.positive_int(lock_gc_grace_seconds, what="lock GC grace")
        self.run_key_ttl_seconds = validation.positive_int(run_key_ttl_seconds, what="run key TTL")
        self._identity: str | None = None

    # --- lock -----------------------------------------------------------------------------------------

    def acquire(self, topic: TopicRef, owner: str, lease_seconds: int) -> AcquireResult:
        """Take the topic's lock for ``owner`` (I1, I5, I7), or report who holds it.

        One conditional write in the common case. Re-entrant: if ``owner`` already holds the lock (a
        Step Functions retry, or our own write whose response was lost and retried), the lease is renewed
        and the same fence returned. The result carries the checkpoint to start from: the copy that every
        commit keeps on the lock item, or one strongly consistent read when there is no copy yet.
        """
        validation.owner_id(owner)
        lease_ms = validation.positive_int(lease_seconds, what="lease_seconds") * 1000
        now = self.clock()
        try:
            state = self.store.acquire_lock(
                topic,
                owner,
                now_ms=now,
                lease_expires_at_ms=now + lease_ms,
                expired_before_ms=now - self.skew_margin_ms,
                gc_at_s=self._gc_at_s(now + lease_ms),
            )
            reentrant = False
        except LockConflict as conflict:
            current = conflict.current
            if current is None or current.owner != owner:
                holder = current.owner if current and current.owner else "unknown"
                return Held(
                    holder=holder,
                    fence=current.fence if current else 0,
                    lease_expires_at_ms=current.lease_expires_at_ms if current else 0,
                )
            # Ours already: renew under the fence we hold, never bump it (that would fence ourselves out).
            try:
                state = self._renew(topic, owner, current.fence, lease_ms)
            except LockLost:
                return self.acquire(topic, owner, lease_seconds)  # lost it in between: start over
            reentrant = True
        checkpoint = state.checkpoint if state.checkpoint is not None else self.read_checkpoint(topic)
        lease = Lease(topic, owner, state.fence, state.lease_expires_at_ms)
        return Acquired(lease=lease, checkpoint=checkpoint, reentrant=reentrant)

    def renew(self, lease: Lease, lease_seconds: int) -> Lease:
        """Extend a lease we hold (heartbeat). Raises :class:`LockLost` if it was taken over or released."""
        lease_ms = validation.positive_int(lease_seconds, what="lease_seconds") * 1000
        state = self._renew(lease.topic, lease.owner, lease.fence, lease_ms)
        return replace(lease, expires_at_ms=state.lease_expires_at_ms)

    def release(self, lease: Lease, *, outcome: str | None = None) -> Release:
        """Free the lock if (and only if) this lease still owns it: one atomic conditional write (I6). With
        an ``outcome`` (the run ended well: ``processed``, ``up_to_date``), record it (``leanops status``)."""
        try:
            self.store.release_lock(
                lease.topic, lease.owner, lease.fence, now_ms=self.clock(), outcome=outcome
            )
        except LockConflict:
            return Release.NOT_HELD
        return Release.RELEASED

    def release_owned_by(self, topic: TopicRef, owner: str) -> Release:
        """Free the lock if ``owner`` holds it, whatever the fence: the clean-up after a failed execution,
        which may not know its fence. Safe because owners (execution ids) are unique."""
        validation.owner_id(owner)
        try:
            self.store.release_lock(topic, owner, None, now_ms=self.clock())
        except LockConflict:
            return Release.NOT_HELD
        return Release.RELEASED

    def record_failure(self, topic: TopicRef, execution: str, error: str, cause: str) -> None:
        """Record that ``execution`` failed with ``error``: the topic's last run, and its failing streak."""
        self.store.record_failure(
            topic, execution=execution, error=error[:256], cause=cause[:MAX_CAUSE_CHARS], now_ms=self.clock()
        )

    def _renew(self, topic: TopicRef, owner: str, fence: int, lease_ms: int) -> LockState:
        now = self.clock()
        try:
            return self.store.renew_lock(
                topic, owner, fence, lease_expires_at_ms=now + lease_ms, gc_at_s=self._gc_at_s(now + lease_ms)
            )
        except LockConflict as conflict:
            raise _lock_lost(topic, owner, conflict.current) from conflict

    # --- checkpoint -----------------------------------------------------------------------------------

    def read_checkpoint(self, topic: TopicRef) -> Checkpoint:
        """The topic's checkpoint (strongly consistent); :data:`BEGINNING` if it never committed."""
        return self.store.read_checkpoint(topic) or BEGINNING

    def commit(
        self,
        lease: Lease,
        expected: Checkpoint,
        advance: Advance,
        *,
        release: bool = False,
        lease_seconds: int | None = None,
        order: Callable[[str], Any] = position_order,
    ) -> Committed:
        """Move the checkpoint from exactly ``expected`` to ``advance`` while ``lease`` still holds the lock.

        One transaction: the checkpoint update conditioned on ``expected`` (I3: no gap, no double commit)
        and the lock update conditioned on our owner and fence (I1: a fenced-out holder cannot commit),
        which also either releases the lock (``release=True``) or extends the lease by ``lease_seconds``.
        With ``advance.output``, the same transaction records it as the output record of the new ``seq``:
        the manifest names exactly the committed batches. A retry of a commit that already landed returns
        ``already_committed=True`` instead of failing (I4); the record kept is the one of the attempt that
        landed. ``order`` is the sort key of the topic's positions (sources order them differently).

        Raises
        ------
        CheckpointConflict
            The checkpoint is not at ``expected``, or ``advance`` would not move it forward (I2).
        LockLost
            The lease was taken over or released.
        """
        if expected.position is not None and order(advance.position) <= order(expected.position):
            raise CheckpointConflict(
                f"refusing to move the checkpoint of {lease.topic} from {expected.position!r} to "
                f"{advance.position!r}: commits only move forward (use an operator rewind to go back)",
                current_position=expected.position,
            )
        lease_ms = validation.positive_int(lease_seconds, what="lease_seconds") * 1000 if not release else 0
        now = self.clock()
        new = Checkpoint(
            position=advance.position,
            last_ingested_ts=_max_or_none(expected.last_ingested_ts, advance.last_ingested_ts),
            last_snapshot_id=advance.last_snapshot_id
            if advance.last_snapshot_id is not None
            else expected.last_snapshot_id,
            seq=expected.seq + 1,
            updated_at_ms=now,
            committed_by=lease.owner,
            fence=lease.fence,
            batch_start=expected.position,
        )
        new_expiry = now + lease_ms
        try:
            self.store.commit(
                lease.topic,
                lease.owner,
                lease.fence,
                expected=expected,
                new=new,
                release=release,
                now_ms=now,
                lease_expires_at_ms=new_expiry,
                gc_at_s=self._gc_at_s(new_expiry),
                output=advance.output,
                schema=advance.schema,
            )
        except CommitRejected as rejected:
            current = rejected.checkpoint
            if current is not None and self._landed(lease.topic, current, new, advance.output):
                # Our own earlier attempt landed (lost response, or a retried task): finish what was asked.
                if current.seq == new.seq and not rejected.lock_failed:
                    # Still ours and still current: the transaction changed nothing this time.
                    if release:
                        self.release(lease, outcome="processed")
                        return Committed(current, None, released=True, already_committed=True)
                    state = self._renew(lease.topic, lease.owner, lease.fence, lease_ms)
                    kept = replace(lease, expires_at_ms=state.lease_expires_at_ms)
                    return Committed(current, kept, released=False, already_committed=True)
                # It landed, and the topic has moved on since (another run acquired and committed after
                # ours released): this run stops; its batch is committed exactly once.
                landed = current if current.seq == new.seq else new
                free = rejected.lock is None or rejected.lock.owner is None
                return Committed(landed, None, released=free, already_committed=True)
            if rejected.lock_failed:
                raise _lock_lost(lease.topic, lease.owner, rejected.lock) from rejected
            raise CheckpointConflict(
                f"checkpoint of {lease.topic} is at {current.position if current else None!r} "
                f"(seq {current.seq if current else 0}), not at the expected {expected.position!r} "
                f"(seq {expected.seq}): another writer moved it; this batch is not committed",
                current_position=current.position if current else None,
            ) from rejected
        kept_lease = None if release else replace(lease, expires_at_ms=new_expiry)
        return Committed(new, kept_lease, released=release)

    def read_schema(self, topic: TopicRef) -> dict[str, Any] | None:
        """The topic's sink schema (JSON) as the last commit that changed it left it; None before that."""
        return self.store.read_schema(topic)

    def outputs(
        self, topic: TopicRef, *, newest_first: bool = False, limit: int | None = None
    ) -> Iterator[OutputRecord]:
        """The topic's committed output, one record per commit that carried one, oldest first (or newest
        first), at most ``limit``. Strongly consistent: every commit that returned before is in it."""
        if limit is not None:
            validation.positive_int(limit, what="limit")
        return self.store.outputs(topic, newest_first=newest_first, limit=limit)

    def state_identity(self) -> str:
        """This state's identity (a random id recorded once in the table): what a sink's marker names."""
        if self._identity is None:
            self._identity = self.store.identity(uuid.uuid4().hex)
        return self._identity

    def _landed(
        self, topic: TopicRef, current: Checkpoint, new: Checkpoint, output: Mapping[str, Any] | None
    ) -> bool:
        """Whether the commit ``new`` describes is the one that made ``new.seq`` (the checkpoint is now at
        ``current``). With an output that names its attempt, the output record of ``new.seq`` decides: it is
        written by the same transaction and never changes, so it tells even after the topic moved on, and
        it tells two attempts of one owner and fence apart (Express may run an execution twice)."""
        if current.seq < new.seq:
            return False
        attempt = output.get(ATTEMPT_FIELD) if output else None
        if attempt is not None:
            record = self.store.read_output(topic, new.seq)
            return record is not None and record.data.get(ATTEMPT_FIELD) == attempt
        return current.seq == new.seq and _is_same_commit(current, new)

    def settlement(self, lease: Lease, expected: Checkpoint, attempt: str) -> Settlement:
        """Whether the commit of ``attempt`` — the batch after ``expected``, written under ``lease`` — landed,
        can never land, or may still land: the only ground on which its sink objects may be deleted (I9).

        Strongly consistent reads, in this order: the lock first, then the checkpoint (and the output record
        of ``expected.seq + 1``). Once the lock is not ours, our commit cannot land any more (its condition
        names our owner and fence, and neither comes back), so what the later reads show is final. Read the
        other way round, our commit could land between the two reads and be taken for lost.
        """
        lock = self.store.read_lock(lease.topic)
        holds = lock is not None and lock.owner == lease.owner and lock.fence == lease.fence
        checkpoint = self.read_checkpoint(lease.topic)
        if checkpoint.seq > expected.seq:
            record = self.store.read_output(lease.topic, expected.seq + 1)
            ours = record is not None and record.data.get(ATTEMPT_FIELD) == attempt
            return Settlement.LANDED if ours else Settlement.NOT_LANDED
        return Settlement.UNSETTLED if holds else Settlement.NOT_LANDED

    # --- runs and status ------------------------------------------------------------------------------

    def claim_run(self, topic: TopicRef, run_key: str, owner: str) -> RunClaim:
        """Record that ``owner`` is the run for ``run_key``; a duplicate start of the same key is not first.

        Run keys (design §4) are ``scheduled:<time>`` or ``manual:<execution name>``. A retry by the same
        owner is still first (re-entrant). The key expires by TTL after ``run_key_ttl_seconds``.
        """
        validation.owner_id(owner)
        if not isinstance(run_key, str) or not run_key.strip() or len(run_key) > 512:
            raise InvalidInput(
                f"invalid run key {run_key!r}: expected a non-empty string of at most 512 chars"
            )
        now = self.clock()
        on_record = self.store.claim_run(
            topic, run_key, owner, now_ms=now, gc_at_s=now // 1000 + self.run_key_ttl_seconds
        )
        return RunClaim(run_key=run_key, owner=on_record, first=on_record == owner)

    def status(self, topic: TopicRef) -> TopicStatus:
        """Checkpoint and lock of a topic as an operator sees them now (two strongly consistent reads)."""
        lock = self.store.read_lock(topic)
        return TopicStatus(
            topic=topic,
            checkpoint=self.read_checkpoint(topic),
            lock=lock,
            lock_status=self.lock_status(lock),
        )

    def lock_status(self, lock: LockState | None) -> LockStatus:
        """Free, held, or expired-but-still-present, judged on this caller's clock."""
        if lock is None or lock.owner is None:
            return LockStatus.FREE
        return LockStatus.HELD if lock.lease_expires_at_ms >= self.clock() else LockStatus.EXPIRED

    def _gc_at_s(self, lease_expires_at_ms: int) -> int:
        """TTL of a lock item: well after its lease, so TTL never decides who holds the lock (I5)."""
        return lease_expires_at_ms // 1000 + 1 + self.lock_gc_grace_seconds


def _lock_lost(topic: TopicRef, owner: str, current: LockState | None) -> LockLost:
    holder = current.owner if current else None
    fence = current.fence if current else None
    what = f"now held by {holder!r} (fence {fence})" if holder else "released"
    return LockLost(f"lock of {topic} is no longer held by {owner!r}: {what}", holder=holder, fence=fence)


def _is_same_commit(current: Checkpoint, new: Checkpoint) -> bool:
    """True when ``current`` is the result of exactly the commit ``new`` describes."""
    return (
        current.position == new.position
        and current.seq == new.seq
        and current.batch_start == new.batch_start
        and current.committed_by == new.committed_by
        and current.fence == new.fence
    )


def _max_or_none(a: int | float | None, b: int | float | None) -> int | float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
