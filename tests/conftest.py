"""Session-wide test setup: offline, quiet frameworks, and tiny models built and saved once per session.

Fixtures (all session-scoped, built lazily on first use and cached):

- ``tiny``: a :class:`TinyModels` store with
  ``tiny.model(kind, dtype)``          the randomized transformers model (do not mutate it),
  ``tiny.hf_dir(kind, form, dtype)``   that model saved by transformers as safetensors | sharded | bin,
  ``tiny.expected(kind, dtype)``       its tensors as a safetensors save stores them (tied copies dropped),
  ``tiny.logits(kind, dtype)``         its output on ``helpers.padded_batch()``,
  ``tiny.canonical_dir(kind, dtype)``  the llmstd canonical conversion of its safetensors save.
- ``tiny_gpt2_dir``: the repo's examples/tiny-gpt2 (skips if absent).

Treat every returned directory as read-only; copy it (``shutil.copytree``) before damaging it.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402


def _dtype_name(dtype: Any) -> str:
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


class TinyModels:
    """Builds each (kind, dtype) model and each saved form once; everything lives under one tmp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._models: dict[tuple[str, str], Any] = {}
        self._dirs: dict[tuple[str, str, str], Path] = {}
        self._expected: dict[tuple[str, str], dict[str, Any]] = {}
        self._logits: dict[tuple[str, str], Any] = {}
        self._canonical: dict[tuple[str, str], Path] = {}

    def model(self, kind: str, dtype: Any = "float32") -> Any:
        key = (kind, _dtype_name(dtype))
        if key not in self._models:
            self._models[key] = helpers.build_model(kind, dtype=key[1])
        return self._models[key]

    def hf_dir(self, kind: str, form: str = "safetensors", dtype: Any = "float32") -> Path:
        key = (kind, form, _dtype_name(dtype))
        if key not in self._dirs:
            path = self.root / "hf" / f"{kind}-{key[2]}-{form}"
            helpers.save(self.model(kind, dtype), path, form)
            self._dirs[key] = path
        return self._dirs[key]

    def expected(self, kind: str, dtype: Any = "float32") -> dict[str, Any]:
        key = (kind, _dtype_name(dtype))
        if key not in self._expected:
            self._expected[key] = helpers.read_safetensors_dir(self.hf_dir(kind, "safetensors", dtype))
        return self._expected[key]

    def logits(self, kind: str, dtype: Any = "float32") -> Any:
        key = (kind, _dtype_name(dtype))
        if key not in self._logits:
            self._logits[key] = helpers.logits(self.model(kind, dtype), *helpers.padded_batch())
        return self._logits[key]

    def canonical_dir(self, kind: str, dtype: Any = "float32") -> Path:
        key = (kind, _dtype_name(dtype))
        if key not in self._canonical:
            import llmstd

            path = self.root / "canonical" / f"{kind}-{key[1]}"
            llmstd.convert(self.hf_dir(kind, "safetensors", dtype), path, to="canonical")
            self._canonical[key] = path
        return self._canonical[key]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir() -> Path:
    path = helpers.REPO / "examples" / "tiny-gpt2"
    if not (path / "config.json").is_file():
        pytest.skip("examples/tiny-gpt2 is not in the repository yet")
    return path
