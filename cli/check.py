"""``llmstd check A B``: run both checkpoints in their own runtimes and compare; exit 1 when they differ."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Optional

import typer
from llmstd.cli.errors import EXIT_FAILURE, handle_errors
from llmstd.cli.options import Arch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

Runtime = Annotated[str, typer.Option(
    help="auto | transformers | llmstd-torch | transformers-tf | llmstd-tf | onnxruntime.")]


def skip_tensorflow_import(paths: Sequence[Path], runtimes: Sequence[str]) -> None:
    """Keep transformers from importing TensorFlow when no side needs it.

    transformers 4.x imports TensorFlow (seconds, and C++ log lines on stderr) whenever it is
    installed, unless USE_TORCH=1 says otherwise. A command-line process knows up front whether a
    side is a TensorFlow checkpoint, so it can say so; the Python API never touches the environment.
    """
    if "transformers" in sys.modules or "USE_TORCH" in os.environ or "USE_TF" in os.environ:
        return
    if any(r.endswith("-tf") for r in runtimes):
        return
    from llmstd import formats
    from llmstd.errors import LlmstdError

    try:
        names = [formats.detect(Path(p)).name for p in paths]
    except LlmstdError:
        return  # the command itself will report it
    if not any(n.startswith("tf") for n in names):
        os.environ["USE_TORCH"] = "1"


def _num(value: float | None, fmt: str = ".2e") -> str:
    if value is None:
        return "—"
    return format(value, fmt) if value == value and abs(value) != float("inf") else str(value)


def render(report: object, console: Console) -> None:
    """Print a CheckReport as tables (also used by ``llmstd validate --against``)."""
    from llmstd.checking import CheckReport

    assert isinstance(report, CheckReport)
    colour = "green" if report.a.in_reference and report.b.in_reference else "yellow"
    console.print(f"[{colour}]runtimes: {escape(report.reference)}[/]")
    for label, side in (("A", report.a), ("B", report.b)):
        console.print(f"[bold]{label}[/] {escape(side.path)}  "
                      f"[dim]{side.format}/{side.container}, {side.architecture}[/]"
                      f" — {escape(side.runtime_detail)} on {escape(side.device)}, {side.dtype}, "
                      f"load {side.load_seconds:.2f}s, run {side.run_seconds:.2f}s")
        for note in side.notes:
            console.print(f"    [yellow]note:[/] {escape(note)}")
    inputs = report.inputs
    console.print(f"inputs: {inputs['source']}, {inputs['batch']}×{inputs['seq_len']} tokens "
                  f"(real tokens per row: {', '.join(map(str, inputs['real_tokens']))}); judged as {report.dtype}")
    if report.config_differences:
        diffs = ", ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in report.config_differences.items())
        console.print(f"[yellow]configs differ:[/] {escape(diffs)}")
    table = Table(title="outputs (non-padded positions)")
    for column in ("output", "max abs", "/ scale", "NMSE", "cosine", "top-1", "top-5", "KL mean", "verdict"):
        table.add_column(column, justify="left" if column in ("output", "verdict") else "right")
    for o in report.outputs:
        table.add_row(o.name, _num(o.max_abs), _num(o.rel_error), _num(o.nmse), _num(o.cosine, ".6f"),
                      _num(o.top1, ".4f"), _num(o.top5, ".4f"), _num(o.kl_mean),
                      "[green]ok[/]" if o.passed else "[red]FAIL[/]")
    console.print(table)
    if report.layers:
        layers = Table(title=f"hidden states ({escape(report.localisation)})")
        for column in ("stage", "max abs", "NMSE", "cosine", ""):
            layers.add_column(column, justify="left" if column in ("stage", "") else "right")
        first = report.first_divergence["stage"] if report.first_divergence else None
        for layer in report.layers:
            mark = "[red]diverges[/]" if layer.diverged else "[green]ok[/]"
            if layer.stage == first:
                mark += " [red]← first[/]"
            layers.add_row(layer.stage, _num(layer.max_abs), _num(layer.nmse), _num(layer.cosine, ".6f"), mark)
        console.print(layers)
    else:
        console.print(f"hidden states: {escape(report.localisation)}")
    if report.decode is not None:
        steps = Table(title="cached decoding (next-token logits; both sides fed side A's greedy token)")
        for column in ("step", "max abs", "NMSE", "greedy A", "greedy B", ""):
            steps.add_column(column, justify="right")
        for step in report.decode.steps:
            mark = "[green]ok[/]" if step.logits.passed else "[red]diverges[/]"
            steps.add_row(str(step.step), _num(step.logits.max_abs), _num(step.logits.nmse),
                          " ".join(map(str, step.tokens_a)), " ".join(map(str, step.tokens_b)), mark)
        console.print(steps)
    colour = "green" if report.passed else "red"
    console.print(f"[bold {colour}]{escape(report.summary())}[/]")


@handle_errors
def check(
    a: Annotated[Path, typer.Argument(help="Reference checkpoint (any format).")],
    b: Annotated[Path, typer.Argument(help="Checkpoint to compare with it (any format).")],
    arch: Arch = None,
    input_ids: Annotated[Optional[str], typer.Option(
        "--input-ids", help='Token ids: a JSON file or JSON text, e.g. "[[1, 2, 3], [4, 5]]".')] = None,
    text: Annotated[Optional[list[str]], typer.Option(
        "--text", help="Text to encode with the checkpoint's tokenizer.json (repeat for a batch).")] = None,
    batch: Annotated[int, typer.Option("--batch", help="Sequences in the default batch.")] = 2,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per default sequence (capped by the model).")] = 128,
    device: Annotated[str, typer.Option("--device", help="cpu | cuda, for both sides.")] = "cpu",
    device_a: Annotated[Optional[str], typer.Option("--device-a", help="Device for side A only.")] = None,
    device_b: Annotated[Optional[str], typer.Option("--device-b", help="Device for side B only.")] = None,
    runtime_a: Runtime = "auto",
    runtime_b: Runtime = "auto",
    atol: Annotated[Optional[float], typer.Option(
        "--atol", help="Absolute cap on the max abs error of logits (off by default).")] = None,
    min_top1: Annotated[Optional[float], typer.Option("--min-top1", help="Minimum top-1 agreement.")] = None,
    max_kl: Annotated[Optional[float], typer.Option("--max-kl", help="Maximum mean KL divergence (nats).")] = None,
    max_nmse: Annotated[Optional[float], typer.Option("--max-nmse", help="Maximum NMSE of any output.")] = None,
    max_rel_error: Annotated[Optional[float], typer.Option(
        "--max-rel-error", help="Maximum of max|a-b| / max|a| for any output.")] = None,
    hidden_nmse: Annotated[Optional[float], typer.Option(
        "--hidden-nmse", help="Hidden-state NMSE above which a layer counts as diverging.")] = None,
    no_layers: Annotated[bool, typer.Option("--no-layers", help="Skip the per-layer comparison.")] = False,
    require_reference: Annotated[bool, typer.Option(
        "--require-reference", help="Fail unless each side runs in its format's reference runtime.")] = False,
    decode_steps: Annotated[int, typer.Option(
        "--decode-steps", help="Also generate N tokens with each side's key/value cache and compare every step.")
    ] = 0,
    max_memory: Annotated[Optional[str], typer.Option(
        "--max-memory", help="Memory each side may hold, e.g. 6GB: llmstd-torch streams one layer at a time, "
                             "transformers offloads through accelerate (models larger than memory).")] = None,
    device_map: Annotated[Optional[str], typer.Option(
        "--device-map", help="auto | balanced | balanced_low_0 | sequential: accelerate places a transformers "
                             "side, spread over every GPU with --device cuda.")] = None,
    json_path: Annotated[Optional[Path], typer.Option(
        "--json", help="Also write the report as JSON to this file ('-': stdout, tables go to stderr).")] = None,
) -> None:
    """Run A and B in their own runtimes on the same tokens and compare outputs and hidden states.

    Exits 1 when any output is out of tolerance (the report names the first diverging layer).
    """
    from llmstd.checking import check as run_check

    skip_tensorflow_import([a, b], [runtime_a, runtime_b])
    overrides = {k: v for k, v in {"logits_max_abs": atol, "min_top1": min_top1, "max_kl": max_kl,
                                   "max_nmse": max_nmse, "max_rel_error": max_rel_error,
                                   "hidden_nmse": hidden_nmse}.items() if v is not None}
    report = run_check(a, b, arch=arch, input_ids=input_ids, text=text, batch=batch, seq_len=seq_len, device=device,
                       device_a=device_a, device_b=device_b, runtime_a=runtime_a, runtime_b=runtime_b,
                       tolerance=overrides or None, hidden_states=not no_layers,
                       require_reference=require_reference, decode_steps=decode_steps, max_memory=max_memory,
                       device_map=device_map)
    to_stdout = json_path is not None and str(json_path) == "-"
    render(report, Console(highlight=False, stderr=to_stdout))
    if json_path is not None:
        if to_stdout:
            typer.echo(report.to_json())
        else:
            json_path.write_text(report.to_json() + "\n", encoding="utf-8")
    if not report.passed:
        raise typer.Exit(EXIT_FAILURE)
