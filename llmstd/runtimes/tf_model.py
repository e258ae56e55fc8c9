"""A TensorFlow implementation of every canonical architecture, driven only by the canonical config.

It runs gpt2, bert (base, pooler, MLM head), llama (GQA, tied or untied head, rope_theta, rope
scaling 'linear' and 'llama3'), mistral (sliding-window attention) and qwen2 (q/k/v biases) from
canonical tensors, in plain TF ops (no Keras layers, no transformers), so that a checkpoint llmstd
wrote for TensorFlow can be run where transformers has no TF class (llama, qwen2) and the
equivalence checker can compare frameworks layer by layer.

    model = TFModel.from_checkpoint(llmstd.load("out/tf-ckpt"))
    out = model(input_ids, attention_mask)       # numpy or tf inputs, shape [batch, seq]
    out.logits, out.hidden_states                 # numpy arrays

Computation is float32 whatever the stored dtype (bfloat16 weights are widened once, exactly).
``hidden_states`` follows transformers: entry 0 is the embedding output and entry ``i`` the output of
layer ``i``; like transformers, the last entry has the final norm applied when the model has one.

Everything the math depends on comes from the canonical config (``causal`` selects decoder or
encoder attention).
TensorFlow is imported when a model is built, never when this module is imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmstd import vocab
from llmstd.config import CanonicalConfig
from llmstd.errors import ConfigError, require
from llmstd.rope import static_inv_freq
from llmstd.runtimes import canonical_arrays
from llmstd.tensors import LazyTensor


@dataclass
class TFOutput:
    logits: np.ndarray | None  # [batch, seq, vocab] for causal_lm / masked_lm heads
    last_hidden_state: np.ndarray  # [batch, seq, hidden], after the final norm if any
    hidden_states: list[np.ndarray]  # num_layers + 1 entries, see the module docstring
    pooled: np.ndarray | None = None  # [batch, hidden] when the model has a pooler


class TFModel:
    """A canonical model held as TF constants; call it on token ids."""

    def __init__(self, tensors: Mapping[str, LazyTensor | np.ndarray], config: CanonicalConfig) -> None:
        tf: Any = require("tensorflow", "tf")
        self.tf = tf
        self.config = config
        self.w: dict[str, Any] = {
            name: tf.constant(np.asarray(array, dtype=np.float32)) for name, array in canonical_arrays(tensors, config)
        }
        for tied, source in vocab.tied_tensors(config).items():
            self.w[tied] = self.w[source]
        self.inv_freq = (static_inv_freq(config, who="llmstd's TF runtime") if config.positional == "rope"
                         else None)

    @classmethod
    def from_checkpoint(cls, ckpt: Any) -> TFModel:
        """From a :class:`llmstd.checkpoint.Checkpoint` (e.g. ``llmstd.load(path)``)."""
        return cls(ckpt.tensors, ckpt.config)

    @classmethod
    def load(cls, path: str | Path, arch: str | None = None) -> TFModel:
        """Any checkpoint llmstd reads (tf-ckpt, tf-h5, hf, canonical, ...)."""
        from llmstd.convert import load

        return cls.from_checkpoint(load(path, arch=arch))

    # -- building blocks ---------------------------------------------------------------------

    def _linear(self, x: Any, prefix: str, bias: bool) -> Any:
        tf = self.tf
        y = tf.matmul(x, self.w[f"{prefix}.weight"], transpose_b=True)  # canonical weights are [out, in]
        return y + self.w[f"{prefix}.bias"] if bias else y

    def _norm(self, x: Any, prefix: str, bias: bool) -> Any:
        tf, c = self.tf, self.config
        if c.norm_kind == "rmsnorm":
            y = x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + c.norm_eps)
            return y * self.w[f"{prefix}.weight"]
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        y = (x - mean) * tf.math.rsqrt(var + c.norm_eps) * self.w[f"{prefix}.weight"]
        return y + self.w[f"{prefix}.bias"] if bias else y

    def _act(self, x: Any) -> Any:
        tf, kind = self.tf, self.config.activation
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
        raise ConfigError(f"activation {kind!r} is not implemented")

    def _rope(self, x: Any, cos: Any, sin: Any) -> Any:
        """Rotate-half rotary embedding on the first rotary_dim channels of each head."""
        tf = self.tf
        rd = self.config.rotary_dim
        rot, rest = x[..., :rd], x[..., rd:]
        half = rd // 2  # type: ignore[operator]
        rotated = tf.concat([-rot[..., half:], rot[..., :half]], axis=-1)
        return tf.concat([rot * cos + rotated * sin, rest], axis=-1)

    def _attention(self, x: Any, layer: int, bias_mask: Any, cos: Any, sin: Any) -> Any:
        tf, c = self.tf, self.config
        b, t = tf.shape(x)[0], tf.shape(x)[1]
        p = f"layers.{layer}.attn"

        def heads(y: Any, n: int) -> Any:
            return tf.transpose(tf.reshape(y, [b, t, n, c.head_dim]), [0, 2, 1, 3])

        q = heads(self._linear(x, f"{p}.q", c.attn_qkv_bias), c.num_heads)
        k = heads(self._linear(x, f"{p}.k", c.attn_qkv_bias), c.num_kv_heads)
        v = heads(self._linear(x, f"{p}.v", c.attn_qkv_bias), c.num_kv_heads)
        if cos is not None:
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
        if c.num_kv_heads != c.num_heads:  # grouped-query attention: each kv head serves a group of q heads
            k = tf.repeat(k, c.num_heads // c.num_kv_heads, axis=1)
            v = tf.repeat(v, c.num_heads // c.num_kv_heads, axis=1)
        scores = tf.matmul(q, k, transpose_b=True) / math.sqrt(c.head_dim) + bias_mask
        probs = tf.nn.softmax(scores, axis=-1)
        out = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), [b, t, c.num_heads * c.head_dim])
        return self._linear(out, f"{p}.o", c.attn_out_bias)

    def _mlp(self, x: Any, layer: int) -> Any:
        c = self.config
        p = f"layers.{layer}.mlp"
        up = self._linear(x, f"{p}.up", c.mlp_bias)
        hidden = self._act(self._linear(x, f"{p}.gate", c.mlp_bias)) * up if c.gated_mlp else self._act(up)
        return self._linear(hidden, f"{p}.down", c.mlp_bias)

    def _mask(self, seq: int, attention_mask: Any) -> Any:
        """Additive mask [batch or 1, 1, seq, seq]: padding keys, causality, sliding window."""
        tf, c = self.tf, self.config
        neg = tf.constant(np.finfo(np.float32).min, tf.float32)
        q_pos = tf.range(seq)[:, None]
        k_pos = tf.range(seq)[None, :]
        allowed = tf.ones([seq, seq], tf.bool)
        if c.causal:
            allowed = k_pos <= q_pos
            if c.sliding_window is not None:
                # transformers: key k is visible from query q when k > q - window
                allowed = allowed & (k_pos > q_pos - c.sliding_window)
        allowed = allowed[None, None, :, :]
        if attention_mask is not None:
            allowed = allowed & tf.cast(attention_mask, tf.bool)[:, None, None, :]
        return tf.where(allowed, 0.0, neg)

    # -- the model -----------------------------------------------------------------------------

    def __call__(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                 position_ids: Any = None) -> TFOutput:
        tf, c = self.tf, self.config
        ids = tf.convert_to_tensor(np.asarray(input_ids), tf.int64)
        seq = int(ids.shape[1])
        if attention_mask is not None:
            attention_mask = tf.convert_to_tensor(np.asarray(attention_mask))
        positions = (tf.range(seq, dtype=tf.int64)[None, :] if position_ids is None
                     else tf.convert_to_tensor(np.asarray(position_ids), tf.int64))
        x = tf.gather(self.w["embed.tokens.weight"], ids)
        if c.positional == "learned":
            if seq > c.max_positions:
                raise ConfigError(f"sequence of {seq} tokens exceeds max_positions ({c.max_positions})")
            x = x + tf.gather(self.w["embed.positions.weight"], positions)
        if c.type_vocab_size > 0:
            types = tf.zeros_like(ids) if token_type_ids is None else tf.convert_to_tensor(
                np.asarray(token_type_ids), tf.int64)
            x = x + tf.gather(self.w["embed.token_types.weight"], types)
        if c.embedding_norm:
            x = self._norm(x, "embed.norm", c.norm_bias)
        cos = sin = None
        if self.inv_freq is not None:
            angles = tf.cast(positions, tf.float32)[..., None] * self.inv_freq[None, None, :]
            emb = tf.concat([angles, angles], axis=-1)[:, None, :, :]  # [batch, 1 (heads), seq, rotary_dim]
            cos, sin = tf.cos(emb), tf.sin(emb)
        bias_mask = self._mask(seq, attention_mask)

        hidden = [x]
        for i in range(c.num_layers):
            n1 = f"layers.{i}.attn_norm"
            n2 = f"layers.{i}.mlp_norm"
            if c.norm_position == "pre":
                a_in = self._norm(x, n1, c.norm_bias)
                attn = self._attention(a_in, i, bias_mask, cos, sin)
                if c.parallel_residual:
                    m_in = self._norm(x, n2, c.norm_bias) if c.mlp_norm else a_in
                    x = x + attn + self._mlp(m_in, i)
                else:
                    x = x + attn
                    x = x + self._mlp(self._norm(x, n2, c.norm_bias) if c.mlp_norm else x, i)
            else:  # post-norm (BERT): norm(x + sublayer(x))
                x = self._norm(x + self._attention(x, i, bias_mask, cos, sin), n1, c.norm_bias)
                m = self._mlp(x, i)
                x = self._norm(x + m, n2, c.norm_bias) if c.mlp_norm else x + m
            hidden.append(x)
        if c.final_norm:
            x = self._norm(x, "final_norm", c.norm_bias)
            hidden[-1] = x
        logits = pooled = None
        if c.pooler:
            pooled = tf.tanh(self._linear(x[:, 0, :], "pooler", True))
        if c.head == "causal_lm":
            logits = self._linear(x, "lm_head", c.lm_head_bias)
        elif c.head == "masked_lm":
            t = self._act(self._linear(x, "mlm.transform", True))
            t = self._norm(t, "mlm.norm", c.norm_bias)
            logits = self._linear(t, "lm_head", c.lm_head_bias)
        return TFOutput(
            logits=None if logits is None else logits.numpy(),
            last_hidden_state=x.numpy(),
            hidden_states=[h.numpy() for h in hidden],
            pooled=None if pooled is None else pooled.numpy(),
        )


def run(tensors: Mapping[str, LazyTensor | np.ndarray], config: CanonicalConfig, input_ids: Any,
        attention_mask: Any = None, token_type_ids: Any = None) -> TFOutput:
    """Build a :class:`TFModel` and run it once."""
    return TFModel(tensors, config)(input_ids, attention_mask, token_type_ids)
