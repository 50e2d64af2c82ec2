"""Source and config hygiene: bad input is reported with one clear line, never hangs, is never skipped
silently, and never blocks the topic (symlinks, FIFOs, names that are not UTF-8, corrupt gzip, overlapping
source and sink, positions, S3 listing cost)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import zlib
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from leanops.config import Endpoint, check_no_overlap, load_topics
from leanops.data.files import FilesSource
from leanops.data.positions import parse_position
from leanops.data.storage import NOT_UTF8, LocalStore, S3Store
from leanops.errors import ConfigError, SourceError, UnreadableObject
from tests.support import stores

world = stores.world  # the fixture: an empty store, local and in moto's S3


def lines(*records: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def read_all(source: FilesSource, limit: int = 100) -> tuple[list[dict], list[dict]]:
    """Every record and every skipped entry of a source, batch after batch from the beginning."""
    records: list[dict] = []
    skipped: list[dict] = []
    position = None
    for _ in range(1000):  # a loop that never ends would be a bug: fail, do not hang
        batch = source.read(position, limit=limit)
        records += batch.records
        skipped += [entry for entry in batch.skipped if entry not in skipped]
        if not batch.more:
            return records, skipped
        position = batch.end
    raise AssertionError("the source never ran dry")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    (folder / "d").mkdir(parents=True)
    (folder / "d" / "a.jsonl").write_bytes(lines({"i": 0}, {"i": 1}))
    return folder


# 1. A sink equal to, inside, or holding its source is refused when the topics file loads.


def topics_file(tmp_path: Path, source: str, sink: str) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(
        f"topics:\n  t:\n    source: {{type: files, uri: '{source}'}}\n"
        f"    sink: {{type: files, uri: '{sink}'}}\n"
    )
    return path


@pytest.mark.parametrize(
    ("source", "sink"),
    [
        ("./data", "./data"),
        ("./data", "./data/out"),  # sink inside the source
        ("./data/in", "./data"),  # source inside the sink
        ("./data", "./data/../data/"),
        ("s3://bkt/data", "s3://bkt/data"),
        ("s3://bkt/data", "s3://bkt/data/"),
        ("s3://bkt/data", "s3://bkt/data/out"),
        ("s3://bkt/data/in", "s3://bkt/data"),
        ("s3://bkt", "s3://bkt/out"),  # a bucket root holds everything in the bucket
        ("s3://bkt/in", "s3://bkt/"),
    ],
)
def test_a_sink_overlapping_its_source_is_refused_with_one_line(tmp_path, source, sink):
    # GIVEN a topic whose sink and source overlap
    path = topics_file(tmp_path, source, sink)
    # WHEN the topics file loads, THEN one line names the file, the topic, both uris and the fix
    with pytest.raises(ConfigError) as refused:
        load_topics(path)
    message = str(refused.value)
    assert "\n" not in message
    assert str(path) in message and "topic 't'" in message and "outside the source" in message
    topic_uris = [u if u.startswith("s3://") else str((tmp_path / u).resolve()) for u in (source, sink)]
    assert all(uri in message for uri in topic_uris)


def test_a_sink_reached_through_a_symlinked_folder_overlaps(tmp_path):
    # GIVEN a sink inside the source, named through a symlink to the source folder
    (tmp_path / "data").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "data", target_is_directory=True)
    path = topics_file(tmp_path, "./data", str(tmp_path / "alias" / "out"))
    # WHEN / THEN
    with pytest.raises(ConfigError, match="overlaps source"):
        load_topics(path)


@pytest.mark.parametrize(
    ("source", "sink"),
    [
        ("./data", "./data2"),
        ("./data", "./out"),
        ("s3://bkt/data", "s3://bkt/data2"),
        ("s3://bkt/data", "s3://other/data"),
        ("s3://bkt/data", "./data"),
    ],
)
def test_siblings_do_not_overlap(tmp_path, source, sink):
    topic = load_topics(topics_file(tmp_path, source, sink)).topic("t")
    assert topic.sink.uri.endswith(sink.lstrip("."))


def test_check_no_overlap_ignores_a_dynamodb_source():
    check_no_overlap(Endpoint("dynamodb", table="events"), Endpoint("files", "s3://bkt/x"), "here")


# 2. A local source reads regular files inside its root only, and reports what it passes over.


def test_a_symlinked_file_outside_the_root_is_not_read_but_reported(tmp_path, root):
    # GIVEN a symlink in the source to a file outside it, and one to a file inside it
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(lines({"secret": True}))
    (root / "link.jsonl").symlink_to(secret)
    (root / "alias.jsonl").symlink_to(root / "d" / "a.jsonl")
    source = FilesSource(LocalStore(root))
    # WHEN it is read
    batch = source.read(None, limit=100)
    # THEN the outside file is never read, and the batch reports it once; the inside link is an object
    assert {"secret": True} not in batch.records
    assert batch.records == [{"i": 0}, {"i": 1}, {"i": 0}, {"i": 1}]
    assert batch.keys == ["alias.jsonl", "d/a.jsonl"]
    assert len(batch.skipped) == 1 and batch.skipped[0]["key"] == "link.jsonl"
    assert "outside the source folder" in batch.skipped[0]["reason"]
    # AND opening it by its key is refused too, as is a key that climbs out
    for key in ("link.jsonl", "../secret.jsonl"):
        with pytest.raises(UnreadableObject, match="outside it"):
            LocalStore(root).open(key)


@pytest.mark.timeout(20)
def test_symlinked_folders_are_never_descended_so_a_loop_reads_each_record_once(root):
    # GIVEN symlinked folders: one to an ancestor (a loop), one to a sibling inside the root
    (root / "d" / "loop").symlink_to(root, target_is_directory=True)
    (root / "e").symlink_to(root / "d", target_is_directory=True)
    # WHEN the whole source is read, in small batches
    records, skipped = read_all(FilesSource(LocalStore(root)), limit=1)
    # THEN every record is read exactly once, and both folders are reported
    assert records == [{"i": 0}, {"i": 1}]
    assert [entry["key"] for entry in skipped] == ["d/loop", "e"]
    assert all("symlinked folder" in entry["reason"] for entry in skipped)
    assert not FilesSource(LocalStore(root)).has_records_after("d/a.jsonl#2")


@pytest.mark.timeout(20)
def test_a_fifo_is_reported_not_opened_and_never_hangs_the_read(root):
    # GIVEN a FIFO among the objects, with no writer (opening it to read would block forever)
    os.mkfifo(root / "d" / "b.jsonl")
    (root / "d" / "c.jsonl").write_bytes(lines({"i": 2}))
    source = FilesSource(LocalStore(root))
    # WHEN the source is read
    records, skipped = read_all(source, limit=1)
    # THEN the regular files are read and the FIFO reported
    assert records == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert skipped == [
        {
            "key": "d/b.jsonl",
            "reason": "a FIFO, not a regular file: not read (remove it or move it out of the source folder)",
        }
    ]
    assert source.has_records_after("d/a.jsonl#2")
    # AND opening it directly (a checkpoint on it) is refused at once, naming it
    with pytest.raises(UnreadableObject, match=r"d/b\.jsonl .* is a FIFO, not a regular file"):
        LocalStore(root).open("d/b.jsonl")
    with pytest.raises(UnreadableObject, match="is a FIFO"):
        source.read("d/b.jsonl#0", limit=10)


@pytest.mark.timeout(20)
def test_a_socket_and_a_broken_symlink_are_reported(root, monkeypatch):
    # GIVEN a UNIX socket (bound by a relative name: socket paths are short) and a dangling symlink
    monkeypatch.chdir(root / "d")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("s.jsonl")
        (root / "d" / "z.jsonl").symlink_to(root / "gone.jsonl")
        # WHEN the source is read
        batch = FilesSource(LocalStore(root)).read(None, limit=100)
    # THEN both are reported, the file is read
    assert batch.records == [{"i": 0}, {"i": 1}]
    reasons = {entry["key"]: entry["reason"] for entry in batch.skipped}
    assert reasons["d/s.jsonl"].startswith("a socket, not a regular file")
    assert "missing or not a regular file" in reasons["d/z.jsonl"]


# 3. A name that is not valid UTF-8 is reported, never a key (keys become positions and sink names).


def test_a_name_that_is_not_utf8_is_reported_and_never_blocks_the_topic(root):
    # GIVEN a file and a folder whose names hold a byte that is not UTF-8, between valid objects
    folder = os.fsencode(root / "d")
    with open(os.path.join(folder, b"bad-\xff.jsonl"), "wb") as out:
        out.write(lines({"bad": 1}))
    os.mkdir(os.path.join(folder, b"sub-\xfe"))
    with open(os.path.join(folder, b"sub-\xfe", b"x.jsonl"), "wb") as out:
        out.write(lines({"bad": 2}))
    (root / "d" / "z.jsonl").write_bytes(lines({"i": 2}))
    store = LocalStore(root)
    # WHEN the keys are listed, and the source read batch after batch
    keys = list(store.keys())
    records, skipped = read_all(FilesSource(LocalStore(root)), limit=1)
    # THEN no such key is ever listed, every valid record is read, and both names are reported, printable
    assert keys == ["d/a.jsonl", "d/z.jsonl"]
    assert records == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert skipped == [
        {"key": "d/bad-\\xff.jsonl", "reason": NOT_UTF8},
        {"key": "d/sub-\\xfe/", "reason": NOT_UTF8},
    ]
    assert NOT_UTF8 == "name is not valid UTF-8; rename it"
    json.dumps(skipped, ensure_ascii=False).encode()  # loggable as is


# 4. A corrupt or truncated gzip object fails with an UnreadableObject naming it; any ".gz" is gunzipped.


def corrupt_deflate(data: bytes) -> bytes:
    body = bytearray(gzip.compress(data))
    body[10:20] = b"\xff" * 10  # the deflate stream, after the 10-byte header
    return bytes(body)


def bad_crc(data: bytes) -> bytes:
    body = bytearray(gzip.compress(data))
    body[-8] ^= 0xFF
    return bytes(body)


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (lambda data: gzip.compress(data)[:-12], "EOFError"),  # truncated
        (corrupt_deflate, "error: Error -3"),  # zlib.error
        (bad_crc, "BadGzipFile"),
    ],
)
def test_a_damaged_gzip_object_is_an_unreadable_object_naming_it(world, damage, cause):
    # GIVEN a damaged gzip object, large enough that the damage is met mid-stream
    store, put = world
    data = lines(*({"i": i, "pad": "x" * 40} for i in range(2000)))
    put("d=1/a.jsonl.gz", damage(data))
    damaged = gzip.decompress  # the damage is real: gzip itself refuses it
    with pytest.raises((EOFError, OSError, zlib.error)):
        damaged(damage(data))
    # WHEN it is read, or looked at, THEN one SourceError subclass names the object and the cause
    for attempt in (
        lambda: FilesSource(store).read(None, limit=10_000),
        lambda: FilesSource(store).has_records_after("d=1/a.jsonl.gz#2000"),
    ):
        with pytest.raises(UnreadableObject, match=r"object d=1/a\.jsonl\.gz is unreadable") as failed:
            attempt()
        assert isinstance(failed.value, SourceError) and cause in str(failed.value)
        assert "\n" not in str(failed.value)


@pytest.mark.parametrize("key", ["data.gz", "data.json.gz", "data.jsonl.gz", "d=1/part-0.gz"])
def test_every_key_ending_in_gz_is_decompressed(world, key):
    # GIVEN a gzip object whose name ends in .gz
    store, put = world
    put(key, gzip.compress(lines({"i": 0}, {"i": 1})))
    # WHEN it is read
    batch = FilesSource(store).read(None, limit=10)
    # THEN its records are the decompressed lines, not rejects of compressed bytes
    assert (batch.records, batch.rejects, batch.end) == ([{"i": 0}, {"i": 1}], [], f"{key}#2")


def test_a_name_not_ending_in_gz_is_read_as_is(world):
    store, put = world
    put("data.gzip", lines({"i": 0}))
    assert FilesSource(store).read(None, limit=10).records == [{"i": 0}]


# 5. A checkpoint's line offset counts the lines done: the next line is that offset.


@pytest.mark.parametrize(
    ("after", "expected"), [("a.jsonl#0", True), ("a.jsonl#2", True), ("a.jsonl#3", False)]
)
def test_has_records_after_a_line_offset_in_the_only_object(world, after, expected):
    # GIVEN a single object of three lines
    store, put = world
    put("a.jsonl", lines({"i": 0}, {"i": 1}, {"i": 2}))
    source = FilesSource(store)
    # WHEN / THEN: line 2 (0-based) follows "#2"; nothing follows "#3"
    assert source.has_records_after(after) is expected
    assert bool(source.read(after, limit=10).records) is expected


def test_a_read_after_a_line_offset_starts_at_that_line(world):
    store, put = world
    put("a.jsonl", lines({"i": 0}, {"i": 1}, {"i": 2}))
    batch = FilesSource(store).read("a.jsonl#2", limit=10)
    assert (batch.records, batch.end, batch.more) == ([{"i": 2}], "a.jsonl#3", False)


# 6. Positions split at the last "#": object keys may contain "#".


def test_a_key_containing_hash_round_trips_through_positions_and_resumed_reads(world):
    # GIVEN objects whose keys contain "#"
    store, put = world
    put("day#1/a#b.jsonl", lines({"i": 0}, {"i": 1}, {"i": 2}))
    put("day#2/c.jsonl", lines({"i": 3}))
    source = FilesSource(store)
    # WHEN a batch ends inside such an object
    first = source.read(None, limit=2)
    # THEN its position names the whole key, and the next read resumes exactly there
    assert first.end == "day#1/a#b.jsonl#2"
    assert parse_position(first.end) == ("day#1/a#b.jsonl", 2)
    assert source.has_records_after(first.end)
    second = source.read(first.end, limit=10)
    assert second.records == [{"i": 2}, {"i": 3}] and second.end == "day#2/c.jsonl#1"
    assert second.origin(0) == {"source_key": "day#1/a#b.jsonl", "line": 3}
    assert parse_position("a#b#12") == ("a#b", 12)


# 7. The S3 listing starts after the checkpoint (StartAfter): keys before it are never listed.


def test_an_s3_read_from_a_checkpoint_lists_no_key_before_it():
    with mock_aws():
        # GIVEN 50 one-line objects, and a client that records every key the listing returns
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="landing")
        for i in range(50):
            client.put_object(Bucket="landing", Key=f"in/part-{i:03d}.jsonl", Body=lines({"i": i}))
        listed: list[str] = []

        def record(parsed: dict, **_: object) -> None:
            listed.extend(item["Key"] for item in parsed.get("Contents", ()))

        client.meta.events.register("after-call.s3.ListObjectsV2", record)
        source = FilesSource(S3Store("s3://landing/in", client=client))
        # WHEN it reads and looks from a checkpoint in the middle
        batch = source.read("part-024.jsonl#1", limit=100)
        assert source.has_records_after("part-024.jsonl#1")
        # THEN it reads what follows, and no key at or before the checkpoint was listed
        assert [r["i"] for r in batch.records] == list(range(25, 50))
        assert listed and min(listed) > "in/part-024.jsonl"
