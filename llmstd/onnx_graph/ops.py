"""The model primitives (:class:`~llmstd.model.ops.Ops`) as ONNX nodes: each call appends nodes to a
graph and returns the name of the value it computes.

Choices that keep the written graph lean and exact:

- every linear layer is one ``Gemm(x, W, b, transB=1)`` on ``[B*S, in]`` reading the canonical
  ``[out, in]`` weight as stored: no transposed copy on disk or at load (a tied embedding is stored
  once and read by both the ``Gather`` and the LM-head ``Gemm``);
- computation is float32: a weight stored in another dtype is cast once by a ``Cast`` node (which
  onnxruntime folds at load), so the stored bytes stay exactly the checkpoint's;
- masks are additive ``[B, 1, S, P+S]`` biases holding 0 or float32's lowest value, as transformers'
  eager mask does: a row with every key masked (a left-padding query) softmaxes to a uniform row
  instead of NaN, so NaN never reaches real tokens.

Every name the graph introduces carries :data:`OWN_PREFIX`; canonical tensor names never contain '/',
so the graph's own initializers can never be mistaken for weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from llmstd import dtypes
from llmstd.converters.onnx_io import onnx_code, onnx_module
from llmstd.dtypes import DType
from llmstd.errors import ConfigError
from llmstd.model.ops import Ops
from llmstd.model.plan import Linear, NormPlan, RopePlan

OWN_PREFIX = "llmstd/"
_FLOAT_MIN = float(np.finfo(np.float32).min)
_F32 = dtypes.dtype("float32")


class Graph:
    """Node list plus naming: every value name carries OWN_PREFIX and the current scope."""

    def __init__(self, weight_dtypes: Mapping[str, DType], weight_shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.onnx = onnx_module()
        self.helper = self.onnx.helper
        self.nodes: list[Any] = []
        self.constants: list[Any] = []
        self.scope = ""
        self._count = 0
        self._const_cache: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        self._weight_values: dict[str, str] = {}
        self.weight_dtypes = weight_dtypes
        self.weight_shapes = weight_shapes  # canonical shapes, for output widths known before running
        self.weights_used: list[str] = []

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{OWN_PREFIX}{self.scope}{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        outs = [self._fresh(op_type) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs,
                                                name=f"/{self.scope}{op_type}_{self._count}", **attrs))
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
            if self.weight_dtypes[name].name == "float32":
                self._weight_values[name] = name
            else:
                saved, self.scope = self.scope, ""
                self._weight_values[name] = self.op("Cast", name, to=onnx_code(_F32))
                self.scope = saved
        return self._weight_values[name]


class OnnxOps(Ops):
    """Primitives that append ONNX nodes to ``graph``; values are value names."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self._zero = graph.onnx.numpy_helper.from_array(np.zeros(1, np.float32))  # ConstantOfShape's fill

    def _dim(self, value: str, axis: int) -> str:
        """Dimension ``axis`` of ``value`` as a 1-element int64 tensor."""
        g = self.g
        return g.op("Slice", g.op("Shape", value), g.const([axis]), g.const([axis + 1]))

    def _scalar_dim(self, value: str, axis: int) -> str:
        return self.g.op("Squeeze", self._dim(value, axis), self.g.const([0]))

    def weight(self, name: str) -> str:
        return self.g.weight(name)

    def embedding(self, table: str, ids: str) -> str:
        return self.g.op("Gather", self.g.weight(table), ids)

    def positions(self, attention_mask: str, new: str, causal: bool) -> str:
        g = self.g
        seq = self._scalar_dim(new, 1)
        if not causal:  # transformers' BERT: 0..S-1 whatever the padding
            return g.op("Unsqueeze", g.op("Range", g.const(0), seq, g.const(1)), g.const([0]))
        # generate(): cumsum(mask) - 1, and 1 where the mask is 0; the last S positions.
        cumulative = g.op("Sub", g.op("CumSum", attention_mask, g.const(1)), g.const(1))
        positions = g.op("Where", g.op("Equal", attention_mask, g.const(0)), g.const(1), cumulative)
        start = g.op("Neg", self._dim(new, 1))
        return g.op("Slice", positions, start, g.const([np.iinfo(np.int64).max]), g.const([1]))

    def add(self, a: str, b: str) -> str:
        return self.g.op("Add", a, b)

    def mul(self, a: str, b: str) -> str:
        return self.g.op("Mul", a, b)

    def scale(self, x: str, factor: float) -> str:
        return self.g.op("Mul", x, self.g.f32(factor))

    def scale_rounded(self, x: str, factor: float) -> str:
        return self.scale(x, factor)  # the graph computes in float32: the factor rounded to float32

    def divide(self, x: str, divisor: float) -> str:
        return self.g.op("Div", x, self.g.f32(divisor))

    def tanh(self, x: str) -> str:
        return self.g.op("Tanh", x)

    def activation(self, x: str, kind: str) -> str:
        g = self.g
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
        raise AssertionError(f"activation {kind!r} passed the supported-feature check")

    def linear(self, x: str, layer: Linear) -> str:
        g = self.g
        weight, bias = layer
        # Gemm takes 2-D operands: fold the leading axes, multiply, unfold with the output width.
        shape = g.op("Shape", x)
        leading = g.op("Slice", shape, g.const([0]), g.const([-1]))
        flat = g.op("Reshape", x, g.op("Concat", g.const([-1]), g.op("Slice", shape, g.const([-1]),
                                                                     g.const([np.iinfo(np.int64).max])), axis=0))
        out = g.op("Gemm", flat, g.weight(weight), *([g.weight(bias)] if bias else []), transB=1)
        # The output width itself, not -1: an expert may receive no token (0 rows).
        return g.op("Reshape", out, g.op("Concat", leading, g.const([g.weight_shapes[weight][0]]), axis=0))

    def norm(self, x: str, plan: NormPlan) -> str:
        g = self.g
        weight = g.weight(plan.weight)
        if plan.offset:
            weight = g.op("Add", weight, g.f32(plan.offset))  # folded by onnxruntime at load
        if plan.kind == "layernorm":
            inputs = [x, weight] + ([g.weight(plan.bias)] if plan.bias else [])
            return g.op("LayerNormalization", *inputs, axis=-1, epsilon=float(plan.eps))
        # RMSNorm: x / sqrt(mean(x^2) + eps) * w, in float32 as transformers computes it.
        mean = g.op("ReduceMean", g.op("Mul", x, x), axes=[-1], keepdims=1)
        inverse = g.op("Reciprocal", g.op("Sqrt", g.op("Add", mean, g.f32(plan.eps))))
        return g.op("Mul", weight, g.op("Mul", x, inverse))

    def split_heads(self, x: str, heads: int, head_dim: int) -> str:
        g = self.g
        return g.op("Transpose", g.op("Reshape", x, g.const([0, 0, heads, head_dim])), perm=[0, 2, 1, 3])

    def merge_heads(self, x: str) -> str:
        g = self.g
        return g.op("Reshape", g.op("Transpose", x, perm=[0, 2, 1, 3]), g.const([0, 0, -1]))

    def rope_tables(self, positions: str, plan: RopePlan) -> tuple[str, str]:
        g = self.g
        inv_freq = g.f32(plan.inv_freq)
        if plan.long_inv_freq is not None:
            # LongRoPE: the long factors once the largest position + 1 exceeds the original context.
            largest = g.op("ReduceMax", positions, keepdims=0)
            long = g.op("Greater", g.op("Add", largest, g.const(1)), g.const(plan.long_after))
            inv_freq = g.op("Where", long, g.f32(plan.long_inv_freq), inv_freq)
        angles = g.op("Mul", g.op("Unsqueeze", g.op("Cast", positions, to=onnx_code(_F32)), g.const([2])), inv_freq)
        emb = g.op("Concat", angles, angles, axis=-1)  # [B, S, rotary_dim]
        cos, sin = g.op("Cos", emb), g.op("Sin", emb)
        if plan.attention_factor != 1.0:
            cos, sin = self.scale(cos, plan.attention_factor), self.scale(sin, plan.attention_factor)
        return g.op("Unsqueeze", cos, g.const([1])), g.op("Unsqueeze", sin, g.const([1]))

    def rotate(self, x: str, cos: str, sin: str, rotary_dim: int) -> str:
        g = self.g
        half = rotary_dim // 2
        axis = g.const([3])
        end = g.const([np.iinfo(np.int64).max])
        x_rot = g.op("Slice", x, g.const([0]), g.const([rotary_dim]), axis)
        x1 = g.op("Slice", x_rot, g.const([0]), g.const([half]), axis)
        x2 = g.op("Slice", x_rot, g.const([half]), g.const([rotary_dim]), axis)
        rotated = g.op("Concat", g.op("Neg", x2), x1, axis=-1)
        out = g.op("Add", g.op("Mul", x_rot, cos), g.op("Mul", rotated, sin))
        rest = g.op("Slice", x, g.const([rotary_dim]), end, axis)  # empty without partial rotary
        return g.op("Concat", out, rest, axis=-1)

    def extend_cache(self, past: str | None, new: str) -> str:
        return new if past is None else self.g.op("Concat", past, new, axis=2)

    def _repeat(self, x: str, groups: int) -> str:
        """[B, KV, T, D] -> [B, KV*groups, T, D], consecutive query heads sharing one kv head."""
        if groups == 1:
            return x
        g = self.g
        shape = g.op("Shape", x)
        batch, kv, rest = (g.op("Slice", shape, g.const([a]), g.const([b])) for a, b in ((0, 1), (1, 2), (2, 4)))
        expanded = g.op("Expand", g.op("Unsqueeze", x, g.const([2])),
                        g.op("Concat", batch, kv, g.const([groups]), rest, axis=0))
        return g.op("Reshape", expanded, g.op("Concat", batch, g.op("Mul", kv, g.const([groups])), rest, axis=0))

    def scores(self, q: str, k: str, groups: int) -> str:
        g = self.g
        return g.op("MatMul", q, g.op("Transpose", self._repeat(k, groups), perm=[0, 1, 3, 2]))

    def attention_bias(self, attention_mask: str, new: str, causal: bool, window: int | None) -> str:
        g = self.g
        allowed = g.op("Cast", g.op("Unsqueeze", attention_mask, g.const([1, 2])), to=g.onnx.TensorProto.BOOL)
        if causal:
            total, seq = self._scalar_dim(attention_mask, 1), self._scalar_dim(new, 1)
            q_idx = g.op("Unsqueeze", g.op("Range", g.op("Sub", total, seq), total, g.const(1)), g.const([1]))
            k_idx = g.op("Unsqueeze", g.op("Range", g.const(0), total, g.const(1)), g.const([0]))
            visible = g.op("GreaterOrEqual", q_idx, k_idx)  # [S, P+S]
            if window is not None:
                # transformers: a key stays visible while q - k < window.
                visible = g.op("And", visible, g.op("Less", g.op("Sub", q_idx, k_idx), g.const(window)))
            allowed = g.op("And", allowed, visible)  # [B, 1, S, P+S]
        return g.op("Where", allowed, g.f32(0.0), g.f32(_FLOAT_MIN))

    def softmax(self, scores: str) -> str:
        return self.g.op("Softmax", scores, axis=-1)

    def sigmoid(self, x: str) -> str:
        return self.g.op("Sigmoid", x)

    def route(self, logits: str, top_k: int, normalize: bool) -> str:
        g = self.g
        probs = g.op("Softmax", logits, axis=-1)
        # TopK returns equal values lower index first, as torch.topk does.
        top, index = g.op("TopK", probs, g.const([top_k]), axis=-1, largest=1, sorted=1, outputs=2)
        if normalize:
            top = g.op("Div", top, g.op("ReduceSum", top, g.const([-1]), keepdims=1))
        return g.op("ScatterElements", self.zeros_like(probs), index, top, axis=-1)

    def zeros_like(self, x: str) -> str:
        return self.g.op("ConstantOfShape", self.g.op("Shape", x), value=self._zero)

    def add_routed(self, out: str, x: str, weights: str, expert: int, run: Callable[[str], str]) -> str:
        g = self.g
        shape = g.op("Shape", x)
        hidden = g.op("Slice", shape, g.const([-1]), g.const([np.iinfo(np.int64).max]))
        rows_of = g.op("Concat", g.const([-1]), hidden, axis=0)
        weight = g.op("Reshape", g.op("Gather", weights, g.const(expert), axis=-1), g.const([-1]))  # [B*S]
        tokens = g.op("Transpose", g.op("NonZero", weight), perm=[1, 0])  # [n, 1], ascending
        rows = g.op("GatherND", g.op("Reshape", x, rows_of), tokens)
        y = g.op("Mul", run(rows), g.op("Unsqueeze", g.op("GatherND", weight, tokens), g.const([1])))
        # ScatterND's add reduction accumulates like index_add_: each token appears once per expert.
        return g.op("Reshape", g.op("ScatterND", g.op("Reshape", out, rows_of), tokens, y, reduction="add"), shape)

    def context(self, probs: str, v: str, groups: int) -> str:
        return self.g.op("MatMul", probs, self._repeat(v, groups))

    def first_token(self, x: str) -> str:
        return self.g.op("Gather", x, self.g.const(0), axis=1)
