"""Round trips torch -> TF -> torch are bit-identical for every architecture, through both TF
formats, in float32 and bfloat16 (issue 3). The reference is transformers' own safetensors save."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmstd
from helpers import ALL_KINDS, assert_tensors_bit_identical, read_safetensors_dir

EXPECTED_DIALECT = {
    ("tf-h5", "gpt2"): "hf_tf", ("tf-h5", "bert"): "hf_tf", ("tf-h5", "mistral"): "hf_tf",
    ("tf-h5", "llama"): "tf_llmstd", ("tf-h5", "qwen2"): "tf_llmstd",
    ("tf-ckpt", "gpt2"): "tf_original", ("tf-ckpt", "bert"): "tf_original", ("tf-ckpt", "mistral"): "tf_llmstd",
    ("tf-ckpt", "llama"): "tf_llmstd", ("tf-ckpt", "qwen2"): "tf_llmstd",
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("fmt", ["tf-h5", "tf-ckpt"])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_torch_tf_torch_bit_identical(tfstore, tmp_path: Path, kind: str, fmt: str, dtype: str) -> None:
    tf_dir = tfstore.converted(kind, fmt, dtype, sharp=False)
    ckpt = llmstd.load(tf_dir)
    assert ckpt.format == fmt and ckpt.dialect == EXPECTED_DIALECT[(fmt, kind.split("-")[0])]
    assert ckpt.config.dtype == dtype and {t.dtype.name for t in ckpt.values()} == {dtype}
    source = llmstd.load(tfstore.tiny.hf_dir(kind, "safetensors", dtype))
    assert ckpt.config == source.config  # config survives too (llmstd_config.json / config.json)
    out = tmp_path / "hf"
    report = llmstd.convert(tf_dir, out, to="hf")
    assert report.source_format == fmt
    assert_tensors_bit_identical(tfstore.tiny.expected(kind, dtype), read_safetensors_dir(out))


@pytest.mark.parametrize("fmt", ["tf-h5", "tf-ckpt"])
def test_tf_to_canonical_and_back(tfstore, tmp_path: Path, fmt: str) -> None:
    tf_dir = tfstore.converted("llama", fmt, sharp=False)
    llmstd.convert(tf_dir, tmp_path / "canonical", to="canonical")
    llmstd.convert(tmp_path / "canonical", tmp_path / "tf", to=fmt)
    a, b = llmstd.load(tf_dir), llmstd.load(tmp_path / "tf")
    assert a.config == b.config and list(a) == list(b)
    for name in a:
        assert a[name].sha256() == b[name].sha256(), name
