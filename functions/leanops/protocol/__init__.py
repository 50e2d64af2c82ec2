"""The lock / checkpoint / run-key protocol. Only :mod:`leanops.protocol.dynamodb` speaks DynamoDB."""

from leanops.protocol.model import (
    BEGINNING,
    Acquired,
    AcquireResult,
    Advance,
    Checkpoint,
    Committed,
    Held,
    Lease,
    LockState,
    LockStatus,
    Release,
    RunClaim,
    TopicRef,
    TopicStatus,
)
from leanops.protocol.service import Protocol, wall_clock_ms

__all__ = [
    "BEGINNING",
    "AcquireResult",
    "Acquired",
    "Advance",
    "Checkpoint",
    "Committed",
    "Held",
    "Lease",
    "LockState",
    "LockStatus",
    "Protocol",
    "Release",
    "RunClaim",
    "TopicRef",
    "TopicStatus",
    "wall_clock_ms",
]
