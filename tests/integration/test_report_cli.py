"""`leanops report` as operators run it, on the local stack: the generated history of
tests/unit/test_report.py in the project's archive folder and its DynamoDB Local state table; the answers,
the chart, and bad input. Some archived items are there twice, and a run record could not be parsed:
each run counts once all the same."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml
from leanopsctl.analytics.engine import local_archive_root
from leanopsctl.local.dynamodb_local import local_client

from leanops.protocol.table import create_table
from tests.support.cli import finish
from tests.unit.test_report import SINCE, TOPICS, generate, place

pytestmark = pytest.mark.integration


@pytest.fixture
def reporting(project, dynamodb_local):
    """The project with the generated history: archived in <home>/archive, the rest in its state table."""
    root: Path = project["root"]
    entry = {"source": {"type": "files", "uri": "./data"}}
    topics = {
        name: {**entry, "sink": {"type": "files", "uri": f"./out/{name}"}}
        for name in (*TOPICS, "delta", "epsilon")
    }
    (root / "topics.yaml").write_text(yaml.safe_dump({"topics": topics}))
    client = local_client(dynamodb_local.endpoint_url)
    table = project["env"]["LEANOPS_STATE_TABLE"]
    create_table(client, table)
    history = generate()
    place(history, local_archive_root(project["env_home"]), client, table)
    return project, history


def test_report_answers_and_draws_on_the_local_stack(reporting, tmp_path):
    project, history = reporting
    leanops = project["leanops"]
    since = SINCE.date().isoformat()
    code, out, err = finish(leanops("report", "runs", "--since", since, "--json"))
    assert code == 0, err[-3000:]
    runs = json.loads(out)["runs"]
    # archived, live, both, archived twice: each run once; the unparsed record of a run is no run
    assert sum(r["runs"] for r in runs) == len(history.counted())
    assert history.twice and (local_archive_root(project["env_home"]) / "kind=unparsed").is_dir()

    chart = tmp_path / "lag.png"
    code, out, err = finish(leanops("report", "lag", "--since", since, "--png", str(chart)))
    assert code == 0, err[-3000:]
    assert "Lag per topic per hour" in out and f"wrote {chart}" in err
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">I", data[16:20])[0] >= 800
    assert len(data) > 10_000

    code, out, err = finish(
        leanops("report", "prove", "--since", since, "--object", "epsilon/out-000002.jsonl", "--json")
    )
    assert code == 0, err[-3000:]
    [commit] = json.loads(out)["prove"]
    assert (commit["seq"], commit["run_outcome"], commit["still_output"]) == (2, "processed", True)

    for args, message in (
        (("report", "lag", "--since", "soon"), "invalid --since 'soon'"),
        (("report", "failures", "--topic", "nosuch"), "unknown topic 'nosuch'"),
        (("report", "prove"), "give --position or --object"),
    ):
        code, out, err = finish(leanops(*args))
        assert (code, out) == (2, ""), (args, err[-2000:])
        assert err.count("\n") == 1 and message in err, err
