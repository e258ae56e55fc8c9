"""Option definitions shared by several commands, so each flag is spelled and documented once."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Optional

import typer

Arch = Annotated[Optional[str], typer.Option("--arch", help="Architecture name (default: detected from the source).")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout instead of tables.")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
