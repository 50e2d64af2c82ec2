"""Seeded chaos against the local stack's Lambda execution environments and the stack itself, while real
``leanops run`` processes start and follow executions; then a record-by-record exactly-once check.

    python bench/chaos.py --minutes 20 --seed 7 --out bench/results/chaos.json   # the soak (make soak)
    python bench/chaos.py --seconds 60 --seed 7 --out /tmp/chaos.json           # the bounded profile

In a project folder of its own (``--workdir``, else a new temporary folder: topics file, ``data/``,
``out/``, a private ``LEANOPS_HOME``), the harness starts the project's local stack (``leanops local up``:
DynamoDB Local, Step Functions running the real ASL, the functions' warm worker processes), runs four
phases, and stops the stack at the end, also on SIGTERM (``leanopsctl.local.stack.stack_down``, then
SIGKILL to what is left of every stack process group it saw).

**Land.** A writer thread keeps landing JSON Lines objects on the two topics' ``files`` sources for the
whole chaos phase: ``data/<topic>/part-<n, 8 digits>.jsonl`` (keys sort in arrival order), each a seeded
100-400 lines ``{"event_id": "<topic>-<i>", ...}`` where ``i`` counts the topic's lines in key order, written
to a ``_tmp-`` name and renamed (``os.replace``). ``landed.jsonl`` in the workdir lists every object.

**Disrupt.** Up to 4 concurrent ``leanops run TOPIC --json --name NAME`` processes (random topic), each
starting an execution on the stack and following it; short leases (3 s and 4 s), small batches, a processor
that sleeps a seeded 0-300 ms per batch and records which worker process runs which execution's batch
(tests/support/chaos_processors.py; in the worker itself, ``isolation: none``),
``LEANOPS_SKEW_MARGIN_MS=500``. The CLI processes are never signalled: killing one would not stop its
execution. What is disrupted is where the handlers run. Every few seconds
(the chaos length / 18, between 3 and 8 s, seeded jitter) the next disruption of a seeded deck (each round
of 9 shuffles 3 kills, 3 pauses, 1 stop-then-kill, 1 duplicate name, 1 stack kill) happens.

A worker disruption (kill, pause, stop-then-kill) strikes the worker process running a chosen execution's
task. Candidates: the live workers of the current stack (children of the stack's process running
``leanopsctl.local.worker``) whose latest record (``trace/workers/<pid>.json``, written as a process or
advance handler starts and again by the processor: function, execution, fence, batch, time) names a live
chaos run; of a seeded kind: a run's first process task (``fresh``: stalled just after taking the lock, the
classic zombie; pauses favour it), ``any`` process task, or (kills only) an ``advance`` task, mid-commit;
when none is there for 5 s, any the disruption may strike. The harness freezes the chosen worker
(SIGSTOP), then confirms from the execution's history (the stack's Step Functions API) that a task of the
record's function is still running for that execution and was scheduled before the record was written,
so that this frozen worker is the one serving it; only then does it strike. Otherwise it resumes the
worker (SIGCONT, ``unconfirmed_freezes``) and looks again.

- ``kill``: SIGKILL the worker; the pool reports the invocation failed (``Runtime.ExitError`` or
  ``Sandbox.Timedout``), the state machine releases the lock and fails;
- ``pause`` (process tasks only: the advance function's 10 s timeout is shorter than a hold): keep the
  worker stopped past its topic's lease + skew margin and, if its run held the lock, until another run
  took the lock over (its fence moved) and, 7 times in 10, until that run committed a batch too (the
  checkpoint moved: the worker then resumes behind a commit of the batch it was processing); at most 20 s
  more, and never later than 100 s after its invocation was scheduled (the process function's timeout is
  120 s: the pool would kill the worker); then SIGCONT. The resumed zombie must be fenced out;
- ``stop_then_kill``: the same hold, then SIGKILL without resuming;
- ``duplicate``: ``leanops run --name NAME`` with the name of a chaos run that ended with exit 0 on the
  current stack: it must be refused with exit 2 (``already used``). (Not a name of a run that is still
  under way: Step Functions answers a start with the name and input of a running execution with that
  execution, and the CLI follows it. Not a name only a killed stack knew: the new stack starts it, under
  the same execution ARN, which the state takes for a retry of that execution.)
- ``stack_kill``: SIGKILL the stack's whole process group (``os.killpg`` of its pid: the server and its
  workers; DynamoDB Local, detached, survives), while no worker is held stopped and no duplicate is under
  way. Every run under way loses its execution; the next ``leanops run`` starts a new stack.

The chaos phase lasts ``--minutes``/``--seconds``, extended (by at most a quarter of it, at least 60 s)
until the profile's minimum of each disruption is done (bounded profile: 2 kills, 2 pauses, 1 of each of
the others; 20 minutes: 30 kills and 30 pauses, 5 of each of the others), so the checks never pass
vacuously. Exit codes expected: 0 (``processed``, ``up_to_date``, ``skipped_locked``); 1 for a run we
disrupted: its worker was struck (``Runtime.ExitError``, ``Sandbox.Timedout``, or a resumed zombie fenced
out: ``LockLost``, ``CheckpointConflict``), or it was under way when the stack was killed (the follower
lost the stack: no report); 1 with ``LockLost`` or ``CheckpointConflict`` for any other run too (its
lease lapsed between heartbeats, e.g. while a new worker INITs after a strike, and another run took the
lock over: counted as ``fenced_out_undisrupted``); 2 only for a refused duplicate. Anything else is a
harness failure, and so is a stack replaced without a stack kill.

**Drain.** Stop landing, kill (never resume) whatever worker is still stopped, let the running runs'
executions end, then clean ``leanops run`` per topic, one at a time, until one reports ``up_to_date``
(``skipped_locked`` means a struck run's lease is pending: try again; at most 120 s per topic without a run
that processed something; a drain run that fails is a harness failure, retried). Then ``leanops gc TOPIC
--json`` per topic (``"gc": "unavailable"`` when the command does not exist).

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
unexpected exit code, a duplicate name that was not refused, a topic the drain could not bring up to date).
Forensics: each commit's batch is mapped back to the event ids it covers (from its positions), so a
missing object says which ids it held; the sink trace names the execution each write and delete worked for
(tests/support/chaos_site/sitecustomize.py installs it in every process of the harness's environment: the
process task's workers write; the advance task's workers and ``leanops gc`` delete), so it names the run
that deleted it. Per-run stdout and stderr (``runs/``), ``runs.jsonl``, ``trace/`` and the stack's logs
(``home/logs/``: ``stack.log``, ``functions.log``) stay in the workdir (a temporary one is removed when
everything passed, unless ``--keep``).

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

import boto3
import psutil
import yaml
from botocore.config import Config
from common import REPO_ROOT, machine_info, now_iso, results_path, use_dummy_aws_env, write_results
from leanopsctl.local.dynamodb_local import local_client
from leanopsctl.local.stack import StackRecord, stack_down, stack_file
from leanopsctl.local.template import LOCAL_REGION

from leanops.constants import (
    ENV_CONFIG,
    ENV_DYNAMODB_ENDPOINT,
    ENV_HOME,
    ENV_SKEW_MARGIN_MS,
    ENV_STATE_TABLE,
)
from leanops.data.files import owner_tag
from leanops.protocol import TopicRef
from leanops.protocol.dynamodb import DynamoDBStore

SCRIPT = "bench/chaos.py"
STATE_TABLE = "leanops-state"
PROCESSOR = "tests.support.chaos_processors:process"
#: On PYTHONPATH of every `leanops` command the harness runs (so of the stack and its workers): the trace.
CHAOS_SITE = REPO_ROOT / "tests" / "support" / "chaos_site"
#: Under the trace folder: the processor's record of each worker's latest batch (chaos_processors).
WORKERS_DIR = "workers"
QUARANTINE = "_quarantine/"
KINDS = ("kill", "pause", "stop_then_kill", "duplicate", "stack_kill")
#: One round of the disruption deck (shuffled per round).
DECK_ROUND = (
    "kill",
    "kill",
    "kill",
    "pause",
    "pause",
    "pause",
    "stop_then_kill",
    "duplicate",
    "stack_kill",
)
#: The four invariants: each must be 0.
INVARIANTS = ("lost_records", "duplicate_records", "missing_committed_objects", "orphans_after_drain")
#: Execution ARN of the local stack, before the execution name (the owner the lock and commits record).
ARN_PREFIX = "arn:aws:states:us-east-1:123456789012:execution:TopicRunStateMachine:"
#: The functions whose workers the harness strikes (kills: both; holds: the process task's only, as the
#: advance function's 10 s timeout is shorter than a hold), and the module workers run.
PROCESS_FUNCTION = "ProcessFunction"
ADVANCE_FUNCTION = "AdvanceFunction"
WORKER_MODULE = "leanopsctl.local.worker"
#: What a run may end with (exit 0), and the errors (exit 1) a disrupted run may report.
OUTCOMES = ("processed", "up_to_date", "skipped_locked")
FENCED_OUT = ("LockLost", "CheckpointConflict")
DISRUPTED_ERRORS = ("Runtime.ExitError", "Sandbox.Timedout", *FENCED_OUT)
#: The error label of a run that ended without a report: it lost the stack it was following.
STACK_LOST = "no report (the stack was killed)"
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
    #: The process function's timeout (template.yaml): a worker held stopped this long is killed by the
    #: pool. A hold ends at the latest hold_margin before it (counted from the invocation's scheduling).
    process_timeout_seconds: float = 120.0
    hold_margin_seconds: float = 20.0
    #: A frozen worker's execution history is read after this long (the stack records an answer given
    #: just before the freeze by then).
    confirm_settle_seconds: float = 0.15
    #: A run resumed from a pause is no target for this long (what it does next is the test).
    zombie_grace_seconds: float = 10.0
    #: A disruption that finds no target for this long is given up (counted).
    give_up_seconds: float = 45.0
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
        {"kill": 30, "pause": 30, "stop_then_kill": 5, "duplicate": 5, "stack_kill": 5}
        if long
        else {"kill": 2, "pause": 2, "stop_then_kill": 1, "duplicate": 1, "stack_kill": 1}
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
# The project folder, its `leanops` processes and its local stack
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
            self.trace_dir / WORKERS_DIR,
            *map(self.data, self.topics),
            *map(self.sink, self.topics),
        ):
            folder.mkdir(parents=True, exist_ok=True)
        declared = {
            t.name: {
                "source": {"type": "files", "uri": f"./data/{t.name}"},
                "sink": {"type": "files", "uri": f"./out/{t.name}", "format": "jsonl"},
                "processor": PROCESSOR,
                # In the worker, not an isolated child (decision 0012): the processor reads the worker's
                # frames and records its pid, the process the harness freezes and kills.
                "isolation": "none",
                "batch_size": t.batch_size,
                "lease_seconds": t.lease_seconds,
                "max_batches_per_run": t.max_batches_per_run,
            }
            for t in settings.topics
        }
        self.config.write_text(yaml.safe_dump({"topics": declared}, sort_keys=False))
        # The stack inherits the environment of the command that starts it, and its workers the stack's:
        # the skew margin, the processor's knobs and the trace reach the handlers this way.
        # The repository on the path too: the processor is tests.support.chaos_processors, whatever the
        # folder the workers run in.
        inherited = filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))
        python_path = [str(CHAOS_SITE), str(REPO_ROOT), *inherited]
        self.env = {
            **os.environ,
            ENV_HOME: str(self.home),
            ENV_STATE_TABLE: STATE_TABLE,
            ENV_SKEW_MARGIN_MS: str(settings.skew_margin_ms),
            "LEANOPS_CHAOS_SLEEP_MS": str(settings.processor_sleep_ms),
            "LEANOPS_CHAOS_SEED": str(settings.seed),
            "LEANOPS_CHAOS_TRACE_DIR": str(self.trace_dir),
            "LEANOPS_CHAOS_TRACE_ROOT": str(root / "out"),
            "PYTHONPATH": os.pathsep.join(python_path),
        }
        for name in (ENV_DYNAMODB_ENDPOINT, ENV_CONFIG):
            self.env.pop(name, None)

    def data(self, topic: str) -> Path:
        return self.root / "data" / topic

    def sink(self, topic: str) -> Path:
        return self.root / "out" / topic

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "leanopsctl", *args, "--config", str(self.config)]

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


@dataclass(frozen=True)
class WorkerRecord:
    """A worker's record of the task it is in (tests/support/chaos_processors.py): the function, the
    execution, its topic, fence, batch (start position) and batches done, and since when at the latest."""

    pid: int
    function: str
    execution: str | None
    topic: str
    fence: int | None
    batch: str | None
    batches: int | None
    t: float

    @property
    def name(self) -> str | None:
        return self.execution.rsplit(":", 1)[-1] if self.execution else None

    @classmethod
    def read(cls, path: Path) -> WorkerRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(
                pid=int(data["pid"]),
                function=str(data.get("function") or PROCESS_FUNCTION),
                execution=data.get("execution"),
                topic=str(data["topic"]),
                fence=None if data.get("fence") is None else int(data["fence"]),
                batch=data.get("batch"),
                batches=data.get("batches"),
                t=float(data["t"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


class StackWatch:
    """The project's local stack as the harness sees it: its record (``stack.json``) and process, its
    worker processes, and the Step Functions API it serves (execution histories)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._clients: dict[str, Any] = {}
        #: Every stack process seen serving, oldest first (each its own process group).
        self.pids: list[int] = []

    def current(self) -> StackRecord | None:
        """The stack serving now (its process lives), else None (killed, or not yet restarted)."""
        record = StackRecord.read(stack_file(self.home))
        if record is None or self.process(record.pid) is None:
            return None
        if record.pid not in self.pids:
            self.pids.append(record.pid)
        return record

    def process(self, pid: int) -> psutil.Process | None:
        """``pid`` if it is a live stack process of this home (never a recycled pid)."""
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            arguments = process.cmdline()
        except psutil.Error:
            return None
        if "leanopsctl.local.stack" not in arguments or str(self.home) not in arguments:
            return None
        return process

    def workers(self, record: StackRecord) -> dict[int, psutil.Process]:
        """The stack's live worker processes by pid."""
        stack = self.process(record.pid)
        if stack is None:
            return {}
        found = {}
        with contextlib.suppress(psutil.Error):
            for child in stack.children():
                with contextlib.suppress(psutil.Error):
                    if WORKER_MODULE in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                        found[child.pid] = child
        return found

    def history_tail(self, record: StackRecord, name: str, events: int = 4) -> list[dict[str, Any]] | None:
        """The newest ``events`` history events of execution ``name``, newest first (None: unknown)."""
        client = self._clients.get(record.endpoint)
        if client is None:
            client = boto3.session.Session(
                aws_access_key_id="local", aws_secret_access_key="local", region_name=LOCAL_REGION
            ).client(
                "stepfunctions",
                endpoint_url=record.endpoint,
                config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10),
            )
            self._clients[record.endpoint] = client
        arn = record.state_machines.get("TopicRunStateMachine", "").replace(":stateMachine:", ":execution:")
        try:
            page = client.get_execution_history(
                executionArn=f"{arn}:{name}", reverseOrder=True, maxResults=events
            )
        except Exception:  # the stack is gone or busy: unknown
            return None
        return list(page.get("events", []))


def task_running(events: Sequence[dict[str, Any]], function: str, written: float) -> float | None:
    """When the execution's task of ``function`` that is running now was scheduled (epoch seconds), if its
    history (newest first) shows one running that was scheduled before ``written`` (a worker's record);
    else None."""
    if not events or events[0]["type"] not in ("LambdaFunctionStarted", "LambdaFunctionScheduled"):
        return None
    scheduled = next((e for e in events if e["type"] == "LambdaFunctionScheduled"), None)
    if scheduled is None:
        return None
    resource = str(scheduled.get("lambdaFunctionScheduledEventDetails", {}).get("resource", ""))
    at = scheduled["timestamp"].timestamp()
    # The function's ARN, maybe qualified (the template invokes a version: ``...:function:NAME:$LATEST``).
    named = resource.partition(":function:")[2].split(":", 1)[0]
    if named != function or at > written + 0.01:
        return None
    return float(at)


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
    """One ``leanops run`` process (and the execution it starts and follows)."""

    label: str
    name: str
    topic: str
    role: str  # chaos | duplicate | drain
    process: subprocess.Popen[bytes]
    started: float
    #: Stack kills before this run started: a run knows the stack of its generation only.
    generation: int = 0
    #: Wall clock (time.time()) at start and end.
    started_wall: float = field(default_factory=time.time)
    ended_wall: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    #: What we did to its execution: ``kill``, ``pause``, ``stop_then_kill``, ``stack_kill``, ...
    disrupted: list[str] = field(default_factory=list)
    #: Its worker is held stopped now.
    stopped: bool = False
    #: When a pause ended (monotonic): a resumed run is left alone for a while, to play out as a zombie.
    resumed: float | None = None
    #: A duplicate's expectation (``refused``: exit 2), and whose name it reuses.
    expect: str | None = None
    original: str | None = None
    harness_killed: bool = False
    code: int | None = None
    report: dict[str, Any] | None = None
    ended: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> bool:
        """Send ``signum`` to the CLI process's group (only on the way out); False if it is gone."""
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def stderr(self, runs_dir: Path) -> str:
        try:
            return (runs_dir / f"{self.label}.err").read_text(errors="replace")
        except OSError:
            return ""

    def summary(self, t0: float) -> dict[str, Any]:
        report = self.report or {}
        return {
            "label": self.label,
            "name": self.name,
            "topic": self.topic,
            "role": self.role,
            "pid": self.pid,
            "generation": self.generation,
            "started_s": round(self.started - t0, 2),
            "ended_s": round(self.ended - t0, 2) if self.ended is not None else None,
            "code": self.code,
            "outcome": report.get("outcome"),
            "error": report.get("error"),
            "cause": (report.get("cause") or "")[:600] or None,
            "batches": report.get("batches"),
            "records": report.get("records"),
            "disrupted": self.disrupted,
            "expect": self.expect,
            "original": self.original,
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
    #: Of the kills, pauses and stop-then-kills: those that struck a run's first batch (processing or
    #: committing it).
    first_batch_strikes: int = 0
    #: Duplicate names refused as expected.
    duplicate_names: int = 0
    stack_kills: int = 0
    #: Runs not disrupted that failed fenced out (LockLost, CheckpointConflict): their lease lapsed.
    fenced_out_undisrupted: int = 0
    #: Runs under way when the stack was killed (their followers lose their executions).
    runs_lost_with_the_stack: int = 0
    #: Seconds from each stack kill to a new stack serving.
    stack_restart_seconds: list[float] = field(default_factory=list)
    killed_when_stopped_at_drain: int = 0
    #: Holds that ended because their worker was gone (not counted as pauses or stop-then-kills).
    holds_lost: int = 0
    #: Workers frozen but not confirmed as serving the chosen execution: resumed at once.
    unconfirmed_freezes: int = 0
    disruptions_without_target: int = 0
    sandbox_timeouts: int = 0
    harness_timeouts: int = 0
    exit_codes: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    disrupted_modes: Counter[str] = field(default_factory=Counter)
    #: The task the struck worker was in: ``process`` or ``advance``.
    disrupted_tasks: Counter[str] = field(default_factory=Counter)
    harness_failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def done(self, kind: str) -> int:
        return {
            "kill": self.kills,
            "pause": self.pauses,
            "stop_then_kill": self.stop_then_kills,
            "duplicate": self.duplicate_names,
            "stack_kill": self.stack_kills,
        }[kind]


def _plain(value: Any) -> Any:
    """A Counter as a plain dict (``asdict`` would rebuild it from its items, counting them)."""
    return dict(value) if isinstance(value, Counter) else value


@dataclass
class Stop:
    """A worker held stopped (SIGSTOP) by a ``pause`` or ``stop_then_kill``: at least ``min_hold`` s (its
    topic's lease + skew margin + slack); when its run held the lock, until another run took the lock over
    (the fence moved) and, with ``until_commit``, until the checkpoint moved after that too (the zombie then
    resumes behind a commit of the batch it was processing), at most ``takeover_wait_seconds`` more; and
    never past ``deadline`` (wall clock: before the pool's timeout of its invocation)."""

    run: Run
    worker: psutil.Process
    kind: str
    stopped_at: float
    min_hold: float
    deadline: float
    at_stop: LockView
    holder: bool
    until_commit: bool
    takeover: bool = False
    committed_since: bool = False

    def over(self, now: float, view: Callable[[], LockView], wait: float) -> bool:
        """Whether the hold is over (``view`` reads the topic's lock and checkpoint now)."""
        held = now - self.stopped_at
        if time.time() >= self.deadline:
            return True
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


def alive(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a killed process may linger as a zombie until reaped)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass(frozen=True)
class Target:
    """A worker whose record says it is in a task of a live chaos run."""

    run: Run
    record: WorkerRecord
    worker: psutil.Process


class Chaos:
    """The chaos phase: starts runs, disrupts their workers and the stack, reaps the runs. :meth:`run`
    until the phase is over."""

    def __init__(
        self, project: Project, settings: Settings, locks: LockReader, stack: StackWatch, t0: float
    ) -> None:
        self.project, self.settings, self.locks, self.stack, self.t0 = project, settings, locks, stack, t0
        #: The same moment on the wall clock.
        self.t0_wall = time.time() - (time.monotonic() - t0)
        self.rng = random.Random(f"{settings.seed}:chaos")
        self.counters = Counters()
        self.runs: list[Run] = []
        self.stops: list[Stop] = []
        self.disruptions: list[dict[str, Any]] = []
        self.deck: list[str] = []
        self.next_start = t0
        # The first disruption once the first runs are under way (a run spends its first seconds importing).
        self.next_disruption = t0 + max(5.0, settings.disruption_interval * self.rng.uniform(0.8, 1.2))
        #: Since when the next disruption waits for a target, and which kind of target (see targets()).
        self.pending_since: float | None = None
        self.pending_mode = "any"
        self.serial = 0
        #: Stack kills so far, and the one whose restart is awaited (its monotonic time and the old pid).
        self.generation = 0
        self.restart_pending: tuple[float, int] | None = None
        self.stack_pid: int | None = None
        self.next_stack_look = t0
        self.log = open(project.root / "runs.jsonl", "a")  # noqa: SIM115 (closed by close())

    # --- runs ---

    def start(self, topic: str, role: str = "chaos", name: str | None = None) -> Run:
        self.serial += 1
        label = f"{self.serial:05d}-{topic}"
        name = name or f"chaos-{self.settings.seed}-{self.serial:05d}-{topic}"
        process = self.project.start(label, topic, name)
        run = Run(label, name, topic, role, process, time.monotonic(), generation=self.generation)
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
                    run.harness_killed = run.signal(signal.SIGKILL)
                    run.events.append(self.event("harness_timeout"))
                    self.counters.harness_timeouts += 1
                    self.counters.harness_failures.append(
                        f"run {run.label} ({run.name}) still following its execution after "
                        f"{self.settings.run_timeout_seconds:.0f} s: killed; see runs/{run.label}.err"
                    )
                continue
            self.finish(run, code)

    def finish(self, run: Run, code: int) -> None:
        run.code, run.ended, run.ended_wall = code, time.monotonic(), time.time()
        run.report = last_json((self.project.runs_dir / f"{run.label}.out").read_text(errors="replace"))
        self.log.write(json.dumps(run.summary(self.t0)) + "\n")
        self.log.flush()
        if run.role == "drain":
            return
        report = run.report or {}
        self.counters.exit_codes[str(code)] += 1
        if run.role == "duplicate":
            self.judge_duplicate(run, code, report)
        elif code == 0:
            outcome = str(report.get("outcome"))
            self.counters.outcomes[outcome] += 1
            if outcome not in OUTCOMES:
                self.fail(run, f"exited 0 with outcome {outcome}, expected one of {', '.join(OUTCOMES)}")
        elif code == 1 and run.disrupted:
            error = str(report.get("error") or (STACK_LOST if "stack_kill" in run.disrupted else "no report"))
            self.counters.errors[error] += 1
            self.counters.sandbox_timeouts += error == "Sandbox.Timedout"
            if error not in (*DISRUPTED_ERRORS, STACK_LOST):
                self.fail(run, f"disrupted ({', '.join(run.disrupted)}), failed with {error}")
        elif code == 1 and report.get("error") in FENCED_OUT:
            # Fenced out though not struck: its lease lapsed between heartbeats (a worker INIT after a
            # strike, the loaded machine) and another run took the lock over. The protocol at work.
            self.counters.errors[str(report["error"])] += 1
            self.counters.fenced_out_undisrupted += 1
        elif code == 1:
            self.counters.errors[str(report.get("error") or "no report")] += 1
            self.fail(run, f"exited 1 ({report.get('error')}) though nothing disrupted it")
        elif not run.harness_killed:
            self.fail(run, f"exited {code} unexpectedly")

    def fail(self, run: Run, what: str) -> None:
        self.counters.harness_failures.append(
            f"run {run.label} ({run.name}) {what}: see runs/{run.label}.err and runs.jsonl"
        )

    def judge_duplicate(self, run: Run, code: int, report: dict[str, Any]) -> None:
        """A duplicate name must be refused: exit 2, ``already used``."""
        run.events.append(self.event("duplicate_judged", code=code, outcome=report.get("outcome")))
        if run.disrupted:  # the stack was killed under it: no verdict (stack kills wait for duplicates)
            return
        if code == 2 and "already used" in run.stderr(self.project.runs_dir):
            self.counters.duplicate_names += 1
        else:
            self.fail(
                run,
                f"reused the name of {run.original} and exited {code} with outcome "
                f"{report.get('outcome')}: expected exit 2, `already used`",
            )

    def event(self, what: str, **detail: Any) -> dict[str, Any]:
        return {"what": what, "t": round(time.monotonic() - self.t0, 2), **detail}

    def maybe_start(self, now: float) -> None:
        running = [r for r in self.live() if r.role == "chaos" and not r.stopped]
        if len(running) >= self.settings.max_running or now < self.next_start:
            return
        # A topic whose lock holder is stopped gets the next start when no run of it is running (so one
        # takes the lock over), and more starts anyway.
        waiting = {s.run.topic for s in self.stops if s.holder and not s.takeover}
        idle = sorted(waiting - {r.topic for r in running})
        weights = [3 if topic in waiting else 1 for topic in self.project.topics]
        self.start(self.rng.choice(idle) if idle else self.rng.choices(self.project.topics, weights)[0])
        self.next_start = now + self.rng.uniform(0.1, 0.8)

    def watch_stack(self, now: float) -> None:
        """Notice a new stack: after a kill, when it serves (its restart time); else it is a failure."""
        if now < self.next_stack_look:
            return
        self.next_stack_look = now + 0.5
        record = self.stack.current()
        if record is None or record.pid == self.stack_pid:
            return
        if self.stack_pid is not None and self.restart_pending is None:
            self.counters.harness_failures.append(
                f"the local stack changed (pid {self.stack_pid} -> {record.pid}) without a stack kill: "
                f"see {self.project.home}/logs/stack.log"
            )
        if self.restart_pending is not None:
            killed_at, _ = self.restart_pending
            self.counters.stack_restart_seconds.append(round(now - killed_at, 2))
            self.restart_pending = None
        self.stack_pid = record.pid

    # --- disruptions ---

    def next_kind(self, extending: bool) -> str | None:
        if extending:  # only what the profile still misses
            missing = [k for k in KINDS if self.counters.done(k) < self.settings.min_disruptions.get(k, 0)]
            return missing[0] if missing else None
        if not self.deck:
            self.deck = list(DECK_ROUND)
            self.rng.shuffle(self.deck)
        return self.deck[0]

    def targets(self) -> list[Target]:
        """Workers of the current stack whose latest record names a live chaos run that may be struck (not
        struck yet, no worker held stopped, not a zombie in its grace period)."""
        record = self.stack.current()
        if record is None or record.pid != self.stack_pid:
            return []
        workers = self.stack.workers(record)
        now, wall = time.monotonic(), time.time()
        runs = {
            r.name: r
            for r in self.live()
            if r.role == "chaos"
            and not r.stopped
            and not {"kill", "stop_then_kill", "stack_kill"} & set(r.disrupted)
            and (r.resumed is None or now - r.resumed > self.settings.zombie_grace_seconds)
        }
        found = []
        for pid in sorted(workers):
            worker_record = WorkerRecord.read(self.project.trace_dir / WORKERS_DIR / f"{pid}.json")
            if worker_record is None or worker_record.pid != pid:
                continue
            if worker_record.function not in (PROCESS_FUNCTION, ADVANCE_FUNCTION):
                continue
            if wall - worker_record.t > self.settings.process_timeout_seconds:
                continue
            name = worker_record.name
            if name is None and worker_record.fence is not None:  # the lock's holder at that fence
                view = self.locks.read(worker_record.topic)
                name = view.holder if view.fence == worker_record.fence else None
            run = runs.get(name or "")
            if run is not None and run.topic == worker_record.topic:
                found.append(Target(run, worker_record, workers[worker_record.pid]))
        return found

    def freeze(self, target: Target) -> float | None:
        """SIGSTOP the target's worker and confirm it serves the target's execution's task now: its record
        unchanged, and the execution's history showing a task of the record's function running, scheduled
        before the record. Returns when the task was scheduled (epoch seconds); else resumes the worker and
        returns None."""
        try:
            target.worker.suspend()
        except psutil.Error:
            return None
        time.sleep(self.settings.confirm_settle_seconds)
        path = self.project.trace_dir / WORKERS_DIR / f"{target.record.pid}.json"
        record = self.stack.current()
        scheduled = None
        if WorkerRecord.read(path) == target.record and record is not None and record.pid == self.stack_pid:
            events = self.stack.history_tail(record, target.run.name)
            scheduled = task_running(events or [], target.record.function, target.record.t)
        if scheduled is None:
            with contextlib.suppress(psutil.Error):
                target.worker.resume()
            self.counters.unconfirmed_freezes += 1
        return scheduled

    def maybe_disrupt(self, now: float, extending: bool) -> None:
        if now < self.next_disruption:
            return
        kind = self.next_kind(extending)
        if kind is None:
            return
        if self.pending_since is None:
            self.pending_since = now
            weights = (1, 2, 0) if kind in ("pause", "stop_then_kill") else (2, 1, 1)
            self.pending_mode = self.rng.choices(("any", "fresh", "advance"), weights)[0]
        patient = now - self.pending_since < 5.0
        if kind == "duplicate":
            done = self.duplicate()
        elif kind == "stack_kill":
            done = self.stack_kill(patient)
        elif kind in ("pause", "stop_then_kill") and len(self.stops) >= self.settings.max_stopped:
            done = False
        else:
            done = self.strike(kind, patient, self.pending_mode)
        if not done:
            if now - self.pending_since > self.settings.give_up_seconds:
                self.counters.disruptions_without_target += 1
                self.disruptions.append({"t": round(now - self.t0, 2), "kind": kind, "gave_up": True})
            else:
                self.next_disruption = time.monotonic() + 0.2
                return
        if not extending:
            self.deck.pop(0)
        self.pending_since = None
        interval = self.settings.disruption_interval * self.rng.uniform(0.6, 1.4)
        self.next_disruption = time.monotonic() + interval

    def strike(self, kind: str, patient: bool, mode: str) -> bool:
        """kill, pause or stop_then_kill the worker of a chosen run's task (see the docstring): ``mode``
        ``any`` (a process task), ``fresh`` (a run's first process task) or ``advance`` (an advance task:
        kills only); once not ``patient``, any that the kind may strike."""
        eligible = [t for t in self.targets() if kind == "kill" or t.record.function == PROCESS_FUNCTION]
        process = [t for t in eligible if t.record.function == PROCESS_FUNCTION]
        pool = {
            "any": process,
            "fresh": [t for t in process if t.record.batches == 0],
            "advance": [t for t in eligible if t.record.function == ADVANCE_FUNCTION],
        }[mode]
        if not pool and not patient:
            pool = eligible
        if not pool:
            return False
        target = self.rng.choice(pool)
        record = self.stack.current()
        if record is None:
            return False
        if target.record.function == ADVANCE_FUNCTION:
            # A commit takes a fraction of a second: freeze at once, a worker that began it just now.
            if time.time() - target.record.t > 1.0:
                return False
        else:  # a look before the freeze spares freezing a worker whose record is of an earlier task
            events = self.stack.history_tail(record, target.run.name) or []
            if task_running(events, target.record.function, target.record.t) is None:
                return False
        scheduled = self.freeze(target)
        if scheduled is None:
            return False
        run, worker_record = target.run, target.record
        first = worker_record.batches == 0
        view = self.locks.read(run.topic)
        holder = view.holder == run.name and view.fence == worker_record.fence
        if kind == "kill":
            with contextlib.suppress(psutil.Error):
                target.worker.kill()
        now = time.monotonic()
        task = "advance" if worker_record.function == ADVANCE_FUNCTION else "process"
        detail = {
            "kind": kind,
            "run": run.label,
            "topic": run.topic,
            "worker": worker_record.pid,
            "task": task,
            "batch": worker_record.batch,
            "first_batch": first,
            "holder": holder,
            "mode": mode,
        }
        run.events.append(
            self.event(kind, worker=worker_record.pid, task=task, first_batch=first, holder=holder)
        )
        run.disrupted.append(kind)
        self.disruptions.append({"t": round(now - self.t0, 2), **detail})
        self.counters.disrupted_modes[mode] += 1
        self.counters.disrupted_tasks[task] += 1
        self.counters.first_batch_strikes += first
        if kind == "kill":
            self.counters.kills += 1
            return True
        run.stopped = True
        lease = self.settings.topic(run.topic).lease_seconds
        min_hold = lease + self.settings.skew_margin_ms / 1000 + self.settings.hold_slack_seconds
        deadline = scheduled + self.settings.process_timeout_seconds - self.settings.hold_margin_seconds
        until_commit = self.rng.random() < 0.7
        self.stops.append(Stop(run, target.worker, kind, now, min_hold, deadline, view, holder, until_commit))
        return True

    def duplicate(self) -> bool:
        """``leanops run --name`` with the name of a run that ended on the current stack (see the
        docstring); False when there is none yet."""
        # Not a run under way at a stack kill: which stack ran its execution is not known.
        known = [
            r
            for r in self.runs
            if r.role == "chaos" and r.code == 0 and not r.disrupted and r.generation == self.generation
        ]
        if not known or self.restart_pending is not None:
            return False
        original = self.rng.choice(known)
        run = self.start(original.topic, "duplicate", original.name)
        run.expect, run.original = "refused", original.label
        self.disruptions.append(
            {
                "t": round(time.monotonic() - self.t0, 2),
                "kind": "duplicate",
                "run": run.label,
                "original": original.label,
            }
        )
        return True

    def stack_kill(self, patient: bool) -> bool:
        """SIGKILL the stack's process group, while no worker is held and no duplicate is under way, and
        (while ``patient``) some run's process task is running."""
        if self.stops or any(r.role == "duplicate" for r in self.live()):
            return False
        record = self.stack.current()
        if record is None or record.pid != self.stack_pid or self.restart_pending is not None:
            return False
        under_way = [r for r in self.live() if r.role != "drain"]
        if not under_way or (patient and not self.targets()):
            return False
        try:
            os.killpg(record.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        now = time.monotonic()
        self.generation += 1
        self.restart_pending = (now, record.pid)
        self.counters.stack_kills += 1
        self.counters.runs_lost_with_the_stack += len(under_way)
        for run in under_way:
            run.disrupted.append("stack_kill")
            run.events.append(self.event("stack_kill", stack=record.pid))
        self.disruptions.append(
            {
                "t": round(now - self.t0, 2),
                "kind": "stack_kill",
                "stack": record.pid,
                "runs": [r.label for r in under_way],
            }
        )
        return True

    def tend_stops(self, now: float) -> None:
        """End the holds that are over: SIGCONT a pause, SIGKILL a stop_then_kill."""
        for stop in list(self.stops):
            gone = not alive(stop.worker)
            view = functools.partial(self.locks.read, stop.run.topic)
            if not gone and not stop.over(now, view, self.settings.takeover_wait_seconds):
                continue
            self.stops.remove(stop)
            run = stop.run
            run.stopped = False
            detail = {
                "held_s": round(now - stop.stopped_at, 2),
                "holder": stop.holder,
                "takeover": stop.takeover,
                "until_commit": stop.until_commit,
                "committed_since": stop.committed_since,
            }
            if gone:
                run.events.append(self.event("hold_lost", **detail))
                self.counters.holds_lost += 1
            elif stop.kind == "pause":
                with contextlib.suppress(psutil.Error):
                    stop.worker.resume()
                run.resumed = now
                run.events.append(self.event("resumed", **detail))
                self.counters.pauses += 1
                self.counters.pauses_of_lock_holders += stop.holder
                self.counters.pauses_with_takeover += stop.takeover
                self.counters.pauses_resumed_behind_a_commit += stop.committed_since
            else:
                with contextlib.suppress(psutil.Error):
                    stop.worker.kill()
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
            self.watch_stack(now)
            self.tend_stops(now)
            if lander.error is not None or now >= hard_end or (now >= end and self.quotas_met()):
                return
            self.maybe_start(now)
            self.maybe_disrupt(now, extending=now >= end)
            time.sleep(0.05)

    def settle(self) -> None:
        """Kill the workers still stopped (never resume them), then wait for the running runs to end."""
        for stop in self.stops:
            with contextlib.suppress(psutil.Error):
                stop.worker.kill()
            stop.run.stopped = False
            stop.run.events.append(
                self.event("killed_at_drain", held_s=round(time.monotonic() - stop.stopped_at, 2))
            )
            self.counters.killed_when_stopped_at_drain += 1
        self.stops.clear()
        while self.live():
            self.reap()
            self.watch_stack(time.monotonic())
            time.sleep(0.1)

    def kill_all(self) -> None:
        """On the way out, whatever happened: no process of ours outlives the harness (the stack's are
        stopped by the caller)."""
        for stop in self.stops:
            with contextlib.suppress(psutil.Error):
                stop.worker.kill()
        for run in self.live():
            run.harness_killed = run.signal(signal.SIGKILL)
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
            if code != 0:  # nothing disrupts the drain
                chaos.counters.harness_failures.append(
                    f"drain run {run.label} ({topic}) exited {code}: {report.get('error')}; "
                    f"see runs/{run.label}.err"
                )
            if outcome == "processed":  # progress: the bound is on waiting, not on the backlog's size
                deadline = time.monotonic() + settings.drain_seconds
            if code != 0 or outcome == "skipped_locked":
                time.sleep(1.0)  # a struck run's lease is pending, or a failure: try again
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
    (from the sink trace: the execution its process worked for; ``leanops gc`` works for none)."""

    by_name: dict[str, Run] = {}
    for run in runs:  # a duplicate's name is its original's: the original wins
        if run.role != "duplicate" or run.name not in by_name:
            by_name[run.name] = run
    prefix = next(
        (str(r.report["execution"])[: -len(r.name)] for r in runs if r.report and r.report.get("execution")),
        ARN_PREFIX,
    )
    by_tag = {owner_tag(prefix + r.name): r for r in runs}

    def who(run: Run | None) -> dict[str, Any] | None:
        if run is None:
            return None
        kinds = ("kill", "pause", "stop_then_kill", "resumed", "stack_kill", "killed_while_stopped")
        report = run.report or {}
        return {
            "run": run.label,
            "name": run.name,
            "role": run.role,
            "code": run.code,
            "error": report.get("error"),
            "disruptions": [e for e in run.events if e["what"] in kinds],
        }

    def history(topic: str, name: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        if name == injected:
            found.append({"op": "delete", "run": "the harness (--inject-loss)"})
        for e in traces:
            if e.get("path") == f"{topic}/{name}":
                execution = str(e.get("execution") or "")
                run = by_name.get(execution.rsplit(":", 1)[-1]) if execution else None
                label = run.label if run else (execution or f"pid {e.get('pid')}, no execution (gc?)")
                found.append(
                    {
                        "op": e["op"],
                        "t": round(e["t"] - t0_wall, 2),
                        "run": label,
                        "pid": e.get("pid"),
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


def start_stack(project: Project) -> StackRecord:
    """``leanops local up`` with the harness's environment (the stack and its workers inherit it)."""
    done = project.leanops("local", "up", timeout=300)
    record = StackRecord.read(stack_file(project.home))
    if done.returncode != 0 or record is None:
        raise RuntimeError(f"`leanops local up` failed ({done.returncode}): {done.stderr[-2000:]}")
    return record


def stop_stack(project: Project, stack: StackWatch) -> None:
    """Stop the stack and its DynamoDB Local, then SIGKILL whatever is left of any stack process group seen
    (a worker held stopped does not end with its stack)."""
    stack.current()  # the one serving now, if not seen yet
    with contextlib.suppress(Exception):
        stack_down(project.home)
    for pid in stack.pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def run_harness(settings: Settings, root: Path) -> dict[str, Any]:
    started_at, began, load_at_start = now_iso(), time.monotonic(), list(os.getloadavg())
    project = Project(root, settings)
    stack = StackWatch(project.home)
    lander = Lander(project, settings)
    chaos: Chaos | None = None
    try:
        record = start_stack(project)
        chaos = Chaos(project, settings, LockReader(record.dynamodb_endpoint), stack, time.monotonic())
        chaos.stack_pid = record.pid
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
        if chaos is not None:
            chaos.kill_all()
            chaos.close()
        stop_stack(project, stack)
    assert chaos is not None
    counters = chaos.counters
    summed = totals(per_topic)
    return {
        **summed,
        "seed": settings.seed,
        "minutes": round(settings.chaos_seconds / 60, 3),
        "chaos_seconds": round(chaos_seconds, 1),
        "wall_seconds": round(time.monotonic() - began, 1),
        **counters.to_json(),
        "stacks": len(stack.pids),
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
        f"{results['runs']} runs, {results['kills']} worker kills, {results['pauses']} worker pauses "
        f"({results['pauses_with_takeover']} taken over), {results['stop_then_kills']} stop-then-kills, "
        f"{results['duplicate_names']} duplicate names, {results['stack_kills']} stack kills "
        f"(restarts in {results['stack_restart_seconds']} s); {results['records_landed']} records landed",
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
