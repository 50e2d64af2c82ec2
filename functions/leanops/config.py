"""The topics file (design §4): loading, validation with one clear line per problem, resolved settings.

The file is found by, in order: an explicit path (``--config``), ``$LEANOPS_CONFIG``, ``./topics.yaml``.
Relative source/sink directories resolve against the topics file's folder, and processor modules are
imported with that folder on ``sys.path``, so a topics file and its code travel together.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from leanops import validation
from leanops.constants import DEFAULT_CONFIG, ENV_CONFIG
from leanops.errors import ConfigError, InvalidInput
from leanops.isolation import DEFAULT_ISOLATION
from leanops.isolation import validate_mode as validate_isolation
from leanops.schema import Schema, parse_declared

if TYPE_CHECKING:
    from leanops.protocol.model import Backfill

DEFAULT_BATCH_SIZE = 1000
DEFAULT_LEASE_SECONDS = 120
DEFAULT_MAX_BATCHES_PER_RUN = 100
MAX_BATCHES_PER_RUN_LIMIT = 2_000  # ~6 history events per batch: far under Step Functions' 25,000

DEFAULT_LATE_LOOKBACK_BATCHES = 20
#: The smallest lag objective (the lag alarm's period is 5 minutes; the template's default objective has the
#: same floor).
MIN_LAG_OBJECTIVE_SECONDS = 60
ON_MALFORMED = ("quarantine", "fail")
TOPIC_KEYS = {
    "source",
    "sink",
    "processor",
    "batch_size",
    "lease_seconds",
    "max_batches_per_run",
    "schedule",
    "timestamp_field",
    "on_malformed",
    "late_lookback_batches",
    "schema",
    "lag_objective_seconds",
    "isolation",
    "partitions",
}
#: leanops keeps state of its own under this topic name's partitions (the push lock): no topic's partitions.
RESERVED_TOPIC = "leanops"
#: A partitioned topic's source names its partition with this placeholder (docs/decisions/0015).
PARTITION_PLACEHOLDER = "{partition}"
#: At most this many partitions per topic (each is a lock, a checkpoint, a schedule and a sink folder).
MAX_PARTITIONS = 256
#: The folder of a partition's sink under the topic's (Hive style, so readers see a ``part`` column).
PARTITION_FOLDER = "part="
#: ``partition_by`` values of a ``files`` sink: ``day`` puts each batch under ``date=YYYY-MM-DD/``.
SINK_PARTITION_BY = ("day",)
#: Keys of each endpoint type, by role; the first listed are required.
SOURCE_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "files": ({"type", "uri"}, set()),
    "dynamodb": (
        {"type", "table", "partition_key", "partition_value", "sort_key"},
        {"index", "min_age_seconds"},
    ),
}
SINK_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "files": ({"type", "uri"}, {"format", "compression", "partition_by"})
}
SINK_FORMATS = {"jsonl": ("none", "gzip"), "parquet": ("snappy", "zstd", "gzip", "none")}
PROCESSOR_PATTERN = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*")
SCHEDULE_PATTERN = re.compile(r"(rate|cron|at)\(.+\)")
TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
S3_URI = re.compile(r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/(?P<prefix>.*))?")


@dataclass(frozen=True)
class Endpoint:
    """Where a topic reads from or writes to. ``files``: a resolved ``uri`` (absolute path or s3://),
    and for sinks a ``format`` and ``compression``; ``dynamodb`` sources: a table, one partition, and the
    sort key the checkpoint follows."""

    type: str
    uri: str = ""
    format: str = "jsonl"
    compression: str = "none"
    table: str = ""
    partition_key: str = ""
    partition_value: str | int = ""
    sort_key: str = ""
    #: ``dynamodb`` sources: a secondary index to Query instead of the table (None: the table).
    index: str | None = None
    #: ``dynamodb`` sources: read only items whose sort key (an epoch time in milliseconds, as a number or
    #: as the leading 13 digits of a string) is at least this old. None: every item.
    min_age_seconds: int | None = None
    #: Sinks only: ``day`` writes each batch under ``date=YYYY-MM-DD/`` (the topic's timestamp_field, UTC).
    partition_by: str | None = None
    #: Sources only: read nothing past this position (a backfill's end). None: unbounded.
    until: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def to_json(self) -> dict[str, Any]:
        if self.type == "dynamodb":
            optional = {"index": self.index, "min_age_seconds": self.min_age_seconds}
            return {
                "type": self.type,
                "table": self.table,
                "partition_key": self.partition_key,
                "partition_value": self.partition_value,
                "sort_key": self.sort_key,
                **{key: value for key, value in optional.items() if value is not None},
            }
        written = {"type": self.type, "uri": self.uri, "format": self.format, "compression": self.compression}
        return written | ({"partition_by": self.partition_by} if self.partition_by else {})


@dataclass(frozen=True)
class TopicConfig:
    """One topic's resolved settings."""

    name: str
    source: Endpoint
    sink: Endpoint
    processor: str | None
    batch_size: int
    lease_seconds: int
    max_batches_per_run: int
    schedule: str | None
    timestamp_field: str | None = None
    on_malformed: str = "quarantine"
    late_lookback_batches: int = DEFAULT_LATE_LOOKBACK_BATCHES
    #: Declared columns of a Parquet sink (types fixed); other fields are added as they come.
    schema: Schema | None = None
    #: The lag alarm's threshold for this topic; None: the stack's DefaultLagObjectiveSeconds.
    lag_objective_seconds: int | None = None
    #: Where the processor runs: ``process`` (a child process scoped to the topic's data) or ``none``.
    isolation: str = DEFAULT_ISOLATION
    #: The topic's partitions (docs/decisions/0015): each has its own lock, checkpoint, source partition and
    #: sink folder. Empty: the topic is one stream.
    partitions: tuple[str, ...] = ()

    def for_partition(self, partition: str) -> TopicConfig:
        """This topic as partition ``partition`` runs it: ``{partition}`` in its source replaced by the
        name, into the sink folder ``<sink>/part=<name>``. A :class:`ConfigError` for an undeclared one."""
        if partition not in self.partitions:
            declared = ", ".join(self.partitions) if self.partitions else "none"
            raise ConfigError(
                f"topic {self.name} has no partition {partition!r} (partitions: {declared}): declare it "
                "in the topic's `partitions:`"
            )
        source = self.source
        if source.type == "dynamodb":
            value = str(source.partition_value).replace(PARTITION_PLACEHOLDER, partition)
            source = replace(source, partition_value=value)
        else:
            source = replace(source, uri=source.uri.replace(PARTITION_PLACEHOLDER, partition))
        sink = replace(self.sink, uri=child_uri(self.sink.uri, PARTITION_FOLDER + partition))
        return replace(self, source=source, sink=sink)

    def for_backfill(self, backfill: Backfill) -> TopicConfig:
        """This topic as a backfill runs it: its source read up to the backfill's end, into the backfill's
        sink (the topic's processor, batch size, lease and schema), never on a schedule."""
        sink = Endpoint("files", backfill.sink, backfill.format, backfill.compression)
        return replace(self, source=replace(self.source, until=backfill.end), sink=sink, schedule=None)

    def to_settings(self) -> dict[str, Any]:
        """The topic's entry as a topics file spells it, paths resolved and defaults written out: what
        ``leanops topics push`` stores, and :func:`parse_settings` reads back to an equal config."""
        settings = self.to_json()
        del settings["name"]
        return {key: value for key, value in settings.items() if value is not None}

    def to_json(self) -> dict[str, Any]:
        source = self.source.to_json()
        if self.source.type == "files":
            source = {"type": "files", "uri": self.source.uri}
        return {
            "name": self.name,
            "source": source,
            "sink": self.sink.to_json(),
            "processor": self.processor,
            "batch_size": self.batch_size,
            "lease_seconds": self.lease_seconds,
            "max_batches_per_run": self.max_batches_per_run,
            "schedule": self.schedule,
            "timestamp_field": self.timestamp_field,
            "on_malformed": self.on_malformed,
            "late_lookback_batches": self.late_lookback_batches,
            "schema": {c.name: c.type for c in self.schema.columns} if self.schema else None,
            "lag_objective_seconds": self.lag_objective_seconds,
            "isolation": self.isolation,
            "partitions": list(self.partitions) or None,
        }


@dataclass(frozen=True)
class TopicsFile:
    """A loaded topics file."""

    path: Path
    topics: dict[str, TopicConfig]

    @property
    def folder(self) -> Path:
        return self.path.parent

    def topic(self, name: str) -> TopicConfig:
        """The topic called ``name``; a :class:`ConfigError` naming the known topics otherwise."""
        try:
            validation.topic_name(name)
        except InvalidInput as exc:
            raise ConfigError(str(exc)) from exc
        if name not in self.topics:
            known = ", ".join(sorted(self.topics)) or "none"
            raise ConfigError(f"unknown topic {name!r} in {self.path} (topics: {known})")
        return self.topics[name]


class TopicCatalog(Protocol):
    """Where a task finds a topic's settings: a topics file (tests, the CLI) or the settings pushed to the
    state table (:class:`leanops.registry.PushedTopics`, what deployed and local runs read)."""

    @property
    def folder(self) -> Path:
        """The folder processors are imported from."""

    def topic(self, name: str) -> TopicConfig:
        """The topic's settings; a :class:`ConfigError` naming the fix if there is no such topic."""


def parse_settings(name: str, settings: object, where: str) -> TopicConfig:
    """A topic's settings as :meth:`TopicConfig.to_settings` wrote them (paths absolute), validated as a
    topics file's entry is."""
    return _parse_topic(name, settings, where, Path("/"))


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The topics file to use: ``explicit``, else ``$LEANOPS_CONFIG``, else ``./topics.yaml``."""
    return Path(explicit or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG).resolve()


def load_topics(explicit: str | os.PathLike[str] | None = None) -> TopicsFile:
    """Load and validate the topics file (see :func:`config_path`)."""
    path = config_path(explicit)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"topics file {path} not found: create it, or pass --config PATH") from None
    except OSError as exc:
        raise ConfigError(f"topics file {path} cannot be read: {exc.strerror}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    return parse_topics(document, path)


def parse_topics(document: object, path: Path) -> TopicsFile:
    """Validate a parsed topics document; every error names the file, the topic and the key."""
    if not isinstance(document, dict) or set(document) != {"topics"}:
        raise ConfigError(f"{path}: expected one top-level key `topics:` mapping topic names to settings")
    raw_topics = document["topics"]
    if not isinstance(raw_topics, dict) or not raw_topics:
        raise ConfigError(f"{path}: `topics:` must map at least one topic name to its settings")
    topics = {}
    for name, raw in raw_topics.items():
        where = f"{path}: topic {name!r}"
        try:
            validation.topic_name(name)
        except InvalidInput as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        topics[name] = _parse_topic(name, raw, where, path.parent)
    check_sinks_apart(topics, path)
    return TopicsFile(path=path, topics=topics)


def check_sinks_apart(topics: dict[str, TopicConfig], path: Path | str) -> None:
    """A :class:`ConfigError` if two topics' sinks are one folder or prefix, or one lies inside the other:
    one topic's clean-up would list, and delete, the other's objects (its ``_quarantine/`` folder, say). A
    topic reading another's sink (a chain) is fine: a source never lists the sink's ``_`` names.

    In O(n log n), for fleets of topics: sorted, a folder is right before the first folder inside it (every
    name between the two starts with the folder's too), so only neighbours are compared."""
    keyed = sorted((_place(topic.sink), name) for name, topic in topics.items())
    for (place, a), (next_place, b) in itertools.pairwise(keyed):
        if next_place.startswith(place):
            first, second = topics[a].sink.uri, topics[b].sink.uri
            raise ConfigError(
                f"{path}: topics {a!r} and {b!r} write overlapping sinks ({first}, {second}): give each "
                "topic a sink folder or prefix of its own"
            )


def _place(endpoint: Endpoint) -> str:
    """Where a ``files`` endpoint is, as text that starts with its folder's whenever it lies inside it: the
    bucket and prefix, or the resolved folder, ending in ``/`` (``out`` does not hold ``out2``)."""
    if endpoint.is_s3:
        bucket, prefix = _s3_parts(endpoint.uri)
        return f"s3://{bucket}/{prefix}"
    return str(Path(endpoint.uri).resolve()).rstrip("/") + "/"


def _parse_topic(name: str, raw: object, where: str, folder: Path) -> TopicConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(raw).__name__}")
    unknown = set(raw) - TOPIC_KEYS
    if unknown:
        allowed = ", ".join(sorted(TOPIC_KEYS))
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (allowed: {allowed})")
    for required in ("source", "sink"):
        if required not in raw:
            raise ConfigError(f"{where}: missing key {required!r}, e.g. {{type: files, uri: ./data}}")
    processor = raw.get("processor")
    if processor is not None and (
        not isinstance(processor, str) or not PROCESSOR_PATTERN.fullmatch(processor)
    ):
        raise ConfigError(f"{where}: processor {processor!r} must look like package.module:function")
    schedule = raw.get("schedule")
    if schedule is not None and (not isinstance(schedule, str) or not SCHEDULE_PATTERN.fullmatch(schedule)):
        raise ConfigError(
            f"{where}: schedule {schedule!r} must be an EventBridge Scheduler expression, "
            "e.g. rate(5 minutes) or cron(0 * * * ? *)"
        )
    max_batches = _positive(raw, "max_batches_per_run", DEFAULT_MAX_BATCHES_PER_RUN, where)
    if max_batches > MAX_BATCHES_PER_RUN_LIMIT:
        raise ConfigError(
            f"{where}: max_batches_per_run {max_batches} is above {MAX_BATCHES_PER_RUN_LIMIT}, which keeps "
            "an execution's history far under Step Functions' 25,000 events"
        )
    timestamp_field = raw.get("timestamp_field")
    if timestamp_field is not None and (not isinstance(timestamp_field, str) or not timestamp_field.strip()):
        raise ConfigError(f"{where}: timestamp_field must be the name of a record field, e.g. ts")
    on_malformed = raw.get("on_malformed", "quarantine")
    if on_malformed not in ON_MALFORMED:
        raise ConfigError(f"{where}: on_malformed {on_malformed!r} must be one of: {', '.join(ON_MALFORMED)}")
    sink = _endpoint(raw["sink"], f"{where}: sink", folder, SINK_KEYS)
    schema = None
    if "schema" in raw:
        if sink.format != "parquet":
            raise ConfigError(
                f"{where}: schema applies to Parquet sinks (JSON Lines writes each record as it is): "
                "add format: parquet to the sink, or remove schema"
            )
        schema = parse_declared(raw["schema"], f"{where}: schema")
    lookback = raw.get("late_lookback_batches", DEFAULT_LATE_LOOKBACK_BATCHES)
    if isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 0:
        raise ConfigError(
            f"{where}: late_lookback_batches must be a whole number >= 0 (0 turns late-object detection "
            f"off), got {lookback!r}"
        )
    objective = raw.get("lag_objective_seconds")
    if objective is not None and (
        isinstance(objective, bool) or not isinstance(objective, int) or objective < MIN_LAG_OBJECTIVE_SECONDS
    ):
        raise ConfigError(
            f"{where}: lag_objective_seconds must be a whole number of seconds >= "
            f"{MIN_LAG_OBJECTIVE_SECONDS} (the lag the topic's alarm allows), got {objective!r}"
        )
    topic = TopicConfig(
        name=name,
        source=_endpoint(raw["source"], f"{where}: source", folder, SOURCE_KEYS),
        sink=sink,
        processor=processor,
        batch_size=_positive(raw, "batch_size", DEFAULT_BATCH_SIZE, where),
        lease_seconds=_positive(raw, "lease_seconds", DEFAULT_LEASE_SECONDS, where),
        max_batches_per_run=max_batches,
        schedule=schedule,
        timestamp_field=timestamp_field,
        on_malformed=on_malformed,
        late_lookback_batches=lookback,
        schema=schema,
        lag_objective_seconds=objective,
        isolation=validate_isolation(raw.get("isolation", DEFAULT_ISOLATION), where),
        partitions=_partitions(raw.get("partitions"), where),
    )
    _check_partitioned(topic, where)
    check_no_overlap(topic.source, topic.sink, where)
    return topic


def child_uri(uri: str, name: str) -> str:
    """The folder or prefix ``name`` inside the folder or prefix ``uri``."""
    return f"{uri.rstrip('/')}/{name}" if uri.startswith("s3://") else str(Path(uri) / name)


def _partitions(raw: object, where: str) -> tuple[str, ...]:
    """``partitions:``: a count N (names ``0`` .. ``N-1``) or a list of names."""
    if raw is None:
        return ()
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 1 <= raw <= MAX_PARTITIONS:
            raise ConfigError(f"{where}: partitions must be 1 to {MAX_PARTITIONS}, got {raw}")
        return tuple(str(i) for i in range(raw))
    if not isinstance(raw, list) or not raw or len(raw) > MAX_PARTITIONS:
        raise ConfigError(
            f"{where}: partitions must be a count (e.g. 8: partitions 0..7) or a list of 1 to "
            f"{MAX_PARTITIONS} names, got {raw!r}"
        )
    names = tuple(str(name) if isinstance(name, int) and not isinstance(name, bool) else name for name in raw)
    for name in names:
        try:
            validation.topic_name(name, what="partition name")
        except InvalidInput as exc:
            raise ConfigError(f"{where}: partitions: {exc}") from exc
        if name in (".", ".."):  # a folder name of its own: `in/{partition}` would read `in` or its parent
            raise ConfigError(f"{where}: partition name {name!r} names a folder's self or parent: rename it")
        if name.startswith(validation.BACKFILL_ID_PREFIX):
            raise ConfigError(
                f"{where}: partition {name!r} starts with {validation.BACKFILL_ID_PREFIX!r}, which names "
                "backfills: rename it"
            )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"{where}: partition {duplicates[0]!r} is listed twice")
    return names


def _check_partitioned(topic: TopicConfig, where: str) -> None:
    """A partitioned topic's source names ``{partition}`` (each partition reads its own part of it); an
    unpartitioned topic's source does not. A ``day`` sink needs the timestamp it places batches by."""
    source = topic.source
    named = source.uri if source.type == "files" else source.partition_value
    says = isinstance(named, str) and PARTITION_PLACEHOLDER in named
    key = "uri" if source.type == "files" else "partition_value"
    if topic.partitions and not says:
        raise ConfigError(
            f"{where}: a partitioned topic reads one part of its source per partition: put "
            f"{PARTITION_PLACEHOLDER} in source.{key} (e.g. changes#{PARTITION_PLACEHOLDER})"
        )
    if says and not topic.partitions:
        raise ConfigError(
            f"{where}: source.{key} names {PARTITION_PLACEHOLDER} but the topic declares no partitions: add "
            "`partitions:` (a count or a list of names), or remove the placeholder"
        )
    if topic.partitions and topic.name == RESERVED_TOPIC:
        raise ConfigError(
            f"{where}: topic {RESERVED_TOPIC!r} cannot have partitions: its partitions' state is leanops' "
            "own (`leanops topics push` keeps its lock there); rename the topic"
        )
    for partition in topic.partitions:  # each partition's source and sink, as it will run
        narrowed = topic.for_partition(partition)
        check_no_overlap(narrowed.source, narrowed.sink, f"{where}: partition {partition!r}")
    if topic.sink.partition_by and not topic.timestamp_field:
        raise ConfigError(
            f"{where}: sink partition_by: {topic.sink.partition_by} places each batch by its records' time: "
            "set the topic's timestamp_field (e.g. ts)"
        )


def check_no_overlap(source: Endpoint, sink: Endpoint, where: str) -> None:
    """A :class:`ConfigError` if a ``files`` sink is the source folder or prefix, lies inside it, or holds
    it: the topic would read its own output."""
    if overlap(source, sink):
        raise ConfigError(
            f"{where}: sink {sink.uri} overlaps source {source.uri} (one is inside the other, so the topic "
            "would read its own output): put the sink outside the source, e.g. a sibling folder or prefix"
        )


def overlap(a: Endpoint, b: Endpoint) -> bool:
    """Whether two ``files`` endpoints are one folder or prefix, or one lies inside the other. Local folders
    compare resolved (a symlinked folder counts); s3 prefixes compare at ``/`` boundaries (``s3://b/data``
    and ``s3://b/data2`` do not overlap)."""
    if a.type != "files" or b.type != "files" or a.is_s3 != b.is_s3:
        return False
    if a.is_s3:
        a_bucket, a_prefix = _s3_parts(a.uri)
        b_bucket, b_prefix = _s3_parts(b.uri)
        return a_bucket == b_bucket and (a_prefix.startswith(b_prefix) or b_prefix.startswith(a_prefix))
    a_path, b_path = Path(a.uri).resolve(), Path(b.uri).resolve()
    return a_path.is_relative_to(b_path) or b_path.is_relative_to(a_path)


def _s3_parts(uri: str) -> tuple[str, str]:
    """Bucket and prefix of an ``s3://`` uri, the prefix ending in ``/`` (``""`` for the bucket root)."""
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def _positive(raw: dict[str, Any], key: str, default: int, where: str) -> int:
    try:
        return validation.positive_int(raw.get(key, default), what=key)
    except InvalidInput as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _endpoint(raw: object, where: str, folder: Path, kinds: dict[str, tuple[set[str], set[str]]]) -> Endpoint:
    supported = ", ".join(sorted(kinds))
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping like {{type: files, uri: ./data}}, got {raw!r}")
    kind = raw.get("type")
    if kind not in kinds:
        raise ConfigError(f"{where}: type {kind!r} is not supported (supported: {supported})")
    required, optional = kinds[kind]
    unknown = set(raw) - required - optional
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} for type {kind} (allowed: {allowed})")
    missing = sorted(required - set(raw))
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r} for type {kind}")
    if kind == "dynamodb":
        return _dynamodb_endpoint(raw, where)
    return _files_endpoint(raw, where, folder)


def files_sink(uri: str, *, like: Endpoint, folder: Path, where: str) -> Endpoint:
    """A ``files`` sink at ``uri`` (a folder relative to ``folder``, or s3://) writing as ``like`` does, its
    uri in one canonical form (a folder resolved, symlinks and ``..`` included; a prefix without slashes at
    its ends), so one place has one name; a :class:`ConfigError` naming ``where`` for a bad uri."""
    raw = {"uri": uri, "format": like.format, "compression": like.compression}
    sink = _files_endpoint(raw, where, folder)
    if sink.is_s3:
        bucket, prefix = _s3_parts(sink.uri)
        return replace(sink, uri=f"s3://{bucket}/{prefix.rstrip('/')}".rstrip("/"))
    return replace(sink, uri=str(Path(sink.uri).resolve()))


def _files_endpoint(raw: dict[str, Any], where: str, folder: Path) -> Endpoint:
    uri = raw["uri"]
    fmt = raw.get("format", "jsonl")
    if fmt not in SINK_FORMATS:
        raise ConfigError(f"{where}: format {fmt!r} must be one of: {', '.join(SINK_FORMATS)}")
    compression = raw.get("compression", SINK_FORMATS[fmt][0])
    if compression not in SINK_FORMATS[fmt]:
        raise ConfigError(
            f"{where}: compression {compression!r} is not available for {fmt} "
            f"(choose one of: {', '.join(SINK_FORMATS[fmt])})"
        )
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(f"{where}: uri must be a directory or s3://bucket/prefix")
    partition_by = raw.get("partition_by")
    if partition_by is not None and partition_by not in SINK_PARTITION_BY:
        raise ConfigError(
            f"{where}: partition_by {partition_by!r} must be one of: {', '.join(SINK_PARTITION_BY)}"
        )
    if uri.startswith("s3://"):
        if not S3_URI.fullmatch(uri):
            raise ConfigError(f"{where}: uri {uri!r} is not a valid s3://bucket/prefix")
        return Endpoint("files", uri, fmt, compression, partition_by=partition_by)
    if "://" in uri:
        raise ConfigError(f"{where}: uri {uri!r} must be a local directory or s3://bucket/prefix")
    path = Path(uri).expanduser()
    resolved = str(path if path.is_absolute() else (folder / path).resolve())
    return Endpoint("files", resolved, fmt, compression, partition_by=partition_by)


def _dynamodb_endpoint(raw: dict[str, Any], where: str) -> Endpoint:
    for key in ("table", "partition_key", "sort_key"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise ConfigError(f"{where}: {key} must be a non-empty name, got {raw[key]!r}")
    if not TABLE_NAME.fullmatch(raw["table"]):
        raise ConfigError(
            f"{where}: table {raw['table']!r} is not a DynamoDB table name ([A-Za-z0-9_.-], 3..255)"
        )
    value = raw["partition_value"]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ConfigError(f"{where}: partition_value must be a string or an integer, got {value!r}")
    index = raw.get("index")
    if index is not None and (not isinstance(index, str) or not TABLE_NAME.fullmatch(index)):
        raise ConfigError(f"{where}: index {index!r} is not a DynamoDB index name ([A-Za-z0-9_.-], 3..255)")
    min_age = raw.get("min_age_seconds")
    if min_age is not None and (isinstance(min_age, bool) or not isinstance(min_age, int) or min_age < 0):
        raise ConfigError(
            f"{where}: min_age_seconds must be a whole number of seconds >= 0 (read only items whose "
            f"millisecond sort key is at least that old), got {min_age!r}"
        )
    if index is not None and min_age is None:
        raise ConfigError(
            f"{where}: an index source needs min_age_seconds: a global index is eventually consistent, so an "
            "item is read only once it is surely in the index (e.g. 60; 0 for a local index, read strongly)"
        )
    return Endpoint(
        "dynamodb",
        table=raw["table"],
        partition_key=raw["partition_key"],
        partition_value=value,
        sort_key=raw["sort_key"],
        index=index,
        min_age_seconds=min_age,
    )
