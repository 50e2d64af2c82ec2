"""The four tasks as plain functions, driven the way the state machine drives them, on the in-memory store."""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import replace

import pytest

from leanops import sink_gc, tasks
from leanops.batch import passthrough, run_batch
from leanops.config import parse_topics
from leanops.data.files import MARKER, FilesSink, FilesSource
from leanops.data.late import late_objects
from leanops.data.storage import LocalStore
from leanops.errors import ConfigError, LockLost
from leanops.heartbeat import Heartbeat
from leanops.protocol import Protocol, Settlement
from leanops.protocol.memory import InMemoryStore
from tests.support.clock import FakeClock
from tests.support.worlds import run, start, three_part_topic


@pytest.fixture
def world(tmp_path):
    return three_part_topic(tmp_path)


def committed_objects(world) -> list[str]:
    """The committed output: the sink objects that live (not superseded) commits name (design §4)."""
    outputs = world["protocol"].outputs(tasks.TopicRef("t"))
    return [o.data["object"] for o in outputs if o.live and o.data["object"]]


def output_records(world):
    """The records of the committed output, sorted; also checks the sink holds nothing else."""
    committed = committed_objects(world)
    assert sorted(p.name for p in world["out"].glob("t.*")) == sorted(committed)
    return sorted(
        json.loads(line)["i"] for name in committed for line in (world["out"] / name).read_text().splitlines()
    )


def set_topic(world, **settings):
    topic = world["topics"].topics["t"]
    world["topics"].topics["t"] = replace(topic, **settings)


def test_a_run_processes_the_backlog_in_batches_then_is_up_to_date(world):
    done = run(world)
    assert (done["outcome"], done["batches"], done["records"], done["released"]) == ("processed", 4, 15, True)
    assert done["checkpoint"]["position"] == "part-2.jsonl#5"
    assert output_records(world) == list(range(15))
    again = run(world, "exec-2")
    assert (again["outcome"], again["batches"], again["released"]) == ("up_to_date", 0, True)
    assert world["protocol"].status(tasks.TopicRef("t")).lock_status.value == "free"


def test_the_run_state_carries_the_sources_resume_hint_from_one_batch_to_the_next(world, monkeypatch):
    from leanops.data.files import FilesSource

    hints = []
    read = FilesSource.read

    def spy(self, after, limit, should_stop=lambda: False, resume=None, cut=None):
        hints.append((after, resume))
        return read(self, after, limit, should_stop, resume, cut)

    monkeypatch.setattr(FilesSource, "read", spy)
    done = run(world)  # batches of 4 over objects of 5 lines: every other batch ends inside an object
    assert output_records(world) == list(range(15))

    def start_of(part: int, line: int) -> int:  # the byte where a line of the fixture's objects starts
        return sum(len(json.dumps({"i": part * 5 + i}) + "\n") for i in range(line))

    def hint(part: int, line: int) -> dict:  # and the version of the object it was read from
        info = LocalStore(world["root"] / "in").stat(f"part-{part}.jsonl")
        assert info.size == start_of(part, 5)
        return {
            "position": f"part-{part}.jsonl#{line}",
            "byte": start_of(part, line),
            "size": info.size,
            "version": info.version,
        }

    assert hints == [
        (None, None),
        ("part-0.jsonl#4", hint(0, 4)),
        ("part-1.jsonl#3", hint(1, 3)),
        ("part-2.jsonl#2", hint(2, 2)),
    ]
    # the last batch ended at the end of the source: its hint is where a next line would start
    assert done["resume"] == hint(2, 5)


def test_the_batch_cap_ends_a_run_that_the_next_run_continues(world):
    set_topic(world, max_batches_per_run=2)
    first = run(world)
    assert (first["batches"], first["records"], first["checkpoint"]["position"]) == (2, 8, "part-1.jsonl#3")
    second = run(world, "exec-2")
    assert (second["batches"], second["records"]) == (2, 7)
    assert output_records(world) == list(range(15))


def test_a_duplicate_start_of_the_same_scheduled_time_does_nothing(world):
    first = start(world, "exec-1", scheduled_time="2026-11-25T10:00:00Z")
    duplicate = start(world, "exec-2", scheduled_time="2026-11-25T10:00:00Z")
    assert first["outcome"] == "acquired" and duplicate["outcome"] == "duplicate"


def test_a_locked_topic_is_skipped(world):
    start(world, "exec-1")
    assert start(world, "exec-2")["outcome"] == "skipped_locked"


def test_a_paused_topic_takes_nothing_and_runs_again_once_resumed(world):
    topic = tasks.TopicRef("t")
    world["protocol"].pause(topic, actor="alice", reason="source re-landing")
    paused = start(world, "exec-1")
    # nothing acquired, so nothing for the state machine to release: it ends at once
    assert (paused["outcome"], paused["released"], paused["lease"]) == ("paused", True, None)
    assert world["protocol"].status(topic).lock.owner is None and committed_objects(world) == []
    world["protocol"].resume(topic, actor="alice", reason="re-landed")
    assert run(world, "exec-2")["records"] == 15


def test_a_rewind_reprocesses_its_batches_and_the_committed_output_stays_exactly_once(world):
    topic = tasks.TopicRef("t")
    assert run(world, "exec-1")["batches"] == 4
    # WHEN an operator rewinds to where the second batch ended (part-1.jsonl#3), and a run follows
    lease = world["protocol"].acquire(topic, "operator-alice-1", 30).lease
    world["protocol"].rewind_checkpoint(lease, to_seq=2, actor="alice", reason="processor fix")
    world["protocol"].release(lease)
    again = run(world, "exec-2")
    # THEN it read the last two batches again, and after gc every record is committed once
    assert (again["batches"], again["records"]) == (2, 7)
    sink = FilesSink(str(world["out"]), "t")
    stem_of = FilesSource(world["topics"].topic("t").source.uri).stem
    assert len(sink_gc.collect_topic(world["protocol"], topic, sink, stem_of).deleted) == 1
    assert output_records(world) == list(range(15))


def test_the_deadline_cuts_the_batch_and_the_run_goes_on(world):
    # GIVEN a Lambda whose remaining time drops below the reserve after 2 records per batch
    set_topic(world, isolation="none")  # counts the calls of remaining_ms: no isolated processor's own
    calls = {"n": 0}

    def remaining_ms():
        calls["n"] += 1
        return 60_000 if calls["n"] % 3 == 1 else 1_000  # first call sets the reserve at 10 s

    done = run(world, remaining_ms=remaining_ms)
    # THEN every batch committed what it read, and all records arrived exactly once
    assert done["batches"] > 4 and done["outcome"] == "processed"
    assert output_records(world) == list(range(15))


def test_heartbeat_renews_and_reports_a_takeover_before_the_sink_write(world):
    # GIVEN a run holding the lock, with a heartbeat beating often
    state = tasks.RunState.from_json(start(world, "exec-1"))
    protocol, clock = world["protocol"], world["clock"]
    with Heartbeat(protocol, state.lease, 30, interval_seconds=0.001) as heartbeat:
        # WHEN its lease lapses while it is paused and another run takes over
        clock.advance(31_000 + 2_001)
        assert start(world, "exec-2")["outcome"] == "acquired"
        assert heartbeat.lost_event.wait(5)
        # THEN the check before the sink write stops it, so it writes nothing
        with pytest.raises(LockLost):
            run_batch(
                world["topics"].topic("t"),
                None,
                passthrough,
                fence=1,
                owner="exec-1",
                logger=None,
                before_write=heartbeat.check,
            )
    assert list(FilesSink(str(world["out"]), "t").attempts()) == []


def test_release_after_failure_frees_only_the_failed_executions_lock(world):
    start(world, "exec-1")
    assert tasks.release_after_failure({"state": {"topic": "t"}, "owner": "exec-2"}, world["protocol"]) == {
        "released": False
    }
    assert tasks.release_after_failure({"state": {"topic": "t"}, "owner": "exec-1"}, world["protocol"]) == {
        "released": True
    }
    assert tasks.release_after_failure({"state": {}, "owner": "exec-1"}, world["protocol"]) == {
        "released": False
    }


def test_a_task_that_starts_past_its_deadline_takes_one_record_per_batch(world):
    first = run(world, remaining_ms=lambda: 0)
    assert (first["batches"], first["records"]) == (10, 10)  # the batch cap ends the run
    second = run(world, "exec-2", remaining_ms=lambda: 0)
    assert (second["batches"], second["records"]) == (5, 5)
    assert output_records(world) == list(range(15))


def test_metrics_carry_the_topic_dimension_the_alarms_select_on(world):
    from leanops.observability import metrics

    start(world, "exec-1")
    assert metrics.dimension_set.get("topic") == "t"
    metrics.clear_metrics()


def test_malformed_lines_and_rejected_records_go_to_one_quarantine_object_per_batch(world, tmp_path):
    # GIVEN an object with a broken line, a line that is not an object, and a record the processor rejects
    (tmp_path / "in" / "part-3.jsonl").write_text('{"i": 15}\n{broken\n[1]\n{"i": 16, "bad": true}\n')
    set_topic(world, processor="tests.support.processors:reject_bad", batch_size=100)
    done = run(world)
    # THEN the batch commits; its valid records are output and the three others are quarantined
    assert done["outcome"] == "processed" and output_records(world) == list(range(16))
    [batch] = [o.data for o in world["protocol"].outputs(tasks.TopicRef("t"))]
    assert (batch["records"], batch["written"], batch["quarantined"]) == (19, 16, 3)
    quarantine = [json.loads(line) for line in (world["out"] / batch["quarantine"]).read_text().splitlines()]
    assert [(q["source_key"], q["line"], q["reason"].split(":")[0]) for q in quarantine] == [
        ("part-3.jsonl", 2, "not valid JSON"),
        ("part-3.jsonl", 3, "not a JSON object"),
        ("part-3.jsonl", 4, "bad flag set"),
    ]
    assert quarantine[2]["raw"] == {"i": 16, "bad": True}


def test_on_malformed_fail_fails_the_batch_without_moving_the_checkpoint(world, tmp_path):
    from leanops.errors import MalformedInput

    (tmp_path / "in" / "part-3.jsonl").write_text('{"i": 15}\n{broken\n')
    set_topic(world, on_malformed="fail", batch_size=100)
    state = start(world)
    with pytest.raises(MalformedInput, match=r"batch origin: source_key=part-3.jsonl line=2: not valid JSON"):
        tasks.process(tasks.RunState.from_json(state), world["protocol"], world["topics"], lambda: 60_000)
    assert world["protocol"].read_checkpoint(tasks.TopicRef("t")).position is None
    assert list(FilesSink(str(world["out"]), "t").attempts()) == []


def test_an_unreadable_object_fails_the_batch_and_the_next_run_resumes_from_the_same_checkpoint(
    world, tmp_path
):
    from leanops.errors import SourceError

    # GIVEN a committed first batch, then an object that is not gzip though named so
    set_topic(world, batch_size=15)
    assert run(world)["checkpoint"]["position"] == "part-2.jsonl#5"
    (tmp_path / "in" / "part-3.jsonl.gz").write_bytes(b"not gzip at all\n")
    (tmp_path / "in" / "part-4.jsonl").write_text('{"i": 99}\n')
    # WHEN the next run reads it, THEN the batch fails naming the object, and nothing moves or stays
    state = start(world, "exec-2")
    with pytest.raises(SourceError, match=r"part-3\.jsonl\.gz"):
        tasks.process(tasks.RunState.from_json(state), world["protocol"], world["topics"], lambda: 60_000)
    assert world["protocol"].read_checkpoint(tasks.TopicRef("t")).position == "part-2.jsonl#5"
    assert sorted(p.name for p in world["out"].glob("t.*")) == committed_objects(world)
    # AND once the object is fixed, a later run takes it from there
    tasks.release_after_failure({"state": state, "owner": "exec-2"}, world["protocol"])
    (tmp_path / "in" / "part-3.jsonl.gz").write_bytes(gzip.compress(b'{"i": 15}\n'))
    run(world, "exec-3")
    assert output_records(world) == [*range(16), 99]


def test_last_ingested_ts_is_the_newest_timestamp_field(world, tmp_path):
    (tmp_path / "in" / "part-3.jsonl").write_text(
        '{"i": 15, "ts": 1700000100}\n{"i": 16, "ts": "2023-11-14T22:16:40Z"}\n{"i": 17, "ts": null}\n'
    )
    set_topic(world, timestamp_field="ts", batch_size=100)
    done = run(world)
    assert done["checkpoint"]["last_ingested_ts"] == 1700000200.0  # the ISO one is the newer


def test_a_crash_between_sink_write_and_commit_then_a_run_cutting_elsewhere(world):
    # GIVEN a run whose first batch (4 records, ending inside part-0) was written but never committed
    state = start(world, "exec-1")
    crashed = tasks.process(
        tasks.RunState.from_json(state), world["protocol"], world["topics"], lambda: 60_000
    )
    assert crashed.end == "part-0.jsonl#4" and (world["out"] / crashed.object).exists()
    # WHEN its lease expires and a run with another batch size takes over
    world["clock"].advance(30_000 + 2_001)
    set_topic(world, batch_size=3)
    done = run(world, "exec-2")
    # THEN every record is committed exactly once, and the crashed attempt's object is gone
    assert done["outcome"] == "processed" and output_records(world) == list(range(15))
    assert not (world["out"] / crashed.object).exists()
    # AND the batches resumed inside objects: part-0 was cut at 3
    assert [o.data["end"] for o in world["protocol"].outputs(tasks.TopicRef("t"))][:2] == [
        "part-0.jsonl#3",
        "part-1.jsonl#1",
    ]


def test_late_objects_are_reported_by_the_next_run(world, tmp_path):
    from leanops.observability import metrics

    run(world)
    # GIVEN an object landing with a key that sorts before the checkpoint (part-2.jsonl#5)
    (tmp_path / "in" / "part-1a.jsonl").write_text('{"i": 99}\n')
    config = world["topics"].topic("t")
    checkpoint = world["protocol"].read_checkpoint(tasks.TopicRef("t")).position
    assert late_objects(world["protocol"], tasks.TopicRef("t"), config, checkpoint) == ["part-1a.jsonl"]
    # THEN the next run reports it (metric) and is otherwise up to date
    metrics.clear_metrics()
    assert run(world, "exec-2")["outcome"] == "up_to_date"
    assert metrics.metric_set["LateObjects"]["Value"] == [1.0]
    metrics.clear_metrics()
    # AND a look-back that does not reach back to it, or none, does not see it
    assert (
        late_objects(
            world["protocol"], tasks.TopicRef("t"), replace(config, late_lookback_batches=1), checkpoint
        )
        == []
    )
    assert (
        late_objects(
            world["protocol"], tasks.TopicRef("t"), replace(config, late_lookback_batches=0), checkpoint
        )
        == []
    )


def test_a_missing_source_directory_fails_the_run_and_frees_the_lock(world, tmp_path):
    from leanops.errors import ConfigError

    set_topic(world, source=replace(world["topics"].topic("t").source, uri=str(tmp_path / "gone")))
    with pytest.raises(ConfigError, match="gone does not exist"):
        start(world)
    assert world["protocol"].status(tasks.TopicRef("t")).lock_status.value == "free"


def test_a_topic_over_s3_source_and_sink_on_moto(tmp_path):
    import gzip

    import boto3
    from moto import mock_aws

    with mock_aws():
        # GIVEN a bucket with a plain, a gzip and a malformed-line object, and a gzip JSON Lines sink on S3
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="landing")
        s3.put_object(Bucket="landing", Key="in/d=1/a.jsonl", Body=b'{"i": 0}\n{"i": 1}\n{"i": 2}\n')
        s3.put_object(
            Bucket="landing", Key="in/d=1/b.jsonl.gz", Body=gzip.compress(b'{"i": 3}\nnope\n{"i": 4}\n')
        )
        document = {
            "topics": {
                "t": {
                    "source": {"type": "files", "uri": "s3://landing/in"},
                    "sink": {"type": "files", "uri": "s3://landing/out", "compression": "gzip"},
                    "batch_size": 2,
                }
            }
        }
        world = {
            "topics": parse_topics(document, tmp_path / "topics.yaml"),
            "protocol": Protocol(InMemoryStore(), clock=FakeClock()),
        }
        # WHEN the topic runs
        done = run(world)
        # THEN every record is committed once, in batches that cut inside the objects
        assert (done["outcome"], done["checkpoint"]["position"]) == ("processed", "d=1/b.jsonl.gz#3")
        outputs = [o.data for o in world["protocol"].outputs(tasks.TopicRef("t"))]
        records = [
            json.loads(line)["i"]
            for o in outputs
            if o["object"]
            for line in gzip.decompress(
                s3.get_object(Bucket="landing", Key=f"out/{o['object']}")["Body"].read()
            ).splitlines()
        ]
        assert records == [0, 1, 2, 3, 4]
        [quarantine] = [o["quarantine"] for o in outputs if o["quarantine"]]
        quarantined = json.loads(s3.get_object(Bucket="landing", Key=f"out/{quarantine}")["Body"].read())
        assert (quarantined["source_key"], quarantined["line"], quarantined["raw"]) == (
            "d=1/b.jsonl.gz",
            2,
            "nope",
        )
        listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="landing", Prefix="out/")["Contents"])
        named = [f"out/{o[k]}" for o in outputs for k in ("object", "quarantine") if o[k]]
        assert listed == sorted([*named, f"out/{MARKER}"])


def test_the_heartbeat_renews_each_lease_well_before_it_ends(world):
    # GIVEN a lease of 30 s and a heartbeat whose sleeps move the clock instead of waiting
    state = tasks.RunState.from_json(start(world, "exec-1"))
    protocol, clock = world["protocol"], world["clock"]
    renewals: list[tuple[int, int]] = []  # (when, the expiry of the lease being renewed)
    renew = protocol.renew

    def recording_renew(lease, lease_seconds):
        renewals.append((clock(), lease.expires_at_ms))
        return renew(lease, lease_seconds)

    protocol.renew = recording_renew

    def sleep(seconds: float) -> bool:
        clock.advance(int(seconds * 1000))
        return len(renewals) >= 6  # True ends the beating

    with Heartbeat(protocol, state.lease, 30, wait=sleep) as heartbeat:
        heartbeat._thread.join(5)
    # THEN every renewal came while the lease it renewed had more than the skew margin left
    assert len(renewals) == 6
    assert all(expires - now > protocol.skew_margin_ms for now, expires in renewals), renewals


def test_the_process_task_renews_its_lease_while_the_processor_works(world, monkeypatch):
    # GIVEN a topic with a short lease, and a processor that works until it sees the lease renewed
    set_topic(world, lease_seconds=3, isolation="none")  # the processor is a closure: in this process
    protocol = Protocol(world["protocol"].store)  # the wall clock: the heartbeat beats in real time
    state = tasks.RunState.from_json(start(world, "exec-1"))
    assert state.lease is not None
    acquired_until = state.lease.expires_at_ms

    def processor(records, ctx):
        deadline = time.monotonic() + 60  # bounds a broken heartbeat; a working one beats every second
        while protocol.status(tasks.TopicRef("t")).lock.lease_expires_at_ms == acquired_until:
            assert time.monotonic() < deadline, "the lease was never renewed while the processor worked"
            time.sleep(0.05)
        return records

    monkeypatch.setattr(tasks, "load_processor", lambda spec, folder: processor)
    # WHEN the batch runs, THEN it completes: the heartbeat renewed the lease meanwhile
    batch = tasks.process(state, protocol, world["topics"], lambda: 60_000)
    assert batch.records == 4


def test_settlement_is_right_when_the_commit_lands_between_its_reads(world):
    # GIVEN a run that processed its batch and is about to commit (it holds the lock)
    protocol = world["protocol"]
    state = start(world, "exec-1")
    batch = tasks.process(tasks.RunState.from_json(state), protocol, world["topics"], lambda: 60_000)
    run_state = tasks.RunState.from_json(state)
    assert run_state.lease is not None
    store, reads = protocol.store, []

    def after_first_read(read):
        def wrapped(topic):
            result = read(topic)
            reads.append(read.__name__)
            if len(reads) == 1:  # WHEN the commit (with release) lands right after settlement's first read
                tasks.advance(run_state, batch.to_json(), protocol, world["topics"])
            return result

        return wrapped

    store.read_lock = after_first_read(store.read_lock)
    store.read_checkpoint = after_first_read(store.read_checkpoint)
    settled = protocol.settlement(run_state.lease, run_state.checkpoint, batch.attempt)
    # THEN it is seen as landed (the lock is read first; read the other way round, it would look lost)
    assert reads[0] == "read_lock" and settled is Settlement.LANDED


def test_failed_runs_are_recorded_until_a_run_ends_well(world):
    from leanopsctl.cli.pipeline import _status_json

    protocol = world["protocol"]

    def fail_run(execution: str) -> None:
        state = start(world, execution)
        error = {"Error": "SensorFault", "Cause": "batch origin: sensor calibration missing"}
        tasks.release_after_failure({"state": {**state, "error": error}, "owner": execution}, protocol)

    # GIVEN two runs in a row that failed
    fail_run("exec-1")
    fail_run("exec-2")
    # THEN status shows the last run failed, why, and that the topic is failing (two in a row)
    last = _status_json(protocol.status(tasks.TopicRef("t")), protocol.clock())["last_run"]
    assert (last["outcome"], last["error"], last["consecutive_failures"], last["failing"]) == (
        "failed",
        "SensorFault",
        2,
        True,
    )
    assert (
        last["cause"] == "batch origin: sensor calibration missing" and last["failed_execution"] == "exec-2"
    )
    # WHEN a run ends well, THEN the streak ends and the outcome is the run's
    assert run(world, "exec-3")["outcome"] == "processed"
    last = _status_json(protocol.status(tasks.TopicRef("t")), protocol.clock())["last_run"]
    assert (last["outcome"], last["consecutive_failures"], last["failing"], last["error"]) == (
        "processed",
        0,
        False,
        None,
    )


def test_a_source_key_too_long_for_a_sink_name_still_runs(world, tmp_path):
    # GIVEN an object whose key would make a sink name over the file system's 255 bytes
    long_key = "d=" + "x" * 240 + ".jsonl"
    (tmp_path / "in" / long_key).write_text('{"i": 100}\n{"i": 101}\n{"i": 102}\n{"i": 103}\n{"i": 104}\n')
    # WHEN the topic runs, THEN every batch is written and committed (fitted names), then it is up to date
    assert run(world)["records"] == 20
    assert run(world, "exec-2")["outcome"] == "up_to_date"
    names = [r.data["object"] for r in world["protocol"].outputs(tasks.TopicRef("t"))]
    assert all(len(name.encode()) <= 255 and (world["out"] / name).is_file() for name in names)


def test_a_sink_without_a_marker_is_adopted_only_by_a_state_that_committed_the_topic(world):
    from leanops.data.files import MARKER
    from leanops.errors import SinkClaimed

    # GIVEN a topic that ran, and whose sink then lost its marker (written before markers, or removed)
    assert run(world)["outcome"] == "processed"
    (world["out"] / MARKER).unlink()
    before = sorted(p.name for p in world["out"].iterdir())
    # WHEN another state that never committed a batch runs it, THEN it refuses the sink, changing nothing
    other = Protocol(InMemoryStore(), clock=world["clock"])
    event = {"input": {"topic": "t"}, "execution": "stranger", "execution_name": "stranger"}
    with pytest.raises(SinkClaimed, match="never committed a batch"):
        tasks.acquire(event, other, world["topics"])
    assert sorted(p.name for p in world["out"].iterdir()) == before
    # AND the state that committed it (in a new process: claims are cached per process) adopts it again
    tasks._claimed_sinks.clear()
    assert run(world, "exec-2")["outcome"] == "up_to_date" and (world["out"] / MARKER).is_file()


def test_a_corrupt_marker_is_named_and_nothing_is_written(world):
    from leanops.data.files import MARKER
    from leanops.errors import SinkClaimed

    world["out"].mkdir()
    (world["out"] / MARKER).write_text("[]")
    with pytest.raises(SinkClaimed, match="is not a leanops marker"):
        start(world)
    assert sorted(p.name for p in world["out"].iterdir()) == [MARKER]


def test_a_run_naming_a_partition_the_topic_does_not_declare_is_refused_and_leaves_no_state(world):
    with pytest.raises(ConfigError, match="topic t has no partition 'p' \\(partitions: none\\)"):
        start(world, partition="p")
    assert world["protocol"].status(tasks.TopicRef("t")).lock is None
