"""``llmstd check A B``: run both checkpoints in their own runtimes and compare; exit 1 when they differ."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llmstd.cli.errors import EXIT_FAILURE, handle_errors
from llmstd.cli.options import add_arch
from llmstd.runtime_names import RUNTIMES as RUNTIME_NAMES

if TYPE_CHECKING:
    from rich.console import Console

RUNTIMES = " | ".join(RUNTIME_NAMES)


def add_parser(commands: argparse._SubParsersAction) -> None:
    about = "Run A and B in their own runtimes on the same tokens and compare outputs and hidden states."
    parser = commands.add_parser(
        "check", help=about,
        description=about + " Exits 1 when any output is out of tolerance (the report names the first diverging "
                            "layer).")
    parser.add_argument("a", type=Path, help="Reference checkpoint (any format).")
    parser.add_argument("b", type=Path, help="Checkpoint to compare with it (any format).")
    add_arch(parser)
    parser.add_argument("--input-ids", metavar="IDS", help='Token ids: a JSON file or JSON text, e.g. "[[1, 2, 3], [4, 5]]".')
    parser.add_argument("--text", action="append",
                        help="Text to encode with the checkpoint's tokenizer.json (repeat for a batch).")
    parser.add_argument("--batch", type=int, default=2, help="Sequences in the default batch (default: 2).")
    parser.add_argument("--seq-len", type=int, default=128,
                        help="Tokens per default sequence, capped by the model (default: 128).")
    parser.add_argument("--device", default="cpu", help="cpu | cuda, for both sides (default: cpu).")
    parser.add_argument("--device-a", help="Device for side A only.")
    parser.add_argument("--device-b", help="Device for side B only.")
    parser.add_argument("--runtime-a", default="auto", metavar="RUNTIME", help=f"Runtime of side A: {RUNTIMES}.")
    parser.add_argument("--runtime-b", default="auto", metavar="RUNTIME", help=f"Runtime of side B: {RUNTIMES}.")
    parser.add_argument("--atol", type=float, help="Absolute cap on the max abs error of logits (off by default).")
    parser.add_argument("--min-top1", type=float, help="Minimum top-1 agreement.")
    parser.add_argument("--max-kl", type=float, help="Maximum mean KL divergence (nats).")
    parser.add_argument("--max-nmse", type=float, help="Maximum NMSE of any output.")
    parser.add_argument("--max-rel-error", type=float, help="Maximum of max|a-b| / max|a| for any output.")
    parser.add_argument("--hidden-nmse", type=float, help="Hidden-state NMSE above which a layer counts as diverging.")
    parser.add_argument("--no-layers", action="store_true", help="Skip the per-layer comparison.")
    parser.add_argument("--require-reference", action="store_true",
                        help="Fail unless each side runs in its format's reference runtime.")
    parser.add_argument("--decode-steps", type=int, default=0, metavar="N",
                        help="Also generate N tokens with each side's key/value cache and compare every step.")
    parser.add_argument("--max-memory", metavar="SIZE",
                        help="Memory each side may hold, e.g. 6GB: llmstd-torch streams one layer at a time, "
                             "transformers offloads through accelerate (models larger than memory).")
    parser.add_argument("--device-map", metavar="STRATEGY",
                        help="auto | balanced | balanced_low_0 | sequential: accelerate places a transformers side, "
                             "spread over every GPU with --device cuda.")
    parser.add_argument("--json", dest="json_path", type=Path, metavar="FILE",
                        help="Also write the report as JSON to this file ('-': stdout, tables go to stderr).")
    parser.set_defaults(run=check)


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
    from rich.markup import escape
    from rich.table import Table

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
def check(args: argparse.Namespace) -> int | None:
    """Run A and B in their own runtimes on the same tokens and compare outputs and hidden states."""
    from llmstd.checking import check as run_check

    from rich.console import Console

    skip_tensorflow_import([args.a, args.b], [args.runtime_a, args.runtime_b])
    overrides = {k: v for k, v in {"logits_max_abs": args.atol, "min_top1": args.min_top1, "max_kl": args.max_kl,
                                   "max_nmse": args.max_nmse, "max_rel_error": args.max_rel_error,
                                   "hidden_nmse": args.hidden_nmse}.items() if v is not None}
    report = run_check(args.a, args.b, arch=args.arch, input_ids=args.input_ids, text=args.text, batch=args.batch,
                       seq_len=args.seq_len, device=args.device, device_a=args.device_a, device_b=args.device_b,
                       runtime_a=args.runtime_a, runtime_b=args.runtime_b, tolerance=overrides or None,
                       hidden_states=not args.no_layers, require_reference=args.require_reference,
                       decode_steps=args.decode_steps, max_memory=args.max_memory, device_map=args.device_map)
    json_path = args.json_path
    to_stdout = json_path is not None and str(json_path) == "-"
    render(report, Console(highlight=False, stderr=to_stdout))
    if json_path is not None:
        if to_stdout:
            sys.stdout.write(report.to_json() + "\n")
        else:
            json_path.write_text(report.to_json() + "\n", encoding="utf-8")
    return None if report.passed else EXIT_FAILURE
