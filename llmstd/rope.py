"""Rotary embeddings: the canonical ``rope_scaling`` schema, and the inverse frequencies of every
scaling llmstd runs (default, linear, llama3, yarn, longrope), computed as transformers computes
them, once for all runtimes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llmstd.errors import ConfigError
from llmstd.lazy_numpy import np


#: The canonical ``rope_scaling`` schema: for each rope type transformers 5 defines and llmstd
#: understands, its (required, optional) parameters. ``rope_type`` is always present; a default
#: rope has ``rope_scaling = null``. Types not listed (proportional, axial, mrope, ...) are refused
#: when a config is read, naming the key, rather than run as something else.
ROPE_SCALINGS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "linear": (frozenset({"factor"}), frozenset()),
    "dynamic": (frozenset({"factor"}), frozenset()),
    "llama3": (frozenset({"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}),
               frozenset()),
    "yarn": (frozenset({"factor", "original_max_position_embeddings"}),
             frozenset({"attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"})),
    "longrope": (frozenset({"short_factor", "long_factor", "original_max_position_embeddings"}),
                 frozenset({"factor", "attention_factor"})),
}


def scaling_problem(scaling: dict[str, Any]) -> str:
    """Why ``scaling`` is not a canonical rope_scaling object ('' when it is)."""
    kind = scaling.get("rope_type")
    if kind not in ROPE_SCALINGS:
        return (f"rope_type {kind!r} is not one llmstd understands "
                f"(understood: default, {', '.join(ROPE_SCALINGS)})")
    required, optional = ROPE_SCALINGS[kind]
    missing = sorted(required - set(scaling))
    unknown = sorted(set(scaling) - required - optional - {"rope_type"})
    if missing:
        return f"rope_type '{kind}' needs {', '.join(missing)}"
    if unknown:
        return f"rope_type '{kind}' takes no parameter(s) {', '.join(unknown)}"
    return ""


# ------------------------------------------------------------------------------------------------
# Rotary frequencies, written once for every runtime.
#
# transformers computes them in float32 with a handful of array operations; reproducing that
# sequence operation by operation matters (an inverse frequency one float32 ulp off moves the angle
# at position 127 by ~1e-5 rad). The formulas below take the array library as a parameter, so the
# PyTorch runtime evaluates them with torch -- bit for bit what transformers gets -- and the
# TensorFlow runtime and the ONNX writer with numpy.

#: Scaling types llmstd's runtimes compute. ("dynamic" recomputes the base whenever the sequence
#: outgrows max_positions, which a graph built once cannot express; it is refused by name.)
RUNNABLE = ("linear", "llama3", "yarn", "longrope")


class ArrayMath:
    """The few array operations the frequency formulas need, for one array library."""

    def arange(self, start: int, stop: int, step: int) -> Any:
        """float32 values of an integer range (``arange(..., dtype=int64).float()``)."""
        raise NotImplementedError

    def array(self, values: Any) -> Any:
        """A float32 array of ``values``."""
        raise NotImplementedError

    def where(self, condition: Any, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def clamp(self, x: Any, low: float, high: float) -> Any:
        raise NotImplementedError

    def logical_and(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def logical_not(self, a: Any) -> Any:
        raise NotImplementedError


class _NumpyMath(ArrayMath):
    def arange(self, start: int, stop: int, step: int) -> np.ndarray:
        return np.arange(start, stop, step, dtype=np.int64).astype(np.float32)

    def array(self, values: Any) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    def where(self, condition: Any, a: Any, b: Any) -> np.ndarray:
        return np.where(condition, a, b).astype(np.float32)

    def clamp(self, x: Any, low: float, high: float) -> np.ndarray:
        return np.clip(x, low, high).astype(np.float32)

    def logical_and(self, a: Any, b: Any) -> np.ndarray:
        return np.logical_and(a, b)

    def logical_not(self, a: Any) -> np.ndarray:
        return np.logical_not(a)


NUMPY = _NumpyMath()


@dataclass(frozen=True)
class Frequencies:
    """Inverse frequencies for positions below ``long_after`` + 1 (all when None), the LongRoPE
    set beyond, and the factor cos and sin are multiplied by."""

    inv_freq: Any
    attention_factor: float
    long_inv_freq: Any | None = None
    long_after: int | None = None


def _mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def frequencies(theta: float, dim: int, scaling: dict[str, Any] | None, max_positions: int,
                xp: ArrayMath) -> Frequencies:
    """Rotary inverse frequencies of a canonical rope (``theta``, rotated width ``dim``, canonical
    ``scaling``) as transformers 5 computes them, with array library ``xp``."""
    base = float(theta)
    exponents = xp.arange(0, dim, 2) / dim
    kind = (scaling or {}).get("rope_type", "default")
    if kind == "default":
        return Frequencies(1.0 / (base ** exponents), 1.0)
    assert scaling is not None
    if kind not in RUNNABLE:
        raise ConfigError(f"rope_type '{kind}' is not implemented by llmstd's runtimes",
                          hint=f"implemented: default, {', '.join(RUNNABLE)}")
    if kind == "linear":
        # Linear scaling divides the positions by `factor`; equivalently the frequencies.
        return Frequencies((1.0 / (base ** exponents)) / scaling["factor"], 1.0)
    if kind == "llama3":
        inv_freq = 1.0 / (base ** exponents)
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_context = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_context / low, old_context / high
        wavelen = 2 * math.pi / inv_freq
        scaled = xp.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = xp.logical_and(xp.logical_not(wavelen < high_wavelen), xp.logical_not(wavelen > low_wavelen))
        return Frequencies(xp.where(medium, smoothed, scaled), 1.0)
    original = scaling["original_max_position_embeddings"]
    factor = scaling.get("factor") or max_positions / original
    if kind == "yarn":
        attention_factor = scaling.get("attention_factor")
        mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
        if attention_factor is None:
            attention_factor = (float(_mscale(factor, mscale) / _mscale(factor, mscale_all_dim))
                                if mscale and mscale_all_dim else _mscale(factor))
        beta_fast, beta_slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1

        def correction_dim(rotations: float) -> float:
            return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if scaling.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001  # transformers' guard against a zero-width ramp
        ramp = xp.clamp((xp.arange(0, dim // 2, 1) - low) / (high - low), 0, 1)
        pos_freqs = base ** exponents
        extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
        keep = 1 - ramp
        return Frequencies(interpolation * (1 - keep) + extrapolation * keep, float(attention_factor))
    # longrope: short factors up to the original context, long factors beyond it.
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    powers = base ** exponents
    return Frequencies(1.0 / (xp.array(scaling["short_factor"]) * powers), float(attention_factor),
                       long_inv_freq=1.0 / (xp.array(scaling["long_factor"]) * powers), long_after=int(original))
