"""``llmstd convert SRC DST --to FORMAT``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmstd.cli.errors import handle_errors
from llmstd.cli.options import add_arch, add_json, print_json

import llmstd


def add_parser(commands: argparse._SubParsersAction) -> None:
    from llmstd import formats

    parser = commands.add_parser("convert", help="Convert a checkpoint to another format through the canonical format.",
                                 description="Convert a checkpoint to another format through the canonical format.")
    parser.add_argument("src", type=Path, help="Source checkpoint (directory or file).")
    parser.add_argument("dst", type=Path, help="Destination directory (created atomically).")
    parser.add_argument("--to", default="canonical", metavar="FORMAT",
                        help=f"Target format: {', '.join(sorted(formats.names()))} (default: canonical).")
    add_arch(parser)
    parser.add_argument("--dtype", default="keep", help="keep | float32 | float16 | bfloat16 (default: keep).")
    parser.add_argument("--shard-size", metavar="SIZE", help="Largest shard, e.g. 2GB or 500MB (default: one file; 5GB for hf).")
    parser.add_argument("--weights", default="safetensors", metavar="CONTAINER", help="Container for --to hf: safetensors | bin.")
    parser.add_argument("--onnx-package", default="plain", metavar="KIND",
                        help="For --to onnx: plain | genai (adds genai_config.json for onnxruntime-genai).")
    parser.add_argument("--experts", default="per-expert", metavar="LAYOUT",
                        help="Mixture-of-experts layout for --to hf: per-expert (transformers' default save) | packed "
                             "(transformers 5 save_original_format=False).")
    parser.add_argument("--accept-difference", action="append", default=[], metavar="FIELD",
                        help="For --to keras-hub: a canonical config field (e.g. activation) whose value the target "
                             "backbone computes differently, accepted by name; repeatable.")
    parser.add_argument("--force", action="store_true", help="Allow casts that overflow to inf or flush to zero.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing destination atomically.")
    add_json(parser)
    parser.set_defaults(run=convert)


@handle_errors
def convert(args: argparse.Namespace) -> None:
    """Convert a checkpoint to another format through the canonical format."""
    options = dict(to=args.to, arch=args.arch, dtype=args.dtype, shard_size=args.shard_size, weights=args.weights,
                   onnx_package=args.onnx_package, experts=args.experts, force=args.force, overwrite=args.overwrite,
                   accept_differences=args.accept_difference)
    if args.json_out or not sys.stderr.isatty():
        report = llmstd.convert(args.src, args.dst, **options)
    else:
        report = _convert_with_progress_bar(args.src, args.dst, options)
    if args.json_out:
        print_json(report.to_dict())
        return
    _print_report(report)


def _convert_with_progress_bar(src: Path, dst: Path, options: dict) -> llmstd.ConversionReport:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("converting", total=None)

        def progress(name: str, nbytes: int, total: int) -> None:
            bar.update(task, advance=nbytes, total=total, description=name[-40:])

        return llmstd.convert(src, dst, progress=progress, **options)


def _print_report(report: llmstd.ConversionReport) -> None:
    from rich.console import Console
    from rich.markup import escape

    out = Console(highlight=False)
    out.print(f"[green]converted[/] {report.source} ({report.source_format}, {report.container}, "
              f"{report.architecture}) -> {report.destination} ({report.target_format})")
    out.print(f"  {report.tensors} tensors, {report.bytes:,} bytes, dtype {report.dtype}, {report.seconds:.2f}s")
    out.print(f"  files: {', '.join(report.files)}")
    for item in report.ignored:
        out.print(f"  ignored {escape(item['name'])}: {escape(item['reason'])}")
    for item in report.duplicates_dropped:
        out.print(f"  dropped duplicate {item['name']} (equal to {item['equal_to']})")
    for name, how in report.deviations.items():
        out.print(f"  [yellow]the source computes {escape(name)} otherwise[/]: {escape(how)}")
    for name in report.accepted_differences:
        out.print(f"  [yellow]allowed to differ[/] {escape(name)} (--accept-difference; llmstd check measures the effect)")
    for rel, reason in report.side_files_skipped.items():
        out.print(f"  [yellow]not carried[/] {escape(rel)}: {escape(reason)}")
    if report.config_keys_unreviewed:
        out.print(f"  config keys no rule covers, carried unchanged: {escape(', '.join(report.config_keys_unreviewed))}")
    for item in report.transforms:
        if item.get("value") == "zeros":  # a parameter the source graph proved to be zero (ONNX)
            out.print(f"  recovered {item['recovered']} as zeros: {escape(item['evidence'])}")
