"""Hugging Face directories survive HF -> canonical -> HF bit for bit, and transformers runs the result
to the same logits: every architecture, every container transformers writes, float32/bf16/fp16.

The reference is always transformers itself: its safetensors save of the model (tied duplicates such
as lm_head.weight dropped), its from_pretrained loading report, and the model's own logits on a padded
batch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import llmstd  # noqa: E402
from helpers import (  # noqa: E402
    ALL_KINDS,
    FORMS,
    assert_clean_loading_info,
    assert_tensors_bit_identical,
    leftovers,
    load_hf,
    logits,
    padded_batch,
    read_safetensors_dir,
    tree,
)
from llmstd.errors import CastError  # noqa: E402




def _check_runs_identically(tiny, kind: str, out: Path, dtype: str = "float32") -> None:
    model, info = load_hf(kind, out)
    assert_clean_loading_info(info)
    assert model.dtype == getattr(torch, dtype)
    got = logits(model, *padded_batch())
    want = tiny.logits(kind, dtype)
    assert got.dtype == want.dtype
    assert torch.equal(got, want), f"max abs diff {(got.float() - want.float()).abs().max().item()}"


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_hf_canonical_hf_roundtrip(tiny, tmp_path: Path, kind: str, form: str) -> None:
    src = tiny.hf_dir(kind, form)
    canonical, out = tmp_path / "canonical", tmp_path / "hf"

    report = llmstd.convert(src, canonical, to="canonical")
    assert report.architecture == kind.split("-")[0]
    assert report.source_format == "hf" and report.target_format == "canonical"
    ckpt = llmstd.load(canonical)
    assert ckpt.format == "canonical" and ckpt.config.dtype == "float32"
    assert {t.dtype.name for t in ckpt.values()} == {"float32"}
    # Canonical stores a tied head once: no canonical tensor is stored twice.
    assert ckpt.config.tie_word_embeddings == ("lm_head.weight" not in ckpt)

    llmstd.convert(canonical, out, to="hf")
    assert_tensors_bit_identical(tiny.expected(kind), out)
    _check_runs_identically(tiny, kind, out)


@pytest.mark.parametrize("form", ["safetensors", "bin"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_half_precision_roundtrip(tiny, tmp_path: Path, kind: str, dtype: str, form: str) -> None:
    src = tiny.hf_dir(kind, form, dtype)
    canonical, out = tmp_path / "canonical", tmp_path / "hf"
    llmstd.convert(src, canonical, to="canonical")
    ckpt = llmstd.load(canonical)
    assert ckpt.config.dtype == dtype
    assert {t.dtype.name for t in ckpt.values()} == {dtype}

    llmstd.convert(canonical, out, to="hf")
    expected = tiny.expected(kind, dtype)
    assert {t.dtype for t in expected.values()} == {getattr(torch, dtype)}
    assert_tensors_bit_identical(expected, out)
    assert json.loads((out / "config.json").read_text()).get("dtype", dtype) == dtype
    _check_runs_identically(tiny, kind, out, dtype)


@pytest.mark.parametrize(("kind", "form"), [("gpt2", "bin"), ("bert-mlm", "bin"), ("qwen2", "sharded"),
                                            ("llama", "bin")])
def test_hf_to_hf_directly(tiny, tmp_path: Path, kind: str, form: str) -> None:
    out = tmp_path / "hf"
    report = llmstd.convert(tiny.hf_dir(kind, form), out, to="hf")
    assert report.target_format == "hf"
    assert "model.safetensors" in report.files and "config.json" in report.files
    assert_tensors_bit_identical(tiny.expected(kind), out)
    _check_runs_identically(tiny, kind, out)


@pytest.mark.parametrize("kind", ["gpt2", "bert-mlm", "llama-tied", "mistral"])
def test_bin_output_loads_in_transformers(tiny, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "hf"
    llmstd.convert(tiny.canonical_dir(kind), out, to="hf", weights="bin")
    assert (out / "pytorch_model.bin").is_file()
    assert not list(out.glob("*.safetensors"))
    state = torch.load(out / "pytorch_model.bin", weights_only=True, map_location="cpu")
    expected = tiny.expected(kind)
    # A .bin may also carry tied duplicates, but only names the model really has.
    model_keys = set(tiny.model(kind).state_dict())
    assert set(expected) <= set(state) <= model_keys, sorted(set(state) ^ set(expected))
    assert_tensors_bit_identical(expected, {n: state[n] for n in expected})
    _check_runs_identically(tiny, kind, out)


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_sharded_hf_output(tiny, tmp_path: Path, weights: str) -> None:
    out = tmp_path / "hf"
    report = llmstd.convert(tiny.canonical_dir("llama"), out, to="hf", weights=weights, shard_size="20KB")
    suffix = ".safetensors" if weights == "safetensors" else ".bin"
    shards = sorted(p.name for p in out.iterdir() if p.name.endswith(suffix))
    assert len(shards) >= 3, shards
    index_name = "model.safetensors.index.json" if weights == "safetensors" else "pytorch_model.bin.index.json"
    index = json.loads((out / index_name).read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert set(report.files) >= {*shards, index_name, "config.json"}
    if weights == "safetensors":
        assert_tensors_bit_identical(tiny.expected("llama"), out)
    _check_runs_identically(tiny, "llama", out)


@pytest.mark.parametrize("target", ["bfloat16", "float16"])
def test_dtype_cast_matches_torch(tiny, tmp_path: Path, target: str) -> None:
    out = tmp_path / "hf"
    report = llmstd.convert(tiny.hf_dir("gpt2"), out, to="hf", dtype=target)
    assert report.dtype == target
    torch_dtype = getattr(torch, target)
    expected = {n: t.to(torch_dtype) for n, t in tiny.expected("gpt2").items()}
    assert_tensors_bit_identical(expected, out)
    model, info = load_hf("gpt2", out)
    assert_clean_loading_info(info)
    assert model.dtype == torch_dtype


def _gpt2_with_large_values(tiny, directory: Path) -> Path:
    """A copy of the tiny gpt2 whose token embedding holds two values outside float16's range."""
    from safetensors.torch import save_file

    src = tiny.hf_dir("gpt2")
    shutil.copytree(src, directory)
    tensors = {n: t.clone() for n, t in tiny.expected("gpt2").items()}
    tensors["transformer.wte.weight"][3, 5] = 1e6
    tensors["transformer.wte.weight"][7, 1] = -7e4
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


@pytest.mark.parametrize("to", ["canonical", "hf"])
def test_overflowing_cast_is_refused(tiny, tmp_path: Path, to: str) -> None:
    src = _gpt2_with_large_values(tiny, tmp_path / "src")
    dst = tmp_path / "out" / "dst"
    with pytest.raises(CastError) as info:
        llmstd.convert(src, dst, to=to, dtype="float16")
    message = str(info.value)
    assert info.value.tensor in ("embed.tokens.weight", "transformer.wte.weight")
    assert info.value.tensor in message
    assert "2 finite values overflow to inf" in message
    assert not dst.exists()
    assert not dst.parent.exists() or leftovers(dst.parent) == []


def test_overflowing_cast_with_force(tiny, tmp_path: Path) -> None:
    src = _gpt2_with_large_values(tiny, tmp_path / "src")
    out = tmp_path / "hf"
    llmstd.convert(src, out, to="hf", dtype="float16", force=True)
    wte = read_safetensors_dir(out)["transformer.wte.weight"]
    assert wte.dtype == torch.float16
    assert wte[3, 5].item() == float("inf") and wte[7, 1].item() == float("-inf")
    assert int(torch.isinf(wte).sum()) == 2
    assert tree(out)  # written


def test_canonical_gpt2_linear_layout_is_out_in(tiny) -> None:
    """A round trip cannot see a transpose missing in both directions (square matrices pass every shape
    check), so check the canonical layout against what GPT-2's Conv1D modules actually compute."""
    ckpt = llmstd.load(tiny.canonical_dir("gpt2"))
    model = tiny.model("gpt2")
    hidden = model.config.n_embd
    x = torch.randn(5, hidden, generator=torch.Generator().manual_seed(3))

    def canonical(name: str) -> "torch.Tensor":
        return torch.from_numpy(ckpt[name].load().copy())

    with torch.no_grad():
        for i, block in enumerate(model.transformer.h):
            q, k, v = block.attn.c_attn(x).split(hidden, dim=-1)
            for part, got in (("q", q), ("k", k), ("v", v)):
                want = x @ canonical(f"layers.{i}.attn.{part}.weight").T + canonical(f"layers.{i}.attn.{part}.bias")
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
            for module, name, inp in ((block.attn.c_proj, "attn.o", x), (block.mlp.c_fc, "mlp.up", x),
                                      (block.mlp.c_proj, "mlp.down", torch.randn(5, 4 * hidden))):
                want = inp @ canonical(f"layers.{i}.{name}.weight").T + canonical(f"layers.{i}.{name}.bias")
                torch.testing.assert_close(module(inp), want, rtol=1e-5, atol=1e-6)
