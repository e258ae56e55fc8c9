"""Hugging Face ``config.json`` across the two transformers generations people run today.

transformers 4.x and 5.x spell the same model differently, and each reads the other's spelling in
its own way:

===========================  ======================================  =========================================
what                         4.x writes / reads                      5.x writes / reads
===========================  ======================================  =========================================
rotary base and scaling      ``rope_theta`` + ``rope_scaling``       ``rope_parameters`` {rope_theta, rope_type,
                                                                     factor, ...}; a non-null ``rope_scaling``
                                                                     replaces it, a top-level ``rope_theta``
                                                                     fills a missing ``rope_parameters.rope_theta``
partial rotary               ``partial_rotary_factor``               ``rope_parameters.partial_rotary_factor``
dtype                        ``torch_dtype``                         ``dtype``
===========================  ======================================  =========================================

transformers 4.57 ignores ``rope_parameters`` entirely: a config written by 5.x with a non-default
base loads there with the class default (``rope_theta`` 10000) and runs as a *different model*,
silently. This module works out what each generation reads from a config (:func:`views`), reads it
the way the generation that wrote it meant (refusing a config whose two spellings disagree), and
writes configs that both generations read alike (:func:`portable_keys`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmstd.errors import ConfigError
from llmstd.rope import ROPE_SCALINGS

V4_ROPE_KEYS = ("rope_theta", "rope_scaling", "partial_rotary_factor")
V5_ROPE_KEY = "rope_parameters"
#: Keys a 4.x config may hold outside rope_scaling that rope types with an original context read.
_ORIGINAL_CONTEXT = "original_max_position_embeddings"
_NEEDS_ORIGINAL_CONTEXT = ("llama3", "yarn", "longrope")
#: Structural keys: the model class and dtype, which the canonical config expresses otherwise.
STRUCTURAL_KEYS = ("model_type", "architectures", "dtype", "torch_dtype", "transformers_version")
#: Attention kinds a ``layer_types`` list may name, and the canonical attention they are.
LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class RopeView:
    """The rotary parameters one transformers generation reads from a config."""

    theta: float | None
    scaling: dict[str, Any] | None  # canonical form: rope_type + parameters, None for the default rope
    partial_rotary_factor: float | None

    def describe(self) -> str:
        text = f"rope_theta {self.theta}"
        if self.scaling:
            text += f", {self.scaling['rope_type']} scaling " + ", ".join(
                f"{k}={v}" for k, v in sorted(self.scaling.items()) if k != "rope_type")
        if self.partial_rotary_factor is not None:
            text += f", partial_rotary_factor {self.partial_rotary_factor}"
        return text

    def same_as(self, other: RopeView) -> bool:
        return (_close(self.theta, other.theta) and _close(self.partial_rotary_factor, other.partial_rotary_factor)
                and _same_scaling(self.scaling, other.scaling))


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)


def _same_scaling(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return set(a) == set(b) and all(_close(a[k], b[k]) if isinstance(a[k], (int, float)) and not isinstance(
        a[k], bool) else a[k] == b[k] for k in a)


def has_rope_keys(raw: Mapping[str, Any]) -> bool:
    return any(k in raw for k in (*V4_ROPE_KEYS, V5_ROPE_KEY))


def canonical_scaling(params: Mapping[str, Any], raw: Mapping[str, Any], where: str,
                       source: str) -> dict[str, Any] | None:
    """A rope_scaling/rope_parameters table in canonical form (rope_type + parameters, theta and
    partial rotary factor lifted out), or None for the default rope. Unknown types and parameters
    are errors naming the key: running them as something else would be a different model."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"'{where}' must be an object, got {type(params).__name__}", file=source)
    scaling = {k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor", "type")}
    kind = params.get("rope_type", params.get("type", "default"))
    scaling["rope_type"] = kind
    if kind == "default":
        extra = sorted(set(scaling) - {"rope_type"})
        if extra:
            raise ConfigError(f"'{where}' has rope_type 'default' but also {', '.join(extra)}, which that type "
                              "does not use", file=source, hint=f"remove {', '.join(extra)} or set the right rope_type")
        return None
    if kind not in ROPE_SCALINGS:
        raise ConfigError(f"'{where}.rope_type' is {kind!r}, a rotary scaling llmstd does not understand",
                          file=source, hint=f"understood: default, {', '.join(ROPE_SCALINGS)}")
    if kind in _NEEDS_ORIGINAL_CONTEXT and _ORIGINAL_CONTEXT not in scaling:
        # Both generations fall back to the config's own keys (Phi-3 keeps it at the top level).
        fallback = raw.get(_ORIGINAL_CONTEXT, raw.get("max_position_embeddings"))
        if fallback is not None:
            scaling[_ORIGINAL_CONTEXT] = fallback
    required, optional = ROPE_SCALINGS[kind]
    missing, unknown = sorted(required - set(scaling)), sorted(set(scaling) - required - optional - {"rope_type"})
    if missing:
        raise ConfigError(f"'{where}' of rope_type '{kind}' lacks {', '.join(missing)}", file=source)
    if unknown:
        raise ConfigError(f"'{where}' of rope_type '{kind}' has parameter(s) {', '.join(unknown)} that llmstd does "
                          "not understand", file=source, hint=f"'{kind}' takes {', '.join(sorted(required | optional))}")
    return scaling


def views(raw: Mapping[str, Any], default_theta: float | None, source: str) -> tuple[RopeView, RopeView]:
    """(what transformers 4.x reads, what transformers 5.x reads) for the rotary parameters."""
    theta4 = raw.get("rope_theta")
    scaling4 = raw.get("rope_scaling")
    v4 = RopeView(theta4 if theta4 is not None else default_theta,
                  canonical_scaling(scaling4, raw, "rope_scaling", source) if scaling4 else None,
                  raw.get("partial_rotary_factor"))
    # transformers 5: a non-null rope_scaling replaces rope_parameters; top-level keys fill gaps.
    params5 = raw.get("rope_scaling") or raw.get(V5_ROPE_KEY) or {}
    where5 = "rope_scaling" if raw.get("rope_scaling") else V5_ROPE_KEY
    if not isinstance(params5, Mapping):
        raise ConfigError(f"'{where5}' must be an object, got {type(params5).__name__}", file=source)
    theta5 = params5.get("rope_theta")
    theta5 = theta5 if theta5 is not None else (theta4 if theta4 is not None else default_theta)
    factor5 = params5.get("partial_rotary_factor", raw.get("partial_rotary_factor"))
    v5 = RopeView(theta5, canonical_scaling(params5, raw, where5, source), factor5)
    return v4, v5


def written_by_v5(raw: Mapping[str, Any]) -> bool:
    """Whether the config spells its rotary parameters only the transformers 5 way."""
    return V5_ROPE_KEY in raw and not any(raw.get(k) is not None for k in V4_ROPE_KEYS)


def read_rope(raw: Mapping[str, Any], default_theta: float | None, source: str) -> RopeView:
    """The rotary parameters the config means: what both generations read, or -- for a config written
    by transformers 5 only -- what 5.x reads. Two spellings that disagree are refused."""
    v4, v5 = views(raw, default_theta, source)
    if v4.same_as(v5) or written_by_v5(raw):
        return v5
    raise ConfigError(
        f"the config spells its rotary parameters twice and the spellings disagree: transformers 4.x reads "
        f"{v4.describe()} (from rope_theta/rope_scaling), transformers 5.x reads {v5.describe()} "
        f"(from {V5_ROPE_KEY})", file=source,
        hint="delete the stale spelling; `llmstd convert --to hf` then writes both consistently")


def portability_problem(raw: Mapping[str, Any], default_theta: float | None, source: str) -> str:
    """'' when transformers 4.x and 5.x read the config as the same model, else what differs."""
    if not has_rope_keys(raw):
        return ""
    v4, v5 = views(raw, default_theta, source)
    if v4.same_as(v5):
        return ""
    return f"transformers 4.x reads {v4.describe()}; transformers 5.x reads {v5.describe()}"


def portable_keys(theta: float | None, scaling: dict[str, Any] | None,
                  partial_rotary_factor: float | None) -> dict[str, Any]:
    """Rotary keys both generations read as the same model: the 4.x keys and ``rope_parameters``.
    (5.x takes a non-null rope_scaling in place of rope_parameters; both hold the same values.)"""
    out: dict[str, Any] = {"rope_theta": theta, "rope_scaling": dict(scaling) if scaling else None}
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": theta, **(scaling or {})}
    if partial_rotary_factor is not None:
        out["partial_rotary_factor"] = partial_rotary_factor
        params["partial_rotary_factor"] = partial_rotary_factor
    out[V5_ROPE_KEY] = params
    return out


def check_layer_types(value: Any, num_layers: int, sliding_window: int | None, source: str) -> None:
    """``layer_types`` (one attention kind per layer) must agree with the canonical attention: every
    layer full without a window, every layer sliding with one. Mixed patterns are refused by name."""
    if value is None:
        return
    if not isinstance(value, list) or any(v not in LAYER_TYPES for v in value):
        raise ConfigError(f"'layer_types' must list {' or '.join(LAYER_TYPES)} per layer, got {value!r}",
                          file=source)
    if len(value) != num_layers:
        raise ConfigError(f"'layer_types' lists {len(value)} layers, the model has {num_layers}", file=source)
    expected = "sliding_attention" if sliding_window is not None else "full_attention"
    if any(v != expected for v in value):
        raise ConfigError(
            f"'layer_types' mixes attention kinds ({', '.join(sorted(set(value)))}); this model's canonical "
            f"attention is {expected} in every layer", file=source,
            hint="per-layer attention patterns are not expressible in this canonical config version")
