"""Backfills: a bounded read of a ``files`` source, the definition's one transaction, and the tasks replaying
a range into another sink under a state of their own, never touching the topic's (decision 0009)."""

from __future__ import annotations

import gzip
import itertools
import json

import pytest

from leanops import tasks
from leanops.data.files import MARKER, FilesSource
from leanops.data.positions import parse_position
from leanops.errors import ConfigError, InvalidInput, SinkClaimed
from leanops.protocol import Backfill, Protocol, TopicRef
from leanops.protocol.memory import InMemoryStore
from tests.support.clock import FakeClock
from tests.support.worlds import run, three_part_topic

#: Objects by key: a record's value, ``None`` for a blank line, ``"bad"`` for a line that is not JSON. Keys
#: with ``#`` in them and gzip objects (which make no resume hint) included; ``b.jsonl`` is empty.
OBJECTS = {
    "a#1.jsonl": [0, "bad", None, 1],
    "a#1.jsonl.gz": [2, None, 3, "bad", 4],
    "a.jsonl": [5, 6, None, 7, 8, 9],
    "b.jsonl": [],
    "c#.jsonl.gz": [None, 10, 11],
}


def positions() -> list[str]:
    """Every position worth bounding at: each line offset of each object (and one past), keys that do not
    exist between and after them."""
    found = [f"{key}#{n}" for key, lines in OBJECTS.items() for n in range(len(lines) + 2)]
    return [*found, "a#0#3", "a#1.jsonl#x#0", "bb.jsonl#3", "z.jsonl#0"]


def at(position: str) -> tuple[str, int]:
    key, _, offset = position.rpartition("#")
    return key, int(offset)


def oracle(after: str | None, until: str) -> list[int]:
    """The records strictly after ``after`` up to ``until``: lines at (key, line) with after <= it < until."""
    low, high = (at(after) if after else ("", 0)), at(until)
    return [
        value
        for key in sorted(OBJECTS)
        for index, value in enumerate(OBJECTS[key])
        if value not in (None, "bad") and low <= (key, index) < high
    ]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bounded")
    for key, lines in OBJECTS.items():
        text = "".join(
            "\n" if v is None else "{not json\n" if v == "bad" else json.dumps({"v": v}) + "\n" for v in lines
        ).encode()
        (root / key).write_bytes(gzip.compress(text) if key.endswith(".gz") else text)
    return root


@pytest.mark.parametrize("limit", [1, 2, 3, 100])
def test_a_bounded_read_returns_exactly_the_records_up_to_its_bound(folder, limit):
    for after, until in itertools.product([None, *positions()], positions()):
        source = FilesSource(str(folder), until=until)
        expected = oracle(after, until)
        got, position, resume, reads = [], after, None, 0
        while True:  # batch after batch, each resuming at the last one's end with its hint, as runs do
            batch = source.read(position, limit, resume=resume)
            got += [r["v"] for r in batch.records]
            position = batch.end if batch.end is not None else position
            resume, reads = batch.resume, reads + 1
            assert reads < 80, (after, until)
            if not batch.more:
                break
        assert got == expected, (after, until, limit)
        # the cheap look never misses a record (a later object holding only blank lines may count as
        # one), and finds nothing once a read reached the bound
        assert source.has_records_after(after) or not expected, (after, until)
        assert not source.has_records_after(position), (after, until, position)
        assert not source.has_records_after(position, resume), (
            after,
            until,
            position,
            resume,
        )  # the hint kept
        if expected:  # a read that consumed anything never ends past the bound
            assert at(position) <= at(until), (after, until, position)


def test_an_unbounded_read_is_unchanged(folder):
    source = FilesSource(str(folder))
    batch = source.read(None, 100)
    assert [r["v"] for r in batch.records] == list(range(12)) and batch.end == "c#.jsonl.gz#3"


# --- the definition -----------------------------------------------------------------------------------


@pytest.fixture
def protocol():
    return Protocol(InMemoryStore(), clock=FakeClock())


def define(protocol, sink="/lake/replay", start="a.jsonl#1", end="c.jsonl#3", **extra):
    return protocol.define_backfill(
        TopicRef("t"),
        start=start,
        end=end,
        sink=sink,
        format="jsonl",
        compression="none",
        actor=extra.get("actor", "ops@host"),
        reason=extra.get("reason", "reprocess"),
        order=parse_position,  # a files source's positions: <key>#<offset>, parsed
    )


def test_a_definition_starts_the_backfill_state_at_its_start_with_an_audit_record(protocol):
    backfill, created = define(protocol)
    assert (
        created
        and backfill.id == Backfill.id_for("t", "/lake/replay")
        and backfill.ref.partition == backfill.id
    )
    checkpoint = protocol.read_checkpoint(backfill.ref)
    assert (checkpoint.position, checkpoint.seq) == ("a.jsonl#1", 1)
    assert protocol.read_checkpoint(TopicRef("t")).seq == 0  # the topic's own state: untouched
    [record] = protocol.audit(TopicRef("t"))
    assert record.action == "backfill" and record.after["backfill"] == backfill.id
    assert [b.id for b in protocol.backfills(TopicRef("t"))] == [backfill.id]
    # the same sink again: nothing written, the definition on record returned
    again, created = define(protocol, start="a.jsonl#2", reason="other")
    assert not created and again == backfill
    assert len(list(protocol.audit(TopicRef("t")))) == 1


def test_a_backfill_from_the_beginning_has_no_checkpoint_yet(protocol):
    backfill, _ = define(protocol, start=None)
    assert protocol.read_checkpoint(backfill.ref).seq == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"start": "c.jsonl#3"}, "not before its end"),
        ({"start": "c.jsonl#4"}, "not before its end"),
        ({"end": "no-offset"}, "invalid position"),
        ({"start": "no-offset"}, "invalid position"),
        ({"end": ""}, "invalid backfill position"),
        ({"reason": " "}, "invalid reason"),
    ],
)
def test_bad_definitions_are_refused_and_write_nothing(protocol, change, message):
    with pytest.raises(InvalidInput, match=message):
        define(protocol, **change)
    assert list(protocol.backfills(TopicRef("t"))) == [] and list(protocol.audit(TopicRef("t"))) == []


# --- the tasks ----------------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path):
    return three_part_topic(tmp_path, batch_size=3, max_batches_per_run=2)


def committed(world, topic: TopicRef, folder) -> list[int]:
    """The records in the objects the state's live output records name."""
    names = [o.data["object"] for o in world["protocol"].outputs(topic) if o.live and o.data.get("object")]
    return sorted(
        json.loads(line)["i"] for name in names for line in (folder / name).read_text().splitlines()
    )


def test_a_backfill_replays_its_range_into_its_own_sink_and_never_moves_the_topics_state(world):
    protocol, live = world["protocol"], TopicRef("t")
    assert run(world, "live-1")["records"] == 6  # the topic's own run, stopped at its batch cap
    before = protocol.read_checkpoint(live)
    backfill, _ = protocol.define_backfill(
        live, start="part-0.jsonl#2", end="part-2.jsonl#1", sink=str(world["root"] / "replay"),
        format="jsonl", compression="none", actor="ops", reason="reprocess",
    )  # fmt: skip
    runs = []
    while not runs or runs[-1]["outcome"] == "processed":
        runs.append(run(world, f"bf-{len(runs)}", backfill=backfill.id))
    assert [r["outcome"] for r in runs] == ["processed", "processed", "up_to_date"]
    assert committed(world, backfill.ref, world["root"] / "replay") == list(range(2, 11))
    assert protocol.read_checkpoint(backfill.ref).position == "part-2.jsonl#1"
    assert protocol.read_checkpoint(live) == before
    # the topic goes on from where it was, into its own sink only
    while run(world, f"live-{protocol.read_checkpoint(live).seq}")["outcome"] == "processed":
        pass
    assert committed(world, live, world["root"] / "out") == list(range(15))
    markers = {json.loads((world["root"] / d / MARKER).read_text())["topic"] for d in ("out", "replay")}
    assert markers == {"t", str(backfill.ref)}


def test_a_run_of_an_unknown_backfill_fails_before_taking_any_lock(world):
    with pytest.raises(ConfigError, match="no backfill 'bf-0123456789ab'"):
        run(world, "x", backfill="bf-0123456789ab")
    store = world["protocol"].store
    assert store.locks == {} and store.runs == {}


def test_a_backfill_into_the_topics_own_sink_is_refused_before_it_writes(world):
    backfill, _ = world["protocol"].define_backfill(
        TopicRef("t"), start=None, end="part-1.jsonl#0", sink=str(world["root"] / "out"),
        format="jsonl", compression="none", actor="ops", reason="mistake",
    )  # fmt: skip
    run(world, "live")  # the topic's run claims its sink first
    with pytest.raises(SinkClaimed, match="every topic and backfill writes a sink of its own"):
        run(world, "bf", backfill=backfill.id)
    assert world["protocol"].read_checkpoint(backfill.ref).seq == 0
    assert world["protocol"].status(backfill.ref).lock_status.value == "free"


def test_run_inputs_naming_a_backfill_and_another_partition_are_refused():
    with pytest.raises(InvalidInput, match="partition"):
        TopicRef.from_input({"topic": "t", "partition": "p", "backfill": "bf-0123456789ab"})
    with pytest.raises(InvalidInput, match="invalid backfill id"):
        TopicRef.from_input({"topic": "t", "backfill": "../x"})
    assert TopicRef.from_input({"topic": "t", "backfill": "bf-0123456789ab"}).key == "topic#t/bf-0123456789ab"


def foreign_object(folder, stem: str):
    """An object of topic t that this state never wrote, in a sink without a marker."""
    folder.mkdir(exist_ok=True)
    path = folder / f"t.{stem}.1-aaaaaaaa-bbbbbbbb.jsonl"
    path.write_text(json.dumps({"i": 999}) + "\n")
    return path


@pytest.mark.parametrize("start", [None, "part-0.jsonl#2"])
def test_a_backfill_never_adopts_a_sink_holding_output_it_did_not_write(world, start):
    """A backfill's start is an override (seq 1), not a commit: a sink without a marker that holds the
    topic's objects is refused, whatever the start, and its objects are kept."""
    replay = world["root"] / "archive"
    foreign = foreign_object(replay, "part-0.jsonl.0000000002" if start else "origin")
    backfill, _ = world["protocol"].define_backfill(
        TopicRef("t"), start=start, end="part-2.jsonl#1", sink=str(replay),
        format="jsonl", compression="none", actor="ops", reason="r",
    )  # fmt: skip
    with pytest.raises(SinkClaimed, match="never committed a batch"):
        run(world, "bf", backfill=backfill.id)
    assert foreign.exists() and not (replay / MARKER).exists()


def test_a_topic_whose_checkpoint_an_operator_set_has_committed_no_batch_either(world):
    protocol, live = world["protocol"], TopicRef("t")
    foreign = foreign_object(world["root"] / "out", "part-0.jsonl.0000000002")
    owner = "operator:ops"
    lease = protocol.acquire(live, owner, 60, operator=True).lease
    protocol.set_checkpoint(lease, position="part-0.jsonl#2", actor="ops", reason="skip")
    protocol.release(lease)
    assert not protocol.has_committed_batch(live)
    with pytest.raises(SinkClaimed, match="never committed a batch"):
        run(world, "live")
    assert foreign.exists()


def test_release_after_failure_frees_a_backfills_lock_from_its_input_or_its_run_state(world):
    protocol = world["protocol"]
    backfill, _ = protocol.define_backfill(
        TopicRef("t"), start=None, end="part-2.jsonl#1", sink=str(world["root"] / "replay"),
        format="jsonl", compression="none", actor="ops", reason="r",
    )  # fmt: skip
    live_owner = "arn:aws:states:us-east-1:1:execution:m:live"
    protocol.acquire(TopicRef("t"), live_owner, 60)
    # Acquire took the backfill's lock, then died: the Catch hands ReleaseAfterFailure the execution input
    owner = "arn:aws:states:us-east-1:1:execution:m:bf"
    protocol.acquire(backfill.ref, owner, 60)
    failed = {"topic": "t", "backfill": backfill.id, "error": {"Error": "States.Timeout"}}
    assert tasks.release_after_failure({"state": failed, "owner": owner}, protocol) == {"released": True}
    # a later task failed: it hands over the run state (the definition under backfill)
    event = {"input": {"topic": "t", "backfill": backfill.id}, "execution": owner, "execution_name": "bf"}
    state = {**tasks.acquire(event, protocol, world["topics"]).to_json(), "error": {"Error": "Boom"}}
    assert tasks.release_after_failure({"state": state, "owner": owner}, protocol) == {"released": True}
    assert protocol.status(backfill.ref).lock_status.value == "free"
    assert protocol.status(TopicRef("t")).lock.owner == live_owner  # the topic's lock: untouched
