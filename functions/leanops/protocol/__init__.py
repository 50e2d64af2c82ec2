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
    OutputRecord,
    Release,
    RunClaim,
    Settlement,
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
    "OutputRecord",
    "Protocol",
    "Release",
    "RunClaim",
    "Settlement",
    "TopicRef",
    "TopicStatus",
    "wall_clock_ms",
]
