"""One batch: source -> processor -> sink, within the Lambda's time budget.

Reading stops before the deadline (leaving ``reserve_ms`` for the processor, the sink write and the
commit), so a batch is cut short rather than lost: what was read is written and committed, and the next
batch resumes exactly after it.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanops.config import TopicConfig
from leanops.data.files import FilesSink, FilesSource
from leanops.errors import ConfigError, LeanopsError

Processor = Callable[[list[dict[str, Any]], "ProcessorContext"], list[dict[str, Any]]]


@dataclass(frozen=True)
class ProcessorContext:
    """What a processor may know about its batch."""

    topic: str
    batch_id: str
    fence: int
    logger: logging.Logger | Any


@dataclass(frozen=True)
class BatchResult:
    """References to what a batch did (never its data): positions, counts, the sink object."""

    start: str | None
    end: str | None
    records: int
    written: int
    more: bool
    object: str | None
    seconds: float
    last_ingested_ts: int | float | None = None
    last_snapshot_id: int | str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "records": self.records,
            "written": self.written,
            "more": self.more,
            "object": self.object,
            "seconds": round(self.seconds, 3),
            "last_ingested_ts": self.last_ingested_ts,
            "last_snapshot_id": self.last_snapshot_id,
        }


def passthrough(records: list[dict[str, Any]], ctx: ProcessorContext) -> list[dict[str, Any]]:
    """The default processor: writes the input records as they are."""
    return records


def load_processor(spec: str | None, folder: Path) -> Processor:
    """Import ``package.module:function``, with the topics file's ``folder`` on ``sys.path``."""
    if spec is None:
        return passthrough
    module_name, _, function_name = spec.partition(":")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"processor {spec!r}: cannot import {module_name!r} ({exc})") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"processor {spec!r}: {module_name} has no function {function_name!r}")
    return function


def run_batch(
    topic: TopicConfig,
    after: str | None,
    processor: Processor,
    *,
    fence: int,
    logger: Any,
    should_stop: Callable[[], bool] = lambda: False,
    before_write: Callable[[], None] = lambda: None,
) -> BatchResult:
    """Read up to ``batch_size`` records after ``after``, process them, write one sink object.

    ``before_write`` runs just before the sink write (the process task checks there that its lease is
    still held, so a fenced-out run stops before writing).
    """
    began = time.monotonic()
    read = FilesSource(topic.source.uri).read(after, topic.batch_size, should_stop)
    if read.start is None:  # nothing to process (maybe blank lines consumed)
        return BatchResult(None, read.end, 0, 0, read.more, None, time.monotonic() - began)
    context = ProcessorContext(topic=topic.name, batch_id=read.start, fence=fence, logger=logger)
    try:
        output = processor(read.records, context)
    except LeanopsError:
        raise
    except Exception as exc:
        _name_batch(exc, read.start)
        raise
    if not isinstance(output, list):
        raise ConfigError(
            f"processor of {topic.name} returned {type(output).__name__}; expected a list of dicts"
        )
    before_write()
    key = FilesSink(topic.sink.uri, topic.name).write(read.start, output)
    return BatchResult(
        read.start, read.end, len(read.records), len(output), read.more, key, time.monotonic() - began
    )


def _name_batch(exc: BaseException, batch_id: str) -> None:
    """Put the batch id in the error's message, keeping its class (the Step Functions error name)."""
    if exc.args and isinstance(exc.args[0], str):
        exc.args = (f"batch {batch_id}: {exc.args[0]}", *exc.args[1:])
    else:
        exc.args = (f"batch {batch_id}: {exc!r}",)
