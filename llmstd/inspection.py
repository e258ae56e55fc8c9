"""``llmstd inspect``: what a checkpoint is — container, dialect, architecture, canonical config,
tensors with dtypes and sizes, and tied weights — without loading tensor data."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmstd import vocab
from llmstd.conversion import load


@dataclass
class TensorRow:
    name: str  # canonical name
    dtype: str
    shape: list[int]
    bytes: int


@dataclass
class InspectReport:
    path: str
    format: str
    container: str
    dialect: str
    architecture: str
    config: dict[str, Any]
    tensors: list[TensorRow]
    source_tensor_count: int
    dtype_bytes: dict[str, int]
    total_bytes: int
    parameters: int
    tied: dict[str, str]
    ignored: list[dict[str, str]]
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["tensors"] = [row.__dict__ for row in self.tensors]
        return out


def inspect(path: str | Path, *, arch: str | None = None) -> InspectReport:
    ckpt = load(path, arch=arch)
    rows = [TensorRow(n, t.dtype.name, list(t.shape), t.nbytes) for n, t in ckpt.tensors.items()]
    by_dtype: collections.Counter[str] = collections.Counter()
    for row in rows:
        by_dtype[row.dtype] += row.bytes
    return InspectReport(
        path=str(path), format=ckpt.format, container=ckpt.container, dialect=ckpt.dialect,
        architecture=ckpt.architecture, config=ckpt.config.to_dict(), tensors=rows,
        source_tensor_count=len(ckpt.source_names), dtype_bytes=dict(by_dtype), total_bytes=sum(by_dtype.values()),
        parameters=sum(t.numel for t in ckpt.tensors.values()), tied=vocab.tied_tensors(ckpt.config),
        ignored=[{"name": n, "reason": r} for n, r in ckpt.report.ignored], provenance=ckpt.provenance,
    )
