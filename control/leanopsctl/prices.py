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
    "s3": {
        # S3 Standard request prices by kind (the kinds leanopsctl.cost counts): LIST and PUT are in the
        # "PUT, COPY, POST, LIST" class ($0.005 per 1,000), GET in "GET, SELECT and all other" ($0.0004 per
        # 1,000); DELETE is free. Storage and data transfer are left out (not per run; in-region is free).
        "usd_per_million_requests": {"LIST": 5.0, "PUT": 5.0, "GET": 0.40, "DELETE": 0.0},
    },
    "scheduler": {
        # EventBridge Scheduler: per scheduled invocation, after 14 million free invocations a month (the free
        # tier is left out, as every free tier here is).
        "usd_per_million_invocations": 1.0,
        "free_invocations_per_month": 14_000_000,
    },
    "cloudwatch_logs": {
        # Ingestion, Standard log class (Lambda's log groups) and vended logs' first tier (the state machine's
        # /aws/vendedlogs/ group, first 10 TB a month) alike. A GB here is 2^30 bytes.
        "usd_per_gb_ingested": 0.50,
        "bytes_per_gb": 1024**3,
        # What one log event adds to its message: PutLogEvents counts each event as its UTF-8 message plus
        # 26 bytes. The model bills it (an upper bound: AWS does not say whether ingestion counts it).
        "event_overhead_bytes": 26,
    },
    "xray": {
        # Per trace recorded (the first 100,000 a month are free: left out). Retrieval and scans are billed
        # per query, not per run: left out.
        "usd_per_million_traces_recorded": 5.0,
        # X-Ray's default sampling rule, which applies unless the account defines others: the first request
        # each second (the reservoir), then 5% of the rest. One trace per execution: Step Functions decides
        # and the Lambda tasks follow its decision.
        "default_reservoir_per_second": 1,
        "default_fixed_rate": 0.05,
    },
    "cloudwatch_metrics": {
        # Custom metrics (EMF metrics are custom metrics): per metric (name x dimension values) per month,
        # prorated by the hour (hours in which the metric gets data). First tier: the first 10,000 metrics;
        # the next 240,000 cost $0.10, the next 750,000 $0.05, beyond $0.02. The model warns past the first.
        "usd_per_metric_month": 0.30,
        "first_tier_metrics": 10_000,
        # Standard-resolution alarms: per metric an alarm evaluates (a metric math alarm over 3 metrics
        # counts 3), per month.
        "usd_per_alarm_metric_month": 0.10,
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
        "aws.amazon.com/s3/pricing (us-east-1, S3 Standard): PUT, COPY, POST, LIST $0.005 per 1,000 "
        "requests; GET, SELECT and all other $0.0004 per 1,000; DELETE free.",
        "aws.amazon.com/eventbridge/pricing (us-east-1, Scheduler): $1.00 per million invocations after 14 "
        "million free a month.",
        "aws.amazon.com/cloudwatch/pricing (us-east-1): Logs ingestion $0.50 per GB (Standard class; vended "
        "logs' first 10 TB the same); custom metrics $0.30 per metric-month for the first 10,000, prorated "
        "by the hour; standard-resolution alarms $0.10 per alarm metric a month. PutLogEvents API reference: "
        "26 bytes per log event.",
        "aws.amazon.com/xray/pricing (us-east-1): $5.00 per million traces recorded (100,000 free a month); "
        "X-Ray developer guide, sampling: the default rule records the first request each second and 5% of "
        "any additional requests.",
        "The S3, Scheduler, CloudWatch and X-Ray prices above were added on 2026-11-29 from those pages as "
        "last known, not re-read online that day: check them against the pages before relying on them.",
    ],
    # What the model leaves out; each is small for this workload or not per run.
    "not_included": [
        "free tiers (4,000 Standard transitions, 1 million Lambda requests and 400,000 GB-seconds, 14 "
        "million Scheduler invocations and 100,000 X-Ray traces a month)",
        "CloudWatch Logs storage (compressed, kept LogRetentionInDays) and queries, X-Ray retrieval and "
        "scans, the dashboard ($3 a month), the SNS alarm topic",
        "Lambda cold-start (INIT) duration and its log lines, ephemeral storage, data transfer",
        "DynamoDB storage, point-in-time recovery, streams and TTL deletes",
        "S3 storage of the source and the sink, and the requests of the data's producers and consumers",
        "what runs other than steady ones add: retries, failures (the safety net, ReleaseAfterFailure), "
        "metrics only they emit (UpToDate, LockContention, LateObjects, FailedRuns...)",
    ],
}
