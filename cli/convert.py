"""``llmstd convert SRC DST --to FORMAT``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from llmstd.cli.errors import handle_errors
from llmstd.cli.options import Arch, Json, print_json
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

import llmstd


def _targets() -> str:
    from llmstd import formats

    return ", ".join(sorted(formats.names()))


TARGETS = _targets()


@handle_errors
def convert(
    src: Annotated[Path, typer.Argument(help="Source checkpoint (directory or file).")],
    dst: Annotated[Path, typer.Argument(help="Destination directory (created atomically).")],
    to: Annotated[str, typer.Option("--to", help=f"Target format: {TARGETS}.")] = "canonical",
    arch: Arch = None,
    dtype: Annotated[str, typer.Option("--dtype", help="keep | float32 | float16 | bfloat16.")] = "keep",
    shard_size: Annotated[Optional[str], typer.Option(
        "--shard-size", help="Largest shard, e.g. 2GB or 500MB (default: one file; 5GB for hf).")] = None,
    weights: Annotated[str, typer.Option(
        "--weights", help="Container for --to hf: safetensors | bin.")] = "safetensors",
    onnx_package: Annotated[str, typer.Option(
        "--onnx-package", help="For --to onnx: plain | genai (adds genai_config.json for onnxruntime-genai).")
    ] = "plain",
    experts: Annotated[str, typer.Option(
        "--experts", help="Mixture-of-experts layout for --to hf: per-expert (transformers' default save) | packed "
                          "(transformers 5 save_original_format=False).")] = "per-expert",
    accept_difference: Annotated[Optional[list[str]], typer.Option(
        "--accept-difference", help="For --to keras-hub: a canonical config field (e.g. activation) whose value "
                                    "the target backbone computes differently, accepted by name; repeatable.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Allow casts that overflow to inf or flush to zero.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing destination atomically.")] = False,
    json_out: Json = False,
) -> None:
    """Convert a checkpoint to another format through the canonical format."""
    console = Console(stderr=True)
    if json_out or not console.is_terminal:
        report = llmstd.convert(src, dst, to=to, arch=arch, dtype=dtype, shard_size=shard_size, weights=weights,
                                onnx_package=onnx_package, experts=experts, force=force, overwrite=overwrite,
                                accept_differences=accept_difference or ())
    else:
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("converting", total=None)

            def progress(name: str, nbytes: int, total: int) -> None:
                bar.update(task, advance=nbytes, total=total, description=name[-40:])

            report = llmstd.convert(src, dst, to=to, arch=arch, dtype=dtype, shard_size=shard_size,
                                    weights=weights, onnx_package=onnx_package, experts=experts, force=force,
                                    overwrite=overwrite, accept_differences=accept_difference or (),
                                    progress=progress)
    if json_out:
        print_json(report.to_dict())
        return
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
