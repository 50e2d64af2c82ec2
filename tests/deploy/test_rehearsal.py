"""The deploy rehearsal (leanopsctl.deploy.rehearse): template.yaml transformed offline, created as a
CloudFormation stack on the local stack's endpoint, then every operator command with ``--stack`` against it.

The stack's functions run from the zip that packaging built (the handlers' import closure, topics.yaml), its
table is moto's: this checks the deploy wiring end to end (outputs, names, environment, the package)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest
import yaml
from leanopsctl.local.stack import StackRecord, stack_down

pytestmark = pytest.mark.integration
STACK = "rehearsal"
TOPICS = {
    "orders": {
        "source": {"type": "files", "uri": "s3://rehearsal-data/orders"},
        "sink": {"type": "files", "uri": "s3://rehearsal-lake/orders", "format": "jsonl"},
        "batch_size": 100,
    }
}


def cli(project: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "leanopsctl", *args, "--config", str(project["root"] / "topics.yaml")]
    return subprocess.run(
        command, cwd=project["root"], env=env or project["env"], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearsal")
    (root / "topics.yaml").write_text(yaml.safe_dump({"topics": TOPICS}))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LEANOPS_", "AWS_"))}
    rehearse = subprocess.run(
        [
            sys.executable,
            "-m",
            "leanopsctl.deploy.rehearse",
            "--config",
            str(root / "topics.yaml"),
            "--stack-name",
            STACK,
            "--parameter",
            "DataRoots=s3://rehearsal-data/orders/,s3://rehearsal-lake/orders/",
        ],
        cwd=root,
        env=base,
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        assert rehearse.returncode == 0, rehearse.stderr[-3000:]
        record = StackRecord.read(root / ".leanops" / "stack.json")
        assert record is not None
        env = {
            **base,
            "AWS_ENDPOINT_URL": record.endpoint,
            "AWS_ACCESS_KEY_ID": "rehearsal",
            "AWS_SECRET_ACCESS_KEY": "rehearsal",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        s3 = boto3.client(
            "s3",
            endpoint_url=record.endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        # Topics are pushed to a deployed stack, not deployed with it (decision 0013).
        pushed = cli({"root": root, "env": env}, "topics", "push", "--stack", STACK, "--json")
        assert pushed.returncode == 0, pushed.stderr[-3000:]
        for n in range(3):
            body = "".join(json.dumps({"order": n * 100 + i}) + "\n" for i in range(100))
            s3.put_object(Bucket="rehearsal-data", Key=f"orders/part-{n}.jsonl", Body=body.encode())
        yield {
            "root": root,
            "env": env,
            "rehearsal": json.loads(rehearse.stdout),
            "stderr": rehearse.stderr,
            "s3": s3,
            "pushed": json.loads(pushed.stdout),
        }
    finally:
        stack_down(root / ".leanops")


def test_the_stack_is_created_with_its_outputs_and_lists_what_it_could_not_create(project):
    report = project["rehearsal"]
    assert {"StateTableName", "TopicRunStateMachineArn", "AlarmTopicArn"} <= set(report["outputs"])
    assert report["outputs"]["StateTableName"] == f"{STACK}-state"  # the StateTableName parameter's default
    # moto models no alarms or schedules: they are named, never silently dropped
    assert report["not_created"], "a rehearsal that created everything would be suspicious with moto"
    for logical_id, kind in report["not_created"].items():
        assert f"not created by the local stack: {logical_id} ({kind})" in project["stderr"]


def test_topics_are_pushed_to_the_rehearsed_stack_inside_its_data_roots(project, tmp_path):
    assert project["pushed"]["added"] == ["orders"] and project["pushed"]["target"].startswith(
        "stack rehearsal"
    )
    history = json.loads(cli(project, "topics", "history", "orders", "--stack", STACK, "--json").stdout)
    assert [v["version"] for v in history["versions"]] == [1]
    # A topic outside the stack's data roots is refused before anything is written: one line, exit 2
    outside = tmp_path / "topics.yaml"
    moved = {
        "orders": {**TOPICS["orders"], "sink": {"type": "files", "uri": "s3://rehearsal-lake/elsewhere"}}
    }
    outside.write_text(yaml.safe_dump({"topics": moved}))
    command = [
        sys.executable,
        "-m",
        "leanopsctl",
        "topics",
        "push",
        "--stack",
        STACK,
        "--config",
        str(outside),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=project["env"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert "outside the stack's data roots; add the root s3://rehearsal-lake/elsewhere/" in done.stderr
    again = json.loads(cli(project, "topics", "history", "orders", "--stack", STACK, "--json").stdout)
    assert again == history


def test_run_status_history_and_output_against_the_rehearsed_stack(project):
    # WHEN the topic runs on the rehearsed stack (its functions run from the packaged zip)
    done = cli(project, "run", "orders", "--stack", STACK, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert (report["outcome"], report["records"], report["batches"]) == ("processed", 300, 3)
    assert f":stateMachine:{STACK}-TopicRunStateMachine-" in report["execution"].replace(
        ":execution:", ":stateMachine:"
    )
    # THEN status, history and output read the stack's table and executions
    status = json.loads(cli(project, "status", "orders", "--stack", STACK, "--json").stdout)
    assert status["checkpoint"]["position"] == "part-2.jsonl#100" and status["lock"]["state"] == "free"
    history = json.loads(cli(project, "history", "orders", "--stack", STACK, "--json").stdout)
    assert [e["outcome"] for e in history["executions"]] == ["processed"]
    output = json.loads(cli(project, "output", "orders", "--stack", STACK, "--json").stdout)
    objects = [b["object"] for b in output["batches"]]
    lines = [
        json.loads(line)["order"]
        for key in objects
        for line in project["s3"]
        .get_object(Bucket="rehearsal-lake", Key=f"orders/{key}")["Body"]
        .read()
        .splitlines()
    ]
    assert sorted(lines) == list(range(300))


@pytest.mark.parametrize(
    ("args", "env_change", "code", "message"),
    [
        (("status", "--stack", "no-such-stack"), {}, 2, "no stack 'no-such-stack'"),
        (("run", "nope", "--stack", STACK), {}, 2, "unknown topic 'nope'"),
        (
            ("status", "--stack", STACK),
            {
                "AWS_ACCESS_KEY_ID": None,
                "AWS_SECRET_ACCESS_KEY": None,
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                "AWS_CONFIG_FILE": "/dev/null",
            },
            2,
            "no AWS credentials",
        ),
        (("status", "--region", "eu-west-1"), {}, 2, "--region and --profile go with --stack"),
    ],
)
def test_bad_input_against_a_stack_is_one_line_and_changes_nothing(project, args, env_change, code, message):
    env = {**project["env"]}
    for key, value in env_change.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    done = cli(project, *args, env=env)
    assert done.returncode == code, done.stderr
    assert message in done.stderr and done.stderr.count("\n") <= 2 and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_a_stack_without_leanops_outputs_is_refused(project):
    cloudformation = boto3.client(
        "cloudformation",
        endpoint_url=project["env"]["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    template = {"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}
    cloudformation.create_stack(StackName="not-leanops", TemplateBody=json.dumps(template))
    done = cli(project, "status", "--stack", "not-leanops")
    assert done.returncode == 2 and "not a leanops stack" in done.stderr and "Traceback" not in done.stderr


def test_operator_commands_against_the_rehearsed_stack(project):
    def ok(*args: str) -> dict:
        done = cli(project, *args, "--stack", STACK, "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    # pause, and a run ends at once; resume
    assert ok("pause", "orders", "--reason", "rehearsal")["paused"]
    assert ok("run", "orders")["outcome"] == "paused"
    assert not ok("resume", "orders", "--reason", "rehearsal")["paused"]
    # a free lock: unlock --force changes nothing and writes no audit record
    assert ok("unlock", "orders", "--force", "--reason", "rehearsal")["unlocked"] is False
    # rewind to the beginning, under the operator's lease
    before = ok("status", "orders")["checkpoint"]
    rewound = ok("checkpoint", "rewind", "orders", "--to-seq", "0", "--reason", "rehearsal")
    assert rewound["before"]["seq"] == before["seq"] and rewound["after"]["position"] is None
    # the audit trail: the deployed identity (STS) as actor, newest first
    actions = [(r["action"], r["actor"]) for r in ok("audit", "orders")["records"]]
    assert [a for a, _ in actions] == ["rewind_checkpoint", "resume", "pause"]
    assert all(actor.startswith("arn:aws:") for _, actor in actions)


def test_backfill_against_the_rehearsed_stack(project):
    def ok(*args: str) -> dict:
        done = cli(project, *args, "--stack", STACK, "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    before = ok("status", "orders")["checkpoint"]
    sink = "s3://rehearsal-lake/orders-replay"
    # a deployed stack's functions write to S3 only: a local folder is refused before anything is defined
    local = cli(
        project, "backfill", "orders", "--to", "part-1.jsonl#50", "--sink", "./replay", "--stack", STACK
    )
    assert local.returncode == 2 and "write to S3 only" in local.stderr and "Traceback" not in local.stderr
    report = ok("backfill", "orders", "--from", "part-0.jsonl#50", "--to", "part-1.jsonl#50", "--sink", sink)
    assert report["complete"] and report["records"] == 100
    output = ok("output", "orders", "--backfill", report["backfill"]["id"])
    replayed = sorted(
        json.loads(line)["order"]
        for batch in output["batches"]
        if batch.get("object")
        for line in project["s3"]
        .get_object(Bucket="rehearsal-lake", Key=f"orders-replay/{batch['object']}")["Body"]
        .read()
        .splitlines()
    )
    assert replayed == list(range(50, 150))
    assert ok("status", "orders")["checkpoint"] == before
    assert ok("audit", "orders")["records"][0]["action"] == "backfill"
