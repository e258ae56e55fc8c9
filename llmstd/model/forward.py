"""The forward pass of every canonical model, written once against :class:`~llmstd.model.ops.Ops`.

The order of operations follows transformers' eager implementations (residual adds, where norms
sit, softmax in float32, soft-capping before the mask), so each runtime reproduces the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmstd.model.ops import Ops, Value
from llmstd.model.plan import AttentionPlan, LayerPlan, MlpPlan, ModelPlan, MoePlan


@dataclass
class Result:
    """What one forward pass produced, as runtime values.

    ``hidden_states`` follows transformers: entry 0 is the embedding output, entry ``i + 1`` the
    output of layer ``i``, the last one with the final norm applied when the model has one.
    ``present`` holds each layer's keys and values (cached positions first), ``[B, kv_heads, P+S, D]``.
    """

    outputs: dict[str, Value]
    hidden_states: list[Value] = field(default_factory=list)
    present: list[tuple[Value, Value]] = field(default_factory=list)


def _softcap(ops: Ops, x: Value, cap: float | None) -> Value:
    # tanh(x / cap) * cap keeps values within +-cap (Gemma 2's attention and final logits).
    return x if cap is None else ops.scale(ops.tanh(ops.divide(x, cap)), cap)


def attention(ops: Ops, plan: AttentionPlan, x: Value, bias: Value, rope: tuple[Value, Value] | None,
              past: tuple[Value, Value] | None) -> tuple[Value, tuple[Value, Value]]:
    """Self-attention of one layer: (output [B, S, hidden], present keys and values)."""
    q = ops.split_heads(ops.linear(x, plan.q), plan.heads, plan.head_dim)
    k = ops.split_heads(ops.linear(x, plan.k), plan.kv_heads, plan.head_dim)
    v = ops.split_heads(ops.linear(x, plan.v), plan.kv_heads, plan.head_dim)
    if plan.q_norm is not None and plan.k_norm is not None:  # QK-norm: per head, before the rotation
        q, k = ops.norm(q, plan.q_norm), ops.norm(k, plan.k_norm)
    if rope is not None and plan.rope is not None:
        q, k = ops.rotate(q, *rope, plan.rope.rotary_dim), ops.rotate(k, *rope, plan.rope.rotary_dim)
    k = ops.extend_cache(past[0] if past else None, k)
    v = ops.extend_cache(past[1] if past else None, v)
    scores = _softcap(ops, ops.scale(ops.scores(q, k, plan.groups), plan.scale), plan.softcap)
    probs = ops.softmax(ops.add(scores, bias))
    out = ops.linear(ops.merge_heads(ops.context(probs, v, plan.groups)), plan.o)
    return out, (k, v)


def mlp(ops: Ops, plan: MlpPlan, x: Value) -> Value:
    up = ops.linear(x, plan.up)
    hidden = ops.activation(up, plan.activation) if plan.gate is None else \
        ops.mul(ops.activation(ops.linear(x, plan.gate), plan.activation), up)
    return ops.linear(hidden, plan.down)


def moe(ops: Ops, plan: MoePlan, x: Value) -> Value:
    """A mixture of experts, as transformers computes it: the experts in turn, each running on the
    tokens routed to it only and adding its weighted output there (``index_add_``), so the sums
    accumulate in expert order; then the shared expert, if any."""
    weights = ops.route(ops.linear(x, plan.router), plan.top_k, plan.normalize)
    out = ops.zeros_like(x)
    for index, expert in enumerate(plan.experts):
        out = ops.add_routed(out, x, weights, index, lambda rows, e=expert: mlp(ops, e, rows))
    if plan.shared is not None:
        shared = mlp(ops, plan.shared, x)
        if plan.shared_gate is not None:
            shared = ops.mul(ops.sigmoid(ops.linear(x, plan.shared_gate)), shared)
        out = ops.add(out, shared)
    return out


def feed_forward(ops: Ops, plan: MlpPlan | MoePlan, x: Value) -> Value:
    return moe(ops, plan, x) if isinstance(plan, MoePlan) else mlp(ops, plan, x)


def layer(ops: Ops, plan: LayerPlan, x: Value, bias: Value, rope: tuple[Value, Value] | None,
          past: tuple[Value, Value] | None) -> tuple[Value, tuple[Value, Value]]:
    """One block, with its norms where the plan puts them."""
    if plan.placement == "post":  # BERT: norm(x + sublayer(x))
        attn, present = attention(ops, plan.attention, x, bias, rope, past)
        x = ops.norm(ops.add(x, attn), plan.attn_norm)
        out = ops.add(x, feed_forward(ops, plan.mlp, x))
        return (ops.norm(out, plan.mlp_norm) if plan.mlp_norm else out), present
    attn, present = attention(ops, plan.attention, ops.norm(x, plan.attn_norm), bias, rope, past)
    if plan.attn_post_norm is not None:  # sandwich (Gemma 2/3): the sublayer output is normed too
        attn = ops.norm(attn, plan.attn_post_norm)
    if plan.parallel:  # GPT-NeoX: attention and MLP read the same layer input
        mlp_in = ops.norm(x, plan.mlp_norm) if plan.mlp_norm else ops.norm(x, plan.attn_norm)
        # (attention + MLP) + residual, transformers' order of the two float additions.
        return ops.add(ops.add(attn, feed_forward(ops, plan.mlp, mlp_in)), x), present
    x = ops.add(x, attn)
    out = feed_forward(ops, plan.mlp, ops.norm(x, plan.mlp_norm) if plan.mlp_norm else x)
    if plan.mlp_post_norm is not None:
        out = ops.norm(out, plan.mlp_post_norm)
    return ops.add(x, out), present


def forward(ops: Ops, plan: ModelPlan, input_ids: Value, attention_mask: Value, *,
            position_ids: Value | None = None, token_type_ids: Value | None = None,
            past: Sequence[tuple[Value, Value]] | None = None) -> Result:
    """Run ``plan`` on one batch. ``attention_mask`` covers the cached and the new positions;
    ``past`` (one (keys, values) per layer) holds the cached ones."""
    positions = position_ids if position_ids is not None else ops.positions(attention_mask, input_ids, plan.causal)
    x = ops.embedding(plan.embed_tokens, input_ids)
    if plan.embedding_scale is not None:
        x = ops.scale_rounded(x, plan.embedding_scale)
    if plan.embed_positions is not None:
        x = ops.add(x, ops.embedding(plan.embed_positions, positions))
    if plan.embed_token_types is not None:
        x = ops.add(x, ops.embedding(plan.embed_token_types, token_type_ids))
    if plan.embedding_norm is not None:
        x = ops.norm(x, plan.embedding_norm)
    # One mask per window size and one rotary table per frequency plan, shared by the layers.
    biases: dict[int | None, Value] = {}
    tables: dict[str, tuple[Value, Value]] = {}
    result = Result(outputs={}, hidden_states=[x])
    for index, block in enumerate(plan.layers):
        spec = block.attention
        if spec.window not in biases:
            biases[spec.window] = ops.attention_bias(attention_mask, input_ids, spec.causal, spec.window)
        if spec.rope is not None and spec.rope.key not in tables:
            tables[spec.rope.key] = ops.rope_tables(positions, spec.rope)
        rope = tables[spec.rope.key] if spec.rope is not None else None
        x, present = layer(ops, block, x, biases[spec.window], rope, past[index] if past else None)
        result.present.append(present)
        result.hidden_states.append(x)
    if plan.final_norm is not None:
        x = ops.norm(x, plan.final_norm)
        result.hidden_states[-1] = x  # transformers' convention: the last hidden state is the normed one
    result.outputs = head(ops, plan, x)
    return result


def head(ops: Ops, plan: ModelPlan, x: Value) -> dict[str, Any]:
    spec = plan.head
    if spec.kind == "causal_lm":
        assert spec.lm_head is not None
        return {"logits": _softcap(ops, ops.linear(x, spec.lm_head), spec.softcap)}
    # Encoders also expose their last hidden state (the input of embedding pipelines).
    out = {"last_hidden_state": x}
    if spec.pooler is not None:
        out["pooler_output"] = ops.tanh(ops.linear(ops.first_token(x), spec.pooler))
    if spec.kind == "masked_lm":
        assert spec.lm_head is not None and spec.mlm_transform is not None and spec.mlm_norm is not None
        h = ops.norm(ops.activation(ops.linear(x, spec.mlm_transform), plan.config.activation), spec.mlm_norm)
        out["logits"] = ops.linear(h, spec.lm_head)
    return out
