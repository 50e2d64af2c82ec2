"""The protocol's behaviour, written once and run against every store.

``tests/unit`` runs it on the in-memory fake, ``tests/integration`` on DynamoDB Local. Each test class
that inherits :class:`ProtocolContract` provides a ``make_protocol`` fixture: a factory
``make_protocol(clock=..., skew_margin_ms=...) -> Protocol`` whose protocols share one store.
"""

from __future__ import annotations

import uuid

import pytest

from leanops.errors import CheckpointConflict, InvalidInput, LockLost
from leanops.protocol import (
    BEGINNING,
    Acquired,
    Advance,
    Held,
    LockStatus,
    Protocol,
    Release,
    TopicRef,
)
from tests.support.clock import FakeClock, SkewedClock

LEASE_S = 60
SKEW_MS = 2_000


def new_topic() -> TopicRef:
    return TopicRef(f"t-{uuid.uuid4().hex[:12]}")


def acquired(result: object) -> Acquired:
    assert isinstance(result, Acquired), result
    return result


def batch_output(end: str, **changes: object) -> dict[str, object]:
    """What a batch that ended at ``end`` committed: every kind of value an output carries."""
    return {
        "object": f"vt.{end}.jsonl",
        "quarantine": None,
        "after": None,
        "end": end,
        "records": 1000,
        "written": 990,
        "quarantined": 10,
        "ratio": 0.99,
        "source_keys": ["a.jsonl", "b.jsonl"],
        "fence": 1,
        "owner": "arn:aws:states:us-east-1:123456789012:execution:leanops:exec-a",
        "details": {"bytes": 12_345, "late": False},
    } | changes


def commit_batches(protocol: Protocol, topic: TopicRef, count: int) -> list[dict[str, object]]:
    """One run committing ``count`` batches ``k#1``..``k#<count>``, each with an output; their outputs."""
    run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
    lease, checkpoint, outputs = run.lease, run.checkpoint, []
    for number in range(1, count + 1):
        outputs.append(batch_output(f"k#{number}", records=number))
        done = protocol.commit(
            lease, checkpoint, Advance(f"k#{number}", output=outputs[-1]), lease_seconds=LEASE_S
        )
        assert done.lease is not None
        lease, checkpoint = done.lease, done.checkpoint
    return outputs


class ProtocolContract:
    """Invariants I1-I7 of design §3 that a single caller (or a controlled sequence of callers) can show."""

    # --- I1 mutual exclusion, I5 takeover after lease + skew margin ---------------------------------

    def test_first_acquire_takes_the_lock_at_the_beginning(self, make_protocol):
        # GIVEN a topic that never ran
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        # WHEN a run acquires it
        got = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        # THEN it starts from the beginning, with the fence a new lock item starts from: the acquirer's clock
        # (so fences never repeat when TTL deletes a dead run's lock item and a new one starts again)
        assert got.lease.fence == clock() + 1 and got.lease.owner == "exec-a"
        assert got.checkpoint == BEGINNING and not got.reentrant

    def test_second_owner_is_told_who_holds_the_lock_and_until_when(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        first = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        # WHEN another run tries while the lease is live
        clock.advance(LEASE_S * 1000 // 2)
        other = protocol.acquire(topic, "exec-b", LEASE_S)
        # THEN it gets a typed answer naming the holder and the lease expiry
        assert isinstance(other, Held)
        assert other.holder == "exec-a" and other.lease_expires_at_ms == first.lease.expires_at_ms

    def test_expired_lease_is_taken_over_only_after_the_skew_margin(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock, skew_margin_ms=SKEW_MS), new_topic()
        first = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        # GIVEN the lease has passed but not the skew margin: the item is expired and still present
        clock.now_ms = first.lease.expires_at_ms + SKEW_MS
        assert protocol.status(topic).lock_status is LockStatus.EXPIRED
        assert isinstance(protocol.acquire(topic, "exec-b", LEASE_S), Held)
        # WHEN the margin has passed too
        clock.advance(1)
        taken = acquired(protocol.acquire(topic, "exec-b", LEASE_S))
        # THEN the new owner holds a higher fence
        assert taken.lease.fence == first.lease.fence + 1 and taken.lease.owner == "exec-b"

    def test_fenced_out_holder_can_neither_commit_renew_nor_release(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        old = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        clock.now_ms = old.lease.expires_at_ms + SKEW_MS + 1
        new = acquired(protocol.acquire(topic, "exec-b", LEASE_S))
        # WHEN the old holder wakes up and tries to write
        with pytest.raises(LockLost) as lost:
            protocol.commit(old.lease, old.checkpoint, Advance("k#10"), lease_seconds=LEASE_S)
        assert lost.value.holder == "exec-b"
        with pytest.raises(LockLost):
            protocol.renew(old.lease, LEASE_S)
        assert protocol.release(old.lease) is Release.NOT_HELD
        # THEN nothing it did changed the checkpoint or the new holder's lease
        status = protocol.status(topic)
        assert status.checkpoint == BEGINNING
        assert status.lock is not None and status.lock.owner == "exec-b"
        assert status.lock.fence == new.lease.fence
        assert status.lock.lease_expires_at_ms == new.lease.expires_at_ms

    def test_clock_skew_within_the_margin_never_yields_two_believing_holders(self, make_protocol):
        # GIVEN the holder's clock runs behind and the taker's ahead, by less than the margin in total
        base = FakeClock()
        holder_clock = SkewedClock(base, -SKEW_MS // 2 + 1)
        taker_clock = SkewedClock(base, SKEW_MS // 2 - 1)
        holder_protocol = make_protocol(clock=holder_clock, skew_margin_ms=SKEW_MS)
        taker_protocol = make_protocol(clock=taker_clock, skew_margin_ms=SKEW_MS)
        topic = new_topic()
        holder = acquired(holder_protocol.acquire(topic, "exec-a", 1))
        # WHEN the taker tries every 100 ms across the whole lease and margin
        for _ in range(40):
            result = taker_protocol.acquire(topic, "exec-b", 1)
            holder_believes = holder_clock() < holder.lease.expires_at_ms
            # THEN whenever the taker wins, the holder's own clock already says its lease is over
            if isinstance(result, Acquired):
                assert not holder_believes
                break
            base.advance(100)
        else:
            pytest.fail("the taker never took over an expired lease")

    # --- I2 forward only, I3 no gap ------------------------------------------------------------------

    def test_commit_moves_from_exactly_the_expected_position(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        one = protocol.commit(run.lease, run.checkpoint, Advance("k#10", 100, 7), lease_seconds=LEASE_S)
        two = protocol.commit(one.lease, one.checkpoint, Advance("k#25", 90), release=True)
        cp = protocol.read_checkpoint(topic)
        assert (cp.position, cp.seq, cp.batch_start) == ("k#25", 2, "k#10")
        # last_ingested_ts is a high water mark: it keeps the maximum; the snapshot id carries over
        assert (cp.last_ingested_ts, cp.last_snapshot_id) == (100, 7)
        assert two.released and protocol.status(topic).lock_status is LockStatus.FREE

    def test_commit_from_a_stale_position_is_refused(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        one = protocol.commit(run.lease, run.checkpoint, Advance("k#10"), lease_seconds=LEASE_S)
        two = protocol.commit(one.lease, one.checkpoint, Advance("k#20"), lease_seconds=LEASE_S)
        # WHEN the holder commits other batches from positions the checkpoint has left behind
        for stale, end in ((run.checkpoint, "k#12"), (one.checkpoint, "k#25")):
            with pytest.raises(CheckpointConflict) as conflict:
                protocol.commit(two.lease, stale, Advance(end), lease_seconds=LEASE_S)
            # THEN they are refused and the checkpoint stays where the last commit put it
            assert conflict.value.current_position == "k#20"
        assert protocol.read_checkpoint(topic) == two.checkpoint

    def test_commit_never_moves_the_checkpoint_backwards(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        one = protocol.commit(run.lease, run.checkpoint, Advance("k2#5"), lease_seconds=LEASE_S)
        for backwards in ("k2#5", "k2#4", "k1#999"):
            with pytest.raises(CheckpointConflict):
                protocol.commit(one.lease, one.checkpoint, Advance(backwards), lease_seconds=LEASE_S)
        assert protocol.read_checkpoint(topic) == one.checkpoint

    def test_positions_order_by_key_then_numeric_offset(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        one = protocol.commit(run.lease, run.checkpoint, Advance("a.jsonl#9"), lease_seconds=LEASE_S)
        # 10 > 9 numerically although "10" < "9" as text
        two = protocol.commit(one.lease, one.checkpoint, Advance("a.jsonl#10"), lease_seconds=LEASE_S)
        assert two.checkpoint.position == "a.jsonl#10"

    def test_the_checkpoint_keeps_its_commits_source_hint_and_an_override_drops_it(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        hint = {
            "position": "a.jsonl#3",
            "byte": 120,
            "size": 120,
            "etag": '"9b2cf535f27731c974343645a3985328"',
        }
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        # WHEN a commit names the source's hint for reading after its end
        protocol.commit(run.lease, run.checkpoint, Advance("a.jsonl#3", resume=hint), release=True)
        # THEN the checkpoint keeps it, and the next acquire has it from the lock's copy
        assert protocol.read_checkpoint(topic).resume == hint
        again = acquired(protocol.acquire(topic, "exec-b", LEASE_S))
        assert again.checkpoint.resume == hint
        # AND a hint for another position than the commit's end is not kept
        two = protocol.commit(again.lease, again.checkpoint, Advance("a.jsonl#5", resume=hint), release=True)
        assert (two.checkpoint.resume, protocol.read_checkpoint(topic).resume) == (None, None)
        three = acquired(protocol.acquire(topic, "exec-c", LEASE_S))
        hint = hint | {"position": "a.jsonl#7"}
        protocol.commit(three.lease, three.checkpoint, Advance("a.jsonl#7", resume=hint), release=True)
        # AND an operator's override writes a checkpoint without one, on the lock's copy too
        operator = acquired(protocol.acquire(topic, "ops", LEASE_S, operator=True))
        protocol.set_checkpoint(operator.lease, position="a.jsonl#9", actor="ops", reason="skip")
        protocol.release(operator.lease)
        assert protocol.read_checkpoint(topic).resume is None
        assert acquired(protocol.acquire(topic, "exec-d", LEASE_S)).checkpoint.resume is None

    # --- I4 exactly-once commit ----------------------------------------------------------------------

    def test_recommitting_the_same_batch_is_a_no_op(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        first = protocol.commit(run.lease, run.checkpoint, Advance("k#10"), lease_seconds=LEASE_S)
        # WHEN the same commit is retried (its response was lost, or the task retried)
        again = protocol.commit(run.lease, run.checkpoint, Advance("k#10"), lease_seconds=LEASE_S)
        # THEN it reports the commit as already done and nothing moved twice
        assert again.already_committed and again.checkpoint == first.checkpoint
        assert again.lease is not None and protocol.read_checkpoint(topic).seq == 1

    def test_recommitting_a_released_batch_is_a_no_op(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        protocol.commit(run.lease, run.checkpoint, Advance("k#10"), release=True)
        again = protocol.commit(run.lease, run.checkpoint, Advance("k#10"), release=True)
        assert again.already_committed and again.released and again.lease is None
        assert protocol.read_checkpoint(topic).seq == 1

    def test_next_run_starts_from_the_committed_checkpoint(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        done = protocol.commit(run.lease, run.checkpoint, Advance("k#10", 5, "snap-1"), release=True)
        nxt = acquired(protocol.acquire(topic, "exec-b", LEASE_S))
        assert (
            nxt.checkpoint.to_json() == done.checkpoint.to_json() and nxt.lease.fence == run.lease.fence + 1
        )

    def test_duplicate_run_key_is_not_first(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        assert protocol.claim_run(topic, "scheduled:2026-11-25T10:00:00Z", "exec-a").first
        duplicate = protocol.claim_run(topic, "scheduled:2026-11-25T10:00:00Z", "exec-b")
        assert not duplicate.first and duplicate.owner == "exec-a"
        # a retry by the owner itself is still the first claim (re-entrant)
        assert protocol.claim_run(topic, "scheduled:2026-11-25T10:00:00Z", "exec-a").first
        assert protocol.claim_run(topic, "scheduled:2026-11-25T10:05:00Z", "exec-b").first

    # --- committed output: the manifest the commit transaction writes ------------------------------

    def test_commit_with_output_writes_exactly_one_output_record(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        output = batch_output("k#10")
        # WHEN a batch commits with its output
        done = protocol.commit(run.lease, run.checkpoint, Advance("k#10", output=output), release=True)
        # THEN the manifest holds one record: the output as given (None kept), the seq and the time
        [record] = protocol.outputs(topic)
        assert done.checkpoint.seq == record.seq == 1 and record.committed_at_ms == clock.now_ms
        assert record.data == output
        assert record.to_json() == {"seq": 1, "committed_at_ms": clock.now_ms, **output}

    def test_commit_without_output_writes_no_output_record(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        one = protocol.commit(run.lease, run.checkpoint, Advance("k#1"), lease_seconds=LEASE_S)
        protocol.commit(one.lease, one.checkpoint, Advance("k#2", output=batch_output("k#2")), release=True)
        assert [record.seq for record in protocol.outputs(topic)] == [2]
        assert list(protocol.outputs(new_topic())) == []

    def test_rejected_commits_write_no_output_record(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        old = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        one = protocol.commit(
            old.lease, old.checkpoint, Advance("k#1", output=batch_output("k#1")), lease_seconds=LEASE_S
        )
        # WHEN a commit from a stale checkpoint is refused (checkpoint conflict)
        with pytest.raises(CheckpointConflict):
            protocol.commit(
                one.lease, old.checkpoint, Advance("k#5", output=batch_output("k#5")), lease_seconds=LEASE_S
            )
        # AND a fenced-out holder's commit is refused (lock lost)
        clock.now_ms = one.lease.expires_at_ms + SKEW_MS + 1
        acquired(protocol.acquire(topic, "exec-b", LEASE_S))
        with pytest.raises(LockLost):
            protocol.commit(
                one.lease, one.checkpoint, Advance("k#9", output=batch_output("k#9")), release=True
            )
        # THEN only the commit that took effect is in the manifest
        assert [record.data["end"] for record in protocol.outputs(topic)] == ["k#1"]

    def test_failures_count_until_a_run_ends_well_and_never_touch_the_lock(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        # GIVEN failures recorded on a topic that never ran, then while a run holds the lock
        protocol.record_failure(topic, "exec-0", "SourceError", "directory missing")
        held = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        assert held.lease.fence == clock() + 1  # a failure record is not a lock: a first acquire's fence
        protocol.record_failure(topic, "exec-z", "SensorFault", "calibration")
        lock = protocol.status(topic).lock
        # THEN they count, name the last error, and the holder keeps its lock
        assert (lock.failures, lock.last_outcome, lock.last_error, lock.last_cause, lock.last_failed) == (
            2,
            "failed",
            "SensorFault",
            "calibration",
            "exec-z",
        )
        assert (lock.owner, lock.fence) == ("exec-a", held.lease.fence)
        # WHEN the run ends well, THEN the streak resets
        protocol.commit(held.lease, held.checkpoint, Advance("k#1"), release=True)
        lock = protocol.status(topic).lock
        assert (lock.failures, lock.last_outcome, lock.owner) == (0, "processed", None)

    def test_a_sink_schema_changes_only_with_the_commit_that_carries_it(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        v1 = {"version": 1, "columns": [{"name": "id", "type": "int64", "declared": False}]}
        v2 = {
            "version": 2,
            "columns": [*v1["columns"], {"name": "note", "type": "string", "declared": False}],
        }
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        assert protocol.read_schema(topic) is None
        # WHEN a commit carries a schema, THEN the state keeps it
        one = protocol.commit(run.lease, run.checkpoint, Advance("k#1", schema=v1), lease_seconds=LEASE_S)
        assert protocol.read_schema(topic) == v1
        # WHEN a fenced-out holder's commit carries another, THEN it is refused and the schema unchanged
        clock.now_ms = one.lease.expires_at_ms + SKEW_MS + 1
        taker = acquired(protocol.acquire(topic, "exec-b", LEASE_S))
        with pytest.raises(LockLost):
            protocol.commit(one.lease, one.checkpoint, Advance("k#2", schema=v2), release=True)
        assert protocol.read_schema(topic) == v1
        # AND a commit without a schema leaves it as it was
        protocol.commit(taker.lease, taker.checkpoint, Advance("k#3"), release=True)
        assert protocol.read_schema(topic) == v1

    def test_recommitting_a_batch_with_output_leaves_one_record(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        first = Advance("k#10", output=batch_output("k#10"))
        protocol.commit(run.lease, run.checkpoint, first, release=True)
        # WHEN the same commit is retried, even by a retried task that named a new object
        retried = Advance("k#10", output=batch_output("k#10", object="vt.retry.jsonl"))
        again = protocol.commit(run.lease, run.checkpoint, retried, release=True)
        # THEN it is already committed, and the manifest names what the attempt that landed wrote
        assert again.already_committed
        [record] = protocol.outputs(topic)
        assert record.data == first.output

    def test_outputs_in_seq_order_both_ways_with_a_limit(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        outputs = commit_batches(protocol, topic, 5)
        assert [r.data for r in protocol.outputs(topic)] == outputs
        assert [r.seq for r in protocol.outputs(topic, newest_first=True)] == [5, 4, 3, 2, 1]
        assert [r.seq for r in protocol.outputs(topic, limit=2)] == [1, 2]
        assert [r.seq for r in protocol.outputs(topic, newest_first=True, limit=2)] == [5, 4]
        assert [r.seq for r in protocol.outputs(topic, limit=99)] == [1, 2, 3, 4, 5]

    @pytest.mark.parametrize(
        ("newest_first", "limit", "expected"),
        [
            (False, None, [1, 2, 3, 4, 5]),
            (True, None, [5, 4, 3, 2, 1]),
            (False, 3, [1, 2, 3]),
            (True, 3, [5, 4, 3]),
            (False, 4, [1, 2, 3, 4]),
        ],
    )
    def test_outputs_page_through_every_record(self, make_protocol, newest_first, limit, expected):
        protocol, topic = make_protocol(), new_topic()
        commit_batches(protocol, topic, 5)
        # pages of 2 records: 5 records take three pages, and a limit stops across pages
        read = protocol.store.outputs(topic, newest_first=newest_first, limit=limit, page_size=2)
        assert [record.seq for record in read] == expected

    @pytest.mark.parametrize("limit", [0, -1, True, 1.5])
    def test_outputs_refuse_a_non_positive_limit(self, make_protocol, limit):
        protocol = make_protocol()
        with pytest.raises(InvalidInput, match="limit"):
            protocol.outputs(new_topic(), limit=limit)

    def test_commit_checks_forward_only_in_the_order_given(self, make_protocol):
        # GIVEN a source whose positions are sequence numbers: "10" follows "9", though not as text
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        one = protocol.commit(run.lease, run.checkpoint, Advance("9"), lease_seconds=LEASE_S, order=int)
        with pytest.raises(CheckpointConflict):  # the default order compares them as text
            protocol.commit(one.lease, one.checkpoint, Advance("10"), lease_seconds=LEASE_S)
        two = protocol.commit(one.lease, one.checkpoint, Advance("10"), lease_seconds=LEASE_S, order=int)
        # WHEN a commit would move backwards in that order
        for backwards in ("10", "9", "02"):
            with pytest.raises(CheckpointConflict, match="only move forward"):
                protocol.commit(
                    two.lease, two.checkpoint, Advance(backwards), lease_seconds=LEASE_S, order=int
                )
        # THEN it is refused before any write
        assert protocol.read_checkpoint(topic) == two.checkpoint

    # --- I6 owner-checked release, I7 re-entrant ------------------------------------------------------

    def test_only_the_owner_releases(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        impostor = run.lease.__class__(topic, "exec-b", run.lease.fence, run.lease.expires_at_ms)
        assert protocol.release(impostor) is Release.NOT_HELD
        assert protocol.status(topic).lock_status is LockStatus.HELD
        assert protocol.release(run.lease) is Release.RELEASED
        assert protocol.status(topic).lock_status is LockStatus.FREE
        # releasing twice is harmless
        assert protocol.release(run.lease) is Release.NOT_HELD

    def test_failed_execution_releases_by_owner_without_knowing_its_fence(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        old = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        # an execution that is not the holder frees nothing
        assert protocol.release_owned_by(topic, "exec-b") is Release.NOT_HELD
        assert protocol.status(topic).lock_status is LockStatus.HELD
        assert protocol.release_owned_by(topic, "exec-a") is Release.RELEASED
        assert protocol.status(topic).lock_status is LockStatus.FREE
        # nor can a fenced-out owner free its successor's lock
        clock.now_ms = old.lease.expires_at_ms
        acquired(protocol.acquire(topic, "exec-c", LEASE_S))
        assert protocol.release_owned_by(topic, "exec-a") is Release.NOT_HELD
        assert protocol.status(topic).lock.owner == "exec-c"

    def test_reacquire_by_the_holder_is_reentrant_and_renews(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        first = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        clock.advance(10_000)
        again = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        assert again.reentrant and again.lease.fence == first.lease.fence
        assert again.lease.expires_at_ms == first.lease.expires_at_ms + 10_000

    def test_renew_extends_the_lease(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        clock.advance(30_000)
        renewed = protocol.renew(run.lease, LEASE_S)
        assert renewed.expires_at_ms == run.lease.expires_at_ms + 30_000
        assert protocol.status(topic).lock.lease_expires_at_ms == renewed.expires_at_ms

    # --- bad input: refused before any write ---------------------------------------------------------

    @pytest.mark.parametrize("name", ["", "x" * 129, "a/b", "a b", "tópico", "a#b", None, 7])
    def test_invalid_topic_names_are_refused(self, name):
        with pytest.raises(InvalidInput, match="invalid topic name"):
            TopicRef(name)

    def test_topic_names_of_128_characters_are_valid(self):
        assert TopicRef("a" * 128).topic == "a" * 128

    @pytest.mark.parametrize("lease", [0, -1, True, 1.5, None])
    def test_non_positive_leases_are_refused_before_any_write(self, make_protocol, lease):
        protocol, topic = make_protocol(), new_topic()
        with pytest.raises(InvalidInput, match="lease_seconds"):
            protocol.acquire(topic, "exec-a", lease)
        assert protocol.status(topic).lock is None

    @pytest.mark.parametrize("owner", ["", "   ", None, "x" * 5000])
    def test_empty_owners_are_refused_before_any_write(self, make_protocol, owner):
        protocol, topic = make_protocol(), new_topic()
        with pytest.raises(InvalidInput, match="owner"):
            protocol.acquire(topic, owner, LEASE_S)
        with pytest.raises(InvalidInput, match="owner"):
            protocol.claim_run(topic, "manual:x", owner)
        assert protocol.status(topic).lock is None
