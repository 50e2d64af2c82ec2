"""The one exception hierarchy of leanops.

A Python Lambda reports its exception's *class name* as the Step Functions error type, which the state
machines' Retry and Catch match. These names are therefore part of the workflow contract: keep them
stable, and reference them from ``workflows/`` by import, never by retyped strings.
"""

from __future__ import annotations

from typing import Any


class LeanopsError(Exception):
    """Base class of every error leanops raises on purpose."""


class InvalidInput(LeanopsError, ValueError):
    """A caller passed a value the protocol refuses (bad topic name, non-positive lease, empty owner)."""


class ConfigError(LeanopsError):
    """The topics file or a setting is missing or invalid."""


class LockLost(LeanopsError):
    """The caller no longer holds the topic's lock: its lease was taken over (fenced out) or released."""

    def __init__(self, message: str, *, holder: str | None = None, fence: int | None = None) -> None:
        super().__init__(message)
        self.holder = holder
        self.fence = fence


class CheckpointConflict(LeanopsError):
    """The checkpoint is not at the position the commit expected (a stale or concurrent writer)."""

    def __init__(self, message: str, *, current_position: str | None = None) -> None:
        super().__init__(message)
        self.current_position = current_position


class StoreThrottled(LeanopsError):
    """DynamoDB throttled the request after the SDK's own retries: transient, retry with backoff."""


class StoreUnavailable(LeanopsError):
    """DynamoDB could not be reached or answered with an unexpected error."""


class SinkClaimed(ConfigError):
    """The sink belongs to another state or topic (its marker says so): a run refuses it before any write."""


class SourceError(LeanopsError):
    """A source object could not be read or holds a line that is not a JSON object (names key and line)."""


class UnreadableObject(SourceError):
    """An object that cannot be read or decompressed (not a regular file, corrupt gzip); names the object."""


class SinkError(LeanopsError):
    """A sink object could not be written (no access, or records Parquet cannot hold as one table)."""


class MalformedInput(LeanopsError):
    """A topic with ``on_malformed: fail`` met a malformed line or a record its processor rejected."""


class ProcessorError(LeanopsError):
    """The user's processor raised; the cause names the batch and the original error."""


class LocalRuntimeError(LeanopsError):
    """The local runtime could not run: Java or DynamoDB Local is missing, or the database did not start."""

    def __init__(self, message: str, *, log_tail: str | None = None) -> None:
        super().__init__(message)
        self.log_tail = log_tail


def describe(exc: BaseException) -> dict[str, Any]:
    """Error type and cause as Step Functions reports them (used by the local runtime and the CLI)."""
    return {"error": type(exc).__name__, "cause": str(exc)}
