"""Sources and sinks, built from a topic's settings."""

from __future__ import annotations

from leanops.config import Endpoint
from leanops.data.files import FilesSink, FilesSource
from leanops.data.source import Source


def open_source(endpoint: Endpoint) -> Source:
    """The source a topic's ``source:`` settings describe."""
    if endpoint.type == "dynamodb":
        from leanops.data.dynamodb_source import DynamoDBSource

        return DynamoDBSource(
            endpoint.table,
            endpoint.partition_key,
            endpoint.partition_value,
            endpoint.sort_key,
            until=endpoint.until,
        )
    return FilesSource(endpoint.uri, until=endpoint.until)


def open_sink(endpoint: Endpoint, topic: str) -> FilesSink:
    """The sink a topic's ``sink:`` settings describe."""
    return FilesSink(endpoint.uri, topic, format=endpoint.format, compression=endpoint.compression)
