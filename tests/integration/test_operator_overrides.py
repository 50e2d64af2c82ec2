"""Operator changes against DynamoDB Local: the shared contract, the items' physical shape, races between
operators and runs, and a rewind followed by a real run of the tasks and ``leanops gc``."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from leanops import sink_gc, tasks
from leanops.config import parse_topics
from leanops.data.files import FilesSink, FilesSource
from leanops.errors import CheckpointConflict, LockLost
from leanops.protocol import Acquired, Advance, Paused, Protocol, TopicRef
from leanops.protocol.dynamodb import DynamoDBStore
from leanops.protocol.service import MAX_SUPERSEDED
from leanops.protocol.store import MAX_TRANSACTION_ITEMS
from leanops.protocol.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE
from tests.integration.test_protocol_dynamodb import count_calls, raw_item
from tests.support.clock import FakeClock
from tests.support.operator_contract import ACTOR, OperatorContract, operator, rewound, run
from tests.support.protocol_contract import LEASE_S, SKEW_MS, acquired, batch_output, new_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def make_protocol(state_table):
    def make(clock=None, skew_margin_ms=SKEW_MS, client=None):
        store = DynamoDBStore(state_table.name, client or state_table.client)
        return Protocol(store, clock=clock or FakeClock(), skew_margin_ms=skew_margin_ms)

    return make


@pytest.fixture
def forget_position(state_table):
    def forget(protocol, topic, seq):
        state_table.client.update_item(
            TableName=state_table.name,
            Key={PARTITION_KEY: {"S": topic.key}, SORT_KEY: {"S": f"output#{seq:012d}"}},
            UpdateExpression="REMOVE #position",
            ExpressionAttributeNames={"#position": "position"},
        )

    return forget


class TestOperatorDynamoDB(OperatorContract):
    """Every operator contract test, on DynamoDB Local."""


# --- each change one transaction, with an audit record that never expires --------------------------------


def test_each_change_is_one_transaction_with_its_audit_record(make_protocol, state_table, ddb_client_factory):
    client = ddb_client_factory()
    protocol, topic = make_protocol(client=client), new_topic()
    run(protocol, topic, "exec-a", "k#1", "k#2")
    acquired(protocol.acquire(topic, "exec-b", LEASE_S))
    calls = count_calls(client)
    protocol.force_unlock(topic, actor=ACTOR, reason="stuck")
    protocol.pause(topic, actor=ACTOR, reason="hold")
    before = len(calls)
    assert isinstance(protocol.acquire(topic, "exec-c", LEASE_S), Paused)
    # a paused acquire is the one conditional write an acquire is
    assert [name for name, _ in calls[before:]] == ["UpdateItem"]
    protocol.resume(topic, actor=ACTOR, reason="go")
    lease = operator(protocol, topic)
    protocol.rewind_checkpoint(lease, to_seq=1, actor=ACTOR, reason="again")
    transactions = [len(params["TransactItems"]) for name, params in calls if name == "TransactWriteItems"]
    # unlock and pause: the lock item and the audit record; rewind: checkpoint, lock, its output record,
    # the audit record and the one output record it supersedes
    assert transactions == [2, 2, 2, 5]
    # audit and override records leave the table only by their TTL, into the archive (decision 0014)
    retention = protocol.store.retention
    for audit in protocol.audit(topic):
        item = raw_item(state_table, topic, audit.key)
        assert int(item[TTL_ATTRIBUTE]["N"]) == retention.audit_expire_at_s(audit.at_ms)
        assert set(item) == {
            PARTITION_KEY,
            SORT_KEY,
            "action",
            "actor",
            "reason",
            "at_ms",
            "before",
            "after",
            TTL_ATTRIBUTE,
        }
    override = raw_item(state_table, topic, "output#000000000003")
    committed_at = int(override["committed_at"]["N"])
    assert int(override[TTL_ATTRIBUTE]["N"]) == retention.outputs_expire_at_s(committed_at)


def test_a_rewind_superseding_as_many_records_as_a_transaction_holds(make_protocol, ddb_client_factory):
    client = ddb_client_factory()
    protocol, topic = make_protocol(client=client), new_topic()
    run(protocol, topic, "exec-a", *(f"k#{n}" for n in range(1, MAX_SUPERSEDED + 2)))
    lease = operator(protocol, topic)
    calls = count_calls(client)
    done = protocol.rewind_checkpoint(lease, to_seq=1, actor=ACTOR, reason="all but the first")
    assert len(done.superseded) == MAX_SUPERSEDED
    assert [len(p["TransactItems"]) for n, p in calls if n == "TransactWriteItems"] == [MAX_TRANSACTION_ITEMS]


def test_an_override_never_replaces_an_output_record(make_protocol, state_table):
    protocol, topic = make_protocol(), new_topic()
    run(protocol, topic, "exec-a", "k#1")
    # GIVEN an output record already at the seq the next override would take (by hand: no code path does)
    planted = {
        PARTITION_KEY: {"S": topic.key},
        SORT_KEY: {"S": "output#000000000002"},
        "committed_at": {"N": "1"},
    }
    state_table.client.put_item(TableName=state_table.name, Item=planted)
    lease = operator(protocol, topic)
    with pytest.raises(CheckpointConflict):
        protocol.set_checkpoint(lease, position="k#9", actor=ACTOR, reason="skip")
    assert raw_item(state_table, topic, "output#000000000002") == planted
    assert protocol.read_checkpoint(topic).seq == 1 and list(protocol.audit(topic)) == []


# --- races on DynamoDB Local -------------------------------------------------------------------------------


def test_no_acquire_that_starts_after_a_pause_returned_takes_the_lock(state_table, ddb_client_factory):
    topic, workers = new_topic(), 6
    protocols = [Protocol(DynamoDBStore(state_table.name, ddb_client_factory())) for _ in range(workers + 1)]
    stop = threading.Event()

    def contender(index: int) -> list[tuple[float, object]]:
        tried: list[tuple[float, object]] = []
        while not stop.is_set():
            started = time.monotonic()
            got = protocols[index].acquire(topic, f"exec-{index}-{len(tried)}", 60)
            tried.append((started, got))
            if isinstance(got, Acquired):
                protocols[index].release(got.lease)
        return tried

    with ThreadPoolExecutor(workers) as pool:
        pending = [pool.submit(contender, index) for index in range(workers)]
        time.sleep(0.3)
        assert protocols[-1].pause(topic, actor=ACTOR, reason="race").changed
        returned = time.monotonic()
        time.sleep(0.3)
        stop.set()
        tried = [attempt for future in pending for attempt in future.result()]
    before = [got for started, got in tried if started < returned]
    after = [got for started, got in tried if started > returned]
    assert any(isinstance(got, Acquired) for got in before), "the race never acquired before the pause"
    assert after and all(isinstance(got, Paused) for got in after)
    status = protocols[-1].status(topic)
    assert status.paused and status.lock.owner is None
    protocols[-1].resume(topic, actor=ACTOR, reason="race over")
    assert isinstance(protocols[-1].acquire(topic, "exec-next", 60), Acquired)


def commit_and_unlock_at_once(holder: Protocol, unlocker: Protocol, got: Acquired) -> tuple[bool, bool]:
    """The holder's commit (with release) and an operator's force unlock, started together: whether each
    took effect."""
    barrier = threading.Barrier(2)

    def commit() -> bool:
        barrier.wait()
        try:
            holder.commit(got.lease, got.checkpoint, Advance("k#1", output=batch_output("k#1")), release=True)
        except LockLost:
            return False
        return True

    def unlock() -> bool:
        barrier.wait()
        return unlocker.force_unlock(got.lease.topic, actor=ACTOR, reason="race").unlocked

    with ThreadPoolExecutor(2) as pool:
        committed, unlocked = pool.submit(commit), pool.submit(unlock)
        return committed.result(), unlocked.result()


def test_force_unlock_racing_a_commit_either_fences_it_out_or_finds_the_lock_free(
    state_table, ddb_client_factory
):
    holder = Protocol(DynamoDBStore(state_table.name, ddb_client_factory()))
    unlocker = Protocol(DynamoDBStore(state_table.name, ddb_client_factory()))
    for _ in range(30):
        topic = new_topic()
        got = acquired(holder.acquire(topic, "exec-a", LEASE_S))
        committed, unlocked = commit_and_unlock_at_once(holder, unlocker, got)
        # THEN exactly one of them took effect, and the state says which
        lock, audits = unlocker.status(topic).lock, list(unlocker.audit(topic))
        assert committed != unlocked
        if committed:
            assert audits == [] and lock.last_outcome == "processed" and lock.fence == got.lease.fence
            assert unlocker.read_checkpoint(topic).seq == 1
        else:
            assert len(audits) == 1 and lock.last_outcome == "unlocked" and lock.fence == got.lease.fence + 1
            assert unlocker.read_checkpoint(topic).seq == 0 and list(unlocker.outputs(topic)) == []


def test_commits_that_start_after_a_force_unlock_returned_all_fail(state_table, ddb_client_factory):
    holder = Protocol(DynamoDBStore(state_table.name, ddb_client_factory()))
    unlocker = Protocol(DynamoDBStore(state_table.name, ddb_client_factory()))
    topic = new_topic()
    got = acquired(holder.acquire(topic, "exec-a", LEASE_S))
    stop = threading.Event()

    def keep_committing() -> list[tuple[float, str]]:
        lease, checkpoint, tried = got.lease, got.checkpoint, []
        while not stop.is_set():
            started, end = time.monotonic(), f"k#{checkpoint.seq + 1}"
            try:
                done = holder.commit(
                    lease, checkpoint, Advance(end, output=batch_output(end)), lease_seconds=60
                )
            except LockLost:
                tried.append((started, "fenced out"))
                continue
            tried.append((started, "committed"))
            lease, checkpoint = done.lease, done.checkpoint
        return tried

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(keep_committing)
        time.sleep(0.3)
        assert unlocker.force_unlock(topic, actor=ACTOR, reason="race").unlocked
        returned = time.monotonic()
        time.sleep(0.2)
        stop.set()
        tried = pending.result()
    committed = [started for started, outcome in tried if outcome == "committed"]
    assert committed and all(started < returned for started in committed)
    assert any(started > returned for started, outcome in tried if outcome == "fenced out")
    # every commit that landed is in the checkpoint and the manifest, and nothing else
    assert unlocker.read_checkpoint(topic).seq == len(committed) == len(list(unlocker.outputs(topic)))


# --- a rewind, then runs of the real tasks and `leanops gc` ----------------------------------------------


@pytest.fixture
def files_world(tmp_path, state_table):
    source, sink = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    (source / "part-0.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(10)))
    document = {
        "topics": {
            "t": {
                "source": {"type": "files", "uri": str(source)},
                "sink": {"type": "files", "uri": str(sink)},
                "batch_size": 4,
                "lease_seconds": LEASE_S,
                "max_batches_per_run": 10,
            }
        }
    }
    protocol = Protocol(DynamoDBStore(state_table.name, state_table.client), clock=FakeClock())
    return {
        "topics": parse_topics(document, tmp_path / "topics.yaml"),
        "protocol": protocol,
        "sink": sink,
        "source": source,
    }


def start(world, execution: str) -> dict:
    event = {"input": {"topic": "t"}, "execution": execution, "execution_name": execution}
    return tasks.acquire(event, world["protocol"], world["topics"]).to_json()


def run_to_end(world, execution: str) -> dict:
    state = start(world, execution)
    while state["outcome"] == "acquired" and not state["released"]:
        run_state = tasks.RunState.from_json(state)
        batch = tasks.process(run_state, world["protocol"], world["topics"], lambda: 600_000).to_json()
        state = tasks.advance(run_state, batch, world["protocol"], world["topics"]).to_json()
    return state


def objects(world, *, live: bool) -> list[str]:
    records = world["protocol"].outputs(TopicRef("t"))
    return [r.data["object"] for r in records if r.data.get("object") and r.live == live]


def visible(world) -> list[str]:
    return sorted(p.name for p in Path(world["sink"]).glob("*") if p.is_file() and not p.name.startswith("_"))


def committed_ids(world) -> list[int]:
    lines = (
        line for name in objects(world, live=True) for line in (world["sink"] / name).read_text().splitlines()
    )
    return sorted(json.loads(line)["id"] for line in lines)


def test_a_rewind_then_a_run_reprocesses_and_gc_deletes_only_what_was_superseded(files_world):
    world, topic = files_world, TopicRef("t")
    assert run_to_end(world, "first")["batches"] == 3  # ids 0-3, 4-7, 8-9: seqs 1, 2, 3
    first_objects = objects(world, live=True)
    # WHEN an operator rewinds to where the first batch ended
    rewound(world["protocol"], topic, 1)
    assert objects(world, live=False) == first_objects[1:]
    # AND the next run reprocesses from there (part-0.jsonl#4)
    again = run_to_end(world, "second")
    assert (again["outcome"], again["batches"], again["records"]) == ("processed", 2, 6)
    # THEN its first commit removed the superseded object at its own start, and nothing live
    assert first_objects[1] not in visible(world) and first_objects[2] in visible(world)
    assert committed_ids(world) == list(range(10))
    # AND gc deletes the other superseded object, and keeps every live one
    stem_of = FilesSource(str(world["source"])).stem
    done = sink_gc.collect_topic(world["protocol"], topic, FilesSink(str(world["sink"]), "t"), stem_of)
    assert (done.deleted, done.kept) == ([first_objects[2]], [])
    assert visible(world) == sorted(objects(world, live=True))
    assert committed_ids(world) == list(range(10))


def test_a_paused_topic_runs_nothing_until_it_is_resumed(files_world):
    world, topic = files_world, TopicRef("t")
    world["protocol"].pause(topic, actor=ACTOR, reason="hold")
    state = start(world, "paused-run")
    assert (state["outcome"], state["released"], state["lease"]) == ("paused", True, None)
    assert world["protocol"].status(topic).lock.owner is None and visible(world) == []
    world["protocol"].resume(topic, actor=ACTOR, reason="go")
    assert run_to_end(world, "next")["records"] == 10
