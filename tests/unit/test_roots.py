"""Data roots: what a stack may declare, and the push-time check of a topic against them."""

from __future__ import annotations

from pathlib import Path

import pytest
from leanopsctl.deploy.roots import check_topic, parse_parameters, parse_roots

from leanops.config import parse_topics
from leanops.errors import ConfigError


def topic(tmp_path: Path, source: dict, sink: dict):
    document = {"topics": {"t": {"source": source, "sink": sink}}}
    return parse_topics(document, tmp_path / "topics.yaml").topics["t"]


def test_roots_parse_from_the_stack_parameters() -> None:
    roots = parse_parameters(
        {"DataRoots": "s3://raw-bucket/telemetry/, s3://out-bucket/leanops/", "DataTables": "orders"}
    )
    assert roots.s3 == (("raw-bucket", "telemetry"), ("out-bucket", "leanops"))
    assert roots.tables == ("orders",)
    assert parse_parameters({}) == parse_roots()


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ("s3://raw-bucket/", "a whole bucket is not a data root"),
        ("s3://raw-bucket", "a whole bucket is not a data root"),
        ("s3://raw-bucket/telemetry", "end it with /"),
        ("s3://raw-bucket/*/", "wildcard or substitution"),
        ("s3://raw-bucket/tele?/", "wildcard or substitution"),
        ("s3://raw-bucket/${AWS::AccountId}/", "wildcard or substitution"),
        ("s3://Raw_Bucket/telemetry/", "not a valid bucket name"),
        ("s3://raw-bucket/a/b/", "one folder of its bucket, s3://raw-bucket/a/"),
        ("raw-bucket/telemetry/", "s3://bucket/folder/"),
    ],
)
def test_invalid_roots_are_refused_with_the_reason(root: str, message: str) -> None:
    with pytest.raises(
        ConfigError, match=f"DataRoots entry .*{message}".replace("?", r"\?").replace("$", r"\$")
    ):
        parse_roots([root])


def test_more_roots_than_the_template_has_slots_are_refused() -> None:
    with pytest.raises(ConfigError, match="at most 5 roots"):
        parse_roots([f"s3://raw-bucket/f{i}/" for i in range(6)])
    with pytest.raises(ConfigError, match="not a DynamoDB table name"):
        parse_roots(tables=["a*"])


def test_a_topic_inside_the_roots_passes(tmp_path: Path) -> None:
    roots = parse_roots(["s3://raw-bucket/telemetry/", "s3://out-bucket/leanops/"], ["orders"])
    check_topic(
        topic(
            tmp_path,
            {"type": "files", "uri": "s3://raw-bucket/telemetry/v1"},
            {"type": "files", "uri": "s3://out-bucket/leanops/t"},
        ),
        roots,
    )
    source = {
        "type": "dynamodb",
        "table": "orders",
        "partition_key": "k",
        "partition_value": "v",
        "sort_key": "s",
    }
    check_topic(topic(tmp_path, source, {"type": "files", "uri": "s3://out-bucket/leanops/"}), roots)


@pytest.mark.parametrize(
    ("source", "sink", "message"),
    [
        (
            "s3://raw-bucket/telemetry-old/x",
            "s3://out-bucket/leanops/t",
            "topic t: source s3://raw-bucket/telemetry-old/x is outside the stack's data roots; add the root "
            "s3://raw-bucket/telemetry-old/ to the DataRoots parameter",
        ),
        (
            "s3://raw-bucket/telemetry/",
            "s3://other/x/y",
            "topic t: sink s3://other/x/y is outside the stack's data roots; add the root s3://other/x/ "
            "to the DataRoots parameter",
        ),
        (
            "s3://raw-bucket/telemetry/",
            "./out",
            "topic t: sink .* is a local folder, which a deployed stack cannot reach",
        ),
    ],
)
def test_a_topic_outside_the_roots_is_refused_naming_the_root_to_add(
    tmp_path: Path, source: str, sink: str, message: str
) -> None:
    roots = parse_roots(["s3://raw-bucket/telemetry/", "s3://out-bucket/leanops/"])
    config = topic(tmp_path, {"type": "files", "uri": source}, {"type": "files", "uri": sink})
    with pytest.raises(ConfigError, match=message) as caught:
        check_topic(config, roots)
    assert "\n" not in str(caught.value)


def test_a_dynamodb_source_outside_the_tables_is_refused(tmp_path: Path) -> None:
    source = {
        "type": "dynamodb",
        "table": "orders",
        "partition_key": "k",
        "partition_value": "v",
        "sort_key": "s",
    }
    config = topic(tmp_path, source, {"type": "files", "uri": "s3://out-bucket/leanops/"})
    with pytest.raises(
        ConfigError, match="source table orders is outside the stack's data roots; add it to the DataTables"
    ):
        check_topic(config, parse_roots(["s3://out-bucket/leanops/"]))
