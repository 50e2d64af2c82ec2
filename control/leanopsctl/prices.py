"""The price table of the cost model (``leanops cost``, ``bench/cost.py``): AWS list prices, in one place.

Every price the model uses is here, with the region and the date it was checked, and where it comes from.
Nothing else in leanops types a price in. When AWS changes a price, change it here (and ``AS_OF``), and run
``make bench`` again to refresh ``bench/results/cost.json``.

The table is plain data (numbers and strings, JSON-ready): :data:`PRICES` is what the model reads and
what ``--json`` reports under ``prices``.
"""

from __future__ import annotations

from typing import Any, Final

#: When the prices below were last checked against the sources they name.
AS_OF: Final = "2026-11-25"
#: The region the prices are for.
REGION: Final = "us-east-1"

PRICES: Final[dict[str, Any]] = {
    "as_of": AS_OF,
    "region": REGION,
    "currency": "USD",
    # AWS's own monthly convention (pricing calculator, pricing examples): 730 hours a month.
    "hours_per_month": 730,
    "step_functions": {
        # Standard: every state entered is a billed transition, retries included (design §7).
        "standard_usd_per_million_transitions": 25.0,
        # Express: requests + duration (design §7 gives the $1 per million requests; the duration terms
        # are from the AWS pricing page, see sources).
        "express_usd_per_million_requests": 1.0,
        # The first tier (the first 1,000 GB-hours a month); the next 4,000 cost $0.03000 per GB-hour and
        # beyond that $0.01642. The model uses the first tier and warns when a month goes past it.
        "express_usd_per_gb_hour": 0.06,
        "express_first_tier_gb_hours_per_month": 1000,
        # Duration is rounded up to the next 100 ms per execution.
        "express_duration_increment_ms": 100,
        # Memory used = 50 MB + definition size + execution data x number of Map/Parallel steps,
        # billed in 64 MB chunks.
        "express_base_memory_mb": 50,
        "express_memory_chunk_mb": 64,
    },
    "lambda": {
        "usd_per_million_requests": 0.20,
        # On-demand duration, the first tier (7.5 billion GB-seconds a month on arm64, 6 billion on x86_64).
        "usd_per_gb_second": {"arm64": 0.0000133334, "x86_64": 0.0000166667},
        "first_tier_gb_seconds_per_month": {"arm64": 7_500_000_000, "x86_64": 6_000_000_000},
        # Duration is rounded up to the next millisecond per invocation; GB = MemorySize MB / 1024.
        "duration_increment_ms": 1,
        "mb_per_gb": 1024,
    },
    "dynamodb": {
        # On-demand capacity mode (design §7).
        "usd_per_million_write_request_units": 0.625,
        "usd_per_million_read_request_units": 0.125,
    },
    "sources": [
        "design §7: Step Functions Standard $25 per million transitions, Express $1 per million "
        "requests, Lambda $0.20 per million requests, DynamoDB on-demand $0.625 / $0.125 per million "
        "write / read units.",
        "aws.amazon.com/step-functions/pricing (us-east-1): Express duration $0.06000 per GB-hour for the "
        "first 1,000 GB-hours a month, rounded up to 100 ms, memory billed in 64 MB chunks, memory used "
        "= 50 MB + definition size + execution data size x Map/Parallel steps. design §7 lacks these.",
        "aws.amazon.com/lambda/pricing (us-east-1): duration $0.0000133334 per GB-second on arm64 and "
        "$0.0000166667 on x86_64 (first tiers: 7.5 and 6 billion GB-seconds a month), 1 ms increments.",
    ],
    # What the model leaves out; each is small for this workload or not per run.
    "not_included": [
        "free tiers (4,000 Standard transitions, 1 million Lambda requests and 400,000 GB-seconds a month)",
        "EventBridge Scheduler invocations that start the runs ($1.00 per million after 14 million free "
        "a month)",
        "CloudWatch Logs ingestion and storage, X-Ray traces, CloudWatch metrics, alarms and dashboard",
        "Lambda cold-start (INIT) duration, ephemeral storage, data transfer",
        "DynamoDB storage, point-in-time recovery, streams and TTL deletes",
        "the sink's and the source's own storage and requests (S3)",
    ],
}
