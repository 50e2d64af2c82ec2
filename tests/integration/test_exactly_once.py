"""Exactly-once under a pause and under a retried commit (design I4, I9), with the task functions against
DynamoDB Local: the interleavings are driven step by step, so each one is exact and none depends on timing.

- A run paused inside its first batch's processor past its lease; another run takes over and commits that
  batch; the paused run resumes, writes, and its commit is refused. Once its first batch swept the sink
  before writing, deleting the committed object of the run that took over.
- A run's commit lands (and releases) but the response is lost; another run acquires and commits; the first
  run's retried commit is refused. Once it deleted its own committed object on that refusal.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session

from leanops import sink_gc, tasks
from leanops.config import parse_topics
from leanops.data.files import FilesSink, new_attempt
from leanops.errors import LockLost, SinkClaimed, StoreUnavailable
from leanops.protocol import Protocol, Settlement, TopicRef
from leanops.protocol.dynamodb import DynamoDBStore
from leanops.protocol.table import create_table
from tests.support.clock import FakeClock

pytestmark = pytest.mark.integration
LEASE_S = 30
SKEW_MS = 2_000


@pytest.fixture
def world(tmp_path, state_table, ddb_client_factory):
    source, sink = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    land(source, "part-0.jsonl", range(0, 10))
    topic = {
        "source": {"type": "files", "uri": str(source)},
        "sink": {"type": "files", "uri": str(sink)},
        "batch_size": 100,
        "lease_seconds": LEASE_S,
    }
    clock = FakeClock()

    def protocol(client=None) -> Protocol:
        store = DynamoDBStore(state_table.name, client or ddb_client_factory())
        return Protocol(store, clock=clock, skew_margin_ms=SKEW_MS)

    return {
        "topics": parse_topics({"topics": {"t": topic}}, tmp_path / "topics.yaml"),
        "topic": topic,
        "topics_file": tmp_path / "topics.yaml",
        "protocol": protocol,
        "clock": clock,
        "source": source,
        "sink": sink,
    }


def land(folder: Path, key: str, ids: range) -> None:
    (folder / key).write_text("".join(json.dumps({"id": i}) + "\n" for i in ids))


def start(world, execution: str, protocol: Protocol) -> dict:
    event = {"input": {"topic": "t"}, "execution": execution, "execution_name": execution}
    return tasks.acquire(event, protocol, world["topics"]).to_json()


def process(world, state: dict, protocol: Protocol) -> dict:
    return tasks.process(
        tasks.RunState.from_json(state), protocol, world["topics"], lambda: 600_000
    ).to_json()


def advance(state: dict, batch: dict, world, protocol: Protocol) -> dict:
    return tasks.advance(tasks.RunState.from_json(state), batch, protocol, world["topics"]).to_json()


def run_to_end(world, execution: str, protocol: Protocol) -> dict:
    state = start(world, execution, protocol)
    while state["outcome"] == "acquired" and not state["released"]:
        state = advance(state, process(world, state, protocol), world, protocol)
    return state


def committed_ids(world) -> list[int]:
    """The ids in the committed output (the objects the output records name), duplicates kept."""
    ids = []
    for record in world["protocol"]().outputs(TopicRef("t")):
        if record.data.get("object"):
            path = world["sink"] / record.data["object"]
            assert path.exists(), f"committed object {path.name} is missing from the sink"
            ids += [json.loads(line)["id"] for line in path.read_text().splitlines()]
    return sorted(ids)


def visible_objects(world) -> list[str]:
    return sorted(p.name for p in world["sink"].glob("*") if p.is_file() and not p.name.startswith("_"))


def test_a_run_paused_in_its_first_batch_past_its_lease_deletes_nothing_committed(world, monkeypatch):
    # The processor is a closure driving the takeover from inside the batch: it runs in this process.
    settings = {**world["topic"], "isolation": "none"}
    world["topics"] = parse_topics({"topics": {"t": settings}}, world["topics_file"])
    zombie_protocol, takeover_protocol = world["protocol"](), world["protocol"]()
    zombie = start(world, "zombie", zombie_protocol)
    took_over: dict[str, dict] = {}

    def paused_processor(records, ctx):
        if not took_over:
            # WHILE the zombie is inside its processor: its lease passes, another run takes over and commits
            took_over["state"] = {}
            world["clock"].advance(LEASE_S * 1000 + SKEW_MS + 1)
            took_over["state"] = run_to_end(world, "takeover", takeover_protocol)
        return records

    monkeypatch.setattr(tasks, "load_processor", lambda spec, folder: paused_processor)
    # GIVEN the zombie resumes: its heartbeat saw nothing (no renewal came due), so it writes its object
    batch = process(world, zombie, zombie_protocol)
    assert took_over["state"]["outcome"] == "processed" and batch["object"]
    committed = [r.data["object"] for r in world["protocol"]().outputs(TopicRef("t"))]
    # WHEN its commit is refused
    with pytest.raises(LockLost):
        advance(zombie, batch, world, zombie_protocol)
    # THEN the committed object of the run that took over is there, its own object is gone, and each
    # record is in the committed output exactly once
    assert committed_ids(world) == list(range(10))
    assert visible_objects(world) == sorted(committed)
    assert batch["object"] not in visible_objects(world)


def lose_response_once(client, operation: str) -> dict:
    """The next ``operation`` lands, but the caller hears a read timeout (not retried: max_attempts=1)."""
    http, seen = URLLib3Session(), {"lost": 0}

    def handler(request, **_):
        if seen["lost"] == 0:
            seen["lost"] += 1
            http.send(request)
            raise ReadTimeoutError(endpoint_url=request.url)

    client.meta.events.register(f"before-send.dynamodb.{operation}", handler)
    return seen


def test_a_retried_commit_whose_first_attempt_landed_keeps_its_object(world, ddb_client_factory):
    first_client = ddb_client_factory(max_attempts=1)
    first_protocol, second_protocol = world["protocol"](first_client), world["protocol"]()
    # GIVEN a run whose commit (with release) lands, but whose response is lost: the task fails, to be
    # retried by the state machine
    first = start(world, "first", first_protocol)
    batch = process(world, first, first_protocol)
    seen = lose_response_once(first_client, "TransactWriteItems")
    with pytest.raises(StoreUnavailable):
        advance(first, batch, world, first_protocol)
    assert seen["lost"] == 1
    # AND meanwhile, new data lands and another run acquires, processes and commits it
    land(world["source"], "part-1.jsonl", range(10, 20))
    assert run_to_end(world, "second", second_protocol)["outcome"] == "processed"
    # WHEN the first run's commit is retried
    retried = advance(first, batch, world, first_protocol)
    # THEN it is recognised as landed: the run ends processed, its object stays committed, nothing twice
    assert retried["outcome"] == "processed" and retried["released"]
    assert (world["sink"] / batch["object"]).exists()
    assert committed_ids(world) == list(range(20))


def test_settlement_reads_the_lock_before_the_checkpoint(world):
    protocol = world["protocol"]()
    run = start(world, "run", protocol)
    batch = process(world, run, protocol)
    state = tasks.RunState.from_json(run)
    assert state.lease is not None
    # WHILE the run holds the lock and has not committed, its commit may still land: unsettled
    assert protocol.settlement(state.lease, state.checkpoint, batch["attempt"]) is Settlement.UNSETTLED
    # WHEN it commits, the state shows it landed
    advance(run, batch, world, protocol)
    assert protocol.settlement(state.lease, state.checkpoint, batch["attempt"]) is Settlement.LANDED
    # AND another attempt at the same batch (same lease, other name) did not land, and never can
    other = new_attempt(state.lease.fence, state.lease.owner)
    assert protocol.settlement(state.lease, state.checkpoint, other) is Settlement.NOT_LANDED


def test_discard_keeps_a_landed_attempts_objects_whatever_the_caller_believes(world):
    protocol = world["protocol"]()
    run = start(world, "run", protocol)
    batch = process(world, run, protocol)
    state = tasks.RunState.from_json(run)
    assert state.lease is not None
    advance(run, batch, world, protocol)
    sink = FilesSink(str(world["sink"]), "t")
    # WHEN a caller that believes its commit failed asks to discard the landed attempt's objects
    settled = sink_gc.discard_attempt(
        protocol, state.lease, state.checkpoint, batch["attempt"], [batch["object"]], sink
    )
    # THEN the state says landed, and the object stays
    assert settled is Settlement.LANDED and (world["sink"] / batch["object"]).exists()


def test_a_sink_written_by_one_state_is_refused_by_another(world, dynamodb_local, ddb_client_factory):
    # GIVEN a topic that ran under one state table
    assert run_to_end(world, "first", world["protocol"]())["outcome"] == "processed"
    before = sorted(p.name for p in world["sink"].rglob("*"))
    # AND a second state (another table: another project's database, or another deployment)
    other_table = f"{DynamoDBStore(None, ddb_client_factory()).table_name}-other"
    create_table(ddb_client_factory(), other_table)
    other = Protocol(DynamoDBStore(other_table, ddb_client_factory()), clock=world["clock"])
    # WHEN the same topic runs under it
    with pytest.raises(SinkClaimed, match="belongs to topic 't' of another state"):
        start(world, "second", other)
    # THEN nothing was written or deleted in the sink, and the other state's lock is free again
    assert sorted(p.name for p in world["sink"].rglob("*")) == before
    assert other.status(TopicRef("t")).lock.owner is None
    # AND another topic of the first state is refused that sink too
    world["topics"].topics["u"] = replace(world["topics"].topics["t"], name="u")
    event = {"input": {"topic": "u"}, "execution": "third", "execution_name": "third"}
    with pytest.raises(SinkClaimed, match="belongs to 't', not to 'u'"):
        tasks.acquire(event, world["protocol"](), world["topics"])


def test_two_attempts_of_one_execution_commit_once_and_the_loser_leaves_nothing(world):
    # GIVEN one execution run twice at once (Express is at-least-once): the same lease, two attempts
    protocol = world["protocol"]()
    state = start(world, "twice", protocol)
    first, second = process(world, state, protocol), process(world, state, protocol)
    assert first["object"] != second["object"]
    # WHEN both commit, one after the other
    assert advance(state, first, world, protocol)["outcome"] == "processed"
    with pytest.raises(LockLost):
        advance(state, second, world, protocol)
    # THEN the second is not taken for the first (its attempt differs): it is refused and its object deleted
    assert not (world["sink"] / second["object"]).exists()
    assert committed_ids(world) == list(range(10))
    assert visible_objects(world) == [first["object"]]


def test_a_lock_item_deleted_by_ttl_never_gives_a_fence_twice(world, state_table):
    # GIVEN a run that wrote its first batch and stalled before committing
    zombie_protocol = world["protocol"]()
    zombie = start(world, "zombie", zombie_protocol)
    batch = process(world, zombie, zombie_protocol)
    # AND its lock item deleted by TTL after the lease (the fence counter goes with it)
    world["clock"].advance(LEASE_S * 1000 + SKEW_MS + 1)
    state_table.client.delete_item(
        TableName=state_table.name, Key={"pk": {"S": TopicRef("t").key}, "sk": {"S": "lock"}}
    )
    taker_protocol = world["protocol"]()
    taker = start(world, "taker", taker_protocol)
    # THEN the new lock item's fence starts past every fence the deleted one gave (it starts from the clock)
    assert taker["lease"]["fence"] > zombie["lease"]["fence"]
    # WHEN the new run commits that batch (and cleans up other attempts at its start), and the zombie's
    # commit comes in afterwards
    done = advance(taker, process(world, taker, taker_protocol), world, taker_protocol)
    assert done["outcome"] == "processed"
    with pytest.raises(LockLost):
        advance(zombie, batch, world, zombie_protocol)
    # THEN the taker's object is committed and present, the zombie's is gone, each record once
    assert committed_ids(world) == list(range(10))
    assert batch["object"] not in visible_objects(world) and len(visible_objects(world)) == 1
