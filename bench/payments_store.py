"""The payment store under stress on DynamoDB Local: concurrent workers, random transitions, then every
invariant checked on every item of the table (examples/payments, issue 14).

Two phases, each started by all the workers at once (a barrier), each worker with its own client and store:

1. **creates**: ``payments`` payments with distinct tracking ids, plus ``rival_creates`` creates of other
   payment ids that claim one of those tracking ids at the same moment (exactly one create per tracking id
   can win), then a share of the successful creates sent again with the same request id (the first payment
   must come back, unchanged);
2. **transitions**: ``attempts`` transition requests. A worker picks a payment (mostly one it believes still
   open), takes the version it last saw (a share of the time without reading again, so it may be stale) and
   a target: a random edge of the graph from the status it saw, or (``off_graph_share``) any status at all,
   so that terminal states are attacked too. After a conflict it reads the payment again and retries the
   same target (``max_retries`` times). A share of the requests (``resend_share``) is an earlier request
   sent again, as it was (half the time one that was applied), often by another worker, sometimes while the
   first is still in flight.

Then the table is scanned and checked (:func:`check_invariants`): no payment left a terminal state, none
paid twice, every history a path of the graph with versions 1..n matching the payment, no tracking id
shared; and the requests' answers against the table (:func:`check_requests`): each request applied at most
once, a duplicate answered with exactly the first result, one change item per applied request and none
without.

    python bench/payments_store.py [--quick] [--attempts N] [--output PATH]

Writes bench/results/payments.json (or payments.quick.json); exit status 1 if an invariant is violated
(the results are written all the same) or the benchmark could not run.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common import (
    REPO_ROOT,
    BenchError,
    Stopwatch,
    dynamodb_local,
    results_path,
    use_dummy_aws_env,
    write_results,
)

if str(REPO_ROOT) not in sys.path:  # examples.payments (the repository root is not on sys.path for a script)
    sys.path.insert(0, str(REPO_ROOT))

from examples.payments.graph import PAID, PAYMENT_GRAPH, Graph, Status
from examples.payments.store import (
    CHANGES_PREFIX,
    PAYMENT_PREFIX,
    REQUEST_PREFIX,
    TRACKING_PREFIX,
    Method,
    Outcome,
    Payment,
    PaymentExists,
    PaymentStore,
    Result,
    TrackingIdTaken,
    create_table,
    shard_of,
)

NAME = "payments"
SCRIPT = "bench/payments_store.py"
TABLE = "payments-bench"
FEE_TYPES = ("filing", "renewal", "late_fee", "copy_request")
CURRENCIES = ("USD", "USD", "USD", "EUR")
ERROR_CODES = ("402", "403", "422", "500", "503")
#: How many details of each kind of violation the results keep (the counts are complete).
EXAMPLES_KEPT = 5


@dataclass(frozen=True)
class Settings:
    workers: int = 20
    payments: int = 100
    attempts: int = 10_000
    shards: int = 8
    rival_creates: int = 20
    create_resend_share: float = 0.2
    resend_share: float = 0.1
    stale_share: float = 0.75
    off_graph_share: float = 0.2
    cancel_share: float = 0.2
    open_preference: float = 0.8
    max_retries: int = 3
    seed: int = 14
    quick: bool = False


FULL = Settings(attempts=20_000)
QUICK = Settings(attempts=1_000, quick=True)

NOTES = [
    "DynamoDB Local (in memory) on this machine; every worker a thread with its own boto3 client (standard "
    "retries) and its own PaymentStore; the barrier starts each phase on all workers at once.",
    "attempts counts transition requests (re-sent ones and retries after a conflict included); creates are "
    "counted under creates. applied + duplicates + conflicts + invalid == attempts when errors is 0.",
    "The invariants are checked on a full scan of the table (check_invariants) and on every answer the "
    "workers received (check_requests); each key counts violations, 0 is the only correct value.",
]


# ------------------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    request_id: str
    payment_id: str
    to_status: Status
    expected_version: int
    error_code: str | None


@dataclass
class Log:
    """What the workers sent and received, shared under a lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: request id -> every answer it got: (outcome, the payment as JSON or None).
    answers: dict[str, list[tuple[str, dict[str, Any] | None]]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    sent: list[Request] = field(default_factory=list)
    #: The requests that were applied: half the re-sends are one of them (the others: any request sent).
    applied: list[Request] = field(default_factory=list)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    creates: collections.Counter[str] = field(default_factory=collections.Counter)
    create_answers: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    errors: list[str] = field(default_factory=list)
    attempts_left: int = 0

    def take_attempt(self) -> bool:
        with self.lock:
            if self.attempts_left <= 0:
                return False
            self.attempts_left -= 1
            return True

    def record(self, request: Request, result: Result) -> None:
        with self.lock:
            self.outcomes[str(result.outcome)] += 1
            payment = result.payment.to_json() if result.payment else None
            self.answers[request.request_id].append((str(result.outcome), payment))
            if result.outcome is Outcome.APPLIED:
                self.applied.append(request)


@dataclass
class Run:
    settings: Settings
    log: Log
    payment_ids: list[str]
    create_seconds: float
    transition_seconds: float


def run_stress(make_client: Callable[[], Any], table: str, settings: Settings) -> Run:
    """Both phases against ``table`` (created beforehand), each worker with its own ``make_client()``."""
    log = Log(attempts_left=settings.attempts)
    stores = [PaymentStore(make_client(), table, shards=settings.shards) for _ in range(settings.workers)]
    began = time.perf_counter()
    _in_threads(settings.workers, lambda i, barrier: _creates(stores[i], i, settings, log, barrier))
    created = time.perf_counter()
    payment_ids = sorted({p["payment_id"] for answers in log.create_answers.values() for p in answers})
    if len(payment_ids) != settings.payments:
        raise BenchError(f"{len(payment_ids)} payments created, not {settings.payments}: {dict(log.creates)}")
    _in_threads(
        settings.workers, lambda i, barrier: _transitions(stores[i], i, settings, log, barrier, payment_ids)
    )
    return Run(settings, log, payment_ids, created - began, time.perf_counter() - created)


def _in_threads(workers: int, work: Callable[[int, threading.Barrier], None]) -> None:
    barrier = threading.Barrier(workers)
    threads = [threading.Thread(target=work, args=(i, barrier), name=f"worker-{i}") for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _creates(
    store: PaymentStore, index: int, settings: Settings, log: Log, barrier: threading.Barrier
) -> None:
    rng = random.Random(settings.seed * 1_000 + index)
    contest = random.Random(settings.seed)  # the same rivals in every worker
    rivals = [contest.randrange(settings.payments) for _ in range(settings.rival_creates)]
    tasks = [(f"pay-{i:04d}", i) for i in range(settings.payments)]
    tasks += [(f"rival-{k:04d}", i) for k, i in enumerate(rivals)]
    contest.shuffle(tasks)
    mine = tasks[index :: settings.workers]
    made = []
    barrier.wait()
    try:
        for payment_id, tracking in mine:
            args = (
                f"create-{payment_id}",
                payment_id,
                rng.randrange(100, 500_000),
                rng.choice(CURRENCIES),
                rng.choice(FEE_TYPES),
                rng.choice(list(Method)),
                f"trk-{tracking:04d}",
            )
            try:
                payment = store.create(*args)
            except TrackingIdTaken:
                with log.lock:
                    log.creates["tracking_id_taken"] += 1
                continue
            made.append((args, payment))
            with log.lock:
                log.creates["created"] += 1
                log.create_answers[args[0]].append(payment.to_json())
        barrier.wait()  # every create has landed: send a share of them again
        for args, first in made:
            if rng.random() < settings.create_resend_share:
                again = store.create(*args)
                with log.lock:
                    log.creates["duplicates"] += 1
                    log.create_answers[args[0]].append(again.to_json())
                    if again != first:
                        log.errors.append(f"create {args[0]} sent again returned {again}, first {first}")
        if made:  # one of this worker's payment ids under another request id: refused
            args = made[0][0]
            try:
                store.create(f"again-{args[0]}", *args[1:])
                with log.lock:
                    log.errors.append(f"payment {args[1]} created twice")
            except PaymentExists:
                with log.lock:
                    log.creates["payment_exists"] += 1
    except Exception as exc:  # reported, and the run fails
        with log.lock:
            log.errors.append(f"worker {index} (creates): {type(exc).__name__}: {exc}")
        barrier.abort()


def _transitions(
    store: PaymentStore,
    index: int,
    settings: Settings,
    log: Log,
    barrier: threading.Barrier,
    payment_ids: list[str],
) -> None:
    rng = random.Random(settings.seed * 7_919 + index)
    seen: dict[str, Payment] = {}
    barrier.wait()
    try:
        while log.take_attempt():
            request = None
            with log.lock:
                if log.sent and rng.random() < settings.resend_share:
                    request = rng.choice(log.applied if log.applied and rng.random() < 0.5 else log.sent)
            if request is not None:
                _send(store, request, log, seen)
                continue
            payment_id = _pick_payment(rng, payment_ids, seen, settings.open_preference)
            known = seen.get(payment_id) if rng.random() < settings.stale_share else None
            if known is None:
                known = _read(store, payment_id, seen)
            target = _pick_target(rng, known.status, settings)
            error_code = rng.choice(ERROR_CODES) if target == Status.FAILED else None
            retries = 0
            while True:
                request = Request(uuid.uuid4().hex, payment_id, target, known.version, error_code)
                with log.lock:
                    log.sent.append(request)
                result = _send(store, request, log, seen)
                if result.outcome is not Outcome.CONFLICT or retries == settings.max_retries:
                    break
                if not log.take_attempt():
                    break
                retries += 1
                with log.lock:
                    log.outcomes["retries_after_conflict"] += 1
                known = _read(store, payment_id, seen)  # read again, then retry the same target
    except Exception as exc:  # reported, and the run fails
        with log.lock:
            log.errors.append(f"worker {index} (transitions): {type(exc).__name__}: {exc}")


def _send(store: PaymentStore, request: Request, log: Log, seen: dict[str, Payment]) -> Result:
    result = store.transition(
        request.request_id,
        request.payment_id,
        request.to_status,
        request.expected_version,
        request.error_code,
    )
    log.record(request, result)
    if result.payment is not None:
        _see(seen, result.payment)
    return result


def _read(store: PaymentStore, payment_id: str, seen: dict[str, Payment]) -> Payment:
    payment = store.get(payment_id)
    if payment is None:
        raise BenchError(f"payment {payment_id} vanished")
    _see(seen, payment)
    return payment


def _see(seen: dict[str, Payment], payment: Payment) -> None:
    known = seen.get(payment.payment_id)
    if known is None or known.version < payment.version:
        seen[payment.payment_id] = payment


def _pick_payment(
    rng: random.Random, ids: list[str], seen: dict[str, Payment], open_preference: float
) -> str:
    if rng.random() < open_preference:
        still_open = [i for i in ids if i not in seen or seen[i].status not in PAYMENT_GRAPH.terminal]
        if still_open:
            return rng.choice(still_open)
    return rng.choice(ids)


def _pick_target(rng: random.Random, status: str, settings: Settings) -> Status:
    """Any status (``off_graph_share``), else an exit of ``status``: CANCELLED with ``cancel_share`` where it
    is one (so that most payments go on to settle or fail), the others alike."""
    exits = sorted(PAYMENT_GRAPH.transitions[status])
    if not exits or rng.random() < settings.off_graph_share:
        return rng.choice(list(Status))
    if Status.CANCELLED in exits and len(exits) > 1:
        if rng.random() < settings.cancel_share:
            return Status.CANCELLED
        exits.remove(Status.CANCELLED)
    return Status(rng.choice(exits))


# ------------------------------------------------------------------------------------------------------------
# The checks
# ------------------------------------------------------------------------------------------------------------


def scan(client: Any, table: str) -> list[dict[str, Any]]:
    """Every item of ``table`` (strongly consistent), as plain values."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    items, start = [], None
    while True:
        page = client.scan(
            TableName=table, ConsistentRead=True, **({"ExclusiveStartKey": start} if start else {})
        )
        for raw in page.get("Items", []):
            item = {k: deserializer.deserialize(v) for k, v in raw.items()}
            items.append({k: int(v) if hasattr(v, "to_integral_value") else v for k, v in item.items()})
        start = page.get("LastEvaluatedKey")
        if not start:
            return items


@dataclass
class Violations:
    """Counts by kind, and a few examples of each."""

    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < EXAMPLES_KEPT:
            self.examples[kind].append(example)


def check_invariants(
    client: Any, table: str, shards: int, graph: Graph = PAYMENT_GRAPH, store: PaymentStore | None = None
) -> dict[str, Any]:
    """Every invariant of the store, on a scan of the raw items (not through the store's reads, except the
    last check, which compares :meth:`PaymentStore.history` with the scan for every payment).

    Keys (each a count of violations): ``terminal_violations`` (a change leaving a terminal state),
    ``double_paid`` (payments with more than one change into the paid state, or whose ``paid_at_ms`` is not
    that change's time), ``invalid_histories`` (payments whose changes are not a path of the graph from the
    initial state with versions 1..n, n and the last status those of the payment; plus change items of no
    payment), ``shared_tracking_ids`` (tracking ids held by more than one payment), ``tracking_mismatches``
    (a payment without its tracking item, or a tracking item naming another payment or none),
    ``history_mismatches`` (the store's history differs from the scan); and the figures counted.
    """
    items = scan(client, table)
    payments: dict[str, dict[str, Any]] = {}
    changes: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    tracking: dict[str, dict[str, Any]] = {}
    requests = 0
    for item in items:
        pk = str(item["pk"])
        if pk.startswith(PAYMENT_PREFIX):
            payments[pk[len(PAYMENT_PREFIX) :]] = item
        elif pk.startswith(CHANGES_PREFIX):
            changes[str(item["payment_id"])].append(item)
        elif pk.startswith(TRACKING_PREFIX):
            tracking[pk[len(TRACKING_PREFIX) :]] = item
        elif pk.startswith(REQUEST_PREFIX):
            requests += 1
    found = Violations()
    for payment_id in sorted(set(changes) - set(payments)):
        found.add("invalid_histories", f"{len(changes[payment_id])} changes of no payment {payment_id}")
    for payment_id, payment in sorted(payments.items()):
        history = sorted(changes.get(payment_id, []), key=lambda c: int(c["version"]))
        for change in history:
            if change["from_status"] in graph.terminal:
                found.add("terminal_violations", f"{payment_id} v{change['version']}: {_edge(change)}")
        paid = [c for c in history if c["to_status"] == PAID]
        if len(paid) > 1 or (paid and payment.get("paid_at_ms") != paid[0]["at_ms"]):
            found.add(
                "double_paid", f"{payment_id}: {len(paid)} changes to {PAID}, {payment.get('paid_at_ms')}"
            )
        elif not paid and payment.get("paid_at_ms") is not None:
            found.add("double_paid", f"{payment_id}: paid_at_ms {payment['paid_at_ms']} without a change")
        problem = _history_problem(payment, history, shards, graph)
        if problem:
            found.add("invalid_histories", f"{payment_id}: {problem}")
    holders: dict[str, list[str]] = collections.defaultdict(list)
    for payment_id, payment in payments.items():
        holders[str(payment["tracking_id"])].append(payment_id)
    for tracking_id, ids in sorted(holders.items()):
        if len(ids) > 1:
            found.add("shared_tracking_ids", f"{tracking_id}: {sorted(ids)}")
        held = tracking.get(tracking_id)
        if held is None or held.get("payment_id") not in ids:
            found.add("tracking_mismatches", f"{tracking_id} of {ids}: tracking item {held}")
    for tracking_id, held in sorted(tracking.items()):
        if tracking_id not in holders:
            found.add("tracking_mismatches", f"tracking item {tracking_id} of no payment: {held}")
    if store is not None:
        for payment_id in sorted(payments):
            api = [(c.version, str(c.to_status), c.sk) for c in store.history(payment_id)]
            raw = [
                (int(c["version"]), str(c["to_status"]), str(c["sk"])) for c in changes.get(payment_id, [])
            ]
            if api != sorted(raw):
                found.add("history_mismatches", f"{payment_id}: history() {api}, scan {sorted(raw)}")
    kinds = (
        "terminal_violations",
        "double_paid",
        "invalid_histories",
        "shared_tracking_ids",
        "tracking_mismatches",
        "history_mismatches",
    )
    statuses = collections.Counter(str(p["status"]) for p in payments.values())
    return {
        **{kind: found.counts[kind] for kind in kinds},
        "violation_examples": {kind: found.examples[kind] for kind in kinds if found.examples[kind]},
        "items": {
            "payments": len(payments),
            "changes": sum(len(c) for c in changes.values()),
            "requests": requests,
            "tracking": len(tracking),
        },
        "final_statuses": dict(sorted(statuses.items())),
        "paid_payments": sum(1 for p in payments.values() if p.get("paid_at_ms") is not None),
        "changes_per_shard": dict(
            sorted(collections.Counter(str(c["pk"]) for cs in changes.values() for c in cs).items())
        ),
    }


def _edge(change: dict[str, Any]) -> str:
    return f"{change['from_status']} -> {change['to_status']}"


def _history_problem(
    payment: dict[str, Any], history: list[dict[str, Any]], shards: int, graph: Graph
) -> str | None:
    """Why ``history`` (a payment's change items, by version) is not a valid history of it; None if it is."""
    payment_id = str(payment["pk"])[len(PAYMENT_PREFIX) :]
    versions = [int(c["version"]) for c in history]
    if versions != list(range(1, len(history) + 1)):
        return f"versions {versions}"
    if not history or history[0]["from_status"] is not None or history[0]["to_status"] != graph.initial:
        return f"does not start with a create into {graph.initial}: {[_edge(c) for c in history[:1]]}"
    for before, change in itertools.pairwise(history):
        if change["from_status"] != before["to_status"]:
            left, entered = change["from_status"], before["to_status"]
            return f"v{change['version']} leaves {left}, v{before['version']} entered {entered}"
        if not graph.is_edge(str(change["from_status"]), str(change["to_status"])):
            return f"v{change['version']}: {_edge(change)} is not an edge"
    last = history[-1]
    if int(payment["version"]) != len(history) or payment["status"] != last["to_status"]:
        ends = f"v{len(history)} {last['to_status']}"
        return f"payment at v{payment['version']} {payment['status']}, history ends {ends}"
    if int(payment["created_at_ms"]) != int(history[0]["at_ms"]) or int(payment["updated_at_ms"]) != int(
        last["at_ms"]
    ):
        return "created_at_ms / updated_at_ms differ from the first / last change's time"
    shard = f"{CHANGES_PREFIX}{shard_of(payment_id, shards)}"
    for change in history:
        sk = f"{int(change['at_ms']):013d}#{payment_id}#{int(change['version']):06d}"
        if change["pk"] != shard or change["sk"] != sk:
            return f"change v{change['version']} at {change['pk']} / {change['sk']}, not {shard} / {sk}"
        fixed = ("fee_type", "amount_cents", "currency", "method")
        if any(change[name] != payment[name] for name in fixed):
            return f"change v{change['version']} copies other fixed fields than the payment's"
    if payment.get("change_sks") != [c["sk"] for c in history]:
        return "the payment's change_sks differ from its change items"
    return None


def check_requests(log: Log, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' answers against the table: ``requests_applied_twice``, ``duplicates_differ`` (a
    duplicate answered with other than the first result), ``duplicates_of_nothing`` (a duplicate of a
    request never applied), ``applied_without_change`` and ``changes_without_applied`` (change items and
    applied requests must match one to one, the creates' included)."""
    found = Violations()
    applied_ids = set()
    for request_id, answers in log.answers.items():
        applied = [payment for outcome, payment in answers if outcome == Outcome.APPLIED]
        duplicates = [payment for outcome, payment in answers if outcome == Outcome.DUPLICATE_REQUEST]
        if len(applied) > 1:
            found.add("requests_applied_twice", f"{request_id}: {len(applied)}")
        if applied:
            applied_ids.add(request_id)
            for payment in duplicates:
                if payment != applied[0]:
                    found.add("duplicates_differ", f"{request_id}: {payment} != {applied[0]}")
        elif duplicates:
            found.add("duplicates_of_nothing", request_id)
    for request_id, created in log.create_answers.items():
        applied_ids.add(request_id)
        if any(payment != created[0] for payment in created):
            found.add("duplicates_differ", f"{request_id}: {created}")
    changed = {str(i["request_id"]) for i in items if str(i["pk"]).startswith(CHANGES_PREFIX)}
    for request_id in sorted(applied_ids - changed):
        found.add("applied_without_change", request_id)
    for request_id in sorted(changed - applied_ids):
        found.add("changes_without_applied", request_id)
    kinds = (
        "requests_applied_twice",
        "duplicates_differ",
        "duplicates_of_nothing",
        "applied_without_change",
        "changes_without_applied",
    )
    return {
        **{kind: found.counts[kind] for kind in kinds},
        "request_violation_examples": {kind: found.examples[kind] for kind in kinds if found.examples[kind]},
    }


#: Every key that counts violations: each must be 0.
VIOLATION_KEYS = (
    "terminal_violations",
    "double_paid",
    "invalid_histories",
    "shared_tracking_ids",
    "tracking_mismatches",
    "history_mismatches",
    "requests_applied_twice",
    "duplicates_differ",
    "duplicates_of_nothing",
    "applied_without_change",
    "changes_without_applied",
    "errors",
)


def figures(run: Run, client: Any, table: str) -> dict[str, Any]:
    """The run's counts and every check, as the results file has them."""
    settings, log = run.settings, run.log
    began = time.perf_counter()
    store = PaymentStore(client, table, shards=settings.shards)
    invariants = check_invariants(client, table, settings.shards, store=store)
    requests = check_requests(log, scan(client, table))
    outcomes = log.outcomes
    attempts = sum(outcomes[str(o)] for o in Outcome)
    return {
        "attempts": attempts,
        "applied": outcomes[Outcome.APPLIED],
        "conflicts": outcomes[Outcome.CONFLICT],
        "duplicates": outcomes[Outcome.DUPLICATE_REQUEST],
        "invalid": outcomes[Outcome.INVALID],
        "retries_after_conflict": outcomes["retries_after_conflict"],
        "creates": {
            "created": log.creates["created"],
            "tracking_id_taken": log.creates["tracking_id_taken"],
            "duplicates": log.creates["duplicates"],
            "payment_exists": log.creates["payment_exists"],
        },
        **invariants,
        **requests,
        "errors": len(log.errors),
        "error_examples": log.errors[:EXAMPLES_KEPT],
        "workers": settings.workers,
        "payments": len(run.payment_ids),
        "shards": settings.shards,
        "seconds": {
            "creates": round(run.create_seconds, 2),
            "transitions": round(run.transition_seconds, 2),
            "checks": round(time.perf_counter() - began, 2),
        },
        "attempts_per_second": round(attempts / run.transition_seconds, 1)
        if run.transition_seconds
        else None,
    }


def violations(results: dict[str, Any]) -> dict[str, int]:
    return {key: results[key] for key in VIOLATION_KEYS if results[key]}


# ------------------------------------------------------------------------------------------------------------
# The script
# ------------------------------------------------------------------------------------------------------------


def measure(settings: Settings) -> dict[str, Any]:
    from leanopsctl.local.dynamodb_local import local_client

    stopwatch = Stopwatch.start()
    with dynamodb_local() as (endpoint, version):
        client = local_client(endpoint)
        create_table(client, TABLE)
        run = run_stress(lambda: local_client(endpoint), TABLE, settings)
        results = figures(run, client, TABLE)
    return {**results, **stopwatch.record(settings, NOTES, dynamodb_local=version or "unknown")}


def print_summary(results: dict[str, Any]) -> None:
    s = results["seconds"]
    print(
        f"{results['workers']} workers, {results['payments']} payments: {results['attempts']:,} attempts in "
        f"{s['transitions']} s ({results['attempts_per_second']}/s): {results['applied']} applied, "
        f"{results['conflicts']} conflicts, {results['duplicates']} duplicates, "
        f"{results['invalid']} invalid; violations: {violations(results) or 'none'}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.attempts:,} attempts (a smoke run)")
    parser.add_argument("--attempts", type=int, help=f"transition attempts (default {FULL.attempts:,})")
    parser.add_argument("--output", help="results file (default bench/results/payments[.quick].json)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.attempts:
        settings = replace(settings, attempts=args.attempts)
    output = args.output or results_path(NAME, quick=args.quick)
    use_dummy_aws_env()
    try:
        results = measure(settings)
    except BenchError as exc:
        print(f"{SCRIPT}: {exc}", file=sys.stderr)
        return 1
    write_results(Path(output), results, merge=True)  # bench/payments_feed.py's figures stay
    print_summary(results)
    print(output)
    return 1 if violations(results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
