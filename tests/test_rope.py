"""Rotary frequencies (llmstd/rope.py), written once for every runtime: evaluated with torch they are
transformers' own, bit for bit; with numpy (TensorFlow runtime, ONNX writer) equal within float32
rounding of a power function."""

from __future__ import annotations

import numpy as np
import pytest

from llmstd import rope

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SCALINGS = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    "longrope": {"rope_type": "longrope", "short_factor": [1.0 + 0.1 * i for i in range(16)],
                 "long_factor": [2.0 + 0.3 * i for i in range(16)], "original_max_position_embeddings": 64},
}


def _transformers_inv_freq(scaling: dict | None, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    hf = transformers.LlamaConfig(hidden_size=128, num_attention_heads=4, num_key_value_heads=1,
                                  rope_parameters={"rope_theta": 50000.0, **(scaling or {"rope_type": "default"})},
                                  max_position_embeddings=256, num_hidden_layers=1, intermediate_size=32, vocab_size=16)
    module = LlamaRotaryEmbedding(config=hf)
    if seq_len is None:
        return module.inv_freq.numpy(), float(module.attention_scaling)
    positions = torch.arange(seq_len)[None]
    module(torch.zeros(1), positions)  # LongRoPE switches its frequencies on the positions it sees
    return module.inv_freq.numpy(), float(module.attention_scaling)


@pytest.mark.parametrize("kind", sorted(SCALINGS))
def test_frequencies_are_transformers_own(kind: str) -> None:
    from llmstd.runtimes.torch_ops import TorchMath

    want, factor = _transformers_inv_freq(SCALINGS[kind])
    with_torch = rope.frequencies(50000.0, 32, SCALINGS[kind], 256, TorchMath(torch))
    assert torch.equal(with_torch.inv_freq, torch.from_numpy(want)) and with_torch.attention_factor == factor
    with_numpy = rope.frequencies(50000.0, 32, SCALINGS[kind], 256, rope.NUMPY)
    np.testing.assert_allclose(with_numpy.inv_freq, want, rtol=2e-7, atol=0)
    assert with_numpy.attention_factor == factor


def test_longrope_switches_to_the_long_factors_past_the_original_context() -> None:
    long_want, _ = _transformers_inv_freq(SCALINGS["longrope"], seq_len=65)
    short_want, _ = _transformers_inv_freq(SCALINGS["longrope"], seq_len=64)
    tables = rope.frequencies(50000.0, 32, SCALINGS["longrope"], 256, rope.NUMPY)
    assert tables.long_after == 64
    np.testing.assert_allclose(tables.long_inv_freq, long_want, rtol=2e-7)
    np.testing.assert_allclose(tables.inv_freq, short_want, rtol=2e-7)
    assert not np.allclose(long_want, short_want)
