"""Tiny randomized models with realistic activation scales, for the runtime, check and validate tests.

helpers.build_model randomizes every parameter with std 0.05. That hides attention: after a norm
whose weights are ~0.05, queries and keys are ~0.01, every attention score is ~1e-4 and softmax is
uniform, so a swapped q/k or a wrong rotary permutation moves the logits by ~1e-7 — below any
sensible tolerance. ``sharpen_`` rescales every parameter by its rank (no names involved): matrices
to std 0.25 (about 1.4/sqrt(fan_in) at width 32) and vectors (norm weights, biases) to std 1, so
activations are O(1), attention is peaked and each planted fault shows at its own layer.

``sharp`` is a session fixture: ``sharp.hf_dir(kind)`` (saved by transformers), ``sharp.model(kind)``
(do not mutate), ``sharp.canonical_dir(kind)`` and ``sharp.converted(kind, fmt)``. Directories are
read-only for tests; copy before damaging.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import helpers

sharpen_ = helpers.sharpen_


class SharpModels:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._models: dict[str, Any] = {}
        self._dirs: dict[tuple[str, str], Path] = {}

    def model(self, kind: str) -> Any:
        if kind not in self._models:
            self._models[kind] = sharpen_(helpers.build_model(kind, seed=11))
        return self._models[kind]

    def hf_dir(self, kind: str) -> Path:
        return self.converted(kind, "hf")

    def canonical_dir(self, kind: str) -> Path:
        return self.converted(kind, "canonical")

    def converted(self, kind: str, fmt: str, dtype: str = "keep") -> Path:
        """The model saved by transformers ('hf'), or llmstd's conversion of that save to ``fmt``."""
        key = (kind, f"{fmt}-{dtype}")
        if key not in self._dirs:
            path = self.root / f"{kind}-{fmt}-{dtype}"
            if fmt == "hf" and dtype == "keep":
                helpers.save(self.model(kind), path, "safetensors")
            else:
                import llmstd

                llmstd.convert(self.hf_dir(kind), path, to=fmt, dtype=dtype)
            self._dirs[key] = path
        return self._dirs[key]


_SINGLETON: SharpModels | None = None


@pytest.fixture(scope="session")
def sharp(tmp_path_factory: pytest.TempPathFactory) -> SharpModels:
    global _SINGLETON
    if _SINGLETON is None:
        _SINGLETON = SharpModels(tmp_path_factory.mktemp("sharp-models"))
    return _SINGLETON
