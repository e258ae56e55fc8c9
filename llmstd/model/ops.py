"""The tensor primitives the forward pass is written against; each runtime implements them once.

Values are whatever the runtime uses (a torch tensor, a TF tensor, the name of an ONNX value). Every
primitive works on the *compute dtype* of the runtime unless it says otherwise, and follows
transformers' eager PyTorch arithmetic (which operation runs in float32, where results are cast
back), so that llmstd's runtimes reproduce the reference, not merely approximate it.

Shapes: ``B`` batch, ``S`` new positions, ``P`` cached positions (0 without a cache), ``H`` heads,
``D`` head width. Hidden states are ``[B, S, hidden]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from llmstd.model.plan import Linear, NormPlan, RopePlan

Value = Any


class Ops(ABC):
    """One runtime's implementation of the primitives; see each method for its contract."""

    # -- reading weights and inputs -----------------------------------------------------------

    @abstractmethod
    def weight(self, name: str) -> Value:
        """The canonical tensor ``name`` in the compute dtype."""

    @abstractmethod
    def embedding(self, table: str, ids: Value) -> Value:
        """Rows ``ids`` ([B, S] integers) of canonical table ``table``: [B, S, width]."""

    @abstractmethod
    def positions(self, attention_mask: Value, new: Value, causal: bool) -> Value:
        """Position ids [B, S] of the ``new`` tokens (``new`` is input_ids) when none are given: for
        causal models ``cumsum(attention_mask) - 1`` over all P + S positions, the last S taken,
        padding set to 1 (transformers' generate); for bidirectional models 0 .. S-1."""

    # -- arithmetic ---------------------------------------------------------------------------

    @abstractmethod
    def add(self, a: Value, b: Value) -> Value: ...

    @abstractmethod
    def mul(self, a: Value, b: Value) -> Value: ...

    @abstractmethod
    def scale(self, x: Value, factor: float) -> Value:
        """``x * factor`` with ``factor`` a Python number (as torch multiplies by a Python float)."""

    @abstractmethod
    def scale_rounded(self, x: Value, factor: float) -> Value:
        """``x * factor`` with ``factor`` first rounded to x's dtype (transformers' embedding scale)."""

    @abstractmethod
    def divide(self, x: Value, divisor: float) -> Value:
        """``x / divisor``, a Python number."""

    @abstractmethod
    def tanh(self, x: Value) -> Value: ...

    @abstractmethod
    def activation(self, x: Value, kind: str) -> Value:
        """gelu (erf), gelu_tanh, silu, relu or quick_gelu, as transformers' ACT2FN computes them."""

    @abstractmethod
    def linear(self, x: Value, layer: Linear) -> Value:
        """``x @ W.T (+ b)`` for the canonical ``[out, in]`` weight (and bias) named by ``layer``."""

    @abstractmethod
    def norm(self, x: Value, plan: NormPlan) -> Value:
        """LayerNorm or RMSNorm over the last axis with the plan's epsilon, weight offset and bias."""

    @abstractmethod
    def sigmoid(self, x: Value) -> Value: ...

    # -- mixture of experts -------------------------------------------------------------------

    @abstractmethod
    def route(self, logits: Value, top_k: int, normalize: bool) -> Value:
        """Routing weights [B, S, E] in float32 from router logits [B, S, E]: softmax in float32, the
        ``top_k`` largest probabilities kept (of equal ones the lower expert index, as torch.topk
        and ONNX TopK choose), divided by their sum when ``normalize``, every other expert 0."""

    @abstractmethod
    def zeros_like(self, x: Value) -> Value: ...

    @abstractmethod
    def add_routed(self, out: Value, x: Value, weights: Value, expert: int, run: Callable[[Value], Value]) -> Value:
        """``out`` [B, S, hidden] plus, at each token whose routing weight for ``expert`` is non-zero,
        ``run(rows)`` (the expert on those tokens' rows of ``x``, ``[tokens, hidden]``) times that
        weight, multiplied in float32 and cast back to the compute dtype (transformers' Mixtral).
        Only the routed tokens are computed: the expert's cost follows its share of the tokens."""

    # -- attention ----------------------------------------------------------------------------

    @abstractmethod
    def split_heads(self, x: Value, heads: int, head_dim: int) -> Value:
        """[B, S, heads*head_dim] -> [B, heads, S, head_dim]."""

    @abstractmethod
    def merge_heads(self, x: Value) -> Value:
        """[B, H, S, D] -> [B, S, H*D]."""

    @abstractmethod
    def rope_tables(self, positions: Value, plan: RopePlan) -> tuple[Value, Value]:
        """cos and sin [B, 1, S, rotary_dim] of ``positions`` ([B, S]): the angles
        ``position * inv_freq`` (twice, rotate-half) in float32, times the attention factor, cast to
        the compute dtype. LongRoPE plans use ``long_inv_freq`` once the sequence (cached positions
        included) is longer than ``long_after``."""

    @abstractmethod
    def rotate(self, x: Value, cos: Value, sin: Value, rotary_dim: int) -> Value:
        """``x * cos + rotate_half(x) * sin`` on the first ``rotary_dim`` features of each head of
        x [B, H, S, D] (pairs (j, j + rotary_dim/2)); the other features pass unchanged."""

    @abstractmethod
    def extend_cache(self, past: Value | None, new: Value) -> Value:
        """Keys or values of the cached positions followed by the new ones, on the sequence axis."""

    @abstractmethod
    def scores(self, q: Value, k: Value, groups: int) -> Value:
        """``q @ k.T``: [B, H, S, P+S], each key/value head serving ``groups`` consecutive query heads."""

    @abstractmethod
    def attention_bias(self, attention_mask: Value, new: Value, causal: bool, window: int | None) -> Value:
        """Additive bias [B, 1, S, P+S]: 0 where a query may see a key, the dtype's lowest value
        elsewhere. A key is visible when its mask is 1, and for causal models when it is not after the
        query and (with a window) fewer than ``window`` positions before it. ``new`` is input_ids."""

    @abstractmethod
    def softmax(self, scores: Value) -> Value:
        """Softmax over keys, computed in float32 and cast back to the compute dtype."""

    @abstractmethod
    def context(self, probs: Value, v: Value, groups: int) -> Value:
        """``probs @ v``: [B, H, S, D], each value head serving ``groups`` query heads."""

    # -- head ---------------------------------------------------------------------------------

    @abstractmethod
    def first_token(self, x: Value) -> Value:
        """[B, S, hidden] -> [B, hidden], the first position (BERT's pooler input)."""


class EagerOps(Ops):
    """Arithmetic shared by the eager runtimes, whose tensors overload Python's operators."""

    def add(self, a: Value, b: Value) -> Value:
        return a + b

    def mul(self, a: Value, b: Value) -> Value:
        return a * b

    def scale(self, x: Value, factor: float) -> Value:
        return x * factor

    def divide(self, x: Value, divisor: float) -> Value:
        return x / divisor
