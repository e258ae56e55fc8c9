"""The one table from errors to exit codes, and the handler that turns an error into one red line.

Exit codes: 0 success; 1 any failure llmstd detected (bad input, failed check, lossy cast, ...);
2 usage errors (reported by argparse before a command runs); 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import Optional

from llmstd.errors import LlmstdError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES: dict[type[BaseException], int] = {
    LlmstdError: EXIT_FAILURE,
    KeyboardInterrupt: EXIT_INTERRUPTED,
}

DEBUG_ENV = "LLMSTD_DEBUG"

Command = Callable[[argparse.Namespace], Optional[int]]


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def exit_code_for(exc: BaseException) -> int:
    for kind, code in EXIT_CODES.items():
        if isinstance(exc, kind):
            return code
    return EXIT_FAILURE


def report_error(exc: BaseException) -> None:
    """One red line on stderr (rich is imported here: a command that succeeds never needs it for this)."""
    from rich.console import Console
    from rich.markup import escape

    stderr = Console(stderr=True, highlight=False, soft_wrap=True)
    if isinstance(exc, LlmstdError):
        stderr.print(f"[bold red]error:[/] {escape(str(exc))}")
    elif isinstance(exc, KeyboardInterrupt):
        stderr.print("[bold red]interrupted[/]")
    else:
        stderr.print(f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(str(exc))} "
                     "— rerun with --debug for the traceback and please report it")
    sys.stderr.flush()


def handle_errors(command: Command) -> Callable[[argparse.Namespace], int]:
    """Run a command; its exit code, or an error reported as one red line (traceback only with --debug)."""

    @functools.wraps(command)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return command(args) or EXIT_OK
        except SystemExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure becomes one line and a code
            if debug_enabled():
                raise
            report_error(exc)
            return exit_code_for(exc)

    return wrapper
