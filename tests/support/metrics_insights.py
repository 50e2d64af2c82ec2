"""A small CloudWatch evaluator for the template's Metrics Insights alarms, over the EMF records the handlers
print: enough to test that the alarms fire, and stay quiet, where they should.

Only the query subset the template uses: ``SELECT MAX|MIN|SUM|AVG|COUNT(metric) FROM SCHEMA(ns, dim, ...)
[WHERE dim = 'v' [AND dim != 'w' ...]] [GROUP BY dim] [ORDER BY FUNC() ASC|DESC] [LIMIT n]``. The alarm is
evaluated as CloudWatch does a multi-time-series alarm: each returned series (one per group) is a
contributor, judged over its last ``EvaluationPeriods`` periods with ``DatapointsToAlarm``, the threshold
and comparison, and ``TreatMissingData`` for its empty periods; the alarm is in ALARM if any contributor
is. A query that returns no series at all leaves the alarm to ``TreatMissingData``. SCHEMA matches metrics
whose dimension set is exactly the listed one, as Metrics Insights does.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_QUERY = re.compile(
    r"SELECT\s+(?P<func>MAX|MIN|SUM|AVG|COUNT)\((?P<metric>\w+)\)\s+"
    r"FROM\s+SCHEMA\((?P<schema>[^)]*)\)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+GROUP\s+BY\s+(?P<group>\w+))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>MAX|MIN|SUM|AVG|COUNT)\(\)\s*(?P<direction>ASC|DESC)?)?"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE,
)
_CONDITION = re.compile(r"(\w+)\s*(=|!=)\s*'([^']*)'")
_AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "MAX": max,
    "MIN": min,
    "SUM": lambda values: float(sum(values)),
    "AVG": statistics.fmean,
    "COUNT": lambda values: float(len(values)),
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": lambda v, t: v > t,
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}


@dataclass(frozen=True)
class Datapoint:
    """One value of one metric, as an EMF record carries it."""

    timestamp_ms: int
    namespace: str
    name: str
    dimensions: Mapping[str, str]
    value: float


def datapoints(records: Iterable[Mapping[str, Any]]) -> list[Datapoint]:
    """Every value of every metric of the EMF ``records`` (one JSON object per flushed metric set)."""
    points = []
    for record in records:
        meta = record["_aws"]
        for directive in meta["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dimensions = {name: str(record[name]) for name in dimension_set}
                for metric in directive["Metrics"]:
                    raw = record[metric["Name"]]
                    for value in raw if isinstance(raw, list) else [raw]:
                        points.append(
                            Datapoint(
                                int(meta["Timestamp"]),
                                directive["Namespace"],
                                metric["Name"],
                                dimensions,
                                float(value),
                            )
                        )
    return points


def emf_records(printed: str) -> list[dict[str, Any]]:
    """The EMF objects among printed lines (Powertools prints one per flush)."""
    records = []
    for line in printed.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            records.append(json.loads(line))
    return records


@dataclass(frozen=True)
class Query:
    func: str
    metric: str
    namespace: str
    schema: frozenset[str]
    conditions: tuple[tuple[str, str, str], ...]
    group: str | None
    order: str | None
    descending: bool
    limit: int | None

    @classmethod
    def parse(cls, text: str) -> Query:
        match = _QUERY.match(" ".join(text.split()))
        if not match:
            raise ValueError(f"not a query this evaluator reads: {text!r}")
        namespace, *dims = [part.strip().strip('"') for part in match["schema"].split(",")]
        conditions: list[tuple[str, str, str]] = []
        if match["where"]:
            for clause in re.split(r"\s+AND\s+", match["where"], flags=re.IGNORECASE):
                condition = _CONDITION.fullmatch(clause.strip())
                if not condition:
                    raise ValueError(f"not a WHERE clause this evaluator reads: {clause!r}")
                conditions.append((condition[1], condition[2], condition[3]))
        return cls(
            func=match["func"].upper(),
            metric=match["metric"],
            namespace=namespace,
            schema=frozenset(dims),
            conditions=tuple(conditions),
            group=match["group"],
            order=match["order"].upper() if match["order"] else None,
            descending=(match["direction"] or "ASC").upper() == "DESC",
            limit=int(match["limit"]) if match["limit"] else None,
        )

    def matches(self, point: Datapoint) -> bool:
        if (point.namespace, point.name) != (self.namespace, self.metric):
            return False
        if frozenset(point.dimensions) != self.schema:
            return False
        for dimension, operator, value in self.conditions:
            equal = point.dimensions.get(dimension) == value
            if equal != (operator == "="):
                return False
        return True

    def series(self, points: Iterable[Datapoint], start_ms: int, end_ms: int) -> dict[str, list[Datapoint]]:
        """The matching points in (start, end], by group (one group, ``""``, without GROUP BY), ordered
        and limited as the query says."""
        groups: dict[str, list[Datapoint]] = {}
        for point in points:
            if start_ms < point.timestamp_ms <= end_ms and self.matches(point):
                key = point.dimensions.get(self.group, "") if self.group else ""
                groups.setdefault(key, []).append(point)
        names = sorted(groups)
        if self.order:
            rank = _AGGREGATES[self.order]
            names.sort(key=lambda name: rank([p.value for p in groups[name]]), reverse=self.descending)
        if self.limit is not None:
            names = names[: self.limit]
        return {name: groups[name] for name in names}


@dataclass(frozen=True)
class Alarm:
    """An AWS::CloudWatch::Alarm whose one returned query is a Metrics Insights query."""

    name: str
    query: Query
    period_s: int
    evaluation_periods: int
    datapoints_to_alarm: int
    threshold: float
    comparison: str
    treat_missing: str

    @classmethod
    def from_template(cls, template: Mapping[str, Any], logical_id: str) -> Alarm:
        properties = template["Resources"][logical_id]["Properties"]
        (returned,) = [m for m in properties["Metrics"] if m.get("ReturnData", True)]
        evaluation_periods = int(properties["EvaluationPeriods"])
        return cls(
            name=logical_id,
            query=Query.parse(returned["Expression"]),
            period_s=int(returned["Period"]),
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=int(properties.get("DatapointsToAlarm", evaluation_periods)),
            threshold=float(properties["Threshold"]),
            comparison=properties["ComparisonOperator"],
            treat_missing=properties.get("TreatMissingData", "missing"),
        )

    def evaluate(self, points: Iterable[Datapoint], at_ms: int, previous: str = "OK") -> Evaluation:
        """The alarm's state when evaluated at ``at_ms``: its window is the ``EvaluationPeriods`` periods
        up to it (a point stamped ``at_ms`` is in it)."""
        period_ms = self.period_s * 1000
        start = at_ms - period_ms * self.evaluation_periods
        found = self.query.series(points, start, at_ms)
        if not found:
            state = {"breaching": "ALARM", "notBreaching": "OK", "ignore": previous}.get(
                self.treat_missing, "INSUFFICIENT_DATA"
            )
            return Evaluation(state)
        aggregate, compare = _AGGREGATES[self.query.func], _COMPARE[self.comparison]
        contributors: dict[str, list[float | None]] = {}
        breaching = []
        for name, series in found.items():
            values: list[float | None] = []
            for k in range(self.evaluation_periods):
                low, high = start + k * period_ms, start + (k + 1) * period_ms
                bucket = [p.value for p in series if low < p.timestamp_ms <= high]
                values.append(aggregate(bucket) if bucket else None)
            contributors[name] = values
            breaches = sum(
                1
                for value in values
                if (value is None and self.treat_missing == "breaching")
                or (value is not None and compare(value, self.threshold))
            )
            if breaches >= self.datapoints_to_alarm:
                breaching.append(name)
        return Evaluation("ALARM" if breaching else "OK", contributors, sorted(breaching))


@dataclass(frozen=True)
class Evaluation:
    state: str
    #: Per contributor (group value), its value in each evaluated period (None: no data).
    series: dict[str, list[float | None]] = field(default_factory=dict)
    #: The contributors in ALARM.
    breaching: list[str] = field(default_factory=list)
