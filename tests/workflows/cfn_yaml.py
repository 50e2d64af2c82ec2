"""Read a CloudFormation/SAM template with PyYAML's safe loader, short-form intrinsic tags included.

A stand-in for the project's template reader, just enough for the static workflow tests: ``!Ref X`` becomes
``{"Ref": "X"}``, ``!GetAtt A.B`` becomes ``{"Fn::GetAtt": ["A", "B"]}``, and any other ``!Name value``
becomes ``{"Fn::Name": value}``, i.e. the long forms CloudFormation itself would read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class CfnSafeLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short-form tags into their long-form mappings."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise yaml.constructor.ConstructorError(
            None, None, f"unexpected node for !{tag_suffix}", node.start_mark
        )
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{tag_suffix}": value}


CfnSafeLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path) -> dict[str, Any]:
    """The template at ``path`` as plain dicts and lists."""
    with path.open(encoding="utf-8") as stream:
        template = yaml.load(stream, Loader=CfnSafeLoader)
    if not isinstance(template, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return template
