"""``llmstd inspect PATH``."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmstd.cli.errors import handle_errors
from llmstd.cli.options import add_arch, add_json, print_json

import llmstd


def add_parser(commands: argparse._SubParsersAction) -> None:
    about = "Show a checkpoint's container, dialect, architecture, canonical config and tensors."
    parser = commands.add_parser("inspect", help=about, description=about)
    parser.add_argument("path", type=Path, help="Checkpoint directory or file.")
    add_arch(parser)
    add_json(parser)
    parser.set_defaults(run=inspect)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


@handle_errors
def inspect(args: argparse.Namespace) -> None:
    """Show a checkpoint's container, dialect, architecture, canonical config and tensors."""
    report = llmstd.inspect(args.path, arch=args.arch)
    if args.json_out:
        print_json(report.to_dict())
        return
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False)
    out.print(f"[bold]{report.path}[/]")
    out.print(f"  format {report.format}, container {report.container}, dialect {report.dialect}, "
              f"architecture [bold]{report.architecture}[/]")
    out.print(f"  {report.parameters:,} parameters in {len(report.tensors)} canonical tensors "
              f"({report.source_tensor_count} in the files), {_size(report.total_bytes)} ("
              + ", ".join(f"{d} {_size(b)}" for d, b in report.dtype_bytes.items()) + ")")
    for tied, target in report.tied.items():
        out.print(f"  tied: {tied} = {target} (stored once)")
    for item in report.ignored:
        out.print(f"  ignored: {item['name']} ({item['reason']})")
    config = Table(title="canonical config", show_header=False, box=None, pad_edge=False)
    for key, value in report.config.items():
        if key != "extras":
            config.add_row(f"  {key}", repr(value))
    out.print(config)
    table = Table(title="tensors")
    table.add_column("canonical name")
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("size", justify="right")
    for row in report.tensors:
        table.add_row(row.name, row.dtype, "×".join(map(str, row.shape)) or "scalar", _size(row.bytes))
    out.print(table)
