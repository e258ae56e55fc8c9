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

from llmstd import vocab
from llmstd.errors import ConfigError
from llmstd.rope import ROPE_SCALINGS

V4_ROPE_KEYS = ("rope_theta", "rope_scaling", "partial_rotary_factor")
V5_ROPE_KEY = "rope_parameters"
#: Keys a 4.x config may hold outside rope_scaling that rope types with an original context read.
_ORIGINAL_CONTEXT = "original_max_position_embeddings"
_NEEDS_ORIGINAL_CONTEXT = ("llama3", "yarn", "longrope")
#: Structural keys: the model class and dtype, which the canonical config expresses otherwise.
STRUCTURAL_KEYS = ("model_type", "architectures", "dtype", "torch_dtype", "transformers_version")


@dataclass(frozen=True)
class RopeView:
    """The rotary parameters one transformers generation reads from a config."""

    theta: float | None
    scaling: dict[str, Any] | None  # canonical form: rope_type + parameters, None for the default rope
    partial_rotary_factor: float | None
    sliding_theta: float | None = None  # base of sliding-window layers, for maps that have one (Gemma 3)

    def describe(self) -> str:
        text = f"rope_theta {self.theta}"
        if self.scaling:
            text += f", {self.scaling['rope_type']} scaling " + ", ".join(
                f"{k}={v}" for k, v in sorted(self.scaling.items()) if k != "rope_type")
        if self.partial_rotary_factor is not None:
            text += f", partial_rotary_factor {self.partial_rotary_factor}"
        if self.sliding_theta is not None:
            text += f", sliding layers' rope_theta {self.sliding_theta}"
        return text

    def same_as(self, other: RopeView) -> bool:
        return (_close(self.theta, other.theta) and _close(self.partial_rotary_factor, other.partial_rotary_factor)
                and _same_scaling(self.scaling, other.scaling) and _close(self.sliding_theta, other.sliding_theta))


@dataclass(frozen=True)
class Spelling:
    """What a naming map says about its architecture's rotary keys: the class default of rope_theta,
    and -- for architectures whose sliding-window layers have their own base (Gemma 3) -- the 4.x key
    of that base and its default. transformers 5 nests such configs' ``rope_parameters`` by layer
    type ({"full_attention": {...}, "sliding_attention": {...}})."""

    default_theta: float | None
    sliding_key: str | None = None
    sliding_default: float | None = None
    #: Keys 4.x reads for the base and the partial-rotary fraction in place of rope_theta and
    #: partial_rotary_factor (GPT-NeoX: rotary_emb_base, rotary_pct), with the fraction's class default.
    theta_key_4x: str | None = None
    partial_key_4x: str | None = None
    partial_default: float | None = None
    #: How 4.x classes with a validator of their own (Phi-3) want rope_scaling written: the key that
    #: names the type ("type") and the parameters read from the top level instead.
    scaling_type_key_4x: str = "rope_type"
    scaling_top_level_4x: tuple[str, ...] = ()

    @property
    def keys_4x(self) -> tuple[str, ...]:
        return tuple(k for k in (self.theta_key_4x, self.partial_key_4x) if k)


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)


def _same_scaling(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return set(a) == set(b) and all(_close(a[k], b[k]) if isinstance(a[k], (int, float)) and not isinstance(
        a[k], bool) else a[k] == b[k] for k in a)


def has_rope_keys(raw: Mapping[str, Any], spelling: Spelling) -> bool:
    return any(k in raw for k in (*V4_ROPE_KEYS, V5_ROPE_KEY, *spelling.keys_4x))


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


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _nested(params: Any) -> bool:
    """rope_parameters keyed by layer type (transformers 5's form for per-layer-type rotary bases)."""
    return isinstance(params, Mapping) and bool(params) and set(params) <= set(vocab.LAYER_TYPES)


def views(raw: Mapping[str, Any], spelling: Spelling, source: str) -> tuple[RopeView, RopeView]:
    """(what transformers 4.x reads, what transformers 5.x reads) for the rotary parameters."""
    scaling4 = raw.get("rope_scaling")
    theta4 = raw.get(spelling.theta_key_4x or "rope_theta")
    partial4 = raw.get(spelling.partial_key_4x or "partial_rotary_factor")
    if spelling.partial_key_4x:
        partial4 = _first(partial4, spelling.partial_default)
    sliding4 = (_first(raw.get(spelling.sliding_key), spelling.sliding_default) if spelling.sliding_key else None)
    v4 = RopeView(_first(theta4, spelling.default_theta),
                  canonical_scaling(scaling4, raw, "rope_scaling", source) if scaling4 else None,
                  partial4, sliding4)
    params5: Any = raw.get(V5_ROPE_KEY) or {}
    where5 = V5_ROPE_KEY
    sliding5 = sliding4
    if _nested(params5):
        sliding = params5.get(vocab.SLIDING) or {}
        if canonical_scaling(sliding, raw, f"{V5_ROPE_KEY}.{vocab.SLIDING}", source) is not None:
            raise ConfigError(f"'{V5_ROPE_KEY}.{vocab.SLIDING}' scales the sliding layers' rotary embedding, which "
                              "transformers 4.x cannot express", file=source)
        sliding5 = _first(sliding.get("rope_theta"), sliding4)
        params5, where5 = dict(params5.get(vocab.FULL) or {}), f"{V5_ROPE_KEY}.{vocab.FULL}"
        if scaling4:  # a 4.x rope_scaling updates the full-attention parameters
            params5.update(scaling4)
    elif scaling4:
        # transformers 5: a non-null rope_scaling replaces rope_parameters; top-level keys fill gaps.
        params5, where5 = scaling4, "rope_scaling"
    if not isinstance(params5, Mapping):
        raise ConfigError(f"'{where5}' must be an object, got {type(params5).__name__}", file=source)
    # 5.x takes what rope_parameters lacks from the top level, the 4.x-only keys included.
    v5 = RopeView(_first(params5.get("rope_theta"), theta4, raw.get("rope_theta"), spelling.default_theta),
                  canonical_scaling(params5, raw, where5, source),
                  _first(params5.get("partial_rotary_factor"), raw.get("partial_rotary_factor"), partial4), sliding5)
    return v4, v5


def written_by_v5(raw: Mapping[str, Any]) -> bool:
    """Whether the config spells its rotary parameters only the transformers 5 way. (5.x keeps a
    ``partial_rotary_factor`` it was given at the top level as well, so that key alone does not
    make a 4.x spelling.)"""
    return V5_ROPE_KEY in raw and not any(raw.get(k) is not None for k in ("rope_theta", "rope_scaling"))


def read_rope(raw: Mapping[str, Any], spelling: Spelling, source: str) -> RopeView:
    """The rotary parameters the config means: what both generations read, or -- for a config written
    by transformers 5 only -- what 5.x reads. Two spellings that disagree are refused."""
    v4, v5 = views(raw, spelling, source)
    if v4.same_as(v5) or written_by_v5(raw):
        return v5
    raise ConfigError(
        f"the config spells its rotary parameters twice and the spellings disagree: transformers 4.x reads "
        f"{v4.describe()} (from rope_theta/rope_scaling), transformers 5.x reads {v5.describe()} "
        f"(from {V5_ROPE_KEY})", file=source,
        hint="delete the stale spelling; `llmstd convert --to hf` then writes both consistently")


def portability_problem(raw: Mapping[str, Any], spelling: Spelling, source: str) -> str:
    """'' when transformers 4.x and 5.x read the config as the same model, else what differs."""
    if not has_rope_keys(raw, spelling):
        return ""
    v4, v5 = views(raw, spelling, source)
    if v4.same_as(v5):
        return ""
    return f"transformers 4.x reads {v4.describe()}; transformers 5.x reads {v5.describe()}"


def portable_keys(view: RopeView, spelling: Spelling) -> dict[str, Any]:
    """Rotary keys both generations read as the same model: the 4.x keys and ``rope_parameters``.
    (5.x takes a non-null rope_scaling in place of, or for nested configs into, the full-attention
    parameters; both hold the same values.) rope_scaling is written the way the architecture's 4.x
    class validates it (see :class:`Spelling`); 5.x accepts either type key."""
    scaling4 = None
    if view.scaling:
        scaling4 = {spelling.scaling_type_key_4x: view.scaling["rope_type"]}
        scaling4.update((k, v) for k, v in view.scaling.items() if k != "rope_type")
    out: dict[str, Any] = {"rope_theta": view.theta, "rope_scaling": scaling4}
    for key in spelling.scaling_top_level_4x:
        if scaling4 and key in scaling4:
            out[key] = scaling4.pop(key)
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": view.theta, **(view.scaling or {})}
    if view.partial_rotary_factor is not None:
        out["partial_rotary_factor"] = view.partial_rotary_factor
        params["partial_rotary_factor"] = view.partial_rotary_factor
    if spelling.theta_key_4x:
        out[spelling.theta_key_4x] = view.theta
    if spelling.partial_key_4x:
        out[spelling.partial_key_4x] = _first(view.partial_rotary_factor, spelling.partial_default)
    if spelling.sliding_key is not None:
        out[spelling.sliding_key] = view.sliding_theta
        params = {vocab.FULL: params, vocab.SLIDING: {"rope_type": "default", "rope_theta": view.sliding_theta}}
    out[V5_ROPE_KEY] = params
    return out


def check_layer_types(value: Any, expected: list[str], source: str) -> None:
    """A ``layer_types`` key that no canonical field reads (the model's attention is the same in every
    layer) must agree with that attention; a pattern the map cannot express is refused by name."""
    if value is None or value == expected:
        return
    raise ConfigError(
        f"'layer_types' is {value!r}, but this architecture's map reads every layer as {expected[0]!r}",
        file=source, hint="per-layer attention patterns need a map whose layer_types rule reads the key")
