"""`leanops init DIR`: a new project that loads and runs as written, never an overwrite, and the template
that ships with the package (scaffold/, package data of leanopsctl)."""

from __future__ import annotations

import errno
import fnmatch
import importlib.util
import json
import logging
import os
import re
import tomllib
from pathlib import Path, PurePosixPath

import pytest
from click.testing import CliRunner
from leanopsctl.cli.init import init
from leanopsctl.local.template import read_template
from leanopsctl.project import PROJECT_FILES, SCAFFOLD, init_project, packaged_template, stack_name_for
from leanopsctl.target import template_for

from leanops.batch import ProcessorContext
from leanops.config import load_topics

REPO = Path(__file__).resolve().parents[2]
PROJECT = {
    "topics.yaml",
    "processors/__init__.py",
    "processors/events.py",
    "data/events/2026-01-15-09.jsonl",
    "data/events/2026-01-15-10.jsonl",
    "README.md",
    ".gitignore",
    "samconfig.toml",
}
TEMPLATE = {"template.yaml", "statemachines/topic_run.asl.json"}


def invoke(*args: str):
    return CliRunner().invoke(init, [*args])


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def load_processor(folder: Path):
    """The scaffolded processor module, loaded from its file (no `processors` left in sys.modules)."""
    spec = importlib.util.spec_from_file_location("scaffolded_events", folder / "processors" / "events.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_init_writes_a_project_whose_topics_file_loads(tmp_path):
    folder = tmp_path / "my_project"
    # WHEN `leanops init` makes a project in a folder that does not exist yet
    result = invoke(str(folder))
    assert init.name == "init"  # `leanops init` once registered in leanopsctl.cli
    # THEN it writes the project's files, and only those, and says what it made and what to run next
    assert result.exit_code == 0, result.stderr
    assert files_in(folder) == PROJECT
    assert all(f"  {name}\n" in result.stdout for name in PROJECT)
    assert result.stdout.rstrip().endswith(f"next: cd {folder} && leanops run events   (then README.md)")
    # AND its topics file loads: one topic over the sample data, into out/, with the scaffold's processor
    topics = load_topics(folder / "topics.yaml")
    events = topics.topic("events")
    assert list(topics.topics) == ["events"]
    assert events.source.uri == str(folder / "data" / "events")
    assert (events.sink.uri, events.sink.format) == (str(folder / "out" / "events"), "jsonl")
    assert (events.processor, events.timestamp_field, events.on_malformed) == (
        "processors.events:process",
        "ts",
        "quarantine",
    )
    # AND, with no template of its own, the project runs the one that ships with leanops
    assert template_for(topics) == packaged_template()
    # AND the stacks are named after the folder; git ignores local state, SAM builds and local output
    samconfig = tomllib.loads((folder / "samconfig.toml").read_text())
    assert samconfig["default"]["global"]["parameters"]["stack_name"] == "my-project-dev"
    assert samconfig["prod"]["global"]["parameters"]["stack_name"] == "my-project-prod"
    assert {".leanops/", ".aws-sam/", "out/"} <= set((folder / ".gitignore").read_text().split())
    readme = (folder / "README.md").read_text()
    assert readme.startswith("# my_project\n") and "@" not in readme.replace("`@", "")
    for command in ("leanops run events", "leanops status", "leanops output events", "leanops local logs"):
        assert command in readme
    assert "--with-template" in readme and "| `template.yaml` |" not in readme


def test_the_scaffolded_processor_rejects_the_invalid_sample_and_derives_a_field(tmp_path):
    init_project(tmp_path / "p")
    records = [
        json.loads(line)
        for path in sorted((tmp_path / "p" / "data" / "events").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    ctx = ProcessorContext("events", "origin", 1, logging.getLogger("test"), records=records)
    out = load_processor(tmp_path / "p").process(records, ctx)
    assert [r["event_id"] for r in out] == ["evt-0001", "evt-0002", "evt-0004", "evt-0005", "evt-0006"]
    assert [r["amount_cents"] for r in out] == [1250, 300, 99, 25000, 725]
    assert [(r.raw["event_id"], r.reason) for r in ctx.rejects] == [
        ("evt-0003", "amount '12,50' is not a number")
    ]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"amount": 1}, "event_id is missing or not a non-empty string"),
        ({"event_id": "e", "amount": True}, "amount True is not a number"),
        ({"event_id": "e"}, "amount None is not a number"),
        ({"event_id": "e", "amount": float("nan")}, "amount nan is not a finite number"),
        ({"event_id": "e", "amount": -1}, "amount -1 is negative"),
        ({"event_id": "e", "amount": 0}, None),
    ],
)
def test_the_scaffolded_processor_names_the_problem(tmp_path, record, reason):
    init_project(tmp_path / "p")
    assert load_processor(tmp_path / "p").problem(record) == reason


def test_init_into_the_working_folder_says_to_run_from_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(".")
    assert result.exit_code == 0, result.stderr
    assert files_in(tmp_path) == PROJECT
    assert result.stdout.rstrip().endswith("next: leanops run events   (then README.md)")
    assert f'stack_name = "{stack_name_for(tmp_path.name)}-dev"' in (tmp_path / "samconfig.toml").read_text()


def test_init_into_a_folder_with_other_files_keeps_them(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "notes.txt").write_text("mine")
    result = invoke(str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert files_in(tmp_path) == PROJECT | {".git/HEAD", "notes.txt"}
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("existing", "named"),
    [
        ("processors/events.py", "processors/events.py"),  # a file it would write
        ("README.md", "README.md"),
        ("data/events", "data/events"),  # a file where it needs a folder
    ],
)
def test_a_file_in_the_way_refuses_the_whole_init_and_writes_nothing(tmp_path, existing, named):
    folder = tmp_path / "p"
    (folder / existing).parent.mkdir(parents=True)
    (folder / existing).write_text("keep me")
    before = {p: p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}
    # WHEN init would write over it
    result = invoke(str(folder))
    # THEN it refuses: exit 2, one line naming the file and the fix, and nothing changed
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        f"leanops: error: {folder / named} already exists, and leanops init never overwrites: move it away, "
        "or init another folder (nothing was written)\n"
    )
    assert {p: p.read_bytes() if p.is_file() else None for p in folder.rglob("*")} == before


def test_a_conflict_with_the_template_refuses_before_anything_is_written(tmp_path):
    (tmp_path / "statemachines").mkdir()
    (tmp_path / "statemachines" / "topic_run.asl.json").write_text("{}")
    result = invoke(str(tmp_path), "--with-template")
    assert result.exit_code == 2 and "statemachines/topic_run.asl.json already exists" in result.stderr
    assert files_in(tmp_path) == {"statemachines/topic_run.asl.json"}


def test_a_file_named_as_the_folder_is_a_usage_error(tmp_path):
    (tmp_path / "p").write_text("")
    result = invoke(str(tmp_path / "p"))
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"leanops: error: {tmp_path / 'p'} exists and is not a folder: name a new or empty folder\n"
    )


def test_a_failed_write_removes_what_init_wrote(tmp_path, monkeypatch):
    folder = tmp_path / "deep" / "p"
    real_open = Path.open
    written = []

    def open_(self, mode="r", *args, **kwargs):
        if folder in self.parents:
            if self.name == "2026-01-15-10.jsonl":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
            written.append(self)
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    result = invoke(str(folder))
    # THEN exit 1 (the operation failed), one line, and no file or folder of the init is left
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "No space left on device" in result.stderr
    assert len(written) == 4 and list(tmp_path.iterdir()) == []


def test_with_template_copies_the_shipped_template(tmp_path):
    folder = tmp_path / "p"
    result = invoke(str(folder), "--with-template")
    assert result.exit_code == 0, result.stderr
    assert files_in(folder) == PROJECT | TEMPLATE
    # THEN the project's own template is the one it runs, and its DefinitionUri is the copied ASL
    topics = load_topics(folder / "topics.yaml")
    assert template_for(topics) == folder / "template.yaml"
    machine = read_template(folder / "template.yaml").state_machine("TopicRunStateMachine")
    assert machine.definition_path == (folder / "statemachines" / "topic_run.asl.json").resolve()
    assert (
        machine.definition_path.read_bytes() == (REPO / "statemachines" / "topic_run.asl.json").read_bytes()
    )
    # AND it is the shipped template byte for byte: nothing in it is per topic (topics are pushed)
    assert (folder / "template.yaml").read_bytes() == packaged_template().read_bytes()
    assert "| `template.yaml` |" in (folder / "README.md").read_text()


@pytest.mark.parametrize(
    ("folder", "stem"),
    [
        ("my-project", "my-project"),
        ("My Project_2", "My-Project-2"),
        ("2026 pipelines", "leanops-2026-pipelines"),
        ("ünïcode", "n-code"),
        ("---", "leanops"),
        ("a" * 200, "a" * 123),
        ("a" * 122 + " b", "a" * 122),  # cut, and no hyphen left at the end
    ],
)
def test_stack_names_follow_cloudformations_rules(folder, stem):
    assert stack_name_for(folder) == stem
    for suffix in ("-dev", "-prod"):
        name = stem + suffix
        assert re.fullmatch(r"[A-Za-z][-A-Za-z0-9]*", name) and len(name) <= 128


# --- what ships: one source of truth, and every scaffold file in the package data --------------------------


def test_the_shipped_template_is_the_repositorys_through_links():
    # In a checkout the scaffold's template and state machines are links to the root's: no second copy
    assert packaged_template() == SCAFFOLD / "template.yaml"
    assert (SCAFFOLD / "template.yaml").resolve() == REPO / "template.yaml"
    assert (SCAFFOLD / "statemachines").resolve() == REPO / "statemachines"
    machine = read_template(packaged_template()).state_machine("TopicRunStateMachine")
    assert machine.definition_path == REPO / "statemachines" / "topic_run.asl.json"


def test_every_file_that_ships_is_package_data():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "leanopsctl"
    ]
    package = SCAFFOLD.parent

    def shipped(path: Path) -> bool:
        parts = PurePosixPath(path.relative_to(package).as_posix()).parts
        return any(
            len(parts) == len(PurePosixPath(p).parts)
            and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, PurePosixPath(p).parts, strict=True))
            for p in patterns
        )

    scaffold = [p for p in PROJECT_FILES.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    state_machines = list((SCAFFOLD / "statemachines").glob("*.asl.json"))
    assert scaffold and state_machines
    assert [p for p in [*scaffold, *state_machines, SCAFFOLD / "template.yaml"] if not shipped(p)] == []
