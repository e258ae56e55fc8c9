"""Options shared by several commands, so each flag is spelled and documented once."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_arch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", help="Architecture name (default: detected from the source).")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", dest="json_out", action="store_true",
                        help="Print the result as JSON on stdout instead of tables.")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
