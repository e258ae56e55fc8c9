"""The conversion driver: read any format into canonical tensors, optionally cast, write any format,
atomically. Also :func:`load`, the lazy canonical view of a checkpoint."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmstd import dtypes, formats, timing
from llmstd.atomic import check_not_overlapping, staged_directory
from llmstd.checkpoint import Checkpoint
from llmstd.config import CanonicalConfig
from llmstd.errors import LlmstdError
from llmstd.tensors import CastTensor, LazyTensor

Progress = Callable[[str, int, int], None]  # (tensor name, bytes just written, total bytes)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int | None) -> int | None:
    """'500MB' (decimal, as Hugging Face counts), '2GiB' (binary) or a byte count."""
    if text is None or isinstance(text, int):
        return text
    m = _SIZE.match(text)
    if not m:
        raise LlmstdError(f"cannot read size {text!r}", hint="use e.g. 500MB, 2GB, 1GiB or a byte count")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])


def load(path: str | Path, *, arch: str | None = None) -> Checkpoint:
    """Open any supported checkpoint lazily as canonical tensors plus canonical config."""
    path = Path(path)
    return formats.detect(path).read(path, arch)


@dataclass
class ConversionReport:
    source: str
    destination: str
    source_format: str
    container: str
    dialect: str
    architecture: str
    target_format: str
    tensors: int
    bytes: int
    dtype: str
    files: list[str]
    seconds: float
    ignored: list[dict[str, str]] = field(default_factory=list)
    duplicates_dropped: list[dict[str, str]] = field(default_factory=list)
    transforms: list[dict[str, Any]] = field(default_factory=list)
    config_keys_harmless: dict[str, str] = field(default_factory=dict)
    config_keys_unreviewed: list[str] = field(default_factory=list)
    side_files: list[str] = field(default_factory=list)  # copied unchanged, relative to the destination
    side_files_skipped: dict[str, str] = field(default_factory=dict)  # left behind, with the reason
    accepted_differences: list[str] = field(default_factory=list)  # canonical fields the target computes otherwise
    deviations: dict[str, str] = field(default_factory=dict)  # fields the source's runtime computes otherwise
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase (llmstd.timing) and wall

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def cast_checkpoint(ckpt: Checkpoint, dtype: str, *, force: bool) -> Checkpoint:
    """A view of ``ckpt`` whose floating tensors load as ``dtype`` (guarded against lossy casts)."""
    if dtype == "keep":
        return ckpt
    if dtype not in dtypes.CAST_TARGETS:
        raise LlmstdError(f"unsupported --dtype {dtype!r}", hint=f"choose keep, {', '.join(dtypes.CAST_TARGETS)}")
    target = dtypes.dtype(dtype)
    cast: dict[str, LazyTensor] = {
        name: CastTensor(t, target, name, force) if t.dtype.is_float and t.dtype != target else t
        for name, t in ckpt.tensors.items()
    }
    return Checkpoint(path=ckpt.path, format=ckpt.format, container=ckpt.container, dialect=ckpt.dialect,
                      config=ckpt.config.replace(dtype=dtype), tensors=cast, files=ckpt.files,
                      source_names=ckpt.source_names, report=ckpt.report, sidecars=ckpt.sidecars,
                      provenance=ckpt.provenance)


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    to: str = "canonical",
    arch: str | None = None,
    dtype: str = "keep",
    shard_size: str | int | None = None,
    weights: str = "safetensors",
    onnx_package: str = "plain",
    experts: str = "per-expert",
    accept_differences: Sequence[str] = (),
    force: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ConversionReport:
    """Convert the checkpoint at ``src`` into format ``to`` at directory ``dst``.

    The destination appears atomically and complete, or not at all; writing onto the input is refused.
    """
    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    target = formats.get(to)
    if weights not in ("safetensors", "bin"):
        raise LlmstdError(f"unknown weights format {weights!r}", hint="choose safetensors or bin")
    if onnx_package != "plain" and to != "onnx":
        raise LlmstdError(f"--onnx-package {onnx_package} applies to --to onnx, not --to {to}")
    if experts not in formats.EXPERT_LAYOUTS:
        raise LlmstdError(f"unknown experts layout {experts!r}", hint=f"choose {' or '.join(formats.EXPERT_LAYOUTS)}")
    if experts != "per-expert" and to != "hf":
        raise LlmstdError(f"--experts {experts} applies to --to hf, not --to {to}")
    accept = tuple(accept_differences)
    if accept and to != "keras-hub":
        raise LlmstdError(f"--accept-difference applies to --to keras-hub, not --to {to}")
    unknown = sorted(set(accept) - set(CanonicalConfig.__dataclass_fields__))
    if unknown:
        raise LlmstdError(f"--accept-difference names no canonical config field: {', '.join(unknown)}",
                          hint="fields are listed in docs/SPEC.md (e.g. activation)")
    with timing.collect() as timings:
        with timing.phase("read source"):
            ckpt = cast_checkpoint(load(src, arch=arch), dtype, force=force)
        check_not_overlapping([src, *ckpt.files], dst)
        total = ckpt.nbytes
        options = formats.WriteOptions(
            shard_size=parse_size(shard_size), weights=weights, onnx_package=onnx_package, experts=experts,
            accept=accept, progress=(lambda name, nbytes: progress(name, nbytes, total)) if progress else None,
        )
        try:
            with staged_directory(dst, overwrite=overwrite) as staging:
                written = sorted(p.relative_to(staging).as_posix() for p in target.write(ckpt, staging, options))
                written_at = time.perf_counter()
        except LlmstdError as exc:
            if exc.file is None:  # e.g. a lossy cast found while writing: name the checkpoint it came from
                exc.file = str(src)
            raise
        timing.add("finish", time.perf_counter() - written_at)  # the staging directory fsynced and renamed
    return ConversionReport(
        source=str(src), destination=str(dst), source_format=ckpt.format, container=ckpt.container,
        dialect=ckpt.dialect, architecture=ckpt.architecture, target_format=to, tensors=len(ckpt.tensors),
        bytes=ckpt.nbytes, dtype=ckpt.config.dtype, files=written,
        seconds=round(time.perf_counter() - started, 3),
        side_files=sorted(r for r in ckpt.sidecars.files if r not in ckpt.sidecars.skipped),
        side_files_skipped=dict(ckpt.sidecars.skipped), accepted_differences=list(accept), timings=timings,
        **{k: v for k, v in ckpt.report.to_dict().items()},
    )
