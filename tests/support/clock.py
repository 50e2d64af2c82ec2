"""Controllable clocks: tests move time instead of sleeping."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    """Epoch milliseconds that only move when told to."""

    now_ms: int = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


@dataclass
class SkewedClock:
    """The shared ``base`` clock as seen by a caller whose clock is ``offset_ms`` off."""

    base: FakeClock
    offset_ms: int = 0

    def __call__(self) -> int:
        return self.base.now_ms + self.offset_ms
