"""What runs cost on AWS, from the other benchmarks' counts: writes ``bench/results/cost.json``.

Runs nothing itself: it prices, with :mod:`leanopsctl.cost` (the model behind ``leanops cost``), what
``bench/workflow.py`` and ``bench/protocol.py`` counted (``bench/results/workflow.json``, ``protocol.json``)
at the template's memory sizes and architectures, with what ``template.yaml`` sets up around the runs
(schedules, log levels, tracing, alarms) and the handlers' S3 requests, log lines and metrics that
``tests/unit/test_cost.py`` measures, with the price table of :mod:`leanopsctl.prices`.

Run it from the repository root after the other two (``make bench`` does)::

    python bench/cost.py                       # writes bench/results/cost.json
    python bench/cost.py --output /tmp/cost.json

The results path is printed on stdout, a short summary on stderr. Exit code 2 when an input is missing or
unusable (the reason is one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from common import REPO_ROOT, RESULTS_DIR, argument_parser, output_help, run_and_report
from leanopsctl.cost import (
    COMPONENTS,
    MONTHLY_COMPONENTS,
    WORKFLOW_TYPES,
    Scenario,
    Usage,
    estimate,
    load_usage,
)
from leanopsctl.prices import PRICES

from leanops.errors import LeanopsError

DEFAULT_OUTPUT = RESULTS_DIR / "cost.json"
TEMPLATE = REPO_ROOT / "template.yaml"

#: The issue's two scenarios: (runs per day of each topic, topics).
SCENARIOS = {
    "one_topic_every_5_minutes": (24 * 60 // 5, 1),
    "1000_topics_every_minute": (24 * 60, 1000),
}
#: Run sizes priced besides one batch (100 is the sample topic's max_batches_per_run).
BATCHES = (1, 10, 100)

NOTES = [
    "usd_per_million_runs prices steady one-batch runs (the topic has committed before, one new batch) with "
    "the components billed per run: counts from workflow.json (transitions, Lambda invocations, task and "
    "execution durations) and protocol.json (DynamoDB write/read units, plus the run-key claim), the "
    "template's MemorySize, Architectures, log levels, tracing and schedules, the handlers' S3 requests "
    "and log lines (inputs.handlers: measured by tests/unit/test_cost.py on moto), and "
    "leanopsctl/prices.py (prices has the whole table, its date, region and sources). X-Ray is priced at "
    "one trace per run there (a low rate: every run in the default rule's reservoir).",
    "components_usd_per_million_runs breaks that price down as leanops cost does: Step Functions "
    "(Standard: transitions; Express: requests + duration), Lambda requests, Lambda duration, DynamoDB, "
    "S3 requests (an s3:// source and sink), EventBridge Scheduler, CloudWatch Logs, X-Ray.",
    "monthly: what is billed per month, not per run: custom metrics per topic and alarm metrics per topic "
    "and per deployment (by workflow type), in units and in dollars.",
    "scenarios: usd_per_month for both types with every component (the monthly ones included, X-Ray "
    "sampled at the scenario's rate), a month being 730 hours; dominant: the component that costs most; "
    "standard_over_express: the ratio of the totals; sfn_lambda_dynamodb_standard_over_express: the ratio "
    "the model gave before it priced S3, Scheduler, logs, X-Ray, metrics and alarms. leanops cost "
    "--runs-per-day N --topics N prints the same, side by side.",
    "usd_per_million_runs_by_batches: runs of N batches, each extra batch at its measured rate (per-run "
    "components).",
    "standard_transitions_share: the share of a Standard run's per-run cost that is transitions; "
    "standard_over_express: how many times cheaper Express is per run (design §7).",
]
#: The model's components before S3, Scheduler, logs, X-Ray, metrics and alarms were priced.
EARLIER_COMPONENTS = ("step_functions", "lambda_requests", "lambda_duration", "dynamodb")


def relative(path: str) -> str:
    """``path`` relative to the repository root when it lies inside it (results stay machine-free)."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path


def price(
    usage: Usage, workflow_type: str, runs_per_day: float = 1, topics: int = 1, batches: int = 1
) -> Any:
    return estimate(usage, Scenario(workflow_type, runs_per_day, topics, batches))


def per_run(report: dict[str, Any]) -> float:
    """The price per million runs of the components billed per run (the monthly ones left out)."""
    components = report["components"].values()
    return round(sum(c["usd_per_million_runs"] for c in components if c["billed"] == "per run"), 6)


def results(usage: Usage) -> dict[str, Any]:
    """cost.json's content."""
    one_batch = {kind: price(usage, kind) for kind in WORKFLOW_TYPES}
    per_million = {kind: per_run(one_batch[kind]) for kind in WORKFLOW_TYPES}
    run_components = [key for key in COMPONENTS if key not in MONTHLY_COMPONENTS]
    scenarios: dict[str, Any] = {}
    for name, (runs_per_day, topics) in SCENARIOS.items():
        reports = {kind: price(usage, kind, runs_per_day, topics) for kind in WORKFLOW_TYPES}
        monthly = {kind: reports[kind]["total"]["usd_per_month"] for kind in WORKFLOW_TYPES}
        earlier = {
            kind: sum(reports[kind]["components"][key]["usd_per_month"] for key in EARLIER_COMPONENTS)
            for kind in WORKFLOW_TYPES
        }
        scenarios[name] = {
            "runs_per_day": runs_per_day,
            "topics": topics,
            "runs_per_month": reports[WORKFLOW_TYPES[0]]["runs_per_month"],
            "usd_per_month": monthly,
            "components_usd_per_month": {
                kind: {key: reports[kind]["components"][key]["usd_per_month"] for key in COMPONENTS}
                for kind in WORKFLOW_TYPES
            },
            "dominant": {kind: reports[kind]["dominant"] for kind in WORKFLOW_TYPES},
            "standard_over_express": round(monthly["standard"] / monthly["express"], 2),
            "sfn_lambda_dynamodb_standard_over_express": round(earlier["standard"] / earlier["express"], 1),
            "warnings": sorted({w for kind in WORKFLOW_TYPES for w in reports[kind]["warnings"]}),
        }
    standard = one_batch["standard"]
    inputs = standard["inputs"]
    for entry in inputs.values():
        if "path" in entry:
            entry["path"] = relative(entry["path"])
    metric_price = float(PRICES["cloudwatch_metrics"]["usd_per_metric_month"])
    alarm_price = float(PRICES["cloudwatch_metrics"]["usd_per_alarm_metric_month"])
    return {
        "usd_per_million_runs": per_million,
        "components_usd_per_million_runs": {
            kind: {key: one_batch[kind]["components"][key]["usd_per_million_runs"] for key in run_components}
            for kind in WORKFLOW_TYPES
        },
        "monthly": {
            "custom_metrics_per_topic": usage.metrics_per_topic,
            "alarm_metrics_per_topic": usage.alarm_metrics_per_topic,
            "alarm_metrics_per_deployment": dict(usage.alarm_metrics_per_deployment),
            "usd_per_topic_month": round(
                usage.metrics_per_topic * metric_price + usage.alarm_metrics_per_topic * alarm_price, 6
            ),
            "usd_per_deployment_month": {
                kind: round(usage.alarm_metrics_per_deployment.get(kind, 0.0) * alarm_price, 6)
                for kind in WORKFLOW_TYPES
            },
        },
        "usage_per_run": standard["usage_per_run"],
        "usd_per_million_runs_by_batches": {
            str(n): {kind: per_run(price(usage, kind, batches=n)) for kind in WORKFLOW_TYPES} for n in BATCHES
        },
        "standard_transitions_share": round(
            standard["components"]["step_functions"]["usd_per_million_runs"] / per_million["standard"], 4
        ),
        "standard_over_express": round(per_million["standard"] / per_million["express"], 1),
        "scenarios": scenarios,
        "prices": PRICES,
        "inputs": inputs,
        "assumptions": standard["assumptions"],
        "warnings": sorted({w for kind in WORKFLOW_TYPES for w in one_batch[kind]["warnings"]}),
        "notes": NOTES,
    }


def print_summary(data: dict[str, Any]) -> None:
    """A few lines for a human, on stderr."""
    per_million = data["usd_per_million_runs"]
    lines = [
        f"one-batch run: ${per_million['standard']:,.2f} per million runs on Standard "
        f"({data['standard_transitions_share']:.0%} transitions), ${per_million['express']:,.2f} on Express "
        f"({data['standard_over_express']:g}x cheaper)",
    ]
    for name, scenario in data["scenarios"].items():
        monthly, dominant = scenario["usd_per_month"], scenario["dominant"]
        lines.append(
            f"{name.replace('_', ' ')}: ${monthly['standard']:,.2f} a month on Standard "
            f"({dominant['standard']['label']} {dominant['standard']['share']:.0%}), "
            f"${monthly['express']:,.2f} on Express ({dominant['express']['label']} "
            f"{dominant['express']['share']:.0%}): {scenario['standard_over_express']:g}x "
            f"({scenario['runs_per_month']:,.0f} runs)"
        )
    lines += [f"warning: {warning}" for warning in data["warnings"]]
    print("\n".join(lines), file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument(
        "--results", type=Path, default=RESULTS_DIR, help="folder with workflow.json and protocol.json"
    )
    parser.add_argument("--template", type=Path, default=TEMPLATE, help="the SAM template")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=output_help(DEFAULT_OUTPUT))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Price the counted runs; print the results path on stdout. Exit 2 when an input is missing or bad."""
    args = parse_args(argv)
    return run_and_report(
        "bench/cost.py",
        args.output,
        lambda: results(load_usage(args.results, args.template)),
        print_summary,
        errors=(LeanopsError,),
        exit_code=2,
        one_line=True,
    )


if __name__ == "__main__":
    sys.exit(main())
