"""Shared fixtures for the TensorFlow tests (issue 3): tiny models, their TF conversions and torch
references at 64 tokens, each built once per session.

Builds on the session-wide ``tiny`` store of tests/conftest.py (randomized transformers models in
which every parameter, biases and norm weights included, is random). TensorFlow starts once per
process (~10 s); everything here is shared so the suite stays within a few minutes on two cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("tensorflow")
pytest.importorskip("h5py")
pytest.importorskip("torch")
pytest.importorskip("transformers")

import helpers  # noqa: E402

SEQ = 64  # >= 64 tokens: rotary and sliding-window mistakes only show on longer sequences
TOL = 1e-4  # max abs logit difference accepted between frameworks (float32)

# Extra tiny models for the runtime checks (same sizes as helpers.KINDS).
EXTRA_KINDS: dict[str, dict[str, Any]] = {
    "mistral-window16": dict(helpers.KINDS["mistral"],
                             kwargs=dict(helpers.KINDS["mistral"]["kwargs"], sliding_window=16)),
    "llama-rope-linear": dict(helpers.KINDS["llama"], kwargs=dict(
        helpers.KINDS["llama"]["kwargs"], rope_scaling={"rope_type": "linear", "factor": 2.0})),
    "llama-rope-llama3": dict(helpers.KINDS["llama"], kwargs=dict(
        helpers.KINDS["llama"]["kwargs"], rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32})),
}
for _name, _spec in EXTRA_KINDS.items():
    helpers.KINDS.setdefault(_name, _spec)


def batch() -> tuple[Any, Any]:
    """Two sequences of SEQ tokens, the second right-padded (last 6 positions masked)."""
    return helpers.padded_batch(seq=SEQ)


def max_abs(a: Any, b: Any) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


class TFStore:
    """Per-session cache of sharpened torch models, their outputs on batch() and llmstd's TF conversions."""

    def __init__(self, tiny: Any, root: Path) -> None:
        self.tiny = tiny
        self.root = root
        self._models: dict[str, Any] = {}
        self._ref: dict[str, Any] = {}
        self._conv: dict[tuple[str, str, str, bool], Path] = {}

    def model(self, kind: str) -> Any:
        """A sharpened tiny model of ``kind`` (float32, eager attention); do not mutate it."""
        if kind not in self._models:
            self._models[kind] = helpers.sharpen_(helpers.build_model(kind, seed=7))
        return self._models[kind]

    def hf_dir(self, kind: str) -> Path:
        path = self.root / f"{kind}-sharp-hf"
        if not path.exists():
            helpers.save(self.model(kind), path, "safetensors")
        return path

    def reference(self, kind: str) -> Any:
        """The sharpened torch model's output on batch() (logits or hidden states, all hidden states)."""
        if kind not in self._ref:
            import torch

            with torch.no_grad():
                ids, mask = batch()
                self._ref[kind] = self.model(kind)(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        return self._ref[kind]

    def converted(self, kind: str, fmt: str, dtype: str = "float32", *, sharp: bool = True) -> Path:
        """llmstd's conversion of a transformers save of ``kind`` to ``fmt`` (tf-h5 | tf-ckpt).

        ``sharp``: the sharpened model of :meth:`model` (for logit checks), else the plain
        ``tiny`` model (for bit-identity checks against ``tiny.expected``).
        """
        key = (kind, fmt, dtype, sharp)
        if key not in self._conv:
            import llmstd

            out = self.root / f"{kind}-{dtype}-{fmt}-{'sharp' if sharp else 'tiny'}"
            src = self.hf_dir(kind) if sharp else self.tiny.hf_dir(kind, "safetensors", dtype)
            if sharp and dtype != "float32":
                llmstd.convert(src, out, to=fmt, dtype=dtype)
            else:
                llmstd.convert(src, out, to=fmt)
            self._conv[key] = out
        return self._conv[key]


@pytest.fixture(scope="session")
def tfstore(tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> TFStore:
    return TFStore(tiny, tmp_path_factory.mktemp("tf-conversions"))
