"""Fixtures for the ONNX tests: tiny randomized models, their llmstd ONNX conversions and their
exports by torch.onnx (dynamo and TorchScript), each built once per session on first use.

transformers imports TensorFlow when it is installed, which costs seconds per process; the ONNX tests
never need it, so USE_TF=0 is set — but only when the session runs nothing outside tests/onnx, since
the variable is read once per process and the TF tests elsewhere need transformers' TF classes.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import onnx_helpers as oh


def pytest_configure(config: pytest.Config) -> None:
    args = [Path(str(a).split("::")[0]).resolve() for a in config.args] or [Path.cwd()]
    if all(a == HERE or HERE in a.parents for a in args):
        os.environ.setdefault("USE_TF", "0")


class Store:
    """Lazily built artefacts, keyed by kind; every directory is read-only for the tests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[tuple[str, ...], Any] = {}

    def _get(self, key: tuple[str, ...], build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def model(self, kind: str) -> Any:
        return self._get(("model", kind), lambda: oh.build(kind))

    def hf_dir(self, kind: str) -> Path:
        return self._get(("hf", kind), lambda: oh.save(self.model(kind), self.root / "hf" / kind))

    def onnx_dir(self, kind: str) -> Path:
        def build() -> Path:
            import llmstd

            out = self.root / "onnx" / kind
            llmstd.convert(self.hf_dir(kind), out, to="onnx")
            return out

        return self._get(("onnx", kind), build)

    def reference(self, kind: str) -> dict[str, Any]:
        """Torch outputs of the original model on the padded test batch."""
        return self._get(("ref", kind), lambda: oh.torch_outputs(self.model(kind), kind, oh.batch(kind)))

    def export(self, kind: str, exporter: str) -> Path:
        """A directory holding the model exported by torch.onnx plus its config.json (Optimum layout).

        ``exporter``: ``dynamo`` (dynamic batch and sequence), ``torchscript`` (dynamic axes),
        ``static`` (dynamo without dynamic shapes: the position table gets folded into a constant).
        """
        def build() -> Path:
            out = self.root / f"export-{exporter}" / kind
            out.mkdir(parents=True, exist_ok=True)  # a failed earlier build may have left it
            oh.export(oh.build(kind), kind, out / "model.onnx", exporter)
            self.model(kind).config.save_pretrained(out)
            return out

        return self._get(("export", exporter, kind), build)


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("onnx"))


@pytest.fixture
def copy_of(tmp_path: Path) -> Callable[[Path], Path]:
    """A writable copy of a read-only fixture directory."""
    def copy(src: Path) -> Path:
        dst = tmp_path / f"copy-{src.name}"
        shutil.copytree(src, dst)
        return dst

    return copy
