"""Processor isolation (decision 0012): the processor runs in a child process that cannot reach the state
table, another topic's sink or the parent's leanops, and fails a batch cleanly however it misbehaves.

Each guard has a contrast: the same processor with ``isolation: none`` does reach what isolation keeps from
it, so these tests fail without the isolation.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from leanopsctl.local import iam

from leanops import isolation
from leanops.batch import ProcessorContext, load_processor, run_batch
from leanops.config import TopicConfig, parse_topics
from leanops.data.files import FilesSink
from leanops.errors import ConfigError, MalformedInput, ProcessorError
from leanops.isolation import IsolatedProcessor, session_policy
from leanops.protocol.service import Protocol

PR_GET_DUMPABLE = 3
PROCESSORS = '''
import json, os, time
from pathlib import Path

HERE = Path(__file__).parent

def tag(records, ctx):
    ctx.logger.info("tagged", extra={"n": len(records)})
    out = []
    for r in records:
        if r.get("bad"):
            ctx.reject(r, f"bad {r['i']}")
        else:
            out.append(dict(r, tag=ctx.batch_id, pid=0))
    return out

def pid(records, ctx):
    return [{"pid": os.getpid()}]

class SensorFault(Exception):
    pass

def fail(records, ctx):
    raise SensorFault("sensor calibration missing")

def die(records, ctx):
    os._exit(3)

def hang(records, ctx):
    while True:
        time.sleep(0.05)

def not_a_list(records, ctx):
    return {"a": 1}

def returns_input(records, ctx):
    return records

def write_state(records, ctx):
    """A hostile processor that knows the state table's name and endpoint (target.json)."""
    import boto3
    target = json.loads((HERE / "target.json").read_text())
    client = boto3.client("dynamodb", endpoint_url=target["endpoint"], region_name="us-east-1")
    try:
        client.put_item(TableName=target["table"], Item={"pk": {"S": "topic#t"}, "sk": {"S": "lock"}})
        outcome = "written"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    seen = sorted(k for k in os.environ if k.startswith(("AWS_", "LEANOPS_")))
    return [{"outcome": outcome, "env": seen}]

def write_other_sink(records, ctx):
    target = json.loads((HERE / "target.json").read_text())
    try:
        Path(target["other_sink"], "t.injected.jsonl").write_text('{"evil": 1}\\n')
        outcome = "written"
    except OSError as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    return [{"outcome": outcome}]

def write_s3(records, ctx):
    import boto3
    target = json.loads((HERE / "target.json").read_text())
    s3 = boto3.client("s3", region_name="us-east-1")
    outcomes = {}
    for key in target["keys"]:
        try:
            s3.put_object(Bucket=target["bucket"], Key=key, Body=b"x")
            outcomes[key] = "written"
        except Exception as exc:
            outcomes[key] = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
    return [outcomes]

def patch_leanops(records, ctx):
    """Monkeypatches leanops: the commit refuses, and the sink writes nothing."""
    from leanops.data import files
    from leanops.protocol import service
    def refuse(*args, **kwargs):
        raise RuntimeError("patched by the processor")
    service.Protocol.commit = refuse
    files.FilesSink.write = lambda self, name, prepared: None
    return records
'''


@pytest.fixture(autouse=True)
def fresh_children() -> Iterator[None]:
    """No warm child, nor the ``hostile`` package imported in this process (contrasts), outlives a test."""
    yield
    isolation.stop_children()
    for name in [m for m in sys.modules if m == "hostile" or m.startswith("hostile.")]:
        del sys.modules[name]


@pytest.fixture
def project(tmp_path: Path) -> dict[str, Any]:
    """A topics file's folder with the package ``hostile`` (the processors above), a source of five records
    (the third marked bad), a sink, and another topic's sink."""
    package = tmp_path / "hostile"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "procs.py").write_text(textwrap.dedent(PROCESSORS))
    source = tmp_path / "in"
    source.mkdir()
    lines = [json.dumps({"i": i, "bad": i == 2}) for i in range(5)]
    (source / "part-0.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "other").mkdir()
    return {"root": tmp_path, "package": package, "other": tmp_path / "other"}


def topic(project: dict[str, Any], processor: str, **settings: Any) -> TopicConfig:
    raw = {
        "source": {"type": "files", "uri": "./in"},
        "sink": {"type": "files", "uri": "./out"},
        "processor": f"hostile.procs:{processor}",
        "batch_size": 100,
        **settings,
    }
    return parse_topics({"topics": {"t": raw}}, project["root"] / "topics.yaml").topic("t")


def batch(project: dict[str, Any], config: TopicConfig, *, remaining_ms: int = 60_000) -> Any:
    """One batch of ``config`` from the origin, its processor isolated or not as the topic says."""
    if config.isolation == "process":
        processor: Any = IsolatedProcessor(config, project["root"], lambda: remaining_ms)
    else:
        processor = load_processor(config.processor, project["root"])
    logger = _Lines()
    result = run_batch(config, None, processor, fence=1, owner="arn:exec:1", logger=logger)
    return result, logger


class _Lines:
    """A logger that keeps what it is given."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any] | None]] = []

    def info(self, message: str, extra: dict[str, Any] | None = None) -> None:
        self.lines.append(("info", message, extra))

    def warning(self, message: str, extra: dict[str, Any] | None = None) -> None:
        self.lines.append(("warning", message, extra))


def sink_text(project: dict[str, Any], name: str | None) -> str:
    assert name is not None
    return (project["root"] / "out" / name).read_text()


def quarantine_text(project: dict[str, Any], name: str | None) -> list[dict[str, Any]]:
    assert name is not None
    rows = [json.loads(line) for line in (project["root"] / "out" / name).read_text().splitlines()]
    return rows


# --- same output, on or off -------------------------------------------------------------------------------


def test_isolated_processor_writes_byte_identical_output_and_quarantine(project):
    # GIVEN the example processor (rejects, derived fields, a log line) on generated telemetry, on and off
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from examples.vehicle_telemetry.generate import generate

    generate(project["root"] / "telemetry", 3_000, 1_000, seed=7, malformed=0.05)
    outputs = {}
    for mode in ("none", "process"):
        config = replace(
            topic(project, "tag"),
            processor="examples.vehicle_telemetry.processor:process",
            source=replace(topic(project, "tag").source, uri=str(project["root"] / "telemetry")),
            sink=replace(topic(project, "tag").sink, uri=str(project["root"] / f"out-{mode}")),
            batch_size=5_000,
            isolation=mode,
        )
        processor: Any = (
            IsolatedProcessor(config, Path(__file__).resolve().parents[2], lambda: 60_000)
            if mode == "process"
            else load_processor(config.processor, Path(__file__).resolve().parents[2])
        )
        logger = _Lines()
        result = run_batch(config, None, processor, fence=1, owner="arn:exec:1", logger=logger)
        sink = project["root"] / f"out-{mode}"
        assert result.object and result.quarantine
        outputs[mode] = (
            (sink / result.object).read_bytes(),
            (sink / result.quarantine).read_bytes(),
            result.written,
            result.quarantined,
            [line[1] for line in logger.lines],
        )
    # THEN the sink object, the quarantine object (origins included) and the log line are the same
    assert outputs["process"] == outputs["none"]
    assert outputs["process"][3] > 0 and outputs["process"][4] == ["vehicle_telemetry batch validated"]


def test_rejects_keep_their_origin_and_logs_reach_the_tasks_logger(project):
    result, logger = batch(project, topic(project, "tag"))
    assert (result.written, result.quarantined) == (4, 1)
    (reject,) = quarantine_text(project, result.quarantine)
    assert (reject["source_key"], reject["line"], reject["reason"]) == ("part-0.jsonl", 3, "bad 2")
    assert [json.loads(line)["i"] for line in sink_text(project, result.object).splitlines()] == [0, 1, 3, 4]
    assert logger.lines == [("info", "tagged", {"n": 5})]


def test_a_reject_with_on_malformed_fail_names_the_records_origin(project):
    messages = {}
    for mode in ("none", "process"):
        config = topic(project, "tag", on_malformed="fail", isolation=mode)
        with pytest.raises(MalformedInput) as raised:
            batch(project, config)
        messages[mode] = str(raised.value)
    assert messages["process"] == messages["none"]
    assert (
        messages["process"]
        == "batch origin: source_key=part-0.jsonl line=3: rejected by the processor: bad 2"
    )


# --- what a hostile processor cannot do -------------------------------------------------------------------


def test_a_processor_cannot_write_the_state_table(project, state_table):
    # GIVEN a processor that knows the state table's name and DynamoDB Local's endpoint (the worst case)
    target = {"endpoint": state_table.endpoint_url, "table": state_table.name}
    (project["package"] / "target.json").write_text(json.dumps(target))
    lock = {"pk": {"S": "topic#t"}, "sk": {"S": "lock"}}
    # WHEN it runs isolated
    result, _ = batch(project, topic(project, "write_state"))
    (seen,) = [json.loads(line) for line in sink_text(project, result.object).splitlines()]
    # THEN its put_item is refused by its session policy, it saw no credentials or state settings, and the
    # table is untouched
    assert seen["outcome"].startswith("ClientError") and "AccessDenied" in seen["outcome"], seen
    assert "LEANOPS_STATE_TABLE" not in seen["env"] and "AWS_ENDPOINT_URL_DYNAMODB" not in seen["env"]
    assert "AWS_SESSION_TOKEN" not in seen["env"]
    assert "Item" not in state_table.client.get_item(TableName=state_table.name, Key=lock)
    # AND (contrast) in the task's own process the same processor writes it
    iam.uninstall()
    result, _ = batch(project, topic(project, "write_state", isolation="none"))
    assert json.loads(sink_text(project, result.object))["outcome"] == "written"
    assert "Item" in state_table.client.get_item(TableName=state_table.name, Key=lock)


def test_a_processor_cannot_write_another_topics_local_sink(project):
    (project["package"] / "target.json").write_text(json.dumps({"other_sink": str(project["other"])}))
    result, _ = batch(project, topic(project, "write_other_sink"))
    assert json.loads(sink_text(project, result.object))["outcome"].startswith("PermissionError: leanops ")
    assert list(project["other"].iterdir()) == []
    # contrast: in the task's own process it can
    result, _ = batch(project, topic(project, "write_other_sink", isolation="none"))
    assert json.loads(sink_text(project, result.object))["outcome"] == "written"


def test_a_processor_may_write_neither_its_sink_nor_start_processes(project):
    code = textwrap.dedent(
        """
        import subprocess
        from pathlib import Path
        def sneaky(records, ctx):
            out = {}
            for name, act in (
                ("own_sink", lambda: Path(ctx_sink, "t.extra.jsonl").write_text("x")),
                ("process", lambda: subprocess.run(["true"])),
                ("scratch", lambda: Path(__import__("tempfile").mkstemp()[1]).write_text("ok")),
            ):
                try:
                    act()
                    out[name] = "done"
                except PermissionError:
                    out[name] = "refused"
            return [out]
        """
    ).replace("ctx_sink", repr(str(project["root"] / "out")))
    (project["package"] / "sneaky.py").write_text(code)
    config = replace(topic(project, "tag"), processor="hostile.sneaky:sneaky")
    result, _ = batch(project, config)
    seen = json.loads(sink_text(project, result.object))
    assert seen == {"own_sink": "refused", "process": "refused", "scratch": "done"}


def test_the_session_policy_allows_the_topics_own_data_only(project, monkeypatch):
    config = topic(project, "write_s3")
    config = replace(
        config,
        source=replace(config.source, uri="s3://data-lake/raw/telemetry"),
        sink=replace(config.sink, uri="s3://data-lake/curated/telemetry/"),
    )
    policy = session_policy(config, partition="aws", region="eu-west-1", account="111122223333")
    text = json.dumps(policy)
    assert "${" not in text and "arn:aws:s3:::data-lake/*" not in text  # no bucket root, no substitution

    def can(action: str, resource: str, **context: str) -> bool:
        return iam.allowed([policy], action, resource, context)

    assert can("s3:GetObject", "arn:aws:s3:::data-lake/raw/telemetry/day=1/a.jsonl")
    assert can("s3:ListBucket", "arn:aws:s3:::data-lake", **{"s3:prefix": "raw/telemetry/day=1/"})
    assert not can("s3:PutObject", "arn:aws:s3:::data-lake/raw/telemetry/x")  # the source is read-only
    assert can("s3:PutObject", "arn:aws:s3:::data-lake/curated/telemetry/x.jsonl")
    assert not can("s3:PutObject", "arn:aws:s3:::data-lake/curated/telemetry-other/x.jsonl")
    assert not can("s3:PutObject", "arn:aws:s3:::data-lake/curated/other/x.jsonl")
    assert not can("s3:DeleteObject", "arn:aws:s3:::data-lake/curated/telemetry/x.jsonl")
    assert not can("dynamodb:UpdateItem", "arn:aws:dynamodb:eu-west-1:111122223333:table/leanops-state")
    # a topic on local folders gets a policy that allows nothing
    local = session_policy(topic(project, "tag"), partition="aws", region="eu-west-1", account="1")
    assert not iam.allowed([local], "s3:GetObject", "arn:aws:s3:::data-lake/raw/telemetry/a")


def test_a_processor_cannot_write_another_topics_s3_sink(project, monkeypatch):
    # GIVEN the local stack's S3 (an endpoint where nothing listens: the hook decides before any request)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    config = topic(project, "write_s3")
    config = replace(config, sink=replace(config.sink, uri="s3://lake/curated/t"))
    own, other = "curated/t/t.mine.jsonl", "curated/u/u.injected.jsonl"
    (project["package"] / "target.json").write_text(json.dumps({"bucket": "lake", "keys": [own, other]}))
    context = ProcessorContext("t", "origin", 1, _Lines(), [{"i": 0}])
    (seen,) = IsolatedProcessor(config, project["root"], lambda: 60_000)([{"i": 0}], context)
    # THEN another topic's sink is refused; its own sink is allowed by the policy (the request then finds
    # no server here)
    assert seen[other] == "AccessDenied"
    assert seen[own] not in ("AccessDenied", "written")


def test_a_processor_that_monkeypatches_leanops_changes_only_its_child(project, monkeypatch):
    # Restored after the test, whatever the contrast below patches in this process.
    monkeypatch.setattr(Protocol, "commit", Protocol.commit)
    monkeypatch.setattr(FilesSink, "write", FilesSink.write)
    original = FilesSink.write
    result, _ = batch(project, topic(project, "patch_leanops"))
    # THEN the parent wrote the sink as usual, with its own classes unchanged
    assert FilesSink.write is original
    assert [json.loads(line)["i"] for line in sink_text(project, result.object).splitlines()] == list(
        range(5)
    )
    # AND (contrast) in the task's own process the patch takes: nothing is written
    result, _ = batch(project, topic(project, "patch_leanops", isolation="none"))
    assert FilesSink.write is not original
    assert not (project["root"] / "out" / str(result.object)).exists()


def test_the_child_sees_no_credentials_and_cannot_read_its_parents_environment(project):
    code = textwrap.dedent(
        """
        import os
        def look(records, ctx):
            try:
                parent = open(f"/proc/{os.getppid()}/environ", "rb").read()
                read = "SECRET" if b"AWS_SECRET_ACCESS_KEY" in parent else "read"
            except OSError as exc:
                read = type(exc).__name__
            return [{"env": sorted(os.environ), "parent_environ": read}]
        """
    )
    (project["package"] / "look.py").write_text(code)
    result, _ = batch(project, replace(topic(project, "tag"), processor="hostile.look:look"))
    seen = json.loads(sink_text(project, result.object))
    assert not [
        k
        for k in seen["env"]
        if k.startswith("AWS_")
        and k not in isolation.KEPT_AWS_VARIABLES
        and k not in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_EC2_METADATA_DISABLED")
    ]
    assert not [k for k in seen["env"] if k.startswith("LEANOPS_")]
    if sys.platform.startswith("linux") and os.geteuid() != 0:
        assert seen["parent_environ"] == "PermissionError"
    elif sys.platform.startswith("linux"):  # root may read any process's files: check the flag instead
        assert ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0


# --- failures: one clear line, and a fresh child for the next batch ---------------------------------------


def test_a_processor_error_keeps_its_class_name_and_names_the_batch(project):
    errors = {}
    for mode in ("none", "process"):
        with pytest.raises(Exception) as raised:
            batch(project, topic(project, "fail", isolation=mode))
        errors[mode] = (type(raised.value).__name__, str(raised.value))
    assert errors["process"] == errors["none"] == ("SensorFault", "batch origin: sensor calibration missing")


def test_a_non_list_result_is_the_same_config_error(project):
    for mode in ("none", "process"):
        with pytest.raises(ConfigError, match=r"^processor of t returned dict; expected a list of dicts$"):
            batch(project, topic(project, "not_a_list", isolation=mode))


def test_a_processor_that_kills_its_process_fails_the_batch_and_the_next_gets_a_fresh_child(project):
    with pytest.raises(ProcessorError, match=r"^batch origin: the processor of topic t failed: its process "):
        batch(project, topic(project, "die"))
    result, _ = batch(project, topic(project, "pid"))
    assert json.loads(sink_text(project, result.object))["pid"] != os.getpid()


def test_a_processor_that_hangs_is_stopped_before_the_deadline(project):
    with pytest.raises(
        ProcessorError, match=r"^batch origin: the processor of topic t did not return within"
    ):
        batch(project, topic(project, "hang"), remaining_ms=0)  # waits MIN_WAIT_MS
    assert list(isolation._children) == []  # stopped, not left running


def test_the_child_stays_warm_across_batches_and_is_replaced_after_an_error(project):
    pids = []
    for _ in range(2):
        result, _ = batch(project, topic(project, "pid"))
        pids.append(json.loads(sink_text(project, result.object))["pid"])
    assert pids[0] == pids[1] != os.getpid()
    with pytest.raises(Exception, match="sensor calibration"):
        batch(project, topic(project, "fail"))
    result, _ = batch(project, topic(project, "pid"))
    assert json.loads(sink_text(project, result.object))["pid"] != pids[0]


def test_an_answer_that_is_not_plain_data_is_refused(project):
    # A child's answer naming a global (here os.system) must not run in the parent.
    evil = b"cos\nsystem\n(S'touch " + str(project["root"] / "pwned").encode() + b"'\ntR."
    with pytest.raises(Exception, match="not plain data"):
        isolation._loads(evil)
    assert not (project["root"] / "pwned").exists()


def test_isolation_is_a_validated_topic_setting(project):
    assert topic(project, "tag").isolation == "process"
    assert topic(project, "tag", isolation="none").to_json()["isolation"] == "none"
    with pytest.raises(ConfigError, match=r"isolation 'container' must be one of: process, none"):
        topic(project, "tag", isolation="container")
