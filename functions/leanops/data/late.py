"""Late objects: a ``files`` source reads keys in lexical order, so an object that lands with a key before
the checkpoint would never be read. Detect them, never skip them silently.

The look-back is bounded: the objects the last ``lookback_batches`` committed batches opened (recorded in
their output records) define a window of keys, from the oldest of them to the checkpoint's key. One
listing of that window (S3 ``StartAfter``) finds every key in it; a key no batch opened is late. Cost per
run: one Query of the output records and one listing of the window, never a full listing.
"""

from __future__ import annotations

from collections.abc import Iterable

from leanops.config import TopicConfig
from leanops.data.files import FilesSource
from leanops.data.positions import parse_position
from leanops.errors import LeanopsError
from leanops.protocol import OutputRecord, Protocol, TopicRef

#: At most this many keys are listed per check (a window is a few batches' objects; this is a guard).
MAX_KEYS_LISTED = 100_000


def find_late_objects(
    source: FilesSource, recent_outputs: Iterable[OutputRecord], checkpoint: str | None
) -> list[str]:
    """Keys inside the look-back window (see the module docstring) that no recent batch opened."""
    if checkpoint is None:
        return []
    opened: set[str] = set()
    for output in recent_outputs:
        opened.update(output.data.get("source_keys") or ())
    if not opened:
        return []
    checkpoint_key, _ = parse_position(checkpoint)
    late = []
    for listed, key in enumerate(source.store.keys(after=min(opened))):
        if key >= checkpoint_key or listed >= MAX_KEYS_LISTED:
            break
        if key not in opened:
            late.append(key)
    return late


class LookbackExpired(LeanopsError):
    """The topic has committed, but no output record is left to bound the look-back: they expired (the
    stack's OutputRecordDays) while the topic committed nothing. Late objects cannot be looked for."""


def late_objects(protocol: Protocol, topic: TopicRef, config: TopicConfig, position: str | None) -> list[str]:
    """Late objects of a ``files`` topic within its look-back; [] for other sources or with it off.

    Raises :class:`LookbackExpired` when the topic has a checkpoint but no output record left (never a
    silent "none")."""
    if config.source.type != "files" or not config.late_lookback_batches or position is None:
        return []
    recent = list(protocol.outputs(topic, newest_first=True, limit=config.late_lookback_batches))
    if not recent:
        raise LookbackExpired(
            f"no output record of {topic} is left to look back from (they expire after the stack's "
            "OutputRecordDays, and the topic committed nothing since): late objects cannot be looked for "
            "until it commits again; raise OutputRecordDays for topics that idle longer"
        )
    return find_late_objects(FilesSource(config.source.uri), recent, position)
