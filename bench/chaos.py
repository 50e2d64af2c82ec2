"""Seeded chaos against real ``leanops run`` processes, then a record-by-record exactly-once check.

    python bench/chaos.py --minutes 20 --seed 7 --out bench/results/chaos.json   # the soak (make soak)
    python bench/chaos.py --seconds 60 --seed 7 --out /tmp/chaos.json           # the bounded profile

In a project folder of its own (``--workdir``, else a new temporary folder: topics file, ``data/``,
``out/``, a private ``LEANOPS_HOME`` with its own DynamoDB Local, stopped at the end by
``leanops.local.dynamodb_local.local_down``), the harness runs four phases:

**Land.** A writer thread keeps landing JSON Lines objects on the two topics' ``files`` sources for the
whole chaos phase: ``data/<topic>/part-<n, 8 digits>.jsonl`` (keys sort in arrival order), each a seeded
100-400 lines ``{"event_id": "<topic>-<i>", ...}`` where ``i`` counts the topic's lines in key order, written
to a ``_tmp-`` name and renamed (``os.replace``). ``landed.jsonl`` in the workdir lists every object.

**Disrupt.** Up to 4 concurrent ``leanops run TOPIC --json --name NAME`` processes (random topic, each in
its own session so signals reach only it), with short leases (3 s and 4 s), small batches, a processor that
sleeps a seeded 0-300 ms per batch (tests/support/chaos_processors.py) and ``LEANOPS_SKEW_MARGIN_MS=500``.
Every few seconds (the chaos length / 18, between 3 and 8 s, seeded jitter) the next disruption of a
seeded deck (each round of 8 shuffles 3 kills, 3 pauses, 1 stop-then-kill, 1 duplicate name) happens to a
target of a seeded kind: a run holding its topic's lock (read from DynamoDB: from just after its acquire
through its batches), such a holder whose first batch is not done yet (the classic zombie, stalled just
after taking the lock: pauses favour it), a run inside a batch (ProcessBatch or AdvanceCheckpoint, from its
progress on stderr), or any running run; when none is there for 5 s, whatever is running:

- ``kill``: SIGKILL a running run;
- ``pause``: SIGSTOP a run, hold it past its lease + skew margin and, if it held the lock, until another
  run took the lock over (its fence moved) and, 7 times in 10, until that run committed a batch too (the
  checkpoint moved: the paused run then resumes behind a commit of the batch it was about to process);
  at most 20 s more; then SIGCONT;
- ``stop_then_kill``: the same hold, then SIGKILL without resuming;
- ``duplicate``: two runs started with the same ``--name``: exactly one must be refused with exit code 2.

The chaos phase lasts ``--minutes``/``--seconds``, extended (by at most a quarter of it, at least 60 s)
until the profile's minimum of each disruption is done (bounded profile: 2 kills, 2 pauses, 1 of the
others; 20 minutes: 30 kills and 30 pauses, 5 of the others), so the checks never pass vacuously.
Exit codes expected under chaos: 0; 1 (a failed execution, e.g. ``LockLost``: its ``error`` is counted);
2 only for the refused duplicate; -9 only for our own kills. Anything else is a harness failure.

**Drain.** Stop landing, kill (never resume) whatever is still stopped, let the running runs end, then
clean ``leanops run`` per topic, one at a time, until one reports ``up_to_date`` (``skipped_locked``
means a killed run's lease is pending: try again; at most 120 s per topic without a run that processed
something). Then
``leanops gc TOPIC --json`` per topic (``"gc": "unavailable"`` when the command does not exist yet).

**Check**, per topic, from ``leanops output TOPIC --json`` (the committed output) and the sink folder:

- ``lost_records``: landed event ids in no committed object;
- ``duplicate_records``: event ids present more than once across committed objects;
- ``unexpected_records``: ids in committed objects that were never landed;
- ``missing_committed_objects``: objects a commit names that are not in the sink;
- ``orphans_after_drain``: visible sink objects (no ``_``/``.`` name) that no commit names, plus
  quarantine objects under ``_quarantine/`` that no commit's ``quarantine`` names;
- ``quarantined``: records the commits quarantined (0 for this clean input).

The first four (lost, duplicate, missing, orphans) are the invariants: the results are written either
way, and the exit code is 1 when any is not 0 (or the harness saw something it does not expect: an
unexpected exit code, a duplicate name accepted twice, a topic the drain could not bring up to date).
Forensics: each commit's batch is mapped back to the event ids it covers (from its positions), so a
missing object says which ids it held; a trace written by the runs' processor (which process renamed or
deleted which sink object, from which leanops function) names the run that deleted it. Per-run stdout and
stderr (``runs/``), ``runs.jsonl``, ``trace/`` and the handlers' log stay in the workdir (a temporary one
is removed when everything passed, unless ``--keep``).

The seed fixes the workload and the plan (objects, pacing, topics, the deck and its jitter), not the
interleaving: that depends on the machine, which is the point. Checks never depend on timing; sleeps only
pace the chaos.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import functools
import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from common import REPO_ROOT, machine_info, now_iso, results_path, use_dummy_aws_env, write_results

from leanops.constants import (
    ENV_CONFIG,
    ENV_DYNAMODB_ENDPOINT,
    ENV_HOME,
    ENV_SKEW_MARGIN_MS,
    ENV_STATE_TABLE,
)
from leanops.data.files import owner_tag
from leanops.local.dynamodb_local import local_client, local_down, local_up
from leanops.protocol import TopicRef
from leanops.protocol.dynamodb import DynamoDBStore
from leanops.protocol.table import create_table

SCRIPT = "bench/chaos.py"
STATE_TABLE = "leanops-state"
PROCESSOR = "tests.support.chaos_processors:process"
QUARANTINE = "_quarantine/"
KINDS = ("kill", "pause", "stop_then_kill", "duplicate")
#: One round of the disruption deck (shuffled per round).
DECK_ROUND = ("kill", "kill", "kill", "pause", "pause", "pause", "stop_then_kill", "duplicate")
#: The four invariants: each must be 0.
INVARIANTS = ("lost_records", "duplicate_records", "missing_committed_objects", "orphans_after_drain")
#: Execution ARN of the local runtime, before the execution name (the owner the lock and commits record).
ARN_PREFIX = "arn:aws:states:us-east-1:123456789012:execution:TopicRunStateMachine:"
STATE_ENTERED = re.compile(r"→ (\S+)")
#: ``.<fence>-<owner tag>[-<attempt>].<extension>`` at the end of a sink object's name: who wrote it.
WRITER_TAG = re.compile(r"\.\d+-([0-9a-f]{8})(?:-[0-9a-f]{8})?\.(?:jsonl|jsonl\.gz|parquet)$")


# ------------------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicSettings:
    name: str
    lease_seconds: int
    batch_size: int
    max_batches_per_run: int = 20


@dataclass(frozen=True)
class Settings:
    """The profile: everything the seed does not draw."""

    seed: int
    chaos_seconds: float
    topics: tuple[TopicSettings, ...] = (
        TopicSettings("alpha", lease_seconds=3, batch_size=300),
        TopicSettings("beta", lease_seconds=4, batch_size=700),
    )
    max_running: int = 4
    max_stopped: int = 2
    disruption_interval: float = 10.0
    #: Done at least this many times (the chaos phase is extended until they are, up to max_extension).
    min_disruptions: dict[str, int] = field(default_factory=dict)
    max_extension_seconds: float = 60.0
    skew_margin_ms: int = 500
    processor_sleep_ms: int = 300
    #: A pause is held this long past lease + skew margin at least, and waits at most takeover_wait more
    #: for another run to take the lock over.
    hold_slack_seconds: float = 0.5
    takeover_wait_seconds: float = 20.0
    #: A run resumed from a pause is no target for this long (what it does next is the test).
    zombie_grace_seconds: float = 10.0
    lines_per_object: tuple[int, int] = (100, 400)
    landing_pause_seconds: tuple[float, float] = (0.3, 1.0)
    run_timeout_seconds: float = 300.0
    drain_seconds: float = 120.0
    inject_loss: bool = False

    def topic(self, name: str) -> TopicSettings:
        return next(t for t in self.topics if t.name == name)


def settings_for(chaos_seconds: float, seed: int, *, inject_loss: bool = False) -> Settings:
    """The profile for a chaos phase of ``chaos_seconds``: disruptions every chaos/18 s (3-8 s)."""
    long = chaos_seconds >= 600
    minimum = (
        {"kill": 30, "pause": 30, "stop_then_kill": 5, "duplicate": 5}
        if long
        else {"kill": 2, "pause": 2, "stop_then_kill": 1, "duplicate": 1}
    )
    return Settings(
        seed=seed,
        chaos_seconds=chaos_seconds,
        disruption_interval=min(8.0, max(3.0, chaos_seconds / 18)),
        min_disruptions=minimum,
        max_extension_seconds=max(60.0, chaos_seconds / 4),
        inject_loss=inject_loss,
    )


# ------------------------------------------------------------------------------------------------------------
# The project folder and its `leanops` processes
# ------------------------------------------------------------------------------------------------------------


class Project:
    """``topics.yaml``, ``data/<topic>``, ``out/<topic>``, ``home/`` (LEANOPS_HOME), ``runs/``, ``trace/``."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root, self.settings = root, settings
        self.home, self.config = root / "home", root / "topics.yaml"
        self.runs_dir, self.trace_dir = root / "runs", root / "trace"
        self.topics = [t.name for t in settings.topics]
        for folder in (
            self.runs_dir,
            self.trace_dir,
            *map(self.data, self.topics),
            *map(self.sink, self.topics),
        ):
            folder.mkdir(parents=True, exist_ok=True)
        declared = {
            t.name: {
                "source": {"type": "files", "uri": f"./data/{t.name}"},
                "sink": {"type": "files", "uri": f"./out/{t.name}", "format": "jsonl"},
                "processor": PROCESSOR,
                "batch_size": t.batch_size,
                "lease_seconds": t.lease_seconds,
                "max_batches_per_run": t.max_batches_per_run,
            }
            for t in settings.topics
        }
        self.config.write_text(yaml.safe_dump({"topics": declared}, sort_keys=False))
        self.env = {
            **os.environ,
            ENV_HOME: str(self.home),
            ENV_STATE_TABLE: STATE_TABLE,
            ENV_SKEW_MARGIN_MS: str(settings.skew_margin_ms),
            "LEANOPS_CHAOS_SLEEP_MS": str(settings.processor_sleep_ms),
            "LEANOPS_CHAOS_SEED": str(settings.seed),
            "LEANOPS_CHAOS_TRACE_DIR": str(self.trace_dir),
            "LEANOPS_CHAOS_TRACE_ROOT": str(root / "out"),
        }
        for name in (ENV_DYNAMODB_ENDPOINT, ENV_CONFIG):
            self.env.pop(name, None)

    def data(self, topic: str) -> Path:
        return self.root / "data" / topic

    def sink(self, topic: str) -> Path:
        return self.root / "out" / topic

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "leanops", *args, "--config", str(self.config)]

    def start(self, label: str, topic: str, name: str) -> subprocess.Popen[bytes]:
        """``leanops run TOPIC --json --name NAME`` in its own session, output to ``runs/<label>.*``."""
        with (
            open(self.runs_dir / f"{label}.out", "wb") as out,
            open(self.runs_dir / f"{label}.err", "wb") as err,
        ):
            return subprocess.Popen(
                self.command("run", topic, "--json", "--name", name),
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def leanops(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def last_json(text: str) -> dict[str, Any] | None:
    """The JSON object a ``--json`` command printed (its last stdout line), if any."""
    for line in reversed(text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return None


@dataclass(frozen=True)
class LockView:
    """What the harness steers by: the execution name holding a topic's lock with an unexpired lease
    (None when free or expired), the lock's fence and the checkpoint's commit count (-1: unknown)."""

    holder: str | None
    fence: int
    seq: int


class LockReader:
    """Reads a topic's lock and checkpoint items straight from the home's DynamoDB Local (read only)."""

    def __init__(self, endpoint: str) -> None:
        self.store = DynamoDBStore(STATE_TABLE, local_client(endpoint, read_timeout=5))

    def read(self, topic: str) -> LockView:
        try:
            lock = self.store.read_lock(TopicRef(topic))
            checkpoint = self.store.read_checkpoint(TopicRef(topic))
        except Exception:  # the harness only steers by it; a failed read means "unknown"
            return LockView(None, -1, -1)
        seq = checkpoint.seq if checkpoint is not None else 0
        if lock is None:
            return LockView(None, 0, seq)
        live = lock.owner is not None and lock.lease_expires_at_ms > time.time() * 1000
        return LockView(lock.owner.rsplit(":", 1)[-1] if live and lock.owner else None, lock.fence, seq)


# ------------------------------------------------------------------------------------------------------------
# Land: the writer thread
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LandedObject:
    """One source object: its key, the index of its first line in the topic, its number of lines."""

    key: str
    first: int
    count: int


class Lander(threading.Thread):
    """Lands objects on the topics' sources until :meth:`stop`; records every one in ``landed.jsonl``."""

    def __init__(self, project: Project, settings: Settings) -> None:
        super().__init__(name="chaos-lander", daemon=True)
        self.project, self.settings = project, settings
        self.rng = random.Random(f"{settings.seed}:land")
        self.landed: dict[str, list[LandedObject]] = {t: [] for t in project.topics}
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def records(self, topic: str) -> int:
        objects = self.landed[topic]
        return objects[-1].first + objects[-1].count if objects else 0

    def land_one(self, topic: str) -> LandedObject:
        objects = self.landed[topic]
        first, count = self.records(topic), self.rng.randint(*self.settings.lines_per_object)
        key = f"part-{len(objects):08d}.jsonl"
        lines = "".join(
            json.dumps({"event_id": f"{topic}-{i}", "topic": topic, "object": key, "line": i - first}) + "\n"
            for i in range(first, first + count)
        )
        folder = self.project.data(topic)
        temporary = folder / f"_tmp-{key}"
        temporary.write_text(lines)
        os.replace(temporary, folder / key)
        landed = LandedObject(key, first, count)
        objects.append(landed)
        with open(self.project.root / "landed.jsonl", "a") as manifest:
            manifest.write(json.dumps({"topic": topic, **asdict(landed), "t": time.time()}) + "\n")
        return landed

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self.land_one(self.rng.choice(self.project.topics))
                self._stop_event.wait(self.rng.uniform(*self.settings.landing_pause_seconds))
        except BaseException as exc:  # reported by the drain; landing stops
            self.error = exc

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# ------------------------------------------------------------------------------------------------------------
# Disrupt: runs, counters and the chaos loop
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One ``leanops run`` process."""

    label: str
    name: str
    topic: str
    role: str  # chaos | duplicate | drain
    process: subprocess.Popen[bytes]
    started: float
    #: Wall clock (time.time()) at start and end: what the sink trace's timestamps compare with.
    started_wall: float = field(default_factory=time.time)
    ended_wall: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    killed_by_us: bool = False
    stopped: bool = False
    #: When a pause ended (monotonic): a resumed run is left alone for a while, to play out as a zombie.
    resumed: float | None = None
    code: int | None = None
    report: dict[str, Any] | None = None
    ended: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to the run's process group; False if it is gone."""
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def progress(self, runs_dir: Path) -> tuple[str, int]:
        """The last state the run entered (``starting`` before any) and how many batches it has
        processed, from its progress on stderr."""
        try:
            text = (runs_dir / f"{self.label}.err").read_text(errors="replace")
        except OSError:
            return "unknown", 0
        found = STATE_ENTERED.findall(text)
        return (found[-1] if found else "starting"), text.count("✓ ProcessBatch")

    def phase(self, runs_dir: Path) -> str:
        return self.progress(runs_dir)[0]

    def summary(self, t0: float) -> dict[str, Any]:
        report = self.report or {}
        return {
            "label": self.label,
            "name": self.name,
            "topic": self.topic,
            "role": self.role,
            "pid": self.pid,
            "started_s": round(self.started - t0, 2),
            "ended_s": round(self.ended - t0, 2) if self.ended is not None else None,
            "code": self.code,
            "outcome": report.get("outcome"),
            "error": report.get("error"),
            "cause": (report.get("cause") or "")[:600] or None,
            "batches": report.get("batches"),
            "records": report.get("records"),
            "events": self.events,
        }


@dataclass
class Counters:
    """What the chaos phase did and saw."""

    runs: int = 0
    kills: int = 0
    pauses: int = 0
    pauses_of_lock_holders: int = 0
    pauses_with_takeover: int = 0
    pauses_resumed_behind_a_commit: int = 0
    stop_then_kills: int = 0
    duplicate_names: int = 0
    killed_when_stopped_at_drain: int = 0
    disruptions_without_target: int = 0
    sandbox_timeouts: int = 0
    harness_timeouts: int = 0
    exit_codes: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    disrupted_phases: Counter[str] = field(default_factory=Counter)
    harness_failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def done(self, kind: str) -> int:
        return {
            "kill": self.kills,
            "pause": self.pauses,
            "stop_then_kill": self.stop_then_kills,
            "duplicate": self.duplicate_names,
        }[kind]


def _plain(value: Any) -> Any:
    """A Counter as a plain dict (``asdict`` would rebuild it from its items, counting them)."""
    return dict(value) if isinstance(value, Counter) else value


@dataclass
class Stop:
    """A run held stopped (SIGSTOP) by a ``pause`` or ``stop_then_kill``: at least ``min_hold`` s (its
    lease + skew margin + slack); a lock holder until another run took the lock over (the fence moved)
    and, with ``until_commit``, until the checkpoint moved after that too (a zombie then resumes behind a
    commit of the batch it was about to process), at most ``takeover_wait_seconds`` more."""

    run: Run
    kind: str
    stopped_at: float
    min_hold: float
    at_stop: LockView
    holder: bool
    until_commit: bool
    takeover: bool = False
    committed_since: bool = False

    def over(self, now: float, view: Callable[[], LockView], wait: float) -> bool:
        """Whether the hold is over (``view`` reads the topic's lock and checkpoint now)."""
        held = now - self.stopped_at
        if held < self.min_hold:
            return False
        if not self.holder:
            return True
        if not self.awaited():
            current = view()
            self.takeover = self.takeover or current.fence > self.at_stop.fence
            self.committed_since = self.takeover and current.seq > self.at_stop.seq
        return self.awaited() or held >= self.min_hold + wait

    def awaited(self) -> bool:
        return self.takeover and (self.committed_since or not self.until_commit)


class Chaos:
    """The chaos phase: starts runs, disrupts them, reaps them. :meth:`run` until the phase is over."""

    def __init__(self, project: Project, settings: Settings, locks: LockReader, t0: float) -> None:
        self.project, self.settings, self.locks, self.t0 = project, settings, locks, t0
        #: The same moment on the wall clock, which the sink trace's timestamps use.
        self.t0_wall = time.time() - (time.monotonic() - t0)
        self.rng = random.Random(f"{settings.seed}:chaos")
        self.counters = Counters()
        self.runs: list[Run] = []
        self.stops: list[Stop] = []
        self.duplicates: list[tuple[Run, Run]] = []
        self.disruptions: list[dict[str, Any]] = []
        self.deck: list[str] = []
        self.next_start = t0
        # The first disruption once the first runs are under way (a run spends its first seconds importing).
        self.next_disruption = t0 + max(5.0, settings.disruption_interval * self.rng.uniform(0.8, 1.2))
        #: Since when the next disruption waits for a target, and which kind of target (see target()).
        self.pending_since: float | None = None
        self.pending_mode = "any"
        self.serial = 0
        self.log = open(project.root / "runs.jsonl", "a")  # noqa: SIM115 (closed by close())

    # --- runs ---

    def start(self, topic: str, role: str = "chaos", name: str | None = None) -> Run:
        self.serial += 1
        label = f"{self.serial:05d}-{topic}"
        name = name or f"chaos-{self.settings.seed}-{self.serial:05d}-{topic}"
        run = Run(label, name, topic, role, self.project.start(label, topic, name), time.monotonic())
        self.runs.append(run)
        if role != "drain":
            self.counters.runs += 1
        return run

    def live(self) -> list[Run]:
        return [r for r in self.runs if r.code is None]

    def reap(self) -> None:
        for run in self.live():
            code = run.process.poll()
            if code is None:
                if not run.stopped and time.monotonic() - run.started > self.settings.run_timeout_seconds:
                    run.killed_by_us = run.signal(signal.SIGKILL)
                    run.events.append(self.event("harness_timeout"))
                    self.counters.harness_timeouts += 1
                continue
            self.finish(run, code)
        for pair in list(self.duplicates):
            if all(r.code is not None for r in pair):
                self.duplicates.remove(pair)
                self.judge_duplicate(pair)

    def finish(self, run: Run, code: int) -> None:
        run.code, run.ended, run.ended_wall = code, time.monotonic(), time.time()
        run.report = last_json((self.project.runs_dir / f"{run.label}.out").read_text(errors="replace"))
        self.log.write(json.dumps(run.summary(self.t0)) + "\n")
        self.log.flush()
        if run.role == "drain":
            return
        report = run.report or {}
        self.counters.exit_codes[str(code)] += 1
        if code == 0:
            self.counters.outcomes[str(report.get("outcome"))] += 1
        elif code == 1:
            error = str(report.get("error") or "no JSON report")
            self.counters.errors[error] += 1
            if error.startswith("Sandbox") or "Timeout" in error:
                self.counters.sandbox_timeouts += 1
        elif code == -signal.SIGKILL and run.killed_by_us:
            pass
        elif code == 2 and run.role == "duplicate":
            pass  # judged with its pair
        else:
            self.counters.harness_failures.append(
                f"run {run.label} ({run.name}) exited {code} unexpectedly: see runs/{run.label}.err"
            )

    def judge_duplicate(self, pair: tuple[Run, Run]) -> None:
        codes = sorted(r.code for r in pair if r.code is not None)
        refused = [r for r in pair if r.code == 2]
        if len(refused) == 1:
            self.counters.duplicate_names += 1
        elif not any(r.killed_by_us for r in pair):
            self.counters.harness_failures.append(
                f"duplicate name {pair[0].name}: exit codes {codes}, expected exactly one 2 (refused)"
            )
        for run in pair:
            run.events.append(self.event("duplicate_judged", codes=codes))

    def event(self, what: str, **detail: Any) -> dict[str, Any]:
        return {"what": what, "t": round(time.monotonic() - self.t0, 2), **detail}

    def maybe_start(self, now: float) -> None:
        running = [r for r in self.live() if not r.stopped]
        if len(running) >= self.settings.max_running or now < self.next_start:
            return
        # A topic whose lock holder is stopped gets the next start when no run of it is running (so one
        # takes the lock over), and more starts anyway.
        waiting = {s.run.topic for s in self.stops if s.holder and not s.takeover}
        idle = sorted(waiting - {r.topic for r in running})
        weights = [3 if topic in waiting else 1 for topic in self.project.topics]
        self.start(self.rng.choice(idle) if idle else self.rng.choices(self.project.topics, weights)[0])
        self.next_start = now + self.rng.uniform(0.1, 0.8)

    # --- disruptions ---

    def next_kind(self, extending: bool) -> str | None:
        if extending:  # only what the profile still misses
            missing = [k for k in KINDS if self.counters.done(k) < self.settings.min_disruptions.get(k, 0)]
            return missing[0] if missing else None
        if not self.deck:
            self.deck = list(DECK_ROUND)
            self.rng.shuffle(self.deck)
        return self.deck[0]

    def target(self, patient: bool, mode: str) -> tuple[Run | None, bool, LockView]:
        """A run to disrupt, whether it holds its topic's lock, and that topic's lock and checkpoint.

        ``mode`` (drawn per disruption): ``any`` running chaos run (starting, acquiring, skipping: all fair
        game); a lock ``holder`` in any state (from just after its acquire, through its batches); a
        ``fresh`` holder, whose first batch is not done yet (the classic zombie: stalled just after taking
        the lock); a run inside a ``batch`` (ProcessBatch or AdvanceCheckpoint). When none is there for a
        while (``patient`` no more): a holder, else a run in a batch, else any running run.
        """
        now = time.monotonic()
        candidates = [
            r
            for r in self.live()
            if r.role == "chaos"
            and not r.stopped
            and (r.resumed is None or now - r.resumed > self.settings.zombie_grace_seconds)
        ]
        views = {topic: self.locks.read(topic) for topic in self.project.topics}
        progress = {r.label: r.progress(self.project.runs_dir) for r in candidates}
        holders = [r for r in candidates if r.name == views[r.topic].holder]
        pools = {
            "any": candidates,
            "holder": holders,
            "fresh": [r for r in holders if progress[r.label][1] == 0],
            "batch": [r for r in candidates if progress[r.label][0] in ("ProcessBatch", "AdvanceCheckpoint")],
        }
        pool = pools[mode]
        if not pool and not patient:
            pool = holders or pools["batch"] or candidates
        if not pool:
            return None, False, LockView(None, -1, -1)
        chosen = self.rng.choice(pool)
        return chosen, chosen.name == views[chosen.topic].holder, views[chosen.topic]

    def maybe_disrupt(self, now: float, extending: bool) -> None:
        if now < self.next_disruption:
            return
        kind = self.next_kind(extending)
        if kind is None:
            return
        if self.pending_since is None:
            self.pending_since = now
            weights = (1, 1, 2, 1) if kind in ("pause", "stop_then_kill") else (1, 2, 0, 2)
            self.pending_mode = self.rng.choices(("any", "holder", "fresh", "batch"), weights)[0]
        patient = now - self.pending_since < 5.0
        if kind == "duplicate":
            done = self.duplicate()
        elif kind in ("pause", "stop_then_kill") and len(self.stops) >= self.settings.max_stopped:
            done = False
        else:
            done = self.stop_or_kill(kind, patient, self.pending_mode)
        if not done:
            if now - self.pending_since > 30:
                self.counters.disruptions_without_target += 1
            else:
                self.next_disruption = now + 0.2
                return
        if not extending:
            self.deck.pop(0)
        self.pending_since = None
        self.next_disruption = now + self.settings.disruption_interval * self.rng.uniform(0.6, 1.4)

    def stop_or_kill(self, kind: str, patient: bool, mode: str) -> bool:
        run, holder, view = self.target(patient, mode)
        if run is None:
            return False
        phase = run.phase(self.project.runs_dir)
        signum = signal.SIGKILL if kind == "kill" else signal.SIGSTOP
        if not run.signal(signum):
            return False
        if kind != "kill":  # what the run held when it stopped (it may have committed since the look)
            view = self.locks.read(run.topic)
            holder = view.holder == run.name
        now = time.monotonic()
        detail = {"kind": kind, "run": run.label, "topic": run.topic, "phase": phase, "holder": holder}
        detail |= {"mode": mode}
        run.events.append(self.event(kind, phase=phase, holder=holder, mode=mode))
        self.disruptions.append({"t": round(now - self.t0, 2), **detail})
        self.counters.disrupted_phases[phase] += 1
        if kind == "kill":
            run.killed_by_us = True
            self.counters.kills += 1
            return True
        run.stopped = True
        lease = self.settings.topic(run.topic).lease_seconds
        min_hold = lease + self.settings.skew_margin_ms / 1000 + self.settings.hold_slack_seconds
        until_commit = self.rng.random() < 0.7
        self.stops.append(Stop(run, kind, now, min_hold, view, holder, until_commit))
        return True

    def duplicate(self) -> bool:
        topic = self.rng.choice(self.project.topics)
        name = f"chaos-{self.settings.seed}-dup-{self.serial + 1:05d}-{topic}"
        first = self.start(topic, "duplicate", name)
        time.sleep(self.rng.uniform(0, 0.3))
        second = self.start(topic, "duplicate", name)
        self.duplicates.append((first, second))
        self.disruptions.append(
            {
                "t": round(time.monotonic() - self.t0, 2),
                "kind": "duplicate",
                "runs": [first.label, second.label],
            }
        )
        return True

    def tend_stops(self, now: float) -> None:
        """End the holds that are over: SIGCONT a pause, SIGKILL a stop_then_kill."""
        for stop in list(self.stops):
            view = functools.partial(self.locks.read, stop.run.topic)
            if not stop.over(now, view, self.settings.takeover_wait_seconds):
                continue
            self.stops.remove(stop)
            run = stop.run
            detail = {
                "held_s": round(now - stop.stopped_at, 2),
                "holder": stop.holder,
                "takeover": stop.takeover,
                "until_commit": stop.until_commit,
                "committed_since": stop.committed_since,
            }
            if stop.kind == "pause":
                run.signal(signal.SIGCONT)
                run.stopped, run.resumed = False, now
                run.events.append(self.event("resumed", **detail))
                self.counters.pauses += 1
                self.counters.pauses_of_lock_holders += stop.holder
                self.counters.pauses_with_takeover += stop.takeover
                self.counters.pauses_resumed_behind_a_commit += stop.committed_since
            else:
                run.killed_by_us = run.signal(signal.SIGKILL)
                run.events.append(self.event("killed_while_stopped", **detail))
                self.counters.stop_then_kills += 1

    # --- the loop ---

    def quotas_met(self) -> bool:
        return all(self.counters.done(k) >= n for k, n in self.settings.min_disruptions.items())

    def run(self, lander: Lander) -> None:
        end = self.t0 + self.settings.chaos_seconds
        hard_end = end + self.settings.max_extension_seconds
        while True:
            now = time.monotonic()
            self.reap()
            self.tend_stops(now)
            if lander.error is not None or now >= hard_end or (now >= end and self.quotas_met()):
                return
            self.maybe_start(now)
            self.maybe_disrupt(now, extending=now >= end)
            time.sleep(0.05)

    def settle(self) -> None:
        """Kill what is still stopped (never resume it), then wait for the running runs to end."""
        for stop in self.stops:
            stop.run.killed_by_us = stop.run.signal(signal.SIGKILL)
            stop.run.events.append(
                self.event("killed_at_drain", held_s=round(time.monotonic() - stop.stopped_at, 2))
            )
            self.counters.killed_when_stopped_at_drain += 1
        self.stops.clear()
        while self.live() or self.duplicates:
            self.reap()
            time.sleep(0.1)

    def kill_all(self) -> None:
        """On the way out, whatever happened: no process of ours outlives the harness."""
        for run in self.live():
            run.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.process.wait(timeout=10)

    def close(self) -> None:
        self.log.close()


# ------------------------------------------------------------------------------------------------------------
# Drain and gc
# ------------------------------------------------------------------------------------------------------------


def drain(chaos: Chaos, settings: Settings) -> dict[str, Any]:
    """Clean runs per topic, one at a time, until one reports ``up_to_date``: bounded by
    ``drain_seconds`` without a run that processed something."""
    result: dict[str, Any] = {}
    for topic in chaos.project.topics:
        deadline = time.monotonic() + settings.drain_seconds
        outcomes: list[str] = []
        up_to_date = False
        while time.monotonic() < deadline:
            run = chaos.start(topic, "drain", f"drain-{settings.seed}-{chaos.serial + 1:05d}-{topic}")
            try:
                code = run.process.wait(timeout=settings.run_timeout_seconds)
            except subprocess.TimeoutExpired:
                run.signal(signal.SIGKILL)
                code = run.process.wait()
            chaos.finish(run, code)
            report = run.report or {}
            outcome = str(report.get("outcome") if code == 0 else f"exit {code}: {report.get('error')}")
            outcomes.append(outcome)
            if code == 0 and outcome == "up_to_date":
                up_to_date = True
                break
            if outcome == "processed":  # progress: the bound is on waiting, not on the backlog's size
                deadline = time.monotonic() + settings.drain_seconds
            if code != 0 or outcome == "skipped_locked":
                time.sleep(1.0)  # a killed run's lease is pending, or a failure: try again
        result[topic] = {
            "up_to_date": up_to_date,
            "runs": len(outcomes),
            "outcomes": dict(Counter(outcomes)),
            "sequence": outcomes,
        }
        if not up_to_date:
            chaos.counters.harness_failures.append(
                f"drain: {topic} not up_to_date within {settings.drain_seconds:.0f} s ({outcomes[-5:]})"
            )
    return result


def committed_output(project: Project, topic: str) -> list[dict[str, Any]]:
    """The ``batches`` of ``leanops output TOPIC --json``: one entry per commit, oldest first."""
    done = project.leanops("output", topic, "--json")
    report = last_json(done.stdout)
    if done.returncode != 0 or report is None:
        raise RuntimeError(f"`leanops output {topic} --json` failed ({done.returncode}): {done.stderr}")
    return list(report["batches"])


def collect_garbage(project: Project) -> dict[str, Any] | str:
    """``leanops gc TOPIC --json`` per topic; ``"unavailable"`` when the command does not exist."""
    found: dict[str, Any] = {}
    for topic in project.topics:
        done = project.leanops("gc", topic, "--json")
        if done.returncode == 2 and "No such command" in done.stderr:
            return "unavailable"
        found[topic] = {
            "code": done.returncode,
            "report": last_json(done.stdout),
            "stderr": done.stderr[-1000:],
        }
    return found


# ------------------------------------------------------------------------------------------------------------
# Check: record by record (pure functions of the landed objects, the committed output and the sink folder)
# ------------------------------------------------------------------------------------------------------------


def position_index(objects: Sequence[LandedObject], position: str | None) -> int:
    """The topic-wide index of the first line after ``position`` (``<key>#<line>``; None: the start)."""
    if not position:
        return 0
    key, _, line = position.rpartition("#")
    keys = [o.key for o in objects]
    i = bisect.bisect_left(keys, key)
    base = objects[i].first if i < len(objects) else (objects[-1].first + objects[-1].count if objects else 0)
    return base + int(line or 0)


def read_sink_object(path: Path) -> list[dict[str, Any]]:
    """The records of a sink object: JSON Lines (``.jsonl``, ``.jsonl.gz``) or Parquet."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return list(pq.read_table(path).to_pylist())
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    records = []
    for line in data.decode("utf-8", "replace").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                records.append({"event_id": None, "unreadable": line[:200]})
    return records


def visible_objects(sink: Path) -> list[str]:
    """Names of the sink's visible objects (no path component starting with ``_`` or ``.``)."""
    if not sink.is_dir():
        return []
    names = []
    for path in sink.rglob("*"):
        relative = path.relative_to(sink).as_posix()
        if path.is_file() and not any(part.startswith(("_", ".")) for part in relative.split("/")):
            names.append(relative)
    return sorted(names)


def quarantine_objects(sink: Path) -> list[str]:
    folder = sink / QUARANTINE
    if not folder.is_dir():
        return []
    return sorted(
        f"{QUARANTINE}{p.relative_to(folder).as_posix()}"
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(("_", "."))
    )


def unnamed_objects(sink: Path, batches: Sequence[dict[str, Any]], *, split: bool = False) -> Any:
    """The sink's visible objects no commit names, and its quarantine objects no commit's ``quarantine``
    names: one sorted list, or the two lists with ``split``."""
    named = {b["object"] for b in batches if b.get("object")}
    named_quarantine = {b["quarantine"] for b in batches if b.get("quarantine")}
    objects = [n for n in visible_objects(sink) if n not in named]
    quarantine = [n for n in quarantine_objects(sink) if n not in named_quarantine]
    return (objects, quarantine) if split else objects + quarantine


def _sample(values: Iterable[str], limit: int = 10) -> list[str]:
    return sorted(values, key=lambda v: (len(v), v))[:limit]


def check_topic(
    topic: str, landed: Sequence[LandedObject], sink: Path, batches: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Every invariant of one topic, with enough detail to say what went wrong where."""
    total = landed[-1].first + landed[-1].count if landed else 0
    expected = {f"{topic}-{i}" for i in range(total)}
    seen: Counter[str] = Counter()
    missing: list[dict[str, Any]] = []
    wrong_content: list[dict[str, Any]] = []
    chain_breaks: list[dict[str, Any]] = []
    previous_end: str | None = None
    ordered = sorted(batches, key=lambda b: int(b.get("seq", 0)))
    for batch in ordered:
        if batch.get("after") != previous_end:
            chain_breaks.append(
                {"seq": batch.get("seq"), "after": batch.get("after"), "expected": previous_end}
            )
        previous_end = batch.get("end")
        first, last = position_index(landed, batch.get("after")), position_index(landed, batch.get("end"))
        name = batch.get("object")
        if not name:
            continue
        path = sink / name
        if not path.is_file():
            missing.append(
                {
                    "object": name,
                    "seq": batch.get("seq"),
                    "written": batch.get("written"),
                    "ids": f"{topic}-{first}..{topic}-{last - 1}",
                    "committed_by": str(batch.get("owner", "")).rsplit(":", 1)[-1],
                }
            )
            continue
        ids = [str(r.get("event_id")) for r in read_sink_object(path)]
        seen.update(ids)
        if ids != [f"{topic}-{i}" for i in range(first, last)]:
            wrong_content.append(
                {"object": name, "seq": batch.get("seq"), "lines": len(ids), "range": [first, last]}
            )
    orphans, orphan_quarantine = unnamed_objects(sink, batches, split=True)
    lost = expected - seen.keys()
    duplicates = {i: c for i, c in seen.items() if c > 1}
    unexpected = seen.keys() - expected
    hidden = [
        p.relative_to(sink).as_posix() for p in sink.rglob("*") if p.is_file() and p.name.startswith("_tmp-")
    ]
    return {
        "records_landed": total,
        "objects_landed": len(landed),
        "committed_batches": len(ordered),
        "committed_records": sum(seen.values()),
        "committed_distinct_records": len(seen),
        "final_position": previous_end,
        "final_position_covers_all_landed": position_index(landed, previous_end) == total,
        "lost_records": len(lost),
        "lost_sample": _sample(lost),
        "duplicate_records": len(duplicates),
        "duplicate_copies": sum(c - 1 for c in duplicates.values()),
        "duplicate_sample": _sample(duplicates),
        "unexpected_records": len(unexpected),
        "unexpected_sample": _sample(unexpected),
        "missing_committed_objects": len(missing),
        "missing_objects": missing,
        "orphans_after_drain": len(orphans) + len(orphan_quarantine),
        "orphan_objects": orphans[:50],
        "orphan_quarantine_objects": orphan_quarantine[:50],
        "quarantined": sum(int(b.get("quarantined", 0) or 0) for b in batches),
        "objects_with_unexpected_content": wrong_content[:50],
        "checkpoint_chain_breaks": chain_breaks[:50],
        "hidden_temporary_files": len(hidden),
        "lost_in_missing_objects": sum(
            1 for m in missing for i in _range_of(m["ids"], topic) if f"{topic}-{i}" in lost
        ),
    }


def _range_of(ids: str, topic: str) -> range:
    first, _, last = ids.partition("..")
    return range(int(first.removeprefix(f"{topic}-")), int(last.removeprefix(f"{topic}-")) + 1)


def inject_loss(sink: Path, batches: Sequence[dict[str, Any]]) -> str | None:
    """Delete the first committed object (``--inject-loss``: the check must then report it missing)."""
    for batch in sorted(batches, key=lambda b: int(b.get("seq", 0))):
        if batch.get("object") and (sink / batch["object"]).is_file():
            (sink / batch["object"]).unlink()
            return str(batch["object"])
    return None


def totals(per_topic: dict[str, dict[str, Any]]) -> dict[str, int]:
    keys = (*INVARIANTS, "unexpected_records", "quarantined", "records_landed")
    return {key: sum(int(check[key]) for check in per_topic.values()) for key in keys}


# ------------------------------------------------------------------------------------------------------------
# Forensics: which runs wrote and deleted what the check found wrong
# ------------------------------------------------------------------------------------------------------------


def read_traces(trace_dir: Path) -> list[dict[str, Any]]:
    events = []
    for path in sorted(trace_dir.glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return sorted(events, key=lambda e: e.get("t", 0))


def attribute(
    per_topic: dict[str, dict[str, Any]],
    runs: Sequence[Run],
    traces: Sequence[dict[str, Any]],
    t0_wall: float,
    injected: str | None = None,
) -> dict[str, Any]:
    """For each missing committed object and orphan: the run that wrote it and the runs that deleted it
    (from the sink trace: a process id, during that run's lifetime)."""

    def by_pid(pid: Any, t: float) -> Run | None:
        return next(
            (r for r in runs if r.pid == pid and r.started_wall - 1 <= t <= (r.ended_wall or t) + 1), None
        )

    prefix = next(
        (str(r.report["execution"])[: -len(r.name)] for r in runs if r.report and r.report.get("execution")),
        ARN_PREFIX,
    )
    by_tag = {owner_tag(prefix + r.name): r for r in runs}

    def who(run: Run | None) -> dict[str, Any] | None:
        if run is None:
            return None
        disrupted = [e for e in run.events if e["what"] in ("kill", "pause", "stop_then_kill", "resumed")]
        report = run.report or {}
        return {
            "run": run.label,
            "name": run.name,
            "role": run.role,
            "code": run.code,
            "error": report.get("error"),
            "disruptions": disrupted,
        }

    def history(topic: str, name: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        if name == injected:
            found.append({"op": "delete", "run": "the harness (--inject-loss)"})
        for e in traces:
            if e.get("path") == f"{topic}/{name}":
                run = by_pid(e.get("pid"), e["t"])
                found.append(
                    {
                        "op": e["op"],
                        "t": round(e["t"] - t0_wall, 2),
                        "run": run.label if run else f"pid {e.get('pid')}",
                        "stack": e.get("stack"),
                    }
                )
        return found

    def writer(name: str) -> Run | None:
        tag = WRITER_TAG.search(name)
        return by_tag.get(tag.group(1)) if tag else None

    found: dict[str, Any] = {}
    for topic, check in per_topic.items():
        missing = [
            {**m, "writer": who(writer(m["object"])), "history": history(topic, m["object"])}
            for m in check["missing_objects"]
        ]
        orphans = [
            {"object": n, "writer": who(writer(n)), "history": history(topic, n)}
            for n in check["orphan_objects"]
        ]
        if missing or orphans:
            found[topic] = {"missing_committed_objects": missing, "orphans": orphans}
    return found


# ------------------------------------------------------------------------------------------------------------
# The whole harness
# ------------------------------------------------------------------------------------------------------------


def run_harness(settings: Settings, root: Path) -> dict[str, Any]:
    started_at, began, load_at_start = now_iso(), time.monotonic(), list(os.getloadavg())
    project = Project(root, settings)
    endpoint = local_up(project.home)
    create_table(local_client(endpoint), STATE_TABLE)
    lander = Lander(project, settings)
    chaos = Chaos(project, settings, LockReader(endpoint), time.monotonic())
    try:
        for topic in project.topics:  # something to process from the first run on
            lander.land_one(topic)
        lander.start()
        chaos.run(lander)
        chaos_seconds = time.monotonic() - chaos.t0
        lander.stop()
        if lander.error is not None:
            chaos.counters.harness_failures.append(f"landing failed: {lander.error!r}")
        chaos.settle()
        drained = drain(chaos, settings)
        outputs = {topic: committed_output(project, topic) for topic in project.topics}
        before_gc = {topic: unnamed_objects(project.sink(topic), outputs[topic]) for topic in project.topics}
        gc = collect_garbage(project)
        injected = None
        if settings.inject_loss:
            injected = inject_loss(project.sink(project.topics[0]), outputs[project.topics[0]])
        per_topic = {
            topic: check_topic(topic, lander.landed[topic], project.sink(topic), outputs[topic])
            | {"orphans_before_gc": len(before_gc[topic]), "orphans_before_gc_sample": before_gc[topic][:20]}
            for topic in project.topics
        }
        forensics = attribute(per_topic, chaos.runs, read_traces(project.trace_dir), chaos.t0_wall, injected)
    finally:
        if lander.is_alive():
            lander.stop()
        chaos.kill_all()
        chaos.close()
        local_down(project.home)
    counters = chaos.counters
    summed = totals(per_topic)
    return {
        **summed,
        "seed": settings.seed,
        "minutes": round(settings.chaos_seconds / 60, 3),
        "chaos_seconds": round(chaos_seconds, 1),
        "wall_seconds": round(time.monotonic() - began, 1),
        **counters.to_json(),
        "drain_runs": sum(d["runs"] for d in drained.values()),
        "drain": drained,
        "gc": gc,
        "topics": per_topic,
        "forensics": forensics,
        "disruptions": chaos.disruptions,
        "injected_loss": injected,
        "passed": all(summed[k] == 0 for k in INVARIANTS) and not counters.harness_failures,
        "workdir": str(root),
        "settings": asdict(settings),
        "machine": machine_info(load_at_start),
        "started_at": started_at,
        "finished_at": now_iso(),
    }


def gc_summary(gc: dict[str, Any] | str) -> str:
    if isinstance(gc, str):
        return gc
    return ", ".join(
        f"{topic} exit {found['code']}, {len((found['report'] or {}).get('deleted') or [])} deleted"
        for topic, found in gc.items()
    )


def print_summary(results: dict[str, Any], out: Path) -> None:
    lines = [
        f"chaos seed {results['seed']}: {results['chaos_seconds']} s of chaos, "
        f"{results['wall_seconds']} s in all; "
        f"{results['runs']} runs, {results['kills']} kills, {results['pauses']} pauses "
        f"({results['pauses_with_takeover']} taken over), {results['stop_then_kills']} stop-then-kills, "
        f"{results['duplicate_names']} duplicate names; {results['records_landed']} records landed",
        f"exit codes {results['exit_codes']}; errors {results['errors']}; gc: {gc_summary(results['gc'])}",
        "invariants: " + ", ".join(f"{k} {results[k]}" for k in INVARIANTS),
    ]
    lines += [f"harness failure: {f}" for f in results["harness_failures"]]
    for topic, found in results["forensics"].items():
        for m in found["missing_committed_objects"]:
            deleters = [h["run"] for h in m["history"] if h["op"] == "delete"]
            lines.append(
                f"{topic}: committed object {m['object']} (ids {m['ids']}) missing; deleted by {deleters}"
            )
    lines.append(
        ("PASSED" if results["passed"] else "FAILED") + f"; results in {out}; workdir {results['workdir']}"
    )
    print("\n".join(lines), file=sys.stderr)


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="length of the chaos phase in minutes")
    length.add_argument("--seconds", type=float, help="length of the chaos phase in seconds (default 60)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the workload and the plan (default 7)")
    parser.add_argument("--out", type=Path, default=results_path("chaos"), help="results file")
    parser.add_argument("--workdir", type=Path, help="project folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir even if all passed")
    parser.add_argument("--inject-loss", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    seconds = args.minutes * 60 if args.minutes is not None else (args.seconds or 60.0)
    if seconds <= 0:
        parser.error("the chaos phase must last > 0 s")
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        parser.error(f"--workdir {args.workdir} is not empty")
    use_dummy_aws_env("AWS_ENDPOINT_URL")
    root = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="leanops-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    # SIGTERM (a test's timeout, a CI cancel) unwinds like Ctrl-C: the finally blocks stop every process.
    signal.signal(signal.SIGTERM, _interrupted)
    results = run_harness(settings_for(seconds, args.seed, inject_loss=args.inject_loss), root)
    remove = args.workdir is None and results["passed"] and not args.keep
    results["workdir_kept"] = not remove
    write_results(args.out, results)
    print_summary(results, args.out)
    if remove:
        shutil.rmtree(root, ignore_errors=True)
    print(args.out)
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
