"""Pushed topic settings on DynamoDB Local (decision 0013): racing pushes write each version once, and the
settings read back as pushed (a Parquet schema's column order included)."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from leanopsctl import push

from leanops.config import parse_topics
from leanops.protocol.dynamodb import DynamoDBStore
from leanops.registry import PushedTopics


def topics(tmp_path: Path, batch_size: int):
    topic = {
        "source": {"type": "files", "uri": str(tmp_path / "in")},
        "sink": {"type": "files", "uri": "s3://lake/t", "format": "parquet"},
        "schema": {"zeta": "string", "alpha": "int64", "mid": "timestamp"},
        "batch_size": batch_size,
    }
    return parse_topics({"topics": {"t": topic}}, tmp_path / "topics.yaml")


def test_settings_read_back_as_pushed_column_order_included(state_table, tmp_path):
    store = DynamoDBStore(state_table.name, state_table.client)
    file = topics(tmp_path, 7)
    push.apply(push.plan(file, store), store, actor="ann", prune=False)
    assert PushedTopics(store, tmp_path).topic("t") == file.topic("t")
    assert [c.name for c in PushedTopics(store, tmp_path).topic("t").schema.columns] == [
        "zeta",
        "alpha",
        "mid",
    ]
    assert not push.plan(file, store).writes  # the digest of what DynamoDB returns is the pushed one


def test_racing_pushes_write_each_version_once(state_table, ddb_client_factory, tmp_path):
    """Threads with clients of their own push different settings of one topic, each from the same read:
    one push wins each version; the others are refused and write nothing."""
    racers, rounds = 6, 5
    stores = [DynamoDBStore(state_table.name, ddb_client_factory()) for _ in range(racers)]
    barrier = threading.Barrier(racers)

    def racer(index: int) -> list[bool]:
        won = []
        for round_no in range(rounds):
            plan = push.plan(topics(tmp_path, 100 * round_no + index + 1), stores[index])
            barrier.wait()
            try:
                push.apply(plan, stores[index], actor=f"racer-{index}", prune=False)
                won.append(True)
            except push.PushConflict:
                won.append(False)
            barrier.wait()
        return won

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(racers) as pool:
            results = list(pool.map(racer, range(racers)))
    finally:
        sys.setswitchinterval(previous)
    assert [sum(r[n] for r in results) for n in range(rounds)] == [1] * rounds
    history = list(stores[0].topic_history("t", limit=None))
    assert [h.version for h in history] == list(range(rounds, 0, -1))
    winners = {n: next(i for i in range(racers) if results[i][n]) for n in range(rounds)}
    assert [h.pushed_by for h in reversed(history)] == [f"racer-{winners[n]}" for n in range(rounds)]
    current = stores[0].read_pushed_topic("t")
    assert (
        current.version == rounds
        and current.settings["batch_size"] == 100 * (rounds - 1) + winners[rounds - 1] + 1
    )
