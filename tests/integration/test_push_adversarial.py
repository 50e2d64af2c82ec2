"""Adversarial review of `leanops topics push` on DynamoDB Local (decision 0013): each test states what
should hold; the ones that fail today show a problem (see the review report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from leanopsctl import push

from leanops.config import parse_topics
from leanops.errors import ConfigError
from leanops.protocol.dynamodb import DynamoDBStore


def topic(tmp_path: Path, name: str, **settings: Any) -> dict[str, Any]:
    return {
        "source": {"type": "files", "uri": str(tmp_path / "in")},
        "sink": {"type": "files", "uri": f"s3://lake/{name}"},
        **settings,
    }


def test_a_topic_too_large_to_run_is_refused_before_any_topic_is_written(state_table, tmp_path):
    """0013: a push 'validates the whole file first'. Settings too large for a run's state (Step Functions:
    256 KB) or for an item (DynamoDB: 400 KB) are refused before any topic is written, naming the topic:
    a declared schema has a column limit, and a push a size limit on each topic's settings."""
    store = DynamoDBStore(state_table.name, state_table.client)

    def file(columns: int, name_length: int) -> Any:
        schema = {f"c{i:05d}_" + "x" * name_length: "string" for i in range(columns)}
        wide = topic(
            tmp_path,
            "wide",
            sink={"type": "files", "uri": "s3://lake/wide", "format": "parquet"},
            schema=schema,
        )
        return parse_topics(
            {"topics": {"small": topic(tmp_path, "small", batch_size=5), "wide": wide}},
            tmp_path / "topics.yaml",
        )

    with pytest.raises(
        ConfigError, match="topic 'wide': schema: schema declares 1500 columns, over the 1000"
    ):
        push.apply(push.plan(file(1500, 300), store), store, actor="ann", prune=False)  # ~470 KB
    with pytest.raises(ConfigError, match=r"topic .wide.: its settings take .* over the 32,768"):
        push.apply(push.plan(file(900, 300), store), store, actor="ann", prune=False)  # ~280 KB
    assert list(store.pushed_topics()) == []


class LostAnswer:
    """A DynamoDB client whose first TransactWriteItems lands but whose answer is lost, so it is sent again
    (what botocore's retry does after a read timeout)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.lost = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def transact_write_items(self, **request: Any) -> Any:
        if not self.lost:
            self.lost = True
            self.client.transact_write_items(**request)  # lands; the answer never arrives
        return self.client.transact_write_items(**request)  # the retry


@pytest.mark.parametrize("first_push", [True, False], ids=["new topic", "changed topic"])
def test_a_push_whose_answer_was_lost_is_recognised_as_its_own(state_table, tmp_path, first_push):
    """I7 for pushes: a retried transaction that already landed must not be reported as another push's.
    Today the retry fails its condition (the version moved, by itself) and the operator is told 'another
    push changed it meanwhile ... push again' (exit 1) although nobody else pushed."""
    store = DynamoDBStore(state_table.name, state_table.client)
    if not first_push:
        first = parse_topics({"topics": {"t": topic(tmp_path, "t")}}, tmp_path / "topics.yaml")
        push.apply(push.plan(first, store), store, actor="ann", prune=False)
    flaky = DynamoDBStore(state_table.name, LostAnswer(state_table.client))
    file = parse_topics({"topics": {"t": topic(tmp_path, "t", batch_size=9)}}, tmp_path / "topics.yaml")
    push.apply(push.plan(file, flaky), flaky, actor="ann", prune=False)
    assert store.read_pushed_topic("t").settings["batch_size"] == 9


def test_a_conflict_on_a_new_topic_names_the_version_found(state_table, ddb_client_factory, tmp_path):
    """Two operators add the same topic: the loser is told '(now version None)' because the first push's
    Put (new_item) does not return the item it found (no ReturnValuesOnConditionCheckFailure)."""
    mine = DynamoDBStore(state_table.name, ddb_client_factory())
    theirs = DynamoDBStore(state_table.name, ddb_client_factory())
    file = parse_topics({"topics": {"t": topic(tmp_path, "t")}}, tmp_path / "topics.yaml")
    my_plan, their_plan = push.plan(file, mine), push.plan(file, theirs)
    push.apply(their_plan, theirs, actor="them", prune=False)
    with pytest.raises(push.PushConflict) as refused:
        push.apply(my_plan, mine, actor="me", prune=False)
    assert "now version 1" in str(refused.value), str(refused.value)


def test_a_removed_then_re_added_topic_continues_its_history(state_table, tmp_path):
    """Held up: removal writes a `removed` version; re-adding continues after it, never reusing a version."""
    store = DynamoDBStore(state_table.name, state_table.client)
    path = tmp_path / "topics.yaml"
    both = parse_topics({"topics": {"a": topic(tmp_path, "a"), "b": topic(tmp_path, "b")}}, path)
    only_a = parse_topics({"topics": {"a": topic(tmp_path, "a")}}, path)
    push.apply(push.plan(both, store), store, actor="ann", prune=False)
    push.apply(push.plan(only_a, store), store, actor="ann", prune=True)
    push.apply(push.plan(both, store), store, actor="ann", prune=False)
    history = list(store.topic_history("b", limit=None))
    assert [(h.version, h.removed) for h in history] == [(3, False), (2, True), (1, False)]
    assert store.read_pushed_topic("b").version == 3


def test_pushed_topics_read_every_page(state_table, tmp_path):
    """Held up: more pushed topics than one 1 MB Query page holds are all read (LastEvaluatedKey)."""
    store = DynamoDBStore(state_table.name, state_table.client)
    schema = {f"c{i:04d}_" + "y" * 100: "string" for i in range(250)}  # ~28 KB a topic
    topics = {
        f"t{n:02d}": topic(
            tmp_path,
            f"t{n:02d}",
            sink={"type": "files", "uri": f"s3://lake/t{n:02d}", "format": "parquet"},
            schema=schema,
        )
        for n in range(60)
    }  # ~1.7 MB: two pages at least
    file = parse_topics({"topics": topics}, tmp_path / "topics.yaml")
    push.apply(push.plan(file, store), store, actor="ann", prune=False)
    assert sorted(p.name for p in store.pushed_topics()) == sorted(topics)
    assert not push.plan(file, store).writes
