"""The DynamoDB Local harness: the session server, and the persistent database of ``leanops local up|down``.

Each test that starts a persistent server uses its own ``LEANOPS_HOME`` (under ``tmp_path``) and stops it in a
``finally`` block, so that no Java process outlives the test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import psutil
import pytest
from click.testing import CliRunner
from leanopsctl.cli import main, run_command
from leanopsctl.local.dynamodb_local import (
    LOG_FILE_NAME,
    SERVER_FILE_NAME,
    START_MARKER,
    find_jar,
    local_client,
    local_down,
    local_status,
    local_up,
    ping,
    state_dir,
)
from leanopsctl.local.stack import stack_down

from leanops.constants import ENV_DYNAMODB_LOCAL_JAR, ENV_HOME
from leanops.errors import ConfigError, InvalidInput, LocalRuntimeError
from leanops.protocol.table import create_table

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "leanopsctl"]


def _servers_for(home: Path) -> list[psutil.Process]:
    """Live DynamoDB Local processes serving ``home``'s database folder, found without server.json."""
    directory = str(state_dir(home))
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        arguments = process.info["cmdline"] or []
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(a.endswith("DynamoDBLocal.jar") for a in arguments) and directory in arguments:
            found.append(process)
    return found


def _starts_logged(home: Path) -> int:
    return (state_dir(home) / LOG_FILE_NAME).read_text().count(START_MARKER)


def test_session_server_answers(state_table, ddb_client_factory):
    # GIVEN the session's server and a fresh state table
    other_client = ddb_client_factory(max_attempts=1)

    # WHEN one client writes an item
    key = {"pk": {"S": "topic#a"}, "sk": {"S": "lock"}}
    state_table.client.put_item(TableName=state_table.name, Item=key)

    # THEN an independent client sees the table and reads the item back, strongly consistent
    assert other_client is not state_table.client
    assert state_table.name in other_client.list_tables(Limit=100)["TableNames"]
    item = other_client.get_item(TableName=state_table.name, Key=key, ConsistentRead=True)["Item"]
    assert item["pk"] == {"S": "topic#a"}
    assert os.environ["AWS_ENDPOINT_URL_DYNAMODB"] == state_table.endpoint_url


def test_local_up_twice_reuses_the_server(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv(ENV_HOME, str(home))
    runner = CliRunner()
    try:
        # GIVEN a running local database
        first = local_up(home)

        # WHEN it is brought up again, by the function and by the CLI
        second = local_up(home)
        result = runner.invoke(main, ["local", "up"])
        status = runner.invoke(main, ["local", "status"])

        # THEN every call names the same endpoint, and only one server was ever started
        assert first == second
        assert result.exit_code == 0, result.output
        assert (
            result.stdout.startswith("local stack started: ")
            and f"DynamoDB Local at {first} " in result.stdout
        )
        assert status.exit_code == 0 and first in status.stdout
        assert ping(first)
        assert _starts_logged(home) == 1
        assert len(_servers_for(home)) == 1
    finally:
        stack_down(home)

    down = runner.invoke(main, ["local", "down"])
    assert down.exit_code == 0 and "not running" in down.stdout


def test_concurrent_local_up_starts_exactly_one_server(tmp_path):
    # GIVEN four processes that bring the same local database up at once
    home = tmp_path / "home"
    env = {**os.environ, ENV_HOME: str(home)}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    processes = [subprocess.Popen([*CLI, "local", "up"], env=env, text=True, **pipes) for _ in range(4)]
    try:
        # WHEN they all finish (the server is detached: their pipes close although it keeps running)
        outputs = [process.communicate(timeout=60) for process in processes]

        # THEN all succeed with the same endpoint, and exactly one server was started
        assert [process.returncode for process in processes] == [0, 0, 0, 0], outputs
        endpoints = {
            match
            for stdout, _ in outputs
            for match in re.findall(r"DynamoDB Local at (http://[\d.]+:\d+)", stdout)
        }
        assert len(endpoints) == 1
        assert _starts_logged(home) == 1
        servers = _servers_for(home)
        assert len(servers) == 1
        record = json.loads((state_dir(home) / SERVER_FILE_NAME).read_text())
        assert record["pid"] == servers[0].pid
        assert endpoints == {f"http://127.0.0.1:{record['port']}"}
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        stack_down(home)
    assert _servers_for(home) == []


def test_local_down_stops_the_server_and_leaves_no_process(tmp_path):
    home = tmp_path / "home"
    try:
        # GIVEN a running local database
        local_up(home)
        pid = json.loads((state_dir(home) / SERVER_FILE_NAME).read_text())["pid"]
        server = psutil.Process(pid)

        # WHEN it is brought down
        stopped = local_down(home)

        # THEN its process is gone, its record too, and a second down is a no-op
        assert stopped is True
        assert not server.is_running()
        assert _servers_for(home) == []
        assert not (state_dir(home) / SERVER_FILE_NAME).exists()
        assert local_down(home) is False
        assert local_status(home).running is False
    finally:
        local_down(home)


def test_local_down_never_signals_a_recycled_pid(tmp_path):
    # GIVEN a server.json whose pid now belongs to an unrelated process
    home = tmp_path / "home"
    state_dir(home).mkdir(parents=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"pid": bystander.pid, "port": 8000, "started_at": "2026-01-01T00:00:00+00:00"}
        (state_dir(home) / SERVER_FILE_NAME).write_text(json.dumps(record))

        # WHEN the local database is brought down, and its status asked
        stopped = local_down(home)

        # THEN nothing was stopped, the bystander lives, and the stale record is gone
        assert stopped is False
        assert bystander.poll() is None
        assert not (state_dir(home) / SERVER_FILE_NAME).exists()
        assert local_status(home).running is False
    finally:
        bystander.kill()
        bystander.wait()


def test_data_persists_across_down_and_up(tmp_path):
    home = tmp_path / "home"
    key = {"pk": {"S": "topic#persisted"}, "sk": {"S": "checkpoint"}}
    try:
        # GIVEN an item written to the local database
        client = local_client(local_up(home))
        create_table(client, "leanops-state")
        client.put_item(TableName="leanops-state", Item={**key, "position": {"S": "part-0001.jsonl:42"}})

        # WHEN the database is stopped and started again
        assert local_down(home) is True
        client = local_client(local_up(home))

        # THEN the item is still there
        item = client.get_item(TableName="leanops-state", Key=key, ConsistentRead=True)["Item"]
        assert item["position"] == {"S": "part-0001.jsonl:42"}
        assert _starts_logged(home) == 2
    finally:
        local_down(home)


def test_local_up_without_java_exits_1_with_one_line(tmp_path):
    # GIVEN a PATH without java
    home = tmp_path / "home"
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {**os.environ, ENV_HOME: str(home), "PATH": str(empty_bin)}

    # WHEN `leanops local up` runs
    result = subprocess.run(
        [*CLI, "local", "up"], env=env, capture_output=True, text=True, timeout=60, check=False
    )

    # THEN it fails with one clear line on stderr, no traceback, nothing on stdout, and no server
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("leanops: error: ")
    assert "Java" in lines[0] and "openjdk-17" in lines[0]
    assert "Traceback" not in result.stderr
    assert _servers_for(home) == []


def test_missing_jar_override_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DYNAMODB_LOCAL_JAR, str(tmp_path / "nowhere.jar"))
    with pytest.raises(LocalRuntimeError, match=ENV_DYNAMODB_LOCAL_JAR):
        find_jar(tmp_path)


@pytest.mark.parametrize(
    ("error", "code"),
    [(ConfigError("bad topics file"), 2), (InvalidInput("bad name"), 2), (LocalRuntimeError("no db"), 1)],
)
def test_run_command_maps_errors_to_exit_codes(error, code):
    @click.command()
    @run_command
    def command() -> None:
        raise error

    result = CliRunner().invoke(command, [])

    assert result.exit_code == code
    assert result.stderr == f"leanops: error: {error}\n"
    assert result.stdout == ""


def test_usage_error_exits_2():
    result = CliRunner().invoke(main, ["local", "sideways"])
    assert result.exit_code == 2
