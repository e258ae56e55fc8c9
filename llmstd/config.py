"""The canonical config: an explicit, framework-neutral description of a model's shape and math.

Every field is required and stored; nothing is defaulted "per model type" at read time. Naming maps
translate a framework's config (e.g. Hugging Face config.json) to and from this schema, declaring
the framework's own defaults as data.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from llmstd import vocab
from llmstd.dtypes import BY_NAME as DTYPE_NAMES
from llmstd.errors import ConfigError

JsonValue = Any


@dataclass(frozen=True)
class CanonicalConfig:
    architecture: str
    head: str  # causal_lm | masked_lm | base
    causal: bool  # each position attends only to itself and earlier ones (decoders); else bidirectional
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_positions: int
    norm_kind: str  # layernorm | rmsnorm
    norm_eps: float
    norm_position: str  # pre: x + f(norm(x)) | post: norm(x + f(x)) | sandwich: x + post_norm(f(norm(x)))
    norm_bias: bool
    norm_weight_offset: float  # norms multiply by (offset + w): 1.0 for Gemma's stored-as-delta weights
    final_norm: bool
    embedding_norm: bool
    mlp_norm: bool
    activation: str
    gated_mlp: bool  # down(act(gate(x)) * up(x)) instead of down(act(up(x)))
    positional: str  # learned | rope
    rope_theta: float | None
    rotary_dim: int | None
    rope_scaling: dict[str, JsonValue] | None
    attn_qkv_bias: bool
    attn_out_bias: bool
    mlp_bias: bool
    lm_head_bias: bool
    tie_word_embeddings: bool
    parallel_residual: bool
    type_vocab_size: int
    pooler: bool
    sliding_window: int | None
    # Per layer "full_attention" | "sliding_attention" (the window applies to sliding layers only);
    # None: every layer alike (sliding when sliding_window is set).
    layer_types: list[str] | None
    qk_norm: bool  # q and k of each head are normed (RMSNorm over head_dim) before the rotation
    embedding_scale: float | None  # token embeddings multiplied by it (rounded to the compute dtype)
    attention_scale_dim: float | None  # scores scaled by attention_scale_dim ** -0.5 (None: head_dim)
    attn_logit_softcap: float | None  # scores -> tanh(scores / cap) * cap
    final_logit_softcap: float | None  # logits -> tanh(logits / cap) * cap
    rope_theta_sliding: float | None  # rotary base of sliding layers (None: rope_theta)
    rope_scaling_sliding: dict[str, JsonValue] | None  # their scaling, with rope_theta_sliding
    # Mixture of experts (spec 1.3). In the layers listed by moe_layers the MLP is replaced by
    # num_experts gated MLPs of moe_intermediate_size: a router scores them (softmax in float32),
    # each token uses the experts_per_token best, weighted by their probabilities (renormalised to
    # sum 1 when moe_normalize_weights); a shared expert of shared_expert_intermediate_size (0: none)
    # adds its output for every token, scaled by sigmoid(shared_gate(x)) when shared_expert_gate.
    num_experts: int  # 0: no mixture-of-experts layers
    experts_per_token: int
    moe_intermediate_size: int
    moe_layers: list[int]
    moe_normalize_weights: bool
    shared_expert_intermediate_size: int
    shared_expert_gate: bool
    bos_token_id: int | list[int] | None
    eos_token_id: int | list[int] | None
    pad_token_id: int | list[int] | None
    dtype: str
    # Keys of the source framework's config that have no canonical meaning (dropout rates,
    # initializer_range, ...). Carried verbatim so a round trip restores the source config.
    extras: dict[str, JsonValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_config(self)

    def to_dict(self) -> dict[str, JsonValue]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: JsonValue) -> CanonicalConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, JsonValue], *, source: str = "config") -> CanonicalConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"canonical config must be a JSON object, got {type(data).__name__}", file=source)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(n for n in names if n not in data and n != "extras")
        if unknown:
            raise ConfigError(f"unknown canonical config fields: {', '.join(unknown)}", file=source)
        if missing:
            raise ConfigError(f"canonical config lacks fields: {', '.join(missing)}", file=source)
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(exc.message, file=source, hint=exc.hint) from None

    @classmethod
    def from_json(cls, text: str, *, source: str = "config") -> CanonicalConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"canonical config is not valid JSON ({exc})", file=source) from None
        return cls.from_dict(data, source=source)


FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(CanonicalConfig)}

#: Fields added in spec 1.2, with the value each takes for a model without that feature -- which
#: every spec 1.0 and 1.1 file describes (they are filled in when such a file is read).
ADDED_IN_1_2: dict[str, JsonValue] = {
    "norm_weight_offset": 0.0, "layer_types": None, "qk_norm": False, "embedding_scale": None,
    "attention_scale_dim": None, "attn_logit_softcap": None, "final_logit_softcap": None,
    "rope_theta_sliding": None, "rope_scaling_sliding": None,
}
#: Fields added in spec 1.3 (mixture of experts), with their values for a dense model.
ADDED_IN_1_3: dict[str, JsonValue] = {
    "num_experts": 0, "experts_per_token": 0, "moe_intermediate_size": 0, "moe_layers": [],
    "moe_normalize_weights": False, "shared_expert_intermediate_size": 0, "shared_expert_gate": False,
}
#: Experts per layer llmstd accepts: a hostile config must not make it enumerate millions of names.
MAX_EXPERTS = 4096
_HINTS = typing.get_type_hints(CanonicalConfig)


def _type_ok(value: JsonValue, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def validate_config(c: CanonicalConfig) -> None:
    """Check types, enumerations and internal consistency; raise ConfigError naming the field."""
    for name, hint in _HINTS.items():
        value = getattr(c, name)
        if not _type_ok(value, hint):
            raise ConfigError(f"field '{name}' must be {hint}, got {value!r}")
    enums = {
        "head": vocab.HEADS,
        "norm_kind": vocab.NORM_KINDS,
        "norm_position": vocab.NORM_POSITIONS,
        "activation": vocab.ACTIVATIONS,
        "positional": vocab.POSITIONALS,
    }
    for name, allowed in enums.items():
        if getattr(c, name) not in allowed:
            raise ConfigError(f"field '{name}' is {getattr(c, name)!r}; allowed: {', '.join(allowed)}")
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                 "intermediate_size", "max_positions"):
        if getattr(c, name) <= 0:
            raise ConfigError(f"field '{name}' must be positive, got {getattr(c, name)}")
    # Upper bounds keep a hostile config from making llmstd enumerate billions of tensor names.
    for name, limit in (("num_layers", 10_000), ("num_heads", 100_000), ("num_kv_heads", 100_000)):
        if getattr(c, name) > limit:
            raise ConfigError(f"field '{name}' is {getattr(c, name)}, beyond the supported {limit}")
    if c.dtype not in DTYPE_NAMES:
        raise ConfigError(f"field 'dtype' is {c.dtype!r}, not a known dtype")
    if c.type_vocab_size < 0:
        raise ConfigError(f"field 'type_vocab_size' must be >= 0, got {c.type_vocab_size}")
    if c.num_heads % c.num_kv_heads:
        raise ConfigError(f"num_heads ({c.num_heads}) must be a multiple of num_kv_heads ({c.num_kv_heads})")
    if c.norm_eps <= 0:
        raise ConfigError(f"field 'norm_eps' must be positive, got {c.norm_eps}")
    if c.positional == "rope":
        if c.rope_theta is None or c.rotary_dim is None:
            raise ConfigError("rotary models need 'rope_theta' and 'rotary_dim'")
        if c.rotary_dim % 2 or not 0 < c.rotary_dim <= c.head_dim:
            raise ConfigError(f"rotary_dim ({c.rotary_dim}) must be even and within head_dim ({c.head_dim})")
        if c.rope_scaling is not None:
            from llmstd.rope import scaling_problem

            problem = scaling_problem(c.rope_scaling)
            if problem:
                raise ConfigError(f"field 'rope_scaling': {problem}")
    elif c.rope_theta is not None or c.rotary_dim is not None or c.rope_scaling is not None:
        raise ConfigError("rope_theta, rotary_dim and rope_scaling apply only to positional='rope'")
    if c.layer_types is not None:
        if len(c.layer_types) != c.num_layers or any(t not in vocab.LAYER_TYPES for t in c.layer_types):
            raise ConfigError(f"field 'layer_types' must give one of {', '.join(vocab.LAYER_TYPES)} for each of "
                              f"the {c.num_layers} layers, got {c.layer_types!r}")
        if vocab.SLIDING in c.layer_types and c.sliding_window is None:
            raise ConfigError("field 'layer_types' has sliding layers but 'sliding_window' is null")
    if c.sliding_window is not None and c.sliding_window <= 0:
        raise ConfigError(f"field 'sliding_window' must be positive, got {c.sliding_window}")
    for name in ("embedding_scale", "attention_scale_dim", "attn_logit_softcap", "final_logit_softcap"):
        if getattr(c, name) is not None and not getattr(c, name) > 0:
            raise ConfigError(f"field '{name}' must be positive or null, got {getattr(c, name)}")
    if c.rope_scaling_sliding is not None and c.rope_theta_sliding is None:
        raise ConfigError("field 'rope_scaling_sliding' needs 'rope_theta_sliding'")
    if c.rope_theta_sliding is not None:
        if c.positional != "rope":
            raise ConfigError("rope_theta_sliding applies only to positional='rope'")
        if c.rope_scaling_sliding is not None:
            from llmstd.rope import scaling_problem

            problem = scaling_problem(c.rope_scaling_sliding)
            if problem:
                raise ConfigError(f"field 'rope_scaling_sliding': {problem}")
    _validate_moe(c)
    if c.norm_kind == "rmsnorm" and c.norm_bias:
        raise ConfigError("RMSNorm has no bias; norm_bias must be false with norm_kind='rmsnorm'")
    if c.head == "masked_lm" and c.causal:
        raise ConfigError("a masked-LM head needs bidirectional attention; causal must be false")
    if c.head == "base" and c.tie_word_embeddings and c.lm_head_bias:
        raise ConfigError("a base model has no LM head, so lm_head_bias must be false")


def _validate_moe(c: CanonicalConfig) -> None:
    if not 0 <= c.num_experts <= MAX_EXPERTS:
        raise ConfigError(f"field 'num_experts' is {c.num_experts}; llmstd accepts 0 to {MAX_EXPERTS}")
    if c.num_experts == 0:
        dense = {k: v for k, v in ADDED_IN_1_3.items() if k != "num_experts" and getattr(c, k) != v}
        if dense:
            raise ConfigError(f"a model without experts (num_experts = 0) must not set {', '.join(sorted(dense))}")
        return
    if not 0 < c.experts_per_token <= c.num_experts:
        raise ConfigError(f"field 'experts_per_token' ({c.experts_per_token}) must be between 1 and num_experts "
                          f"({c.num_experts})")
    if c.moe_intermediate_size <= 0:
        raise ConfigError(f"field 'moe_intermediate_size' must be positive, got {c.moe_intermediate_size}")
    if c.moe_layers != sorted(set(c.moe_layers)) or any(not 0 <= i < c.num_layers for i in c.moe_layers):
        raise ConfigError(f"field 'moe_layers' must list distinct layer indices below num_layers ({c.num_layers}) "
                          f"in increasing order, got {c.moe_layers!r}")
    if c.shared_expert_intermediate_size < 0:
        raise ConfigError("field 'shared_expert_intermediate_size' must be >= 0 (0: no shared expert)")
    if c.shared_expert_gate and c.shared_expert_intermediate_size == 0:
        raise ConfigError("field 'shared_expert_gate' needs a shared expert (shared_expert_intermediate_size > 0)")
