"""The local environment a CLI command works in: DynamoDB Local up, the state table present, and the
standard AWS variables pointing at it (dummy credentials unless real ones are set: nothing leaves the box)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from leanops.constants import DEFAULT_HOME, ENV_DYNAMODB_ENDPOINT, ENV_HOME, ENV_STATE_TABLE
from leanops.protocol import Protocol
from leanops.protocol.dynamodb import DynamoDBStore, default_table_name
from leanops.protocol.table import create_table
from leanopsctl.local.dynamodb_local import local_client, local_up

_DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def use_project_home(topics_path: Path) -> Path:
    """Make the project's local state the one this process uses: ``$LEANOPS_HOME`` if set, else ``.leanops``
    beside the topics file — never the working folder, so a command run from any folder (``--config``) finds
    the same database, logs and state as one run from the project folder."""
    home = os.environ.get(ENV_HOME) or str(topics_path.resolve().parent / DEFAULT_HOME)
    os.environ[ENV_HOME] = home
    return Path(home)


@dataclass(frozen=True)
class LocalSession:
    endpoint_url: str
    table_name: str

    def protocol(self) -> Protocol:
        return Protocol(DynamoDBStore(self.table_name, local_client(self.endpoint_url)))


def open_local_session() -> LocalSession:
    """Start (or reuse) DynamoDB Local, create the state table if needed, and export the endpoint so
    handlers reach it through ``AWS_ENDPOINT_URL_DYNAMODB``, as they would any DynamoDB."""
    endpoint = local_up()
    for name, value in _DUMMY_AWS.items():
        os.environ.setdefault(name, value)
    os.environ[ENV_DYNAMODB_ENDPOINT] = endpoint
    table = default_table_name()
    os.environ[ENV_STATE_TABLE] = table
    create_table(local_client(endpoint), table)
    return LocalSession(endpoint, table)
