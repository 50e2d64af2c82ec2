"""The payments workload on leanops (issue 14): a payment store whose statuses only move forward along a
declared graph, paid once, with unique tracking ids, idempotent requests and a sharded change feed.

README.md in this folder: the item layout and why the guarantees hold.
"""

from examples.payments.graph import (
    INITIAL,
    PAID,
    PAYMENT_GRAPH,
    TERMINAL,
    TRANSITIONS,
    Graph,
    GraphError,
    Status,
)
from examples.payments.store import (
    DEFAULT_SHARDS,
    Change,
    IntegrityError,
    InvalidRequest,
    Method,
    Outcome,
    Payment,
    PaymentError,
    PaymentExists,
    PaymentNotFound,
    PaymentStore,
    RequestIdReused,
    Result,
    TrackingIdTaken,
    create_table,
    make_client,
    shard_of,
)

__all__ = [
    "DEFAULT_SHARDS",
    "INITIAL",
    "PAID",
    "PAYMENT_GRAPH",
    "TERMINAL",
    "TRANSITIONS",
    "Change",
    "Graph",
    "GraphError",
    "IntegrityError",
    "InvalidRequest",
    "Method",
    "Outcome",
    "Payment",
    "PaymentError",
    "PaymentExists",
    "PaymentNotFound",
    "PaymentStore",
    "RequestIdReused",
    "Result",
    "Status",
    "TrackingIdTaken",
    "create_table",
    "make_client",
    "shard_of",
]
