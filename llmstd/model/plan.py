"""From a canonical config to a :class:`ModelPlan`: every step of the forward pass, per layer, with
the canonical tensors it reads -- and the one check of what llmstd can run.

The plan holds decisions, not arithmetic: which norm (kind, epsilon, weight offset) sits where, how
attention scores are scaled, soft-capped and windowed, which rotary frequencies a layer uses (as
numbers, computed once by :mod:`llmstd.rope`), how the MLP is gated, what the head computes. The
forward pass (:mod:`llmstd.model.forward`) walks it; runtimes never look at the config themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from llmstd import rope, vocab
from llmstd.config import CanonicalConfig
from llmstd.errors import ConfigError

Linear = tuple[str, str | None]  # (weight, bias or None) canonical names


@dataclass(frozen=True)
class NormPlan:
    """``norm(x) * (offset + w) (+ b)`` over the last axis. RMSNorm with an offset (Gemma) applies
    the weight in float32 before casting back; without one (Llama) it casts first -- transformers'
    two conventions, which differ in half precision."""

    kind: str  # layernorm | rmsnorm
    eps: float
    offset: float
    weight: str
    bias: str | None


@dataclass(frozen=True)
class RopePlan:
    """Rotary embedding of the first ``rotary_dim`` features of each head (rotate-half pairs).

    ``inv_freq`` are the inverse frequencies (float32, computed with numpy by
    :func:`llmstd.rope.frequencies`; a runtime may evaluate the same formulas with its own array
    library from ``theta``/``scaling``) while the largest position + 1 is at most ``long_after`` (always,
    when None); beyond it (LongRoPE) ``long_inv_freq``. cos and sin are multiplied by
    ``attention_factor`` (YaRN, LongRoPE)."""

    key: str  # identifies equal plans, so layers sharing frequencies share one table
    rotary_dim: int
    theta: float
    scaling: dict[str, Any] | None
    inv_freq: np.ndarray
    attention_factor: float
    long_inv_freq: np.ndarray | None = None
    long_after: int | None = None


@dataclass(frozen=True)
class AttentionPlan:
    q: Linear
    k: Linear
    v: Linear
    o: Linear
    heads: int
    kv_heads: int
    head_dim: int
    scale: float  # multiplies q·k
    softcap: float | None  # scores -> tanh(scores / softcap) * softcap
    window: int | None  # a query sees the last `window` positions only
    rope: RopePlan | None
    q_norm: NormPlan | None  # per head, before the rotary embedding
    k_norm: NormPlan | None
    causal: bool

    @property
    def groups(self) -> int:
        """Query heads per key/value head (grouped-query attention)."""
        return self.heads // self.kv_heads


@dataclass(frozen=True)
class MlpPlan:
    up: Linear
    down: Linear
    gate: Linear | None  # down(act(gate(x)) * up(x)) when present, else down(act(up(x)))
    activation: str


@dataclass(frozen=True)
class MoePlan:
    """A mixture of experts in place of the MLP: ``router`` scores the experts, each token takes the
    ``top_k`` best (softmax in float32, renormalised to sum 1 when ``normalize``) and sums their
    weighted outputs in expert order; ``shared`` adds for every token, scaled by
    ``sigmoid(shared_gate(x))`` when there is a gate."""

    router: Linear
    experts: tuple[MlpPlan, ...]
    top_k: int
    normalize: bool
    shared: MlpPlan | None
    shared_gate: Linear | None


@dataclass(frozen=True)
class LayerPlan:
    """One block. ``placement``: pre (x + f(norm(x))), post (norm(x + f(x))), sandwich
    (x + post_norm(f(pre_norm(x)))); ``parallel``: attention and MLP read the same input."""

    index: int
    placement: str
    parallel: bool
    attn_norm: NormPlan
    attn_post_norm: NormPlan | None
    mlp_norm: NormPlan | None
    mlp_post_norm: NormPlan | None
    attention: AttentionPlan
    mlp: MlpPlan | MoePlan


@dataclass(frozen=True)
class HeadPlan:
    kind: str  # causal_lm | masked_lm | base
    lm_head: Linear | None  # a tied head names the embedding matrix
    softcap: float | None  # final logits -> tanh(logits / softcap) * softcap
    mlm_transform: Linear | None
    mlm_norm: NormPlan | None
    pooler: Linear | None


@dataclass(frozen=True)
class ModelPlan:
    config: CanonicalConfig
    causal: bool
    embed_tokens: str
    embed_positions: str | None
    embed_token_types: str | None
    embedding_scale: float | None  # rounded to the compute dtype before multiplying, as transformers does
    embedding_norm: NormPlan | None
    layers: tuple[LayerPlan, ...]
    final_norm: NormPlan | None
    head: HeadPlan

    @property
    def outputs(self) -> list[str]:
        """What the model's reference class returns: logits for LM heads; last_hidden_state (+
        pooler_output) for base models. (The forward pass also gives a masked LM's last hidden
        state, which the ONNX graph exports for embedding pipelines.)"""
        if self.head.kind in ("causal_lm", "masked_lm"):
            return ["logits"]
        return ["last_hidden_state", "pooler_output"] if self.head.pooler else ["last_hidden_state"]

    def ropes(self) -> dict[str, RopePlan]:
        """The distinct rotary plans of the model (one table each), by key."""
        return {layer.attention.rope.key: layer.attention.rope for layer in self.layers if layer.attention.rope}


FULL, SLIDING = vocab.FULL, vocab.SLIDING


def check_supported(config: CanonicalConfig) -> None:
    """Raise ConfigError naming what no llmstd runtime computes, for every runtime at once: a plan
    is only ever built for math all of them run (torch, TensorFlow, ONNX)."""
    for theta, scaling, which in ((config.rope_theta, config.rope_scaling, "rope_scaling"),
                                  (config.rope_theta_sliding, config.rope_scaling_sliding, "rope_scaling_sliding")):
        if scaling is not None:
            kind = scaling["rope_type"]
            if kind not in rope.RUNNABLE:
                raise ConfigError(f"{which} of rope_type '{kind}' is not implemented by llmstd's runtimes",
                                  hint=f"implemented: default, {', '.join(rope.RUNNABLE)}; convert the weights, but "
                                       "run this model in its reference runtime (check --runtime-a/-b)")
    if config.norm_position == "post" and config.parallel_residual:
        raise ConfigError("parallel residual with post-norm is not a known architecture; refusing to guess its math")
    if config.norm_position == "sandwich" and config.parallel_residual:
        raise ConfigError("parallel residual with sandwich norms is not a known architecture; refusing to guess")
    if config.qk_norm and config.norm_kind != "rmsnorm":
        raise ConfigError("QK-norm is implemented for RMSNorm models only", hint="norm_kind must be rmsnorm")
    if config.head == "causal_lm" and not config.causal:
        raise ConfigError("a causal LM head on a bidirectional model is not a known architecture")
    if config.num_experts and not config.gated_mlp:
        raise ConfigError("mixture-of-experts layers are implemented with gated (SwiGLU-style) experts only",
                          hint="gated_mlp must be true when num_experts > 0")


def _linear(pair: tuple[str, str], layer: int | None, expected: dict[str, tuple[int, ...]]) -> Linear:
    weight, bias = (p.replace("{i}", str(layer)) if layer is not None else p for p in pair)
    return weight, bias if bias in expected else None


def _norm(config: CanonicalConfig, pair: tuple[str, str], layer: int | None,
          expected: dict[str, tuple[int, ...]]) -> NormPlan | None:
    weight, bias = _linear(pair, layer, expected)
    if weight not in expected:
        return None
    return NormPlan(config.norm_kind, float(config.norm_eps), float(config.norm_weight_offset), weight, bias)


def _rope(config: CanonicalConfig, sliding: bool) -> RopePlan | None:
    if config.positional != "rope":
        return None
    assert config.rope_theta is not None and config.rotary_dim is not None
    theta, scaling = config.rope_theta, config.rope_scaling
    if sliding and config.rope_theta_sliding is not None:
        theta, scaling = config.rope_theta_sliding, config.rope_scaling_sliding
    tables = rope.frequencies(theta, config.rotary_dim, scaling, config.max_positions, rope.NUMPY)
    key = f"{theta}|{config.rotary_dim}|{sorted((scaling or {}).items())}"
    return RopePlan(key, config.rotary_dim, float(theta), scaling, tables.inv_freq, tables.attention_factor,
                    tables.long_inv_freq, tables.long_after)


def _moe(config: CanonicalConfig, layer: int, expected: dict[str, tuple[int, ...]]) -> MoePlan:
    def expert(gate: tuple[str, str], up: tuple[str, str], down: tuple[str, str], e: int | None) -> MlpPlan:
        def at(pair: tuple[str, str]) -> Linear:
            weight, _ = _linear(pair, layer, expected)
            return (weight.replace("{e}", str(e)) if e is not None else weight), None  # experts have no biases

        return MlpPlan(up=at(up), down=at(down), gate=at(gate), activation=config.activation)

    shared = None
    if config.shared_expert_intermediate_size:
        shared = expert(vocab.SHARED_GATE, vocab.SHARED_UP, vocab.SHARED_DOWN, None)
    return MoePlan(
        router=_linear(vocab.ROUTER, layer, expected),
        experts=tuple(expert(vocab.EXPERT_GATE, vocab.EXPERT_UP, vocab.EXPERT_DOWN, e)
                      for e in range(config.num_experts)),
        top_k=config.experts_per_token, normalize=config.moe_normalize_weights, shared=shared,
        shared_gate=_linear(vocab.SHARED_EXPERT_GATE, layer, expected) if config.shared_expert_gate else None,
    )


def layer_kinds(config: CanonicalConfig) -> list[str]:
    """Each layer's attention kind: ``layer_types`` when the config has one, else every layer
    sliding when there is a window, full otherwise."""
    if config.layer_types is not None:
        return list(config.layer_types)
    return [SLIDING if config.sliding_window is not None else FULL] * config.num_layers


def plan(config: CanonicalConfig) -> ModelPlan:
    """The forward pass of ``config`` (refused by :func:`check_supported` when not runnable)."""
    check_supported(config)
    c = config
    expected = vocab.expected_tensors(c)
    tied = vocab.tied_tensors(c)
    scale = (c.attention_scale_dim if c.attention_scale_dim is not None else c.head_dim) ** -0.5
    ropes = {kind: _rope(c, kind == SLIDING) for kind in (FULL, SLIDING)}
    moe_layers = set(c.moe_layers)
    layers = []
    for i, kind in enumerate(layer_kinds(c)):
        attention = AttentionPlan(
            q=_linear(vocab.Q, i, expected), k=_linear(vocab.K, i, expected), v=_linear(vocab.V, i, expected),
            o=_linear(vocab.O, i, expected), heads=c.num_heads, kv_heads=c.num_kv_heads, head_dim=c.head_dim,
            scale=scale, softcap=c.attn_logit_softcap, window=c.sliding_window if kind == SLIDING else None,
            rope=ropes[kind], q_norm=_norm(c, vocab.Q_NORM, i, expected), k_norm=_norm(c, vocab.K_NORM, i, expected),
            causal=c.causal,
        )
        mlp: MlpPlan | MoePlan = MlpPlan(
            up=_linear(vocab.UP, i, expected), down=_linear(vocab.DOWN, i, expected),
            gate=_linear(vocab.GATE, i, expected) if c.gated_mlp else None, activation=c.activation,
        ) if i not in moe_layers else _moe(c, i, expected)
        attn_norm = _norm(c, vocab.ATTN_NORM, i, expected)
        assert attn_norm is not None
        layers.append(LayerPlan(
            index=i, placement=c.norm_position, parallel=c.parallel_residual, attn_norm=attn_norm,
            attn_post_norm=_norm(c, vocab.ATTN_POST_NORM, i, expected), mlp_norm=_norm(c, vocab.MLP_NORM, i, expected),
            mlp_post_norm=_norm(c, vocab.MLP_POST_NORM, i, expected), attention=attention, mlp=mlp,
        ))
    lm_weight = tied.get(vocab.LM_HEAD[0], vocab.LM_HEAD[0])
    head = HeadPlan(
        kind=c.head,
        lm_head=(lm_weight, vocab.LM_HEAD[1] if vocab.LM_HEAD[1] in expected else None) if c.head != "base" else None,
        softcap=c.final_logit_softcap,
        mlm_transform=_linear(vocab.MLM_TRANSFORM, None, expected) if c.head == "masked_lm" else None,
        mlm_norm=_norm(c, vocab.MLM_NORM, None, expected) if c.head == "masked_lm" else None,
        pooler=_linear(vocab.POOLER, None, expected) if c.pooler else None,
    )
    return ModelPlan(
        config=c, causal=c.causal, embed_tokens=vocab.EMBED_TOKENS,
        embed_positions=vocab.EMBED_POSITIONS if vocab.EMBED_POSITIONS in expected else None,
        embed_token_types=vocab.EMBED_TOKEN_TYPES if vocab.EMBED_TOKEN_TYPES in expected else None,
        embedding_scale=c.embedding_scale, embedding_norm=_norm(c, vocab.EMBED_NORM, None, expected),
        layers=tuple(layers), final_norm=_norm(c, vocab.FINAL_NORM, None, expected), head=head,
    )
