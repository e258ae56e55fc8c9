"""Checkpoint formats: how a directory (or file) of one ecosystem is laid out, which container and
dialect it uses, and how to read it into / write it from a :class:`~llmstd.checkpoint.Checkpoint`.

Each format module registers one :class:`Format`. Detection asks each format in turn. A format's
reader is the one reading of its checkpoints that convert, inspect and validate share: strict by
default, lenient with a findings collector (:class:`Reader`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from llmstd.checkpoint import Checkpoint
from llmstd.errors import DetectionError
from llmstd.findings import Findings

Progress = Callable[[str, int], None]
#: How a Hugging Face directory stores mixture-of-experts experts: one tensor per expert (what
#: transformers saves by default and 4.x reads) or packed per layer (transformers 5's run-time layout).
EXPERT_LAYOUTS = ("per-expert", "packed")


@dataclass(frozen=True)
class WriteOptions:
    shard_size: int | None = None  # bytes per shard; None = the format's default
    weights: str = "safetensors"  # for hf: safetensors | bin
    onnx_package: str = "plain"  # for onnx: plain | genai (adds genai_config.json)
    experts: str = "per-expert"  # for hf: one of EXPERT_LAYOUTS
    #: for keras-hub: canonical config fields whose difference from what the target computes the
    #: user accepts by name (e.g. KerasHub's BERT runs tanh-approximated gelu)
    accept: tuple[str, ...] = ()
    progress: Progress | None = None


class Reader(Protocol):
    """``read(path, arch)``: strict -- the first problem raises its typed error, and a Checkpoint is
    always returned. ``read(path, arch, findings=collector)``: lenient -- each problem is recorded in
    the collector under a finding code and reading carries on with what it could read, returning the
    Checkpoint recovered (its tensors those that mapped cleanly), or None where nothing canonical could
    be (no readable config or weights). A format without a lenient mode reads strictly either way."""

    def __call__(self, path: Path, arch: str | None = None, *,
                 findings: Findings | None = None) -> Checkpoint | None: ...


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    detect: Callable[[Path], bool]
    read: Reader
    write: Callable[[Checkpoint, Path, WriteOptions], list[Path]]


REGISTRY: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    REGISTRY[fmt.name] = fmt
    return fmt


# Format modules, in detection order. Imported on first use so that `llmstd --help` and reading
# one format never import another format's framework.
BUILTIN = ("canonical", "hf", "onnx", "tf_h5", "tf_ckpt", "keras_hub")


def _load_builtin() -> None:
    import importlib

    for name in BUILTIN:
        importlib.import_module(f"llmstd.formats.{name}")


def names() -> list[str]:
    _load_builtin()
    return list(REGISTRY)


def get(name: str) -> Format:
    _load_builtin()
    if name not in REGISTRY:
        raise DetectionError(f"unknown target format '{name}'", hint=f"choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def detect(path: Path) -> Format:
    _load_builtin()
    # Formats are asked before checking existence: a tf.train checkpoint is named by its prefix
    # (``.../bert_model.ckpt``), which is not itself a file.
    for fmt in REGISTRY.values():
        if fmt.detect(path):
            return fmt
    if not path.exists():
        raise DetectionError("no such file or directory", file=path)
    raise DetectionError(
        "not a checkpoint llmstd recognises",
        file=path,
        hint="expected one of: " + "; ".join(f"{f.name} ({f.description})" for f in REGISTRY.values()),
    )
