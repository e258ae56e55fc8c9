"""The ``llmstd`` command line: one argparse parser, a sub-command per module, and the global options.

argparse (the standard library) rather than a CLI framework: every command pays its start-up, and
Typer with Click and pydantic cost ~0.2 s of each command's ~0.6 s before any work began.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from llmstd.cli import check, convert, inspect, maps, validate
from llmstd.cli.errors import DEBUG_ENV, EXIT_USAGE

from llmstd import __version__

COMMANDS = (convert, inspect, check, validate, maps)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmstd",
        description="Convert language-model checkpoints through one canonical format, and prove the result is "
                    "the same model.")
    parser.add_argument("--debug", action="store_true", help="Show tracebacks instead of one-line errors.")
    parser.add_argument("--version", action="version", version=f"llmstd {__version__}",
                        help="Print the version and exit.")
    parser.set_defaults(run=None, usage_of=parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line; returns the exit code (usage errors exit 2 from argparse itself)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.run is None:  # a command group without its command: its help, as a usage error
        args.usage_of.print_help(sys.stderr)
        return EXIT_USAGE
    if args.debug:
        os.environ[DEBUG_ENV] = "1"
    return args.run(args)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
