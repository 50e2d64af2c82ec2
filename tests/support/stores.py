"""An empty object store, local or in moto's S3, and a way to land objects in it: the two stores every
files test runs on."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from leanops.data.storage import LocalStore, ObjectStore, S3Store

Put = Callable[[str, bytes], None]


@pytest.fixture(params=["local", "s3"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ObjectStore, Put]]:
    """An empty store (a directory, or a bucket prefix in moto's S3) and a way to land objects in it."""
    if request.param == "local":
        root = tmp_path / "src"
        root.mkdir()

        def put_local(key: str, data: bytes) -> None:
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            before = path.stat().st_mtime_ns if path.exists() else None
            path.write_bytes(data)
            if before is not None:  # a rewrite lands later than the write it replaces (not in one clock tick)
                os.utime(path, ns=(before + 10**9, before + 10**9))

        yield LocalStore(root), put_local
        return
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="landing")

        def put_s3(key: str, data: bytes) -> None:
            client.put_object(Bucket="landing", Key=f"telemetry/{key}", Body=data)

        yield S3Store("s3://landing/telemetry"), put_s3
