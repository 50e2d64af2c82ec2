"""Committed output under a zombie and a crash (design §3 I1/I4, §4 "Committed output"), with real
processes: `leanops run` on the local stack, whose Lambda worker (the process task's execution environment)
is stopped or killed at the exact point between its sink write and its commit by an audit hook in the
test's processor (tests/support/processors.py, which names the worker in ``<arm>.pid``), run in that worker
(``isolation: none``); a commit's answer is lost by a hook in the advance task's worker
(tests/support/worker_hooks), with the processor isolated as by default."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.cli import committed_events, finish, output_report, sink_objects

pytestmark = pytest.mark.integration
ALL_EVENTS = [f"evt-{i:09d}" for i in range(10_000)]


def wait_for(path: Path, process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path.name}: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def status(project) -> dict:
    code, out, err = finish(project["leanops"]("status", "vt", "--json"))
    assert code == 0, err
    return json.loads(out)


#: The processors here act on the process task's worker itself (audit hooks on its own sink rename, SIGSTOP
#: or SIGKILL of it, ``<arm>.pid`` naming it): they must run in it, not in an isolated child (decision 0012).
IN_WORKER = {"isolation": "none"}

#: The skew margin a takeover waits past a lease (leanops.constants.DEFAULT_SKEW_MARGIN_MS).
SKEW_MARGIN_S = 2.0


def wait_until_expired(project, *, or_free: bool = False) -> None:
    """Until the lock's lease plus the skew margin have passed (a takeover may then acquire), or, with
    ``or_free``, until the lock is not held (a failed execution's state machine released it)."""
    deadline = time.monotonic() + 60
    while (state := status(project))["lock"]["state"] not in (
        ("expired", "free") if or_free else ("expired",)
    ):
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.25)
    if state["lock"]["state"] == "expired":
        while time.time() <= state["lock"]["lease_expires_at_ms"] / 1000 + SKEW_MARGIN_S:
            time.sleep(0.1)


def worker(arm: Path) -> int:
    """The pid of the Lambda worker that ran the armed processor."""
    return int(Path(f"{arm}.pid").read_text())


def assert_converged_exactly_once(project) -> None:
    """Each input record once in the committed output, and the sink holds exactly the committed objects."""
    assert committed_events(project["root"], project["leanops"]) == ALL_EVENTS
    committed = sorted(b["object"] for b in output_report(project["leanops"])["batches"] if b["object"])
    assert sink_objects(project["root"]) == committed


def test_a_zombie_stopped_before_its_sink_rename_leaves_nothing_in_the_committed_output(project):
    project["write_topics"](
        processor="tests.support.processors:stop_before_sink_rename", lease_seconds=3, **IN_WORKER
    )
    arm = project["root"] / "arm"
    arm.write_text("")
    project["env"]["LEANOPS_TEST_ARM"] = str(arm)
    # GIVEN a run stopped (SIGSTOP) after its lease check, just before renaming its first sink object
    zombie = project["leanops"]("run", "vt", "--json", "--name", "zombie")
    wait_for(Path(f"{arm}.stopped"), zombie)
    stopped(worker(arm))
    # WHEN its lease expires and another run takes over and commits everything
    wait_until_expired(project)
    code, out, err = finish(project["leanops"]("run", "vt", "--json", "--name", "takeover"))
    assert code == 0 and json.loads(out)["records"] == 10_000, err[-2000:]
    committed_before = output_report(project["leanops"])["batches"]
    # AND the zombie resumes (SIGCONT): it renames its object into the sink, then finds its lease lost
    os.kill(worker(arm), signal.SIGCONT)
    code, out, err = finish(zombie)
    assert out, (code, err[-3000:])
    # THEN its run fails, its commit rejected, and what it wrote is gone; the committed output is unchanged
    report = json.loads(out)
    assert code == 1 and report["error"] == "LockLost", err[-2000:]
    assert output_report(project["leanops"])["batches"] == committed_before
    assert_converged_exactly_once(project)


def test_kill_9_between_sink_write_and_commit_then_a_run_cutting_elsewhere(project):
    project["write_topics"](
        processor="tests.support.processors:kill_after_sink_write", lease_seconds=3, **IN_WORKER
    )
    arm = project["root"] / "arm"
    arm.write_text("")
    project["env"]["LEANOPS_TEST_ARM"] = str(arm)
    # GIVEN a run whose process task's worker is killed -9 right after writing its first batch's object: the
    # object is in place, the execution fails (Runtime.ExitError) and the state machine releases the lock
    victim = project["leanops"]("run", "vt", "--json", "--name", "victim")
    code, out, err = finish(victim)
    assert code == 1 and json.loads(out)["error"] == "Runtime.ExitError", err[-3000:]
    orphans = sink_objects(project["root"])
    assert len(orphans) == 1 and output_report(project["leanops"])["batches"] == []
    assert status(project)["checkpoint"]["position"] is None
    # WHEN, after its lease, a run with another batch size (so it cuts the batch elsewhere) takes over
    project["write_topics"](batch_size=1_500, lease_seconds=3)
    wait_until_expired(project, or_free=True)
    code, out, err = finish(project["leanops"]("run", "vt", "--json"))
    assert code == 0 and json.loads(out)["records"] == 10_000, err[-2000:]
    # THEN no duplicate, no loss, and the orphan is gone from the sink
    assert orphans[0] not in sink_objects(project["root"])
    assert_converged_exactly_once(project)


def stopped(pid: int) -> None:
    """Until the process is stopped (SIGSTOP is effective at once; this waits for /proc to say so)."""
    deadline = time.monotonic() + 30
    while process_state(pid) != "T":
        assert time.monotonic() < deadline, f"the worker {pid} did not stop: state {process_state(pid)}"
        time.sleep(0.02)


def test_a_run_paused_inside_its_first_batch_deletes_nothing_committed(project):
    project["write_topics"](
        processor="tests.support.processors:stop_in_first_batch", lease_seconds=3, **IN_WORKER
    )
    arm = project["root"] / "arm"
    arm.write_text("")
    project["env"]["LEANOPS_TEST_ARM"] = str(arm)
    # GIVEN a run stopped (SIGSTOP) inside the processor of its first batch, before it wrote anything
    paused = project["leanops"]("run", "vt", "--json", "--name", "paused")
    wait_for(Path(f"{arm}.stopped"), paused)
    stopped(worker(arm))
    # WHEN its lease passes and another run takes over and commits everything, that first batch included
    wait_until_expired(project)
    code, out, err = finish(project["leanops"]("run", "vt", "--json", "--name", "takeover"))
    assert code == 0 and json.loads(out)["records"] == 10_000, err[-2000:]
    committed_before = output_report(project["leanops"])["batches"]
    # AND the paused run resumes: it writes its first batch, and its commit is refused
    os.kill(worker(arm), signal.SIGCONT)
    code, out, err = finish(paused)
    assert code == 1 and json.loads(out)["error"] == "LockLost", err[-3000:]
    # THEN every committed object is still in the sink, each record once; the paused run's object is gone
    assert output_report(project["leanops"])["batches"] == committed_before
    assert_converged_exactly_once(project)


def test_a_retried_commit_whose_first_attempt_landed_keeps_its_committed_object(project):
    project["write_topics"](batch_size=20_000)
    arm = project["root"] / "arm"
    project["env"]["LEANOPS_TEST_ARM"] = str(arm)
    Path(f"{arm}.lose-commit-response").write_text("")  # tests/support/processors.py: install_commit_hooks
    # GIVEN a run whose one commit (with release) landed, stopped before it hears the answer
    first = project["leanops"]("run", "vt", "--json", "--name", "first")
    wait_for(Path(f"{arm}.landed"), first)
    stopped(worker(arm))
    # AND new data, which another run acquires, processes and commits meanwhile
    late = project["root"] / "data" / "date=2099-01-01" / "part-00000.jsonl"
    late.parent.mkdir()
    late.write_text("".join(json.dumps({"event_id": f"new-{i:03d}"}) + "\n" for i in range(50)))
    code, out, err = finish(project["leanops"]("run", "vt", "--json", "--name", "second"))
    assert code == 0 and json.loads(out)["records"] == 50, err[-2000:]
    # WHEN the first run resumes: its commit's answer is lost, and the state machine retries the commit
    os.kill(worker(arm), signal.SIGCONT)
    code, out, err = finish(first)
    # THEN the retry is recognised as landed: the run succeeds, and its object stays in the committed output
    assert code == 0 and json.loads(out)["outcome"] == "processed", err[-3000:]
    expected = sorted([*ALL_EVENTS, *(f"new-{i:03d}" for i in range(50))])
    assert committed_events(project["root"], project["leanops"]) == expected
    committed = sorted(b["object"] for b in output_report(project["leanops"])["batches"] if b["object"])
    assert sink_objects(project["root"]) == committed


def test_gc_removes_what_a_writer_killed_after_a_takeover_left(project):
    project["write_topics"](
        processor="tests.support.processors:stop_before_rename_then_die_after", lease_seconds=3, **IN_WORKER
    )
    arm = project["root"] / "arm"
    arm.write_text("")
    project["env"]["LEANOPS_TEST_ARM"] = str(arm)
    # GIVEN a run stopped before renaming its first object, taken over, then continued and killed -9 right
    # after the rename: its object lands at a start the takeover committed, after that commit's clean-up
    zombie = project["leanops"]("run", "vt", "--json", "--name", "zombie")
    wait_for(Path(f"{arm}.stopped"), zombie)
    stopped(worker(arm))
    wait_until_expired(project)
    code, out, err = finish(project["leanops"]("run", "vt", "--json", "--name", "takeover"))
    assert code == 0 and json.loads(out)["records"] == 10_000, err[-2000:]
    os.kill(worker(arm), signal.SIGCONT)
    code, out, err = finish(zombie)
    assert code == 1 and json.loads(out)["error"] == "Runtime.ExitError", (out, err[-3000:])
    committed = sorted(b["object"] for b in output_report(project["leanops"])["batches"] if b["object"])
    [left] = sorted(set(sink_objects(project["root"])) - set(committed))
    # WHEN gc runs (a dry run first)
    code, out, err = finish(project["leanops"]("gc", "vt", "--dry-run", "--json"))
    assert code == 0 and json.loads(out)["deleted"] == [left] and left in sink_objects(project["root"]), err
    code, out, err = finish(project["leanops"]("gc", "vt", "--json"))
    # THEN it deletes exactly the orphan, keeps nothing, and the sink is exactly the committed output
    assert code == 0 and json.loads(out)["deleted"] == [left] and json.loads(out)["kept"] == [], err
    assert_converged_exactly_once(project)
