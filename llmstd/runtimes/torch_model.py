"""llmstd's own PyTorch implementation of every canonical architecture.

One config-driven transformer covers gpt2, bert (base with pooler, MLM head), llama (GQA, tied or
untied, rope_theta, rope_scaling), mistral (sliding window) and qwen2: everything it does is read
from the :class:`~llmstd.config.CanonicalConfig` (norm kind and position, activation, gated MLP,
positional encoding, biases, tying, heads), and its weights are the canonical tensors, so a new
architecture that fits the canonical config runs without code here.

Why it exists: ``llmstd check`` must run a checkpoint without transformers (absent, or at a version
whose classes changed), and a canonical checkpoint has no third-party runtime at all. Its numerics
follow Hugging Face's eager implementations operation by operation (RMSNorm in float32, softmax in
float32, rotary tables from the same float32 formulas) so that, in float32, it matches transformers'
models to ~1e-6 on logits and on every layer's hidden state; ``tests/test_torch_runtime.py`` holds
it to 1e-5.

Conventions shared with the checker:

- ``outputs``: ``logits`` for ``causal_lm``/``masked_lm`` heads; ``last_hidden_state`` (and
  ``pooler_output`` when the config has a pooler) for ``base`` models — the names transformers and
  llmstd's ONNX graphs use.
- ``hidden_states``: ``num_layers + 1`` arrays, Hugging Face's convention: entry 0 is the embedding
  output (the input of layer 0), entry ``i + 1`` the output of layer ``i``; the last entry has the
  final norm applied when the model has one.
- Positions are ``0 … T-1`` for every row (as transformers does without ``position_ids``), so
  batches must be right-padded; padded positions produce values but are not meaningful.

torch is imported on first use, never at module import.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from llmstd import dtypes, vocab
from llmstd.config import CanonicalConfig
from llmstd.errors import ConfigError, LlmstdError, require
from llmstd.rope import require_rope_type, rope_type
from llmstd.runtimes import canonical_arrays
from llmstd.tensors import LazyTensor

if TYPE_CHECKING:  # pragma: no cover
    import torch

# ------------------------------------------------------------------------------------------------
# canonical names: every one is checked against the vocabulary at import, so a rename there fails
# here at once instead of silently dropping a tensor.


def _canonical(pattern: str) -> str:
    if pattern not in vocab.BY_PATTERN:
        raise AssertionError(f"'{pattern}' is not a canonical tensor name (llmstd/vocab.py)")
    return pattern


EMBED_TOKENS = _canonical("embed.tokens.weight")
EMBED_POSITIONS = _canonical("embed.positions.weight")
EMBED_TOKEN_TYPES = _canonical("embed.token_types.weight")
EMBED_NORM = (_canonical("embed.norm.weight"), _canonical("embed.norm.bias"))
ATTN_NORM = (_canonical("layers.{i}.attn_norm.weight"), _canonical("layers.{i}.attn_norm.bias"))
MLP_NORM = (_canonical("layers.{i}.mlp_norm.weight"), _canonical("layers.{i}.mlp_norm.bias"))
Q = (_canonical("layers.{i}.attn.q.weight"), _canonical("layers.{i}.attn.q.bias"))
K = (_canonical("layers.{i}.attn.k.weight"), _canonical("layers.{i}.attn.k.bias"))
V = (_canonical("layers.{i}.attn.v.weight"), _canonical("layers.{i}.attn.v.bias"))
O = (_canonical("layers.{i}.attn.o.weight"), _canonical("layers.{i}.attn.o.bias"))
GATE = (_canonical("layers.{i}.mlp.gate.weight"), _canonical("layers.{i}.mlp.gate.bias"))
UP = (_canonical("layers.{i}.mlp.up.weight"), _canonical("layers.{i}.mlp.up.bias"))
DOWN = (_canonical("layers.{i}.mlp.down.weight"), _canonical("layers.{i}.mlp.down.bias"))
FINAL_NORM = (_canonical("final_norm.weight"), _canonical("final_norm.bias"))
POOLER = (_canonical("pooler.weight"), _canonical("pooler.bias"))
MLM_TRANSFORM = (_canonical("mlm.transform.weight"), _canonical("mlm.transform.bias"))
MLM_NORM = (_canonical("mlm.norm.weight"), _canonical("mlm.norm.bias"))
LM_HEAD = (_canonical("lm_head.weight"), _canonical("lm_head.bias"))

#: dtypes the runtime computes in; float8 and integer checkpoints are computed in float32.
COMPUTE_DTYPES = ("float32", "float16", "bfloat16", "float64")

#: rope_scaling types implemented (transformers' names); others are refused with a ConfigError.
ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")


def output_names(config: CanonicalConfig) -> list[str]:
    """The outputs a model with this config produces (see the module docstring)."""
    if config.head in ("causal_lm", "masked_lm"):
        return ["logits"]
    return ["last_hidden_state", "pooler_output"] if config.pooler else ["last_hidden_state"]


def check_supported(config: CanonicalConfig) -> None:
    """Raise ConfigError naming what this runtime cannot compute faithfully (never approximate)."""
    if config.positional == "rope":
        kind = require_rope_type(config, ROPE_TYPES, who="llmstd's torch runtime",
                                 hint="run this side with transformers (--runtime-a/-b transformers) instead")
        needed = {"linear": ("factor",), "dynamic": ("factor",), "yarn": ("factor",),
                  "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}
        missing = [k for k in needed.get(kind, ()) if k not in (config.rope_scaling or {})]
        if missing:
            raise ConfigError(f"rope_scaling of type '{kind}' lacks {', '.join(missing)}")
    if config.norm_position == "post" and config.parallel_residual:
        raise ConfigError("parallel residual with post-norm is not a known architecture; refusing to guess its math")


# ------------------------------------------------------------------------------------------------
# results


@dataclass
class RunOutput:
    """What one forward pass produced, as float32 numpy arrays on the host."""

    outputs: dict[str, np.ndarray]
    hidden_states: list[np.ndarray] | None
    device: str
    dtype: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _torch() -> Any:
    return require("torch", "torch")


def device_description(device: str) -> str:
    """'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)': where a torch computation runs, for reports."""
    torch = _torch()
    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(dev)


def resolve_device(device: str) -> str:
    """Validate a --device value against what torch can see."""
    torch = _torch()
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LlmstdError("--device cuda was requested, but torch sees no CUDA device",
                              hint="run on a machine with a GPU and a CUDA build of torch, or use --device cpu")
    elif device != "cpu":
        raise LlmstdError(f"unknown device {device!r}", hint="use cpu or cuda (cuda:N for a specific GPU)")
    return device


def to_torch(array: np.ndarray) -> torch.Tensor:
    """A numpy array (including ml_dtypes bfloat16/float8) as a torch tensor with the same dtype and bytes."""
    torch = _torch()
    array = np.ascontiguousarray(array)
    name = dtypes.from_numpy(array.dtype).name
    # torch.from_numpy does not know ml_dtypes; move the raw bits and reinterpret them.
    if name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    if name.startswith("float8"):
        return torch.from_numpy(array.view(np.uint8).copy()).view(getattr(torch, name))
    return torch.from_numpy(array.copy())  # a copy: memory maps are read-only, torch wants writable


def _host(t: torch.Tensor) -> np.ndarray:
    torch = _torch()
    return t.detach().to(device="cpu", dtype=torch.float32).numpy()


# ------------------------------------------------------------------------------------------------
# the model


class TorchModel:
    """A canonical checkpoint loaded into torch on one device, ready to run.

    ``tensors`` maps canonical names to lazy tensors or numpy arrays (a Checkpoint works); tied
    tensors are looked up through ``vocab.tied_tensors``. ``dtype`` is the compute dtype (default:
    the config's dtype when it is float32/float16/bfloat16, else float32).
    """

    def __init__(self, tensors: Mapping[str, LazyTensor | np.ndarray], config: CanonicalConfig, *,
                 device: str = "cpu", dtype: str | None = None) -> None:
        torch = _torch()
        check_supported(config)
        self.config = config
        self.device = resolve_device(device)
        self.dtype = dtype or (config.dtype if config.dtype in COMPUTE_DTYPES else "float32")
        if self.dtype not in COMPUTE_DTYPES:
            raise LlmstdError(f"cannot compute in {self.dtype!r}", hint=f"choose one of {', '.join(COMPUTE_DTYPES)}")
        self._tdtype = getattr(torch, self.dtype)
        self.weights: dict[str, torch.Tensor] = {
            name: to_torch(array).to(device=self.device, dtype=self._tdtype)
            for name, array in canonical_arrays(tensors, config)
        }
        for tied, target in vocab.tied_tensors(config).items():
            self.weights[tied] = self.weights[target]

    # -- pieces ----------------------------------------------------------------------------------

    def _w(self, pattern: str, layer: int | None = None) -> torch.Tensor | None:
        name = pattern.replace("{i}", str(layer)) if layer is not None else pattern
        return self.weights.get(name)

    def _linear(self, x: torch.Tensor, names: tuple[str, str], layer: int | None = None) -> torch.Tensor:
        torch = _torch()
        weight = self._w(names[0], layer)
        assert weight is not None, names[0]
        return torch.nn.functional.linear(x, weight, self._w(names[1], layer))

    def _norm(self, x: torch.Tensor, names: tuple[str, str], layer: int | None = None) -> torch.Tensor:
        torch = _torch()
        weight, bias = self._w(names[0], layer), self._w(names[1], layer)
        assert weight is not None, names[0]
        c = self.config
        if c.norm_kind == "layernorm":
            return torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, c.norm_eps)
        # RMSNorm as Llama computes it: statistics in float32, the scale applied in the input dtype.
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + c.norm_eps)
        return weight * h.to(x.dtype)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        torch = _torch()
        kind = self.config.activation
        if kind == "gelu":
            return torch.nn.functional.gelu(x)
        if kind == "gelu_tanh":
            # The formula of transformers' NewGELUActivation (GPT-2's gelu_new), term for term.
            return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
        if kind == "silu":
            return torch.nn.functional.silu(x)
        if kind == "relu":
            return torch.nn.functional.relu(x)
        if kind == "quick_gelu":
            return x * torch.sigmoid(1.702 * x)
        raise ConfigError(f"activation {kind!r} is not implemented by llmstd's torch runtime")

    def _inv_freq(self, seq_len: int) -> tuple[torch.Tensor, float]:
        """Rotary inverse frequencies and the cos/sin scale, by transformers' float32 formulas.

        Reproducing the formulas operation by operation matters: at position 127 an inverse
        frequency off by one float32 ulp moves the angle by ~1e-5 rad, visible at 1e-5 tolerance.
        """
        torch = _torch()
        c = self.config
        assert c.rope_theta is not None and c.rotary_dim is not None
        dim, base = c.rotary_dim, float(c.rope_theta)
        scaling = dict(c.rope_scaling or {})
        kind = rope_type(c)
        exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim
        if kind == "dynamic" and seq_len > c.max_positions:
            # NTK-aware base growth, recomputed when the sequence outgrows max_positions.
            factor = scaling["factor"]
            seq = torch.maximum(torch.tensor(seq_len), torch.tensor(c.max_positions))
            grown = base * ((factor * seq / c.max_positions) - (factor - 1)) ** (dim / (dim - 2))
            return 1.0 / (grown ** exponents), 1.0
        inv_freq = 1.0 / (base ** exponents)
        if kind in ("default", "dynamic"):
            return inv_freq, 1.0
        factor = scaling["factor"]
        if kind == "linear":
            return inv_freq / factor, 1.0
        if kind == "llama3":
            low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
            old_context = scaling["original_max_position_embeddings"]
            low_wavelen, high_wavelen = old_context / low, old_context / high
            wavelen = 2 * math.pi / inv_freq
            scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
            smooth = (old_context / wavelen - low) / (high - low)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
            return torch.where(medium, smoothed, scaled), 1.0
        # yarn
        original = scaling.get("original_max_position_embeddings") or c.max_positions
        attention_factor = scaling.get("attention_factor")
        mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")

        def get_mscale(scale: float, m: float = 1) -> float:
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

        if attention_factor is None:
            attention_factor = (float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
                                if mscale and mscale_all_dim else get_mscale(factor))
        beta_fast, beta_slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1

        def correction_dim(rotations: float) -> float:
            return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

        low_d, high_d = correction_dim(beta_fast), correction_dim(beta_slow)
        if scaling.get("truncate", True):
            low_d, high_d = math.floor(low_d), math.ceil(high_d)
        low_d, high_d = max(low_d, 0), min(high_d, dim - 1)
        if low_d == high_d:
            high_d += 0.001  # transformers' guard against a zero-width ramp
        ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low_d) / (high_d - low_d), 0, 1)
        pos_freqs = base ** (torch.arange(0, dim, 2).to(dtype=torch.float) / dim)
        extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
        keep = 1 - ramp
        return interpolation * (1 - keep) + extrapolation * keep, float(attention_factor)

    def _rotary_tables(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch = _torch()
        inv_freq, scale = self._inv_freq(seq_len)
        positions = torch.arange(seq_len, dtype=torch.float32, device=self.device)
        freqs = (inv_freq.to(self.device)[:, None].float() @ positions[None, :]).transpose(0, 1)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * scale).to(self._tdtype), (emb.sin() * scale).to(self._tdtype)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int) -> torch.Tensor:
        torch = _torch()
        # Rotate-half convention (canonical): pairs (j, j + rotary_dim/2) within each head; the
        # dimensions past rotary_dim (partial rotary) pass through unchanged.
        rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
        half = rotary_dim // 2
        rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
        out = rot * cos + rotated * sin
        return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out

    def _attention(self, x: torch.Tensor, layer: int, mask: torch.Tensor,
                   rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        torch = _torch()
        c = self.config
        batch, seq, _ = x.shape
        q = self._linear(x, Q, layer).view(batch, seq, c.num_heads, c.head_dim).transpose(1, 2)
        k = self._linear(x, K, layer).view(batch, seq, c.num_kv_heads, c.head_dim).transpose(1, 2)
        v = self._linear(x, V, layer).view(batch, seq, c.num_kv_heads, c.head_dim).transpose(1, 2)
        if rotary is not None:
            assert c.rotary_dim is not None
            cos, sin = rotary
            q, k = self._rotate(q, cos, sin, c.rotary_dim), self._rotate(k, cos, sin, c.rotary_dim)
        groups = c.num_heads // c.num_kv_heads
        if groups > 1:  # grouped-query attention: each kv head serves `groups` query heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * (c.head_dim ** -0.5) + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(batch, seq, c.num_heads * c.head_dim)
        return self._linear(out, O, layer)

    def _mlp(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        if self.config.gated_mlp:
            hidden = self._act(self._linear(x, GATE, layer)) * self._linear(x, UP, layer)
        else:
            hidden = self._act(self._linear(x, UP, layer))
        return self._linear(hidden, DOWN, layer)

    def _layer(self, x: torch.Tensor, layer: int, mask: torch.Tensor,
               rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        c = self.config
        if c.norm_position == "post":  # BERT: norm(x + sublayer(x))
            x = self._norm(x + self._attention(x, layer, mask, rotary), ATTN_NORM, layer)
            mlp_out = x + self._mlp(x, layer)
            return self._norm(mlp_out, MLP_NORM, layer) if c.mlp_norm else mlp_out
        h = self._norm(x, ATTN_NORM, layer)
        attn = self._attention(h, layer, mask, rotary)
        if c.parallel_residual:  # GPT-J/NeoX: attention and MLP both read the layer input
            m_in = self._norm(x, MLP_NORM, layer) if c.mlp_norm else h
            return x + attn + self._mlp(m_in, layer)
        x = x + attn
        m_in = self._norm(x, MLP_NORM, layer) if c.mlp_norm else x
        return x + self._mlp(m_in, layer)

    def _mask(self, attention_mask: torch.Tensor, seq: int) -> torch.Tensor:
        """Additive mask [batch, 1, q, k]: 0 where allowed, the dtype's minimum elsewhere."""
        torch = _torch()
        allowed = attention_mask[:, None, None, :].bool().expand(-1, 1, seq, seq)
        q_idx = torch.arange(seq, device=self.device)[:, None]
        k_idx = torch.arange(seq, device=self.device)[None, :]
        if self.config.causal:
            allowed = allowed & (k_idx <= q_idx)
            if self.config.sliding_window is not None:  # Mistral: the last `window` keys only
                allowed = allowed & (k_idx > q_idx - self.config.sliding_window)
        zero = torch.zeros((), dtype=self._tdtype, device=self.device)
        minimum = torch.tensor(torch.finfo(self._tdtype).min, dtype=self._tdtype, device=self.device)
        return torch.where(allowed, zero, minimum)

    # -- forward ---------------------------------------------------------------------------------

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                 token_type_ids: np.ndarray | None = None, *, output_hidden_states: bool = True) -> RunOutput:
        torch = _torch()
        started = time.perf_counter()
        c = self.config
        ids = torch.as_tensor(np.asarray(input_ids, dtype=np.int64), device=self.device)
        if ids.ndim != 2:
            raise LlmstdError(f"input_ids must be [batch, seq], got shape {list(ids.shape)}")
        batch, seq = ids.shape
        if int(ids.min()) < 0 or int(ids.max()) >= c.vocab_size:
            raise LlmstdError(f"token ids must lie in [0, {c.vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")
        if c.positional == "learned" and seq > c.max_positions:
            raise LlmstdError(f"{seq} tokens exceed the {c.max_positions} learned positions of this model")
        mask_np = np.ones((batch, seq), dtype=np.int64) if attention_mask is None else np.asarray(attention_mask)
        mask = torch.as_tensor(mask_np.astype(np.int64), device=self.device)
        with torch.no_grad():
            weight = self.weights[EMBED_TOKENS]
            x = torch.nn.functional.embedding(ids, weight)
            if c.type_vocab_size > 0:
                types = (torch.zeros_like(ids) if token_type_ids is None
                         else torch.as_tensor(np.asarray(token_type_ids, dtype=np.int64), device=self.device))
                x = x + torch.nn.functional.embedding(types, self.weights[EMBED_TOKEN_TYPES])
            if c.positional == "learned":
                positions = torch.arange(seq, device=self.device)
                x = x + torch.nn.functional.embedding(positions, self.weights[EMBED_POSITIONS])[None]
            if c.embedding_norm:
                x = self._norm(x, EMBED_NORM)
            rotary = self._rotary_tables(seq) if c.positional == "rope" else None
            additive = self._mask(mask, seq)
            hidden = [x]
            for layer in range(c.num_layers):
                x = self._layer(x, layer, additive, rotary)
                hidden.append(x)
            if c.final_norm:
                x = self._norm(x, FINAL_NORM)
                hidden[-1] = x  # Hugging Face's convention: the last hidden state is the normed one
            outputs = self._head(x)
            result = {name: _host(t) for name, t in outputs.items()}
            states = [_host(h) for h in hidden] if output_hidden_states else None
        return RunOutput(result, states, device_description(self.device), self.dtype,
                         seconds=time.perf_counter() - started)

    def _head(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        torch = _torch()
        c = self.config
        if c.head == "causal_lm":
            return {"logits": self._linear(x, LM_HEAD)}
        if c.head == "masked_lm":
            h = self._norm(self._act(self._linear(x, MLM_TRANSFORM)), MLM_NORM)
            return {"logits": self._linear(h, LM_HEAD)}
        out = {"last_hidden_state": x}
        if c.pooler:
            out["pooler_output"] = torch.tanh(self._linear(x[:, 0], POOLER))
        return out


def run(tensors: Mapping[str, LazyTensor | np.ndarray], config: CanonicalConfig, input_ids: np.ndarray,
        attention_mask: np.ndarray | None = None, token_type_ids: np.ndarray | None = None, *,
        device: str = "cpu", dtype: str | None = None, output_hidden_states: bool = True) -> RunOutput:
    """Load canonical tensors into torch and run one forward pass (see :class:`TorchModel`)."""
    started = time.perf_counter()
    model = TorchModel(tensors, config, device=device, dtype=dtype)
    out = model(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states)
    out.seconds = time.perf_counter() - started
    return out
