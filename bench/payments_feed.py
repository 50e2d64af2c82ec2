"""The payments change feed exported by a partitioned topic, both ways of covering its shards measured
(examples/payments, issue 14; docs/decisions/0015).

The feed is the payment store's ``changes#<shard>`` partitions (8 shards). Two topics read the same feed into
sinks of their own, with the same settings (``partitions: 8``, a ``dynamodb`` source with
``min_age_seconds``, a Parquet sink by day), so each does the same work:

- ``by_execution``: an execution of the topic-run state machine per shard, started together (what
  ``leanops topics push`` schedules: a schedule per partition);
- ``by_map``: one execution of a state machine whose only state is a ``Map`` over the shards, each iteration
  the topic-run states themselves (built here from the rendered ``topic_run`` definition: the alternative,
  not deployed).

Both run through the real ASL and handlers (:class:`~leanopsctl.local.runtime.LocalRuntime`: moto's ASL
interpreter, DynamoDB Local): the first export of a day of changes, then three times a poll with nothing
new and an increment (the median wall time kept; each way first in turn). For each round and way: state
transitions (``*StateEntered`` events, what Standard workflows bill), executions started, Lambda
invocations and wall time, checked to be the same work both ways. Then each shard's lag (the age of its
newest exported change when the last round ends), and a check that each sink holds every change of the
table exactly once.

    python bench/payments_feed.py [--quick] [--output PATH]

Merges its figures under ``feed`` into bench/results/payments.json (bench/payments_store.py writes the
invariants beside them).
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import yaml
from common import (
    REPO_ROOT,
    BenchError,
    Stopwatch,
    dynamodb_local,
    parse_quick_args,
    run_and_report,
    use_dummy_aws_env,
)
from leanopsctl.local.dynamodb_local import local_client
from leanopsctl.local.runtime import ExecutionResult, LocalRuntime

from leanops.constants import ENV_CONFIG
from leanops.protocol import Protocol, TopicRef
from leanops.protocol.dynamodb import DynamoDBStore
from leanops.protocol.table import create_table

if str(REPO_ROOT) not in sys.path:  # examples.payments (the repository root is not on sys.path for a script)
    sys.path.insert(0, str(REPO_ROOT))

from examples.payments import PaymentStore
from examples.payments import create_table as create_payments_table
from examples.payments.simulate import Clock, walk

NAME = "payments"
TEMPLATE = REPO_ROOT / "template.yaml"
MACHINE = "TopicRunStateMachine"
MAP_MACHINE = "PartitionsMap"
STATE_TABLE, PAYMENTS_TABLE = "leanops-state", "payments"
SHARDS = 8
#: The topics' min_age_seconds: short, so the increments (written now, as a writer does) are exported after
#: a short wait.
MIN_AGE_SECONDS = 5
RUN_TIMEOUT_SECONDS = 600
#: Rounds of the polls with nothing new and of the increments, each way (the wall time's median is kept).
REPEATS = 3
WAYS = ("by_execution", "by_map")
NOTES = [
    "Transitions are the *StateEntered events of the executions' histories in moto's ASL interpreter (what a "
    "Standard workflow bills per state entered); a Map state adds its own entry to its iterations'.",
    "Wall time is measured on a shared 2-core machine with every Lambda run in-process: compare the two ways "
    "within a round (they ran one after the other on the same data), not with AWS.",
]


@dataclass(frozen=True)
class Settings:
    payments: int
    increment: int
    batch_size: int


FULL = Settings(payments=2_000, increment=200, batch_size=500)
QUICK = Settings(payments=200, increment=50, batch_size=100)


def topics_document(sinks: Path, batch_size: int) -> dict[str, Any]:
    """The two topics: the same feed, the same settings, a sink each."""

    def topic(way: str) -> dict[str, Any]:
        return {
            "partitions": SHARDS,
            "source": {
                "type": "dynamodb",
                "table": PAYMENTS_TABLE,
                "partition_key": "pk",
                "partition_value": "changes#{partition}",
                "sort_key": "sk",
                "min_age_seconds": MIN_AGE_SECONDS,
            },
            "sink": {"type": "files", "uri": str(sinks / way), "format": "parquet", "partition_by": "day"},
            "timestamp_field": "at",
            "batch_size": batch_size,
            "max_batches_per_run": 100,
            "schema": {"at": "timestamp", "version": "int64", "at_ms": "int64", "amount_cents": "int64"},
        }

    return {"topics": {way: topic(way) for way in WAYS}}


def map_definition(runtime: LocalRuntime) -> dict[str, Any]:
    """One Map state over ``$.partitions`` whose iterations are the topic-run states, each given
    ``{"topic", "partition"}`` (and the start's ``scheduled_time``, if any)."""
    inner = runtime.definition(MACHINE)
    return {
        "Comment": "The alternative measured by bench/payments_feed.py: all shards in one execution.",
        "StartAt": "Shards",
        "States": {
            "Shards": {
                "Type": "Map",
                "ItemsPath": "$.partitions",
                "ItemSelector": {"topic.$": "$.topic", "partition.$": "$$.Map.Item.Value"},
                "MaxConcurrency": 0,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": inner["StartAt"],
                    "States": inner["States"],
                },
                "ResultSelector": {"shards.$": "$[*].outcome"},
                "End": True,
            }
        },
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeated rounds of one way: the counts of each, and the median wall time."""
    return {
        "executions": [r["executions"] for r in runs],
        "transitions": [r["transitions"] for r in runs],
        "lambda_invocations": [r["lambda_invocations"] for r in runs],
        "wall_seconds": statistics.median(r["wall_seconds"] for r in runs),
        "wall_seconds_each": [r["wall_seconds"] for r in runs],
    }


def check_same_work(by_execution: dict[str, Any], by_map: dict[str, Any]) -> None:
    """Both ways did the same work in a round: the same invocations, and the transitions of the same states
    plus the Map state's own."""
    if by_map["lambda_invocations"] != by_execution["lambda_invocations"] or by_map["transitions"] != (
        by_execution["transitions"] + 1
    ):
        raise BenchError(f"the two ways did different work: {by_execution} against {by_map}")


def transitions(result: ExecutionResult) -> int:
    return sum(1 for event in result.history if str(event["type"]).endswith("StateEntered"))


class Feed:
    """The runtime, the table and the two ways of running the feed's topics."""

    def __init__(self, runtime: LocalRuntime, protocol: Protocol) -> None:
        self.runtime = runtime
        self.protocol = protocol
        self.functions = sorted(runtime.template.functions)

    def round(self, way: str) -> dict[str, Any]:
        """Run every shard of ``way``'s topic once; what it took."""
        before = {f: self.runtime.invocations(f) for f in self.functions}
        started = time.perf_counter()
        if way == "by_execution":
            arns = [
                self.runtime.start(
                    MACHINE, {"topic": way, "partition": str(s)}, f"{way}-{s}-{uuid.uuid4().hex[:8]}"
                )
                for s in range(SHARDS)
            ]
        else:
            shards = [str(s) for s in range(SHARDS)]
            arns = [
                self.runtime.start(
                    MAP_MACHINE, {"topic": way, "partitions": shards}, f"map-{uuid.uuid4().hex[:8]}"
                )
            ]
        results = [self.runtime.wait(arn, timeout=RUN_TIMEOUT_SECONDS) for arn in arns]
        wall = time.perf_counter() - started
        failed = [r for r in results if not r.succeeded]
        if failed:
            raise BenchError(
                f"{way}: execution {failed[0].execution_arn} {failed[0].status}: {failed[0].cause}"
            )
        invocations = {f: self.runtime.invocations(f) - before[f] for f in self.functions}
        return {
            "executions": len(results),
            "transitions": sum(transitions(r) for r in results),
            "lambda_invocations": sum(invocations.values()),
            "wall_seconds": round(wall, 3),
            "outcomes": sorted(self.outcomes(way)),
        }

    def outcomes(self, way: str) -> list[str]:
        return [
            str(lock.last_outcome)
            for s in range(SHARDS)
            if (lock := self.protocol.status(TopicRef(way, str(s))).lock) is not None
        ]

    def lag(self, way: str, now_ms: int) -> dict[str, Any]:
        """Each shard's lag: the age of its newest exported change, in seconds."""
        lags = {}
        for s in range(SHARDS):
            checkpoint = self.protocol.read_checkpoint(TopicRef(way, str(s)))
            ingested = checkpoint.last_ingested_ts
            lags[str(s)] = None if ingested is None else round(now_ms / 1000 - float(ingested), 1)
        return lags


def exported(sink: Path) -> tuple[int, int]:
    """(rows, distinct (payment, version)) in a sink's Parquet."""
    files = [str(p) for p in sink.rglob("*.parquet") if "_quarantine" not in p.parts]
    if not files:
        return 0, 0
    row = duckdb.sql(
        "SELECT count(*), count(DISTINCT (payment_id, version)) "
        "FROM read_parquet($files, union_by_name = true)",
        params={"files": files},
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def measure(settings: Settings) -> dict[str, Any]:
    stopwatch = Stopwatch.start()
    rng = random.Random(14)
    with (
        dynamodb_local() as (endpoint, version),
        tempfile.TemporaryDirectory(prefix="leanops-bench-feed-") as directory,
    ):
        root = Path(directory)
        client = local_client(endpoint)
        create_table(client, STATE_TABLE)
        create_payments_table(client, PAYMENTS_TABLE)
        clock = Clock(0)  # the store's: epoch ms, moved by walk()
        store = PaymentStore(client, PAYMENTS_TABLE, shards=SHARDS, clock=clock)
        config = root / "topics.yaml"
        config.write_text(yaml.safe_dump(topics_document(root / "out", settings.batch_size), sort_keys=False))
        runtime = LocalRuntime(
            TEMPLATE,
            table_name=STATE_TABLE,
            log_to=root / "functions.log",
            environment={ENV_CONFIG: str(config)},
        )
        rounds: dict[str, dict[str, Any]] = {way: {} for way in WAYS}
        lags: dict[str, dict[str, Any]] = {}
        with runtime:
            runtime.add_state_machine(MAP_MACHINE, map_definition(runtime))
            feed = Feed(runtime, Protocol(DynamoDBStore(STATE_TABLE, client)))
            for way in WAYS:  # warm: imports and first calls are paid here, by neither way's figures
                feed.round(way)
            # A day of changes, all older than the feed waits for: written from 25 h ago to 1 h ago.
            span_ms = 24 * 3_600_000
            clock.now_ms = int(time.time() * 1000) - span_ms - 3_600_000
            changes = walk(store, clock, rng, settings.payments, every_ms=span_ms // settings.payments)
            for way in WAYS:
                rounds[way]["first_export"] = feed.round(way)
            tries: dict[str, dict[str, list[dict[str, Any]]]] = {
                w: {"nothing_new": [], "increment": []} for w in WAYS
            }
            for n in range(REPEATS):
                order = WAYS if n % 2 else WAYS[::-1]  # each way first in turn
                for way in order:
                    tries[way]["nothing_new"].append(feed.round(way))
                # An increment in every shard, written now (as a writer does: its keys' times are its
                # writes'), then exported once older than min_age: the lag is their age when the round ends.
                clock.now_ms = int(time.time() * 1000)
                first = settings.payments + n * settings.increment
                changes += walk(
                    store, clock, rng, settings.increment, first=first, every_ms=1, move_gap_ms=(1, 5)
                )
                time.sleep(max(0.0, clock.now_ms / 1000 + MIN_AGE_SECONDS + 1 - time.time()))
                for way in order:
                    tries[way]["increment"].append(feed.round(way))
                    lags[way] = feed.lag(way, int(time.time() * 1000))
            for name in ("nothing_new", "increment"):
                for one, other in zip(tries["by_execution"][name], tries["by_map"][name], strict=True):
                    check_same_work(one, other)
            for way in WAYS:
                rounds[way].update({name: summary(runs) for name, runs in tries[way].items()})
            check_same_work(rounds["by_execution"]["first_export"], rounds["by_map"]["first_export"])
        sinks = {way: exported(root / "out" / way) for way in WAYS}
    for way, (rows, distinct) in sinks.items():
        if rows != changes or distinct != changes:
            raise BenchError(
                f"{way}: {rows} rows ({distinct} distinct changes) exported of {changes} changes"
            )
    per_run = {
        way: {
            name: round(
                statistics.mean(
                    r["transitions"] if isinstance(r["transitions"], list) else [r["transitions"]]
                )
                / SHARDS,
                2,
            )
            for name, r in rounds[way].items()
        }
        for way in WAYS
    }
    feed_results = {
        "shards": SHARDS,
        "changes": changes,
        "payments": settings.payments + REPEATS * settings.increment,
        "min_age_seconds": MIN_AGE_SECONDS,
        "exported_rows": {way: rows for way, (rows, _) in sinks.items()},
        "per_shard_lag_seconds": lags["by_execution"],
        "per_shard_lag_seconds_by_map": lags["by_map"],
        "max_shard_lag_seconds": max(v for v in lags["by_execution"].values() if v is not None),
        "coverage": rounds,
        "transitions_per_shard_run": per_run,
        "choice": "by_execution",
        "why": (
            "The same transitions per shard either way (a Map adds its own), but an execution per shard "
            "keeps each shard's failure, retry, history and run record its own: a failed iteration fails "
            "the whole Map and stops its siblings mid-run, leaving their locks to expire (decision 0015)."
        ),
        "map_overhead_transitions_per_round": 1,
        "wall_ratio_map_over_execution": {
            name: round(
                rounds["by_map"][name]["wall_seconds"] / rounds["by_execution"][name]["wall_seconds"], 2
            )
            for name in rounds["by_map"]
        },
    }
    record = stopwatch.record(settings, NOTES, dynamodb_local=version or "unknown")
    return {"feed": {**feed_results, **record}}


def print_summary(results: dict[str, Any]) -> None:
    feed = results["feed"]
    lines = [f"{feed['changes']} changes in {feed['shards']} shards"]
    for way in WAYS:
        rounds = feed["coverage"][way]
        lines.append(
            f"{way}: "
            + ", ".join(
                f"{name} {r['transitions']} transitions / {r['executions']} executions / "
                f"{r['wall_seconds']} s"
                for name, r in rounds.items()
            )
        )
    lines.append(f"max shard lag {feed['max_shard_lag_seconds']} s; choice: {feed['choice']}")
    print("\n".join(lines), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_quick_args(argv, __doc__, NAME, "a short run (200 payments)")
    use_dummy_aws_env()
    settings = QUICK if args.quick else FULL
    return run_and_report(
        "bench/payments_feed.py", args.output, lambda: measure(settings), print_summary, merge=True
    )


if __name__ == "__main__":
    sys.exit(main())
