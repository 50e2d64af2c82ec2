"""A payment's statuses and the transitions between them: declared as data, checked at import, compiled
into the DynamoDB condition that guards each transition.

The declaration (:data:`TRANSITIONS`) is the only place the rules live. :class:`Graph` checks it when the
module is imported (every state known and reachable from the initial one, no cycle, terminal states without
exits, every other state with one), and compiles, for each state ``X`` that can be entered, the condition of
the write that moves a payment to ``X``::

    #status IN (:from_0, :from_1, ...) AND #version = :expected

where ``:from_i`` are the predecessors of ``X`` (the states with an edge to ``X``) and ``:expected`` is the
version the caller saw. The store sends that condition with every transition: DynamoDB refuses the write
unless the payment is, at that instant, in a state that may move to ``X`` *and* still at the version the
caller decided on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class Status(StrEnum):
    CREATED = "CREATED"
    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    SETTLED = "SETTLED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


#: The payment's life, as data: each state and the states it may move to.
TRANSITIONS: Mapping[Status, frozenset[Status]] = MappingProxyType(
    {
        Status.CREATED: frozenset({Status.SUBMITTED, Status.CANCELLED}),
        Status.SUBMITTED: frozenset({Status.PENDING, Status.CANCELLED}),
        Status.PENDING: frozenset({Status.SETTLED, Status.FAILED}),
        Status.SETTLED: frozenset(),
        Status.FAILED: frozenset(),
        Status.CANCELLED: frozenset(),
    }
)
INITIAL = Status.CREATED
TERMINAL: frozenset[Status] = frozenset({Status.SETTLED, Status.FAILED, Status.CANCELLED})
#: The state that means "paid": entered at most once, since the graph has no cycle.
PAID = Status.SETTLED

#: Attribute names of the payment item the guard reads.
STATUS_ATTRIBUTE = "status"
VERSION_ATTRIBUTE = "version"


class GraphError(ValueError):
    """The declared graph breaks a rule: every problem found, one per line."""


@dataclass(frozen=True)
class Guard:
    """The condition of a transition to ``to_status``, ready for a DynamoDB request.

    ``values`` holds the predecessors (``:from_<i>``); the caller adds ``:expected`` (:meth:`values_for`).
    """

    to_status: str
    predecessors: tuple[str, ...]
    expression: str
    names: Mapping[str, str]
    values: Mapping[str, Any]

    def values_for(self, expected_version: int) -> dict[str, Any]:
        """The expression's values (low-level DynamoDB form) for a caller that saw ``expected_version``."""
        return {**self.values, ":expected": {"N": str(expected_version)}}


class Graph:
    """A checked transition graph and its compiled guards.

    ``transitions`` maps each state to the states it may move to; ``initial`` is where every payment starts;
    ``terminal`` names the states nothing may leave. Raises :class:`GraphError` when:

    - a target is not a declared state, or the initial or a terminal state is not declared;
    - a state is not reachable from ``initial``;
    - a terminal state has an exit, or a non-terminal state has none (an undeclared dead end);
    - the graph has a cycle (statuses only move forward, so a payment's history is bounded and no state,
      the paid one included, can be entered twice).
    """

    def __init__(
        self,
        transitions: Mapping[Status, Iterable[Status]] | Mapping[str, Iterable[str]],
        *,
        initial: str,
        terminal: Iterable[str],
    ) -> None:
        self.transitions: Mapping[str, frozenset[str]] = MappingProxyType(
            {str(state): frozenset(str(t) for t in targets) for state, targets in transitions.items()}
        )
        self.initial = str(initial)
        self.terminal = frozenset(str(state) for state in terminal)
        problems = _problems(self.transitions, self.initial, self.terminal)
        if problems:
            raise GraphError("invalid transition graph:\n" + "\n".join(f"- {p}" for p in problems))
        self.states: tuple[str, ...] = tuple(self.transitions)
        self.predecessors: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {
                state: tuple(sorted(s for s, targets in self.transitions.items() if state in targets))
                for state in self.states
            }
        )
        self.guards: Mapping[str, Guard] = MappingProxyType(
            {state: compile_guard(state, preds) for state, preds in self.predecessors.items() if preds}
        )
        #: The longest path from ``initial``, in edges: at most that many transitions after a create.
        self.longest_path = _longest_path(self.transitions, self.initial)

    def is_edge(self, from_status: str, to_status: str) -> bool:
        return to_status in self.transitions.get(from_status, ())

    def guard(self, to_status: str) -> Guard | None:
        """The compiled condition of a transition to ``to_status``; None if no state may move there."""
        return self.guards.get(str(to_status))

    def path_to(self, state: str) -> list[str]:
        """A shortest path of states from the initial state to ``state`` (both included)."""
        paths = {self.initial: [self.initial]}
        frontier = [self.initial]
        while frontier:
            following = []
            for current in frontier:
                for target in sorted(self.transitions[current]):
                    if target not in paths:
                        paths[target] = [*paths[current], target]
                        following.append(target)
            frontier = following
        return paths[str(state)]


def compile_guard(to_status: str, predecessors: Iterable[str]) -> Guard:
    """``#status IN (:from_0, ...) AND #version = :expected`` for a transition to ``to_status``."""
    preds = tuple(sorted(predecessors))
    if not preds:
        raise GraphError(f"no state moves to {to_status}: a transition there cannot be guarded")
    placeholders = [f":from_{i}" for i in range(len(preds))]
    return Guard(
        to_status=to_status,
        predecessors=preds,
        expression=f"#status IN ({', '.join(placeholders)}) AND #version = :expected",
        names=MappingProxyType({"#status": STATUS_ATTRIBUTE, "#version": VERSION_ATTRIBUTE}),
        values=MappingProxyType({p: {"S": s} for p, s in zip(placeholders, preds, strict=True)}),
    )


def _problems(transitions: Mapping[str, frozenset[str]], initial: str, terminal: frozenset[str]) -> list[str]:
    states = set(transitions)
    problems = []
    if initial not in states:
        problems.append(f"the initial state {initial} is not declared")
    problems += [f"terminal state {t} is not declared" for t in sorted(terminal - states)]
    for state, targets in transitions.items():
        problems += [f"{state} -> {t}: {t} is not declared" for t in sorted(targets - states)]
        if state in terminal and targets:
            problems.append(f"terminal state {state} has exits: {', '.join(sorted(targets))}")
        if state not in terminal and not targets:
            problems.append(f"{state} has no exit and is not declared terminal")
    if problems:
        return problems  # reachability and cycles mean little over undeclared states
    reached, frontier = {initial}, [initial]
    while frontier:
        following = [t for s in frontier for t in transitions[s] if t not in reached]
        reached.update(following)
        frontier = following
    problems += [f"{s} is not reachable from {initial}" for s in sorted(states - reached)]
    cycle = _cycle(transitions)
    if cycle:
        problems.append(f"cycle: {' -> '.join(cycle)} (statuses only move forward)")
    return problems


def _cycle(transitions: Mapping[str, frozenset[str]]) -> list[str] | None:
    """A cycle of the graph as a list of states (first == last), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(state: str) -> list[str] | None:
        if state in path:
            return [*path[path.index(state) :], state]
        if state in done:
            return None
        path.append(state)
        for target in sorted(transitions[state]):
            found = visit(target)
            if found:
                return found
        path.pop()
        done.add(state)
        return None

    for state in transitions:
        found = visit(state)
        if found:
            return found
    return None


def _longest_path(transitions: Mapping[str, frozenset[str]], initial: str) -> int:
    def longest(state: str) -> int:
        return max((1 + longest(t) for t in transitions[state]), default=0)

    return longest(initial)


#: The payments graph, checked and compiled once, when this module is imported.
PAYMENT_GRAPH = Graph(TRANSITIONS, initial=INITIAL, terminal=TERMINAL)
