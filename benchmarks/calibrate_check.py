"""Calibration of ``llmstd check``'s default tolerances on trained checkpoints.

    python benchmarks/calibrate_check.py                      # writes benchmarks/CALIBRATION.md
    python benchmarks/calibrate_check.py --decoder DIR --encoder DIR --workdir /tmp/cal

Runs every correct conversion of a trained decoder (SmolLM2-135M-Instruct, llama architecture) and
a trained encoder (all-MiniLM-L6-v2, BERT) -- to each format llmstd writes, in float32, float16 and
bfloat16 -- through ``llmstd.check`` against the Hugging Face original in transformers, then plants
faults of decreasing size and checks each one. The report states, per judged dtype, the worst
correct case and the mildest fault as multiples of the limit: a tolerance is right when every
correct conversion sits well below its limits and every fault well above them.

The trained checkpoints come from the test suite's cache (tests/real_checkpoints.py downloads the
packages that ship them); tests/test_real_check.py runs a subset of the same cases and faults, so
the suite and this report check the same things.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import llmstd  # noqa: E402
from llmstd import formats, transforms  # noqa: E402
from llmstd.checking import CheckReport, check, tolerance_for  # noqa: E402
from llmstd.config import CanonicalConfig  # noqa: E402
from llmstd.tensors import ArrayTensor  # noqa: E402

Arrays = dict[str, np.ndarray]

#: Correct conversions: (model, target format, dtype). Every one must PASS.
CORRECT: list[tuple[str, str, str]] = [
    (model, fmt, dtype)
    for model in ("decoder", "encoder")
    for fmt in ("canonical", "onnx", "tf-h5", "tf-ckpt")
    for dtype in ("keep", "float16", "bfloat16")
]


@dataclass(frozen=True)
class Fault:
    """A fault planted into the canonical tensors/config of a trained model; ``reference`` optionally
    changes side A too (a fault is defined against the model the user has)."""

    name: str
    model: str  # decoder | encoder
    stage: str | None  # where check must localise it (None: any stage -- see below)
    plant: Callable[[Arrays, CanonicalConfig], CanonicalConfig | None]
    blamed: tuple[str, ...] = ()  # parameters or config fields the blame must name
    dtype: str = "keep"  # cast of the faulty side
    reference: Callable[[Arrays, CanonicalConfig], CanonicalConfig | None] | None = None


def _to_bf16(name: str) -> Callable[[Arrays, CanonicalConfig], None]:
    def plant(arrays: Arrays, config: CanonicalConfig) -> None:
        arrays[name] = arrays[name].astype(ml_dtypes.bfloat16).astype(arrays[name].dtype)
    return plant


def _config(**changes: Any) -> Callable[[Arrays, CanonicalConfig], CanonicalConfig]:
    return lambda arrays, config: config.replace(**changes)


def _transpose(name: str) -> Callable[[Arrays, CanonicalConfig], None]:
    def plant(arrays: Arrays, config: CanonicalConfig) -> None:
        arrays[name] = np.ascontiguousarray(arrays[name].T)
    return plant


def _plus_one(name: str) -> Callable[[Arrays, CanonicalConfig], None]:
    def plant(arrays: Arrays, config: CanonicalConfig) -> None:
        arrays[name] = arrays[name] + arrays[name].dtype.type(1.0)
    return plant


def _zero(name: str) -> Callable[[Arrays, CanonicalConfig], None]:
    def plant(arrays: Arrays, config: CanonicalConfig) -> None:
        arrays[name] = np.zeros_like(arrays[name])
    return plant


def _roll_rows(name: str) -> Callable[[Arrays, CanonicalConfig], None]:
    def plant(arrays: Arrays, config: CanonicalConfig) -> None:  # position table off by one row
        arrays[name] = np.roll(arrays[name], 1, axis=0)
    return plant


def _k_rotary_order_kept(arrays: Arrays, config: CanonicalConfig) -> None:
    """k left in Meta's interleaved rotary order (the permutation applied to q only). (The GQA trap
    itself -- permuting k with the query head count -- cannot even be built for this model: its 3 kv
    heads' 192 rows do not split into 9 heads.)"""
    kind = transforms.REGISTRY["rotary_permute"]
    for layer in range(config.num_layers):
        name = f"layers.{layer}.attn.k.weight"
        arrays[name] = kind.inverse([arrays[name]], {"heads": config.num_kv_heads})[0]


_LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8192}

FAULTS: list[Fault] = [
    Fault("one attention projection rounded to bfloat16 (layer 15 q)", "decoder", "layer 15",
          _to_bf16("layers.15.attn.q.weight"), ("layers.15.attn.q.weight",)),
    Fault("one MLP matrix rounded to bfloat16 (layer 15 down)", "decoder", "layer 15",
          _to_bf16("layers.15.mlp.down.weight"), ("layers.15.mlp.down.weight",)),
    Fault("rope_theta 10000 instead of 100000", "decoder", "layer 0", _config(rope_theta=10000.0), ("rope_theta",)),
    Fault("llama3 rope scaling dropped (factor 8, original context 8192)", "decoder", "layer 0",
          _config(rope_scaling=None), ("rope_scaling",), reference=_config(rope_scaling=_LLAMA3)),
    Fault("k rows left in the interleaved rotary order", "decoder", "layer 0",
          _k_rotary_order_kept, ("layers.0.attn.k.weight",)),
    Fault("square o projection transposed (layer 3)", "decoder", "layer 3",
          _transpose("layers.3.attn.o.weight"), ("layers.3.attn.o.weight",)),
    Fault("norm weight offset applied twice (layer 20 mlp_norm + 1)", "decoder", "layer 20",
          _plus_one("layers.20.mlp_norm.weight"), ("layers.20.mlp_norm.weight",)),
    # In half precision a stage diverges only once a fault outgrows the cast's own rounding, so the
    # stage can come later than the cause; the evidence still blames the right config field.
    Fault("rope_theta 10000 in a bfloat16 conversion", "decoder", None, _config(rope_theta=10000.0), ("rope_theta",),
          dtype="bfloat16"),
    Fault("one attention projection rounded to bfloat16 (layer 3 v)", "encoder", "layer 3",
          _to_bf16("layers.3.attn.v.weight"), ("layers.3.attn.v.weight",)),
    Fault("position table off by one row", "encoder", "embeddings", _roll_rows("embed.positions.weight"),
          ("embed.positions.weight",)),
    Fault("LayerNorm bias zeroed (layer 2 mlp_norm)", "encoder", "layer 2", _zero("layers.2.mlp_norm.bias"),
          ("layers.2.mlp_norm.bias",)),
]


def _write(arrays: Arrays, config: CanonicalConfig, like: Path, dst: Path, fmt: str = "hf") -> Path:
    """Write canonical ``arrays``/``config`` as format ``fmt`` (a Hugging Face directory by default, so
    that the faulty side runs in transformers, the reference runtime, like the original)."""
    ckpt = llmstd.load(like)
    planted = dataclasses.replace(ckpt, config=config, tensors={n: ArrayTensor(a) for n, a in arrays.items()})
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    formats.get(fmt).write(planted, tmp, formats.WriteOptions())
    tmp.rename(dst)
    return dst


def _modified(src: Path, dst: Path, change: Callable[[Arrays, CanonicalConfig], CanonicalConfig | None],
              dtype: str = "keep") -> Path:
    if dst.exists():
        return dst
    ckpt = llmstd.load(src)
    arrays = {n: np.array(t.load()) for n, t in ckpt.tensors.items()}
    config = change(arrays, ckpt.config) or ckpt.config
    if dtype != "keep":
        target = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
        arrays = {n: a.astype(target) if a.dtype.kind == "f" or a.dtype == ml_dtypes.bfloat16 else a
                  for n, a in arrays.items()}
        config = config.replace(dtype=dtype)
    return _write(arrays, config, src, dst)


def converted(src: Path, workdir: Path, model: str, fmt: str, dtype: str) -> Path:
    """``src`` converted to ``fmt``/``dtype``. Casts are forced: the trained encoder holds 7 embedding
    values below float16's smallest subnormal, which llmstd refuses to flush to zero unless asked."""
    dst = workdir / f"{model}-{fmt}-{dtype}"
    if not dst.exists():
        llmstd.convert(src, dst, to=fmt, dtype=dtype, force=True)
    return dst


def faulty(src: Path, workdir: Path, fault: Fault) -> tuple[Path, Path]:
    """(side A, side B) for a fault: the model as the user has it, and the faulty conversion."""
    slug = "".join(c if c.isalnum() else "-" for c in fault.name.lower()).strip("-")
    a = src if fault.reference is None else _modified(src, workdir / f"ref-{slug}", fault.reference)
    if fault.reference is None:
        b = _modified(src, workdir / f"fault-{slug}", fault.plant, fault.dtype)
    else:
        reference = fault.reference

        def both(arrays: Arrays, config: CanonicalConfig) -> CanonicalConfig | None:
            config = reference(arrays, config) or config
            return fault.plant(arrays, config)

        b = _modified(src, workdir / f"fault-{slug}", both, fault.dtype)
    return a, b


def found_as_planted(report: CheckReport, fault: Fault) -> bool:
    """The fault failed the check, at its stage, and the blame names what was planted."""
    first = report.first_divergence or {}
    return (not report.passed and (fault.stage is None or first.get("stage") == fault.stage)
            and all(name in first.get("blame", "") for name in fault.blamed))


def limit_ratios(report: CheckReport) -> dict[str, float]:
    """Each limited metric of the logits (or first output) as a fraction of its limit (>1 fails)."""
    out, tol = report.outputs[0], report.tolerance
    ratios = {"NMSE": out.nmse / tol.max_nmse if tol.max_nmse else 0.0}
    if tol.max_rel_error:
        ratios["max err / scale"] = out.rel_error / tol.max_rel_error
    if tol.max_kl and out.kl_mean is not None:
        ratios["KL"] = out.kl_mean / tol.max_kl
    if tol.min_top1 and out.top1 is not None:
        ratios["top-1 miss"] = (1 - out.top1) / (1 - tol.min_top1)
    return ratios


def _row_metrics(report: CheckReport) -> str:
    out = report.outputs[0]
    kl = f"{out.kl_mean:.2e}" if out.kl_mean is not None else "—"
    top1 = f"{out.top1:.4f}" if out.top1 is not None else "—"
    hidden = f"{max(layer.nmse for layer in report.layers):.2e}" if report.layers else "—"
    return f"{out.name} | {out.nmse:.2e} | {out.rel_error:.2e} | {kl} | {top1} | {hidden}"


def run(decoder: Path, encoder: Path, workdir: Path) -> str:
    sources = {"decoder": decoder, "encoder": encoder}
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# `llmstd check` calibration on trained checkpoints",
        "",
        f"Written by `python benchmarks/calibrate_check.py` on {datetime.date.today().isoformat()} "
        f"({platform.machine()}, {os.cpu_count()} cores, llmstd {llmstd.__version__}). Side A is always "
        "the Hugging Face original run by transformers; inputs are check's default batch (2 × 128 tokens, "
        "the second row right-padded to 96). Ratios are the metric divided by its limit: a correct "
        "conversion must stay below 1, a fault must exceed it.",
        "",
        "Models: **decoder** = SmolLM2-135M-Instruct (llama, 30 layers, GQA 9/3, dequantised from its "
        "Q4_1 GGUF to float32); **encoder** = all-MiniLM-L6-v2 (BERT, 6 layers, float32).",
        "",
        "## Limits (defaults of `llmstd check`)",
        "",
        "| judged as | max NMSE | max err / scale | min top-1 | max mean KL | hidden-state NMSE |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for dtype in ("float32", "float16", "bfloat16"):
        t = tolerance_for(dtype)
        lines.append(f"| {dtype} | {t.max_nmse:g} | {t.max_rel_error if t.max_rel_error else '—'} | "
                     f"{t.min_top1 or '—'} | {t.max_kl or '—'} | {t.hidden_nmse:g} |")
    lines += ["", "## Correct conversions (must pass)", "",
              "| model | format | dtype | B ran in | judged as | output | NMSE | max err / scale | KL mean | top-1 "
              "| max hidden NMSE | worst ratio to limit | verdict |",
              "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    worst: dict[str, tuple[float, str]] = {}
    for model, fmt, dtype in CORRECT:
        report = check(sources[model], converted(sources[model], workdir, model, fmt, dtype))
        name, ratio = max(limit_ratios(report).items(), key=lambda kv: kv[1])
        if ratio > worst.get(report.dtype, (-1.0, ""))[0]:
            worst[report.dtype] = (ratio, f"{model} → {fmt} {dtype} ({name})")
        lines.append(f"| {model} | {fmt} | {dtype} | {report.b.runtime} | {report.dtype} | {_row_metrics(report)} | "
                     f"{ratio:.3g} ({name}) | {'PASS' if report.passed else '**FAIL**'} |")
        print(lines[-1], flush=True)
    lines += ["", "## Planted faults (must fail, at the right stage)", "",
              "| model | fault | judged as | NMSE | ratio to limit | first divergence | expected | blame |",
              "|---|---|---|---:|---:|---|---|---|"]
    mildest: dict[str, tuple[float, str]] = {}
    for fault in FAULTS:
        a, b = faulty(sources[fault.model], workdir, fault)
        report = check(a, b)
        name, ratio = max(limit_ratios(report).items(), key=lambda kv: kv[1])
        stage = (report.first_divergence or {}).get("stage", "—")
        blame = (report.first_divergence or {}).get("blame", "—")
        if ratio < mildest.get(report.dtype, (float("inf"), ""))[0]:
            mildest[report.dtype] = (ratio, f"{fault.model}: {fault.name} ({name})")
        ok = found_as_planted(report, fault)
        lines.append(f"| {fault.model} | {fault.name} | {report.dtype} | {report.outputs[0].nmse:.2e} | "
                     f"{ratio:.3g} ({name}) | {stage}{'' if ok else ' **(not as planted)**'} | "
                     f"{fault.stage or 'any (blame names ' + ', '.join(fault.blamed) + ')'} | {blame} |")
        print(lines[-1], flush=True)
    lines += ["", "## Margins", "", "| judged as | worst correct case (ratio to limit) | mildest fault (ratio) |",
              "|---|---|---|"]
    for dtype in ("float32", "float16", "bfloat16"):
        w = worst.get(dtype)
        m = mildest.get(dtype)
        lines.append(f"| {dtype} | {f'{w[0]:.3g}: {w[1]}' if w else '—'} | {f'{m[0]:.3g}: {m[1]}' if m else '—'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decoder", type=Path, help="Hugging Face directory of the trained decoder")
    parser.add_argument("--encoder", type=Path, help="Hugging Face directory of the trained encoder")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/llmstd-calibration"))
    parser.add_argument("--out", type=Path, default=HERE / "CALIBRATION.md")
    args = parser.parse_args()
    if args.decoder is None or args.encoder is None:
        sys.path.insert(0, str(REPO / "tests"))
        import real_checkpoints

        args.decoder = args.decoder or real_checkpoints.decoder_dir()
        args.encoder = args.encoder or real_checkpoints.encoder_dir()
    text = run(args.decoder, args.encoder, args.workdir)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
