"""Where an operator command acts: the project's local stack, or a deployed stack (``--stack NAME``).

Both are the same AWS APIs through boto3 (Step Functions, DynamoDB, CloudFormation); the local stack is just
another endpoint (:mod:`leanopsctl.local.stack`). A deployed stack's table and state machine come from its
CloudFormation outputs (``StateTableName``, ``TopicRunStateMachineArn``, ``AlarmTopicArn``).
"""

from __future__ import annotations

import ast
import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError, ProfileNotFound

from leanops.config import TopicsFile, load_topics
from leanops.errors import ConfigError, InvalidInput, LocalRuntimeError
from leanops.protocol import Protocol, Retention
from leanops.protocol.dynamodb import DynamoDBStore
from leanopsctl.deploy.schedules import ScheduleTarget
from leanopsctl.local.session import use_project_home
from leanopsctl.local.stack import StackRecord, running_stack, stack_up
from leanopsctl.local.template import LOCAL_REGION, read_template

#: The state machine every topic runs on (template.yaml).
STATE_MACHINE = "TopicRunStateMachine"
#: The stack outputs a leanops stack has (template.yaml ``Outputs``); the first two are required.
OUTPUT_TABLE = "StateTableName"
OUTPUT_STATE_MACHINE = "TopicRunStateMachineArn"
OUTPUT_ALARM_TOPIC = "AlarmTopicArn"
#: Where `leanops topics push` puts schedules, the role they start runs with, and their dead-letter queue.
OUTPUT_SCHEDULE_GROUP = "ScheduleGroupName"
OUTPUT_SCHEDULER_ROLE = "SchedulerRoleArn"
OUTPUT_SCHEDULE_DEAD_LETTERS = "ScheduleDeadLetterQueueArn"
OUTPUT_SCHEDULES_STATE = "SchedulesState"

#: Clients of the CLI: a few quick retries (a command is interactive), short timeouts locally.
_CLIENT_CONFIG = Config(
    retries={"total_max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60
)


#: The template parameters that set each kind's retention in the state table (docs/decisions/0014).
RETENTION_PARAMETERS = {
    "runs_days": "RunRecordDays",
    "outputs_days": "OutputRecordDays",
    "audit_days": "AuditRecordDays",
}


@dataclass(frozen=True)
class Target:
    """The endpoints and names one command uses."""

    description: str
    session: Any
    table: str
    state_machine_arn: str
    topics: TopicsFile
    local: StackRecord | None = None
    alarm_topic: str | None = None
    endpoints: dict[str, str] | None = None
    #: The stack's outputs and parameters (a deployed stack's; None locally).
    outputs: dict[str, str] | None = None
    parameters: dict[str, str] | None = None

    def client(self, service: str) -> Any:
        endpoint = (self.endpoints or {}).get(service)
        return self.session.client(service, endpoint_url=endpoint, config=_CLIENT_CONFIG)

    def protocol(self) -> Protocol:
        return Protocol(self.store())

    def store(self) -> DynamoDBStore:
        """The state table, writing history with the retention the stack's functions use."""
        return DynamoDBStore(self.table, self.client("dynamodb"), self.retention())

    def retention(self) -> Retention:
        """Each kind's retention: the deployed stack's parameters, or locally the template's defaults (the
        local stack's functions run with those)."""
        values: Mapping[str, str] = (
            self.parameters
            if self.parameters is not None
            else read_template(template_for(self.topics)).parameter_defaults
        )
        try:
            return Retention(
                **{kind: int(values[name]) for kind, name in RETENTION_PARAMETERS.items() if name in values}
            )
        except (InvalidInput, ValueError) as exc:
            raise ConfigError(f"{self.description}: retention parameters {values}: {exc}") from exc

    def schedule_target(self) -> ScheduleTarget:
        """Where this stack's schedules live and what they start."""
        if self.local is not None:
            return ScheduleTarget(
                self.local.schedule_group, self.state_machine_arn, self.local.scheduler_role_arn
            )
        outputs = self.outputs or {}
        missing = [k for k in (OUTPUT_SCHEDULE_GROUP, OUTPUT_SCHEDULER_ROLE) if k not in outputs]
        if missing:
            raise ConfigError(
                f"{self.description} has no {' or '.join(missing)} output: deploy this version of the "
                "template first (`sam build && sam deploy`)"
            )
        return ScheduleTarget(
            outputs[OUTPUT_SCHEDULE_GROUP],
            self.state_machine_arn,
            outputs[OUTPUT_SCHEDULER_ROLE],
            outputs.get(OUTPUT_SCHEDULE_DEAD_LETTERS),
            partition=self.state_machine_arn.split(":")[1],
            state=outputs.get(OUTPUT_SCHEDULES_STATE, "ENABLED"),
        )


def template_for(topics: TopicsFile) -> Path:
    """The SAM template the project runs: ``template.yaml`` beside the topics file (a project's own), else
    the one that ships with leanops."""
    own = topics.folder / "template.yaml"
    if own.is_file():
        return own
    from leanopsctl.project import packaged_template

    return packaged_template()


def local_target(config: str | None, *, start: bool = True) -> Target:
    """The project's local stack, started if it is not running (``start``)."""
    topics = load_topics(config)
    home = use_project_home(topics.path)
    record = running_stack(home)
    if record is None:
        if not start:
            raise LocalRuntimeError("the local stack is not running: start it with `leanops local up`")
        if sys.stderr.isatty():  # a person waits: say why (scripts read one line per error)
            print("leanops: starting the local stack (`leanops local down` stops it)", file=sys.stderr)
        record, _started = stack_up(home, topics.path, template_for(topics))
    elif Path(record.config) != topics.path:
        raise ConfigError(
            f"the local stack in {home} serves {record.config}, not {topics.path}: "
            "stop it (`leanops local down`) or pass that --config"
        )
    session = boto3.session.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name=LOCAL_REGION
    )
    endpoints = {
        "dynamodb": record.dynamodb_endpoint,
        "stepfunctions": record.endpoint,
        "s3": record.endpoint,
        "cloudformation": record.endpoint,
        "scheduler": record.endpoint,
    }
    return Target(
        description=f"local stack ({record.endpoint})",
        session=session,
        table=record.table,
        state_machine_arn=record.state_machines[STATE_MACHINE],
        topics=topics,
        local=record,
        endpoints=endpoints,
    )


def stack_target(config: str | None, stack: str, *, region: str | None, profile: str | None) -> Target:
    """A deployed stack, from its CloudFormation outputs.

    Raises
    ------
    ConfigError
        Unknown profile or stack, no region, missing credentials, or a stack without leanops outputs.
    LocalRuntimeError
        CloudFormation could not be reached.
    """
    topics = load_topics(config)
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
        if session.get_credentials() is None:
            raise ConfigError(
                "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or pass --profile"
            )
        if session.region_name is None:
            raise ConfigError("no AWS region: pass --region or set AWS_REGION")
        cloudformation = session.client("cloudformation", config=_CLIENT_CONFIG)
        described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    except ProfileNotFound as exc:
        raise ConfigError(f"{exc}: pass an existing --profile") from exc
    except NoCredentialsError as exc:
        raise ConfigError(f"no AWS credentials ({exc}): set AWS_PROFILE, or pass --profile") from exc
    except NoRegionError as exc:
        raise ConfigError("no AWS region: pass --region or set AWS_REGION") from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationError" and "does not exist" in str(error.get("Message")):
            raise ConfigError(
                f"no stack {stack!r} in {session.region_name}: check --stack and --region"
            ) from exc
        raise LocalRuntimeError(f"CloudFormation: {error.get('Code')}: {error.get('Message')}") from exc
    except BotoCoreError as exc:
        raise LocalRuntimeError(f"CloudFormation could not be reached: {exc}") from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    missing = [key for key in (OUTPUT_TABLE, OUTPUT_STATE_MACHINE) if key not in outputs]
    if missing:
        raise ConfigError(
            f"stack {stack!r} has no {' or '.join(missing)} output: it is not a leanops stack "
            f"(status {described.get('StackStatus')})"
        )
    return Target(
        description=f"stack {stack} ({session.region_name})",
        session=session,
        table=outputs[OUTPUT_TABLE],
        state_machine_arn=outputs[OUTPUT_STATE_MACHINE],
        topics=topics,
        alarm_topic=outputs.get(OUTPUT_ALARM_TOPIC),
        endpoints=_environment_endpoints(),
        outputs=outputs,
        parameters={p["ParameterKey"]: _parameter_value(p) for p in described.get("Parameters", [])},
    )


def _parameter_value(parameter: dict[str, Any]) -> str:
    """A stack parameter's value as CloudFormation gives it (a list as ``a,b``); the local stack's moto
    gives a list's Python text (``['a', 'b']``), read back here to the same ``a,b``."""
    value = str(parameter.get("ParameterValue", ""))
    if value.startswith("['") and value.endswith("']"):
        with contextlib.suppress(ValueError, SyntaxError):
            return ",".join(str(item) for item in ast.literal_eval(value))
    return value


def _environment_endpoints() -> dict[str, str]:
    """Endpoints the standard ``AWS_ENDPOINT_URL_<SERVICE>`` variables set (boto3 honours them too; kept
    explicit so a rehearsal against a local endpoint reaches the same places)."""
    names = {
        "dynamodb": "DYNAMODB",
        "stepfunctions": "SFN",
        "s3": "S3",
        "cloudformation": "CLOUDFORMATION",
        "scheduler": "SCHEDULER",
    }
    endpoints = {}
    for service, name in names.items():
        value = os.environ.get(f"AWS_ENDPOINT_URL_{name}") or os.environ.get("AWS_ENDPOINT_URL")
        if value:
            endpoints[service] = value
    return endpoints
