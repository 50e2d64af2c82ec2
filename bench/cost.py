"""What runs cost on AWS, from the other benchmarks' counts: writes ``bench/results/cost.json``.

Runs nothing itself: it prices, with :mod:`leanopsctl.cost` (the model behind ``leanops cost``), what
``bench/workflow.py`` and ``bench/protocol.py`` counted (``bench/results/workflow.json``, ``protocol.json``)
at the template's memory sizes and architectures, with the price table of :mod:`leanopsctl.prices`.

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
from leanopsctl.cost import COMPONENTS, WORKFLOW_TYPES, Scenario, Usage, estimate, load_usage
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
    "usd_per_million_runs prices steady one-batch runs (the topic has committed before, one new batch): "
    "counts from workflow.json (transitions, Lambda invocations, task and execution durations) and "
    "protocol.json (DynamoDB write/read units, plus the run-key claim), the template's MemorySize and "
    "Architectures, and leanops/prices.py (prices has the whole table, its date, region and sources).",
    "components_usd_per_million_runs breaks the one-batch price down as leanops cost does: Step Functions "
    "(Standard: transitions; Express: requests + duration), Lambda requests, Lambda duration, DynamoDB.",
    "scenarios: usd_per_month for both types, a month being 730 hours; leanops cost --runs-per-day N "
    "--topics N --type T prints the same.",
    "usd_per_million_runs_by_batches: runs of N batches, each extra batch at its measured rate.",
    "standard_transitions_share: the share of a Standard run's cost that is transitions (design §7 "
    "expects ~95%); standard_over_express: how many times cheaper Express is (design §7: ~20-50x).",
]


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


def results(usage: Usage) -> dict[str, Any]:
    """cost.json's content."""
    one_batch = {kind: price(usage, kind) for kind in WORKFLOW_TYPES}
    per_million = {kind: one_batch[kind]["total"]["usd_per_million_runs"] for kind in WORKFLOW_TYPES}
    scenarios: dict[str, Any] = {}
    for name, (runs_per_day, topics) in SCENARIOS.items():
        reports = {kind: price(usage, kind, runs_per_day, topics) for kind in WORKFLOW_TYPES}
        scenarios[name] = {
            "runs_per_day": runs_per_day,
            "topics": topics,
            "runs_per_month": reports[WORKFLOW_TYPES[0]]["runs_per_month"],
            "usd_per_month": {kind: reports[kind]["total"]["usd_per_month"] for kind in WORKFLOW_TYPES},
            "components_usd_per_month": {
                kind: {key: reports[kind]["components"][key]["usd_per_month"] for key in COMPONENTS}
                for kind in WORKFLOW_TYPES
            },
            "warnings": sorted({w for kind in WORKFLOW_TYPES for w in reports[kind]["warnings"]}),
        }
    standard = one_batch["standard"]
    inputs = standard["inputs"]
    for entry in inputs.values():
        entry["path"] = relative(entry["path"])
    return {
        "usd_per_million_runs": per_million,
        "components_usd_per_million_runs": {
            kind: {key: one_batch[kind]["components"][key]["usd_per_million_runs"] for key in COMPONENTS}
            for kind in WORKFLOW_TYPES
        },
        "usage_per_run": standard["usage_per_run"],
        "usd_per_million_runs_by_batches": {
            str(n): {
                kind: price(usage, kind, batches=n)["total"]["usd_per_million_runs"]
                for kind in WORKFLOW_TYPES
            }
            for n in BATCHES
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
        monthly = scenario["usd_per_month"]
        lines.append(
            f"{name.replace('_', ' ')}: ${monthly['standard']:,.2f} a month on Standard, "
            f"${monthly['express']:,.2f} on Express ({scenario['runs_per_month']:,.0f} runs)"
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
