"""The operator CLI, ``leanops`` (design §4).

Exit codes, for every command: 0 success; 1 the operation failed; 2 usage, configuration or input error.
Errors are one line on stderr, ``leanops: error: ...``, never a traceback: commands raise
:class:`~leanops.errors.LeanopsError` subclasses and :func:`run_command` maps them to an exit code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from botocore.exceptions import BotoCoreError, ClientError

from leanops import __version__
from leanops.errors import ConfigError, InvalidInput, LeanopsError

P = ParamSpec("P")
R = TypeVar("R")

EXIT_OK = 0
#: The operation failed: an execution did not succeed, the local database could not start, Java is missing.
EXIT_FAILED = 1
#: Usage, configuration or input error (click uses 2 for usage errors too).
EXIT_USAGE = 2

#: Errors that the user fixes by changing the command line, the topics file or a setting.
_USAGE_ERRORS: tuple[type[LeanopsError], ...] = (ConfigError, InvalidInput)


def exit_code_for(exc: LeanopsError) -> int:
    """The exit code that reports ``exc``: 2 for usage and configuration errors, 1 for failed operations."""
    return EXIT_USAGE if isinstance(exc, _USAGE_ERRORS) else EXIT_FAILED


def fail(exc: LeanopsError) -> NoReturn:
    """Print ``exc`` as one line on stderr and exit with its code (see :func:`exit_code_for`)."""
    message = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever the message holds
    click.echo(f"leanops: error: {message}", err=True)
    raise SystemExit(exit_code_for(exc))


def run_command(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command so that a :class:`LeanopsError` becomes one stderr line and its exit code.

    Any other exception is a bug and keeps its traceback.

    Examples
    --------
    >>> @main.command()
    ... @run_command
    ... def hello() -> None:
    ...     raise ConfigError("topics.yaml: no topics")  # prints one line, exits 2
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except LeanopsError as exc:
            fail(exc)
        except ClientError as exc:  # an AWS API refused: say which call and why, exit 1
            error = exc.response.get("Error", {})
            fail(LeanopsError(f"{exc.operation_name}: {error.get('Code')}: {error.get('Message')}"))
        except BotoCoreError as exc:  # could not reach an endpoint, unreadable answer
            fail(LeanopsError(f"AWS: {exc}"))

    return wrapper


class OneLineErrors(click.Group):
    """Usage errors (a missing option, a bad value) as one line, like every other error, exit 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("leanops: aborted", err=True)
            raise SystemExit(EXIT_FAILED) from None
        except click.exceptions.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "leanops"
            message = " ".join(exc.format_message().split())
            click.echo(f"leanops: error: {message} (see `{command} --help`)", err=True)
            raise SystemExit(EXIT_USAGE) from None
        except click.exceptions.Exit as exc:  # --help, --version
            raise SystemExit(exc.exit_code) from None
        except click.exceptions.ClickException as exc:
            click.echo(f"leanops: error: {' '.join(exc.format_message().split())}", err=True)
            raise SystemExit(exc.exit_code) from None


@click.group(name="leanops", cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="leanops")
def main() -> None:
    """Lean incremental batch pipelines on AWS Step Functions, Lambda and DynamoDB."""


def _register_commands() -> None:
    # Imported here: command modules import run_command from this module.
    from leanopsctl.cli.archive import archive
    from leanopsctl.cli.backfill import backfill
    from leanopsctl.cli.cost import cost
    from leanopsctl.cli.init import init
    from leanopsctl.cli.local import local
    from leanopsctl.cli.ops import audit, checkpoint, pause, resume, unlock
    from leanopsctl.cli.pipeline import gc, history, output, run, status
    from leanopsctl.cli.report import report
    from leanopsctl.cli.topics import topics

    main.add_command(cost)
    main.add_command(local)
    main.add_command(run)
    main.add_command(status)
    main.add_command(topics)
    main.add_command(output)
    main.add_command(gc)
    main.add_command(history)
    main.add_command(report)
    for command in (init, unlock, checkpoint, pause, resume, backfill, audit, archive):
        main.add_command(command)


_register_commands()
