"""The model primitives (:class:`~llmstd.model.ops.Ops`) in eager PyTorch, with transformers' numerics.

Each method is the operation transformers' eager PyTorch code performs at that step -- RMSNorm
statistics in float32, the weight applied before (Llama) or after (Gemma) casting back, softmax in
float32, rotary tables from the same float32 formulas (:func:`llmstd.rope.frequencies` evaluated with
torch) -- so that in float32 llmstd's runtime reproduces transformers' logits to the last bit on the
architectures tested. torch is imported by the caller (:mod:`llmstd.runtimes.torch_model`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from llmstd import rope
from llmstd.model.ops import EagerOps
from llmstd.model.plan import Linear, NormPlan, RopePlan


class TorchMath(rope.ArrayMath):
    """:class:`llmstd.rope.ArrayMath` over torch (float32 on the CPU, as transformers builds its tables)."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch

    def arange(self, start: int, stop: int, step: int) -> Any:
        return self.torch.arange(start, stop, step, dtype=self.torch.int64).float()

    def array(self, values: Any) -> Any:
        return self.torch.tensor(values, dtype=self.torch.float32)

    def where(self, condition: Any, a: Any, b: Any) -> Any:
        return self.torch.where(condition, a, b)

    def clamp(self, x: Any, low: float, high: float) -> Any:
        return self.torch.clamp(x, low, high)

    def logical_and(self, a: Any, b: Any) -> Any:
        return self.torch.logical_and(a, b)

    def logical_not(self, a: Any) -> Any:
        return self.torch.logical_not(a)


class TorchOps(EagerOps):
    """Primitives over torch tensors on one device in one compute dtype; ``weights`` are already
    there (tied names included)."""

    def __init__(self, torch: Any, weights: Mapping[str, Any], dtype: Any, device: str, max_positions: int) -> None:
        self.torch, self.F = torch, torch.nn.functional
        self.weights, self.dtype, self.device = weights, dtype, device
        self.max_positions = max_positions
        self.math = TorchMath(torch)

    def weight(self, name: str) -> Any:
        return self.weights[name]

    def embedding(self, table: str, ids: Any) -> Any:
        return self.F.embedding(ids, self.weights[table])

    def positions(self, attention_mask: Any, new: Any, causal: bool) -> Any:
        torch = self.torch
        batch, seq = new.shape
        if not causal:
            return torch.arange(seq, device=self.device)[None, :].expand(batch, seq)
        positions = attention_mask.long().cumsum(-1) - 1
        positions = positions.masked_fill(attention_mask == 0, 1)
        return positions[:, -seq:]

    def scale_rounded(self, x: Any, factor: float) -> Any:
        return x * self.torch.tensor(factor, dtype=x.dtype, device=x.device)

    def tanh(self, x: Any) -> Any:
        return self.torch.tanh(x)

    def activation(self, x: Any, kind: str) -> Any:
        torch, F = self.torch, self.F
        if kind == "gelu":
            return F.gelu(x)
        if kind == "gelu_tanh":
            # transformers' NewGELUActivation (GPT-2's gelu_new), term for term.
            return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
        if kind == "silu":
            return F.silu(x)
        if kind == "relu":
            return F.relu(x)
        if kind == "quick_gelu":
            return x * torch.sigmoid(1.702 * x)
        raise AssertionError(f"activation {kind!r} passed the supported-feature check")

    def linear(self, x: Any, layer: Linear) -> Any:
        weight, bias = layer
        return self.F.linear(x, self.weights[weight], self.weights[bias] if bias else None)

    def norm(self, x: Any, plan: NormPlan) -> Any:
        torch = self.torch
        weight = self.weights[plan.weight]
        if plan.kind == "layernorm":
            if plan.offset:
                weight = weight + plan.offset
            bias = self.weights[plan.bias] if plan.bias else None
            return self.F.layer_norm(x, (x.shape[-1],), weight, bias, plan.eps)
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + plan.eps)
        if plan.offset:  # Gemma: (offset + w) applied in float32, then cast back
            return (h * (plan.offset + weight.float())).type_as(x)
        return weight * h.to(x.dtype)  # Llama: cast back, then the weight in the input dtype

    def split_heads(self, x: Any, heads: int, head_dim: int) -> Any:
        batch, seq, _ = x.shape
        return x.view(batch, seq, heads, head_dim).transpose(1, 2)

    def merge_heads(self, x: Any) -> Any:
        batch, heads, seq, head_dim = x.shape
        return x.transpose(1, 2).reshape(batch, seq, heads * head_dim)

    def rope_tables(self, positions: Any, plan: RopePlan) -> tuple[Any, Any]:
        torch = self.torch
        tables = rope.frequencies(plan.theta, plan.rotary_dim, plan.scaling, self.max_positions, self.math)
        inv_freq = tables.inv_freq
        if tables.long_inv_freq is not None and int(positions.max()) + 1 > tables.long_after:
            inv_freq = tables.long_inv_freq
        batch = positions.shape[0]
        expanded = inv_freq[None, :, None].float().expand(batch, -1, 1).to(self.device)
        freqs = (expanded @ positions[:, None, :].float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * tables.attention_factor, emb.sin() * tables.attention_factor
        return cos.to(self.dtype)[:, None], sin.to(self.dtype)[:, None]

    def rotate(self, x: Any, cos: Any, sin: Any, rotary_dim: int) -> Any:
        torch = self.torch
        rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
        half = rotary_dim // 2
        rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
        out = (rot * cos) + (rotated * sin)
        return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out

    def extend_cache(self, past: Any | None, new: Any) -> Any:
        return new if past is None else self.torch.cat((past, new), dim=2)

    def _repeat(self, x: Any, groups: int) -> Any:
        return x if groups == 1 else x.repeat_interleave(groups, dim=1)

    def scores(self, q: Any, k: Any, groups: int) -> Any:
        return self.torch.matmul(q, self._repeat(k, groups).transpose(2, 3))

    def attention_bias(self, attention_mask: Any, new: Any, causal: bool, window: int | None) -> Any:
        torch = self.torch
        total, seq = attention_mask.shape[-1], new.shape[-1]
        allowed = attention_mask[:, None, None, :].bool().expand(-1, 1, seq, total)
        if causal:
            q_idx = torch.arange(total - seq, total, device=self.device)[:, None]
            k_idx = torch.arange(total, device=self.device)[None, :]
            allowed = allowed & (k_idx <= q_idx)
            if window is not None:
                allowed = allowed & (k_idx > q_idx - window)
        zero = torch.zeros((), dtype=self.dtype, device=self.device)
        lowest = torch.tensor(torch.finfo(self.dtype).min, dtype=self.dtype, device=self.device)
        return torch.where(allowed, zero, lowest)

    def softmax(self, scores: Any) -> Any:
        return self.torch.softmax(scores, dim=-1, dtype=self.torch.float32).to(scores.dtype)

    def sigmoid(self, x: Any) -> Any:
        return self.torch.sigmoid(x)

    def route(self, logits: Any, top_k: int, normalize: bool) -> Any:
        torch = self.torch
        probs = torch.softmax(logits.float(), dim=-1)
        top, index = torch.topk(probs, top_k, dim=-1)
        if normalize:
            top = top / top.sum(dim=-1, keepdim=True)
        return torch.zeros_like(probs).scatter(-1, index, top)

    def zeros_like(self, x: Any) -> Any:
        return self.torch.zeros_like(x)

    def add_routed(self, out: Any, x: Any, weights: Any, expert: int, run: Callable[[Any], Any]) -> Any:
        hidden = x.shape[-1]
        weight = weights[..., expert].reshape(-1)
        tokens = self.torch.nonzero(weight, as_tuple=True)[0]
        if tokens.numel() == 0:
            return out
        y = (run(x.reshape(-1, hidden)[tokens]) * weight[tokens, None]).to(x.dtype)
        return out.reshape(-1, hidden).index_add(0, tokens, y).reshape(out.shape)

    def context(self, probs: Any, v: Any, groups: int) -> Any:
        return self.torch.matmul(probs, self._repeat(v, groups))

    def first_token(self, x: Any) -> Any:
        return x[:, 0]
