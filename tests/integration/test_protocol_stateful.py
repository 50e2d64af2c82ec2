"""Hypothesis drives several workers through random interleavings of acquire / process / commit /
release / crash / pause / clock jumps against DynamoDB Local, checking I1-I5 after every step.

``make test`` runs a modest number of examples; ``make soak`` (``LEANOPS_SOAK=1``) many more.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from leanops.errors import CheckpointConflict, LockLost
from leanops.protocol import Acquired, Advance, Checkpoint, Lease, Protocol, Release, TopicRef
from leanops.protocol.dynamodb import DynamoDBStore
from leanops.protocol.model import position_order
from tests.support.clock import FakeClock, SkewedClock

pytestmark = pytest.mark.integration

SOAK = os.environ.get("LEANOPS_SOAK") == "1"
SKEW_MS = 1_000
WORKERS = 3
# Every worker's clock is within SKEW_MS / 2 of the true time, so any two differ by less than the margin.
MAX_OFFSET_MS = SKEW_MS // 2 - 1


def offset_of(position: str | None) -> int:
    return 0 if position is None else position_order(position)[1]


@dataclass
class Worker:
    """One Step Functions execution's view: its owner id, lease, checkpoint and uncommitted batch."""

    index: int
    clock: SkewedClock
    protocol: Protocol
    generation: int = 0
    lease: Lease | None = None
    lease_seconds: int = 1
    expected: Checkpoint | None = None
    pending: tuple[int, int] | None = None
    last_commit: tuple[Lease, Checkpoint, Advance, bool] | None = field(default=None)

    @property
    def owner(self) -> str:
        return f"exec-{self.index}-{self.generation}"

    def believes_it_holds(self) -> bool:
        return self.lease is not None and self.clock() < self.lease.expires_at_ms

    def take_batch(self, size: int) -> None:
        assert self.expected is not None
        start = offset_of(self.expected.position)
        self.pending = (start, start + size)

    def forget(self) -> None:
        self.lease, self.expected, self.pending, self.last_commit = None, None, None, None


def can_commit(worker: Worker) -> bool:
    """Has an uncommitted batch: includes paused holders whose lease was meanwhile taken over."""
    return worker.pending is not None


class ProtocolMachine(RuleBasedStateMachine):
    table_name: str = ""
    client: object = None

    def __init__(self) -> None:
        super().__init__()
        self.time = FakeClock()
        self.topic = TopicRef(f"sm-{uuid.uuid4().hex[:12]}")
        self.store = DynamoDBStore(self.table_name, self.client)
        self.observer = Protocol(self.store, clock=self.time, skew_margin_ms=SKEW_MS)
        self.workers = [
            Worker(i, clock, Protocol(self.store, clock=clock, skew_margin_ms=SKEW_MS))
            for i in range(WORKERS)
            for clock in [SkewedClock(self.time, 0)]
        ]
        self.committed: list[tuple[int, int]] = []  # (start, end) of every batch committed, in order
        self.highest_seen = 0

    workers_ = st.integers(0, WORKERS - 1)

    @rule(w=workers_, lease_seconds=st.integers(1, 3), size=st.integers(1, 5))
    def acquire(self, w: int, lease_seconds: int, size: int) -> None:
        """Acquire, and on success read the next ``size`` records (the sink write is implied)."""
        worker = self.workers[w]
        before = self.store.read_lock(self.topic)
        now = worker.clock()
        result = worker.protocol.acquire(self.topic, worker.owner, lease_seconds)
        takeover_allowed = (
            before is None
            or before.owner is None
            or before.owner == worker.owner
            or before.lease_expires_at_ms < now - SKEW_MS
        )
        # I5 (liveness) and I1: acquired exactly when free, ours, or expired past the skew margin
        assert isinstance(result, Acquired) == takeover_allowed, (before, now, result)
        taken_from = before.owner if before and before.owner not in (None, worker.owner) else None
        event(f"acquire: {result.outcome}{' (takeover)' if taken_from and takeover_allowed else ''}")
        if isinstance(result, Acquired):
            worker.lease, worker.lease_seconds = result.lease, lease_seconds
            if not result.reentrant or worker.expected is None:
                worker.expected = result.checkpoint
                worker.take_batch(size)

    def pick(self, condition: Callable[[Worker], bool], index: int) -> Worker:
        """One of the workers for which ``condition`` holds (rules below run only when there is one)."""
        eligible = [worker for worker in self.workers if condition(worker)]
        return eligible[index % len(eligible)]

    @precondition(lambda self: any(can_commit(w) for w in self.workers))
    @rule(w=workers_, release=st.booleans(), size=st.integers(1, 5))
    def commit(self, w: int, release: bool, size: int) -> None:
        """Commit the pending batch; unless releasing, go on to read the next ``size`` records."""
        worker = self.pick(can_commit, w)
        assert worker.lease is not None and worker.expected is not None and worker.pending is not None
        lock_before = self.store.read_lock(self.topic)
        checkpoint_before = self.observer.read_checkpoint(self.topic)
        ours = lock_before is not None and (lock_before.owner, lock_before.fence) == (
            worker.lease.owner,
            worker.lease.fence,
        )
        advance = Advance(f"stream#{worker.pending[1]}")
        try:
            done = worker.protocol.commit(
                worker.lease, worker.expected, advance, release=release, lease_seconds=worker.lease_seconds
            )
        except LockLost:
            event("commit refused: lock lost")
            assert not ours  # I1: refused only because another run took over (or we released)
            worker.forget()
            return
        except CheckpointConflict:
            event("commit refused: checkpoint moved")
            assert checkpoint_before != worker.expected
            worker.protocol.release(worker.lease)
            worker.forget()
            return
        # I1 fencing: a commit takes effect only while its lease owns the lock
        assert ours and not done.already_committed
        event("commit accepted")
        self.committed.append(worker.pending)
        worker.last_commit = (worker.lease, worker.expected, advance, release)
        worker.expected, worker.pending, worker.lease = done.checkpoint, None, done.lease
        if worker.lease is not None:
            worker.take_batch(size)

    @precondition(lambda self: any(w.last_commit for w in self.workers))
    @rule(w=workers_)
    def retry_last_commit(self, w: int) -> None:
        """A lost response: the same commit again must not move anything a second time (I4)."""
        worker = self.pick(lambda worker: worker.last_commit is not None, w)
        assert worker.last_commit is not None
        lease, expected, advance, release = worker.last_commit
        count = len(self.committed)
        try:
            again = worker.protocol.commit(
                lease, expected, advance, release=release, lease_seconds=worker.lease_seconds
            )
        except (LockLost, CheckpointConflict):
            pass  # committed after us, or taken over: refused, so no second effect either
        else:
            assert again.already_committed
        assert len(self.committed) == count

    @precondition(lambda self: any(w.lease for w in self.workers))
    @rule(w=workers_)
    def release(self, w: int) -> None:
        worker = self.pick(lambda worker: worker.lease is not None, w)
        if worker.lease is not None:
            lock_before = self.store.read_lock(self.topic)
            result = worker.protocol.release(worker.lease)
            ours = lock_before is not None and (lock_before.owner, lock_before.fence) == (
                worker.lease.owner,
                worker.lease.fence,
            )
            assert (result is Release.RELEASED) == ours  # I6
            worker.forget()

    @rule(w=workers_)
    def crash(self, w: int) -> None:
        """The execution dies without releasing; a later one has a new owner id."""
        worker = self.workers[w]
        worker.forget()
        worker.generation += 1

    @rule(
        ms=st.sampled_from([0, 400, 1_000, 2_500, 6_000]),
        w=workers_,
        offset=st.integers(-MAX_OFFSET_MS, MAX_OFFSET_MS),
    )
    def time_passes(self, ms: int, w: int, offset: int) -> None:
        """Time moves on and one worker's clock drifts (within the margin). Every worker that does not act
        meanwhile is, in effect, paused: that is how a paused holder wakes up after a takeover."""
        self.time.advance(ms)
        self.workers[w].clock.offset_ms = offset

    @invariant()
    def at_most_one_believing_holder(self) -> None:  # I1
        believers = [w.owner for w in self.workers if w.believes_it_holds()]
        assert len(believers) <= 1, believers

    @invariant()
    def checkpoint_moves_forward_without_gaps(self) -> None:  # I2, I3, I4
        checkpoint = self.observer.read_checkpoint(self.topic)
        position = offset_of(checkpoint.position)
        assert position >= self.highest_seen  # I2
        self.highest_seen = position
        # I3: each commit moved the checkpoint from exactly the previous end; I4: no batch twice
        ends = [0] + [end for _, end in self.committed]
        assert [start for start, _ in self.committed] == ends[:-1]
        assert position == ends[-1] and checkpoint.seq == len(self.committed)


@pytest.mark.timeout(3600 if SOAK else 300)  # the soak profile runs far longer than pytest's default cap
def test_protocol_under_random_interleavings(state_table):
    ProtocolMachine.table_name = state_table.name
    ProtocolMachine.client = state_table.client
    run_state_machine_as_test(
        ProtocolMachine,
        settings=settings(
            max_examples=1000 if SOAK else 150,
            stateful_step_count=60 if SOAK else 40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
