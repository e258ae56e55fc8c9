"""The canonical vocabulary: every canonical tensor name, its shape rule and when it exists.

This is the one place where canonical parameter names are spelled in code. Naming maps refer to
these names; validation, inspection and the runtimes derive the expected tensor set of a model from
its canonical config through :func:`expected_tensors`.

Layout rules (see docs/SPEC.md): every linear weight is ``[out, in]``; q, k and v are separate;
q and k rows follow the rotate-half rotary convention (pairs ``(j, j + rotary_dim/2)`` within each
head, as Hugging Face stores Llama); norms store the factor actually applied to the activations;
mixture-of-experts experts are stored one by one (``{e}`` = expert index), gate and up separate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmstd.config import CanonicalConfig

SPEC_VERSION = "1.3"

# Dialects a naming map may describe. A dialect is how one framework ecosystem names and lays out
# tensors; the container (bytes on disk) is a separate concern.
DIALECTS = ("hf", "hf_packed", "hf_tf", "tf_original", "tf_llmstd", "onnx", "meta", "gguf", "keras_hub")

HEADS = ("causal_lm", "masked_lm", "base")
NORM_KINDS = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post", "sandwich")
ACTIVATIONS = ("gelu", "gelu_tanh", "silu", "relu", "quick_gelu")
POSITIONALS = ("learned", "rope")
#: Attention kinds of ``CanonicalConfig.layer_types`` (Hugging Face's spelling).
FULL, SLIDING = "full_attention", "sliding_attention"
LAYER_TYPES = (FULL, SLIDING)


#: Which layers hold a tensor: every layer, dense-MLP layers only, or mixture-of-experts layers only
#: (``CanonicalConfig.moe_layers``).
EVERY, DENSE, MOE = "every", "dense", "moe"


@dataclass(frozen=True)
class CanonicalTensor:
    """One canonical tensor: a name pattern (``{i}`` = layer index, ``{e}`` = expert index), shape
    rule and presence rule."""

    pattern: str
    shape: tuple[str, ...]  # each dim is an attribute of CanonicalConfig, q_size, kv_size or "one"
    role: str  # embedding | linear | bias | norm
    present: str  # attribute of CanonicalConfig (or derived predicate below) that must be true
    layers: str = EVERY  # EVERY | DENSE | MOE: the kind of layer that holds it (per-layer tensors)

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.pattern

    @property
    def per_expert(self) -> bool:
        return "{e}" in self.pattern

    def name(self, layer: int | None = None, expert: int | None = None) -> str:
        name = self.pattern.replace("{i}", str(layer)) if self.per_layer else self.pattern
        return name.replace("{e}", str(expert)) if self.per_expert else name


_Q = "q_size"
_KV = "kv_size"

TENSORS: tuple[CanonicalTensor, ...] = (
    CanonicalTensor("embed.tokens.weight", ("vocab_size", "hidden_size"), "embedding", "always"),
    CanonicalTensor("embed.positions.weight", ("max_positions", "hidden_size"), "embedding", "has_learned_positions"),
    CanonicalTensor("embed.token_types.weight", ("type_vocab_size", "hidden_size"), "embedding", "has_token_types"),
    CanonicalTensor("embed.norm.weight", ("hidden_size",), "norm", "embedding_norm"),
    CanonicalTensor("embed.norm.bias", ("hidden_size",), "bias", "embedding_norm_bias"),
    CanonicalTensor("layers.{i}.attn_norm.weight", ("hidden_size",), "norm", "always"),
    CanonicalTensor("layers.{i}.attn_norm.bias", ("hidden_size",), "bias", "norm_bias"),
    CanonicalTensor("layers.{i}.attn.q.weight", (_Q, "hidden_size"), "linear", "always"),
    CanonicalTensor("layers.{i}.attn.q.bias", (_Q,), "bias", "attn_qkv_bias"),
    CanonicalTensor("layers.{i}.attn.k.weight", (_KV, "hidden_size"), "linear", "always"),
    CanonicalTensor("layers.{i}.attn.k.bias", (_KV,), "bias", "attn_qkv_bias"),
    CanonicalTensor("layers.{i}.attn.v.weight", (_KV, "hidden_size"), "linear", "always"),
    CanonicalTensor("layers.{i}.attn.v.bias", (_KV,), "bias", "attn_qkv_bias"),
    CanonicalTensor("layers.{i}.attn.o.weight", ("hidden_size", _Q), "linear", "always"),
    CanonicalTensor("layers.{i}.attn.o.bias", ("hidden_size",), "bias", "attn_out_bias"),
    CanonicalTensor("layers.{i}.attn.q_norm.weight", ("head_dim",), "norm", "qk_norm"),
    CanonicalTensor("layers.{i}.attn.k_norm.weight", ("head_dim",), "norm", "qk_norm"),
    CanonicalTensor("layers.{i}.attn_post_norm.weight", ("hidden_size",), "norm", "sandwich"),
    CanonicalTensor("layers.{i}.attn_post_norm.bias", ("hidden_size",), "bias", "sandwich_bias"),
    CanonicalTensor("layers.{i}.mlp_norm.weight", ("hidden_size",), "norm", "has_mlp_norm"),
    CanonicalTensor("layers.{i}.mlp_norm.bias", ("hidden_size",), "bias", "mlp_norm_bias"),
    CanonicalTensor("layers.{i}.mlp.gate.weight", ("intermediate_size", "hidden_size"), "linear", "gated_mlp", DENSE),
    CanonicalTensor("layers.{i}.mlp.gate.bias", ("intermediate_size",), "bias", "gated_mlp_bias", DENSE),
    CanonicalTensor("layers.{i}.mlp.up.weight", ("intermediate_size", "hidden_size"), "linear", "always", DENSE),
    CanonicalTensor("layers.{i}.mlp.up.bias", ("intermediate_size",), "bias", "mlp_bias", DENSE),
    CanonicalTensor("layers.{i}.mlp.down.weight", ("hidden_size", "intermediate_size"), "linear", "always", DENSE),
    CanonicalTensor("layers.{i}.mlp.down.bias", ("hidden_size",), "bias", "mlp_bias", DENSE),
    # Mixture of experts (in the layers listed by moe_layers): a router choosing experts_per_token of
    # num_experts gated MLPs per token, and optionally a shared expert every token passes through,
    # scaled by sigmoid(shared_gate(x)) when shared_expert_gate.
    CanonicalTensor("layers.{i}.moe.router.weight", ("num_experts", "hidden_size"), "linear", "always", MOE),
    CanonicalTensor("layers.{i}.moe.experts.{e}.gate.weight", ("moe_intermediate_size", "hidden_size"), "linear",
                    "always", MOE),
    CanonicalTensor("layers.{i}.moe.experts.{e}.up.weight", ("moe_intermediate_size", "hidden_size"), "linear",
                    "always", MOE),
    CanonicalTensor("layers.{i}.moe.experts.{e}.down.weight", ("hidden_size", "moe_intermediate_size"), "linear",
                    "always", MOE),
    CanonicalTensor("layers.{i}.moe.shared.gate.weight", ("shared_expert_intermediate_size", "hidden_size"),
                    "linear", "shared_expert", MOE),
    CanonicalTensor("layers.{i}.moe.shared.up.weight", ("shared_expert_intermediate_size", "hidden_size"),
                    "linear", "shared_expert", MOE),
    CanonicalTensor("layers.{i}.moe.shared.down.weight", ("hidden_size", "shared_expert_intermediate_size"),
                    "linear", "shared_expert", MOE),
    CanonicalTensor("layers.{i}.moe.shared_gate.weight", ("one", "hidden_size"), "linear", "shared_expert_gate", MOE),
    CanonicalTensor("layers.{i}.mlp_post_norm.weight", ("hidden_size",), "norm", "sandwich"),
    CanonicalTensor("layers.{i}.mlp_post_norm.bias", ("hidden_size",), "bias", "sandwich_bias"),
    CanonicalTensor("final_norm.weight", ("hidden_size",), "norm", "final_norm"),
    CanonicalTensor("final_norm.bias", ("hidden_size",), "bias", "final_norm_bias"),
    CanonicalTensor("pooler.weight", ("hidden_size", "hidden_size"), "linear", "pooler"),
    CanonicalTensor("pooler.bias", ("hidden_size",), "bias", "pooler"),
    CanonicalTensor("mlm.transform.weight", ("hidden_size", "hidden_size"), "linear", "is_masked_lm"),
    CanonicalTensor("mlm.transform.bias", ("hidden_size",), "bias", "is_masked_lm"),
    CanonicalTensor("mlm.norm.weight", ("hidden_size",), "norm", "is_masked_lm"),
    CanonicalTensor("mlm.norm.bias", ("hidden_size",), "bias", "mlm_norm_bias"),
    CanonicalTensor("lm_head.weight", ("vocab_size", "hidden_size"), "linear", "has_lm_head"),
    CanonicalTensor("lm_head.bias", ("vocab_size",), "bias", "lm_head_bias"),
)
BY_PATTERN = {t.pattern: t for t in TENSORS}

# Named handles for code that reads canonical tensors (the runtimes' plan, the checker): each is a
# (weight, bias) pair of patterns from the table above, checked against it at import.
Pair = tuple[str, str]


def _pair(stem: str) -> Pair:
    """(weight, bias) patterns of ``stem``; the bias may not exist (q_norm, k_norm have none)."""
    if f"{stem}.weight" not in BY_PATTERN:
        raise AssertionError(f"'{stem}.weight' is not a canonical tensor name")
    return f"{stem}.weight", f"{stem}.bias"


EMBED_TOKENS = "embed.tokens.weight"
EMBED_POSITIONS = "embed.positions.weight"
EMBED_TOKEN_TYPES = "embed.token_types.weight"
EMBED_NORM = _pair("embed.norm")
ATTN_NORM = _pair("layers.{i}.attn_norm")
ATTN_POST_NORM = _pair("layers.{i}.attn_post_norm")
MLP_NORM = _pair("layers.{i}.mlp_norm")
MLP_POST_NORM = _pair("layers.{i}.mlp_post_norm")
Q, K, V, O = (_pair(f"layers.{{i}}.attn.{x}") for x in "qkvo")
Q_NORM, K_NORM = _pair("layers.{i}.attn.q_norm"), _pair("layers.{i}.attn.k_norm")
GATE, UP, DOWN = (_pair(f"layers.{{i}}.mlp.{x}") for x in ("gate", "up", "down"))
ROUTER = _pair("layers.{i}.moe.router")
EXPERT_GATE, EXPERT_UP, EXPERT_DOWN = (_pair(f"layers.{{i}}.moe.experts.{{e}}.{x}") for x in ("gate", "up", "down"))
SHARED_GATE, SHARED_UP, SHARED_DOWN = (_pair(f"layers.{{i}}.moe.shared.{x}") for x in ("gate", "up", "down"))
SHARED_EXPERT_GATE = _pair("layers.{i}.moe.shared_gate")
FINAL_NORM = _pair("final_norm")
POOLER = _pair("pooler")
MLM_TRANSFORM = _pair("mlm.transform")
MLM_NORM = _pair("mlm.norm")
LM_HEAD = _pair("lm_head")

#: Tensors that are stored once when the config ties them: key is tied to value.
TIED = {"lm_head.weight": "embed.tokens.weight"}

_LAYER_NAME = re.compile(r"^layers\.(\d+)\.(.+)$")
_EXPERT_NAME = re.compile(r"^(.*\.experts)\.(\d+)\.(.+)$")


def pattern_of(name: str) -> str | None:
    """The vocabulary pattern a concrete canonical name instantiates, or None."""
    m = _LAYER_NAME.match(name)
    pattern = f"layers.{{i}}.{m.group(2)}" if m else name
    e = _EXPERT_NAME.match(pattern)
    if e:
        pattern = f"{e.group(1)}.{{e}}.{e.group(3)}"
    return pattern if pattern in BY_PATTERN else None


def layer_of(name: str) -> int | None:
    m = _LAYER_NAME.match(name)
    return int(m.group(1)) if m else None


def expert_of(name: str) -> int | None:
    m = _EXPERT_NAME.match(name)
    return int(m.group(2)) if m else None


def _predicates(config: CanonicalConfig) -> dict[str, bool]:
    c = config
    return {
        "always": True,
        "has_learned_positions": c.positional == "learned",
        "has_token_types": c.type_vocab_size > 0,
        "embedding_norm": c.embedding_norm,
        "embedding_norm_bias": c.embedding_norm and c.norm_bias,
        "norm_bias": c.norm_bias,
        "attn_qkv_bias": c.attn_qkv_bias,
        "attn_out_bias": c.attn_out_bias,
        "qk_norm": c.qk_norm,
        "sandwich": c.norm_position == "sandwich",
        "sandwich_bias": c.norm_position == "sandwich" and c.norm_bias,
        "has_mlp_norm": c.mlp_norm,
        "mlp_norm_bias": c.mlp_norm and c.norm_bias,
        "gated_mlp": c.gated_mlp,
        "gated_mlp_bias": c.gated_mlp and c.mlp_bias,
        "mlp_bias": c.mlp_bias,
        "final_norm": c.final_norm,
        "final_norm_bias": c.final_norm and c.norm_bias,
        "pooler": c.pooler,
        "is_masked_lm": c.head == "masked_lm",
        "mlm_norm_bias": c.head == "masked_lm" and c.norm_bias,
        "has_lm_head": c.head != "base" and not c.tie_word_embeddings,
        "lm_head_bias": c.head != "base" and c.lm_head_bias,
        "shared_expert": c.shared_expert_intermediate_size > 0,
        "shared_expert_gate": c.shared_expert_intermediate_size > 0 and c.shared_expert_gate,
    }


def _dim(config: CanonicalConfig, rule: str) -> int:
    if rule == _Q:
        return config.num_heads * config.head_dim
    if rule == _KV:
        return config.num_kv_heads * config.head_dim
    if rule == "one":
        return 1
    return int(getattr(config, rule))


def expected_tensors(config: CanonicalConfig) -> dict[str, tuple[int, ...]]:
    """Every canonical tensor a model with this config stores, in canonical order, with its shape."""
    preds = _predicates(config)
    out: dict[str, tuple[int, ...]] = {}
    per_layer = [t for t in TENSORS if t.per_layer]
    globals_before = [t for t in TENSORS if not t.per_layer and t.pattern.startswith("embed.")]
    globals_after = [t for t in TENSORS if not t.per_layer and not t.pattern.startswith("embed.")]
    for spec in globals_before:
        if preds[spec.present]:
            out[spec.name()] = tuple(_dim(config, d) for d in spec.shape)
    moe_layers = set(config.moe_layers)
    for layer in range(config.num_layers):
        kind = MOE if layer in moe_layers else DENSE
        for spec in per_layer:
            if not preds[spec.present] or spec.layers not in (EVERY, kind):
                continue
            shape = tuple(_dim(config, d) for d in spec.shape)
            for expert in range(config.num_experts) if spec.per_expert else [None]:
                out[spec.name(layer, expert)] = shape
    for spec in globals_after:
        if preds[spec.present]:
            out[spec.name()] = tuple(_dim(config, d) for d in spec.shape)
    return out


def tied_tensors(config: CanonicalConfig) -> dict[str, str]:
    """Canonical tensors not stored because they are tied to another one, for this config."""
    if config.head != "base" and config.tie_word_embeddings:
        return dict(TIED)
    return {}
