"""Canonical config -> ONNX graph (decoder-only causal LMs and bidirectional encoders).

The math follows Hugging Face transformers' eager implementations, which the tests compare against
with onnxruntime:

- hidden states travel as a 2-D ``[batch*sequence, hidden]`` matrix, so every linear layer is one
  ``Gemm(x, W, b, transB=1)`` reading the canonical ``[out, in]`` weight as stored: no transposed
  copies on disk and none at load time (a tied embedding is stored once and read by both the
  ``Gather`` and the LM-head ``Gemm``);
- decoders derive position ids from the attention mask the way ``generate`` does
  (``cumsum(mask) - 1``, padding positions set to 1), so left-padded batches get the same positions
  as in transformers; encoders (BERT) use ``0..S-1`` like transformers' BERT;
- padding and causality (and a sliding window) become one additive mask ``[B, 1, S, S]`` holding 0
  or float32's lowest value, as transformers' eager mask does: a row with every key masked (a left
  padding query) then softmaxes to a uniform row instead of NaN, so NaN never reaches real tokens;
- rotary embeddings use the rotate-half convention (the canonical q/k row order), with ``rope_theta``,
  ``rotary_dim`` (partial rotary) and ``rope_scaling`` of type linear or llama3; other scaling types
  change the frequencies with the sequence length at run time and are refused;
- computation is float32: weights stored in another dtype are cast once by a ``Cast`` node (which
  onnxruntime folds at load), so the stored bytes stay exactly the checkpoint's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmstd import dtypes, vocab
from llmstd.config import CanonicalConfig
from llmstd.converters.onnx_io import onnx_code, onnx_module
from llmstd.dtypes import DType
from llmstd.errors import ConfigError
from llmstd.rope import static_inv_freq

OPSET = 17  # LayerNormalization is a standard op from 17 on
IR_VERSION = 8  # the IR version that introduced opset 17; readable by every runtime supporting it
#: Prefix of every name the graph itself introduces (constants, intermediate values). Canonical
#: tensor names never contain '/', so the graph's own initializers can never be mistaken for weights.
OWN_PREFIX = "llmstd/"

#: Framework-config keys (kept verbatim in ``CanonicalConfig.extras``) that change the model's math
#: in ways this graph does not implement: key -> (the value the graph implements, what the other
#: value would mean). A checkpoint with another value is refused rather than written wrongly.
EXTRAS_IMPLEMENTED: dict[str, tuple[Any, str]] = {
    "scale_attn_weights": (True, "attention scores without the 1/sqrt(head_dim) scale"),
    "scale_attn_by_inverse_layer_idx": (False, "attention scores scaled by 1/(layer+1)"),
    "use_sliding_window": (False, "sliding-window attention on some layers only"),
    "attn_logit_softcapping": (None, "soft-capped attention logits"),
    "final_logit_softcapping": (None, "soft-capped output logits"),
}


_FLOAT_MIN = float(np.finfo(np.float32).min)
_F32 = dtypes.dtype("float32")


# Canonical tensor names the graph reads, each checked against the vocabulary at import, so a rename
# there fails here at once instead of silently leaving a tensor out of the graph.
def _canonical(pattern: str) -> str:
    if pattern not in vocab.BY_PATTERN:
        raise AssertionError(f"'{pattern}' is not a canonical tensor name (llmstd/vocab.py)")
    return pattern


Pair = tuple[str, str]  # (weight, bias) patterns of one linear layer or norm
EMBED_TOKENS = _canonical("embed.tokens.weight")
EMBED_POSITIONS = _canonical("embed.positions.weight")
EMBED_TOKEN_TYPES = _canonical("embed.token_types.weight")
EMBED_NORM: Pair = (_canonical("embed.norm.weight"), _canonical("embed.norm.bias"))
ATTN_NORM: Pair = (_canonical("layers.{i}.attn_norm.weight"), _canonical("layers.{i}.attn_norm.bias"))
MLP_NORM: Pair = (_canonical("layers.{i}.mlp_norm.weight"), _canonical("layers.{i}.mlp_norm.bias"))
Q: Pair = (_canonical("layers.{i}.attn.q.weight"), _canonical("layers.{i}.attn.q.bias"))
K: Pair = (_canonical("layers.{i}.attn.k.weight"), _canonical("layers.{i}.attn.k.bias"))
V: Pair = (_canonical("layers.{i}.attn.v.weight"), _canonical("layers.{i}.attn.v.bias"))
O: Pair = (_canonical("layers.{i}.attn.o.weight"), _canonical("layers.{i}.attn.o.bias"))
GATE: Pair = (_canonical("layers.{i}.mlp.gate.weight"), _canonical("layers.{i}.mlp.gate.bias"))
UP: Pair = (_canonical("layers.{i}.mlp.up.weight"), _canonical("layers.{i}.mlp.up.bias"))
DOWN: Pair = (_canonical("layers.{i}.mlp.down.weight"), _canonical("layers.{i}.mlp.down.bias"))
FINAL_NORM: Pair = (_canonical("final_norm.weight"), _canonical("final_norm.bias"))
POOLER: Pair = (_canonical("pooler.weight"), _canonical("pooler.bias"))
MLM_TRANSFORM: Pair = (_canonical("mlm.transform.weight"), _canonical("mlm.transform.bias"))
MLM_NORM: Pair = (_canonical("mlm.norm.weight"), _canonical("mlm.norm.bias"))
LM_HEAD: Pair = (_canonical("lm_head.weight"), _canonical("lm_head.bias"))


def _at(pattern: str, layer: int | None) -> str:
    return vocab.BY_PATTERN[pattern].name(layer)


@dataclass
class BuiltGraph:
    """An ONNX model without weight initializers, plus the canonical weights its nodes read."""

    model: Any  # onnx.ModelProto
    weights: list[str]  # canonical names the graph reads (each must be added as an initializer)
    inputs: list[str]
    outputs: list[str]


def inv_freq(config: CanonicalConfig) -> np.ndarray:
    """Rotary inverse frequencies in float32, computed as transformers computes them."""
    return static_inv_freq(config, who="the ONNX writer")


def check_supported(config: CanonicalConfig) -> None:
    """Refuse configs whose math the graph does not implement, naming the setting."""
    for key, (implemented, meaning) in EXTRAS_IMPLEMENTED.items():
        if key in config.extras and config.extras[key] != implemented:
            raise ConfigError(
                f"'{key}' = {config.extras[key]!r} ({meaning}) is not implemented by the ONNX writer",
                hint=f"only {key} = {implemented!r} can be written as ONNX",
            )
    if config.positional == "rope":
        inv_freq(config)  # refuses scalings the static graph cannot express
    if config.norm_position == "post" and config.parallel_residual:
        raise ConfigError("parallel residual with post-norm is not a known architecture; refusing to guess its math")
    if config.sliding_window is not None and config.sliding_window <= 0:
        raise ConfigError(f"sliding_window must be positive, got {config.sliding_window}")


class _Graph:
    """Node list plus naming: every value name carries OWN_PREFIX and the current scope."""

    def __init__(self, weight_dtypes: Mapping[str, DType]) -> None:
        self.onnx = onnx_module()
        self.helper = self.onnx.helper
        self.nodes: list[Any] = []
        self.constants: list[Any] = []
        self.scope = ""
        self._count = 0
        self._const_cache: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        self._weight_values: dict[str, str] = {}
        self.weight_dtypes = weight_dtypes
        self.weights_used: list[str] = []

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{OWN_PREFIX}{self.scope}{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        outs = [self._fresh(op_type) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs, name=f"/{self.scope}{op_type}_{self._count}",
                                                **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.tobytes(), array.shape)
        if key not in self._const_cache:
            name = f"{OWN_PREFIX}const_{len(self._const_cache)}"
            self.constants.append(self.onnx.numpy_helper.from_array(array, name))
            self._const_cache[key] = name
        return self._const_cache[key]

    def f32(self, value: Any) -> str:
        return self.const(value, np.float32)

    def weight(self, name: str) -> str:
        """The float32 value of canonical weight ``name`` (a Cast when it is stored in another dtype)."""
        if name not in self.weight_dtypes:
            raise ConfigError(f"the graph needs canonical tensor '{name}', which the checkpoint lacks")
        if name not in self._weight_values:
            self.weights_used.append(name)
            dtype = self.weight_dtypes[name]
            if dtype.name == "float32":
                self._weight_values[name] = name
            else:
                saved, self.scope = self.scope, ""
                self._weight_values[name] = self.op("Cast", name, to=onnx_code(_F32))
                self.scope = saved
        return self._weight_values[name]

    def optional_weight(self, name: str) -> str | None:
        return self.weight(name) if name in self.weight_dtypes else None


class _Builder:
    def __init__(self, config: CanonicalConfig, weight_dtypes: Mapping[str, DType]) -> None:
        self.c = config
        self.g = _Graph(weight_dtypes)
        self.bidirectional = not config.causal

    # -- building blocks ------------------------------------------------------------------------

    def linear(self, x: str, pair: Pair, layer: int | None = None) -> str:
        """``x @ W.T + b`` for a canonical ``[out, in]`` weight W (and bias b when stored)."""
        g = self.g
        bias = g.optional_weight(_at(pair[1], layer))
        inputs = [x, g.weight(_at(pair[0], layer))] + ([bias] if bias else [])
        return g.op("Gemm", *inputs, transB=1)

    def norm(self, x: str, pair: Pair, layer: int | None = None) -> str:
        g, c = self.g, self.c
        weight = g.weight(_at(pair[0], layer))
        if c.norm_kind == "layernorm":
            bias = g.optional_weight(_at(pair[1], layer))
            inputs = [x, weight] + ([bias] if bias else [])
            return g.op("LayerNormalization", *inputs, axis=-1, epsilon=float(c.norm_eps))
        # RMSNorm: x / sqrt(mean(x^2) + eps) * w, in float32 as transformers computes it.
        mean = g.op("ReduceMean", g.op("Mul", x, x), axes=[-1], keepdims=1)
        inv = g.op("Reciprocal", g.op("Sqrt", g.op("Add", mean, g.f32(c.norm_eps))))
        return g.op("Mul", weight, g.op("Mul", x, inv))

    def act(self, x: str) -> str:
        g, kind = self.g, self.c.activation
        if kind == "silu":
            return g.op("Mul", x, g.op("Sigmoid", x))
        if kind == "relu":
            return g.op("Relu", x)
        if kind == "quick_gelu":
            return g.op("Mul", x, g.op("Sigmoid", g.op("Mul", x, g.f32(1.702))))
        if kind == "gelu":
            # 0.5 * x * (1 + erf(x / sqrt(2))): the exact GELU of torch.nn.functional.gelu.
            erf = g.op("Erf", g.op("Mul", x, g.f32(1 / math.sqrt(2.0))))
            return g.op("Mul", g.op("Mul", x, g.f32(0.5)), g.op("Add", erf, g.f32(1.0)))
        if kind == "gelu_tanh":
            # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))), GPT-2's "gelu_new".
            cube = g.op("Mul", g.op("Mul", x, x), x)
            inner = g.op("Mul", g.op("Add", x, g.op("Mul", cube, g.f32(0.044715))), g.f32(math.sqrt(2.0 / math.pi)))
            return g.op("Mul", g.op("Mul", x, g.f32(0.5)), g.op("Add", g.op("Tanh", inner), g.f32(1.0)))
        raise ConfigError(f"activation {kind!r} is not implemented by the ONNX writer")

    # -- model pieces -------------------------------------------------------------------------

    def inputs(self) -> None:
        g = self.g
        self.input_ids, self.attention_mask = "input_ids", "attention_mask"
        self.has_token_types = self.bidirectional and self.c.type_vocab_size > 0
        g.scope = ""
        self.bs = g.op("Shape", self.input_ids)  # [B, S]
        self.batch = g.op("Slice", self.bs, g.const([0]), g.const([1]))
        self.seq = g.op("Slice", self.bs, g.const([1]), g.const([2]))

    def shape(self, *parts: Any) -> str:
        """A 1-D int64 shape from the symbols 'B'/'S' and integers."""
        g = self.g
        pieces = [self.batch if p == "B" else self.seq if p == "S" else g.const([p]) for p in parts]
        return g.op("Concat", *pieces, axis=0)

    def positions(self) -> str:
        g = self.g
        if self.bidirectional:
            # transformers' BERT: position ids 0..S-1 whatever the padding.
            return g.op("Unsqueeze", g.op("Range", g.const(0), g.op("Squeeze", self.seq, g.const([0])), g.const(1)),
                        g.const([0]))  # [1, S]
        # generate(): cumsum(mask) - 1, and 1 where the mask is 0.
        cum = g.op("CumSum", self.attention_mask, g.const(1))
        pos = g.op("Sub", cum, g.const(1))
        is_pad = g.op("Equal", self.attention_mask, g.const(0))
        return g.op("Where", is_pad, g.const(1), pos)  # [B, S]

    def attention_bias(self) -> str:
        """Additive mask [B, 1, S or 1, S]: 0 where a query may attend a key, float32 min elsewhere."""
        g, c = self.g, self.c
        key_ok = g.op("Cast", g.op("Unsqueeze", self.attention_mask, g.const([1, 2])), to=self.g.onnx.TensorProto.BOOL)
        allowed = key_ok  # [B, 1, 1, S]
        if not self.bidirectional:
            idx = g.op("Range", g.const(0), g.op("Squeeze", self.seq, g.const([0])), g.const(1))
            q_idx, k_idx = g.op("Unsqueeze", idx, g.const([1])), g.op("Unsqueeze", idx, g.const([0]))
            causal = g.op("GreaterOrEqual", q_idx, k_idx)  # [S, S]
            if c.sliding_window is not None:
                # transformers: a key is visible while q - k < window (indices in the padded sequence).
                causal = g.op("And", causal, g.op("Less", g.op("Sub", q_idx, k_idx), g.const(c.sliding_window)))
            allowed = g.op("And", key_ok, causal)  # [B, 1, S, S]
        return g.op("Where", allowed, g.f32(0.0), g.f32(_FLOAT_MIN))

    def rotary_tables(self, positions: str) -> tuple[str, str]:
        """cos and sin, [B or 1, 1, S, rotary_dim], from position ids."""
        g = self.g
        freqs = g.op("Mul", g.op("Unsqueeze", g.op("Cast", positions, to=onnx_code(_F32)), g.const([2])),
                     g.f32(inv_freq(self.c)))  # [B, S, rot/2]
        emb = g.op("Concat", freqs, freqs, axis=-1)
        return (g.op("Unsqueeze", g.op("Cos", emb), g.const([1])), g.op("Unsqueeze", g.op("Sin", emb), g.const([1])))

    def rotate(self, x: str, cos: str, sin: str) -> str:
        """Rotate-half rotary embedding on the first rotary_dim features of each head of x [B, H, S, D]."""
        g, c = self.g, self.c
        assert c.rotary_dim is not None
        rot, half, d = c.rotary_dim, c.rotary_dim // 2, c.head_dim
        axis = g.const([3])
        x_rot = x if rot == d else g.op("Slice", x, g.const([0]), g.const([rot]), axis)
        x1 = g.op("Slice", x_rot, g.const([0]), g.const([half]), axis)
        x2 = g.op("Slice", x_rot, g.const([half]), g.const([rot]), axis)
        rotated = g.op("Concat", g.op("Neg", x2), x1, axis=-1)
        out = g.op("Add", g.op("Mul", x_rot, cos), g.op("Mul", rotated, sin))
        if rot == d:
            return out
        return g.op("Concat", out, g.op("Slice", x, g.const([rot]), g.const([d]), axis), axis=-1)

    def heads(self, x: str, count: int) -> str:
        """[B*S, count*D] -> [B, count, S, D]."""
        g = self.g
        return g.op("Transpose", g.op("Reshape", x, self.shape("B", "S", count, self.c.head_dim)), perm=[0, 2, 1, 3])

    def attention(self, x: str, layer: int, bias: str, rope: tuple[str, str] | None) -> str:
        g, c = self.g, self.c
        q = self.heads(self.linear(x, Q, layer), c.num_heads)
        k = self.heads(self.linear(x, K, layer), c.num_kv_heads)
        v = self.heads(self.linear(x, V, layer), c.num_kv_heads)
        if rope is not None:
            q, k = self.rotate(q, *rope), self.rotate(k, *rope)
        if c.num_kv_heads != c.num_heads:
            # Grouped-query attention: each kv head serves num_heads / num_kv_heads query heads,
            # consecutive query heads sharing one kv head (transformers' repeat_kv).
            group = c.num_heads // c.num_kv_heads
            expand = self.shape("B", c.num_kv_heads, group, "S", c.head_dim)
            flat = self.shape("B", c.num_heads, "S", c.head_dim)
            k = g.op("Reshape", g.op("Expand", g.op("Unsqueeze", k, g.const([2])), expand), flat)
            v = g.op("Reshape", g.op("Expand", g.op("Unsqueeze", v, g.const([2])), expand), flat)
        scores = g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2]))
        scores = g.op("Add", g.op("Mul", scores, g.f32(c.head_dim ** -0.5)), bias)
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)  # [B, H, S, D]
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), g.const([-1, c.num_heads * c.head_dim]))
        return self.linear(context, O, layer)

    def mlp(self, x: str, layer: int) -> str:
        g, c = self.g, self.c
        up = self.linear(x, UP, layer)
        hidden = g.op("Mul", self.act(self.linear(x, GATE, layer)), up) if c.gated_mlp else self.act(up)
        return self.linear(hidden, DOWN, layer)

    def layer(self, x: str, layer: int, bias: str, rope: tuple[str, str] | None) -> str:
        g, c = self.g, self.c
        g.scope = f"layers.{layer}/"
        if c.norm_position == "post":
            x = self.norm(g.op("Add", x, self.attention(x, layer, bias, rope)), ATTN_NORM, layer)
            if c.mlp_norm:
                return self.norm(g.op("Add", x, self.mlp(x, layer)), MLP_NORM, layer)
            return g.op("Add", x, self.mlp(x, layer))
        h = self.norm(x, ATTN_NORM, layer)
        attn = self.attention(h, layer, bias, rope)
        if c.parallel_residual:
            h2 = self.norm(x, MLP_NORM, layer) if c.mlp_norm else h
            return g.op("Add", g.op("Add", x, attn), self.mlp(h2, layer))
        x = g.op("Add", x, attn)
        h2 = self.norm(x, MLP_NORM, layer) if c.mlp_norm else x
        return g.op("Add", x, self.mlp(h2, layer))

    def embeddings(self, positions: str) -> str:
        g, c = self.g, self.c
        g.scope = "embed/"
        x = g.op("Gather", g.weight(EMBED_TOKENS), self.input_ids)  # [B, S, H]
        if c.positional == "learned":
            x = g.op("Add", x, g.op("Gather", g.weight(EMBED_POSITIONS), positions))
        if self.has_token_types:
            x = g.op("Add", x, g.op("Gather", g.weight(EMBED_TOKEN_TYPES), "token_type_ids"))
        x = g.op("Reshape", x, g.const([-1, c.hidden_size]))  # [B*S, H]
        if c.embedding_norm:
            x = self.norm(x, EMBED_NORM)
        return x

    def lm_head(self, x: str) -> str:
        """Logits [B*S, V]; a tied head reads the embedding matrix itself."""
        g = self.g
        weight = vocab.tied_tensors(self.c).get(LM_HEAD[0], LM_HEAD[0])
        bias = g.optional_weight(LM_HEAD[1])
        return g.op("Gemm", x, g.weight(weight), *([bias] if bias else []), transB=1)

    def build(self) -> tuple[list[tuple[str, str]], list[tuple[str, list[Any]]]]:
        """Returns (graph inputs with their dims) and (outputs with their dims)."""
        c, g = self.c, self.g
        self.inputs()
        positions = self.positions()
        bias = self.attention_bias()
        rope = self.rotary_tables(positions) if c.positional == "rope" else None
        x = self.embeddings(positions)
        for layer in range(c.num_layers):
            x = self.layer(x, layer, bias, rope)
        g.scope = "head/"
        if c.final_norm:
            x = self.norm(x, FINAL_NORM)
        hidden = g.op("Reshape", x, self.shape("B", "S", c.hidden_size))
        outputs: list[tuple[str, str, list[Any]]] = []
        if c.head == "causal_lm" and not self.bidirectional:
            logits = g.op("Reshape", self.lm_head(x), self.shape("B", "S", c.vocab_size))
            outputs.append(("logits", logits, ["batch", "sequence", c.vocab_size]))
        else:
            outputs.append(("last_hidden_state", hidden, ["batch", "sequence", c.hidden_size]))
            if c.pooler:
                first = g.op("Gather", hidden, g.const(0), axis=1)  # [B, H]: the first token
                pooled = g.op("Tanh", self.linear(first, POOLER))
                outputs.append(("pooler_output", pooled, ["batch", c.hidden_size]))
            if c.head == "masked_lm":
                t = self.norm(self.act(self.linear(x, MLM_TRANSFORM)), MLM_NORM)
                logits = g.op("Reshape", self.lm_head(t), self.shape("B", "S", c.vocab_size))
                outputs.append(("logits", logits, ["batch", "sequence", c.vocab_size]))
            elif c.head == "causal_lm":
                raise ConfigError("a causal LM head on a bidirectional architecture is not supported")
        # Graph outputs must be named values: rename through Identity.
        named = []
        for out_name, value, dims in outputs:
            g.nodes.append(g.helper.make_node("Identity", [value], [out_name], name=f"/output/{out_name}"))
            named.append((out_name, dims))
        inputs = ["input_ids"] + (["token_type_ids"] if self.has_token_types else []) + ["attention_mask"]
        return [(n, "int64") for n in inputs], named  # type: ignore[return-value]


def build_graph(config: CanonicalConfig, weight_dtypes: Mapping[str, DType], *, producer: str = "llmstd") -> BuiltGraph:
    """An ONNX model computing ``config``'s forward pass from canonical weights.

    ``weight_dtypes`` maps each canonical tensor the checkpoint stores to its dtype. Every stored
    tensor must be read by the graph; one that is not means the config describes math the graph does
    not implement, and is refused.
    """
    check_supported(config)
    builder = _Builder(config, weight_dtypes)
    inputs, outputs = builder.build()
    g = builder.g
    unused = [n for n in weight_dtypes if n not in g.weights_used]
    if unused:
        raise ConfigError(f"the ONNX graph for this config does not use {', '.join(unused)}",
                          hint="the config and tensors disagree, or the writer lacks this feature")
    helper, tp = g.helper, g.onnx.TensorProto
    graph = helper.make_graph(
        g.nodes, f"llmstd_{config.architecture}",
        [helper.make_tensor_value_info(n, tp.INT64, ["batch", "sequence"]) for n, _ in inputs],
        [helper.make_tensor_value_info(n, tp.FLOAT, dims) for n, dims in outputs],
        initializer=g.constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer,
                              ir_version=IR_VERSION)
    return BuiltGraph(model=model, weights=list(g.weights_used), inputs=[n for n, _ in inputs],
                      outputs=[n for n, _ in outputs])
