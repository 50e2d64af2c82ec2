"""The topics file: schema, resolution of relative paths, one clear error per mistake."""

from __future__ import annotations

import pytest

from leanops.config import DEFAULT_MAX_BATCHES_PER_RUN, load_topics, parse_topics
from leanops.errors import ConfigError

VALID = """
topics:
  vehicle_telemetry:
    source: {type: files, uri: ./data}
    sink: {type: files, uri: s3://my-bucket/out/vt}
    batch_size: 700
"""


def write(tmp_path, text):
    path = tmp_path / "topics.yaml"
    path.write_text(text)
    return path


def test_valid_file_resolves_relative_directories_against_its_folder(tmp_path):
    topics = load_topics(write(tmp_path, VALID))
    topic = topics.topic("vehicle_telemetry")
    assert topic.source.uri == str(tmp_path / "data")
    assert topic.sink.uri == "s3://my-bucket/out/vt" and topic.sink.is_s3
    assert (topic.batch_size, topic.max_batches_per_run, topic.processor) == (
        700,
        DEFAULT_MAX_BATCHES_PER_RUN,
        None,
    )


def test_config_path_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LEANOPS_CONFIG", str(write(tmp_path, VALID)))
    assert "vehicle_telemetry" in load_topics().topics


def test_the_repository_topics_file_is_valid():
    assert load_topics("topics.yaml").topic("vehicle_telemetry").schedule == "rate(5 minutes)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("topics: {}", "at least one topic"),
        ("other: 1", "one top-level key `topics:`"),
        ("topics: {t: {source: {type: files, uri: d}}}", "missing key 'sink'"),
        (
            "topics: {t: {source: {type: files, uri: d}, sink: {type: files, uri: o}, colour: red}}",
            "unknown key 'colour'",
        ),
        (
            "topics: {'a b': {source: {type: files, uri: d}, sink: {type: files, uri: o}}}",
            "invalid topic name 'a b'",
        ),
        (
            "topics: {t: {source: {type: kafka, uri: d}, sink: {type: files, uri: o}}}",
            "type 'kafka' is not supported",
        ),
        (
            "topics: {t: {source: {type: files, uri: 'http://x'}, sink: {type: files, uri: o}}}",
            "local directory or s3",
        ),
        (
            "topics: {t: {source: {type: files, uri: 's3://B_ad'}, sink: {type: files, uri: o}}}",
            "not a valid s3",
        ),
        (
            "topics: {t: {source: {type: files, uri: d}, sink: {type: files, uri: o}, batch_size: 0}}",
            "batch_size 0",
        ),
        (
            "topics: {t: {source: {type: files, uri: d}, sink: {type: files, uri: o}, lease_seconds: -5}}",
            "lease_seconds",
        ),
        (
            "topics: {t: {source: {type: files, uri: d}, sink: {type: files, uri: o}, processor: 'x'}}",
            "package.module",
        ),
        (
            "topics: {t: {source: {type: files, uri: d}, sink: {type: files, uri: o}, schedule: 'often'}}",
            "schedule",
        ),
        (
            "topics: {t: {source: {type: files, uri: d}, sink: {type: files, uri: o},"
            " max_batches_per_run: 99999}}",
            "25,000",
        ),
        (
            "topics: {t: {source: {type: files, uri: d}, sink: {type: files, uri: o},"
            " max_batches_per_run: 2001}}",
            "max_batches_per_run 2001 is above 2000",
        ),
        (
            "topics: {t: {source: {type: dynamodb, table: ab, partition_key: pk, partition_value: p,"
            " sort_key: sk}, sink: {type: files, uri: o}}}",
            "table 'ab' is not a DynamoDB table name",
        ),
        (
            "topics: {t: {source: {type: dynamodb, table: 'bad name!', partition_key: pk, partition_value: p,"
            " sort_key: sk}, sink: {type: files, uri: o}}}",
            "table 'bad name!' is not a DynamoDB table name",
        ),
        ("topics: [", "not valid YAML at line"),
        (
            "topics: {t: {source: {type: files, uri: d}, sink: {type: files, uri: o, format: csv}}}",
            "format 'csv' must be one of: jsonl, parquet",
        ),
        (
            "topics: {t: {source: {type: files, uri: d}, sink: {type: files, uri: o, compression: zstd}}}",
            "compression 'zstd' is not available for jsonl",
        ),
        (
            "topics: {t: {source: {type: files, uri: d, format: parquet}, sink: {type: files, uri: o}}}",
            "unknown key 'format' for type files",
        ),
        (
            "topics: {t: {source: {type: dynamodb, table: events, partition_key: pk},"
            " sink: {type: files, uri: o}}}",
            "missing key 'partition_value' for type dynamodb",
        ),
        (
            "topics: {t: {source: {type: files, uri: d}, sink: {type: dynamodb, table: x}}}",
            "type 'dynamodb' is not supported",
        ),
        (
            "topics: {t: {source: {type: files, uri: d}, sink: {type: files, uri: o}, on_malformed: skip}}",
            "on_malformed 'skip' must be one of: quarantine, fail",
        ),
        (
            "topics: {t: {source: {type: files, uri: d}, sink: {type: files, uri: o},"
            " late_lookback_batches: -1}}",
            "late_lookback_batches must be a whole number",
        ),
        (
            "topics: {t: {source: {type: files, uri: d}, sink: {type: files, uri: o}, timestamp_field: 3}}",
            "timestamp_field must be the name",
        ),
    ],
)
def test_mistakes_are_one_clear_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as error:
        load_topics(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_new_keys_resolve_with_defaults(tmp_path):
    text = (
        "topics:\n"
        "  t:\n"
        "    source: {type: dynamodb, table: events, partition_key: device, partition_value: d-1,"
        " sort_key: ts}\n"
        "    sink: {type: files, uri: s3://bucket/out, format: parquet}\n"
        "    timestamp_field: ts\n"
    )
    topic = load_topics(write(tmp_path, text)).topic("t").to_json()
    assert topic["source"] == {
        "type": "dynamodb",
        "table": "events",
        "partition_key": "device",
        "partition_value": "d-1",
        "sort_key": "ts",
    }
    assert topic["sink"] == {
        "type": "files",
        "uri": "s3://bucket/out",
        "format": "parquet",
        "compression": "snappy",
    }
    assert (topic["timestamp_field"], topic["on_malformed"], topic["late_lookback_batches"]) == (
        "ts",
        "quarantine",
        20,
    )


def test_missing_file_says_how_to_fix_it(tmp_path):
    with pytest.raises(ConfigError, match="not found: create it, or pass --config"):
        load_topics(tmp_path / "nope.yaml")


def test_unknown_topic_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown topic 'other'.*topics: vehicle_telemetry"):
        load_topics(write(tmp_path, VALID)).topic("other")


def test_the_batch_cap_and_table_names_at_their_limits_are_accepted(tmp_path):
    path = write(
        tmp_path,
        "topics: {t: {source: {type: dynamodb, table: abc, partition_key: pk, partition_value: p,"
        " sort_key: sk}, sink: {type: files, uri: o}, max_batches_per_run: 2000}}",
    )
    topic = load_topics(path).topics["t"]
    assert (topic.max_batches_per_run, topic.source.table) == (2000, "abc")


@pytest.mark.parametrize(
    ("first", "second", "refused"),
    [
        ("./out/a", "./out/a", True),  # one folder
        ("./out", "./out/_quarantine", True),  # one inside the other: the outer's clean-up lists it
        ("s3://lake/out", "s3://lake/out/b", True),
        ("./out/a", "./out/b", False),  # siblings
        ("s3://lake/out", "s3://lake/out2", False),  # prefixes compare at "/" boundaries
    ],
)
def test_two_topics_never_write_overlapping_sinks(tmp_path, first, second, refused):
    text = f"""
topics:
  a: {{source: {{type: files, uri: ./in}}, sink: {{type: files, uri: "{first}"}}}}
  b: {{source: {{type: files, uri: ./in}}, sink: {{type: files, uri: "{second}"}}}}
"""
    if refused:
        with pytest.raises(ConfigError, match="topics 'a' and 'b' write overlapping sinks"):
            load_topics(write(tmp_path, text))
    else:
        assert sorted(load_topics(write(tmp_path, text)).topics) == ["a", "b"]


def test_a_topic_may_read_what_another_writes(tmp_path):
    text = """
topics:
  a: {source: {type: files, uri: ./in}, sink: {type: files, uri: ./out/a}}
  b: {source: {type: files, uri: ./out/a}, sink: {type: files, uri: ./out/b}}
"""
    assert sorted(load_topics(write(tmp_path, text)).topics) == ["a", "b"]


def test_overlapping_sinks_are_found_among_many_with_names_between_them(tmp_path):
    # GIVEN a folder holding another topic's sink, with sibling sinks sorting between the two
    sinks = {f"t{n}": f"./out/a{n}" for n in range(50)} | {"outer": "./out", "inner": "./out/zz/inner"}
    topics = {
        name: {"source": {"type": "files", "uri": "./in"}, "sink": {"type": "files", "uri": uri}}
        for name, uri in sinks.items()
    }
    with pytest.raises(ConfigError, match="write overlapping sinks"):
        parse_topics({"topics": topics}, tmp_path / "topics.yaml")
    # AND without the outer folder they are all apart
    del topics["outer"]
    assert len(parse_topics({"topics": topics}, tmp_path / "topics.yaml").topics) == 51
