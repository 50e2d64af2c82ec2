"""The files source and sink over local directories."""

from __future__ import annotations

import gzip
import json

import pytest

from leanops.data.files import FilesSink, FilesSource, batch_object_name
from leanops.errors import ConfigError, SourceError


def lines(*records):
    return "".join(json.dumps(r) + "\n" for r in records)


@pytest.fixture
def source_dir(tmp_path):
    root = tmp_path / "src"
    (root / "d=1").mkdir(parents=True)
    (root / "d=1" / "a.jsonl").write_text(lines({"i": 0}, {"i": 1}, {"i": 2}))
    (root / "d=1" / "b.jsonl.gz").write_bytes(gzip.compress(lines({"i": 3}, {"i": 4}).encode()))
    (root / "d=2").mkdir()
    (root / "d=2" / "c.jsonl").write_text(lines({"i": 5}) + "\n")  # a trailing blank line
    (root / "d=2" / "_tmp-123").write_text("not json")  # hidden: never input
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.jsonl").write_text("not json")
    return root


def test_batches_cut_inside_objects_and_resume_exactly(source_dir):
    source = FilesSource(str(source_dir))
    seen, position, cuts = [], None, []
    while True:
        batch = source.read(position, limit=2)
        seen += [r["i"] for r in batch.records]
        cuts.append(batch.end)
        if not batch.more:
            break
        position = batch.end
    assert seen == [0, 1, 2, 3, 4, 5]
    assert cuts == ["d=1/a.jsonl#2", "d=1/b.jsonl.gz#1", "d=2/c.jsonl#2"]


def test_batch_start_is_its_first_record(source_dir):
    batch = FilesSource(str(source_dir)).read("d=1/a.jsonl#3", limit=10)
    assert batch.start == "d=1/b.jsonl.gz#0" and batch.end == "d=2/c.jsonl#2" and not batch.more


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
def test_has_records_after(source_dir, after, expected):
    assert FilesSource(str(source_dir)).has_records_after(after) is expected


def test_up_to_date_source_reads_nothing(source_dir):
    batch = FilesSource(str(source_dir)).read("d=2/c.jsonl#2", limit=10)
    assert (batch.records, batch.start, batch.end, batch.more) == ([], None, None, False)


def test_should_stop_cuts_the_batch_after_at_least_one_record(source_dir):
    batch = FilesSource(str(source_dir)).read(None, limit=10, should_stop=lambda: True)
    assert [r["i"] for r in batch.records] == [0] and batch.end == "d=1/a.jsonl#1" and batch.more


def test_empty_source_directory(tmp_path):
    batch = FilesSource(str(tmp_path)).read(None, limit=10)
    assert batch.records == [] and not batch.more


def test_missing_source_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        FilesSource(str(tmp_path / "missing"))


def test_malformed_line_names_object_and_line(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"ok": 1}\n{broken\n')
    with pytest.raises(SourceError, match=r"a.jsonl line 1: not valid JSON"):
        FilesSource(str(tmp_path)).read(None, limit=10)


def test_sink_names_objects_by_start_and_a_retry_replaces_the_attempt(tmp_path):
    sink = FilesSink(str(tmp_path / "out"), "vt")
    first = sink.write("d=1/a.jsonl#0", [{"i": 0}, {"i": 1}, {"i": 2}])
    again = sink.write("d=1/a.jsonl#0", [{"i": 0}])  # the retry cut the batch elsewhere
    assert first == again == batch_object_name("vt", "d=1/a.jsonl#0") == "vt.d=1%2Fa.jsonl.0000000000.jsonl"
    assert sink.objects() == [first]
    assert (tmp_path / "out" / first).read_text() == '{"i":0}\n'
