"""The up-to-date check of a ``files`` source with the checkpoint's hint: one stat of the checkpoint's object
while it is the version the hint was made from; a changed object (rewritten, replaced, appended to), or any
hint that does not fit, falls back to reading the object from its start, with the same answer."""

from __future__ import annotations

import gzip
import json

import pytest

from leanops.data.files import FilesSource
from leanops.data.storage import LocalStore, ObjectStore, S3Store
from leanops.protocol import TopicRef
from tests.support import stores
from tests.support.worlds import run, start, three_part_topic

world = stores.world  # the fixture: an empty store, local and in moto's S3


def lines(*records: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


class Spy:
    """Delegates to a store, recording each ``open(key, start)`` and ``stat(key)``."""

    def __init__(self, store: ObjectStore) -> None:
        self.store, self.opens, self.stats = store, [], []

    def __getattr__(self, name):
        return getattr(self.store, name)

    def open(self, key, start=0):
        self.opens.append((key, start))
        return self.store.open(key, start)

    def stat(self, key):
        self.stats.append(key)
        return self.store.stat(key)


def read_to_the_end(store: ObjectStore, key: str, body: bytes):
    """Land ``key`` and read it whole: the batch, whose hint the commit would keep."""
    batch = FilesSource(store).read(None, limit=100)
    assert (batch.end, batch.more) == (f"{key}#{len(body.splitlines())}", False)
    return batch


def test_an_up_to_date_check_of_a_fully_read_object_opens_no_body(world):
    store, put = world
    body = lines({"i": 0}, {"i": 1}) + b"\n"  # a trailing blank line
    put("a.jsonl", body)
    batch = read_to_the_end(store, "a.jsonl", body)
    # THEN the last batch's hint says where a next line would start, and which object it read
    assert batch.resume is not None
    assert (batch.resume["position"], batch.resume["byte"], batch.resume["size"]) == (
        "a.jsonl#3",
        len(body),
        len(body),
    )
    assert batch.resume["version"]  # the ETag on S3; device, inode and mtime locally
    # WHEN the check runs with it: one stat, no object read
    spy = Spy(store)
    assert not FilesSource(spy).has_records_after(batch.end, batch.resume)
    assert (spy.opens, spy.stats) == ([], ["a.jsonl"])
    # AND a later object still means records, without reading either
    put("b.jsonl", lines({"i": 2}))
    spy = Spy(store)
    assert FilesSource(spy).has_records_after(batch.end, batch.resume)
    assert (spy.opens, spy.stats) == ([], ["a.jsonl"])


@pytest.mark.parametrize(("appended", "expected"), [(lines({"i": 2}), True), (b"\n \n", False)])
def test_an_appended_object_is_another_version_read_from_its_start(tmp_path, appended, expected):
    # A local file that grew in place (objects should not, but a hint must never change the answer)
    store = LocalStore(tmp_path)
    body = lines({"i": 0}, {"i": 1})
    (tmp_path / "a.jsonl").write_bytes(body)
    batch = read_to_the_end(store, "a.jsonl", body)
    with open(tmp_path / "a.jsonl", "ab") as file:
        file.write(appended)
    spy = Spy(store)
    assert FilesSource(spy).has_records_after(batch.end, batch.resume) is expected
    # THEN the object is read from its start: its size is not the hint's
    assert (spy.opens, spy.stats) == ([("a.jsonl", 0)], ["a.jsonl"])
    # AND the next batch, given the hint, reads the appended line, once
    again = FilesSource(store).read(batch.end, limit=10, resume=batch.resume)
    assert again.records == ([{"i": 2}] if expected else [])


BODY = lines({"i": 0}, {"i": 1})


@pytest.mark.parametrize(
    ("change", "new_body", "falls_back"),
    [
        ({"position": "a.jsonl#1"}, None, {"local", "s3"}),  # another position's hint
        ({"byte": None}, None, {"local", "s3"}),
        ({"byte": 5}, None, {"local", "s3"}),  # not at a line start
        ({}, lines({"i": 0}), {"local", "s3"}),  # truncated: smaller than the hint says
        ({"size": 1000, "byte": 990}, BODY + lines({"i": 2}), {"local", "s3"}),  # smaller, again
        # rewritten with lines appended: another version (a new ETag; locally a later mtime)
        ({}, BODY + lines({"i": 2}), {"local", "s3"}),
        # another object of the same size: only the version stamp tells
        ({}, BODY.replace(b'"i"', b'"j"'), {"local", "s3"}),
        ({"version": "0"}, None, {"local", "s3"}),
    ],
)
def test_a_hint_that_does_not_fit_falls_back_and_answers_the_same(world, change, new_body, falls_back):
    store, put = world
    put("a.jsonl", BODY)
    hint = read_to_the_end(store, "a.jsonl", BODY).resume | change
    if new_body is not None:
        put("a.jsonl", new_body)
    spy = Spy(store)
    answer = FilesSource(spy).has_records_after("a.jsonl#2", hint)
    assert answer is FilesSource(store).has_records_after("a.jsonl#2")
    # THEN the object was read from its start where the hint does not fit, never otherwise
    kind = "s3" if isinstance(store, S3Store) else "local"
    assert (("a.jsonl", 0) in spy.opens) is (kind in falls_back)


def test_gzip_objects_fall_back(world):
    store, put = world
    body = lines({"i": 0}, {"i": 1})
    put("a.jsonl.gz", gzip.compress(body))
    batch = FilesSource(store).read(None, limit=100)
    assert (batch.end, batch.resume) == ("a.jsonl.gz#2", None)
    # even given a hint, a gzip object is read from its start (no seeking into it)
    spy = Spy(store)
    hint = {"position": "a.jsonl.gz#2", "byte": len(body), "size": len(body)}
    assert not FilesSource(spy).has_records_after(batch.end, hint)
    assert (spy.opens, spy.stats) == ([("a.jsonl.gz", 0)], [])


def test_the_hint_keeps_a_backfills_bound(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(lines({"i": 0}))
    batch = read_to_the_end(LocalStore(tmp_path), "a.jsonl", lines({"i": 0}))
    with open(tmp_path / "a.jsonl", "ab") as file:
        file.write(lines({"i": 1}, {"i": 2}))
    assert FilesSource(LocalStore(tmp_path), until="a.jsonl#3").has_records_after(batch.end, batch.resume)
    assert not FilesSource(LocalStore(tmp_path), until="a.jsonl#1").has_records_after(batch.end, batch.resume)
    assert not FilesSource(LocalStore(tmp_path), until="a.jsonl#0").has_records_after(batch.end, batch.resume)


# --- the tasks ----------------------------------------------------------------------------------------------


@pytest.fixture
def topic(tmp_path, monkeypatch):
    """The three-part topic, every open and stat of its source recorded."""
    topic = three_part_topic(tmp_path)
    topic["opens"], topic["stats"] = [], []
    open_, stat = LocalStore.open, LocalStore.stat

    def spy_open(self, key, start=0):
        topic["opens"].append((key, start))
        return open_(self, key, start)

    def spy_stat(self, key):
        topic["stats"].append(key)
        return stat(self, key)

    monkeypatch.setattr(LocalStore, "open", spy_open)
    monkeypatch.setattr(LocalStore, "stat", spy_stat)
    return topic


def test_a_steady_up_to_date_acquire_opens_no_object(topic):
    run(topic)
    topic["opens"].clear()
    topic["stats"].clear()
    # WHEN the next run starts with nothing new
    assert start(topic, "exec-2")["outcome"] == "up_to_date"
    # THEN Acquire stats the checkpoint's object and reads none
    assert (topic["opens"], topic["stats"]) == ([], ["part-2.jsonl"])


def test_a_run_after_an_append_reads_the_changed_object_from_its_start(topic):
    run(topic)
    part = topic["root"] / "in" / "part-2.jsonl"
    with open(part, "a") as file:
        file.write(json.dumps({"i": 15}) + "\n")
    topic["opens"].clear()
    # WHEN the next run starts: the hint no longer fits part-2, which Acquire and the first batch read whole
    done = run(topic, "exec-2")
    assert (done["outcome"], done["records"], done["checkpoint"]["position"]) == (
        "processed",
        1,
        "part-2.jsonl#6",
    )
    assert topic["opens"].count(("part-2.jsonl", 0)) == 2


def test_a_checkpoint_an_operator_rewound_has_no_hint_and_falls_back(topic):
    run(topic)
    protocol, ref = topic["protocol"], TopicRef("t")
    lease = protocol.acquire(ref, "ops", 30, operator=True).lease
    protocol.rewind_checkpoint(lease, to_seq=3, actor="ops", reason="again")  # to part-2.jsonl#2
    protocol.release(lease)
    topic["opens"].clear()
    topic["stats"].clear()
    assert start(topic, "exec-2")["outcome"] == "acquired"
    assert (topic["opens"], topic["stats"]) == ([("part-2.jsonl", 0)], [])
