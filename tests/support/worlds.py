"""A small files topic driven through the task functions, as the state machine drives them, on the in-memory
store: the world of the task-level unit tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leanops import tasks
from leanops.config import parse_topics
from leanops.protocol import Protocol
from leanops.protocol.memory import InMemoryStore
from tests.support.clock import FakeClock


def three_part_topic(root: Path, **settings: Any) -> dict[str, Any]:
    """Topic ``t``: three objects of 5 records (``{"i": 0}`` .. ``{"i": 14}``) under ``root/in``, its sink
    ``root/out``; ``settings`` override batch size 4, lease 30 s and 10 batches a run."""
    source = root / "in"
    source.mkdir()
    for part in range(3):
        (source / f"part-{part}.jsonl").write_text(
            "".join(json.dumps({"i": part * 5 + i}) + "\n" for i in range(5))
        )
    topic = {
        "source": {"type": "files", "uri": str(source)},
        "sink": {"type": "files", "uri": str(root / "out")},
        "batch_size": 4,
        "lease_seconds": 30,
        "max_batches_per_run": 10,
        **settings,
    }
    clock = FakeClock()
    return {
        "topics": parse_topics({"topics": {"t": topic}}, root / "topics.yaml"),
        "protocol": Protocol(InMemoryStore(), clock=clock),
        "clock": clock,
        "out": root / "out",
        "root": root,
    }


def start(
    world: dict[str, Any], execution: str = "exec-1", *, started: str | None = None, **input_: Any
) -> dict[str, Any]:
    """The Acquire task on ``{"topic": "t", **input_}`` (``started``: the execution's start time, as
    ``$$.Execution.StartTime``); its run state."""
    event = {"input": {"topic": "t", **input_}, "execution": execution, "execution_name": execution}
    if started is not None:
        event["started"] = started
    return tasks.acquire(event, world["protocol"], world["topics"]).to_json()


def run(
    world: dict[str, Any],
    execution: str = "exec-1",
    remaining_ms=lambda: 60_000,
    *,
    started: str | None = None,
    **input_: Any,
) -> dict:
    """Acquire -> (ProcessBatch -> AdvanceCheckpoint)* as the ASL does; returns the final state."""
    state = start(world, execution, started=started, **input_)
    while state["outcome"] == "acquired" and not state["released"]:
        state["batch"] = tasks.process(
            tasks.RunState.from_json(state), world["protocol"], world["topics"], remaining_ms
        ).to_json()
        state = tasks.advance(
            tasks.RunState.from_json(state), state["batch"], world["protocol"], world["topics"]
        ).to_json()
    return state
