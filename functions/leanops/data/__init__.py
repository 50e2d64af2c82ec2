"""Sources and sinks, built from a topic's settings."""

from __future__ import annotations

from collections.abc import Callable

from leanops.config import Endpoint
from leanops.data.files import FilesSink, FilesSource
from leanops.data.source import Source


def open_source(endpoint: Endpoint, clock: Callable[[], int] | None = None) -> Source:
    """The source a topic's ``source:`` settings describe; ``clock`` (epoch ms, default the wall clock) is
    what a ``dynamodb`` source's ``min_age_seconds`` counts from (tasks pass the protocol's)."""
    if endpoint.type == "dynamodb":
        from leanops.data.dynamodb_source import DynamoDBSource

        return DynamoDBSource(
            endpoint.table,
            endpoint.partition_key,
            endpoint.partition_value,
            endpoint.sort_key,
            until=endpoint.until,
            index=endpoint.index,
            min_age_seconds=endpoint.min_age_seconds,
            clock=clock,
        )
    return FilesSource(endpoint.uri, until=endpoint.until)


def open_sink(endpoint: Endpoint, topic: str) -> FilesSink:
    """The sink a topic's ``sink:`` settings describe."""
    return FilesSink(
        endpoint.uri,
        topic,
        format=endpoint.format,
        compression=endpoint.compression,
        partition_by=endpoint.partition_by,
    )
