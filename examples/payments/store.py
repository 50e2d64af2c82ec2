"""The payment store: payments in their own DynamoDB table, every change a guarded transaction.

Items (one table, ``pk`` + ``sk``, on-demand; README.md of this folder has the whole layout):

- ``payment#<id>`` / ``payment``: the payment (status, version, amounts, times, ``change_sks``: the sort keys
  of its change items, at most the graph's longest path + 1);
- ``changes#<shard>`` / ``<at_ms:13>#<id>#<version:06>``: one per transition, append-only, in one of
  ``shards`` partitions chosen by a stable hash of the payment id (the feed a topic exports);
- ``request#<request id>`` / ``request``: the request's parameters and its first result (idempotency);
- ``tracking#<tracking id>`` / ``tracking``: which payment holds the tracking id (uniqueness).

A sparse global secondary index, ``by_status`` (``status`` + ``status_key``), holds the open payments:
``status_key`` (``<13-digit ms>#<id>``) is set by the create and by every transition into a non-terminal
status, and removed by the transition into a terminal one. :meth:`PaymentStore.requeue` moves an open
payment's key to now (not a transition): what a poller does to put a payment back at the end of its
status's queue.

Every write is one ``TransactWriteItems``: a create puts the payment, its tracking item, its request item and
its first change, each only if absent; a transition updates the payment under the graph's compiled guard
(status in the predecessors, version as expected) and puts its request item (only if absent) and its change
item. A cancelled transaction is read once, item by item (:meth:`PaymentStore._cancellable`), into an
outcome.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from examples.payments.graph import PAID, PAYMENT_GRAPH, TERMINAL, Graph, Status
from leanops.errors import StoreThrottled, StoreUnavailable
from leanops.protocol.dynamodb import CLIENT_CONFIG

PARTITION_KEY, SORT_KEY = "pk", "sk"
PAYMENT_PREFIX, PAYMENT_SK = "payment#", "payment"
CHANGES_PREFIX = "changes#"
REQUEST_PREFIX, REQUEST_SK = "request#", "request"
TRACKING_PREFIX, TRACKING_SK = "tracking#", "tracking"
DEFAULT_SHARDS = 8
#: The sparse index of open payments: ``status`` + ``status_key`` (``<updated ms:13>#<id>``). It projects
#: ``payment_id`` and ``version`` (with the keys): a poller reads the payment strongly anyway (an index is
#: eventually consistent), so the index needs no more, and a narrow projection keeps its writes small (ALL
#: would copy every payment write, ``change_sks`` included, into the index).
STATUS_INDEX, STATUS_KEY, STATUS_ATTRIBUTE = "by_status", "status_key", "status"
STATUS_INDEX_PROJECTION = ("payment_id", "version")

#: Ids (payment, request, tracking) go into keys: no ``#``, no spaces, at most 128 characters.
_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_CURRENCY = re.compile(r"[A-Z]{3}")
#: The condition of every put: it only creates (an item that exists makes the put, and its transaction, fail).
_ABSENT = "attribute_not_exists(#pk)"
_ABSENT_NAMES = {"#pk": PARTITION_KEY}
#: Errors DynamoDB (or the SDK, after its own retries) reports when busy: retry later.
_THROTTLING = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
    "InternalServerError",
    "ServiceUnavailable",
}
#: A transaction cancelled only because another one held its items: retried here, with jittered backoff.
CONFLICT_RETRIES = 8
CONFLICT_BACKOFF_S = 0.01
#: Payments a store remembers (their last sight) before it starts afresh.
MAX_SEEN = 100_000

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class Method(StrEnum):
    ACH = "ACH"
    CARD = "CARD"
    WIRE = "WIRE"


class Outcome(StrEnum):
    #: The transition was written (payment, change and request items, in one transaction).
    APPLIED = "applied"
    #: The request id was applied before: the result is the first one's, and nothing changed. (The SDK's own
    #: retries of one call carry its ClientRequestToken, so a call whose first sending landed unheard still
    #: reads applied; a caller that sends the request id again, later, reads this.)
    DUPLICATE_REQUEST = "duplicate_request"
    #: The payment is no longer at the expected version: ``payment`` is as it is now; nothing was written.
    CONFLICT = "conflict"
    #: The payment is at the expected version, but its status has no edge to the target (or no state has):
    #: nothing was written.
    INVALID = "invalid"


class PaymentError(Exception):
    """Base class of the payment store's own errors (store access raises leanops' StoreThrottled and
    StoreUnavailable)."""


class InvalidRequest(PaymentError, ValueError):
    """An argument no payment could accept (a malformed id, a negative amount, an unknown method)."""


class RequestIdReused(PaymentError, ValueError):
    """A request id that names an earlier request with other parameters: nothing was written."""

    def __init__(self, request_id: str, first: Mapping[str, Any], now: Mapping[str, Any]) -> None:
        super().__init__(f"request id {request_id} was first used for {dict(first)}, now for {dict(now)}")
        self.request_id, self.first, self.now = request_id, dict(first), dict(now)


class PaymentNotFound(PaymentError, LookupError):
    def __init__(self, payment_id: str) -> None:
        super().__init__(f"no payment {payment_id}")
        self.payment_id = payment_id


class PaymentExists(PaymentError):
    """A create for a payment id that another request created: nothing was written."""

    def __init__(self, payment: Payment) -> None:
        super().__init__(f"payment {payment.payment_id} exists already")
        self.payment = payment


class TrackingIdTaken(PaymentError):
    """A create whose tracking id another payment holds: nothing was written."""

    def __init__(self, tracking_id: str, holder: str | None) -> None:
        super().__init__(f"tracking id {tracking_id} belongs to payment {holder}")
        self.tracking_id, self.holder = tracking_id, holder


class IntegrityError(PaymentError):
    """The table holds what the store's own writes cannot produce (e.g. a change item for a version not yet
    written): someone else wrote to it."""


@dataclass(frozen=True)
class Payment:
    payment_id: str
    status: Status
    version: int
    amount_cents: int
    currency: str
    fee_type: str
    method: Method
    tracking_id: str
    created_at_ms: int
    updated_at_ms: int
    error_code: str | None = None
    paid_at_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": str(self.status), "method": str(self.method)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Payment:
        return cls(
            payment_id=str(data["payment_id"]),
            status=Status(data["status"]),
            version=int(data["version"]),
            amount_cents=int(data["amount_cents"]),
            currency=str(data["currency"]),
            fee_type=str(data["fee_type"]),
            method=Method(data["method"]),
            tracking_id=str(data["tracking_id"]),
            created_at_ms=int(data["created_at_ms"]),
            updated_at_ms=int(data["updated_at_ms"]),
            error_code=data.get("error_code"),
            paid_at_ms=int(data["paid_at_ms"]) if data.get("paid_at_ms") is not None else None,
        )


@dataclass(frozen=True)
class Change:
    """One transition as its change item records it (``from_status`` None for the create)."""

    shard: int
    sk: str
    payment_id: str
    from_status: Status | None
    to_status: Status
    version: int
    at_ms: int
    error_code: str | None
    fee_type: str
    amount_cents: int
    currency: str
    method: Method
    request_id: str

    @property
    def at(self) -> str:
        """``at_ms`` as ISO 8601 UTC with milliseconds (``2026-11-29T10:00:00.123Z``): the item's ``at``."""
        return iso_ms(self.at_ms)


@dataclass(frozen=True)
class Requeued:
    """What :meth:`PaymentStore.requeue` came to. ``moved``: the payment's ``status_key`` is now
    ``status_key``; otherwise it was no longer at the expected status and version (nothing written).
    ``payment``: the payment as it is now either way."""

    moved: bool
    status_key: str | None
    payment: Payment


@dataclass(frozen=True)
class Result:
    """What a transition request came to. ``payment``: as the transition left it (applied), as the first
    request left it (duplicate_request), as it is now (conflict, invalid; None when no state may move to the
    target, which is known without a request)."""

    outcome: Outcome
    request_id: str
    payment: Payment | None
    reason: str | None = None

    @property
    def applied(self) -> bool:
        return self.outcome is Outcome.APPLIED


def shard_of(payment_id: str, shards: int) -> int:
    """The change-feed shard of a payment: stable across processes and versions (not Python's ``hash``)."""
    return int.from_bytes(hashlib.sha256(payment_id.encode()).digest()[:8], "big") % shards


def change_sort_key(at_ms: int, payment_id: str, version: int) -> str:
    return f"{at_ms:013d}#{payment_id}#{version:06d}"


def status_key(at_ms: int, payment_id: str) -> str:
    """The ``by_status`` index's sort key: the time (13 digits of epoch ms: keys sort by time), the id."""
    return f"{at_ms:013d}#{payment_id}"


def status_key_ms(key: str) -> int:
    """The time a ``status_key`` starts with (epoch ms)."""
    return int(key[:13])


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_ms(at_ms: int) -> str:
    """Epoch ms as ISO 8601 UTC with milliseconds, ``2026-11-29T10:00:00.123Z`` (integer arithmetic)."""
    seconds, millis = divmod(at_ms, 1000)
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_client(endpoint_url: str | None = None) -> Any:
    """A DynamoDB client with leanops' settings: standard retries (throttling, transient errors), timeouts."""
    return boto3.client("dynamodb", endpoint_url=endpoint_url, config=CLIENT_CONFIG)


_STATUS_INDEX_SPEC = {
    "IndexName": STATUS_INDEX,
    "KeySchema": [
        {"AttributeName": STATUS_ATTRIBUTE, "KeyType": "HASH"},
        {"AttributeName": STATUS_KEY, "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(STATUS_INDEX_PROJECTION)},
}
_STATUS_INDEX_ATTRIBUTES = [
    {"AttributeName": STATUS_ATTRIBUTE, "AttributeType": "S"},
    {"AttributeName": STATUS_KEY, "AttributeType": "S"},
]


def create_table(client: Any, name: str, *, timeout_s: float = 300.0) -> None:
    """The payments table (on-demand, ``pk`` + ``sk`` strings) with its ``by_status`` index; idempotent;
    returns once the table and the index are active.

    A table created before the index existed gets it added (``UpdateTable``). Its payments enter the index
    at their next transition (or create): the index holds only items that have a ``status_key``.
    """
    with suppress(client.exceptions.ResourceInUseException):
        client.create_table(
            TableName=name,
            KeySchema=[
                {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
                {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
                {"AttributeName": SORT_KEY, "AttributeType": "S"},
                *_STATUS_INDEX_ATTRIBUTES,
            ],
            GlobalSecondaryIndexes=[_STATUS_INDEX_SPEC],
            BillingMode="PAY_PER_REQUEST",
        )
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    deadline = time.monotonic() + timeout_s
    while True:
        table = client.describe_table(TableName=name)["Table"]
        indexes = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
        index = indexes.get(STATUS_INDEX)
        if index is None:
            with suppress(client.exceptions.ResourceInUseException):  # another process is adding it
                client.update_table(
                    TableName=name,
                    AttributeDefinitions=_STATUS_INDEX_ATTRIBUTES,
                    GlobalSecondaryIndexUpdates=[{"Create": _STATUS_INDEX_SPEC}],
                )
        elif index.get("IndexStatus", "ACTIVE") == "ACTIVE" and table.get("TableStatus") == "ACTIVE":
            return
        if time.monotonic() > deadline:
            raise StoreUnavailable(f"index {STATUS_INDEX} of table {name} not active after {timeout_s} s")
        time.sleep(1)


class PaymentStore:
    """Payments, their changes, requests and tracking ids in ``table``; ``shards`` change partitions.

    ``clock`` returns epoch milliseconds (the times of changes). One store may serve several threads; each
    thread may as well have its own (and its own client).
    """

    def __init__(
        self,
        client: Any,
        table: str,
        shards: int = DEFAULT_SHARDS,
        clock: Callable[[], int] = now_ms,
        graph: Graph = PAYMENT_GRAPH,
    ) -> None:
        if shards < 1:
            raise InvalidRequest(f"shards must be >= 1, not {shards}")
        self.client, self.table, self.shards, self.clock, self.graph = client, table, shards, clock, graph
        # The last sight of each payment: what a transition at that version starts from (a version's state
        # never changes), so a caller that read the payment through this store costs no second read.
        self._seen: dict[str, Payment] = {}
        self._seen_lock = threading.Lock()

    # --- create -------------------------------------------------------------------------------------------

    def create(
        self,
        request_id: str,
        payment_id: str,
        amount_cents: int,
        currency: str,
        fee_type: str,
        method: Method | str,
        tracking_id: str,
    ) -> Payment:
        """Create the payment in ``CREATED`` at version 1, holding ``tracking_id``, with its first change.

        A repeated ``request_id`` returns the payment as the first request created it and writes nothing.
        Raises :class:`PaymentExists`, :class:`TrackingIdTaken`, :class:`RequestIdReused` (nothing written),
        :class:`InvalidRequest` for bad arguments.
        """
        for name, value in (
            ("request_id", request_id),
            ("payment_id", payment_id),
            ("tracking_id", tracking_id),
        ):
            _check_id(name, value)
        if isinstance(amount_cents, bool) or not isinstance(amount_cents, int) or amount_cents <= 0:
            raise InvalidRequest(f"amount_cents must be a positive int, not {amount_cents!r}")
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            raise InvalidRequest(f"currency must be 3 capital letters (ISO 4217), not {currency!r}")
        if not isinstance(fee_type, str) or not fee_type:
            raise InvalidRequest(f"fee_type must be a non-empty string, not {fee_type!r}")
        try:
            method = Method(method)
        except ValueError:
            raise InvalidRequest(f"method must be one of {', '.join(Method)}, not {method!r}") from None
        at = self.clock()
        payment = Payment(
            payment_id=payment_id,
            status=Status(self.graph.initial),
            version=1,
            amount_cents=amount_cents,
            currency=currency,
            fee_type=fee_type,
            method=method,
            tracking_id=tracking_id,
            created_at_ms=at,
            updated_at_ms=at,
        )
        request = {"op": "create", **{k: v for k, v in payment.to_json().items() if k in _CREATE_FIELDS}}
        change = self._change(payment, None, request_id)
        items = [
            self._put_new(
                {
                    **_payment_key(payment_id),
                    **payment.to_json(),
                    "change_sks": [change.sk],
                    STATUS_KEY: status_key(at, payment_id),
                }
            ),
            self._put_new({**_tracking_key(tracking_id), "payment_id": payment_id}),
            self._put_new(self._request_item(request_id, request, payment)),
            self._put_new(self._change_item(change)),
        ]
        cancelled = self._transact(items)
        if cancelled is None:
            self._remember(payment)
            return payment
        (payment_failed, old_payment), (tracking_failed, old_tracking), (request_failed, old_request), _ = (
            cancelled
        )
        if request_failed:
            return self._first_result(request_id, request, old_request).payment or payment
        if payment_failed:
            raise PaymentExists(_payment(old_payment) if old_payment else payment)
        if tracking_failed:
            raise TrackingIdTaken(tracking_id, old_tracking.get("payment_id") if old_tracking else None)
        raise IntegrityError(f"the change item {change.sk} of a new payment {payment_id} exists already")

    # --- transition ---------------------------------------------------------------------------------------

    def transition(
        self,
        request_id: str,
        payment_id: str,
        to_status: Status | str,
        expected_version: int,
        error_code: str | None = None,
    ) -> Result:
        """Move the payment to ``to_status`` if it is still at ``expected_version`` and its status has an
        edge there; record the change and the request in the same transaction.

        Never raises for a refusal (conflict, invalid) or a repeated request (duplicate_request): those are
        outcomes. Raises :class:`PaymentNotFound`, :class:`RequestIdReused`, :class:`InvalidRequest` (an
        unknown status, a version < 1), and StoreThrottled / StoreUnavailable when DynamoDB cannot answer
        (then nothing or everything was written: send the same request id again to find out).
        """
        _check_id("request_id", request_id)
        _check_id("payment_id", payment_id)
        try:
            target = Status(to_status)
        except ValueError:
            raise InvalidRequest(f"unknown status {to_status!r}") from None
        if (
            isinstance(expected_version, bool)
            or not isinstance(expected_version, int)
            or expected_version < 1
        ):
            raise InvalidRequest(f"expected_version must be an int >= 1, not {expected_version!r}")
        if error_code is not None and not isinstance(error_code, str):
            raise InvalidRequest(f"error_code must be a string or None, not {error_code!r}")
        guard = self.graph.guard(target)
        if guard is None:
            return Result(Outcome.INVALID, request_id, None, f"no status moves to {target}")
        request = {
            "op": "transition",
            "payment_id": payment_id,
            "to_status": str(target),
            "expected_version": expected_version,
            "error_code": error_code,
        }
        # The payment as it was at the expected version: its status is the change's from_status, its fixed
        # fields (amount, currency, fee type, method) go into the change item. A version's state never
        # changes, so the store's last sight of the payment serves when it is at that version; otherwise one
        # read (with the request's item: a request applied before is a duplicate, not a conflict).
        before = self._seen.get(payment_id)
        if before is None or before.version != expected_version:
            payment_item, request_item = self._read_payment_and_request(payment_id, request_id)
            if request_item is not None:
                return self._first_result(request_id, request, request_item)
            if payment_item is None:
                raise PaymentNotFound(payment_id)
            before = _payment(payment_item)
            self._remember(before)
            if before.version != expected_version:  # versions only grow: the write could not pass
                return self._conflict(request_id, before, expected_version)
        at = self.clock()
        after = replace(
            before,
            status=target,
            version=expected_version + 1,
            updated_at_ms=at,
            error_code=error_code,
            paid_at_ms=at if target == PAID else before.paid_at_ms,
        )
        change = self._change(after, before.status, request_id)
        assignments: dict[str, tuple[str, Any]] = {
            "#status": ("status", str(target)),
            "#version": ("version", after.version),
            "#updated": ("updated_at_ms", at),
            "#error": ("error_code", error_code),
        }
        if target == PAID:  # set once: PAID is entered once at most (the graph has no cycle)
            assignments["#paid"] = ("paid_at_ms", at)
        # The index of open payments: a non-terminal status puts the payment at the end of its queue, a
        # terminal one takes it out (the index is sparse: no status_key, no index item).
        terminal = target in TERMINAL
        if not terminal:
            assignments["#status_key"] = (STATUS_KEY, status_key(at, payment_id))
        names = {**guard.names, **{n: attribute for n, (attribute, _) in assignments.items()}}
        names["#changes"] = "change_sks"
        values = {f":new_{n[1:]}": _serializer.serialize(v) for n, (_, v) in assignments.items()}
        values[":change_sk"] = _serializer.serialize([change.sk])
        update = ", ".join(f"{n} = :new_{n[1:]}" for n in assignments)
        update = f"SET {update}, #changes = list_append(#changes, :change_sk)"
        if terminal:
            names["#status_key"] = STATUS_KEY
            update += " REMOVE #status_key"
        items = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": _key(PAYMENT_PREFIX + payment_id, PAYMENT_SK),
                    "UpdateExpression": update,
                    "ConditionExpression": guard.expression,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": {**values, **guard.values_for(expected_version)},
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            self._put_new(self._request_item(request_id, request, after)),
            self._put_new(self._change_item(change)),
        ]
        cancelled = self._transact(items)
        if cancelled is None:
            self._remember(after)
            return Result(Outcome.APPLIED, request_id, after)
        (payment_failed, old), (request_failed, old_request), _ = cancelled
        if request_failed:
            return self._first_result(request_id, request, old_request)
        if not payment_failed:
            raise IntegrityError(f"change item {change.sk} exists, yet payment {payment_id} was not there")
        if old is None:
            raise PaymentNotFound(payment_id)
        current = _payment(old)
        self._remember(current)
        if current.version != expected_version:
            return self._conflict(request_id, current, expected_version)
        return Result(
            Outcome.INVALID,
            request_id,
            current,
            f"{current.status} -> {target} is not a transition of the graph",
        )

    def _conflict(self, request_id: str, current: Payment, expected_version: int) -> Result:
        reason = f"payment {current.payment_id} is at version {current.version} ({current.status}), not at "
        return Result(Outcome.CONFLICT, request_id, current, reason + str(expected_version))

    # --- the index of open payments -----------------------------------------------------------------------

    def requeue(
        self, payment_id: str, expected_version: int, status: Status | str = Status.PENDING
    ) -> Requeued:
        """Put a still-open payment back at the end of its status's queue in the ``by_status`` index: its
        ``status_key`` becomes the clock's now, if it is still in ``status`` at ``expected_version``
        (``#status = :status AND #version = :expected``). Otherwise nothing is written (``moved`` False).
        Either way ``payment`` is the payment as it is now.

        Not a transition: no new version, no change item, no request item, ``updated_at_ms`` unchanged (it
        stays the time of the last transition). Repeating it only moves the key to the later now.

        Raises :class:`PaymentNotFound`, :class:`InvalidRequest` (a terminal status: terminal payments
        leave the index; a bad id or version), StoreThrottled / StoreUnavailable.
        """
        _check_id("payment_id", payment_id)
        try:
            current_status = Status(status)
        except ValueError:
            raise InvalidRequest(f"unknown status {status!r}") from None
        if current_status in TERMINAL:
            raise InvalidRequest(f"{current_status} is terminal: its payments are not in {STATUS_INDEX}")
        if (
            isinstance(expected_version, bool)
            or not isinstance(expected_version, int)
            or expected_version < 1
        ):
            raise InvalidRequest(f"expected_version must be an int >= 1, not {expected_version!r}")
        key = status_key(self.clock(), payment_id)
        request = {
            "TableName": self.table,
            "Key": _key(PAYMENT_PREFIX + payment_id, PAYMENT_SK),
            "UpdateExpression": "SET #status_key = :status_key",
            "ConditionExpression": "#status = :status AND #version = :expected",
            "ExpressionAttributeNames": {
                "#status_key": STATUS_KEY,
                "#status": STATUS_ATTRIBUTE,
                "#version": "version",
            },
            "ExpressionAttributeValues": {
                ":status_key": {"S": key},
                ":status": {"S": str(current_status)},
                ":expected": {"N": str(expected_version)},
            },
            "ReturnValues": "ALL_NEW",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        passing = frozenset({"ConditionalCheckFailedException", "TransactionConflictException"})
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                with self._translated(passing=passing):
                    answer = self.client.update_item(**request)
            except ClientError as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    old = exc.response.get("Item")
                    if not old:
                        raise PaymentNotFound(payment_id) from None
                    current = _payment(_deserialize(old))
                    self._remember(current)
                    return Requeued(False, None, current)
                # TransactionConflict: a transaction held the payment (wrote nothing here); try again
                if attempt == CONFLICT_RETRIES:
                    raise StoreThrottled(
                        f"payment {payment_id} was held by other transactions {attempt + 1} times"
                    ) from exc
                time.sleep(random.uniform(0, CONFLICT_BACKOFF_S * 2**attempt))
                continue
            payment = _payment(_deserialize(answer["Attributes"]))
            self._remember(payment)
            return Requeued(True, key, payment)
        raise AssertionError("unreachable")

    def by_status(
        self,
        status: Status | str,
        *,
        after_key: str | None = None,
        until_ms: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` items of the ``by_status`` index in ``status``, in ``status_key`` order: those
        whose key is after ``after_key`` (exclusive) and whose key's time is at most ``until_ms``. Each as
        the index projects it: ``payment_id``, ``version``, ``status``, ``status_key`` (and ``pk``, ``sk``).

        What a polling source reads (leanops' dynamodb source does the same Query). An index is eventually
        consistent: an item may show a payment as it was a moment ago, or not show a write yet; read the
        payment (:meth:`get`) before acting on it.
        """
        if limit < 1:
            raise InvalidRequest(f"limit must be >= 1, not {limit}")
        names = {"#status": STATUS_ATTRIBUTE}
        values: dict[str, Any] = {":status": {"S": str(status)}}
        condition = "#status = :status"
        # No key equals a bare 13-digit time (every key goes on with #<id>): f"{until + 1:013d}" is an
        # exclusive bound even in BETWEEN, which includes its ends.
        high = f"{until_ms + 1:013d}" if until_ms is not None else None
        if after_key is not None and high is not None:
            if after_key >= high:
                return []
            condition += " AND #key BETWEEN :after AND :high"
            values[":after"], values[":high"] = {"S": after_key}, {"S": high}
        elif after_key is not None:
            condition += " AND #key > :after"
            values[":after"] = {"S": after_key}
        elif high is not None:
            condition += " AND #key < :high"
            values[":high"] = {"S": high}
        if after_key is not None or high is not None:
            names["#key"] = STATUS_KEY
        query: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            with self._translated():
                page = self.client.query(**query, Limit=limit - len(found) + 1)
            items = (_deserialize(item) for item in page.get("Items", []))
            found += [item for item in items if item[STATUS_KEY] != after_key]
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found[:limit]

    # --- reads --------------------------------------------------------------------------------------------

    def get(self, payment_id: str) -> Payment | None:
        """The payment as it is now (a strongly consistent read), or None."""
        _check_id("payment_id", payment_id)
        item = self._get(_key(PAYMENT_PREFIX + payment_id, PAYMENT_SK))
        if item is None:
            return None
        payment = _payment(item)
        self._remember(payment)
        return payment

    def history(self, payment_id: str) -> list[Change]:
        """The payment's change items, by version (1 = its create); [] for an unknown payment.

        The payment item lists their keys, so this is two strongly consistent requests whatever the shard
        holds: the payment, then its change items (a batch).
        """
        _check_id("payment_id", payment_id)
        item = self._get(_key(PAYMENT_PREFIX + payment_id, PAYMENT_SK))
        if item is None:
            return []
        partition = CHANGES_PREFIX + str(shard_of(payment_id, self.shards))
        keys = [_key(partition, sk) for sk in item.get("change_sks", [])]
        changes = [_change_from_item(found) for found in self._batch_get(keys)]
        if len(changes) != len(keys):
            raise IntegrityError(f"payment {payment_id} lists {len(keys)} changes, {len(changes)} exist")
        return sorted(changes, key=lambda c: c.version)

    def changes(self, shard: int, after_sk: str | None = None, limit: int = 100) -> list[Change]:
        """Up to ``limit`` change items of ``shard`` after ``after_sk``, in sort key order (time, payment,
        version): the feed. Pass the last one's ``sk`` as ``after_sk`` for the next page.

        The sort key starts with the writer's clock: a transaction that read its clock before another one
        can commit after it, so a reader that keeps a position must stay behind the present by more than
        the writers' clock skew plus a transaction's duration (README.md, "The feed").
        """
        if not 0 <= shard < self.shards:
            raise InvalidRequest(f"shard must be in 0..{self.shards - 1}, not {shard}")
        if limit < 1:
            raise InvalidRequest(f"limit must be >= 1, not {limit}")
        names = {"#pk": PARTITION_KEY}
        values: dict[str, Any] = {":pk": {"S": f"{CHANGES_PREFIX}{shard}"}}
        condition = "#pk = :pk"
        if after_sk is not None:
            condition += " AND #sk > :after"
            names["#sk"] = SORT_KEY
            values[":after"] = {"S": after_sk}
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }
        found: list[Change] = []
        while len(found) < limit:
            with self._translated():
                page = self.client.query(**query, Limit=limit - len(found))
            found += [_change_from_item(_deserialize(item)) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found

    # --- items --------------------------------------------------------------------------------------------

    def _change(self, payment: Payment, from_status: Status | None, request_id: str) -> Change:
        return Change(
            shard=shard_of(payment.payment_id, self.shards),
            sk=change_sort_key(payment.updated_at_ms, payment.payment_id, payment.version),
            payment_id=payment.payment_id,
            from_status=from_status,
            to_status=payment.status,
            version=payment.version,
            at_ms=payment.updated_at_ms,
            error_code=payment.error_code,
            fee_type=payment.fee_type,
            amount_cents=payment.amount_cents,
            currency=payment.currency,
            method=payment.method,
            request_id=request_id,
        )

    def _change_item(self, change: Change) -> dict[str, Any]:
        fields = asdict(change)
        del fields["shard"], fields["sk"]
        fields["from_status"] = str(change.from_status) if change.from_status is not None else None
        fields["to_status"], fields["method"] = str(change.to_status), str(change.method)
        fields["at"] = change.at
        return {**_key_values(f"{CHANGES_PREFIX}{change.shard}", change.sk), **fields}

    def _request_item(
        self, request_id: str, request: Mapping[str, Any], payment: Payment | None
    ) -> dict[str, Any]:
        result = {"outcome": str(Outcome.APPLIED), "payment": payment.to_json() if payment else None}
        return {
            **_key_values(REQUEST_PREFIX + request_id, REQUEST_SK),
            "payment_id": request["payment_id"],
            "request": json.dumps(request, sort_keys=True),
            "result": json.dumps(result, sort_keys=True),
        }

    def _put_new(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """A put that only creates (``attribute_not_exists(pk)``), returning the item found if it fails."""
        return {
            "Put": {
                "TableName": self.table,
                "Item": {name: _serializer.serialize(value) for name, value in item.items()},
                "ConditionExpression": _ABSENT,
                "ExpressionAttributeNames": _ABSENT_NAMES,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _first_result(
        self, request_id: str, request: Mapping[str, Any], item: Mapping[str, Any] | None
    ) -> Result:
        """The result the first request with ``request_id`` recorded; its parameters must be ``request``'s."""
        if item is None:  # not returned with the cancellation: read it
            item = self._get(_key(REQUEST_PREFIX + request_id, REQUEST_SK))
            if item is None:
                raise IntegrityError(f"request {request_id} was refused as a duplicate, yet is not recorded")
        first = json.loads(item["request"])
        if first != json.loads(json.dumps(request, sort_keys=True)):
            raise RequestIdReused(request_id, first, request)
        result = json.loads(item["result"])
        payment = Payment.from_json(result["payment"]) if result.get("payment") else None
        return Result(Outcome.DUPLICATE_REQUEST, request_id, payment, "the request id was applied before")

    def _remember(self, payment: Payment) -> None:
        with self._seen_lock:
            seen = self._seen.get(payment.payment_id)
            if seen is None or seen.version < payment.version:
                if len(self._seen) >= MAX_SEEN:
                    self._seen.clear()
                self._seen[payment.payment_id] = payment

    # --- requests, errors translated once -----------------------------------------------------------------

    def _transact(self, items: list[dict[str, Any]]) -> list[tuple[bool, dict[str, Any] | None]] | None:
        """One ``TransactWriteItems``. None if it was written; else, per item in the request's order, whether
        its condition failed and the item as it was (``ALL_OLD``)."""
        _, failed = self._cancellable(lambda: self.client.transact_write_items(TransactItems=items))
        return failed or None

    def _cancellable(
        self, call: Callable[[], dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, list[tuple[bool, dict[str, Any] | None]]]:
        """``call`` (a transaction): ``(answer, [])``, or ``(None, reasons)`` when conditions failed.

        A cancellation by ``TransactionConflict`` alone (another transaction held one of the items) wrote
        nothing: retried here with jittered backoff, then StoreThrottled. Throttling and transient errors are
        the SDK's standard retries, then StoreThrottled; any other cancellation is StoreUnavailable.
        """
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                with self._translated(cancellation_ok=True):
                    return call(), []
            except ClientError as exc:
                reasons = exc.response.get("CancellationReasons") or []
                codes = [str(reason.get("Code")) for reason in reasons]
                if "ConditionalCheckFailed" in codes:
                    return None, [
                        (
                            code == "ConditionalCheckFailed",
                            _deserialize(reason["Item"]) if reason.get("Item") else None,
                        )
                        for code, reason in zip(codes, reasons, strict=True)
                    ]
                if "TransactionConflict" not in codes:
                    raise StoreUnavailable(f"DynamoDB cancelled the transaction ({codes}): {exc}") from exc
                if attempt == CONFLICT_RETRIES:
                    raise StoreThrottled(
                        f"DynamoDB cancelled the transaction {attempt + 1} times: other transactions held "
                        "its items; send the same request id again later"
                    ) from exc
                time.sleep(random.uniform(0, CONFLICT_BACKOFF_S * 2**attempt))
        raise AssertionError("unreachable")

    def _get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        with self._translated():
            item = self.client.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        return _deserialize(item) if item else None

    def _read_payment_and_request(
        self, payment_id: str, request_id: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The payment's item and the request's, read together (``TransactGetItems``): a transaction writes
        both or neither, so a request applied meanwhile is seen with its payment, never half of it."""
        keys = [_key(PAYMENT_PREFIX + payment_id, PAYMENT_SK), _key(REQUEST_PREFIX + request_id, REQUEST_SK)]
        gets = [{"Get": {"TableName": self.table, "Key": key}} for key in keys]
        answer, _ = self._cancellable(lambda: self.client.transact_get_items(TransactItems=gets))
        if answer is None:  # a read has no condition to fail
            raise StoreUnavailable(f"DynamoDB refused to read payment {payment_id}")
        payment, request = (
            _deserialize(response["Item"]) if response.get("Item") else None
            for response in answer["Responses"]
        )
        return payment, request

    def _batch_get(self, keys: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        pending, delay = keys, CONFLICT_BACKOFF_S
        while pending:
            request = {self.table: {"Keys": pending[:100], "ConsistentRead": True}}
            with self._translated():
                answer = self.client.batch_get_item(RequestItems=request)
            yield from (_deserialize(item) for item in answer.get("Responses", {}).get(self.table, []))
            unprocessed = answer.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
            pending = unprocessed + pending[100:]
            if unprocessed:
                time.sleep(random.uniform(0, delay))
                delay *= 2

    @contextmanager
    def _translated(
        self, *, cancellation_ok: bool = False, passing: frozenset[str] = frozenset()
    ) -> Iterator[None]:
        """AWS errors to leanops' StoreThrottled (retry later) or StoreUnavailable; a transaction's
        cancellation passes through when ``cancellation_ok`` (:meth:`_transact` reads it), and so do the
        error codes in ``passing`` (the caller reads them)."""
        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            if (code == "TransactionCanceledException" and cancellation_ok) or code in passing:
                raise
            if code in _THROTTLING:
                raise StoreThrottled(f"DynamoDB is busy ({code}); retry with backoff") from exc
            if code == "ResourceNotFoundException":
                raise StoreUnavailable(
                    f"the payments table {self.table} does not exist: create it (create_table)"
                ) from exc
            raise StoreUnavailable(f"DynamoDB request failed: {code}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"DynamoDB could not be reached: {exc}") from exc


_CREATE_FIELDS = ("payment_id", "amount_cents", "currency", "fee_type", "method", "tracking_id")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _check_id(name: str, value: Any) -> None:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidRequest(f"{name} must be 1 to 128 of [A-Za-z0-9._:-], not {value!r}")


def _key_values(pk: str, sk: str) -> dict[str, str]:
    return {PARTITION_KEY: pk, SORT_KEY: sk}


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {PARTITION_KEY: {"S": pk}, SORT_KEY: {"S": sk}}


def _payment_key(payment_id: str) -> dict[str, str]:
    return _key_values(PAYMENT_PREFIX + payment_id, PAYMENT_SK)


def _tracking_key(tracking_id: str) -> dict[str, str]:
    return _key_values(TRACKING_PREFIX + tracking_id, TRACKING_SK)


def _deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _plain(_deserializer.deserialize(value)) for name, value in item.items()}


def _plain(value: Any) -> Any:
    """Decimals back to ints (every number the store writes is an int)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "to_integral_value"):
        return int(value)
    return value


def _payment(item: Mapping[str, Any]) -> Payment:
    return Payment.from_json(item)


def _change_from_item(item: Mapping[str, Any]) -> Change:
    return Change(
        shard=int(str(item[PARTITION_KEY])[len(CHANGES_PREFIX) :]),
        sk=str(item[SORT_KEY]),
        payment_id=str(item["payment_id"]),
        from_status=Status(item["from_status"]) if item.get("from_status") is not None else None,
        to_status=Status(item["to_status"]),
        version=int(item["version"]),
        at_ms=int(item["at_ms"]),
        error_code=item.get("error_code"),
        fee_type=str(item["fee_type"]),
        amount_cents=int(item["amount_cents"]),
        currency=str(item["currency"]),
        method=Method(item["method"]),
        request_id=str(item["request_id"]),
    )
