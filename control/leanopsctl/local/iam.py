"""A small IAM evaluator, enforced on every boto3/botocore client of this process (the local stack's IAM).

Locally there is no IAM: a function whose template policy lacks an action it calls would pass every local
run and fail once deployed. :func:`install` closes that gap for the data services leanops uses: it registers
a botocore hook that maps each S3 and DynamoDB call to the IAM requests AWS would authorize
(:func:`requests`: ``HeadObject`` -> ``s3:GetObject`` on the object, ``ListObjectsV2`` -> ``s3:ListBucket`` on
the bucket with ``s3:prefix``, a ``TransactWriteItems`` -> one action per item, ...) and refuses, with
botocore's ``ClientError`` code ``AccessDenied``, a call that the installed policies do not allow
(:func:`allowed`).

What it evaluates: ``Allow`` and ``Deny`` statements, ``Action`` and ``Resource`` with ``*``/``?``
wildcards (actions case-insensitively), and the ``StringEquals``/``StringLike`` (and ``Not`` forms)
conditions on request keys (``s3:prefix``). A statement with anything else (``NotAction``,
``NotResource``, another condition operator or key) never allows and always denies: enforcement fails
closed. Calls to other services are not checked (they are not data). Local folders are not IAM resources:
a ``files`` topic on a local folder makes no AWS call, so nothing here applies to it.

Layers: each :func:`install` adds one set of policies, and a call must be allowed by every installed set,
as a role's policies intersect with a session policy on AWS (the processor's child process installs its
session policy on top of its function's policies). Only clients created after :func:`install` are checked
(botocore copies a session's handlers into each client): install before the code under test makes its
clients (the local worker does it before importing the handler).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import botocore.handlers
from botocore.exceptions import ClientError

#: Account and partition of the ARNs a local request is built with (the local stack's, see
#: leanopsctl.local.template: the ARNs its rendered policies name).
LOCAL_ACCOUNT_ID = "123456789012"
LOCAL_PARTITION = "aws"
#: The services whose calls are checked.
CHECKED_SERVICES = ("s3", "dynamodb")

Policy = Mapping[str, Any]


@dataclass(frozen=True)
class Request:
    """One IAM authorization a call needs: an action on a resource, with the request's condition keys."""

    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)


# --- evaluation --------------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    """IAM wildcard matching: ``*`` any run of characters (``/`` included), ``?`` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


#: Condition operators: (match one pattern, negated?).
_OPERATORS = {
    "StringEquals": (lambda p, v: p == v, False),
    "StringNotEquals": (lambda p, v: p == v, True),
    "StringLike": (_matches, False),
    "StringNotLike": (_matches, True),
}


def _condition_holds(condition: Mapping[str, Any], context: Mapping[str, str]) -> bool | None:
    """True or False; ``None`` when the condition uses what this evaluator does not know."""
    for operator, keys in condition.items():
        if operator not in _OPERATORS or not isinstance(keys, Mapping):
            return None
        match, negated = _OPERATORS[operator]
        for key, patterns in keys.items():
            if key not in context:  # an absent key fails a positive operator (and passes a negated one)
                if not negated:
                    return False
                continue
            hit = any(match(str(p), context[key]) for p in _as_list(patterns))
            if hit == negated:
                return False
    return True


def _applies(statement: Mapping[str, Any], request: Request) -> bool | None:
    if "NotAction" in statement or "NotResource" in statement or "NotPrincipal" in statement:
        return None
    actions = [str(a) for a in _as_list(statement.get("Action", []))]
    resources = [str(r) for r in _as_list(statement.get("Resource", []))]
    if not any(_matches(a, request.action, case_sensitive=False) for a in actions):
        return False
    if not any(_matches(r, request.resource) for r in resources):
        return False
    return _condition_holds(statement.get("Condition", {}), request.context)


def allowed(
    policies: Iterable[Policy], action: str, resource: str, context: Mapping[str, str] | None = None
) -> bool:
    """Whether ``policies`` (IAM policy documents, plain ARNs) allow ``action`` on ``resource``.

    ``context`` holds the request's condition keys (``{"s3:prefix": "in/"}``). An explicit ``Deny`` wins; a
    statement this evaluator cannot read never allows and always denies.
    """
    request = Request(action, resource, dict(context or {}))
    allow = False
    for policy in policies:
        for statement in _as_list(policy.get("Statement", [])):
            applies = _applies(statement, request)
            if statement.get("Effect") == "Deny":
                if applies is not False:
                    return False
            elif statement.get("Effect") == "Allow" and applies is True:
                allow = True
    return allow


# --- calls to IAM requests ---------------------------------------------------------------------------------

#: DynamoDB operations authorized by the action of the same name on the table (or its index).
_DYNAMODB_TABLE_OPERATIONS = {
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "DescribeTable",
    "CreateTable",
    "DeleteTable",
    "UpdateTable",
    "DescribeTimeToLive",
    "UpdateTimeToLive",
    "DescribeContinuousBackups",
}
#: A transaction's item kinds and the action each is authorized by (there is no action for the call).
_TRANSACT_ITEM_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}
#: S3 operations and the action that authorizes them, on the object (or, for ``s3:ListBucket``, the bucket).
_S3_OBJECT_ACTIONS = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "GetObjectAttributes": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObject": "s3:DeleteObject",
}
_S3_BUCKET_ACTIONS = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "CreateBucket": "s3:CreateBucket",
    "DeleteBucket": "s3:DeleteBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
}


def table_arn(table: str, region: str, account: str = LOCAL_ACCOUNT_ID) -> str:
    return f"arn:{LOCAL_PARTITION}:dynamodb:{region}:{account}:table/{table}"


def requests(
    service: str, operation: str, params: Mapping[str, Any], region: str, account: str = LOCAL_ACCOUNT_ID
) -> list[Request]:
    """The IAM requests AWS authorizes for one call (``[]`` for a service that is not checked)."""
    if service == "s3":
        return _s3_requests(operation, params)
    if service == "dynamodb":
        return _dynamodb_requests(operation, params, region, account)
    return []


def _s3_requests(operation: str, params: Mapping[str, Any]) -> list[Request]:
    bucket = str(params.get("Bucket", ""))
    bucket_arn = f"arn:{LOCAL_PARTITION}:s3:::{bucket}"
    if operation in _S3_BUCKET_ACTIONS:
        context = {"s3:prefix": str(params["Prefix"])} if "Prefix" in params else {}
        return [Request(_S3_BUCKET_ACTIONS[operation], bucket_arn, context)]
    if operation == "DeleteObjects":
        keys = [obj["Key"] for obj in params.get("Delete", {}).get("Objects", [])]
        return [Request("s3:DeleteObject", f"{bucket_arn}/{key}") for key in keys]
    if operation == "CopyObject":
        source = params.get("CopySource", "")
        if isinstance(source, Mapping):
            source = f"{source['Bucket']}/{source['Key']}"
        return [
            Request("s3:GetObject", f"arn:{LOCAL_PARTITION}:s3:::{str(source).lstrip('/')}"),
            Request("s3:PutObject", f"{bucket_arn}/{params.get('Key', '')}"),
        ]
    action = _S3_OBJECT_ACTIONS.get(operation, f"s3:{operation}")
    return [Request(action, f"{bucket_arn}/{params['Key']}" if "Key" in params else bucket_arn)]


def _dynamodb_requests(operation: str, params: Mapping[str, Any], region: str, account: str) -> list[Request]:
    if operation in _DYNAMODB_TABLE_OPERATIONS:
        resource = table_arn(str(params.get("TableName", "")), region, account)
        if params.get("IndexName"):
            resource += f"/index/{params['IndexName']}"
        return [Request(f"dynamodb:{operation}", resource)]
    if operation in ("TransactWriteItems", "TransactGetItems"):
        found = []
        for item in params.get("TransactItems", []):
            for kind, body in item.items():
                action = _TRANSACT_ITEM_ACTIONS.get(kind, kind)
                found.append(
                    Request(f"dynamodb:{action}", table_arn(str(body["TableName"]), region, account))
                )
        return found
    if operation in ("BatchGetItem", "BatchWriteItem"):
        return [
            Request(f"dynamodb:{operation}", table_arn(str(t), region, account))
            for t in params.get("RequestItems", {})
        ]
    resource = table_arn(str(params["TableName"]), region, account) if "TableName" in params else "*"
    return [Request(f"dynamodb:{operation}", resource)]


# --- enforcement -------------------------------------------------------------------------------------------

_lock = threading.Lock()
#: The installed policy sets; a call must be allowed by each of them.
_layers: list[list[Policy]] = []
_EVENTS = tuple(f"before-parameter-build.{service}" for service in CHECKED_SERVICES)


def _check(params: Mapping[str, Any], model: Any, context: Mapping[str, Any] | None = None, **_: Any) -> None:
    layers = list(_layers)
    if not layers:
        return
    service = model.service_model.endpoint_prefix
    region = str((context or {}).get("client_region") or "us-east-1")
    for request in requests(service, model.name, params, region):
        for policies in layers:
            if not allowed(policies, request.action, request.resource, request.context):
                shown = f" with {dict(request.context)}" if request.context else ""
                message = f"local IAM: {request.action} on {request.resource}{shown} is not allowed"
                raise ClientError({"Error": {"Code": "AccessDenied", "Message": message}}, model.name)


def install(policies: list[dict[str, Any]]) -> None:
    """Check every S3 and DynamoDB call of clients created from now on in this process against ``policies``
    (IAM policy documents whose resources are plain ARNs); a call they do not allow raises ``ClientError``
    ``AccessDenied`` before it is sent. Each call adds a layer: every layer must allow a call."""
    with _lock:
        if not _layers:
            for event in _EVENTS:
                botocore.handlers.BUILTIN_HANDLERS.append((event, _check))
            _register_on_default_session()
        _layers.append([dict(p) for p in policies])


def uninstall() -> None:
    """Remove every layer: no call is checked any more (tests)."""
    with _lock:
        _layers.clear()
        botocore.handlers.BUILTIN_HANDLERS[:] = [
            h for h in botocore.handlers.BUILTIN_HANDLERS if h[1] is not _check
        ]
        _unregister_on_default_session()


def _register_on_default_session() -> None:
    """boto3's default session already made applied BUILTIN_HANDLERS: add the hook to it directly."""
    import boto3

    session = boto3.DEFAULT_SESSION
    if session is not None:
        for event in _EVENTS:
            session._session.register(event, _check, unique_id=f"leanops-local-iam-{event}")


def _unregister_on_default_session() -> None:
    import boto3

    session = boto3.DEFAULT_SESSION
    if session is not None:
        for event in _EVENTS:
            session._session.unregister(event, _check, unique_id=f"leanops-local-iam-{event}")


def installed() -> bool:
    return bool(_layers)


# --- the local stack's policies ----------------------------------------------------------------------------


def local_policies(
    grants: Mapping[str, Iterable[str]], state_table_arn: str, topics: Iterable[Any]
) -> list[dict[str, Any]]:
    """One function's policy on the local stack: its recorded grants (``grants.json``: actions by kind of
    resource) on the local state table, each ``dynamodb`` source's table, and the buckets of the topics'
    S3 sources and sinks. Locally there are no data roots: the actions are checked exactly (a missing grant
    fails a local run), S3 resources by bucket only (a backfill's sink, defined after the worker starts, is
    in a topic's bucket or in none the local stack made)."""
    by_bucket: dict[str, set[str]] = {}
    region = state_table_arn.split(":")[3]
    for topic in topics:
        for kind, endpoint in (("source", topic.source), ("sink", topic.sink)):
            actions = set(grants.get(kind, ())) | (
                set(grants.get("sink_marker", ())) if kind == "sink" else set()
            )
            if endpoint.type == "dynamodb":
                by_table = {a for a in actions if a.startswith("dynamodb:")}
                if by_table:
                    by_bucket.setdefault(f"table:{endpoint.table}", set()).update(by_table)
            elif endpoint.is_s3:
                bucket = endpoint.uri.removeprefix("s3://").partition("/")[0]
                by_bucket.setdefault(bucket, set()).update(a for a in actions if a.startswith("s3:"))
    statements: list[dict[str, Any]] = []
    if grants.get("state_table"):
        statements.append(_allow(grants["state_table"], [state_table_arn]))
    for name, actions in sorted(by_bucket.items()):
        if name.startswith("table:"):
            statements.append(_allow(actions, [table_arn(name.removeprefix("table:"), region)]))
            continue
        if "s3:ListBucket" in actions:
            statements.append(_allow(["s3:ListBucket"], [f"arn:{LOCAL_PARTITION}:s3:::{name}"]))
        objects = actions - {"s3:ListBucket"}
        if objects:
            statements.append(_allow(objects, [f"arn:{LOCAL_PARTITION}:s3:::{name}/*"]))
    # A policy needs a statement: one that allows nothing real when the function has no grant at all.
    statements = statements or [_allow(["s3:GetObject"], [f"arn:{LOCAL_PARTITION}:s3:::leanops-nothing/x"])]
    return [{"Version": "2012-10-17", "Statement": statements}]


def _allow(actions: Iterable[str], resources: list[str]) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": sorted(actions), "Resource": resources}
