"""Checkpoint formats: how a directory (or file) of one ecosystem is laid out, which container and
dialect it uses, and how to read it into / write it from a :class:`~llmstd.checkpoint.Checkpoint`.

Each format module registers one :class:`Format`. Detection asks each format in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmstd.checkpoint import Checkpoint
from llmstd.errors import DetectionError

Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class WriteOptions:
    shard_size: int | None = None  # bytes per shard; None = the format's default
    weights: str = "safetensors"  # for hf: safetensors | bin
    progress: Progress | None = None


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    detect: Callable[[Path], bool]
    read: Callable[[Path, str | None], Checkpoint]
    write: Callable[[Checkpoint, Path, WriteOptions], list[Path]]


REGISTRY: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    REGISTRY[fmt.name] = fmt
    return fmt


# Format modules, in detection order. Imported on first use so that `llmstd --help` and reading
# one format never import another format's framework.
BUILTIN = ("canonical", "hf", "onnx", "tf_h5", "tf_ckpt")


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
