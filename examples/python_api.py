"""The Python API end to end: inspect, convert to canonical, load lazily, convert back.

    python examples/python_api.py [SOURCE] [WORKDIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import llmstd

source = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "tiny-gpt2")
workdir = Path(sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="llmstd-example-"))

info = llmstd.inspect(source)
print(f"{source}: {info.architecture}, {info.parameters:,} parameters, {info.container}")

report = llmstd.convert(source, workdir / "canonical", to="canonical")
print(f"canonical: {report.tensors} tensors, files {report.files}")

ckpt = llmstd.load(workdir / "canonical")  # nothing is read until a tensor is loaded
q = ckpt["layers.0.attn.q.weight"].load()  # canonical layout: [out, in], unfused
print(f"layers.0.attn.q.weight {q.dtype} {q.shape}; head_dim={ckpt.config.head_dim}, "
      f"tied={ckpt.config.tie_word_embeddings}")

back = llmstd.convert(workdir / "canonical", workdir / "hf-bf16", to="hf", dtype="bfloat16")
print(f"hf: {back.files} in {back.dtype}")
