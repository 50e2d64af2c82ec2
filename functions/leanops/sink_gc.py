"""Every delete in a sink, and the one rule that allows it (design I9; docs/decisions/0006).

An object may be removed only when a strongly consistent read of the state shows either

- that its batch is **settled**: the checkpoint has moved past the batch's start, and the committed output
  names another object for that start (the output record of a commit never changes, and a start position
  is committed once until an operator rewinds over it: a listing read before the state sees no attempt
  written after such a rewind), or
- that it is the **current attempt's own object and its commit did not land**, and never can: the lock is no
  longer held under the attempt's owner and fence (read first), and the checkpoint has not reached, or the
  output record of the batch's ``seq`` does not name, this attempt, or
- that it is named by a **superseded** output record only: an operator rewound over its batch, which is no
  longer committed output and never again can be (no commit names another attempt's object, and a record is
  never un-superseded). Docs: docs/decisions/0007-operator-overrides.md.

Never on a local belief: a cached heartbeat flag, the type of an exception, a fence compared with another.
Every attempt writes names of its own (:func:`leanops.data.files.new_attempt`), so no write replaces
another attempt's object either. Three callers:

- :func:`discard_attempt`: the advance task, when its commit was refused;
- :func:`collect_batch`: after a commit, the other attempts of the batch just committed (the first batch
  of each execution, where a crashed run's attempts lie: the next run starts where the crashed one did);
- :func:`collect_topic`: ``leanops gc TOPIC``, for what is left (a paused writer killed after a takeover).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from leanops.config import TopicConfig
from leanops.data import open_sink
from leanops.data.files import DAY_FOLDER, FilesSink
from leanops.protocol import Checkpoint, Lease, OutputKind, Protocol, Settlement, TopicRef

#: Why ``leanops gc`` keeps an attempt at a start no live record settles: committed output whose record
#: expired (decision 0014) looks the same, so it is never deleted on that ground.
UNKNOWN_STEM = "no commit the table holds starts at this stem (one older than OutputRecordDays may)"
#: Output record fields naming a batch's objects.
NAMED_FIELDS = ("object", "quarantine")


@dataclass
class Collected:
    """What a collection did: the names it deleted, and the ones it kept with the reason."""

    deleted: list[str] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"deleted": self.deleted, "kept": self.kept}


def claim_sink(protocol: Protocol, config: TopicConfig, *, topic: TopicRef | None = None) -> FilesSink:
    """The sink, once :meth:`FilesSink.claim` has bound it to this state and ``topic`` (the state that
    writes it: a backfill's; default the topic's own). Nothing may be written or deleted in another
    state's, topic's or backfill's sink."""
    topic = topic or TopicRef(config.name)
    sink = open_sink(config.sink, config.name)
    sink.claim(**_claimant(protocol, topic))
    return sink


def check_sink(protocol: Protocol, config: TopicConfig, *, topic: TopicRef) -> None:
    """Refuse, writing nothing, a sink that :func:`claim_sink` would refuse (:class:`SinkClaimed`)."""
    open_sink(config.sink, config.name).check_claim(**_claimant(protocol, topic))


def _claimant(protocol: Protocol, topic: TopicRef) -> dict[str, Any]:
    """Who claims: this state, its table, the holder, and whether the holder has committed a batch (asked
    only of a sink without a marker that holds the topic's objects)."""
    return {
        "state": protocol.state_identity(),
        "table": protocol.store.table_name,
        "holder": str(topic),
        "committed": lambda: protocol.has_committed_batch(topic),
    }


def discard_attempt(
    protocol: Protocol,
    lease: Lease,
    expected: Checkpoint,
    attempt: str,
    names: list[str | None],
    sink: FilesSink,
) -> Settlement:
    """Delete the objects of an attempt whose commit was refused, if the state shows it did not land (and
    never can). Returns what the state showed; a landed attempt's objects are committed output: kept."""
    settled = protocol.settlement(lease, expected, attempt)
    if settled is Settlement.NOT_LANDED:
        sink.delete(names)
    return settled


def collect_batch(
    protocol: Protocol, topic: TopicRef, seq: int, sink: FilesSink, committed: dict[str, Any] | None = None
) -> Collected:
    """After commit ``seq``: delete the other attempts at the same batch start. ``committed`` is the output
    of the commit, when the caller's own transaction just landed it; else its output record is read
    (strongly).

    The stem is listed first, then (only if there is something to delete) the checkpoint is read: if it is
    still at ``seq``, no operator moved it back to this start since, so no listed attempt can ever be
    committed (this start was committed once by ``seq``; earlier commits from it were superseded by the
    rewind that led back here, and no live record but ``seq``'s starts here). Otherwise ``leanops gc``
    decides later.
    """
    done = Collected()
    if committed is None:
        record = protocol.store.read_output(topic, seq)
        committed = record.data if record is not None else None
    if committed is None or not committed.get("stem"):
        return done
    named = {committed.get(name) for name in NAMED_FIELDS}
    # A day sink's attempts at this start lie in the batch's day folder (the same records start the batch:
    # the commit names it, written to or not); one elsewhere (its source changed under it) is left to
    # ``leanops gc``.
    head, slash, _ = str(committed.get("object") or "").rpartition("/")
    folder = str(committed.get("folder") or "") or (
        head + slash if DAY_FOLDER.fullmatch(head + slash) else ""
    )
    others = [name for name, _ in sink.attempts(committed["stem"], folder) if name not in named]
    if others and protocol.read_checkpoint(topic).seq == seq:
        sink.delete(others)
        done.deleted.extend(others)
    return done


def collect_topic(
    protocol: Protocol,
    topic: TopicRef,
    sink: FilesSink,
    stem_of: Callable[[str | None], str],
    *,
    dry_run: bool = False,
) -> Collected:
    """Delete every attempt in the sink that no live commit names, where that is safe; keep the rest, saying
    why.

    The order of the reads is the argument: the sink is listed first, then the lock, then the checkpoint and
    the committed output. An object only superseded records name is deleted (superseded is final). An
    attempt at the current checkpoint's start is deleted only if the lock was free after the listing: every
    listed attempt was then written under a lock that has since been released, so it can no longer commit;
    while the lock is held it is kept, even where an earlier commit (since rewound over) started. An attempt
    at another start that some commit settled is deleted (settled is final: a listed attempt there could be
    committed only from a checkpoint that is no longer current). Anything else is kept: no commit of this
    topic starts there.
    """
    listed = list(sink.attempts())
    lock = protocol.store.read_lock(topic)
    checkpoint = protocol.read_checkpoint(topic)
    live: set[str] = set()
    superseded: set[str] = set()
    settled: set[str] = set()
    for record in protocol.outputs(topic):
        if record.kind is not OutputKind.BATCH:
            continue  # an override names no object and starts no batch
        names = {str(record.data[name]) for name in NAMED_FIELDS if record.data.get(name)}
        (superseded if record.superseded else live).update(names)
        settled.add(str(record.data.get("stem") or sink.fit_stem(stem_of(record.data.get("after")))))
    current = sink.fit_stem(stem_of(checkpoint.position))
    lock_free = lock is None or lock.owner is None
    done = Collected()
    for name, stem in listed:
        if name in live:
            continue
        if name in superseded or (stem == current and lock_free) or (stem != current and stem in settled):
            if not dry_run:
                sink.delete([name])
            done.deleted.append(name)
        elif stem == current:
            holder = lock.owner if lock else None
            done.kept.append({"object": name, "reason": f"in flight: the lock is held by {holder}"})
        else:
            done.kept.append({"object": name, "reason": UNKNOWN_STEM})
    return done
