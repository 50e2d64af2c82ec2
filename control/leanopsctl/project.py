"""A leanops project: its topics file, and the template and state machines it runs (its own, or the ones
that ship with leanops); :func:`init_project` writes a new one (``leanops init``).

What ships lives in ``scaffold/`` beside this module: ``project/`` (the files of a new project) and the SAM
template with its state machines, ``template.yaml`` and ``statemachines/*.asl.json``. Those two are not a
second copy: in the source tree they are symlinks to the repository root's ``template.yaml`` and
``statemachines/``, the one source of truth (``make asl`` and ``make schedules`` write there). A wheel
carries them as real files, because setuptools copies a symlink's target into the build (pyproject.toml's
package data), so :func:`packaged_template` finds the template at the same path in a source checkout, an
editable install and a wheel install, with its ``DefinitionUri`` (``statemachines/topic_run.asl.json``,
relative to the template) beside it.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from leanops.config import TopicsFile, parse_topics
from leanops.errors import ConfigError, LeanopsError

#: Everything that ships for projects: the template, its state machines, the files of a new project.
SCAFFOLD = Path(__file__).parent / "scaffold"
#: The files of a new project (``leanops init``), as they are written, except the renames below.
PROJECT_FILES = SCAFFOLD / "project"
#: The state machines' folder, beside the template (its ``DefinitionUri`` values are relative to it).
STATE_MACHINES = "statemachines"

_PACKAGED = SCAFFOLD / "template.yaml"
#: A source checkout whose scaffold symlinks were not made (e.g. git on Windows without symlinks).
_CHECKOUT = Path(__file__).resolve().parents[2] / "template.yaml"
#: Scaffold files stored under another name: a ``.gitignore`` in the package would apply to the package.
_RENAMED = {"gitignore": ".gitignore"}
#: Never written into a project (bytecode of the scaffold's processors, should anything import them).
_SKIPPED = re.compile(r"(^|/)__pycache__(/|$)|\.py[co]$")
#: The order files are listed (and checked) in: the topics file and code first, by top-level name.
_ORDER = {name: i for i, name in enumerate(("topics.yaml", "processors", "data", "README.md"))}
#: The topic the scaffold's topics file declares: the next command to run.
FIRST_TOPIC = "events"

#: CloudFormation stack names: a letter, then letters, digits and hyphens; at most 128 characters.
_STACK_NAME_MAX = 128
_STACK_SUFFIXES = ("-dev", "-prod")  # samconfig.toml's environments


def packaged_template() -> Path:
    """The template.yaml that ships with leanops (its DefinitionUri beside it)."""
    for candidate in (_PACKAGED, _CHECKOUT):
        if candidate.is_file() and any((candidate.parent / STATE_MACHINES).glob("*.asl.json")):
            return candidate
    raise ConfigError(
        "no template.yaml beside the topics file, and none ships with this installation: "
        "run `leanops init --with-template DIR` from a leanops installation that has one"
    )


def stack_name_for(folder_name: str) -> str:
    """The stem of a project's CloudFormation stack names (``<stem>-dev``, ``<stem>-prod``), from its
    folder's name: runs of other characters become one hyphen, a name that does not start with a letter
    gets a ``leanops-`` prefix, and it is cut to fit 128 characters with the longest suffix.

    >>> stack_name_for("My Project_2")
    'My-Project-2'
    >>> stack_name_for("2026 pipelines")
    'leanops-2026-pipelines'
    """
    stem = re.sub(r"[^A-Za-z0-9]+", "-", folder_name).strip("-")
    if not stem[:1].isalpha():
        stem = f"leanops-{stem}".rstrip("-")
    longest = max(len(suffix) for suffix in _STACK_SUFFIXES)
    return stem[: _STACK_NAME_MAX - longest].rstrip("-")


def project_name(folder: Path) -> str:
    """A project's name: its folder's."""
    return folder.resolve().name or "leanops"


@dataclass(frozen=True)
class InitResult:
    """What :func:`init_project` wrote: the folder, the files (relative, POSIX, in order), the stack stem."""

    folder: Path
    files: tuple[str, ...]
    stack_name: str


def project_files(folder: Path, *, with_template: bool = False) -> dict[str, bytes]:
    """The files a new project in ``folder`` gets, by path relative to it: the scaffold's, with the
    project's name and stack names filled in, and with ``with_template`` the shipped template (its
    generated block rewritten for the new topics file) and its state machines.

    Raises
    ------
    ConfigError
        The scaffold's topics file does not load (a broken installation), or no template ships.
    """
    name = project_name(folder)
    stack = stack_name_for(name)
    files: dict[str, bytes] = {}
    found = (p.relative_to(PROJECT_FILES).as_posix() for p in PROJECT_FILES.rglob("*") if p.is_file())
    for relative in sorted(found, key=lambda r: (_ORDER.get(r.split("/")[0], len(_ORDER)), r)):
        if not _SKIPPED.search(relative):
            files[_RENAMED.get(relative, relative)] = (PROJECT_FILES / relative).read_bytes()
    # The topics file as written must load.
    _parse_topics(folder, files["topics.yaml"])
    template_rows = ""
    if with_template:
        template_rows = (
            '| `template.yaml` | the SAM template this project runs and deploys (below, "Deploy") |\n'
            "| `statemachines/` | the topic-run state machine (Amazon States Language) the template names |\n"
        )
        files.update(_template_files())
    substitutions = {"@PROJECT@": name, "@STACK@": stack, "@TEMPLATE_ROWS@\n": template_rows}
    for relative in ("README.md", "samconfig.toml"):
        text = files[relative].decode("utf-8")
        for placeholder, value in substitutions.items():
            text = text.replace(placeholder, value)
        files[relative] = text.encode("utf-8")
    return files


def _parse_topics(folder: Path, text: bytes) -> TopicsFile:
    try:
        return parse_topics(yaml.safe_load(text), folder.resolve() / "topics.yaml")
    except (ConfigError, yaml.YAMLError) as exc:
        raise ConfigError(f"the scaffold's topics file does not load ({exc}): reinstall leanops") from exc


def _template_files() -> dict[str, bytes]:
    """The shipped template (no topic in it: topics are pushed, decision 0013) and its state machines."""
    template = packaged_template()
    files = {"template.yaml": template.read_bytes()}
    for asl in sorted((template.parent / STATE_MACHINES).glob("*.asl.json")):
        files[f"{STATE_MACHINES}/{asl.name}"] = asl.read_bytes()
    return files


def conflict(folder: Path, relatives: list[str]) -> Path | None:
    """The first path that keeps ``relatives`` from being written as new files in ``folder``: one that
    exists already (a file, folder or link), or a parent in the way that is not a folder."""
    for relative in relatives:
        target = folder / relative
        parent = folder
        for part in Path(relative).parts[:-1]:
            parent = parent / part
            if os.path.lexists(parent) and not parent.is_dir():
                return parent
        if os.path.lexists(target):
            return target
    return None


def init_project(folder: Path | str, *, with_template: bool = False) -> InitResult:
    """Write a new project into ``folder`` (created when missing; it may hold other files): a topics file
    with one topic (``events``), its processor, sample input, a README, ``.gitignore`` and
    ``samconfig.toml``; with ``with_template`` also the template and state machines that ship.

    Nothing is ever overwritten, and nothing is written unless everything can be: every path is checked
    first, each file is created exclusively, and a failure part way removes what this call wrote.

    Raises
    ------
    ConfigError
        ``folder`` is not a folder, or one of the files exists already (the message names the first).
    LeanopsError
        A file could not be written (permissions, a full disk); nothing is left behind.
    """
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise ConfigError(f"{folder} exists and is not a folder: name a new or empty folder")
    files = project_files(folder, with_template=with_template)
    found = conflict(folder, list(files))
    if found is not None:
        raise ConfigError(
            f"{found} already exists, and leanops init never overwrites: move it away, or init another "
            "folder (nothing was written)"
        )
    made_dirs: list[Path] = []
    written: list[Path] = []
    try:
        for relative, content in files.items():
            target = folder / relative
            for directory in reversed([target.parent, *target.parent.parents]):
                if not directory.exists():
                    directory.mkdir()
                    made_dirs.append(directory)
            with target.open("xb") as out:  # exclusive: a file that appeared meanwhile is not replaced
                written.append(target)
                out.write(content)
    except OSError as exc:
        for path in reversed(written):
            with contextlib.suppress(OSError):
                path.unlink()
        for directory in reversed(made_dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()
        what = exc.filename or folder
        error = ConfigError if isinstance(exc, FileExistsError) else LeanopsError
        raise error(f"cannot write {what}: {exc.strerror or exc} (nothing was written)") from exc
    return InitResult(folder=folder, files=tuple(files), stack_name=stack_name_for(project_name(folder)))
