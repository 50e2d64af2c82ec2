"""In the cloud the tasks load the same topics file and processor code as locally (design §4).

The function package is built by ``leanopsctl.deploy.bundle`` (unit tests below, each on its own folder)
and, for real, by ``sam build`` through the root Makefile (the last tests run ``make sam-build``, cached,
offline, and read ``.aws-sam/build``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from leanopsctl.deploy import bundle

from leanops.errors import ConfigError
from tests.deploy.conftest import REPO, TOPICS_PATH
from tests.workflows.cfn_yaml import load_template

BUILD = REPO / ".aws-sam" / "build"
PROCESSOR = REPO / "examples" / "vehicle_telemetry" / "processor.py"

#: Runs where Lambda would: the package as cwd and first on sys.path. Prints where each module came from.
PROBE = """
import json, sys
from leanops.config import load_topics
from leanops.batch import load_processor
import leanops.handlers.process as handler
topics = load_topics("topics.yaml")
processor = load_processor(topics.topic("vehicle_telemetry").processor, topics.folder)
print(json.dumps({
    "handler": handler.__file__,
    "processor": sys.modules[processor.__module__].__file__,
    "yaml": sys.modules["yaml"].__file__,
    "powertools": sys.modules["aws_lambda_powertools"].__file__,
}))
"""


def probe(package: Path, *extra_path: Path, isolated: bool = False) -> dict[str, str]:
    """Import the process handler and the topic's processor from ``package`` in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (package, *extra_path))
    env["LEANOPS_CONFIG"] = "topics.yaml"
    command = [sys.executable, *(["-S"] if isolated else []), "-c", PROBE]
    result = subprocess.run(
        command, cwd=package, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


# --- leanopsctl.deploy.bundle -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package")
    bundle.build_bundle(TOPICS_PATH, REPO / "functions", out)
    return out


def test_package_holds_the_code_the_topics_file_and_its_processor(package: Path) -> None:
    files = files_under(package)
    assert (package / "topics.yaml").read_bytes() == TOPICS_PATH.read_bytes()
    assert (package / "examples/vehicle_telemetry/processor.py").read_bytes() == PROCESSOR.read_bytes()
    assert {"leanops/handlers/process.py", "leanops/tasks.py"} <= files


def test_the_package_is_exactly_the_handlers_import_closure(package: Path) -> None:
    # What a fresh interpreter loads when it imports every handler is packaged, and the package holds nothing
    # of the CodeUri beyond the closure read from the source (lazy imports included).
    code = {f for f in files_under(package) if f.startswith("leanops/")}
    assert code == bundle.handler_import_closure(REPO / "functions")
    loaded = imported_leanops_files(package)
    assert loaded <= code, f"imported but not packaged: {sorted(loaded - code)}"
    assert "leanops/protocol/memory.py" not in code, "the in-memory store is for tests, never for Lambda"
    assert not [f for f in files_under(package) if f.startswith("leanopsctl/")]


#: Imports every handler, then prints the leanops modules loaded and the operator-side packages seen.
CLOSURE_PROBE = """
import json, pkgutil, sys, importlib
import leanops.handlers
for info in pkgutil.iter_modules(leanops.handlers.__path__):
    importlib.import_module(f"leanops.handlers.{info.name}")
print(json.dumps({
    "leanops": sorted(m.__file__ for n, m in sys.modules.items() if n.split(".")[0] == "leanops"),
    "operator": sorted(n for n in sys.modules if n.split(".")[0] in FORBIDDEN),
}))
"""
#: Packages of the operator's side that a Lambda function must never carry or load.
FORBIDDEN = ("leanopsctl", "click", "moto", "psutil", "rich")


def imported_leanops_files(package: Path) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(package), LEANOPS_CONFIG="topics.yaml", POWERTOOLS_METRICS_NAMESPACE="t")
    probe_code = f"FORBIDDEN = {FORBIDDEN!r}\n{CLOSURE_PROBE}"
    result = subprocess.run(
        [sys.executable, "-c", probe_code], cwd=package, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["operator"] == [], f"a handler imports operator-side packages: {found['operator']}"
    return {Path(f).relative_to(package).as_posix() for f in found["leanops"]}


def test_package_leaves_out_caches_build_metadata_requirements_and_non_package_folders(package: Path) -> None:
    files = files_under(package)
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc") or ".egg-info" in f]
    assert "requirements.txt" not in files, "dependencies are the layer's"
    assert not [f for f in files if f.startswith("examples/vehicle_telemetry/data")], "sample data stays out"


def test_in_the_package_the_handler_and_processor_import_from_it(package: Path) -> None:
    found = probe(package)
    assert Path(found["handler"]).is_relative_to(package)
    assert Path(found["processor"]).is_relative_to(package)


def test_a_processor_package_that_is_not_beside_the_topics_file_is_an_error(tmp_path: Path) -> None:
    topics = tmp_path / "topics.yaml"
    topics.write_text(
        "topics:\n  t:\n    source: {type: files, uri: ./in}\n    sink: {type: files, uri: ./out}\n"
        "    processor: elsewhere.proc:run\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="'elsewhere'"):
        bundle.build_bundle(topics, REPO / "functions", tmp_path / "out")
    assert (
        bundle.main(
            ["--topics", str(topics), "--code", str(REPO / "functions"), "--out", str(tmp_path / "o")]
        )
        == 2
    )


def test_a_module_processor_and_a_leanops_processor_are_packaged(tmp_path: Path) -> None:
    # GIVEN a processor in a plain module beside the topics file, and one that leanops itself provides
    (tmp_path / "single.py").write_text("def run(records, ctx):\n    return records\n", encoding="utf-8")
    topics = tmp_path / "topics.yaml"
    topics.write_text(
        "topics:\n"
        "  t:\n    source: {type: files, uri: s3://bucket/in}\n    sink: {type: files, uri: s3://bucket/out}\n"
        "    processor: single:run\n"
        "  u:\n    source: {type: files, uri: s3://bucket/in2}\n    sink: {type: files, uri: s3://bucket/out2}\n"
        "    processor: leanops.batch:passthrough\n",
        encoding="utf-8",
    )
    # WHEN bundled
    result = bundle.build_bundle(topics, REPO / "functions", tmp_path / "out")
    # THEN the module is copied, leanops is not copied twice, and S3 topics raise no warning
    assert (tmp_path / "out" / "single.py").is_file()
    assert result.processors == ("single",)
    assert result.warnings == ()


def test_local_directories_are_warned_about(package: Path) -> None:
    warnings = bundle.local_endpoint_warnings(bundle.load_topics(TOPICS_PATH))
    assert len(warnings) == 2 and all("s3://" in w for w in warnings)


def test_s3_and_dynamodb_endpoints_are_not_warned_about(tmp_path: Path) -> None:
    topics = tmp_path / "topics.yaml"
    topics.write_text(
        "topics:\n  t:\n"
        "    source: {type: dynamodb, table: events, partition_key: d, partition_value: x, sort_key: ts}\n"
        "    sink: {type: files, uri: s3://lake/out}\n"
    )
    assert bundle.local_endpoint_warnings(bundle.load_topics(topics)) == []


# --- sam build ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sam_build() -> Path:
    """``make sam-build``: SAM's cached build of the whole template, offline (a few seconds when cached)."""
    env = {k: v for k, v in os.environ.items() if k != "LEANOPS_TOPICS"}
    result = subprocess.run(
        ["make", "--no-print-directory", "sam-build"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return BUILD


def layer_dir(build: Path) -> Path:
    (layer,) = [p for p in build.iterdir() if p.name.startswith("DependenciesLayer")]
    return layer / "python"


def test_sam_build_packages_the_topics_file_and_processor_with_the_process_function(sam_build: Path) -> None:
    function = sam_build / "ProcessFunction"
    assert (function / "topics.yaml").read_bytes() == TOPICS_PATH.read_bytes()
    assert (
        function / "examples" / "vehicle_telemetry" / "processor.py"
    ).read_bytes() == PROCESSOR.read_bytes()
    assert (function / "leanops" / "handlers" / "process.py").is_file()
    code = {f for f in files_under(function) if f.startswith("leanops/")}
    assert code == bundle.handler_import_closure(REPO / "functions")


def test_every_function_of_the_build_gets_the_same_package(sam_build: Path) -> None:
    built: dict[str, Any] = load_template(sam_build / "template.yaml")
    functions = {k for k, v in built["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}
    reference = files_under(sam_build / "ProcessFunction")
    for function in functions:
        assert files_under(sam_build / function) == reference, function


def test_sam_build_layer_holds_the_dependencies_for_arm64_python313(sam_build: Path) -> None:
    python = layer_dir(sam_build)
    present = sorted(name for name in (*FORBIDDEN, "leanops") if (python / name).exists())
    assert present == [], f"the layer carries {present}: only layer/requirements.txt belongs in it"
    assert (python / "aws_lambda_powertools").is_dir()
    assert list((python / "yaml").glob("_yaml.cpython-313-aarch64-linux-gnu.so")), (
        "PyYAML built for the runtime"
    )


def test_in_the_built_function_the_handler_imports_with_only_its_package_and_the_layer(
    sam_build: Path,
) -> None:
    # No site-packages (-S): what the handler needs comes from /var/task (package) and /opt/python (layer).
    found = probe(sam_build / "ProcessFunction", layer_dir(sam_build), isolated=True)
    assert Path(found["handler"]).is_relative_to(sam_build / "ProcessFunction")
    assert Path(found["processor"]).is_relative_to(sam_build / "ProcessFunction")
    assert Path(found["powertools"]).is_relative_to(layer_dir(sam_build))
    assert Path(found["yaml"]).is_relative_to(layer_dir(sam_build))


# --- the Makefile target SAM runs --------------------------------------------------------------------------


def run_build_target(tmp_path: Path, **env_extra: str) -> subprocess.CompletedProcess[str]:
    """``make build-ProcessFunction`` as SAM runs it: in a scratch copy of the CodeUri, ARTIFACTS_DIR set."""
    scratch = tmp_path / "scratch"
    shutil.copytree(REPO / "functions", scratch, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("LEANOPS_TOPICS", "MAKEFLAGS", "MAKELEVEL")}
    env.update(ARTIFACTS_DIR=str(tmp_path / "artifacts"), **env_extra)
    return subprocess.run(
        ["make", "--no-print-directory", "-f", str(REPO / "Makefile"), "build-ProcessFunction"],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_build_target_writes_the_package_from_the_scratch_copy(tmp_path: Path) -> None:
    result = run_build_target(tmp_path)
    assert result.returncode == 0, result.stderr
    artifacts = tmp_path / "artifacts"
    assert (artifacts / "topics.yaml").read_bytes() == TOPICS_PATH.read_bytes()
    assert (artifacts / "examples" / "vehicle_telemetry" / "processor.py").is_file()
    assert (artifacts / "leanops" / "handlers" / "process.py").is_file()
