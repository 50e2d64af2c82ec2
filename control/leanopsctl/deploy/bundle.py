"""The code package of every Lambda function: the handlers' import closure, the topics file, its processors.

design §4 ("In the cloud"): the process task loads the same topics file and the same processor code as a
local run. ``sam build`` builds each function with SAM's makefile build method: it copies the CodeUri
(``functions/``) to a scratch folder and runs ``make build-<Function>`` from the root Makefile there, which
runs this module::

    python -m leanopsctl.deploy.bundle --code . --topics topics.yaml --out "$ARTIFACTS_DIR"

The package it writes (``/var/task`` in Lambda, where the handlers run with ``LEANOPS_CONFIG=topics.yaml``)::

    leanops/                  the modules of the CodeUri that the handlers import, and nothing else
    topics.yaml               the topics file, byte for byte (validated first)
    examples/vehicle_telemetry/...   each processor's top-level package, Python packages only

A processor's top-level package is copied as its Python packages: directories with an ``__init__.py`` and
the files in them, so sample data or other non-package folders beside the code stay out. Third-party
dependencies are not copied here: they are ``layer/requirements.txt``, built into the
``DependenciesLayer`` by SAM's Python builder (docs/decisions/0004-deployment-packaging.md).

Every ``sam build`` re-runs the makefile build of Python functions (SAM's incremental build re-copies
sources), so an edited topics file or processor is always what deploys.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from leanops.config import TopicsFile, load_topics
from leanops.constants import DEFAULT_CONFIG
from leanops.errors import ConfigError

#: Name of the topics file inside the package; the template sets ``LEANOPS_CONFIG`` to it.
BUNDLED_TOPICS = DEFAULT_CONFIG
#: Never packaged: caches, build metadata and the CodeUri's requirements (the layer carries those).
IGNORED = ("__pycache__", "*.pyc", "*.pyo", "*.egg-info", ".*", "requirements.txt")
#: The package every handler lives in (``leanops.handlers.<name>.handler``).
CODE_PACKAGE = "leanops"
HANDLERS_PACKAGE = f"{CODE_PACKAGE}.handlers"


@dataclass(frozen=True)
class Bundle:
    """What :func:`build_bundle` wrote: the package folder, the code packages, the processors' packages."""

    out: Path
    code: tuple[str, ...]  # the handlers' import closure: files relative to the CodeUri
    processors: tuple[str, ...]
    warnings: tuple[str, ...]


def build_bundle(topics_path: Path, code: Path, out: Path) -> Bundle:
    """Write the function package to ``out``: ``code``'s contents, the topics file, its processors.

    Raises
    ------
    ConfigError
        The topics file is invalid, or a processor's package is not beside it (only code beside the topics
        file travels with it, as locally, where that folder is on ``sys.path``).
    """
    topics = load_topics(topics_path)
    code = code.resolve()
    if not code.is_dir():
        raise ConfigError(f"code folder {code} does not exist (the CodeUri, e.g. functions/)")
    out.mkdir(parents=True, exist_ok=True)
    copied = sorted(handler_import_closure(code))
    for relative in copied:
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(code / relative, out / relative)
    shutil.copyfile(topics.path, out / BUNDLED_TOPICS)
    processors = []
    for package in processor_packages(topics):
        if (out / package).exists() or (out / f"{package}.py").exists():
            continue  # already in the package: leanops itself, or a package another topic shares
        source = topics.folder / package
        if (source / "__init__.py").is_file():
            _copy_packages(source, out / package)
        elif source.with_suffix(".py").is_file():
            shutil.copyfile(source.with_suffix(".py"), out / f"{package}.py")
        else:
            users = sorted(name for name, t in topics.topics.items() if _top_level(t.processor) == package)
            raise ConfigError(
                f"{topics.path}: processor package {package!r} (topic {users[0]!r}) is not beside the topics "
                f"file in {topics.folder}: put it there, so that it is packaged with the functions"
            )
        processors.append(package)
    return Bundle(out, tuple(copied), tuple(processors), tuple(local_endpoint_warnings(topics)))


def handler_import_closure(code: Path) -> set[str]:
    """The files (relative to ``code``) of every ``leanops`` module the handlers import, transitively.

    Read from the source (every ``import`` statement, also inside functions, except under
    ``if TYPE_CHECKING:``), so a module imported only on some path is still packaged. A package's
    ``__init__.py`` comes with any module in it. Nothing else of ``code`` is: the CLI, the local stack and the
    deploy helpers are another package (``leanopsctl``) and never reach Lambda.
    """
    handlers = code / HANDLERS_PACKAGE.replace(".", "/")
    if not handlers.is_dir():
        raise ConfigError(f"{code} has no {HANDLERS_PACKAGE} package: is it the functions' CodeUri?")
    pending = [f"{HANDLERS_PACKAGE}.{path.stem}" for path in sorted(handlers.glob("*.py"))]
    seen: set[str] = set()
    files: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(code, module)
        if path is None:
            continue  # a name imported from a module (``from leanops import tasks`` names a module, too)
        files.add(path.relative_to(code).as_posix())
        parts = module.split(".")
        pending.extend(".".join(parts[:depth]) for depth in range(1, len(parts)))  # the parent packages
        pending.extend(_imports(path, module))
    return files


def _module_file(code: Path, module: str) -> Path | None:
    base = code.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> list[str]:
    """The ``leanops`` modules (or module-or-attribute names) that ``path`` imports at run time."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[str] = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names)
    return [name for name in found if name == CODE_PACKAGE or name.startswith(f"{CODE_PACKAGE}.")]


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except what is under ``if TYPE_CHECKING:``."""
    nodes: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return nodes


def processor_packages(topics: TopicsFile) -> list[str]:
    """The top-level packages of the topics' processors (``examples`` for ``examples.x.y:f``), sorted."""
    return sorted({_top_level(t.processor) for t in topics.topics.values() if t.processor})


def local_endpoint_warnings(topics: TopicsFile) -> list[str]:
    """One line per source or sink that is a local directory: in Lambda it would resolve inside the
    read-only package, so a deployed topic needs ``s3://`` URIs."""
    return [
        f"topic {name!r}: {side} {endpoint.uri} is a local directory; in Lambda it resolves inside the "
        "read-only package: deploy topics with s3:// sources and sinks"
        for name, topic in sorted(topics.topics.items())
        for side, endpoint in (("source", topic.source), ("sink", topic.sink))
        if endpoint.type == "files" and not endpoint.is_s3
    ]


def _top_level(processor: str | None) -> str:
    return (processor or "").partition(":")[0].split(".")[0]


def _ignored(name: str) -> bool:
    return any(Path(name).match(pattern) for pattern in IGNORED)


def _copy_packages(source: Path, target: Path) -> None:
    """Copy a Python package: its files, and its sub-folders that are packages too (``__init__.py``)."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        if _ignored(entry.name):
            continue
        if entry.is_dir():
            if (entry / "__init__.py").is_file():
                _copy_packages(entry, target / entry.name)
        else:
            shutil.copyfile(entry, target / entry.name)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m leanopsctl.deploy.bundle``: 0 written, 2 the topics file or a processor is wrong."""
    parser = argparse.ArgumentParser(
        prog="python -m leanopsctl.deploy.bundle",
        description="Write a Lambda function package: the code folder, the topics file and its processors.",
    )
    parser.add_argument("--topics", default=DEFAULT_CONFIG, help="topics file (default: ./topics.yaml)")
    parser.add_argument("--code", default="functions", help="the functions' CodeUri (default: functions)")
    parser.add_argument("--out", required=True, help="folder to write the package to ($ARTIFACTS_DIR)")
    args = parser.parse_args(argv)
    try:
        bundle = build_bundle(Path(args.topics), Path(args.code), Path(args.out))
    except ConfigError as exc:
        print(f"leanopsctl.deploy.bundle: error: {exc}", file=sys.stderr)
        return 2
    for warning in bundle.warnings:
        print(f"leanopsctl.deploy.bundle: warning: {warning}", file=sys.stderr)
    print(
        f"leanopsctl.deploy.bundle: {bundle.out}: {len(bundle.code)} modules of {CODE_PACKAGE}"
        f" + {BUNDLED_TOPICS}"
        + (f" + processors {', '.join(bundle.processors)}" if bundle.processors else ""),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
