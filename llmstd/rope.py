"""Rotary-embedding frequencies in numpy, as transformers computes them, for runtimes whose graph
is built once (llmstd's TF runtime and ONNX writer): the default, 'linear' and 'llama3' scalings.

Scalings whose frequencies depend on the sequence length at run time ('dynamic', 'yarn') are
refused here; llmstd's torch runtime computes those per call.
"""

from __future__ import annotations

import math

import numpy as np

from llmstd.config import CanonicalConfig
from llmstd.errors import ConfigError

STATIC_ROPE_TYPES = ("default", "linear", "llama3")


def rope_type(config: CanonicalConfig) -> str:
    """The rope_scaling type of a rotary config ('default' without scaling)."""
    scaling = config.rope_scaling or {}
    return str(scaling.get("rope_type", scaling.get("type", "default")))


def require_rope_type(config: CanonicalConfig, implemented: tuple[str, ...], *, who: str, hint: str) -> str:
    """The config's rope_scaling type, or a ConfigError when ``who`` does not implement it."""
    kind = rope_type(config)
    if kind not in implemented:
        raise ConfigError(f"rope_scaling type {kind!r} is not implemented by {who}",
                          hint=f"implemented: {', '.join(implemented)}; {hint}")
    return kind


def static_inv_freq(config: CanonicalConfig, *, who: str) -> np.ndarray:
    """Rotary inverse frequencies in float32; ``who`` names the caller in the refusal message."""
    assert config.rope_theta is not None and config.rotary_dim is not None
    kind = require_rope_type(config, STATIC_ROPE_TYPES, who=who,
                             hint="other scalings' frequencies depend on the sequence length at run time")
    dim = config.rotary_dim
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    freqs = (np.float32(1.0) / (np.float32(config.rope_theta) ** exponent)).astype(np.float32)
    scaling = config.rope_scaling or {}
    if kind == "linear":
        # Linear scaling divides the positions by `factor`; equivalently the frequencies.
        freqs = (freqs / np.float32(scaling["factor"])).astype(np.float32)
    elif kind == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = (2 * math.pi / freqs).astype(np.float32)
        scaled = np.where(wavelen > low_wavelen, freqs / np.float32(factor), freqs).astype(np.float32)
        smooth = ((old_len / wavelen - low) / (high - low)).astype(np.float32)
        smoothed = ((1 - smooth) * scaled / np.float32(factor) + smooth * scaled).astype(np.float32)
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        freqs = np.where(medium, smoothed, scaled).astype(np.float32)
    return freqs
