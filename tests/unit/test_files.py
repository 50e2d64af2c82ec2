"""The files source and sink, over local directories and over S3 (moto): one code path for both."""

from __future__ import annotations

import gzip
import io
import json

import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from leanops.data import files
from leanops.data.files import FilesSink, FilesSource, new_attempt, owner_tag
from leanops.data.storage import LocalStore, ObjectStore
from leanops.errors import ConfigError, SinkError, SourceError
from tests.support import stores

world = stores.world  # the fixture: an empty store, local and in moto's S3

OWNER = "arn:aws:states:us-east-1:123456789012:execution:TopicRun:run-1"


def lines(*records: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@pytest.fixture
def source(world) -> FilesSource:
    store, put = world
    put("d=1/a.jsonl", lines({"i": 0}, {"i": 1}, {"i": 2}))
    put("d=1/b.jsonl.gz", gzip.compress(lines({"i": 3}, {"i": 4})))
    put("d=2/c.jsonl", lines({"i": 5}) + b"\n")  # a trailing blank line
    put("d=2/_tmp-123", b"not json")  # hidden: never input
    put(".hidden/x.jsonl", b"not json")
    return FilesSource(store)


def read_all(source: FilesSource, limit: int, position: str | None = None) -> tuple[list[int], list[str]]:
    seen, cuts = [], []
    while True:
        batch = source.read(position, limit=limit)
        seen += [r["i"] for r in batch.records]
        cuts.append(batch.end)
        if not batch.more:
            return seen, cuts
        position = batch.end


def test_batches_cut_inside_objects_and_resume_exactly(source):
    seen, cuts = read_all(source, limit=2)
    assert seen == [0, 1, 2, 3, 4, 5]
    assert cuts == ["d=1/a.jsonl#2", "d=1/b.jsonl.gz#1", "d=2/c.jsonl#2"]


def test_a_batch_that_fills_at_the_end_of_an_object_resumes_at_the_next_one_unopened(source):
    batch = source.read(None, limit=3)
    assert [r["i"] for r in batch.records] == [0, 1, 2]
    assert batch.end == "d=1/b.jsonl.gz#0" and batch.more and batch.keys == ["d=1/a.jsonl"]


def test_every_batch_size_reads_every_record_exactly_once(source):
    for limit in range(1, 8):
        assert read_all(source, limit)[0] == [0, 1, 2, 3, 4, 5], limit


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (None, True),
        ("d=1/a.jsonl#2", True),
        ("d=1/b.jsonl.gz#2", True),
        ("d=2/c.jsonl#1", False),
        ("d=2/c.jsonl#2", False),
    ],
)
def test_has_records_after(source, after, expected):
    assert source.has_records_after(after) is expected


def test_up_to_date_source_reads_nothing(source):
    batch = source.read("d=2/c.jsonl#2", limit=10)
    assert (batch.records, batch.end, batch.more) == ([], "d=2/c.jsonl#2", False)


def test_should_stop_cuts_the_batch_after_at_least_one_record(source):
    batch = source.read(None, limit=10, should_stop=lambda: True)
    assert [r["i"] for r in batch.records] == [0] and batch.end == "d=1/a.jsonl#1" and batch.more


def test_origin_names_the_object_and_its_one_based_line(source):
    batch = source.read("d=1/a.jsonl#1", limit=10)
    assert [batch.origin(i) for i in (0, 1, 3)] == [
        {"source_key": "d=1/a.jsonl", "line": 2},
        {"source_key": "d=1/a.jsonl", "line": 3},
        {"source_key": "d=1/b.jsonl.gz", "line": 2},
    ]


def test_empty_source(world):
    store, _ = world
    batch = FilesSource(store).read(None, limit=10)
    assert (batch.records, batch.end, batch.more) == ([], None, False)
    assert not FilesSource(store).has_records_after(None)


def test_a_batch_opens_a_bounded_number_and_size_of_objects(world, monkeypatch):
    # Many one-record objects and a large batch size: the object bounds cut the batch, at an object start.
    store, put = world
    for i in range(7):
        put(f"part-{i}.jsonl", lines({"i": i}))
    by_count = FilesSource(store, max_objects=3).read(None, limit=100)
    assert (by_count.keys, by_count.end) == (
        ["part-0.jsonl", "part-1.jsonl", "part-2.jsonl"],
        "part-3.jsonl#0",
    )
    # keys count as JSON text, escaped as a Lambda result carries them ("part-0.jsonl" with its quotes)
    monkeypatch.setattr(files, "MAX_OPENED_KEY_BYTES", 2 * len(json.dumps("part-0.jsonl")))
    seen, cuts = read_all(FilesSource(store), limit=100)
    assert seen == list(range(7))
    assert cuts == ["part-2.jsonl#0", "part-4.jsonl#0", "part-6.jsonl#0", "part-6.jsonl#1"]


class OpenSpy:
    """Delegates to a store, recording each ``open(key, start)``."""

    def __init__(self, store: ObjectStore) -> None:
        self.store, self.opens = store, []

    def __getattr__(self, name):
        return getattr(self.store, name)

    def open(self, key, start=0):
        self.opens.append((key, start))
        return self.store.open(key, start)


def version(store: ObjectStore, key: str) -> dict[str, object]:
    """What a hint says of the version of ``key`` it was made from: its size and version stamp."""
    info = store.stat(key)
    return {"size": info.size, "version": info.version}


def test_a_batch_ending_inside_an_object_hints_its_byte_and_the_next_read_seeks_there(world):
    # GIVEN an object of lines of different lengths (one malformed, one blank)
    store, put = world
    body = lines({"i": 0}, {"i": 1, "pad": "x" * 50}, {"i": 2}) + b"{broken\n\n" + lines({"i": 3}, {"i": 4})
    put("a.jsonl", body)
    spy = OpenSpy(store)
    # WHEN a batch ends inside it, THEN its hint is the byte where its end line starts
    first = FilesSource(spy).read(None, limit=2)
    assert first.end == "a.jsonl#2"
    assert first.resume == {
        "position": "a.jsonl#2",
        "byte": body.index(b'{"i": 2}'),
        **version(store, "a.jsonl"),
    }
    # AND the next read with the hint opens there (checking the byte before) and reads what a cold read does
    spy.opens.clear()
    hinted = FilesSource(spy).read(first.end, limit=3, resume=first.resume)
    assert spy.opens == [("a.jsonl", first.resume["byte"] - 1)]
    cold = FilesSource(store).read(first.end, limit=3)
    assert (hinted.records, hinted.end, hinted.resume) == (cold.records, cold.end, cold.resume)
    assert [hinted.origin(i) for i in range(2)] == [cold.origin(i) for i in range(2)]
    assert [r.origin for r in hinted.rejects] == [r.origin for r in cold.rejects]
    assert hinted.resume == {
        "position": "a.jsonl#6",
        "byte": body.index(b'{"i": 4}'),
        **version(store, "a.jsonl"),
    }


@pytest.mark.parametrize(
    "resume",
    [
        {"position": "a.jsonl#1", "byte": 9},  # another position's hint
        {"position": "a.jsonl#2", "byte": 12},  # not at a line start
        {"position": "a.jsonl#2", "byte": 10_000},  # past the end
        {"position": "a.jsonl#2", "byte": "9"},
        {"position": "a.jsonl#2"},
    ],
)
def test_a_hint_that_does_not_fit_is_ignored(world, resume):
    store, put = world
    put("a.jsonl", lines({"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}))
    batch = FilesSource(store).read("a.jsonl#2", limit=10, resume=resume)
    assert (batch.records, batch.rejects, batch.end) == ([{"i": 2}, {"i": 3}], [], "a.jsonl#4")


def test_gzip_objects_make_no_hint(world):
    store, put = world
    put("a.jsonl.gz", gzip.compress(lines({"i": 0}, {"i": 1}, {"i": 2})))
    batch = FilesSource(store).read(None, limit=1)
    assert (batch.end, batch.resume) == ("a.jsonl.gz#1", None)


def test_keys_sort_as_s3_lists_them_even_across_folders(world):
    store, put = world
    for key in ("a/b.jsonl", "a-c.jsonl", "a.jsonl", "a/a/z.jsonl", "b.jsonl"):
        put(key, lines({"k": key}))
    expected = ["a-c.jsonl", "a.jsonl", "a/a/z.jsonl", "a/b.jsonl", "b.jsonl"]  # '-' < '.' < '/'
    assert list(store.keys()) == expected
    assert list(store.keys(after="a.jsonl")) == expected[2:]
    assert list(store.keys(after="a/a/z.jsonl")) == expected[3:]


def test_malformed_lines_are_rejects_with_key_and_line_not_records(world):
    store, put = world
    put("a.jsonl", b'{"ok": 1}\n{broken\n[1, 2]\n\xff\xfe\n{"ok": 2}\n')
    batch = FilesSource(store).read(None, limit=10)
    assert batch.records == [{"ok": 1}, {"ok": 2}]
    assert [(r.origin["line"], r.reason.split(":")[0]) for r in batch.rejects] == [
        (2, "not valid JSON"),
        (3, "not a JSON object"),
        (4, "not valid JSON"),
    ]
    assert batch.rejects[0].raw == "{broken" and batch.rejects[0].origin["source_key"] == "a.jsonl"


def test_rejects_count_towards_the_batch_size(world):
    store, put = world
    put("a.jsonl", b"x\n" * 5 + lines({"i": 1}))
    first = FilesSource(store).read(None, limit=3)
    assert (len(first.records), len(first.rejects), first.end) == (0, 3, "a.jsonl#3")
    second = FilesSource(store).read(first.end, limit=3)
    assert (second.records, len(second.rejects), second.more) == ([{"i": 1}], 2, False)


def test_a_corrupt_gzip_object_fails_the_read(world):
    store, put = world
    put("a.jsonl.gz", gzip.compress(lines({"i": 1}))[:-12])  # truncated
    with pytest.raises(SourceError, match=r"a.jsonl.gz is unreadable"):
        FilesSource(store).read(None, limit=10)


def test_a_deleted_checkpoint_object_is_passed_over(world):
    store, put = world
    put("b.jsonl", lines({"i": 1}))
    batch = FilesSource(store).read("a.jsonl#5", limit=10)  # a.jsonl was removed by retention
    assert batch.records == [{"i": 1}] and batch.end == "b.jsonl#1"


def test_missing_directory_or_bucket_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        FilesSource(str(tmp_path / "missing")).check()
    with mock_aws(), pytest.raises(ConfigError, match="bucket nowhere does not exist"):
        FilesSource("s3://nowhere/x").check()


def test_stem_is_stable_per_start_and_filename_safe():
    source = FilesSource("/tmp")
    assert source.stem(None) == "origin"
    assert source.stem("d=1/a b.jsonl#7") == "d=1%2Fa%20b.jsonl.0000000007"


def read_object(store: ObjectStore, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


def test_every_attempt_writes_a_name_of_its_own(world):
    store, _ = world
    sink = FilesSink(store, "vt")
    # GIVEN two attempts of one writer (same execution and fence: a retried task) at one batch start
    first, second = new_attempt(3, OWNER), new_attempt(3, OWNER)
    # THEN their names differ, and name the topic, the start, the fence and the writer
    names = [sink.object_name("d=1%2Fa.jsonl.0000000000", attempt) for attempt in (first, second)]
    assert names[0] != names[1]
    assert names[0].startswith(f"vt.d=1%2Fa.jsonl.0000000000.3-{owner_tag(OWNER)}-") and names[0].endswith(
        ".jsonl"
    )
    # AND neither write replaces the other
    sink.write(names[0], [{"i": 0}, {"i": 1}])
    sink.write(names[1], [{"i": 0}])
    assert sorted(sink.objects()) == sorted(names)
    assert read_object(store, names[0]) == b'{"i":0}\n{"i":1}\n'


def test_sink_gzip_and_parquet(world):
    store, _ = world
    records = [{"i": i, "name": f"n{i}", "ok": i % 2 == 0} for i in range(5)]
    gz = FilesSink(store, "vt", compression="gzip")
    attempt = new_attempt(1, OWNER)
    gz.write(gz.object_name("origin", attempt), records)
    decompressed = gzip.decompress(read_object(store, gz.object_name("origin", attempt)))
    assert [json.loads(line) for line in decompressed.splitlines()] == records
    parquet = FilesSink(store, "vt", format="parquet")
    name = parquet.object_name("origin", attempt)
    assert name.endswith(".parquet")
    parquet.write(name, records)
    assert pq.read_table(io.BytesIO(read_object(store, name))).to_pylist() == records


def test_parquet_refuses_records_that_are_not_one_table(tmp_path):
    sink = FilesSink(str(tmp_path), "vt", format="parquet")
    with pytest.raises(SinkError, match="record 1 cannot be written: column 'a': expected int64, got str"):
        sink.write("x.parquet", [{"a": 1}, {"a": "text"}])
    assert list(LocalStore(tmp_path).keys(include_hidden=True)) == []  # no scratch file left behind


def test_attempts_lists_this_topics_attempts_at_one_start_only(world):
    store, _ = world
    sink = FilesSink(store, "vt")
    ours = sink.object_name("k.0000000005", new_attempt(4, OWNER))
    crashed = sink.object_name("k.0000000005", new_attempt(3, "arn:other"))
    crashed_quarantine = sink.quarantine_name("k.0000000005", new_attempt(3, "arn:other"))
    legacy = f"vt.k.0000000005.2-{owner_tag(OWNER)}.jsonl"  # named before attempts had a random part
    other_batch = sink.object_name("k.0000000005.x.0000000000", new_attempt(2, "arn:other"))  # longer stem
    not_ours = "vt.k.0000000005.notes.jsonl"
    for name in (ours, crashed, crashed_quarantine, legacy, other_batch, not_ours):
        sink.write(name, [{"i": 1}])
    # WHEN the attempts at one start are listed
    listed = sorted(name for name, _ in sink.attempts("k.0000000005"))
    # THEN they are exactly the attempts at that start: longer stems and other files are left out (a sink
    # belongs to one topic: names are not meant to tell topics apart)
    assert listed == sorted([ours, crashed, crashed_quarantine, legacy])
    every = dict(sink.attempts())
    assert every[other_batch] == "k.0000000005.x.0000000000" and not_ours not in every


def test_a_stem_too_long_for_a_name_is_fitted_and_stays_one_name_per_stem(tmp_path):
    sink = FilesSink(str(tmp_path), "vt")
    long_a, long_b = "a" * 300 + ".0000000000", "a" * 300 + ".0000000001"
    fitted_a, fitted_b = sink.fit_stem(long_a), sink.fit_stem(long_b)
    # THEN the names fit the file system, differ per stem, and are the same for the same stem
    assert fitted_a != fitted_b and sink.fit_stem(long_a) == fitted_a
    name = sink.object_name(fitted_a, new_attempt(12345, OWNER))
    assert (
        len(name.encode()) <= 255 and len(sink.quarantine_name(fitted_a, "1-" + "f" * 8).split("/")[1]) <= 255
    )
    sink.write(name, [{"i": 1}])
    assert [stem for _, stem in sink.attempts(fitted_a)] == [fitted_a]
    assert sink.fit_stem("short.0000000000") == "short.0000000000"
