"""Generate random Hugging Face checkpoints of realistic shapes without torch, for benchmarks.

    python benchmarks/make_checkpoint.py llama-500m OUT_DIR [--dtype bfloat16] [--shard-size 1GB]

Weights are random (normal × 0.02; norm weights 1 + normal × 0.02, as trained norms sit near 1, so
every layer's contribution is of a realistic size and a fault in one shows) and written with
llmstd's streaming safetensors writer, in the
names, layout and config.json transformers would write, one tensor in memory at a time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from llmstd import dtypes, vocab
from llmstd.checkpoint import Checkpoint
from llmstd.config import ADDED_IN_1_2, ADDED_IN_1_3, CanonicalConfig
from llmstd.conversion import parse_size
from llmstd.formats import WriteOptions, hf
from llmstd.tensors import LazyTensor

LLAMA = dict(
    architecture="llama", head="causal_lm", causal=True, norm_kind="rmsnorm", norm_eps=1e-5, norm_position="pre", norm_bias=False,
    final_norm=True, embedding_norm=False, mlp_norm=True, activation="silu", gated_mlp=True, positional="rope",
    rope_theta=10000.0, rope_scaling=None, attn_qkv_bias=False, attn_out_bias=False, mlp_bias=False,
    lm_head_bias=False, tie_word_embeddings=False, parallel_residual=False, type_vocab_size=0, pooler=False,
    sliding_window=None, bos_token_id=1, eos_token_id=2, pad_token_id=None, max_positions=2048,
)
GPT2 = dict(
    architecture="gpt2", head="causal_lm", causal=True, norm_kind="layernorm", norm_eps=1e-5, norm_position="pre",
    norm_bias=True, final_norm=True, embedding_norm=False, mlp_norm=True, activation="gelu_tanh", gated_mlp=False,
    positional="learned", rope_theta=None, rotary_dim=None, rope_scaling=None, attn_qkv_bias=True,
    attn_out_bias=True, mlp_bias=True, lm_head_bias=False, tie_word_embeddings=True, parallel_residual=False,
    type_vocab_size=0, pooler=False, sliding_window=None, bos_token_id=50256, eos_token_id=50256, pad_token_id=None,
)
# Mixtral's layout: every layer a top-2 mixture of 8 SwiGLU experts.
MIXTRAL = dict(LLAMA, architecture="mixtral", rope_theta=1000000.0, num_experts=8, experts_per_token=2,
               moe_normalize_weights=True, shared_expert_intermediate_size=0, shared_expert_gate=False)
SHAPES = {
    # ~0.5B parameters: Llama layout at d_model 1536.
    "llama-500m": dict(LLAMA, vocab_size=32000, hidden_size=1536, num_layers=16, num_heads=16, num_kv_heads=4,
                       head_dim=96, rotary_dim=96, intermediate_size=4096),
    # TinyLlama-1.1B shape.
    # Llama-2-7B's shape: 6.7B parameters, 13.5 GB in bfloat16.
    "llama-7b": dict(LLAMA, vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32,
                     head_dim=128, rotary_dim=128, intermediate_size=11008),
    "llama-1.1b": dict(LLAMA, vocab_size=32000, hidden_size=2048, num_layers=22, num_heads=32, num_kv_heads=4,
                       head_dim=64, rotary_dim=64, intermediate_size=5632),
    "gpt2-medium": dict(GPT2, vocab_size=50257, hidden_size=1024, num_layers=24, num_heads=16, num_kv_heads=16,
                        head_dim=64, intermediate_size=4096, max_positions=1024),
    # Mixtral-shaped, 2.3 GB in bfloat16: 8 experts per layer, each layer's packed gate_up_proj 117 MB.
    "mixtral-2.3b": dict(MIXTRAL, vocab_size=32000, hidden_size=1024, num_layers=12, num_heads=16, num_kv_heads=4,
                         head_dim=64, rotary_dim=64, intermediate_size=3584, moe_intermediate_size=3584,
                         moe_layers=list(range(12))),
    "mixtral-tiny": dict(MIXTRAL, vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                         head_dim=16, rotary_dim=16, intermediate_size=96, moe_intermediate_size=96, moe_layers=[0, 1]),
    "llama-tiny": dict(LLAMA, vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                       head_dim=16, rotary_dim=16, intermediate_size=128),
}


class RandomTensor(LazyTensor):
    """Random normal values generated on load, seeded per tensor so files are reproducible; ``centre``
    is added (1 for norm weights)."""

    def __init__(self, shape: tuple[int, ...], dtype: str, seed: int, centre: float = 0.0) -> None:
        self.shape, self.dtype, self.seed, self.centre = shape, dtypes.dtype(dtype), seed, centre

    def load(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return (rng.standard_normal(self.shape, dtype=np.float32) * 0.02 + self.centre).astype(self.dtype.numpy)


def _centre(name: str) -> float:
    pattern = vocab.pattern_of(name)
    return 1.0 if pattern is not None and vocab.BY_PATTERN[pattern].role == "norm" else 0.0


def make(shape: str, out: Path, dtype: str = "bfloat16", shard_size: str | None = None) -> Path:
    config = CanonicalConfig(dtype=dtype, **{**ADDED_IN_1_2, **ADDED_IN_1_3, **SHAPES[shape]})
    tensors = {name: RandomTensor(s, dtype, seed, _centre(name))
               for seed, (name, s) in enumerate(vocab.expected_tensors(config).items())}
    ckpt = Checkpoint(path=out, format="canonical", container="generated", dialect="canonical", config=config,
                      tensors=tensors, files=[])
    out.mkdir(parents=True, exist_ok=True)
    hf.write(ckpt, out, WriteOptions(shard_size=parse_size(shard_size)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("out", type=Path)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--shard-size", default=None)
    args = parser.parse_args()
    make(args.shape, args.out, args.dtype, args.shard_size)
    total = sum(f.stat().st_size for f in args.out.iterdir())
    print(json.dumps({"shape": args.shape, "out": str(args.out), "bytes": total}))


if __name__ == "__main__":
    main()
