"""The operator changes (force unlock, pause, resume, checkpoint set and rewind, audit), written once and run
against every store: ``tests/unit/test_protocol_operator.py`` on the in-memory fake,
``tests/integration/test_operator_overrides.py`` on DynamoDB Local.

A test class that inherits :class:`OperatorContract` provides the fixtures ``make_protocol`` (as
:mod:`tests.support.protocol_contract` describes) and ``forget_position``: a function
``forget_position(protocol, topic, seq)`` that removes the ``position`` of an output record, as records
written before commits recorded it lack it.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from leanops.data.files import FilesSource
from leanops.errors import CheckpointConflict, InvalidInput, LockLost
from leanops.protocol import (
    Advance,
    AuditRecord,
    Checkpoint,
    Lease,
    LockStatus,
    OutputKind,
    Paused,
    Protocol,
    Release,
    Settlement,
    TopicRef,
)
from leanops.protocol.service import MAX_SUPERSEDED
from leanops.protocol.store import AuditKeyTaken, CommitRejected
from tests.support.clock import FakeClock
from tests.support.protocol_contract import LEASE_S, SKEW_MS, acquired, batch_output, new_topic

ACTOR = "alice@example.com"


def operator(protocol: Protocol, topic: TopicRef) -> Lease:
    """The lease an operator command takes before it overrides the checkpoint (its own owner)."""
    owner = f"operator-alice-{uuid.uuid4().hex}"
    return acquired(protocol.acquire(topic, owner, LEASE_S, operator=True)).lease


def run(protocol: Protocol, topic: TopicRef, owner: str, *ends: str) -> Checkpoint:
    """One run committing a batch ending at each of ``ends`` (each with an output), then releasing."""
    got = acquired(protocol.acquire(topic, owner, LEASE_S))
    lease: Lease | None = got.lease
    checkpoint = got.checkpoint
    for number, end in enumerate(ends, 1):
        last = number == len(ends)
        assert lease is not None
        done = protocol.commit(
            lease,
            checkpoint,
            Advance(end, output=batch_output(end, after=checkpoint.position)),
            release=last,
            lease_seconds=None if last else LEASE_S,
        )
        lease, checkpoint = done.lease, done.checkpoint
    return checkpoint


def rewound(protocol: Protocol, topic: TopicRef, to_seq: int) -> None:
    lease = operator(protocol, topic)
    protocol.rewind_checkpoint(lease, to_seq=to_seq, actor=ACTOR, reason="reprocess after a processor fix")
    assert protocol.release(lease) is Release.RELEASED


class OperatorContract:
    """Every operator change: one atomic write, with its audit record; a no-op writes nothing."""

    # --- force unlock --------------------------------------------------------------------------------

    @pytest.mark.parametrize("expired", [False, True])
    def test_force_unlock_fences_the_holder_out_of_commit_renew_and_release(self, make_protocol, expired):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        held = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        if expired:  # a dead run's lock: expired, still there, not yet taken over
            clock.now_ms = held.lease.expires_at_ms + 1
        # WHEN an operator force-unlocks it
        done = protocol.force_unlock(topic, actor=ACTOR, reason="run exec-a is stuck")
        # THEN the result names the holder and both fences, and the lock is free under the next fence
        assert (done.unlocked, done.before_owner, done.before_fence) == (True, "exec-a", held.lease.fence)
        assert (done.after_owner, done.after_fence) == (None, held.lease.fence + 1)
        lock = protocol.status(topic).lock
        assert (lock.owner, lock.fence, lock.last_owner, lock.last_outcome) == (
            None,
            held.lease.fence + 1,
            "exec-a",
            "unlocked",
        )
        # AND the old holder can no longer commit, renew or release
        with pytest.raises(LockLost):
            protocol.commit(held.lease, held.checkpoint, Advance("k#1"), release=True)
        with pytest.raises(LockLost):
            protocol.renew(held.lease, LEASE_S)
        assert protocol.release(held.lease) is Release.NOT_HELD
        assert protocol.release_owned_by(topic, "exec-a") is Release.NOT_HELD
        assert protocol.read_checkpoint(topic).seq == 0
        # AND one audit record says who did what, and why
        [audit] = protocol.audit(topic)
        assert audit == done.audit
        assert (audit.action, audit.actor, audit.reason) == ("force_unlock", ACTOR, "run exec-a is stuck")
        assert audit.before == {
            "owner": "exec-a",
            "fence": held.lease.fence,
            "lease_expires_at_ms": held.lease.expires_at_ms,
        }
        assert audit.after == {"owner": None, "fence": held.lease.fence + 1}
        # AND the next run acquires as usual, under a fence never given before
        assert acquired(protocol.acquire(topic, "exec-b", LEASE_S)).lease.fence == held.lease.fence + 2

    def test_force_unlock_of_a_free_lock_changes_nothing(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        never = protocol.force_unlock(topic, actor=ACTOR, reason="just in case")
        assert (never.unlocked, never.before_owner, never.audit) == (False, None, None)
        run(protocol, topic, "exec-a", "k#1")
        before = protocol.status(topic).lock
        released = protocol.force_unlock(topic, actor=ACTOR, reason="just in case")
        assert (released.unlocked, released.before_fence, released.after_fence) == (
            False,
            before.fence,
            before.fence,
        )
        assert protocol.status(topic).lock == before and list(protocol.audit(topic)) == []

    # --- pause and resume ----------------------------------------------------------------------------

    def test_a_paused_topic_is_not_acquired_until_it_is_resumed(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        run(protocol, topic, "exec-a", "k#1")
        fence = protocol.status(topic).lock.fence
        # WHEN an operator pauses the topic
        paused = protocol.pause(topic, actor=ACTOR, reason="source is being re-landed")
        assert (paused.paused, paused.changed, paused.paused_by) == (True, True, ACTOR)
        # THEN a run's acquire says so, and takes nothing
        clock.advance(1000)
        got = protocol.acquire(topic, "exec-b", LEASE_S)
        assert isinstance(got, Paused) and got.outcome == "paused"
        assert (got.paused_by, got.paused_reason, got.paused_at_ms) == (
            ACTOR,
            "source is being re-landed",
            paused.paused_at_ms,
        )
        status = protocol.status(topic)
        assert status.paused and status.lock_status is LockStatus.FREE
        assert (status.lock.owner, status.lock.fence) == (None, fence)
        assert (status.lock.paused_by, status.lock.paused_reason) == (ACTOR, "source is being re-landed")
        # WHEN it is resumed, THEN the next run acquires it
        resumed = protocol.resume(topic, actor=ACTOR, reason="re-landed")
        assert (resumed.paused, resumed.changed, resumed.paused_at_ms) == (False, True, paused.paused_at_ms)
        assert not protocol.status(topic).paused
        assert acquired(protocol.acquire(topic, "exec-b", LEASE_S)).lease.fence == fence + 1
        # AND both changes are audited, newest first
        assert [(a.action, a.before, a.after) for a in protocol.audit(topic)] == [
            (
                "resume",
                {
                    "paused": True,
                    "paused_by": ACTOR,
                    "paused_reason": "source is being re-landed",
                    "paused_at_ms": paused.paused_at_ms,
                },
                {"paused": False},
            ),
            ("pause", {"paused": False}, {"paused": True, "paused_at_ms": paused.paused_at_ms}),
        ]

    def test_an_operator_overrides_the_checkpoint_of_a_paused_topic(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        run(protocol, topic, "exec-a", "k#1", "k#2")
        protocol.pause(topic, actor=ACTOR, reason="bad batches: rewind them while no run goes")
        # a run is refused, the operator's lease is not: pause, rewind, resume
        assert isinstance(protocol.acquire(topic, "exec-b", LEASE_S), Paused)
        clock.advance(1)
        rewound(protocol, topic, 1)
        assert isinstance(protocol.acquire(topic, "exec-b", LEASE_S), Paused)
        clock.advance(1)
        protocol.resume(topic, actor=ACTOR, reason="rewound")
        got = acquired(protocol.acquire(topic, "exec-b", LEASE_S))
        assert (got.checkpoint.position, got.checkpoint.seq) == ("k#1", 3)
        assert [a.action for a in protocol.audit(topic)] == ["resume", "rewind_checkpoint", "pause"]

    def test_pausing_a_topic_that_never_ran_starts_its_fence_at_the_clock(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        protocol.pause(topic, actor=ACTOR, reason="not yet")
        assert isinstance(protocol.acquire(topic, "exec-a", LEASE_S), Paused)
        clock.advance(5)
        protocol.resume(topic, actor=ACTOR, reason="go")
        # the lock item the pause created started its fence at the pause's clock, as an acquire would have
        got = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        assert got.lease.fence == clock() - 5 + 1 and got.checkpoint.seq == 0

    def test_a_run_holding_the_lock_finishes_and_no_run_takes_over_a_paused_topic(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        held = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        protocol.pause(topic, actor=ACTOR, reason="maintenance")
        # the holder's retried acquire re-enters, its commit and release go through
        assert acquired(protocol.acquire(topic, "exec-a", LEASE_S)).reentrant
        one = protocol.commit(held.lease, held.checkpoint, Advance("k#1"), lease_seconds=LEASE_S)
        # a takeover of an expired lease is refused too: a paused topic is not acquired at all
        clock.now_ms = one.lease.expires_at_ms + SKEW_MS + 1
        assert isinstance(protocol.acquire(topic, "exec-b", LEASE_S), Paused)
        assert protocol.status(topic).lock.owner == "exec-a"
        protocol.commit(one.lease, one.checkpoint, Advance("k#2"), release=True)
        assert isinstance(protocol.acquire(topic, "exec-b", LEASE_S), Paused)

    def test_pausing_twice_and_resuming_a_running_topic_change_nothing(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        nothing = protocol.resume(topic, actor=ACTOR, reason="is it paused?")
        assert (nothing.paused, nothing.changed, nothing.audit) == (False, False, None)
        first = protocol.pause(topic, actor=ACTOR, reason="one")
        again = protocol.pause(topic, actor="bob", reason="two")
        assert (again.paused, again.changed, again.audit) == (True, False, None)
        assert (again.paused_by, again.paused_reason, again.paused_at_ms) == (
            ACTOR,
            "one",
            first.paused_at_ms,
        )
        assert [a.action for a in protocol.audit(topic)] == ["pause"]

    # --- checkpoint set --------------------------------------------------------------------------------

    def test_set_checkpoint_forward_under_a_lease_then_runs_go_on_from_there(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run(protocol, topic, "exec-a", "k#1", "k#2")
        lease = operator(protocol, topic)
        # WHEN an operator skips ahead
        done = protocol.set_checkpoint(lease, position="k#9", actor=ACTOR, reason="skip a corrupt range")
        assert protocol.release(lease) is Release.RELEASED
        # THEN the checkpoint moved with the next seq, and the output record of that seq says so
        assert (done.before.seq, done.after.position, done.after.seq, done.superseded) == (2, "k#9", 3, ())
        assert protocol.read_checkpoint(topic) == done.after
        override = list(protocol.outputs(topic))[-1]
        assert (override.seq, override.kind, override.position, override.live) == (
            3,
            OutputKind.OVERRIDE,
            "k#9",
            False,
        )
        assert override.data == {"action": "set_checkpoint", "actor": ACTOR, "reason": "skip a corrupt range"}
        assert override.to_json()["kind"] == "override"
        [audit] = protocol.audit(topic)
        assert (audit.action, audit.before, audit.after) == (
            "set_checkpoint",
            {"position": "k#2", "seq": 2},
            {"position": "k#9", "seq": 3, "superseded": []},
        )
        # AND the next run starts there (the lock's copy moved too) and commits from it
        after = run(protocol, topic, "exec-b", "k#10")
        assert (after.position, after.seq, after.batch_start) == ("k#10", 4, "k#9")

    def test_set_checkpoint_back_is_refused_over_a_committed_batch(self, make_protocol, tmp_path):
        protocol, topic = make_protocol(), new_topic()
        run(protocol, topic, "exec-a", "k#1", "k#2")
        lease = operator(protocol, topic)
        order = FilesSource(str(tmp_path)).order
        for position, message in (
            ("k#1", "committed batch seq 2 ends after it"),
            ("k#2", "already"),
            ("k", "invalid position"),
            ("", "position"),
        ):
            with pytest.raises(InvalidInput, match=message):
                protocol.set_checkpoint(lease, position=position, actor=ACTOR, reason="x", order=order)
        # back within a skip that no batch committed after is allowed
        protocol.set_checkpoint(lease, position="k#9", actor=ACTOR, reason="skip")
        back = protocol.set_checkpoint(lease, position="k#5", actor=ACTOR, reason="skipped too far")
        assert (back.after.position, back.after.seq) == ("k#5", 4)
        assert [a.action for a in protocol.audit(topic)] == ["set_checkpoint", "set_checkpoint"]

    @pytest.mark.parametrize(
        ("actor", "reason", "message"),
        [
            ("", "why", "actor"),
            ("   ", "why", "actor"),
            (None, "why", "actor"),
            (ACTOR, "", "reason"),
            (ACTOR, "r" * 1001, "reason"),
        ],
    )
    def test_every_operator_change_needs_an_actor_and_a_reason(self, make_protocol, actor, reason, message):
        protocol, topic = make_protocol(), new_topic()
        run(protocol, topic, "exec-a", "k#1")
        lease = operator(protocol, topic)
        for change in (
            lambda: protocol.force_unlock(topic, actor=actor, reason=reason),
            lambda: protocol.pause(topic, actor=actor, reason=reason),
            lambda: protocol.resume(topic, actor=actor, reason=reason),
            lambda: protocol.set_checkpoint(lease, position="k#5", actor=actor, reason=reason),
            lambda: protocol.rewind_checkpoint(lease, to_seq=0, actor=actor, reason=reason),
        ):
            with pytest.raises(InvalidInput, match=message):
                change()
        assert list(protocol.audit(topic)) == [] and protocol.read_checkpoint(topic).seq == 1
        assert protocol.status(topic).lock.owner == lease.owner and not protocol.status(topic).paused

    def test_a_reason_of_1000_characters_is_enough(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        assert protocol.pause(topic, actor=ACTOR, reason="r" * 1000).changed

    def test_an_override_under_a_lease_taken_over_writes_nothing(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        run(protocol, topic, "exec-a", "k#1", "k#2")
        lease = operator(protocol, topic)
        clock.now_ms = lease.expires_at_ms + SKEW_MS + 1
        acquired(protocol.acquire(topic, "exec-b", LEASE_S))
        with pytest.raises(LockLost):
            protocol.set_checkpoint(lease, position="k#9", actor=ACTOR, reason="skip")
        with pytest.raises(LockLost):
            protocol.rewind_checkpoint(lease, to_seq=1, actor=ACTOR, reason="again")
        assert protocol.read_checkpoint(topic).seq == 2 and list(protocol.audit(topic)) == []
        assert [r.seq for r in protocol.outputs(topic) if r.live] == [1, 2]

    # --- rewind --------------------------------------------------------------------------------------

    def test_rewind_supersedes_later_outputs_and_the_next_run_reprocesses_from_there(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        run(protocol, topic, "exec-a", "k#1", "k#2", "k#3")
        lease = operator(protocol, topic)
        clock.advance(1000)
        # WHEN an operator rewinds to where commit 1 left the checkpoint
        done = protocol.rewind_checkpoint(lease, to_seq=1, actor=ACTOR, reason="processor bug in 2-3")
        protocol.release(lease)
        # THEN the checkpoint is there under the next seq, and commits 2 and 3 are superseded by it
        assert (done.after.position, done.after.seq, done.superseded) == ("k#1", 4, (3, 2))
        records = {r.seq: r for r in protocol.outputs(topic)}
        assert [(s, r.superseded_by, r.superseded_at_ms) for s, r in records.items() if r.superseded] == [
            (2, 4, clock()),
            (3, 4, clock()),
        ]
        assert records[1].live and records[4].kind is OutputKind.OVERRIDE and records[4].position == "k#1"
        assert records[2].to_json()["superseded_by"] == 4 and "superseded_by" not in records[1].to_json()
        [audit] = protocol.audit(topic)
        assert (audit.action, audit.before, audit.after) == (
            "rewind_checkpoint",
            {"position": "k#3", "seq": 3},
            {"position": "k#1", "seq": 4, "superseded": [3, 2]},
        )
        # AND the next run starts at k#1 again, and commits after the override
        after = run(protocol, topic, "exec-b", "k#2", "k#3")
        assert (after.position, after.seq) == ("k#3", 6)
        assert [(r.seq, r.data["after"]) for r in protocol.outputs(topic) if r.live] == [
            (1, None),
            (5, "k#1"),
            (6, "k#2"),
        ]

    def test_rewind_to_the_beginning_then_the_next_run_commits_from_it(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run(protocol, topic, "exec-a", "k#1", "k#2")
        rewound(protocol, topic, 0)
        assert (protocol.read_checkpoint(topic).position, protocol.read_checkpoint(topic).seq) == (None, 3)
        got = acquired(protocol.acquire(topic, "exec-b", LEASE_S))
        assert (got.checkpoint.position, got.checkpoint.seq) == (None, 3)
        one = protocol.commit(
            got.lease, got.checkpoint, Advance("k#1", output=batch_output("k#1")), lease_seconds=LEASE_S
        )
        # a second commit from the beginning (a stale retry) is refused: the checkpoint is no longer there
        with pytest.raises(CheckpointConflict):
            protocol.commit(one.lease, got.checkpoint, Advance("k#7"), lease_seconds=LEASE_S)
        assert [r.seq for r in protocol.outputs(topic) if r.live] == [4]
        # AND a rewind to an override that went to the beginning goes to the beginning again
        protocol.release(one.lease)
        rewound(protocol, topic, 3)
        assert (protocol.read_checkpoint(topic).position, protocol.read_checkpoint(topic).seq) == (None, 5)

    def test_rewinds_that_cannot_be_are_refused_before_any_write(self, make_protocol, forget_position):
        protocol, topic = make_protocol(), new_topic()
        run(protocol, topic, "exec-a", "k#1", "k#2", "k#3")
        lease = operator(protocol, topic)
        # commit 4 without an output record: where it ended is not recorded
        four = protocol.commit(lease, protocol.read_checkpoint(topic), Advance("k#4"), lease_seconds=LEASE_S)
        protocol.rewind_checkpoint(four.lease, to_seq=3, actor=ACTOR, reason="drop 4")
        forget_position(protocol, topic, 1)
        for to_seq, message in (
            (6, "a rewind goes to an earlier seq"),
            (5, "a rewind goes to an earlier seq"),
            (-1, "whole number"),
            (True, "whole number"),
            (4, "is not in the table"),
            (1, "written before commits recorded their position"),
        ):
            with pytest.raises(InvalidInput, match=message):
                protocol.rewind_checkpoint(four.lease, to_seq=to_seq, actor=ACTOR, reason="x")
        rewound_to_2 = protocol.rewind_checkpoint(four.lease, to_seq=2, actor=ACTOR, reason="y")
        with pytest.raises(InvalidInput, match="superseded by the rewind of seq 6"):
            protocol.rewind_checkpoint(four.lease, to_seq=3, actor=ACTOR, reason="z")
        assert rewound_to_2.superseded == (5, 3)
        assert {r.seq: r.superseded_by for r in protocol.outputs(topic)} == {
            1: None,
            2: None,
            3: 6,
            5: 6,
            6: None,
        }
        assert [a.action for a in protocol.audit(topic)] == ["rewind_checkpoint"] * 2

    def test_a_rewind_over_more_records_than_a_transaction_holds_is_refused(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        ends = [f"k#{n}" for n in range(1, MAX_SUPERSEDED + 3)]
        run(protocol, topic, "exec-a", *ends)
        lease = operator(protocol, topic)
        with pytest.raises(InvalidInput, match=f"would supersede {MAX_SUPERSEDED + 2} .* first to seq 2"):
            protocol.rewind_checkpoint(lease, to_seq=0, actor=ACTOR, reason="all")
        assert protocol.read_checkpoint(topic).seq == len(ends) and list(protocol.audit(topic)) == []
        # in steps: the largest one a transaction holds, then the rest
        first = protocol.rewind_checkpoint(lease, to_seq=2, actor=ACTOR, reason="most")
        assert len(first.superseded) == MAX_SUPERSEDED
        rest = protocol.rewind_checkpoint(lease, to_seq=0, actor=ACTOR, reason="all")
        assert set(rest.superseded) == {1, 2, first.after.seq}
        assert not [r for r in protocol.outputs(topic) if r.seq <= first.after.seq and not r.superseded]

    def test_an_override_at_the_next_seq_settles_a_pending_attempt_as_not_landed(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        run(protocol, topic, "exec-a", "k#1")
        zombie = acquired(protocol.acquire(topic, "exec-z", LEASE_S))
        clock.now_ms = zombie.lease.expires_at_ms + SKEW_MS + 1
        rewound(protocol, topic, 0)
        # the zombie's commit is refused, and the state shows it never landed (its objects may go)
        output = batch_output("k#2", attempt="1-zombie-0")
        with pytest.raises(LockLost):
            protocol.commit(zombie.lease, zombie.checkpoint, Advance("k#2", output=output), release=True)
        assert protocol.settlement(zombie.lease, zombie.checkpoint, "1-zombie-0") is Settlement.NOT_LANDED

    # --- audit ---------------------------------------------------------------------------------------

    def test_audit_lists_newest_first_page_by_page(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        for number in range(3):
            clock.advance(10)
            protocol.pause(topic, actor=ACTOR, reason=f"pause {number}")
            clock.advance(10)
            protocol.resume(topic, actor=ACTOR, reason=f"resume {number}")
        reasons = [a.reason for a in protocol.audit(topic)]
        assert reasons == [f"{verb} {n}" for n in (2, 1, 0) for verb in ("resume", "pause")]
        assert [a.reason for a in protocol.audit(topic, limit=3)] == reasons[:3]
        paged = protocol.store.audit_records(topic, limit=5, page_size=2)
        assert [a.reason for a in paged] == reasons[:5]
        assert all(a.key.startswith(f"audit#{a.at_ms:013d}#") for a in protocol.audit(topic))
        assert list(protocol.audit(new_topic())) == []
        with pytest.raises(InvalidInput, match="limit"):
            protocol.audit(topic, limit=0)

    def test_an_audit_record_is_written_once(self, make_protocol):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        store = protocol.store
        first = AuditRecord.new("pause", ACTOR, "one", clock(), {"paused": False}, {"paused": True})
        store.pause(topic, actor=ACTOR, reason="one", now_ms=clock(), audit=first)
        store.resume(topic, paused_at_ms=clock(), audit=replace(first, key=first.key + "0", action="resume"))
        # WHEN a change comes with the key of an existing audit record, THEN it is refused, nothing changes
        with pytest.raises(AuditKeyTaken):
            store.pause(
                topic, actor="mallory", reason="rewrite", now_ms=clock(), audit=replace(first, reason="x")
            )
        assert not protocol.status(topic).paused
        assert [(a.key, a.reason) for a in protocol.audit(topic)] == [
            (first.key + "0", "one"),
            (first.key, "one"),
        ]

    def test_an_override_supersedes_only_live_records(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run(protocol, topic, "exec-a", "k#1", "k#2")
        rewound(protocol, topic, 1)  # record 2 superseded by 3
        lease = operator(protocol, topic)
        current = protocol.read_checkpoint(topic)
        new = replace(
            current, position="k#0", seq=current.seq + 1, committed_by=lease.owner, fence=lease.fence
        )
        for supersede in ((2,), (7,)):  # superseded already; no such record
            audit = AuditRecord.new("rewind_checkpoint", ACTOR, "x", 1, {}, {})
            with pytest.raises(CommitRejected) as rejected:
                protocol.store.override_checkpoint(
                    topic,
                    lease.owner,
                    lease.fence,
                    expected=current,
                    new=new,
                    record={},
                    supersede=supersede,
                    now_ms=1,
                    audit=audit,
                )
            assert rejected.value.outputs_failed and not rejected.value.checkpoint_failed
        # nothing was written: no record made up for seq 7, record 2 still superseded by 3, one audit record
        assert {r.seq: r.superseded_by for r in protocol.outputs(topic)} == {1: None, 2: 3, 3: None}
        assert protocol.read_checkpoint(topic) == current and len(list(protocol.audit(topic))) == 1

    # --- races, made exact: the lock or the pause changes between an operator's read and write ----------

    def test_force_unlock_that_read_a_lock_since_taken_over_unlocks_the_new_holder(
        self, make_protocol, monkeypatch
    ):
        clock = FakeClock()
        protocol, taker, topic = make_protocol(clock=clock), make_protocol(clock=clock), new_topic()
        old = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        clock.now_ms = old.lease.expires_at_ms + SKEW_MS + 1
        read_lock, took = protocol.store.read_lock, []

        def read_then_taken_over(ref):
            lock = read_lock(ref)
            if not took:  # after the operator's read, before its write: exec-b takes the expired lease over
                took.append(acquired(taker.acquire(topic, "exec-b", LEASE_S)))
            return lock

        monkeypatch.setattr(protocol.store, "read_lock", read_then_taken_over)
        done = protocol.force_unlock(topic, actor=ACTOR, reason="exec-a is stuck")
        # THEN the write conditioned on exec-a's lock was refused; read again, exec-b's lock was unlocked
        [new] = took
        assert (done.before_owner, done.before_fence, done.after_fence) == (
            "exec-b",
            new.lease.fence,
            new.lease.fence + 1,
        )
        assert protocol.status(topic).lock.fence == new.lease.fence + 1
        assert [a.before["owner"] for a in protocol.audit(topic)] == ["exec-b"]
        with pytest.raises(LockLost):
            taker.commit(new.lease, new.checkpoint, Advance("k#1"), release=True)

    def test_resume_that_read_a_pause_since_replaced_lifts_the_new_one(self, make_protocol, monkeypatch):
        clock = FakeClock()
        protocol, topic = make_protocol(clock=clock), new_topic()
        protocol.pause(topic, actor=ACTOR, reason="first")
        read_lock, replaced = protocol.store.read_lock, []

        def read_then_paused_again(ref):
            lock = read_lock(ref)
            if not replaced:  # after the read: another operator resumes and pauses again
                replaced.append(True)
                clock.advance(10)
                other = make_protocol(clock=clock)
                other.resume(topic, actor="bob", reason="done")
                clock.advance(10)
                other.pause(topic, actor="bob", reason="second")
                clock.advance(10)
            return lock

        monkeypatch.setattr(protocol.store, "read_lock", read_then_paused_again)
        done = protocol.resume(topic, actor=ACTOR, reason="go")
        # THEN the audit record names the pause it lifted: bob's, not the one first read
        assert (done.changed, done.paused_by, done.paused_reason, done.paused_at_ms) == (
            True,
            "bob",
            "second",
            clock() - 10,
        )
        newest = next(iter(protocol.audit(topic)))
        assert (newest.action, newest.before["paused_reason"]) == ("resume", "second")
        assert not protocol.status(topic).paused
