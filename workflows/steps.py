"""The Step Functions Data Science SDK, imported once, quietly, and extended for newer ASL fields.

``stepfunctions`` 2.3.0 (2022) predates a few Amazon States Language fields that our state machines use:

- ``MaxDelaySeconds`` and ``JitterStrategy`` in a retrier (:class:`Retry`), which cap and spread the
  exponential backoff so that many executions retrying a throttled table do not retry in lock step;
- ``ErrorPath`` and ``CausePath`` in a ``Fail`` state (:class:`Fail`), which let an execution fail with the
  error type and cause it caught, instead of a fixed name.

The SDK checks every keyword against the enum ``Field`` of the fields it knows and renders ``snake_case``
keywords as ``PascalCase`` keys. The subclasses here only widen the set of allowed keywords, with an enum of
their own (:class:`ExtraField`), so the SDK's own rendering does the rest.

This module is the only place that imports the SDK. The import has side effects that we undo or silence:
``sagemaker`` warns about its v2 deprecation and logs its config lookups to stdout, and ``stepfunctions``
sets the *root* logger to ERROR, which would hide every other library's warnings in the same process.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
_root_level = logging.getLogger().level
from stepfunctions.steps import states as _sdk  # noqa: E402
from stepfunctions.steps.choice_rule import ChoiceRule  # noqa: E402
from stepfunctions.steps.states import Catch, Chain, Choice, Graph, Pass, State, Succeed, Task  # noqa: E402

logging.getLogger().setLevel(_root_level)

__all__ = [
    "STATE_KEY_ORDER",
    "Catch",
    "Chain",
    "Choice",
    "ChoiceRule",
    "ExtraField",
    "Fail",
    "Graph",
    "Pass",
    "Retry",
    "State",
    "Succeed",
    "Task",
    "to_asl_json",
]


class ExtraField(Enum):
    """ASL fields the SDK does not know, as the ``snake_case`` keywords our subclasses accept."""

    MaxDelaySeconds = "max_delay_seconds"
    JitterStrategy = "jitter_strategy"
    ErrorPath = "error_path"
    CausePath = "cause_path"


class Retry(_sdk.Retry):
    """A retrier that also accepts ``max_delay_seconds`` and ``jitter_strategy`` (``"FULL"``/``"NONE"``)."""

    def allowed_fields(self) -> list[Enum]:
        return [*super().allowed_fields(), ExtraField.MaxDelaySeconds, ExtraField.JitterStrategy]


class Fail(_sdk.Fail):
    """A Fail state that also accepts ``error_path`` and ``cause_path`` (JSONPaths into its input)."""

    def __init__(self, state_id: str, **kwargs: Any) -> None:
        if {"error", "error_path"} <= kwargs.keys() or {"cause", "cause_path"} <= kwargs.keys():
            raise ValueError("A Fail state takes Error or ErrorPath, and Cause or CausePath, not both.")
        super().__init__(state_id, **kwargs)

    def allowed_fields(self) -> list[Enum]:
        return [*super().allowed_fields(), ExtraField.ErrorPath, ExtraField.CausePath]


#: Key order of a rendered state: what it is and why first, then what it does, then where it goes. The SDK
#: emits keys in keyword order with ``Type`` after them; a fixed order makes the committed JSON easy to
#: review and independent of how a definition happens to pass its keywords.
STATE_KEY_ORDER = (
    "Type",
    "Comment",
    "Resource",
    "InputPath",
    "Parameters",
    "ResultSelector",
    "ResultPath",
    "OutputPath",
    "TimeoutSeconds",
    "HeartbeatSeconds",
    "Choices",
    "Default",
    "Error",
    "ErrorPath",
    "Cause",
    "CausePath",
    "Retry",
    "Catch",
    "Next",
    "End",
)


def _ordered_state(state: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(state.keys() - set(STATE_KEY_ORDER))
    if unknown:
        raise ValueError(f"add {unknown} to STATE_KEY_ORDER so that rendering stays stable")
    return {key: state[key] for key in STATE_KEY_ORDER if key in state}


def to_asl_json(graph: Graph, state_order: Iterable[State]) -> str:
    """Render ``graph`` as the committed ASL text: states in ``state_order``, keys in a fixed order.

    ``state_order`` must name every state of the graph exactly once (the SDK lists them in traversal order,
    default branch first; a definition lists them in reading order instead). The text is
    ``json.dumps(indent=2)`` plus a trailing newline, identical on every run.
    """
    definition = graph.to_dict()
    rendered: dict[str, Any] = definition["States"]
    order = [state.state_id for state in state_order]
    if sorted(order) != sorted(rendered):
        raise ValueError(f"state_order {order} does not list the graph's states {sorted(rendered)} once each")
    definition["States"] = {state_id: _ordered_state(rendered[state_id]) for state_id in order}
    return json.dumps(definition, indent=2, sort_keys=False) + "\n"
