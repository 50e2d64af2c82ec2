"""The topics file (DESIGN §4): loading, validation with one clear line per problem, resolved settings.

The file is found by, in order: an explicit path (``--config``), ``$LEANOPS_CONFIG``, ``./topics.yaml``.
Relative source/sink directories resolve against the topics file's folder, and processor modules are
imported with that folder on ``sys.path``, so a topics file and its code travel together.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from leanops import validation
from leanops.constants import DEFAULT_CONFIG, ENV_CONFIG
from leanops.errors import ConfigError, InvalidInput

DEFAULT_BATCH_SIZE = 1000
DEFAULT_LEASE_SECONDS = 120
DEFAULT_MAX_BATCHES_PER_RUN = 100
MAX_BATCHES_PER_RUN_LIMIT = 2_000  # ~6 history events per batch: far under Step Functions' 25,000

ENDPOINT_TYPES = {"files"}
TOPIC_KEYS = {"source", "sink", "processor", "batch_size", "lease_seconds", "max_batches_per_run", "schedule"}
ENDPOINT_KEYS = {"type", "uri"}
PROCESSOR_PATTERN = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*")
SCHEDULE_PATTERN = re.compile(r"(rate|cron|at)\(.+\)")
S3_URI = re.compile(r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/(?P<prefix>.*))?")


@dataclass(frozen=True)
class Endpoint:
    """Where a topic reads from or writes to: ``type`` and a resolved ``uri`` (absolute path or s3://)."""

    type: str
    uri: str

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")


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

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": {"type": self.source.type, "uri": self.source.uri},
            "sink": {"type": self.sink.type, "uri": self.sink.uri},
            "processor": self.processor,
            "batch_size": self.batch_size,
            "lease_seconds": self.lease_seconds,
            "max_batches_per_run": self.max_batches_per_run,
            "schedule": self.schedule,
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
    return TopicsFile(path=path, topics=topics)


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
    return TopicConfig(
        name=name,
        source=_endpoint(raw["source"], f"{where}: source", folder),
        sink=_endpoint(raw["sink"], f"{where}: sink", folder),
        processor=processor,
        batch_size=_positive(raw, "batch_size", DEFAULT_BATCH_SIZE, where),
        lease_seconds=_positive(raw, "lease_seconds", DEFAULT_LEASE_SECONDS, where),
        max_batches_per_run=max_batches,
        schedule=schedule,
    )


def _positive(raw: dict[str, Any], key: str, default: int, where: str) -> int:
    try:
        return validation.positive_int(raw.get(key, default), what=key)
    except InvalidInput as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _endpoint(raw: object, where: str, folder: Path) -> Endpoint:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected {{type: files, uri: ...}}, got {raw!r}")
    unknown = set(raw) - ENDPOINT_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (allowed: type, uri)")
    kind, uri = raw.get("type"), raw.get("uri")
    if kind not in ENDPOINT_TYPES:
        raise ConfigError(
            f"{where}: type {kind!r} is not supported (supported: {', '.join(sorted(ENDPOINT_TYPES))})"
        )
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(f"{where}: uri must be a directory or s3://bucket/prefix")
    if uri.startswith("s3://"):
        if not S3_URI.fullmatch(uri):
            raise ConfigError(f"{where}: uri {uri!r} is not a valid s3://bucket/prefix")
        return Endpoint(kind, uri)
    if "://" in uri:
        raise ConfigError(f"{where}: uri {uri!r} must be a local directory or s3://bucket/prefix")
    path = Path(uri).expanduser()
    return Endpoint(kind, str(path if path.is_absolute() else (folder / path).resolve()))
