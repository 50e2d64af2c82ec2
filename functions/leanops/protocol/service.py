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
from leanops.errors import CheckpointConflict, InvalidInput, LockLost, StoreThrottled
from leanops.protocol.model import (
    ATTEMPT_FIELD,
    BEGINNING,
    MAX_REASON_CHARS,
    Acquired,
    AcquireResult,
    Advance,
    AuditRecord,
    Backfill,
    Checkpoint,
    Committed,
    Held,
    Lease,
    LockState,
    LockStatus,
    OutputKind,
    OutputRecord,
    Overridden,
    PauseChange,
    Paused,
    Release,
    RunClaim,
    RunRecord,
    Settlement,
    TopicRef,
    TopicStatus,
    Unlocked,
    position_order,
)
from leanops.protocol.store import (
    MAX_TRANSACTION_ITEMS,
    BackfillDefined,
    CommitRejected,
    LockConflict,
    StateStore,
)

Clock = Callable[[], int]

#: How long after its lease a dead run's lock item stays before TTL may delete it (design §3).
DEFAULT_LOCK_GC_GRACE_SECONDS = 86_400
#: A failure's cause is kept to this length on the lock item (status shows its start).
MAX_CAUSE_CHARS = 1000
#: How long a run key deduplicates starts (Scheduler retries span at most 24 hours).
DEFAULT_RUN_KEY_TTL_SECONDS = 7 * 86_400
#: An operator change conditioned on the lock as read reads again this many times when the lock changed
#: in between (a release, a takeover), then gives up.
OPERATOR_ATTEMPTS = 3
#: Output records a rewind can supersede: its transaction also writes the checkpoint, the lock's copy, the
#: override's output record and the audit record.
MAX_SUPERSEDED = MAX_TRANSACTION_ITEMS - 4


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

    def acquire(
        self, topic: TopicRef, owner: str, lease_seconds: int, *, operator: bool = False
    ) -> AcquireResult:
        """Take the topic's lock for ``owner`` (I1, I5, I7), or report who holds it.

        One conditional write in the common case. Re-entrant: if ``owner`` already holds the lock (a
        Step Functions retry, or our own write whose response was lost and retried), the lease is renewed
        and the same fence returned. A topic an operator paused is not acquired (:class:`Paused`): the same
        conditional write refuses it, at no extra request; except by an ``operator`` (the lease of an
        override: pause, set or rewind the checkpoint, resume). The result carries the checkpoint to start
        from: the copy that every commit keeps on the lock item, or one strongly consistent read when there
        is no copy yet.
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
                even_if_paused=operator,
            )
            reentrant = False
        except LockConflict as conflict:
            current = conflict.current
            if current is not None and current.owner != owner and current.paused:
                return Paused(current.paused_by, current.paused_reason, current.paused_at_ms, lock=current)
            if current is None or current.owner != owner:
                holder = current.owner if current and current.owner else "unknown"
                return Held(
                    holder=holder,
                    fence=current.fence if current else 0,
                    lease_expires_at_ms=current.lease_expires_at_ms if current else 0,
                    lock=current,
                )
            # Ours already: renew under the fence we hold, never bump it (that would fence ourselves out).
            try:
                state = self._renew(topic, owner, current.fence, lease_ms)
            except LockLost:
                return self.acquire(topic, owner, lease_seconds, operator=operator)  # lost it: start over
            reentrant = True
        checkpoint = state.checkpoint if state.checkpoint is not None else self.read_checkpoint(topic)
        lease = Lease(topic, owner, state.fence, state.lease_expires_at_ms)
        return Acquired(lease=lease, checkpoint=checkpoint, reentrant=reentrant, lock=state)

    def renew(self, lease: Lease, lease_seconds: int) -> Lease:
        """Extend a lease we hold (heartbeat). Raises :class:`LockLost` if it was taken over or released."""
        lease_ms = validation.positive_int(lease_seconds, what="lease_seconds") * 1000
        state = self._renew(lease.topic, lease.owner, lease.fence, lease_ms)
        return replace(lease, expires_at_ms=state.lease_expires_at_ms)

    def release(self, lease: Lease, *, outcome: str | None = None, run: RunRecord | None = None) -> Release:
        """Free the lock if (and only if) this lease still owns it: one atomic conditional write (I6). With
        an ``outcome`` (the run ended well: ``processed``, ``up_to_date``), record it (``leanops status``);
        with a ``run``, its record lands in the same write, or not at all."""
        try:
            self.store.release_lock(
                lease.topic, lease.owner, lease.fence, now_ms=self.clock(), outcome=outcome, run=run
            )
        except LockConflict:
            if run is not None:  # taken over or unlocked meanwhile: the run still ended, and is recorded
                self.store.put_run_record(lease.topic, run)
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

    def record_failure(
        self, topic: TopicRef, execution: str, error: str, cause: str, *, run: RunRecord | None = None
    ) -> None:
        """Record that ``execution`` failed with ``error``: the topic's last run, and its failing streak;
        with a ``run``, its record too, unless the execution has one (a run that committed and released,
        then failed or timed out, keeps the record of what it did)."""
        self.store.record_failure(
            topic, execution=execution, error=error[:256], cause=cause[:MAX_CAUSE_CHARS], now_ms=self.clock()
        )
        if run is not None:
            error, cause = (run.error or "")[:256], (run.cause or "")[:MAX_CAUSE_CHARS]
            self.record_run(topic, replace(run, error=error or None, cause=cause or None))

    def record_run(self, topic: TopicRef, run: RunRecord) -> None:
        """The record of a run that ended without writing (skipped, paused), unless it has one already."""
        self.store.put_run_record(topic, run)

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
        run: RunRecord | None = None,
    ) -> Committed:
        """Move the checkpoint from exactly ``expected`` to ``advance`` while ``lease`` still holds the lock.

        One transaction: the checkpoint update conditioned on ``expected`` (I3: no gap, no double commit)
        and the lock update conditioned on our owner and fence (I1: a fenced-out holder cannot commit),
        which also either releases the lock (``release=True``) or extends the lease by ``lease_seconds``.
        With ``advance.output``, the same transaction records it as the output record of the new ``seq``:
        the manifest names exactly the committed batches. A retry of a commit that already landed returns
        ``already_committed=True`` instead of failing (I4); the record kept is the one of the attempt that
        landed. ``order`` is the sort key of the topic's positions (sources order them differently). A
        releasing commit puts the ``run``'s record in the same transaction.

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
            resume=advance.resume,
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
                run=run if release else None,
            )
        except CommitRejected as rejected:
            current = rejected.checkpoint
            if current is not None and self._landed(lease.topic, current, new, advance.output):
                # Our own earlier attempt landed (lost response, or a retried task): finish what was asked.
                if current.seq == new.seq and not rejected.lock_failed:
                    # Still ours and still current: the transaction changed nothing this time.
                    if release:
                        self.release(lease, outcome="processed", run=run)
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

    def has_committed_batch(self, topic: TopicRef) -> bool:
        """Whether a commit of this state wrote a batch: an output record of kind batch (newest first, so
        one page in practice), or a checkpoint past seq 0 with no output record at all (a state from before
        output records). An operator's override alone (a backfill's start, ``checkpoint set``) is not one."""
        seen = False
        for record in self.outputs(topic, newest_first=True):
            if record.kind is OutputKind.BATCH:
                return True
            seen = True
        return not seen and self.read_checkpoint(topic).seq > 0

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
            if record is None:  # expired (decision 0014): which attempt landed can no longer be told; keep
                return Settlement.UNSETTLED
            return Settlement.LANDED if record.data.get(ATTEMPT_FIELD) == attempt else Settlement.NOT_LANDED
        return Settlement.UNSETTLED if holds else Settlement.NOT_LANDED

    # --- operator changes (design §2): each one atomic write, audited ----------------------------------

    def force_unlock(self, topic: TopicRef, *, actor: str, reason: str) -> Unlocked:
        """Free the topic's lock whoever holds it (live or expired), bumping the fence so that the holder's
        commit, renew and release (all conditioned on its owner and fence) fail from now on; the last
        run's outcome becomes ``unlocked``. A free lock is left as it is, with no audit record.

        Conditioned on the lock exactly as read: if it changed in between (released, taken over), it is
        read again (at most :data:`OPERATOR_ATTEMPTS` times) and the result names the holder unlocked.
        """
        actor, reason = _operator_note(actor, "actor"), _operator_note(reason, "reason")
        for _ in range(OPERATOR_ATTEMPTS):
            lock = self.store.read_lock(topic)
            if lock is None or lock.owner is None:
                fence = lock.fence if lock else 0
                return Unlocked(False, None, fence, None, fence)
            now = self.clock()
            before = {
                "owner": lock.owner,
                "fence": lock.fence,
                "lease_expires_at_ms": lock.lease_expires_at_ms,
            }
            after = {"owner": None, "fence": lock.fence + 1}
            audit = AuditRecord.new("force_unlock", actor, reason, now, before, after)
            try:
                self.store.force_unlock(topic, lock.owner, lock.fence, now_ms=now, audit=audit)
            except LockConflict:
                continue
            return Unlocked(True, lock.owner, lock.fence, None, lock.fence + 1, audit)
        raise StoreThrottled(f"the lock of {topic} changed {OPERATOR_ATTEMPTS} times while unlocking; retry")

    def pause(self, topic: TopicRef, *, actor: str, reason: str) -> PauseChange:
        """Pause the topic: from now on no run acquires its lock (:class:`Paused`) until :meth:`resume`. A run
        holding the lock now finishes as usual. Pausing a paused topic changes nothing (no audit record)."""
        actor, reason = _operator_note(actor, "actor"), _operator_note(reason, "reason")
        now = self.clock()
        after = {"paused": True, "paused_at_ms": now}
        audit = AuditRecord.new("pause", actor, reason, now, {"paused": False}, after)
        try:
            self.store.pause(topic, actor=actor, reason=reason, now_ms=now, audit=audit)
        except LockConflict as conflict:
            return _pause_change(conflict.current, paused=True)
        return PauseChange(True, True, actor, reason, now, audit)

    def resume(self, topic: TopicRef, *, actor: str, reason: str) -> PauseChange:
        """Lift a pause, so that the next run acquires the lock again; the result names the pause lifted.
        Resuming a topic that is not paused changes nothing (no audit record)."""
        actor, reason = _operator_note(actor, "actor"), _operator_note(reason, "reason")
        for _ in range(OPERATOR_ATTEMPTS):
            lock = self.store.read_lock(topic)
            if lock is None or not lock.paused:
                return _pause_change(None, paused=False)
            now = self.clock()
            before = {
                "paused": True,
                "paused_by": lock.paused_by,
                "paused_reason": lock.paused_reason,
                "paused_at_ms": lock.paused_at_ms,
            }
            audit = AuditRecord.new("resume", actor, reason, now, before, {"paused": False})
            try:  # conditioned on the pause read: one made in between is not lifted unaudited
                self.store.resume(topic, paused_at_ms=int(lock.paused_at_ms or 0), audit=audit)
            except LockConflict:
                continue
            return replace(_pause_change(lock, paused=False), changed=True, audit=audit)
        raise StoreThrottled(f"the pause of {topic} changed {OPERATOR_ATTEMPTS} times while resuming; retry")

    def set_checkpoint(
        self,
        lease: Lease,
        *,
        position: str,
        actor: str,
        reason: str,
        order: Callable[[str], Any] = position_order,
    ) -> Overridden:
        """Set the checkpoint to ``position`` under the operator's ``lease`` (taken with :meth:`acquire`,
        freed with :meth:`release` afterwards). ``order`` is the sort key of the topic's positions (a
        source's parses them, so a malformed position is refused).

        Forward, it skips the records in between. Backward only where no committed batch ends after
        ``position``: committing those records again would put them twice in the committed output; a
        rewind (:meth:`rewind_checkpoint`) re-reads committed batches, superseding their output records.
        """
        actor, reason = _operator_note(actor, "actor"), _operator_note(reason, "reason")
        validation.position(position, what="checkpoint position")
        order(position)
        current = self.read_checkpoint(lease.topic)
        if position == current.position:
            raise InvalidInput(f"the checkpoint of {lease.topic} is at {position!r} already")
        if current.position is not None and order(position) < order(current.position):
            oldest = next(iter(self.outputs(lease.topic, limit=1)), None)
            if oldest is None or oldest.seq > 1:  # the first commits' records expired (decision 0014)
                raise InvalidInput(
                    f"refusing to set the checkpoint of {lease.topic} back to {position!r}: the table no "
                    "longer holds the output records of its first commits (they expire after the stack's "
                    "OutputRecordDays), so it cannot tell that no committed batch ends after it; rewind to "
                    "a commit it holds (`leanops output`) or to 0 instead"
                )
            newest = next((r for r in self.outputs(lease.topic, newest_first=True) if r.live), None)
            if newest is not None and (newest.position is None or order(position) < order(newest.position)):
                raise InvalidInput(
                    f"refusing to set the checkpoint of {lease.topic} back to {position!r}: committed batch "
                    f"seq {newest.seq} ends after it (at {newest.position or 'a position not recorded'}), "
                    "so its records would be committed twice; rewind to a commit instead"
                )
        return self._override(lease, current, position, "set_checkpoint", actor, reason, (), {})

    def rewind_checkpoint(self, lease: Lease, *, to_seq: int, actor: str, reason: str) -> Overridden:
        """Move the checkpoint back to where commit ``to_seq`` left it (0: the beginning) under the
        operator's ``lease``, and mark every output record after ``to_seq`` superseded in the same
        transaction: their objects are no longer committed output (``leanops gc`` deletes them) and the
        next run reads their records again. The only way back over committed batches (design I2).

        Refused when more than :data:`MAX_SUPERSEDED` records would be superseded (one transaction holds
        100 items): rewind in steps; the error names the first one.
        """
        actor, reason = _operator_note(actor, "actor"), _operator_note(reason, "reason")
        if isinstance(to_seq, bool) or not isinstance(to_seq, int) or to_seq < 0:
            raise InvalidInput(f"invalid seq {to_seq!r}: expected a whole number >= 0 (0: the beginning)")
        topic = lease.topic
        current = self.read_checkpoint(topic)
        if to_seq >= current.seq:
            raise InvalidInput(
                f"the checkpoint of {topic} is at seq {current.seq}: a rewind goes to an earlier seq "
                "(0: the beginning)"
            )
        position = None if to_seq == 0 else self._position_after(topic, to_seq)
        supersede: list[int] = []
        for record in self.outputs(topic, newest_first=True):
            if record.seq <= to_seq:
                break
            if not record.superseded:
                supersede.append(record.seq)
        if len(supersede) > MAX_SUPERSEDED:
            raise InvalidInput(
                f"rewinding {topic} to seq {to_seq} would supersede {len(supersede)} output records; one "
                f"transaction supersedes at most {MAX_SUPERSEDED} (DynamoDB's limit of "
                f"{MAX_TRANSACTION_ITEMS} items): rewind in steps, first to seq {supersede[MAX_SUPERSEDED]}"
            )
        # The whole range, also the records that expired before this rewind could mark them: readers of the
        # archive supersede those by it (decision 0014).
        superseded = {"superseded_from": to_seq + 1, "superseded_to": current.seq}
        return self._override(
            lease, current, position, "rewind_checkpoint", actor, reason, tuple(supersede), superseded
        )

    def _position_after(self, topic: TopicRef, seq: int) -> str | None:
        """Where commit ``seq`` left the checkpoint, from its output record (a rewind's target)."""
        record = self.store.read_output(topic, seq)
        if record is None:
            oldest = next(iter(self.outputs(topic, limit=1)), None)
            holds = f"seq {oldest.seq} or later" if oldest is not None else "none is left"
            raise InvalidInput(
                f"the output record of commit {seq} of {topic} is not in the table (it expired after the "
                "stack's OutputRecordDays, or was never written), so where it ended is unknown: rewind to a "
                f"commit the table holds ({holds}; `leanops output --archive` shows the older ones) or to 0"
            )
        if record.superseded:
            raise InvalidInput(
                f"commit {seq} of {topic} was superseded by the rewind of seq {record.superseded_by}; "
                "rewind to a commit that is still output"
            )
        if record.kind is OutputKind.BATCH and record.position is None:
            raise InvalidInput(
                f"the output record of commit {seq} of {topic} was written before commits recorded their "
                "position; set the checkpoint to its end (`leanops output` shows it) instead"
            )
        return record.position

    def _override(
        self,
        lease: Lease,
        current: Checkpoint,
        position: str | None,
        action: str,
        actor: str,
        reason: str,
        supersede: tuple[int, ...],
        superseded_range: Mapping[str, int],
    ) -> Overridden:
        """Move the checkpoint from exactly ``current`` to ``position`` under ``lease``: one transaction with
        the lock's copy, the override's output record of the new ``seq``, the superseded records and the
        audit record. ``seq`` goes on counting, so output record keys never repeat."""
        now = self.clock()
        new = Checkpoint(
            position=position,
            last_ingested_ts=current.last_ingested_ts,
            last_snapshot_id=current.last_snapshot_id,
            seq=current.seq + 1,
            updated_at_ms=now,
            committed_by=lease.owner,
            fence=lease.fence,
            batch_start=current.position,
        )
        before = {"position": current.position, "seq": current.seq}
        after = {"position": position, "seq": new.seq, "superseded": list(supersede)}
        audit = AuditRecord.new(action, actor, reason, now, before, after)
        try:
            self.store.override_checkpoint(
                lease.topic,
                lease.owner,
                lease.fence,
                expected=current,
                new=new,
                record={"action": action, "actor": actor, "reason": reason, **superseded_range},
                supersede=supersede,
                now_ms=now,
                audit=audit,
            )
        except CommitRejected as rejected:
            if rejected.checkpoint is not None and _is_same_commit(rejected.checkpoint, new):
                return Overridden(current, rejected.checkpoint, supersede, audit)  # ours; response lost
            if rejected.lock_failed:
                raise _lock_lost(lease.topic, lease.owner, rejected.lock) from rejected
            now_at = rejected.checkpoint.position if rejected.checkpoint else current.position
            raise CheckpointConflict(
                f"the checkpoint of {lease.topic} changed while it was being overridden (now at {now_at!r}); "
                "nothing was changed: read it again",
                current_position=now_at,
            ) from rejected
        return Overridden(current, new, supersede, audit)

    # --- backfills ----------------------------------------------------------------------------------------

    def define_backfill(
        self,
        topic: TopicRef,
        *,
        start: str | None,
        end: str,
        sink: str,
        format: str,
        compression: str,
        actor: str,
        reason: str,
        order: Callable[[str], Any] = position_order,
    ) -> tuple[Backfill, bool]:
        """Define a replay of ``topic`` into ``sink``, of the records after ``start`` (None: the beginning)
        up to and including ``end``, under a state of its own; the live state is never touched. One
        transaction: the definition and an audit record under the topic, and the backfill's checkpoint at
        ``start`` (seq 1, an override output record) under its own state.

        A sink holds one backfill (its id is derived from the topic and the sink): if one is defined
        already, nothing is written and the definition on record is returned, with ``False``; the caller
        compares its bounds. ``order`` is the sort key of the source's positions (it parses them)."""
        actor, reason = _operator_note(actor, "actor"), _operator_note(reason, "reason")
        if topic.partition is not None:
            raise InvalidInput(f"a backfill replays a topic, not the partition {topic}")
        for position in (start, end):
            if position is not None:
                validation.position(position, what="backfill position")
                order(position)
        if start is not None and order(start) >= order(end):
            raise InvalidInput(f"backfill start {start!r} is not before its end {end!r}: nothing to replay")
        now = self.clock()
        backfill = Backfill(
            Backfill.id_for(topic.topic, sink), topic.topic, start, end, sink, format, compression,
            actor, reason, now,
        )  # fmt: skip
        existing = self.store.read_backfill(topic, backfill.id)
        if existing is not None:
            return existing, False
        checkpoint = None
        if start is not None:
            checkpoint = Checkpoint(position=start, seq=1, updated_at_ms=now, committed_by=actor)
        after = {"backfill": backfill.id, "start": start, "end": end, "sink": sink}
        audit = AuditRecord.new("backfill", actor, reason, now, {}, after)
        record = {"action": "backfill", "actor": actor, "reason": reason}
        try:
            self.store.define_backfill(backfill, start=checkpoint, record=record, now_ms=now, audit=audit)
        except BackfillDefined as defined:
            if defined.current is None:
                raise InvalidInput(
                    f"backfill {backfill.id} of {topic} has state but no definition; it was not made by "
                    "`leanops backfill`: give the backfill another sink"
                ) from defined
            return defined.current, False
        return backfill, True

    def read_backfill(self, topic: TopicRef, backfill_id: str) -> Backfill | None:
        """The topic's backfill ``backfill_id`` (strongly consistent), None if never defined."""
        return self.store.read_backfill(TopicRef(topic.topic), validation.backfill_id(backfill_id))

    def backfills(self, topic: TopicRef) -> Iterator[Backfill]:
        """Every backfill of the topic."""
        return self.store.backfills(TopicRef(topic.topic))

    def audit(self, topic: TopicRef, *, limit: int | None = None) -> Iterator[AuditRecord]:
        """The topic's operator changes, newest first, at most ``limit`` (strongly consistent, paged)."""
        if limit is not None:
            validation.positive_int(limit, what="limit")
        return self.store.audit_records(topic, limit=limit)

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


def _operator_note(value: object, what: str) -> str:
    """``value`` if it can be an operator change's ``actor`` or ``reason``: every change names who made it
    and why, in a non-blank string of bounded length."""
    limit = validation.MAX_OWNER_LENGTH if what == "actor" else MAX_REASON_CHARS
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        shown = repr(value) if not isinstance(value, str) or len(value) <= 40 else repr(value[:40] + "...")
        raise InvalidInput(
            f"invalid {what} {shown}: every operator change names who made it and why, in a non-empty "
            f"string of at most {limit} characters"
        )
    return value


def _pause_change(lock: LockState | None, *, paused: bool) -> PauseChange:
    """An unchanged pause state: ``lock``'s pause (who, why, when), if it has one."""
    if lock is None or not lock.paused:
        return PauseChange(paused, False, None, None, None)
    return PauseChange(paused, False, lock.paused_by, lock.paused_reason, lock.paused_at_ms)


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
