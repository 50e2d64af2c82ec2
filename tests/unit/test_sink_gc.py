"""leanops.sink_gc: which objects ``leanops gc`` deletes and which it keeps, on the in-memory store."""

from __future__ import annotations

import json

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
    assert done.kept == [{"object": foreign, "reason": "no commit of this topic starts at this stem"}]
    assert {name for name, _ in world["sink"].attempts()} == committed(world) | {foreign, settled}
