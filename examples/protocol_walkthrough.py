"""A real walkthrough of the protocol against the local DynamoDB (``make demo`` until the workflow lands).

Two executions contend for one topic: one takes the lock and commits, stalls past its lease, is taken over
and then fenced out when it wakes up. Every step is a real conditional write on DynamoDB Local.
"""

from __future__ import annotations

import sys
import time
import uuid

from leanopsctl.local.dynamodb_local import local_client, local_up
from rich.console import Console
from rich.table import Table

from leanops.errors import LeanopsError, LockLost
from leanops.protocol import Acquired, Advance, Protocol, TopicRef
from leanops.protocol.dynamodb import DynamoDBStore, default_table_name
from leanops.protocol.table import create_table

console = Console(stderr=True)
LEASE_SECONDS = 1
SKEW_MARGIN_MS = 1_000


def main() -> int:
    endpoint = local_up()
    console.print(f"[bold]DynamoDB Local[/] at {endpoint} (state persists in .leanops/)")
    client = local_client(endpoint)
    table = default_table_name()
    create_table(client, table)
    protocol = Protocol(DynamoDBStore(table, client), skew_margin_ms=SKEW_MARGIN_MS)
    topic = TopicRef("walkthrough")
    run_a, run_b = f"exec-A-{uuid.uuid4().hex[:6]}", f"exec-B-{uuid.uuid4().hex[:6]}"

    a = protocol.acquire(topic, run_a, LEASE_SECONDS)
    assert isinstance(a, Acquired)
    console.print(f"1. {run_a} acquires: fence {a.lease.fence}, starts after {a.checkpoint.position!r}")
    b = protocol.acquire(topic, run_b, LEASE_SECONDS)
    holder = getattr(b, "holder", "?")
    console.print(f"2. {run_b} tries: {b.outcome} by {holder} (its run would end `skipped_locked`)")

    start = a.checkpoint.position or "day=2026-11-25/part-0000.jsonl#0"
    key, _, offset = start.rpartition("#")
    first = Advance(f"{key}#{int(offset) + 700}", last_ingested_ts=int(time.time()))
    done = protocol.commit(a.lease, a.checkpoint, first, lease_seconds=LEASE_SECONDS)
    console.print(f"3. {run_a} commits a batch: checkpoint {start!r} -> {done.checkpoint.position!r}")

    wait = LEASE_SECONDS + SKEW_MARGIN_MS / 1000 + 0.2
    console.print(f"4. {run_a} stalls; its lease ends, and after the skew margin ({wait:.1f} s) ...")
    time.sleep(wait)  # a demo of real time passing, not synchronisation
    b = protocol.acquire(topic, run_b, LEASE_SECONDS)
    assert isinstance(b, Acquired)
    console.print(f"5. {run_b} takes over: fence {b.lease.fence}, resumes at {b.checkpoint.position!r}")
    assert done.lease is not None
    try:
        protocol.commit(done.lease, done.checkpoint, Advance(f"{key}#{int(offset) + 1400}"), release=True)
    except LockLost as lost:
        console.print(f"6. {run_a} wakes up and tries to commit: [red]refused[/] ({lost})")
    final = protocol.commit(b.lease, b.checkpoint, Advance(f"{key}#{int(offset) + 1400}"), release=True)
    console.print(f"7. {run_b} commits and releases in one request: {final.checkpoint.position!r}")

    status = protocol.status(topic)
    view = Table(title=f"topic {topic}")
    for column in ("position", "seq", "lock", "last owner"):
        view.add_column(column)
    lock = status.lock
    view.add_row(
        str(status.checkpoint.position),
        str(status.checkpoint.seq),
        status.lock_status.value,
        str(lock.last_owner if lock else None),
    )
    console.print(view)
    console.print("`leanops local down` stops the database.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LeanopsError as exc:
        console.print(f"leanops: error: {exc}")
        sys.exit(1)
