"""``leanops topics push``: a topics file, validated, into the state table where every run reads its topic's
settings, and each scheduled topic's schedule through the Scheduler API (decision 0013).

A push makes the pushed topics equal to the file: it adds and changes topics (each one conditional write of
its settings and its history record, against the version read), and removes the topics the file no longer
has only when asked (``prune``: a push from the wrong file must not unschedule a fleet). A topic's state
(lock, checkpoint, output records) is never touched: a topic pushed again resumes where it stopped. Then the
schedule group is made to hold exactly the pushed topics' schedules.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from leanops.config import TopicConfig, TopicsFile, check_sinks_apart, parse_settings
from leanops.errors import ConfigError, LeanopsError
from leanops.protocol import Acquired, Protocol, Retention, TopicRef
from leanops.protocol.model import DAY_SECONDS, PushedTopic
from leanops.protocol.store import StateStore, TopicPushConflict
from leanops.registry import settings_digest
from leanopsctl.deploy import schedules
from leanopsctl.deploy.schedules import ScheduleChanges, ScheduleTarget, period_seconds

#: Topics written at once (each its own transaction).
PUSH_WORKERS = 16
#: The most a topic's settings may take: runs carry them in their state (Step Functions: 256 KB a state).
MAX_SETTINGS_BYTES = 32 * 1024
#: The push lease's state (a partition of a name no topic's partition can have: those are backfill ids).
PUSH_STATE = TopicRef("leanops", "topics-push")
#: A push holds its lease this long at most (a 10,000-topic push takes well under a minute).
PUSH_LEASE_SECONDS = 600
#: Express executions end after 5 minutes.
EXPRESS_LIMIT_SECONDS = 300


def local_actor() -> str:
    """Who acts on a local stack: ``user@host``."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


class PushConflict(LeanopsError):
    """Another push changed a topic between this push's read and its write."""


@dataclass
class PushPlan:
    """What a push changes, by topic name; ``settings`` are the file's, ``current`` what is pushed."""

    settings: dict[str, dict[str, Any]]
    current: dict[str, PushedTopic]
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def writes(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": len(self.unchanged),
        }


def plan(topics: TopicsFile, store: StateStore) -> PushPlan:
    """Compare the file's topics with the pushed ones (one paged query of the pushed topics; each pushed
    topic's digest computed again from its settings, so an item edited by hand is pushed over).

    Raises
    ------
    ConfigError
        A topic's settings are too large to travel in a run's state (a declared schema of long names).
    """
    current = {pushed.name: pushed for pushed in store.pushed_topics()}
    settings = {name: topic.to_settings() for name, topic in sorted(topics.topics.items())}
    for name, wanted in settings.items():
        size = len(json.dumps(wanted).encode())
        if size > MAX_SETTINGS_BYTES:
            raise ConfigError(
                f"{topics.path}: topic {name!r}: its settings take {size:,} bytes, over the "
                f"{MAX_SETTINGS_BYTES:,} a run carries them in (Step Functions' state is at most 256 KB): "
                "declare fewer or shorter schema columns"
            )
    result = PushPlan(settings=settings, current=current)
    for name, wanted in settings.items():
        if name not in current:
            result.added.append(name)
        elif settings_digest(current[name].settings) != settings_digest(wanted):
            result.changed.append(name)
        else:
            result.unchanged.append(name)
    result.removed = sorted(set(current) - set(settings))
    return result


def check_fleet(push: PushPlan, topics: TopicsFile, *, prune: bool) -> None:
    """What the file cannot see alone: with the pushed topics it leaves in place (all but the removed ones
    when ``prune``), no two topics may write overlapping sinks. Checked under the push lease, so two
    operators' files cannot both pass it."""
    if prune:
        return
    staying = {
        name: parse_settings(name, pushed.settings, f"pushed topic {name!r}")
        for name, pushed in push.current.items()
        if name not in push.settings
    }
    if staying:
        try:
            check_sinks_apart({**staying, **topics.topics}, f"{topics.path} with the topics pushed already")
        except ConfigError as exc:
            names = ", ".join(sorted(staying)[:5]) + (" ..." if len(staying) > 5 else "")
            raise ConfigError(
                f"{exc} (pushed, not in the file: {names}; pass --prune to remove them)"
            ) from exc


@contextmanager
def push_lease(store: StateStore, actor: str) -> Iterator[None]:
    """One push at a time on a state table: a lease (the protocol's lock, on a state no topic has) held
    from the plan to the schedules' sync, so that two operators' pushes never interleave. A push that died
    leaves it until it expires (:data:`PUSH_LEASE_SECONDS`).

    Raises
    ------
    PushConflict
        Another push holds it.
    """
    protocol = Protocol(store)
    owner = f"push:{actor}:{uuid.uuid4().hex[:12]}"
    result = protocol.acquire(PUSH_STATE, owner, PUSH_LEASE_SECONDS)
    if not isinstance(result, Acquired):
        holder = getattr(result, "holder", None)
        until = getattr(result, "lease_expires_at_ms", None)
        when = time.strftime("%H:%M:%S UTC", time.gmtime(until / 1000)) if until else "its lease ends"
        raise PushConflict(f"another push ({holder}) is in progress until {when}: push again after it")
    try:
        yield
    finally:
        protocol.release(result.lease)


def apply(
    push: PushPlan,
    store: StateStore,
    *,
    actor: str,
    prune: bool,
    now_ms: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Write ``push`` (see the module). Removals need ``prune``: without it, a :class:`ConfigError` naming
    them, and nothing is written. Every topic is tried, each its own transaction; a write whose answer was
    lost and that the SDK retried is recognised as this push's own.

    Raises
    ------
    PushConflict
        Topics another push wrote meanwhile, or that could not be written: named, with how many were; what
        was written stays, and pushing again finishes the job.
    """
    if push.removed and not prune:
        more = len(push.removed) - 5
        shown = ", ".join(push.removed[:5]) + (f" and {more} more" if more > 0 else "")
        raise ConfigError(
            f"{len(push.removed)} pushed topic(s) are not in the topics file ({shown}): pass --prune to "
            "remove them (their schedules stop; their state is kept), or add them back to the file"
        )
    at = now_ms if now_ms is not None else int(time.time() * 1000)

    def write(name: str) -> None:
        previous = push.current.get(name)
        # A topic pushed again after a removal continues its history (each version is written once).
        last = previous or next(store.topic_history(name, limit=1), None)
        version = last.version + 1 if last else 1
        expected = previous.version if previous else None
        if name in push.settings:
            wanted = push.settings[name]
            change = PushedTopic(name, wanted, version, settings_digest(wanted), actor, at)
        else:
            assert previous is not None
            change = PushedTopic(name, previous.settings, version, previous.digest, actor, at, removed=True)
        try:
            if previous is not None and change.removed:
                store.remove_pushed_topic(change, expected_version=previous.version)
            else:
                store.push_topic(change, expected_version=expected)
        except TopicPushConflict:
            if next(store.topic_history(name, limit=1), None) != change:  # not our own, retried
                raise
        if progress is not None:
            progress(name)

    names = [*push.added, *push.changed, *push.removed]
    failed: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=PUSH_WORKERS) as pool:
        for name, error in zip(names, pool.map(lambda n: _attempt(write, n), names), strict=True):
            if error is not None:
                failed[name] = error
    if failed:
        shown = "; ".join(f"{name}: {error}" for name, error in sorted(failed.items())[:5])
        raise PushConflict(
            f"{len(names) - len(failed)} of {len(names)} topic change(s) written; not written: {shown}"
            f"{' ...' if len(failed) > 5 else ''}: push again"
        )


def _attempt(write: Callable[[str], None], name: str) -> str | None:
    """``write(name)``; what went wrong, as one phrase, or None."""
    try:
        write(name)
    except TopicPushConflict as exc:
        return f"another push changed it meanwhile (now version {exc.current})"
    except LeanopsError as exc:
        return str(exc)
    return None


def pushed_configs(store: StateStore) -> dict[str, TopicConfig]:
    """Every pushed topic's settings, as runs read them."""
    return {
        pushed.name: parse_settings(pushed.name, pushed.settings, f"pushed topic {pushed.name!r}")
        for pushed in store.pushed_topics()
    }


def sync_schedules(scheduler: Any, target: ScheduleTarget, store: StateStore) -> ScheduleChanges:
    """The schedule group holds exactly the pushed topics' schedules (read back from the state table, so
    what runs is what is scheduled)."""
    return schedules.sync(scheduler, target, pushed_configs(store))


def worst_case_seconds(definition: dict[str, Any], max_batches: int) -> int:
    """The longest a run can take by the state machine's task timeouts: acquire, ``max_batches`` x (process
    + advance), then the release after a failure (Lambda retries of a failed call start again within the
    same timeouts and are not counted)."""
    states = definition["States"]

    def timeout(name: str) -> int:
        return int(states[name].get("TimeoutSeconds", 60))

    batch = timeout("ProcessBatch") + timeout("AdvanceCheckpoint")
    return timeout("Acquire") + max_batches * batch + timeout("ReleaseAfterFailure")


def check_retention(topics: Iterable[TopicConfig], retention: Retention) -> None:
    """Refuse a topic whose late-object look-back reaches further back than its output records live: at its
    schedule's rate, its last ``late_lookback_batches`` commits would span more than the outputs' retention,
    and the look-back would silently shrink (docs/decisions/0014)."""
    kept = retention.outputs_days * DAY_SECONDS
    for topic in topics:
        period = period_seconds(topic.schedule)
        if period is None or topic.late_lookback_batches * period <= kept:
            continue
        batches = kept // period
        days = -(-topic.late_lookback_batches * period // DAY_SECONDS)
        raise ConfigError(
            f"topic {topic.name}: late_lookback_batches {topic.late_lookback_batches} at {topic.schedule} "
            f"reaches back {topic.late_lookback_batches * period // 3600} h, past the output records' "
            f"{retention.outputs_days}-day retention: set late_lookback_batches to {batches} or less, or the "
            f"stack's OutputRecordDays to {days} or more"
        )


def check_express(topics: Iterable[TopicConfig], definition: dict[str, Any]) -> None:
    """On an Express state machine, refuse a topic whose worst-case run outlasts Express's 5 minutes, naming
    the largest ``max_batches_per_run`` that fits."""
    states = definition["States"]
    batch = int(states["ProcessBatch"].get("TimeoutSeconds", 60)) + int(
        states["AdvanceCheckpoint"].get("TimeoutSeconds", 60)
    )
    for topic in topics:
        worst = worst_case_seconds(definition, topic.max_batches_per_run)
        if worst > EXPRESS_LIMIT_SECONDS:
            fits = (EXPRESS_LIMIT_SECONDS - worst_case_seconds(definition, 0)) // batch
            fix = f"set max_batches_per_run to {fits} or less" if fits >= 1 else "use a STANDARD stack"
            raise ConfigError(
                f"topic {topic.name}: on an EXPRESS state machine a run of max_batches_per_run "
                f"{topic.max_batches_per_run} may take {worst} s by its task timeouts, over Express's "
                f"{EXPRESS_LIMIT_SECONDS} s: {fix}"
            )
