"""Ten thousand topics, one stack (issue 12, decision 0013): nothing in the template is per topic, so the
deployed stack — its resources and its IAM policies, resolved as CloudFormation resolves them — is the same
for 1 topic or 10,000 across 3 data roots; each of the 10,000 is inside the roots and pushes; the template
lints clean."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from leanopsctl import push
from leanopsctl.deploy import roots

from leanops.config import parse_topics
from leanops.protocol.memory import InMemoryStore
from tests.deploy.conftest import REPO, TEMPLATE_PATH, deploy_python, transform

ROOTS = ["s3://landing-a/raw/", "s3://landing-b/telemetry/", "s3://lake/curated/"]
#: IAM's limit on the inline policies of one role, together (characters, whitespace not counted).
ROLE_INLINE_LIMIT = 10_240
#: And on one managed policy.
MANAGED_POLICY_LIMIT = 6_144
PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "fleet",
}


def fleet(count: int, tmp_path: Path) -> dict[str, Any]:
    """``count`` topics spread over the three roots, each reading and writing prefixes of its own."""
    topics = {}
    for n in range(count):
        source_root, sink_root = ROOTS[n % 2], ROOTS[2]
        topics[f"topic-{n:05d}"] = {
            "source": {"type": "files", "uri": f"{source_root}t{n:05d}"},
            "sink": {"type": "files", "uri": f"{sink_root}t{n:05d}"},
            "schedule": "rate(1 minute)",
        }
    return parse_topics({"topics": topics}, tmp_path / "topics.yaml").topics


class Resolver:
    """CloudFormation's intrinsics as a deploy with these parameters resolves them (the subset the template
    uses), so that policies are measured as IAM stores them."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, str]) -> None:
        self.template = template
        self.values: dict[str, Any] = {
            name: spec.get("Default", "") for name, spec in template["Parameters"].items()
        }
        self.values.update(parameters)
        for name, spec in template["Parameters"].items():
            if spec.get("Type") == "CommaDelimitedList":
                self.values[name] = (
                    [v for v in str(self.values[name]).split(",")] if self.values[name] != "" else [""]
                )
        self.values.update(PSEUDO)

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            resolved = [self.resolve(v) for v in value]
            return [v for v in resolved if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: v for k, v in ((k, self.resolve(v)) for k, v in value.items()) if v is not NO_VALUE}
        ((function, argument),) = value.items()
        if function == "Ref":
            if argument == "AWS::NoValue":
                return NO_VALUE
            return self.values.get(argument, f"<{argument}>")
        if function == "Condition":
            return self.condition(argument)
        if function == "Fn::If":
            return self.resolve(argument[1] if self.condition(argument[0]) else argument[2])
        if function == "Fn::Equals":
            return self.resolve(argument[0]) == self.resolve(argument[1])
        if function == "Fn::Not":
            return not self.resolve(argument[0])
        if function in ("Fn::Or", "Fn::And"):
            found = [bool(self.resolve(a)) for a in argument]
            return any(found) if function == "Fn::Or" else all(found)
        if function == "Fn::Select":
            return self.resolve(argument[1])[int(self.resolve(argument[0]))]
        if function == "Fn::Split":
            return str(self.resolve(argument[1])).split(argument[0])
        if function == "Fn::Join":
            return argument[0].join(str(v) for v in self.resolve(argument[1]))
        if function == "Fn::GetAtt":
            parts = argument.split(".") if isinstance(argument, str) else argument
            return f"arn:aws:<{parts[0]}>"
        if function == "Fn::Sub":
            text, names = (
                (argument, {}) if isinstance(argument, str) else (argument[0], self.resolve(argument[1]))
            )
            return re.sub(
                r"\$\{([^}]+)\}",
                lambda m: str(names.get(m.group(1), self.values.get(m.group(1), f"<{m.group(1)}>"))),
                text,
            )
        return {function: self.resolve(argument)}


NO_VALUE = object()


def deployed_iam(parameters: dict[str, str]) -> dict[str, int]:
    """Each role's inline policies and each managed policy, resolved, as IAM measures them (characters of
    the JSON without whitespace): ``{"<logical id>": size}``; and ``"resources"``: how many resources."""
    template = transform(TEMPLATE_PATH, **parameters)
    resolver = Resolver(template, parameters)
    sizes: dict[str, int] = {"resources": 0}
    for logical_id, resource in template["Resources"].items():
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue
        sizes["resources"] += 1
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            documents = [resolver.resolve(p["PolicyDocument"]) for p in properties.get("Policies", [])]
            sizes[logical_id] = sum(len(json.dumps(d, separators=(",", ":"))) for d in documents)
        elif resource["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            document = resolver.resolve(properties["PolicyDocument"])
            assert document["Statement"], logical_id  # never an empty policy
            sizes[logical_id] = len(json.dumps(document, separators=(",", ":")))
    return sizes


def test_ten_thousand_topics_deploy_the_stack_one_topic_deploys(tmp_path: Path) -> None:
    # GIVEN 10,000 topics across 3 data roots, and 1 topic in one root
    many, one = fleet(10_000, tmp_path), fleet(1, tmp_path)
    one_roots = [ROOTS[0], ROOTS[2]]  # its source's and its sink's
    for config in many.values():
        roots.check_topic(config, roots.parse_roots(ROOTS))  # each is inside the stack's roots
    roots.check_topic(one["topic-00000"], roots.parse_roots(one_roots))
    plan = push.plan(
        parse_topics({"topics": {n: c.to_settings() for n, c in many.items()}}, tmp_path / "t.yaml"),
        InMemoryStore(),
    )
    assert len(plan.added) == 10_000
    # WHEN the stack is built for each (the roots are its parameters; topics are pushed, not deployed)
    for_many = deployed_iam({"DataRoots": ",".join(ROOTS)})
    for_one = deployed_iam({"DataRoots": ",".join(one_roots)})
    # THEN the resources are the same, and so is the IAM but for the roots' own ARNs
    assert for_many["resources"] == for_one["resources"]
    assert set(for_many) == set(for_one)
    for logical_id, size in for_many.items():
        if logical_id != "resources":
            assert size <= for_one[logical_id] + 400, logical_id  # one more root: a few ARNs
    # AND with the most roots a stack takes, every policy is inside IAM's limits
    most = [
        f"s3://bucket-with-a-long-name-{n}-{'x' * 20}/folder-with-a-long-name-{'y' * 20}/"
        for n in range(roots.MAX_S3_ROOTS)
    ]
    tables = [f"table-with-a-long-name-{n}-{'z' * 40}" for n in range(roots.MAX_TABLES)]
    largest = deployed_iam({"DataRoots": ",".join(most), "DataTables": ",".join(tables)})
    for logical_id, size in largest.items():
        if logical_id == "resources":
            continue
        limit = MANAGED_POLICY_LIMIT if logical_id.endswith("Policy") else ROLE_INLINE_LIMIT
        assert size <= limit, (logical_id, size, limit)


@pytest.mark.parametrize("linter", ["cfn-lint", "sam validate --lint"])
def test_the_template_lints_clean(linter: str) -> None:
    bin_dir = deploy_python().parent
    if linter == "cfn-lint":
        command = [
            str(bin_dir / "cfn-lint"),
            "--append-rules",
            "cfn_lint_serverless.rules",
            "--",
            str(TEMPLATE_PATH),
        ]
    else:
        command = [
            str(bin_dir / "sam"),
            "validate",
            "--lint",
            "--region",
            "us-east-1",
            "--template",
            str(TEMPLATE_PATH),
        ]
    done = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"SAM_CLI_TELEMETRY": "0", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
