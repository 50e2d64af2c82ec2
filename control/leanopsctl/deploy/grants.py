"""Each function's AWS permissions, recorded from the calls its real code makes (never a hand-kept list).

``python -m leanopsctl.deploy.grants`` drives the task code (:mod:`leanops.tasks`, :mod:`leanops.safety_net`)
through the scenarios below against moto (S3, the state table and a DynamoDB source table), with a botocore
hook that turns every call into the IAM requests AWS authorizes (:func:`leanopsctl.local.iam.requests`),
classifies each resource as the state table, the topic's source, its sink, the sink's marker object or
``other``, and writes ``grants.json`` beside this module: function -> role -> sorted actions. ``--check``
exits 1 when the recording differs from the committed file. ``template.yaml``'s function policies are
then exactly these actions: state-table actions on the state table, source and sink actions on the stack's
data roots (tests/deploy/test_grants.py compares them).

Scenarios, for each topic shape (files on S3 -> JSON Lines, files on S3 -> Parquet, a DynamoDB source ->
JSON Lines): a first run to the end of the data; a steady run that finds the topic up to date (the resume
hint); new data and a run that commits after the first; a commit refused after a second attempt of the
same batch (its object is an orphan and is deleted); a failed run's release; the safety net's release.
Moto is single-threaded recording, not concurrency: the protocol's races are tested elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

#: The committed recording.
GRANTS_PATH = Path(__file__).with_name("grants.json")
#: Functions, by their template logical id.
FUNCTIONS = ("AcquireFunction", "ProcessFunction", "AdvanceFunction", "ReleaseFunction", "SafetyNetFunction")
#: Kinds of resource a grant is on.
KINDS = ("state_table", "source", "sink", "sink_marker", "other")

REGION = "us-east-1"
STATE_TABLE = "leanops-grants-state"
SOURCE_BUCKET, SOURCE_PREFIX = "grants-source", "in/"
SINK_BUCKET, SINK_PREFIX = "grants-sink", "out/"
SOURCE_TABLE = "grants-source-table"
SOURCE_INDEX = "by-kind"


class Recorder:
    """Collects (function, kind, action) from the IAM requests of every checked call."""

    def __init__(self) -> None:
        self.function: str | None = None
        self.grants: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.unattributed: set[str] = set()

    @contextlib.contextmanager
    def acting_as(self, function: str) -> Iterator[None]:
        """Attribute the calls made meanwhile to ``function``, invoked cold: what a process learns and
        keeps (a DynamoDB source's description) is forgotten first, so its first calls are recorded."""
        from leanops.data import dynamodb_source

        dynamodb_source._described.clear()
        self.function = function
        try:
            yield
        finally:
            self.function = None

    def __call__(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        from leanopsctl.local import iam

        for request in iam.requests(model.service_model.endpoint_prefix, model.name, params, REGION):
            if self.function is None:
                self.unattributed.add(request.action)  # the scenario's own setup
                continue
            self.grants[self.function][classify(request)].add(request.action)

    def as_json(self) -> dict[str, dict[str, list[str]]]:
        return {
            function: {
                kind: sorted(self.grants[function][kind]) for kind in KINDS if self.grants[function][kind]
            }
            for function in FUNCTIONS
        }


def classify(request: Any) -> str:
    """Which of the topic's resources a request is on."""
    from leanops.data.files import MARKER
    from leanopsctl.local import iam

    resource = request.resource
    if resource == iam.table_arn(STATE_TABLE, REGION):
        return "state_table"
    if resource in (
        iam.table_arn(SOURCE_TABLE, REGION),
        f"{iam.table_arn(SOURCE_TABLE, REGION)}/index/{SOURCE_INDEX}",
    ):
        return "source"
    for bucket, prefix, kind in (
        (SOURCE_BUCKET, SOURCE_PREFIX, "source"),
        (SINK_BUCKET, SINK_PREFIX, "sink"),
    ):
        if resource == f"arn:aws:s3:::{bucket}":
            if request.context.get("s3:prefix", "").startswith(prefix):
                return kind
        elif resource.startswith(f"arn:aws:s3:::{bucket}/{prefix}"):
            return "sink_marker" if kind == "sink" and resource.endswith("/" + MARKER) else kind
    return "other"


# --- the scenarios ----------------------------------------------------------------------------------------


def _topic_settings(shape: str) -> dict[str, Any]:
    sink: dict[str, Any] = {"type": "files", "uri": f"s3://{SINK_BUCKET}/{SINK_PREFIX}{shape}"}
    if shape == "parquet":
        sink["format"] = "parquet"
    if shape == "dynamodb":
        source: dict[str, Any] = {
            "type": "dynamodb",
            "table": SOURCE_TABLE,
            "partition_key": "device",
            "partition_value": "dynamodb",
            "sort_key": "ts",
        }
    elif shape == "dynamodb_index":  # a time-keyed index (string keys: Acquire checks the newest)
        source = {
            "type": "dynamodb",
            "table": SOURCE_TABLE,
            "index": SOURCE_INDEX,
            "partition_key": "kind",
            "partition_value": "k1",
            "sort_key": "since",
            "min_age_seconds": 0,
        }
    else:
        source = {"type": "files", "uri": f"s3://{SOURCE_BUCKET}/{SOURCE_PREFIX}{shape}"}
    settings: dict[str, Any] = {"source": source, "sink": sink, "batch_size": 2, "max_batches_per_run": 3}
    if shape == "parquet":
        settings["schema"] = {"i": "int64"}
    return settings


def _add_data(clients: dict[str, Any], shape: str, part: int) -> None:
    records = [part * 3 + i for i in range(3)]
    if shape.startswith("dynamodb"):
        for i in records:
            item = {
                "device": {"S": shape},
                "ts": {"N": str(i)},
                "i": {"N": str(i)},
                "kind": {"S": "k1"},
                "since": {"S": f"{i:013d}#{shape}"},
            }
            clients["dynamodb"].put_item(TableName=SOURCE_TABLE, Item=item)
    else:
        body = "".join(json.dumps({"i": i}) + "\n" for i in records).encode()
        key = f"{SOURCE_PREFIX}{shape}/part-{part}.jsonl"
        clients["s3"].put_object(Bucket=SOURCE_BUCKET, Key=key, Body=body)


def _beat_once() -> Any:
    """A heartbeat that renews once at once, then at its end: the lease renewal a long batch makes, with no
    wait (a real one beats every lease / 3 seconds)."""
    from leanops.heartbeat import Heartbeat

    class BeatOnce(Heartbeat):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            beats = iter([False])
            super().__init__(
                *args, wait=lambda _: self._stop.wait() if next(beats, True) else False, **kwargs
            )

    return BeatOnce


def _scenarios(recorder: Recorder, clients: dict[str, Any], folder: Path) -> None:
    from unittest import mock

    from leanops import safety_net, tasks
    from leanops.config import parse_settings
    from leanops.protocol import Protocol
    from leanops.protocol.dynamodb import DynamoDBStore
    from leanops.protocol.model import PushedTopic
    from leanops.registry import PushedTopics, settings_digest

    store = DynamoDBStore(STATE_TABLE, clients["dynamodb"])
    protocol = Protocol(store)
    catalog = PushedTopics(store, folder)

    def acquire(topic: str, execution: str) -> dict[str, Any]:
        event = {"input": {"topic": topic}, "execution": execution, "execution_name": execution}
        with recorder.acting_as("AcquireFunction"):
            return tasks.acquire(event, protocol, catalog).to_json()

    def process(state: dict[str, Any]) -> dict[str, Any]:
        with recorder.acting_as("ProcessFunction"), mock.patch.object(tasks, "Heartbeat", _beat_once()):
            return tasks.process(tasks.RunState.from_json(state), protocol, catalog, lambda: 60_000).to_json()

    def advance(state: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
        with recorder.acting_as("AdvanceFunction"):
            return tasks.advance(tasks.RunState.from_json(state), batch, protocol, catalog).to_json()

    def run(topic: str, execution: str) -> dict[str, Any]:
        state = acquire(topic, execution)
        while state["outcome"] == "acquired" and not state["released"]:
            state["batch"] = process(state)
            state = advance(state, state["batch"])
        return state

    for shape in ("jsonl", "parquet", "dynamodb", "dynamodb_index"):
        topic = f"t_{shape}"
        settings = _topic_settings(shape)
        parse_settings(topic, settings, topic)  # a wrong scenario fails here, not in a task
        store.push_topic(
            PushedTopic(topic, settings, 1, settings_digest(settings), "grants", 0), expected_version=None
        )
        _add_data(clients, shape, 0)
        assert run(topic, f"{shape}-first")["outcome"] == "processed"
        run(topic, f"{shape}-steady")  # up to date: the resume hint, no read of the data
        _add_data(clients, shape, 1)
        run(topic, f"{shape}-after")  # a commit after the first (a DynamoDB source orders positions)
        # A batch written twice (a retried process): the first attempt commits, the second is refused
        # and its object, an orphan, is deleted.
        _add_data(clients, shape, 2)
        state = acquire(topic, f"{shape}-retried")
        if state["outcome"] == "acquired":
            first, second = process(state), process(state)
            state = advance(state, first)
            if not state["released"]:
                advance(state, second)
        # A run that fails: the state machine's Catch calls Release; Standard's safety net the same.
        state = acquire(topic, f"{shape}-failed")
        with recorder.acting_as("ReleaseFunction"):
            tasks.release_after_failure(
                {"state": {**state, "error": {"Error": "E", "Cause": "c"}}, "owner": f"{shape}-failed"},
                protocol,
            )
        state = acquire(topic, f"{shape}-aborted")
        detail = {
            "executionArn": f"{shape}-aborted",
            "status": "ABORTED",
            "input": json.dumps({"topic": topic}),
        }
        with recorder.acting_as("SafetyNetFunction"):
            safety_net.release_after_execution_end({"detail": detail}, protocol)


def record() -> dict[str, dict[str, list[str]]]:
    """Run the scenarios on moto; each function's actions by resource kind."""
    import boto3
    import botocore.handlers
    from moto import mock_aws

    from leanops.data import storage
    from leanops.protocol import dynamodb as dynamodb_adapter
    from leanops.protocol.table import create_table

    recorder = Recorder()
    hooks = [(f"before-parameter-build.{service}", recorder) for service in ("s3", "dynamodb")]
    botocore.handlers.BUILTIN_HANDLERS.extend(hooks)
    env = {"AWS_ACCESS_KEY_ID": "grants", "AWS_SECRET_ACCESS_KEY": "grants", "AWS_DEFAULT_REGION": REGION}
    saved = {key: _environ().get(key) for key in env}
    _environ().update(env)
    try:
        with mock_aws(), tempfile.TemporaryDirectory(prefix="leanops-grants-") as folder:
            # The code's own clients are cached per process: make them anew, with the hook, inside moto.
            storage._cached_s3_client.cache_clear()
            dynamodb_adapter._cached_client.cache_clear()
            boto3.DEFAULT_SESSION = None
            clients = {name: boto3.client(name, region_name=REGION) for name in ("s3", "dynamodb")}
            create_table(clients["dynamodb"], STATE_TABLE)
            clients["dynamodb"].create_table(
                TableName=SOURCE_TABLE,
                KeySchema=[
                    {"AttributeName": "device", "KeyType": "HASH"},
                    {"AttributeName": "ts", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "device", "AttributeType": "S"},
                    {"AttributeName": "ts", "AttributeType": "N"},
                    {"AttributeName": "kind", "AttributeType": "S"},
                    {"AttributeName": "since", "AttributeType": "S"},
                ],
                GlobalSecondaryIndexes=[
                    {
                        "IndexName": SOURCE_INDEX,
                        "KeySchema": [
                            {"AttributeName": "kind", "KeyType": "HASH"},
                            {"AttributeName": "since", "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                ],
                BillingMode="PAY_PER_REQUEST",
            )
            for bucket in (SOURCE_BUCKET, SINK_BUCKET):
                clients["s3"].create_bucket(Bucket=bucket)
            _scenarios(recorder, clients, Path(folder))
    finally:
        botocore.handlers.BUILTIN_HANDLERS[:] = [
            h for h in botocore.handlers.BUILTIN_HANDLERS if h not in hooks
        ]
        storage._cached_s3_client.cache_clear()
        dynamodb_adapter._cached_client.cache_clear()
        boto3.DEFAULT_SESSION = None
        for key, value in saved.items():
            if value is None:
                _environ().pop(key, None)
            else:
                _environ()[key] = value
    return recorder.as_json()


def _environ() -> Any:
    import os

    return os.environ


def committed() -> dict[str, dict[str, list[str]]]:
    loaded: dict[str, dict[str, list[str]]] = json.loads(GRANTS_PATH.read_text())
    return loaded


def render(grants: Mapping[str, Any]) -> str:
    return json.dumps(grants, indent=2, sort_keys=False) + "\n"


def main(argv: Sequence[str] | None = None, out: Callable[[str], Any] = print) -> int:
    """``python -m leanopsctl.deploy.grants [--check]``: 0 written or up to date, 1 stale (``--check``)."""
    parser = argparse.ArgumentParser(
        prog="python -m leanopsctl.deploy.grants",
        description="Record each function's AWS calls (moto) and write leanopsctl/deploy/grants.json.",
    )
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 when grants.json is stale")
    args = parser.parse_args(argv)
    recorded = render(record())
    current = GRANTS_PATH.read_text() if GRANTS_PATH.exists() else ""
    if args.check:
        if recorded != current:
            out(f"{GRANTS_PATH.name} is stale: run python -m leanopsctl.deploy.grants; recorded:\n{recorded}")
            return 1
        out(f"{GRANTS_PATH.name} is up to date")
        return 0
    GRANTS_PATH.write_text(recorded)
    out(f"wrote {GRANTS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
