"""Lease renewal while a task works (design §3, I8): short leases recover from crashes fastest, and a
heartbeat keeps a live task's lease from lapsing. It is a daemon thread, so it dies with the process:
a crashed task stops renewing and its topic is free one lease later."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from leanops.errors import LeanopsError, LockLost
from leanops.protocol import Lease, Protocol


class Heartbeat:
    """Renews ``lease`` every ``lease_seconds / 3`` until the block ends; :meth:`check` raises once lost."""

    def __init__(
        self,
        protocol: Protocol,
        lease: Lease,
        lease_seconds: int,
        logger: Any = None,
        *,
        interval_seconds: float | None = None,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self.protocol, self.lease, self.lease_seconds, self.logger = protocol, lease, lease_seconds, logger
        self.interval_seconds = interval_seconds if interval_seconds is not None else lease_seconds / 3
        self.lost: LockLost | None = None
        self.lost_event = threading.Event()
        self.renewals = 0
        self._stop = threading.Event()
        #: Sleeps between beats; True ends the beating (the block ended). Tests pass a clock-driven one.
        self._wait = wait or self._stop.wait
        self._thread = threading.Thread(target=self._beat, name="leanops-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        """Raise :class:`LockLost` if a renewal found the lease taken over (call before side effects)."""
        if self.lost is not None:
            raise self.lost

    def _beat(self) -> None:
        while not self._wait(self.interval_seconds):
            try:
                self.lease = self.protocol.renew(self.lease, self.lease_seconds)
                self.renewals += 1
            except LockLost as lost:
                self.lost = lost
                self.lost_event.set()
                return
            except LeanopsError as exc:  # transient: the next beat tries again, the lease still runs
                if self.logger is not None:
                    self.logger.warning(
                        "lease renewal failed; retrying at the next beat", extra={"error": str(exc)}
                    )
