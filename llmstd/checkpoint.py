"""The in-memory view of a checkpoint that every format reads into and writes from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmstd.config import CanonicalConfig
from llmstd.mapping import MappingReport
from llmstd.tensors import LazyTensor


@dataclass
class SideFiles:
    """Files that travel with the weights unchanged (tokenizer, chat template, generation config,
    sentence-transformers modules, README, licence, ...), by path relative to the checkpoint
    directory, and what was left behind with the reason."""

    files: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class Checkpoint(Mapping[str, LazyTensor]):
    """Canonical tensors (lazy) plus the canonical config and where they came from.

    Behaves as a read-only mapping of canonical name -> :class:`LazyTensor`.
    """

    path: Path
    format: str  # the format it was read from: hf, canonical, ...
    container: str  # safetensors, safetensors-sharded, torch-pickle, torch-pickle-sharded, ...
    dialect: str  # naming dialect of the source files ("canonical" for llmstd's own format)
    config: CanonicalConfig
    tensors: dict[str, LazyTensor]
    files: list[Path]  # weight files read, for provenance hashes
    source_names: dict[str, LazyTensor] = field(default_factory=dict)  # tensors as named in the files
    report: MappingReport = field(default_factory=MappingReport)
    sidecars: SideFiles = field(default_factory=SideFiles)  # files carried along unchanged
    provenance: dict[str, Any] = field(default_factory=dict)  # recorded history (canonical sources)

    @property
    def architecture(self) -> str:
        return self.config.architecture

    def __getitem__(self, name: str) -> LazyTensor:
        return self.tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())
