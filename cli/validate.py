"""``llmstd validate PATH``: lint a checkpoint before publishing; exit 1 on any error (never on a warning)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from llmstd.cli.errors import EXIT_FAILURE, handle_errors
from llmstd.cli.options import Arch, Json, print_json
from rich.console import Console
from rich.markup import escape
from rich.table import Table


@handle_errors
def validate(
    path: Annotated[Path, typer.Argument(help="Checkpoint directory or file.")],
    arch: Arch = None,
    against: Annotated[Optional[Path], typer.Option(
        "--against", help="Also run `llmstd check SRC PATH` and fail when it fails.")] = None,
    write_manifest: Annotated[bool, typer.Option(
        "--write-manifest", help="Write llmstd-manifest.json next to the weights when there is no error.")] = False,
    manifest: Annotated[Optional[Path], typer.Option(
        "--manifest", help="Verify the checkpoint against this manifest (names every tensor that changed).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu | cuda, for --against.")] = "cpu",
    json_out: Json = False,
) -> None:
    """Check tensors, shapes, tying, dtypes, values, shard index and metadata; report every finding."""
    from llmstd.cli.check import skip_tensorflow_import

    from llmstd.validation import validate as run_validate

    if against is not None:
        skip_tensorflow_import([against, path], [])
    report = run_validate(path, arch=arch, against=against, manifest=manifest,
                          write_manifest_to=True if write_manifest else None, check_options={"device": device})
    if json_out:
        print_json(report.to_dict())
    else:
        out = Console(highlight=False)
        out.print(f"[bold]{escape(report.path)}[/]  {report.format or '?'}/{report.container or '?'}, "
                  f"{report.architecture or '?'}, {report.tensors} canonical tensors checked")
        if report.findings:
            table = Table()
            for column in ("severity", "code", "where", "finding"):
                table.add_column(column)
            for f in report.findings:
                where = " ".join(w for w in (f.tensor, f.file if not f.tensor else None) if w)
                colour = "red" if f.severity == "error" else "yellow"
                table.add_row(f"[{colour}]{f.severity}[/]", f.code, escape(where), escape(f.message))
            out.print(table)
        if report.check is not None:
            from llmstd.cli.check import render

            render(report.check, out)
        if report.manifest and write_manifest and report.passed:
            out.print(f"manifest written: {escape(report.manifest)}")
        elif report.manifest and report.passed:
            out.print(f"matches manifest {escape(report.manifest)}")
        verdict = (f"[bold green]valid[/] ({len(report.warnings)} warning(s))" if report.passed
                   else f"[bold red]invalid[/]: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
        out.print(verdict)
    if write_manifest and not report.passed:
        Console(stderr=True, highlight=False).print("[red]manifest not written: the checkpoint has errors[/]")
    if not report.passed:
        raise typer.Exit(EXIT_FAILURE)
