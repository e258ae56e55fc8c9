"""The model primitives (:class:`~llmstd.model.ops.Ops`) in eager TensorFlow, plain TF ops (no Keras
layers, no transformers), computing in float32 whatever the stored dtype (half-precision weights
are widened once, exactly). TensorFlow is imported by the caller (:mod:`llmstd.runtimes.tf_model`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from llmstd.model.ops import EagerOps
from llmstd.model.plan import Linear, NormPlan, RopePlan


class TFOps(EagerOps):
    """Primitives over float32 TF tensors; ``weights`` holds the canonical tensors (tied names included)."""

    def __init__(self, tf: Any, weights: Mapping[str, Any]) -> None:
        self.tf = tf
        self.weights = weights

    def weight(self, name: str) -> Any:
        return self.weights[name]

    def embedding(self, table: str, ids: Any) -> Any:
        return self.tf.gather(self.weights[table], ids)

    def positions(self, attention_mask: Any, new: Any, causal: bool) -> Any:
        tf = self.tf
        seq = tf.shape(new)[1]
        if not causal:
            return tf.broadcast_to(tf.range(seq, dtype=tf.int64)[None, :], tf.shape(new, out_type=tf.int32))
        mask = tf.cast(attention_mask, tf.int64)
        positions = tf.where(mask == 0, tf.ones_like(mask), tf.cumsum(mask, axis=-1) - 1)
        return positions[:, -seq:]

    def scale_rounded(self, x: Any, factor: float) -> Any:
        return x * np.float32(factor)  # float32 compute: the factor rounded to float32

    def tanh(self, x: Any) -> Any:
        return self.tf.tanh(x)

    def activation(self, x: Any, kind: str) -> Any:
        tf = self.tf
        if kind == "gelu":
            return tf.nn.gelu(x, approximate=False)
        if kind == "gelu_tanh":
            return tf.nn.gelu(x, approximate=True)
        if kind == "silu":
            return x * tf.sigmoid(x)
        if kind == "relu":
            return tf.nn.relu(x)
        if kind == "quick_gelu":
            return x * tf.sigmoid(1.702 * x)
        raise AssertionError(f"activation {kind!r} passed the supported-feature check")

    def linear(self, x: Any, layer: Linear) -> Any:
        weight, bias = layer
        y = self.tf.matmul(x, self.weights[weight], transpose_b=True)  # canonical weights are [out, in]
        return y + self.weights[bias] if bias else y

    def norm(self, x: Any, plan: NormPlan) -> Any:
        tf = self.tf
        weight = self.weights[plan.weight] + plan.offset if plan.offset else self.weights[plan.weight]
        if plan.kind == "rmsnorm":
            return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + plan.eps) * weight
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        y = (x - mean) * tf.math.rsqrt(var + plan.eps) * weight
        return y + self.weights[plan.bias] if plan.bias else y

    def split_heads(self, x: Any, heads: int, head_dim: int) -> Any:
        tf = self.tf
        shape = tf.shape(x)
        return tf.transpose(tf.reshape(x, [shape[0], shape[1], heads, head_dim]), [0, 2, 1, 3])

    def merge_heads(self, x: Any) -> Any:
        tf = self.tf
        shape = tf.shape(x)
        return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [shape[0], shape[2], shape[1] * shape[3]])

    def rope_tables(self, positions: Any, plan: RopePlan) -> tuple[Any, Any]:
        tf = self.tf
        inv_freq = plan.inv_freq
        if plan.long_inv_freq is not None and int(tf.reduce_max(positions)) + 1 > plan.long_after:
            inv_freq = plan.long_inv_freq
        angles = tf.cast(positions, tf.float32)[..., None] * inv_freq[None, None, :]
        emb = tf.concat([angles, angles], axis=-1)[:, None, :, :]  # [B, 1, S, rotary_dim]
        return tf.cos(emb) * plan.attention_factor, tf.sin(emb) * plan.attention_factor

    def rotate(self, x: Any, cos: Any, sin: Any, rotary_dim: int) -> Any:
        tf = self.tf
        rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
        half = rotary_dim // 2
        rotated = tf.concat([-rot[..., half:], rot[..., :half]], axis=-1)
        return tf.concat([rot * cos + rotated * sin, rest], axis=-1)

    def extend_cache(self, past: Any | None, new: Any) -> Any:
        return new if past is None else self.tf.concat([past, new], axis=2)

    def _repeat(self, x: Any, groups: int) -> Any:
        return x if groups == 1 else self.tf.repeat(x, groups, axis=1)

    def scores(self, q: Any, k: Any, groups: int) -> Any:
        return self.tf.matmul(q, self._repeat(k, groups), transpose_b=True)

    def attention_bias(self, attention_mask: Any, new: Any, causal: bool, window: int | None) -> Any:
        tf = self.tf
        total, seq = tf.shape(attention_mask)[1], tf.shape(new)[1]
        allowed = tf.cast(attention_mask, tf.bool)[:, None, None, :]
        if causal:
            q_idx = tf.range(total - seq, total)[:, None]
            k_idx = tf.range(total)[None, :]
            visible = k_idx <= q_idx
            if window is not None:
                visible = visible & (k_idx > q_idx - window)
            allowed = allowed & visible[None, None, :, :]
        return tf.where(allowed, 0.0, tf.constant(np.finfo(np.float32).min, tf.float32))

    def softmax(self, scores: Any) -> Any:
        return self.tf.nn.softmax(scores, axis=-1)

    def sigmoid(self, x: Any) -> Any:
        return self.tf.sigmoid(x)

    def route(self, logits: Any, top_k: int, normalize: bool) -> Any:
        tf = self.tf
        probs = tf.nn.softmax(logits, axis=-1)
        top, index = tf.math.top_k(probs, k=top_k)  # equal values: the lower index first, as torch.topk
        if normalize:
            top = top / tf.reduce_sum(top, axis=-1, keepdims=True)
        # Each chosen expert appears once per token, so the sum over the one-hot rows is exact.
        return tf.reduce_sum(tf.one_hot(index, tf.shape(probs)[-1], dtype=probs.dtype) * top[..., None], axis=-2)

    def zeros_like(self, x: Any) -> Any:
        return self.tf.zeros_like(x)

    def add_routed(self, out: Any, x: Any, weights: Any, expert: int, run: Callable[[Any], Any]) -> Any:
        tf = self.tf
        hidden = tf.shape(x)[-1]
        weight = tf.reshape(weights[..., expert], [-1])
        tokens = tf.where(weight != 0)  # [n, 1], ascending
        y = run(tf.gather_nd(tf.reshape(x, [-1, hidden]), tokens)) * tf.gather_nd(weight, tokens)[:, None]
        return tf.reshape(tf.tensor_scatter_nd_add(tf.reshape(out, [-1, hidden]), tokens, y), tf.shape(out))

    def context(self, probs: Any, v: Any, groups: int) -> Any:
        return self.tf.matmul(probs, self._repeat(v, groups))

    def first_token(self, x: Any) -> Any:
        return x[:, 0, :]
