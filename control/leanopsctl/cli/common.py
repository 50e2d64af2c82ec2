"""Options every command shares: the topics file, and where to act (the local stack, or ``--stack``)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from leanops.config import TopicConfig, TopicsFile, load_topics
from leanops.errors import ConfigError
from leanops.protocol import Protocol, TopicRef
from leanopsctl.cli import fail
from leanopsctl.target import Target, local_target, stack_target

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    help="Topics file (default: $LEANOPS_CONFIG or ./topics.yaml); local state lives beside it.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")


def target_options(command: F) -> F:
    """``--config``, ``--stack``, ``--region``, ``--profile``: the command gets ``target`` (a callable that
    resolves the :class:`~leanopsctl.target.Target` when the command needs it)."""

    @config_option
    @click.option(
        "--stack", "stack", help="Act on this deployed CloudFormation stack instead of the local stack."
    )
    @click.option("--region", "region", help="The stack's region (default: the AWS configuration's).")
    @click.option("--profile", "profile", help="AWS profile for --stack (default: the AWS configuration's).")
    @functools.wraps(command)
    def wrapper(
        *args: Any,
        config: str | None,
        stack: str | None,
        region: str | None,
        profile: str | None,
        **kwargs: Any,
    ) -> Any:
        if stack is None and (region or profile):
            fail(ConfigError("--region and --profile go with --stack NAME"))

        def resolve(*topics: str | None) -> Target:
            """The target; the named topics are checked in the topics file first, so that a wrong name
            is refused before a stack starts or AWS is called."""
            loaded = load_topics(config)
            for name in topics:
                if name is not None:
                    states(loaded, name)
            if stack is not None:
                return stack_target(config, stack, region=region, profile=profile)
            target = local_target(config)
            _route_local_clients(target)
            return target

        return command(*args, target=resolve, config=config, **kwargs)

    return wrapper  # type: ignore[return-value]


def _route_local_clients(target: Target) -> None:
    """Clients made elsewhere in this process (sources and sinks read by ``status``, ``gc``) reach the local
    stack's S3 and DynamoDB, with its dummy credentials: nothing leaves the machine."""
    endpoints = target.endpoints or {}
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoints["s3"]
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoints["dynamodb"]
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def states(topics: TopicsFile, text: str) -> list[tuple[TopicRef, TopicConfig]]:
    """The states ``TOPIC`` or ``TOPIC/PARTITION`` names, with the settings each runs by: a topic's own, or
    each of its partitions' when it is partitioned and none is named (docs/decisions/0015)."""
    name, slash, partition = text.partition("/")
    settings = topics.topic(name)
    if slash and not partition:
        raise ConfigError(f"{text!r} names no partition: give TOPIC or TOPIC/PARTITION")
    if partition:
        return [(TopicRef(name, partition), settings.for_partition(partition))]
    if settings.partitions:
        return [(TopicRef(name, p), settings.for_partition(p)) for p in settings.partitions]
    return [(TopicRef(name), settings)]


def one_state(topics: TopicsFile, text: str) -> tuple[TopicRef, TopicConfig]:
    """The one state ``TOPIC`` or ``TOPIC/PARTITION`` names; a partitioned topic must name its partition."""
    found = states(topics, text)
    if len(found) > 1:
        raise ConfigError(
            f"topic {text} has {len(found)} partitions: name one, e.g. {found[0][0]} "
            f"(partitions: {', '.join(str(ref.partition) for ref, _ in found)})"
        )
    return found[0]


def backfill_view(
    protocol: Protocol, topics: TopicsFile, text: str, backfill_id: str | None
) -> tuple[TopicRef, TopicConfig]:
    """The state and settings a command acts on: ``TOPIC``'s own (or a partition's: ``TOPIC/PARTITION``),
    or (``backfill_id``) its backfill's."""
    if backfill_id is None:
        return one_state(topics, text)
    settings = topics.topic(text)
    found = protocol.read_backfill(TopicRef(settings.name), backfill_id)
    if found is None:
        raise ConfigError(
            f"topic {settings.name} has no backfill {backfill_id}: `leanops backfill {settings.name} --list` "
            "shows them"
        )
    return found.ref, settings.for_backfill(found)


backfill_option = click.option(
    "--backfill", "backfill_id", help="Act on this backfill of TOPIC (`leanops backfill TOPIC --list`)."
)
