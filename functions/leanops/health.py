"""Per-run health metrics: what the stack's alarms read (template.yaml: one alarm per condition across every
topic, a Metrics Insights query grouped by the ``topic`` dimension).

Every run of a topic reports, whatever its outcome, so a topic that fails, stalls or is always skipped is
seen (a metric emitted only on commit goes silent exactly then):

- at its start (Acquire, once it has the lock item in hand, including a start that found the lock held or
  the topic paused): ``LagSeconds`` (now minus the checkpoint's ``last_ingested_ts``) and ``LagRatio`` (that
  over the topic's lag objective); ``StalenessRatio``, the time since the topic's last successful run (the
  lock item's ``last_success_at``) over :data:`STALE_AFTER_PERIODS` schedule periods, for scheduled topics
  and not while paused; ``LockHeldLeases`` when another run holds the lock: how long it has, in leases;
- on each commit: ``LagSeconds`` and ``LagRatio`` again (after the batch);
- at its end: ``RunFailed``, 1 for a failed run (Release task, safety net), 0 for any other outcome.

Ratios let one threshold (1.0) serve topics with different objectives and schedules. A duplicate start is
not a run (the first delivery of the same start is, and reports); a backfill's runs report none of these:
its records are old by design and it has no schedule, so they would page for the topic.
"""

from __future__ import annotations

import os

from aws_lambda_powertools.metrics import MetricUnit

from leanops import cadence
from leanops.config import TopicConfig
from leanops.constants import DEFAULT_LAG_OBJECTIVE_SECONDS, ENV_DEFAULT_LAG_OBJECTIVE_SECONDS
from leanops.errors import ConfigError
from leanops.observability import logger, metrics
from leanops.protocol import Acquired, Checkpoint, Held, Paused, TopicRef
from leanops.protocol.model import AcquireResult, LockState

#: "No successful run" means none within this many schedule periods. Not a whole number: on-time starts
#: then never sit on the threshold (two periods and a scheduler's jitter either side of it). With on-time
#: starts the alarm fires at the third start after the last success, when two runs in a row did not succeed.
STALE_AFTER_PERIODS = 2.5


def lag_objective_seconds(config: TopicConfig) -> int:
    """The topic's ``lag_objective_seconds``, else the stack's default (``$LEANOPS_DEFAULT_LAG_OBJECTIVE_
    SECONDS``, which the template sets from its DefaultLagObjectiveSeconds parameter)."""
    if config.lag_objective_seconds is not None:
        return config.lag_objective_seconds
    raw = os.environ.get(ENV_DEFAULT_LAG_OBJECTIVE_SECONDS, "")
    try:
        value = int(raw) if raw else DEFAULT_LAG_OBJECTIVE_SECONDS
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{ENV_DEFAULT_LAG_OBJECTIVE_SECONDS}={raw!r}: expected whole seconds > 0")
    return value


def report_start(topic: TopicRef, config: TopicConfig, result: AcquireResult, now_ms: int) -> None:
    """What a run's start knows of the topic's health: lag, staleness, and a lock held by another run."""
    if topic.partition is not None:  # a backfill (module docstring)
        return
    lock = result.lock
    checkpoint = result.checkpoint if isinstance(result, Acquired) else (lock.checkpoint if lock else None)
    report_lag(topic, config, checkpoint, now_ms)
    # A pause is an operator's decision about runs: the data's lag is still reported, staleness is not.
    if not isinstance(result, Paused):
        _report_staleness(config, lock, now_ms)
    if isinstance(result, Held) and lock is not None and lock.acquired_at_ms is not None:
        held = max(0, now_ms - int(lock.acquired_at_ms)) / (config.lease_seconds * 1000)
        metrics.add_metric(name="LockHeldLeases", unit=MetricUnit.NoUnit, value=round(held, 3))


def report_lag(topic: TopicRef, config: TopicConfig, checkpoint: Checkpoint | None, now_ms: int) -> None:
    """``LagSeconds`` and ``LagRatio`` from the checkpoint's ``last_ingested_ts``; nothing when it has none
    (the topic never committed a record with a ``timestamp_field``): "no successful run" still sees it."""
    if topic.partition is not None or checkpoint is None or checkpoint.last_ingested_ts is None:
        return
    lag = max(0.0, now_ms / 1000 - float(checkpoint.last_ingested_ts))
    metrics.add_metric(name="LagSeconds", unit=MetricUnit.Seconds, value=round(lag, 3))
    ratio = lag / lag_objective_seconds(config)
    metrics.add_metric(name="LagRatio", unit=MetricUnit.NoUnit, value=round(ratio, 4))


def report_outcome(topic: TopicRef, *, failed: bool) -> None:
    """One ``RunFailed`` per run: 1 if it failed, 0 whatever else it ended as."""
    if topic.partition is None:
        metrics.add_metric(name="RunFailed", unit=MetricUnit.Count, value=1 if failed else 0)


def _report_staleness(config: TopicConfig, lock: LockState | None, now_ms: int) -> None:
    try:
        period = cadence.period_seconds(config.schedule)
    except ConfigError as exc:  # the run goes on; its topic's schedule was checked when it was deployed
        logger.warning("no staleness metric: the schedule has no period", extra={"reason": str(exc)})
        return
    if period is None or lock is None:  # manual or one-time topics: no period to be late against
        return
    allowed_ms = period * 1000 * STALE_AFTER_PERIODS
    since = _last_success_ms(lock)
    if since is None:
        # Never succeeded: count its failed runs as periods, as if it had succeeded one period before the
        # first; a new topic starts at 1 / STALE_AFTER_PERIODS.
        ratio = (lock.failures + 1) / STALE_AFTER_PERIODS
    else:
        ratio = max(0, now_ms - since) / allowed_ms
    metrics.add_metric(name="StalenessRatio", unit=MetricUnit.NoUnit, value=round(ratio, 4))


def _last_success_ms(lock: LockState) -> int | None:
    """When a run of the topic last ended well. Lock items written before ``last_success_at`` existed
    still say it when their last run ended well."""
    if lock.last_success_at_ms is not None:
        return int(lock.last_success_at_ms)
    if lock.last_outcome in ("processed", "up_to_date") and lock.last_run_at_ms is not None:
        return int(lock.last_run_at_ms)
    return None
