"""Read the SAM ``template.yaml``: the one source of wiring for the cloud and the local runtime (design §5).

The local runtime needs from the template each function's handler, timeout, memory and environment (with
``Globals.Function`` merged in, as SAM does) and each state machine's ``DefinitionUri`` and
``DefinitionSubstitutions``. CloudFormation intrinsics are kept as small dicts (``{"Ref": "StateTable"}``,
``{"Fn::GetAtt": ["AcquireFunction", "Arn"]}``) and turned into local values by :func:`resolve`.

Examples
--------
>>> template = read_template("template.yaml")
>>> template.functions["ProcessFunction"].timeout
120
>>> refs = template.local_refs({"StateTable": "leanops-state"})
>>> resolve({"Fn::GetAtt": ["AcquireFunction", "Arn"]}, refs)
'arn:aws:lambda:us-east-1:123456789012:function:AcquireFunction'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from leanops.constants import ENV_STATE_TABLE
from leanops.errors import ConfigError

#: Where the local runtime pretends to run: moto's default account and region.
LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT_ID = "123456789012"
LOCAL_PARTITION = "aws"
LOCAL_STACK_NAME = "leanops-local"

#: Lambda's defaults, used when neither the function nor ``Globals.Function`` sets a value.
DEFAULT_TIMEOUT_SECONDS = 3
DEFAULT_MEMORY_MB = 128

FUNCTION_TYPES = frozenset({"AWS::Serverless::Function", "AWS::Lambda::Function"})
STATE_MACHINE_TYPES = frozenset({"AWS::Serverless::StateMachine"})
TABLE_TYPES = frozenset({"AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable"})

#: A value as written in the template: a string, or an intrinsic such as ``{"Ref": "StateTable"}``.
TemplateValue = str | int | float | bool | dict[str, Any] | list[Any]

_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


# ------------------------------------------------------------------------------------------------------------
# YAML with CloudFormation short tags
# ------------------------------------------------------------------------------------------------------------


class CloudFormationLoader(yaml.SafeLoader):
    """A safe YAML loader that reads CloudFormation short tags (``!Ref x`` -> ``{"Ref": "x"}``, ...)."""


_SHORT_TAGS = (
    "Base64",
    "Cidr",
    "FindInMap",
    "GetAZs",
    "ImportValue",
    "Join",
    "Select",
    "Split",
    "Sub",
    "Transform",
    "And",
    "Equals",
    "If",
    "Not",
    "Or",
)


def _tag_constructor(key: str, *, split_getatt: bool = False) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if split_getatt:  # !GetAtt Resource.Attribute -> ["Resource", "Attribute"]
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        elif isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
        else:
            raise yaml.constructor.ConstructorError(None, None, f"unexpected node for {key}", node.start_mark)
        return {key: value}

    return construct


CloudFormationLoader.add_constructor("!Ref", _tag_constructor("Ref"))
CloudFormationLoader.add_constructor("!Condition", _tag_constructor("Condition"))
CloudFormationLoader.add_constructor("!GetAtt", _tag_constructor("Fn::GetAtt", split_getatt=True))
for _name in _SHORT_TAGS:
    CloudFormationLoader.add_constructor(f"!{_name}", _tag_constructor(f"Fn::{_name}"))


def load_yaml(path: Path | str) -> dict[str, Any]:
    """The template at ``path`` as plain data, short tags turned into their long (dict) forms.

    Raises
    ------
    ConfigError
        The file cannot be read, is not YAML, or is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the template: {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=CloudFormationLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a template must be a mapping with a Resources key")
    return data


# ------------------------------------------------------------------------------------------------------------
# What the local runtime needs
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionSpec:
    """A Lambda function of the template, ``Globals.Function`` merged in.

    ``environment`` keeps the template's values (strings or intrinsics); resolve them with :func:`resolve`.
    """

    logical_id: str
    #: As the template writes it: ``package.module.function`` (SAM's form) or ``package.module:function``.
    handler: str
    timeout: int
    memory_size: int
    environment: Mapping[str, TemplateValue] = field(default_factory=dict)
    #: ``CodeUri`` resolved against the template's folder, when it names a local folder.
    code_uri: Path | None = None

    @property
    def module_and_attribute(self) -> tuple[str, str]:
        """The handler's module and function names: ``("leanops.handlers.acquire", "handler")``."""
        module, sep, attribute = self.handler.partition(":")
        if not sep:
            module, sep, attribute = self.handler.rpartition(".")
        if not sep or not module or not attribute:
            raise ConfigError(
                f"Handler {self.handler!r} of {self.logical_id} is not of the form module.function"
            )
        return module, attribute


@dataclass(frozen=True)
class StateMachineSpec:
    """A state machine of the template: its ASL file and the ``${...}`` substitutions applied to it."""

    logical_id: str
    #: ``DefinitionUri`` resolved against the template's folder.
    definition_path: Path
    substitutions: Mapping[str, TemplateValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Template:
    """The parts of a SAM template the local runtime uses. Build one with :func:`read_template`."""

    path: Path
    functions: Mapping[str, FunctionSpec]
    state_machines: Mapping[str, StateMachineSpec]
    #: Every resource's ``Type``, by logical id.
    resource_types: Mapping[str, str]
    #: Each parameter's default (as text), by name: what ``Ref`` of a parameter is locally.
    parameter_defaults: Mapping[str, str] = field(default_factory=dict)

    def function(self, logical_id: str) -> FunctionSpec:
        """The function ``logical_id``; a :class:`ConfigError` names the known ones when it is missing."""
        try:
            return self.functions[logical_id]
        except KeyError:
            known = ", ".join(sorted(self.functions)) or "none"
            raise ConfigError(f"{self.path}: no function {logical_id!r} (functions: {known})") from None

    def state_machine(self, logical_id: str) -> StateMachineSpec:
        """The state machine ``logical_id``; a :class:`ConfigError` names the known ones if it is missing."""
        try:
            return self.state_machines[logical_id]
        except KeyError:
            known = ", ".join(sorted(self.state_machines)) or "none"
            raise ConfigError(
                f"{self.path}: no state machine {logical_id!r} (state machines: {known})"
            ) from None

    def local_refs(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """Local values of ``Ref`` and ``Fn::GetAtt`` for every resource, for :func:`resolve`.

        Keys are logical ids (``Ref``) and ``LogicalId.Attribute`` (``Fn::GetAtt``). Locally a function is
        named by its logical id, a state machine too, and a table by its logical id unless ``overrides``
        (logical id -> physical name, e.g. ``{"StateTable": "my-table"}``) says otherwise.
        """
        overrides = dict(overrides or {})
        refs: dict[str, str] = dict(self.parameter_defaults)
        for logical_id, resource_type in self.resource_types.items():
            name = overrides.get(logical_id, logical_id)
            refs[logical_id] = name
            if resource_type in FUNCTION_TYPES:
                refs[logical_id] = name
                refs[f"{logical_id}.Arn"] = lambda_arn(name)
                # Locally one version runs, the latest (AutoPublishAlias's version and alias name it).
                refs[f"{logical_id}.Version"] = f"{lambda_arn(name)}:$LATEST"
                refs[f"{logical_id}.Alias"] = f"{lambda_arn(name)}:$LATEST"
            elif resource_type in STATE_MACHINE_TYPES:
                refs[logical_id] = state_machine_arn(name)
                refs[f"{logical_id}.Arn"] = state_machine_arn(name)
                refs[f"{logical_id}.Name"] = name
            elif resource_type in TABLE_TYPES:
                arn = f"arn:{LOCAL_PARTITION}:dynamodb:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:table/{name}"
                refs[f"{logical_id}.Arn"] = arn
        refs.update(overrides)
        return refs

    def table_refs(self, table_name: str) -> dict[str, str]:
        """Make the table that functions receive as ``LEANOPS_STATE_TABLE`` resolve to ``table_name``."""
        refs: dict[str, str] = {}
        for spec in self.functions.values():
            value = spec.environment.get(ENV_STATE_TABLE)
            if isinstance(value, dict) and isinstance(value.get("Ref"), str):
                refs[value["Ref"]] = table_name
        return refs

    def function_environment(
        self, spec: FunctionSpec, refs: Mapping[str, str], table_name: str
    ) -> dict[str, str]:
        """The function's ``Environment.Variables`` resolved to local values, in the local region."""
        env: dict[str, str] = {}
        for key, value in spec.environment.items():
            try:
                env[key] = resolve(value, refs)
            except ConfigError as exc:
                raise ConfigError(
                    f"{self.path}: Environment.Variables.{key} of {spec.logical_id}: {exc}"
                ) from exc
        env.setdefault(ENV_STATE_TABLE, table_name)
        env.update(AWS_REGION=LOCAL_REGION, AWS_DEFAULT_REGION=LOCAL_REGION)
        return env


def lambda_arn(function_name: str) -> str:
    """The local ARN of a Lambda function: ``arn:aws:lambda:us-east-1:123456789012:function:<name>``."""
    return f"arn:{LOCAL_PARTITION}:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:function:{function_name}"


def state_machine_arn(name: str) -> str:
    """The local ARN of a state machine named ``name`` (as moto builds it)."""
    return f"arn:{LOCAL_PARTITION}:states:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:stateMachine:{name}"


def read_template(path: Path | str) -> Template:
    """Read the functions and state machines of the SAM template at ``path``.

    Raises
    ------
    ConfigError
        The file is missing or malformed, or a function or state machine lacks what the local runtime needs;
        the message names the file and the key.
    """
    path = Path(path).resolve()
    data = load_yaml(path)
    resources = data.get("Resources")
    if not isinstance(resources, dict) or not resources:
        raise ConfigError(f"{path}: Resources is missing or empty")

    globals_ = _mapping(data.get("Globals", {}), path, "Globals")
    function_globals = _mapping(globals_.get("Function", {}), path, "Globals.Function")

    functions: dict[str, FunctionSpec] = {}
    state_machines: dict[str, StateMachineSpec] = {}
    resource_types: dict[str, str] = {}
    for logical_id, resource in resources.items():
        where = f"Resources.{logical_id}"
        resource = _mapping(resource, path, where)
        resource_type = resource.get("Type")
        if not isinstance(resource_type, str):
            raise ConfigError(f"{path}: {where}.Type is missing")
        resource_types[logical_id] = resource_type
        properties = _mapping(resource.get("Properties", {}), path, f"{where}.Properties")
        if resource_type in FUNCTION_TYPES:
            functions[logical_id] = _function_spec(
                path,
                logical_id,
                properties,
                function_globals if resource_type.startswith("AWS::Serverless") else {},
            )
        elif resource_type in STATE_MACHINE_TYPES:
            state_machines[logical_id] = _state_machine_spec(path, logical_id, properties)
    parameters = _mapping(data.get("Parameters", {}), path, "Parameters")
    defaults = {
        name: str(spec["Default"])
        for name, spec in parameters.items()
        if isinstance(spec, dict) and isinstance(spec.get("Default"), str | int | float)
    }
    return Template(
        path=path,
        functions=functions,
        state_machines=state_machines,
        resource_types=resource_types,
        parameter_defaults=defaults,
    )


def _function_spec(
    path: Path, logical_id: str, properties: dict[str, Any], defaults: dict[str, Any]
) -> FunctionSpec:
    where = f"Resources.{logical_id}.Properties"
    handler = properties.get("Handler", defaults.get("Handler"))
    if not isinstance(handler, str) or not handler.strip():
        raise ConfigError(f"{path}: {where}.Handler is missing (nor set in Globals.Function)")
    timeout = _positive_int(
        properties.get("Timeout", defaults.get("Timeout", DEFAULT_TIMEOUT_SECONDS)), path, f"{where}.Timeout"
    )
    memory = _positive_int(
        properties.get("MemorySize", defaults.get("MemorySize", DEFAULT_MEMORY_MB)),
        path,
        f"{where}.MemorySize",
    )
    # SAM merges Environment.Variables key by key, the function's value winning.
    environment: dict[str, TemplateValue] = {}
    for source, key in ((defaults, "Globals.Function"), (properties, where)):
        env = _mapping(source.get("Environment", {}), path, f"{key}.Environment")
        environment.update(_mapping(env.get("Variables", {}), path, f"{key}.Environment.Variables"))
    code_uri_value = properties.get("CodeUri", defaults.get("CodeUri"))
    code_uri = (path.parent / code_uri_value).resolve() if isinstance(code_uri_value, str) else None
    if code_uri is not None and not code_uri.is_dir():
        code_uri = None  # an S3 URI or a zip: nothing to import from locally
    return FunctionSpec(
        logical_id=logical_id,
        handler=handler.strip(),
        timeout=timeout,
        memory_size=memory,
        environment=environment,
        code_uri=code_uri,
    )


def _state_machine_spec(path: Path, logical_id: str, properties: dict[str, Any]) -> StateMachineSpec:
    where = f"Resources.{logical_id}.Properties"
    uri = properties.get("DefinitionUri")
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(
            f"{path}: {where}.DefinitionUri is missing: the local runtime runs the ASL file it names "
            "(an inline Definition or an S3 location is not supported)"
        )
    substitutions = _mapping(
        properties.get("DefinitionSubstitutions", {}), path, f"{where}.DefinitionSubstitutions"
    )
    return StateMachineSpec(
        logical_id=logical_id,
        definition_path=(path.parent / uri.strip()).resolve(),
        substitutions=substitutions,
    )


def _mapping(value: Any, path: Path, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {key} must be a mapping, not {type(value).__name__}")
    return value


def _positive_int(value: Any, path: Path, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{path}: {key} must be a positive integer, not {value!r}")
    return value


# ------------------------------------------------------------------------------------------------------------
# Intrinsics and definitions
# ------------------------------------------------------------------------------------------------------------

_PSEUDO_PARAMETERS = {
    "AWS::Region": LOCAL_REGION,
    "AWS::AccountId": LOCAL_ACCOUNT_ID,
    "AWS::Partition": LOCAL_PARTITION,
    "AWS::StackName": LOCAL_STACK_NAME,
    "AWS::URLSuffix": "amazonaws.com",
}


def resolve(value: Any, refs: Mapping[str, str]) -> str:
    """Turn a template value into its local string.

    ``{"Ref": X}`` is ``refs[X]`` (pseudo parameters such as ``AWS::Region`` have local values);
    ``{"Fn::GetAtt": [X, A]}`` is ``refs["X.A"]``, and for an ``Arn`` that ``refs`` lacks, the local Lambda
    ARN of ``X`` (the only ARNs a definition substitutes are functions'); ``Fn::Sub``, ``Fn::Join``,
    ``Fn::Select`` and ``Fn::Split`` are evaluated; numbers and booleans become strings (as CloudFormation
    passes them to environment variables). :meth:`Template.local_refs` builds a complete ``refs``.

    Raises
    ------
    ConfigError
        An unknown reference, or an intrinsic the local runtime cannot evaluate (``Fn::If``, ...).
    """
    result = _resolve(value, refs)
    if isinstance(result, list):
        raise ConfigError(f"{_shown(value)} resolves to a list, not a string")
    return result


def _resolve(value: Any, refs: Mapping[str, str]) -> str | list[str]:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list):
        return [resolve(item, refs) for item in value]
    if not isinstance(value, dict) or len(value) != 1:
        raise ConfigError(f"cannot resolve {_shown(value)}: not a string or an intrinsic function")
    ((function, argument),) = value.items()
    if function == "Ref":
        return _ref(str(argument), refs)
    if function == "Fn::GetAtt":
        parts = argument.split(".", 1) if isinstance(argument, str) else argument
        if not isinstance(parts, list) or len(parts) != 2:
            raise ConfigError(f"Fn::GetAtt needs [LogicalId, Attribute], not {argument!r}")
        return _getatt(str(parts[0]), str(parts[1]), refs)
    if function == "Fn::Sub":
        return _sub(argument, refs)
    if function == "Fn::Join":
        if not isinstance(argument, list) or len(argument) != 2:
            raise ConfigError(f"Fn::Join needs [delimiter, [values]], not {argument!r}")
        items = _resolve(argument[1], refs)
        return str(argument[0]).join(items if isinstance(items, list) else [items])
    if function == "Fn::Select":
        if not isinstance(argument, list) or len(argument) != 2:
            raise ConfigError(f"Fn::Select needs [index, [values]], not {argument!r}")
        items = _resolve(argument[1], refs)
        index = int(resolve(argument[0], refs))
        if not isinstance(items, list) or not 0 <= index < len(items):
            raise ConfigError(f"Fn::Select index {index} is out of range of {items!r}")
        return items[index]
    if function == "Fn::Split":
        if not isinstance(argument, list) or len(argument) != 2:
            raise ConfigError(f"Fn::Split needs [delimiter, value], not {argument!r}")
        return resolve(argument[1], refs).split(str(argument[0]))
    raise ConfigError(f"{function} is not supported by the local runtime (in {_shown(value)})")


def _ref(name: str, refs: Mapping[str, str]) -> str:
    if name in refs:
        return refs[name]
    if name in _PSEUDO_PARAMETERS:
        return _PSEUDO_PARAMETERS[name]
    raise ConfigError(f"Ref {name!r} has no local value (known: {', '.join(sorted(refs)) or 'none'})")


def _getatt(logical_id: str, attribute: str, refs: Mapping[str, str]) -> str:
    key = f"{logical_id}.{attribute}"
    if key in refs:
        return refs[key]
    if attribute == "Arn":
        return lambda_arn(refs.get(logical_id, logical_id))
    raise ConfigError(f"Fn::GetAtt {key} has no local value")


def _sub(argument: Any, refs: Mapping[str, str]) -> str:
    if isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], dict):
        text, variables = str(argument[0]), {k: resolve(v, refs) for k, v in argument[1].items()}
    elif isinstance(argument, str):
        text, variables = argument, {}
    else:
        raise ConfigError(f"Fn::Sub needs a string or [string, {{variables}}], not {argument!r}")

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("!"):  # ${!Literal} is written as ${Literal}
            return "${" + name[1:] + "}"
        if name in variables:
            return variables[name]
        if "." in name:
            logical_id, attribute = name.split(".", 1)
            return _getatt(logical_id, attribute, refs)
        return _ref(name, refs)

    return _PLACEHOLDER.sub(replace, text)


def render_definition(spec: StateMachineSpec, refs: Mapping[str, str]) -> str:
    """The state machine's ASL text with every ``${Name}`` replaced by its resolved substitution.

    Raises
    ------
    ConfigError
        The ASL file is missing, or uses a ``${Name}`` that ``DefinitionSubstitutions`` does not define.
    """
    try:
        text = spec.definition_path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"{spec.definition_path}: cannot read the definition of {spec.logical_id} "
            f"(its DefinitionUri): {exc.strerror or exc}"
        ) from exc
    values: dict[str, str] = {}
    for name, value in spec.substitutions.items():
        try:
            values[name] = resolve(value, refs)
        except ConfigError as exc:
            raise ConfigError(f"DefinitionSubstitutions.{name} of {spec.logical_id}: {exc}") from exc
    missing = sorted({name for name in _PLACEHOLDER.findall(text) if name not in values})
    if missing:
        raise ConfigError(
            f"{spec.definition_path} uses {', '.join('${' + name + '}' for name in missing)}, which "
            f"DefinitionSubstitutions of {spec.logical_id} does not define"
        )
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
