"""A chain read in and then written back out cancels against its own inverse: GPT-2's transposed and
fused c_attn read from PyTorch and written to PyTorch or TensorFlow (both store [in, 3 * out]) stays
the checkpoint's own byte range, copied without loading, and still equals what the full path computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import llmstd
from llmstd import dtypes, maps
from llmstd.conversion import cast_checkpoint
from llmstd.formats.hf import resolve_head
from llmstd.mapping import from_canonical
from llmstd.tensors import CastTensor, FileSliceTensor, LazyTensor, is_plain_slice


def _write_side(ckpt: llmstd.Checkpoint, dialect: str, tensors: dict[str, LazyTensor] | None = None,
                ) -> dict[str, LazyTensor]:
    nmap = maps.load(ckpt.architecture)
    head = resolve_head(nmap, dialect, ckpt.config.head)
    return from_canonical(nmap, dialect, head.prefix, tensors or ckpt.tensors, ckpt.config)


def _full_path(ckpt: llmstd.Checkpoint, dialect: str) -> dict[str, np.ndarray]:
    # Wrapping every canonical tensor hides where it came from, so nothing cancels.
    opaque = {n: CastTensor(t, t.dtype, n, force=False) for n, t in ckpt.tensors.items()}
    return {n: t.load() for n, t in _write_side(ckpt, dialect, opaque).items()}


def test_hf_to_hf_is_the_source_itself(tiny_gpt2_dir: Path) -> None:
    ckpt = llmstd.load(tiny_gpt2_dir)
    written = _write_side(ckpt, "hf")
    fused = [n for n in written if n.endswith("c_attn.weight")]
    assert fused, "the example has fused attention weights"
    for name, tensor in written.items():
        assert tensor is ckpt.source_names[name], name  # nothing computed, not even a reshape
        assert is_plain_slice(tensor)


def test_hf_to_tf_keeps_the_bytes_and_matches_the_full_path(tiny_gpt2_dir: Path) -> None:
    ckpt = llmstd.load(tiny_gpt2_dir)
    written = _write_side(ckpt, "hf_tf")
    full = _full_path(ckpt, "hf_tf")
    assert set(written) == set(full)
    plain = [n for n, t in written.items() if isinstance(t, FileSliceTensor)]
    assert any("c_attn/weight" in n for n in plain) and any("c_fc/weight" in n for n in plain)
    for name, tensor in written.items():
        got = tensor.load()
        assert got.dtype == full[name].dtype and got.shape == full[name].shape, name
        assert got.tobytes() == full[name].tobytes(), name


def test_a_cast_in_between_is_never_skipped(tiny_gpt2_dir: Path) -> None:
    ckpt = llmstd.load(tiny_gpt2_dir)
    cast = cast_checkpoint(ckpt, "float16", force=True)
    written = _write_side(cast, "hf")
    assert all(t.dtype == dtypes.dtype("float16") for t in written.values())
    assert not any(is_plain_slice(t) for t in written.values())
