"""The deploy rehearsal: ``template.yaml`` transformed offline and created as a CloudFormation stack on the
local stack's endpoint, so that ``leanops ... --stack NAME`` can be tried end to end with no AWS account.

What it does, as ``sam deploy`` would:

1. transform the template with samtranslator (offline; the deploy tools' Python, ``.venv/deploy``);
2. "package": the function code (:mod:`leanopsctl.deploy.bundle`: the handlers' import closure, the topics
   file, its processors) zipped to the S3 key the transformed template names, the state machine definition
   beside it, an empty layer (the local interpreter already has the dependencies);
3. ``CreateStack`` on the local stack's CloudFormation (moto), then report the outputs and the resources
   moto could not create (it skips types it does not model: alarms, schedules...), never hiding them.

The stack's functions then run in the local stack's workers from that zip (:class:`LambdaService`), its
table is moto's DynamoDB: the rehearsal checks wiring (outputs, names, environment, the package), not
concurrency (DynamoDB Local does that for the local stack).

    python -m leanopsctl.deploy.rehearse --config topics.yaml --stack-name rehearsal
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import leanops
from leanops.errors import ConfigError, LeanopsError, LocalRuntimeError
from leanopsctl.deploy.bundle import build_bundle
from leanopsctl.target import Target, local_target, template_for

TRANSFORM = Path(__file__).with_name("transform.py")
#: The functions' code folder (the CodeUri) of this installation: the folder holding the ``leanops`` package.
CODE_URI = Path(leanops.__file__).resolve().parents[1]
#: The deploy tools' Python (samtranslator), made by ``make deps``; ``LEANOPS_DEPLOY_PYTHON`` overrides it.
DEPLOY_PYTHON = Path(__file__).resolve().parents[3] / ".venv" / "deploy" / "bin" / "python"
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]


@dataclass(frozen=True)
class Rehearsal:
    stack: str
    outputs: dict[str, str]
    created: list[str]
    not_created: dict[str, str]  # logical id -> type moto does not create

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "outputs": self.outputs,
            "created": len(self.created),
            "not_created": self.not_created,
        }


def transform(template: Path, parameters: dict[str, str]) -> dict[str, Any]:
    """The CloudFormation template SAM makes of ``template`` (offline)."""
    python = Path(os.environ.get("LEANOPS_DEPLOY_PYTHON") or DEPLOY_PYTHON)
    if not python.exists():
        raise ConfigError(
            f"no deploy tools' Python at {python}: run `make deps` (or set LEANOPS_DEPLOY_PYTHON)"
        )
    arguments = [str(python), str(TRANSFORM), str(template), *(f"{k}={v}" for k, v in parameters.items())]
    done = subprocess.run(arguments, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise ConfigError(f"the SAM transform of {template} failed: {done.stderr.strip()[-1000:]}")
    transformed: dict[str, Any] = json.loads(done.stdout)
    return transformed


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def package(target: Target, template: Path, transformed: dict[str, Any]) -> None:
    """Upload what the transformed template points at, as ``sam package`` would."""
    s3 = target.client("s3")
    with tempfile.TemporaryDirectory(prefix="leanops-package-") as scratch:
        code = build_bundle(target.topics.path, CODE_URI, Path(scratch) / "code")
        code_zip = _zip_folder(code.out)
    empty = io.BytesIO()
    zipfile.ZipFile(empty, "w").close()
    uploads: dict[tuple[str, str], bytes] = {}
    for resource in transformed["Resources"].values():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Lambda::Function":
            uploads[(properties["Code"]["S3Bucket"], properties["Code"]["S3Key"])] = code_zip
        elif resource["Type"] == "AWS::Lambda::LayerVersion":
            uploads[(properties["Content"]["S3Bucket"], properties["Content"]["S3Key"])] = empty.getvalue()
        elif resource["Type"] == "AWS::StepFunctions::StateMachine" and "DefinitionS3Location" in properties:
            location = properties["DefinitionS3Location"]
            uploads[(location["Bucket"], location["Key"])] = (template.parent / location["Key"]).read_bytes()
    for bucket in {bucket for bucket, _ in uploads}:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
    for (bucket, key), body in uploads.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def inline_definitions(transformed: dict[str, Any], template: Path) -> None:
    """moto's CloudFormation reads a state machine's ``DefinitionString`` only (not ``DefinitionS3Location``
    nor ``DefinitionSubstitutions``): give it the packaged definition inline, each substitution written as
    the ``Fn::Sub`` reference it stands for (``${Fn.Arn}``; moto's list form of ``Fn::Sub`` would also turn
    the context object's ``$$`` into ``$``)."""
    for resource in transformed["Resources"].values():
        properties = resource.get("Properties", {})
        if resource["Type"] != "AWS::StepFunctions::StateMachine" or "DefinitionS3Location" not in properties:
            continue
        text = (template.parent / properties.pop("DefinitionS3Location")["Key"]).read_text(encoding="utf-8")
        for name, value in properties.pop("DefinitionSubstitutions", {}).items():
            if isinstance(value, dict) and "Fn::GetAtt" in value:
                reference = ".".join(value["Fn::GetAtt"])
            elif isinstance(value, dict) and "Ref" in value:
                reference = value["Ref"]
                version = transformed["Resources"].get(reference, {})
                if version.get("Type") == "AWS::Lambda::Version":
                    # moto models no published versions: the rehearsal calls the function itself ($LATEST)
                    reference = f"{version['Properties']['FunctionName']['Ref']}.Arn"
            else:
                raise ConfigError(f"DefinitionSubstitutions.{name}: the rehearsal takes a Ref or Fn::GetAtt")
            text = text.replace(f"${{{name}}}", f"${{{reference}}}")
        properties["DefinitionString"] = {"Fn::Sub": text}


def map_alias_targets(transformed: dict[str, Any]) -> None:
    """moto models no aliases: an event source mapping that SAM points at a function's ``live`` alias (the
    archive's stream) names the function itself."""
    resources = transformed["Resources"]
    for resource in resources.values():
        properties = resource.get("Properties", {})
        if resource["Type"] != "AWS::Lambda::EventSourceMapping":
            continue
        reference = properties.get("FunctionName", {})
        alias = resources.get(reference.get("Ref", "") if isinstance(reference, dict) else "", {})
        if alias.get("Type") == "AWS::Lambda::Alias":
            properties["FunctionName"] = alias["Properties"]["FunctionName"]


def rehearse(target: Target, name: str, template: Path, parameters: dict[str, str]) -> Rehearsal:
    if target.local is None:
        raise ConfigError("the rehearsal creates its stack on the local stack only")
    transformed = transform(template, parameters)
    package(target, template, transformed)
    inline_definitions(transformed, template)
    map_alias_targets(transformed)
    cloudformation = target.client("cloudformation")
    try:
        cloudformation.create_stack(
            StackName=name,
            TemplateBody=json.dumps(transformed),
            Capabilities=CAPABILITIES,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        )
    except cloudformation.exceptions.AlreadyExistsException as exc:
        raise ConfigError(f"stack {name!r} already exists on the local stack: choose another name") from exc
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise LocalRuntimeError(f"stack {name} is {stack['StackStatus']}: {stack.get('StackStatusReason')}")
    summaries = cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
    created = sorted(s["LogicalResourceId"] for s in summaries if s.get("LogicalResourceId"))
    not_created = {
        logical_id: resource["Type"]
        for logical_id, resource in sorted(transformed["Resources"].items())
        if logical_id not in created
    }
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return Rehearsal(name, outputs, created, not_created)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m leanopsctl.deploy.rehearse", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", help="topics file (default: ./topics.yaml)")
    parser.add_argument("--stack-name", required=True, help="name of the rehearsed stack")
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    try:
        parameters = dict(item.split("=", 1) for item in args.parameter)
        target = local_target(args.config)
        result = rehearse(target, args.stack_name, template_for(target.topics), parameters)
    except ValueError:
        print("leanopsctl.deploy.rehearse: error: --parameter takes NAME=VALUE", file=sys.stderr)
        return 2
    except LeanopsError as exc:
        print(f"leanopsctl.deploy.rehearse: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    print(json.dumps(result.to_json()))
    for logical_id, kind in result.not_created.items():
        print(
            f"leanopsctl.deploy.rehearse: not created by the local stack: {logical_id} ({kind})",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
