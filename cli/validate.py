"""``llmstd validate PATH``: lint a checkpoint before publishing; exit 1 on any error (never on a warning)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmstd.cli.errors import EXIT_FAILURE, handle_errors
from llmstd.cli.options import add_arch, add_json, print_json


def add_parser(commands: argparse._SubParsersAction) -> None:
    about = "Check tensors, shapes, tying, dtypes, values, shard index and metadata; report every finding."
    parser = commands.add_parser("validate", help=about, description=about + " Exits 1 on any error (never on a warning).")
    parser.add_argument("path", type=Path, help="Checkpoint directory or file.")
    add_arch(parser)
    parser.add_argument("--against", type=Path, help="Also run `llmstd check SRC PATH` and fail when it fails.")
    parser.add_argument("--write-manifest", action="store_true",
                        help="Write llmstd-manifest.json next to the weights when there is no error.")
    parser.add_argument("--manifest", type=Path,
                        help="Verify the checkpoint against this manifest (names every tensor that changed).")
    parser.add_argument("--device", default="cpu", help="cpu | cuda, for --against (default: cpu).")
    add_json(parser)
    parser.set_defaults(run=validate)


@handle_errors
def validate(args: argparse.Namespace) -> int | None:
    """Check tensors, shapes, tying, dtypes, values, shard index and metadata; report every finding."""
    from llmstd.cli.check import skip_tensorflow_import

    from llmstd.validation import validate as run_validate

    if args.against is not None:
        skip_tensorflow_import([args.against, args.path], [])
    report = run_validate(args.path, arch=args.arch, against=args.against, manifest=args.manifest,
                          write_manifest_to=True if args.write_manifest else None,
                          check_options={"device": args.device})
    if args.json_out:
        print_json(report.to_dict())
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

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
        if report.manifest and args.write_manifest and report.passed:
            out.print(f"manifest written: {escape(report.manifest)}")
        elif report.manifest and report.passed:
            out.print(f"matches manifest {escape(report.manifest)}")
        verdict = (f"[bold green]valid[/] ({len(report.warnings)} warning(s))" if report.passed
                   else f"[bold red]invalid[/]: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
        out.print(verdict)
    if args.write_manifest and not report.passed:
        from rich.console import Console

        Console(stderr=True, highlight=False).print("[red]manifest not written: the checkpoint has errors[/]")
    return None if report.passed else EXIT_FAILURE
