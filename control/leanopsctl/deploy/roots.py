"""The stack's data roots: the S3 folders and DynamoDB tables its functions may touch (template parameters
``DataRoots`` and ``DataTables``; docs/decisions/0011-permissions-from-recorded-calls.md).

Every function's data permissions are granted on the roots, never per topic, so the template's resources and
IAM size do not grow with topics; a topic must lie inside them, which ``leanops topics push`` checks with
:func:`check_topic` (one line naming the topic, the URI and the root to add).

A root is ``s3://bucket/folder/``: one folder (CloudFormation cannot split a deeper prefix off its bucket for
the ``s3:prefix`` condition of ``s3:ListBucket``), ending in ``/`` (``s3://b/raw`` would also match
``raw-old/``). Never a whole bucket, wildcards (``*``, ``?``) or substitutions (``$``, ``{``, ``}``): they
would pass into IAM as grants wider than written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from leanops.config import TopicConfig
from leanops.errors import ConfigError

#: Slots of the template (its Conditions ``HasDataRoot0..4`` and ``HasDataTable0..2``).
MAX_S3_ROOTS = 5
MAX_TABLES = 3
S3_PARAMETER = "DataRoots"
TABLE_PARAMETER = "DataTables"

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_FOLDER = re.compile(r"[A-Za-z0-9!_.'()=+,;@&-][A-Za-z0-9!_.'()=+,;@& -]*")
_TABLE = re.compile(r"[A-Za-z0-9_.-]{3,255}")
#: Characters IAM or CloudFormation would read as a pattern or a substitution.
_SPECIAL = set("*?${}")


@dataclass(frozen=True)
class Roots:
    """Validated data roots: S3 ``(bucket, folder)`` pairs and table names."""

    s3: tuple[tuple[str, str], ...] = ()
    tables: tuple[str, ...] = ()

    def covers_s3(self, uri: str) -> bool:
        bucket, key = split_s3(uri)
        return any(bucket == b and (key + "/").startswith(f + "/") for b, f in self.s3)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key.strip("/")


def parse_s3_root(root: str) -> tuple[str, str]:
    """One ``DataRoots`` entry, validated: ``(bucket, folder)``.

    Raises
    ------
    ConfigError
        Not ``s3://bucket/folder/``; the message says what is wrong.
    """
    where = f"{S3_PARAMETER} entry {root!r}"
    special = sorted(_SPECIAL & set(root))
    if special:
        raise ConfigError(f"{where}: wildcard or substitution characters {''.join(special)} are not allowed")
    if not root.startswith("s3://"):
        raise ConfigError(f"{where}: a data root is s3://bucket/folder/")
    bucket, _, key = root.removeprefix("s3://").partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(f"{where}: {bucket!r} is not a valid bucket name")
    if not key:
        raise ConfigError(
            f"{where}: a whole bucket is not a data root; name its folder: s3://{bucket}/folder/"
        )
    if not key.endswith("/"):
        raise ConfigError(f"{where}: end it with / (s3://{bucket}/{key} would also match {key}-other/)")
    folders = key[:-1].split("/")
    if len(folders) != 1 or not _FOLDER.fullmatch(folders[0]):
        raise ConfigError(f"{where}: a data root is one folder of its bucket, s3://{bucket}/{folders[0]}/")
    return bucket, folders[0]


def parse_table(name: str) -> str:
    if not _TABLE.fullmatch(name):
        raise ConfigError(f"{TABLE_PARAMETER} entry {name!r}: not a DynamoDB table name")
    return name


def parse_roots(s3: Iterable[str] = (), tables: Iterable[str] = ()) -> Roots:
    """The stack's roots from its parameters' entries (empty entries skipped), validated.

    Raises
    ------
    ConfigError
        An invalid entry, or more entries than the template has slots for.
    """
    s3_roots = tuple(dict.fromkeys(parse_s3_root(r.strip()) for r in s3 if r.strip()))
    names = tuple(dict.fromkeys(parse_table(t.strip()) for t in tables if t.strip()))
    if len(s3_roots) > MAX_S3_ROOTS:
        raise ConfigError(f"{S3_PARAMETER}: at most {MAX_S3_ROOTS} roots (got {len(s3_roots)})")
    if len(names) > MAX_TABLES:
        raise ConfigError(f"{TABLE_PARAMETER}: at most {MAX_TABLES} tables (got {len(names)})")
    return Roots(s3_roots, names)


def parse_parameters(parameters: dict[str, str]) -> Roots:
    """The roots of a stack's parameters (``{"DataRoots": "s3://a/b/,s3://c/d/", "DataTables": "t"}``)."""
    return parse_roots(
        parameters.get(S3_PARAMETER, "").split(","), parameters.get(TABLE_PARAMETER, "").split(",")
    )


def root_for(uri: str) -> str:
    """The root to declare for an S3 URI: its bucket and first folder."""
    bucket, key = split_s3(uri)
    return f"s3://{bucket}/{key.split('/')[0]}/" if key else f"s3://{bucket}/<folder>/"


def check_topic(config: TopicConfig, roots: Roots) -> None:
    """Refuse a topic a deployed stack cannot run: a local folder, or data outside the roots.

    Raises
    ------
    ConfigError
        One line naming the topic, the endpoint and what to change.
    """
    for role, endpoint in (("source", config.source), ("sink", config.sink)):
        if endpoint.type == "dynamodb":
            table = endpoint.table
            if table not in roots.tables:
                raise ConfigError(
                    f"topic {config.name}: {role} table {table} is outside the stack's data roots; add it to "
                    f"the {TABLE_PARAMETER} parameter"
                )
            continue
        uri = endpoint.uri
        if not uri.startswith("s3://"):
            raise ConfigError(
                f"topic {config.name}: {role} {uri} is a local folder, which a deployed stack cannot reach; "
                "use an s3:// URI"
            )
        special = sorted(_SPECIAL & set(uri))
        if special:
            raise ConfigError(
                f"topic {config.name}: {role} {uri} has wildcard or substitution characters "
                f"{''.join(special)}"
            )
        if not roots.covers_s3(uri):
            raise ConfigError(
                f"topic {config.name}: {role} {uri} is outside the stack's data roots; add the root "
                f"{root_for(uri)} to the {S3_PARAMETER} parameter"
            )
