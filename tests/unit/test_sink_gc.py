"""leanops.sink_gc: which objects ``leanops gc`` deletes and which it keeps, on the in-memory store."""

from __future__ import annotations

import json
import uuid

import pytest

from leanops import sink_gc, tasks
from leanops.config import parse_topics
from leanops.data.files import FilesSink, FilesSource, new_attempt
from leanops.protocol import Protocol, TopicRef
from leanops.protocol.memory import InMemoryStore
from tests.support.clock import FakeClock

T = TopicRef("t")


@pytest.fixture
def world(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "part-0.jsonl").write_text("".join(json.dumps({"i": i}) + "\n" for i in range(6)))
    document = {
        "topics": {
            "t": {
                "source": {"type": "files", "uri": str(source)},
                "sink": {"type": "files", "uri": str(tmp_path / "out")},
                "batch_size": 3,
                "lease_seconds": 30,
            }
        }
    }
    topics = parse_topics(document, tmp_path / "topics.yaml")
    return {
        "topics": topics,
        "protocol": Protocol(InMemoryStore(), clock=FakeClock()),
        "sink": FilesSink(str(tmp_path / "out"), "t"),
        "stem_of": FilesSource(str(source)).stem,
    }


def step(world, execution: str, batches: int) -> dict:
    """Acquire, then ``batches`` process/advance steps (the run may stop earlier)."""
    event = {"input": {"topic": "t"}, "execution": execution, "execution_name": execution}
    state = tasks.acquire(event, world["protocol"], world["topics"]).to_json()
    for _ in range(batches):
        if state["released"]:
            break
        state["batch"] = tasks.process(
            tasks.RunState.from_json(state), world["protocol"], world["topics"], lambda: 60_000
        ).to_json()
        state = tasks.advance(
            tasks.RunState.from_json(state), state["batch"], world["protocol"], world["topics"]
        ).to_json()
    return state


def orphan(world, stem: str, owner: str = "arn:dead") -> str:
    name = world["sink"].object_name(stem, new_attempt(9, owner))
    world["sink"].write(name, [{"i": -1}])
    return name


def collect(world, **options) -> sink_gc.Collected:
    return sink_gc.collect_topic(world["protocol"], T, world["sink"], world["stem_of"], **options)


def committed(world) -> set[str]:
    return {r.data["object"] for r in world["protocol"].outputs(T) if r.data.get("object")}


def test_orphans_of_settled_batches_go_and_committed_objects_stay(world):
    # GIVEN a topic with two committed batches, and an orphan at each of their starts (killed writers)
    assert step(world, "run-1", 5)["outcome"] == "processed"
    settled = [orphan(world, "origin"), orphan(world, world["stem_of"]("part-0.jsonl#3"))]
    # WHEN gc runs
    done = collect(world)
    # THEN the orphans are deleted, every committed object stays, nothing else is listed
    assert sorted(done.deleted) == sorted(settled) and done.kept == []
    assert {name for name, _ in world["sink"].attempts()} == committed(world)


def test_an_attempt_at_the_current_start_stays_while_the_lock_is_held_and_goes_once_it_is_free(world):
    # GIVEN one committed batch, and a run holding the lock at the next start with its attempt written
    assert step(world, "run-1", 1)["outcome"] == "acquired"
    current = world["stem_of"](world["protocol"].read_checkpoint(T).position)
    in_flight = orphan(world, current, owner="run-1")
    # WHEN gc runs while the lock is held, THEN the attempt is kept, with the holder as the reason
    done = collect(world)
    assert done.deleted == [] and done.kept == [
        {"object": in_flight, "reason": "in flight: the lock is held by run-1"}
    ]
    # WHEN the holder releases without committing it (it failed), THEN gc deletes it
    world["protocol"].release_owned_by(T, "run-1")
    assert collect(world).deleted == [in_flight]


def test_a_name_no_commit_starts_at_is_kept_and_dry_run_deletes_nothing(world):
    assert step(world, "run-1", 5)["outcome"] == "processed"
    foreign = orphan(world, "zzz.0000000042")  # no commit of this topic starts at this position
    settled = orphan(world, "origin")
    done = collect(world, dry_run=True)
    assert done.deleted == [settled]
    assert done.kept == [{"object": foreign, "reason": sink_gc.UNKNOWN_STEM}]
    assert {name for name, _ in world["sink"].attempts()} == committed(world) | {foreign, settled}


def rewind(world, to_seq: int) -> None:
    protocol = world["protocol"]
    lease = protocol.acquire(T, f"operator-alice-{uuid.uuid4().hex}", 30).lease
    protocol.rewind_checkpoint(lease, to_seq=to_seq, actor="alice", reason="reprocess")
    protocol.release(lease)


def process_only(world, execution: str) -> dict:
    """A run that acquired and wrote its first batch's object, and has not committed it yet."""
    event = {"input": {"topic": "t"}, "execution": execution, "execution_name": execution}
    state = tasks.acquire(event, world["protocol"], world["topics"])
    return tasks.process(state, world["protocol"], world["topics"], lambda: 60_000).to_json()


def test_objects_only_superseded_records_name_are_garbage_and_live_ones_stay(world):
    assert step(world, "run-1", 5)["outcome"] == "processed"
    first, second = [r.data["object"] for r in world["protocol"].outputs(T)]
    rewind(world, 1)  # the second batch's record is superseded
    done = collect(world)
    assert done.deleted == [second] and done.kept == []
    assert {name for name, _ in world["sink"].attempts()} == {first} == committed_live(world)


def test_an_attempt_at_a_rewound_start_stays_while_a_run_holds_the_lock(world):
    # GIVEN a rewind to a start that was committed before, and a run that wrote its attempt there again
    assert step(world, "run-1", 5)["outcome"] == "processed"
    superseded = list(world["protocol"].outputs(T))[1].data["object"]
    rewind(world, 1)
    in_flight = process_only(world, "run-2")["object"]
    # WHEN gc runs, THEN the superseded object goes, and the in-flight attempt at that same start stays
    done = collect(world)
    assert done.deleted == [superseded]
    assert done.kept == [{"object": in_flight, "reason": "in flight: the lock is held by run-2"}]


def test_a_late_clean_up_after_a_commit_spares_an_attempt_written_after_a_rewind_back_to_its_start(world):
    # GIVEN commit 2 from a start, then a rewind back to that start and a new run's attempt there
    assert step(world, "run-1", 5)["outcome"] == "processed"
    committed_2 = world["protocol"].store.read_output(T, 2).data
    rewind(world, 1)
    in_flight = process_only(world, "run-2")["object"]
    # WHEN the clean-up after commit 2 comes only now (its task was slow), THEN it deletes nothing
    done = sink_gc.collect_batch(world["protocol"], T, 2, world["sink"], committed_2)
    assert done.deleted == []
    assert {name for name, _ in world["sink"].attempts()} >= {in_flight, committed_2["object"]}


def test_an_override_record_is_not_taken_for_a_committed_batch(world):
    # GIVEN a topic whose checkpoint an operator set before any commit, and an orphan at the origin
    protocol = world["protocol"]
    lease = protocol.acquire(T, "operator-alice-1", 30).lease
    protocol.set_checkpoint(lease, position="part-0.jsonl#3", actor="alice", reason="skip the first three")
    protocol.release(lease)
    foreign = orphan(world, "origin")
    # THEN no commit starts at the origin: the orphan is kept, and no batch of seq 1 is cleaned up after
    kept = collect(world).kept
    assert kept == [{"object": foreign, "reason": sink_gc.UNKNOWN_STEM}]
    assert sink_gc.collect_batch(protocol, T, 1, world["sink"]).deleted == []


def committed_live(world) -> set[str]:
    return {r.data["object"] for r in world["protocol"].outputs(T) if r.live and r.data.get("object")}
