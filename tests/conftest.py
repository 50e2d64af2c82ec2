"""Fixtures shared by every test level.

- ``offline_aws_env`` (session, autouse): dummy AWS credentials and region, no profile, no instance metadata,
  and a private ``LEANOPS_HOME``, so that no test can reach real AWS or the developer's local database.
- ``dynamodb_local`` (session): one in-memory DynamoDB Local for the whole run. It never skips: without Java
  or the jar the tests that need it fail, loudly. No Java process outlives pytest (see the fixture).
- ``state_table``: a fresh, uniquely named state table per test in that server.
- ``ddb_client_factory``: builds new, independent clients, e.g. one per thread in a race.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, NamedTuple

import pytest
from leanopsctl.local.dynamodb_local import DynamoDBLocal, local_client, local_down

from leanops.constants import ENV_DYNAMODB_ENDPOINT, ENV_HOME, ENV_STATE_TABLE
from leanops.errors import LocalRuntimeError
from leanops.protocol.table import create_table

#: Set for the whole session: botocore finds these before any real credentials.
_DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
#: Removed for the whole session: each could send a request to a real account or a stray endpoint.
_REAL_AWS_ENV = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
    ENV_DYNAMODB_ENDPOINT,
)


@pytest.fixture(scope="session", autouse=True)
def offline_aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point every AWS SDK call of the session at dummy credentials, and leanops at a private home."""
    home = tmp_path_factory.mktemp("leanops-home")
    aws_files = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _DUMMY_AWS_ENV.items():
            patch.setenv(name, value)
        for name in _REAL_AWS_ENV:
            patch.delenv(name, raising=False)
        # Files that do not exist: no profile of the developer's ~/.aws applies.
        patch.setenv("AWS_CONFIG_FILE", str(aws_files / "config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws_files / "credentials"))
        patch.setenv(ENV_HOME, str(home))
        try:
            yield
        finally:
            # A test that ran `leanops local up` against the session home and failed before cleaning up.
            local_down(home)


def _stop_on_signals(stop: Callable[[], None]) -> Callable[[], None]:
    """Run ``stop`` on SIGTERM or SIGHUP before the previous handling; return a function undoing this.

    pytest turns SIGINT into KeyboardInterrupt and still runs finalizers; SIGTERM and SIGHUP would end the
    process without them, leaving the server (in its own session, out of reach of the terminal) behind.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers can only be set from the main thread
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        stop()
        prior = previous.get(signum)
        signal.signal(signum, prior if prior is not None else signal.SIG_DFL)
        if callable(prior):
            prior(signum, frame)
        elif prior != signal.SIG_IGN:
            os.kill(os.getpid(), signum)  # the default action, now that the server is gone

    for signum in (signal.SIGTERM, signal.SIGHUP):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)

    def restore() -> None:
        for signum, prior in previous.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, prior if prior is not None else signal.SIG_DFL)

    return restore


@contextlib.contextmanager
def running_dynamodb_local() -> Iterator[DynamoDBLocal]:
    """An in-memory DynamoDB Local for the block; ``.endpoint_url`` is its URL.

    Stopped on the way out, by ``atexit``, on SIGTERM/SIGHUP, and, if pytest is killed outright, by the
    kernel (``die_with_parent``): whatever happens, no Java process outlives pytest.
    """
    server = DynamoDBLocal(die_with_parent=True)
    atexit.register(server.stop)
    restore_signals = _stop_on_signals(server.stop)
    try:
        failure = None
        try:
            server.start(None)
        except LocalRuntimeError as exc:
            failure = f"DynamoDB Local could not start: {exc}\n{exc.log_tail or ''}"
        if failure is not None:  # outside the except block: one clear message, no chained traceback
            pytest.fail(failure, pytrace=False)
        yield server
    finally:
        try:
            server.stop()
        finally:
            restore_signals()
            atexit.unregister(server.stop)


@pytest.fixture(scope="session")
def dynamodb_local(offline_aws_env: None) -> Iterator[DynamoDBLocal]:
    """One in-memory DynamoDB Local for the session (:func:`running_dynamodb_local`)."""
    with running_dynamodb_local() as server:
        yield server


class StateTable(NamedTuple):
    """A state table of the session's DynamoDB Local, for one test."""

    name: str
    #: A boto3 DynamoDB client for the table's endpoint (dummy credentials, us-east-1).
    client: Any
    endpoint_url: str


def unique_table_name(test_name: str) -> str:
    # Readable in DynamoDB Local's listing, unique across tests and reruns, within [A-Za-z0-9_.-]{3,255}.
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name)[:100].strip("-")
    return f"leanops-test-{readable}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def state_table(
    dynamodb_local: DynamoDBLocal, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StateTable]:
    """A new state table per test, deleted afterwards.

    For the test's duration ``LEANOPS_STATE_TABLE`` names it and ``AWS_ENDPOINT_URL_DYNAMODB`` points at the
    server, so code that builds its own clients (handlers) reaches the same table.
    """
    client = local_client(dynamodb_local.endpoint_url)
    name = unique_table_name(request.node.name)
    create_table(client, name)
    monkeypatch.setenv(ENV_STATE_TABLE, name)
    monkeypatch.setenv(ENV_DYNAMODB_ENDPOINT, dynamodb_local.endpoint_url)
    try:
        yield StateTable(name=name, client=client, endpoint_url=dynamodb_local.endpoint_url)
    finally:
        # Keeps the in-memory database small over a long session.
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_table(TableName=name)


@pytest.fixture
def ddb_client_factory(dynamodb_local: DynamoDBLocal) -> Callable[..., Any]:
    """A function returning a new boto3 DynamoDB client for the session's server at each call.

    Each client has its own session and connection pool, as separate Lambda invocations would. Keyword
    arguments (``connect_timeout``, ``read_timeout``, ``max_attempts``) go to
    :func:`leanopsctl.local.dynamodb_local.local_client`.
    """

    def make_client(**options: Any) -> Any:
        return local_client(dynamodb_local.endpoint_url, **options)

    return make_client
