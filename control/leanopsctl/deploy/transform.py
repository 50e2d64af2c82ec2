"""Print the CloudFormation template that SAM makes of ``template.yaml``, as JSON, offline.

Run by the deploy tools' Python (``.venv/deploy``, which has aws-sam-cli's ``samtranslator`` and cfn-lint's
YAML loader; the project's own venv cannot hold aws-sam-cli's pins)::

    .venv/deploy/bin/python control/leanopsctl/deploy/transform.py template.yaml [Name=Value ...]

Managed policies named by their short name would need IAM to resolve; the template names none, so the
loader answers from an empty map (a name it cannot resolve fails the transform, as it should here).
"""

from __future__ import annotations

import json
import os
import sys

from cfnlint.decode import cfn_yaml
from samtranslator.translator.transform import transform

#: Local paths that ``sam package`` would upload; the transform wants S3 locations in their place.
LOCAL_URIS = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
    "AWS::Serverless::StateMachine": "DefinitionUri",
}


def packaged(template: dict) -> dict:
    """``template`` with every local code or definition path replaced by an S3 URI, as after packaging."""
    function_globals = template.get("Globals", {}).get("Function", {})
    if isinstance(function_globals.get("CodeUri"), str):
        function_globals["CodeUri"] = "s3://packaged/" + function_globals["CodeUri"]
    for resource in template.get("Resources", {}).values():
        key = LOCAL_URIS.get(resource.get("Type"))
        properties = resource.get("Properties", {})
        if key and isinstance(properties.get(key), str) and not properties[key].startswith("s3://"):
            properties[key] = "s3://packaged/" + properties[key]
    return template


class OfflinePolicyLoader:
    """Stands in for samtranslator's ManagedPolicyLoader, which calls IAM."""

    def load(self) -> dict[str, str]:
        return {}


def main(argv: list[str]) -> int:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    template = packaged(cfn_yaml.load(argv[0]))
    parameters = dict(arg.split("=", 1) for arg in argv[1:])
    transformed = transform(template, parameters, OfflinePolicyLoader())
    json.dump(transformed, sys.stdout, indent=1, sort_keys=True, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
