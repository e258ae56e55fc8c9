"""Weights recovered from ONNX models that other exporters wrote: torch.onnx dynamo and TorchScript
(Optimum-style for llama), with anonymized, transposed and duplicated initializers, and Optimum's own
export with a key/value cache (tests/data/optimum_llama)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx_helpers as oh
import pytest

DYNAMO = ("gpt2", "bert-mlm", "llama", "llama-tied", "mistral", "qwen2")
TORCHSCRIPT = ("gpt2", "bert-mlm", "llama", "llama-tied", "mistral", "qwen2")


def _initializers(directory: Path) -> dict[str, list[int]]:
    import onnx

    model = onnx.load(str(directory / "model.onnx"), load_external_data=False)
    return {i.name: list(i.dims) for i in model.graph.initializer}


def _check_recovered(store, kind: str, src: Path, dst: Path) -> dict:
    import transformers
    from safetensors.numpy import load_file

    import llmstd

    report = llmstd.convert(src, dst, to="hf").to_dict()
    model = getattr(transformers, oh.KINDS[kind][1]).from_pretrained(dst, attn_implementation="eager").eval()
    inputs = oh.batch(kind)
    got = oh.torch_outputs(model, kind, inputs)
    for name, want in store.reference(kind).items():
        assert np.abs(want - got[name]).max() <= 1e-5, name
    # Not just close: every tensor is the original's, bit for bit.
    want, have = load_file(str(store.hf_dir(kind) / "model.safetensors")), load_file(str(dst / "model.safetensors"))
    assert sorted(want) == sorted(have)
    for name in want:
        assert want[name].tobytes() == have[name].tobytes(), name
    return report


@pytest.mark.parametrize("kind", DYNAMO)
def test_dynamo_export(store, tmp_path: Path, kind: str) -> None:
    src = store.export(kind, "dynamo")
    names = _initializers(src)
    anonymous = [n for n, dims in names.items() if re.fullmatch(r"val_\d+", n) and len(dims) == 2]
    # Precondition: the exporter anonymized and transposed the linear weights (GPT-2's Conv1D weights
    # are used as stored, so only its tied head's transposed copy is anonymous).
    assert len(anonymous) >= (1 if kind == "gpt2" else 8), anonymous
    report = _check_recovered(store, kind, src, tmp_path / "hf")
    assert report["container"] == "onnx-external-data"
    undone = [t for t in report["transforms"] if "folded transpose undone" in t.get("evidence", "")]
    assert {t["source"] for t in undone} >= set(anonymous) - {d["name"] for d in report["duplicates_dropped"]}
    if kind in ("gpt2", "bert-mlm", "llama-tied", "qwen2"):  # tied: the table plus a transposed copy
        assert any(d["name"] in anonymous for d in report["duplicates_dropped"])


@pytest.mark.parametrize("kind", TORCHSCRIPT)
def test_torchscript_export(store, tmp_path: Path, kind: str) -> None:
    src = store.export(kind, "torchscript")
    names = _initializers(src)
    assert any(n.startswith("onnx::MatMul_") for n in names), "precondition: anonymized MatMul weights"
    report = _check_recovered(store, kind, src, tmp_path / "hf")
    assert report["container"] == "onnx"


def test_static_export_with_folded_positions_is_refused(store, tmp_path: Path) -> None:
    import llmstd
    from llmstd.errors import MappingError

    src = store.export("gpt2", "static")
    with pytest.raises(MappingError) as info:
        llmstd.convert(src, tmp_path / "hf", to="hf")
    text = str(info.value)
    assert "embed.positions.weight" in text and oh.hf_name("gpt2", "embed.positions.weight", "transformer.") in text
    assert "static sequence length" in text and "folded" in text and "dynamic sequence axis" in text
    assert not (tmp_path / "hf").exists()


def test_zero_bias_proven_by_the_graph(store, tmp_path: Path) -> None:
    """Optimizers delete Add(x, 0) and a LayerNormalization's all-zero B input; the graph then proves
    the bias zero, and the reader recovers zeros and says so."""
    import onnx

    import llmstd
    from llmstd.conversion import load

    src = store.export("bert-mlm", "dynamo")
    model = onnx.load(str(src / "model.onnx"))  # with its external data
    dense_bias = oh.hf_name("bert", "layers.0.attn.o.bias", "bert.")
    norm_bias = oh.hf_name("bert", "layers.1.mlp_norm.bias", "bert.")
    graph = model.graph
    (add,) = [n for n in graph.node if n.op_type == "Add" and dense_bias in n.input]
    linear_out = next(v for v in add.input if v != dense_bias)
    for node in graph.node:
        for k, value in enumerate(node.input):
            if value == add.output[0]:
                node.input[k] = linear_out
    graph.node.remove(add)
    (norm,) = [n for n in graph.node if n.op_type == "LayerNormalization" and norm_bias in n.input]
    del norm.input[2]
    for name in (dense_bias, norm_bias):
        (init,) = [i for i in graph.initializer if i.name == name]
        graph.initializer.remove(init)
    edited = tmp_path / "edited"
    edited.mkdir()
    onnx.save(model, str(edited / "model.onnx"))
    (edited / "config.json").write_bytes((src / "config.json").read_bytes())

    report = llmstd.convert(edited, tmp_path / "canonical", to="canonical").to_dict()
    zeros = {t["recovered"]: t for t in report["transforms"] if t.get("value") == "zeros"}
    assert set(zeros) == {dense_bias, norm_bias}
    assert "adds no bias" in zeros[dense_bias]["evidence"] and "no bias input" in zeros[norm_bias]["evidence"]
    ckpt, original = load(tmp_path / "canonical"), load(store.hf_dir("bert-mlm"))
    for name, tensor in original.tensors.items():
        value = ckpt.tensors[name].load()
        if name in ("layers.0.attn.o.bias", "layers.1.mlp_norm.bias"):
            assert not value.any()
        else:
            assert value.tobytes() == tensor.load().tobytes(), name
    # The recovered model computes what the edited graph computes.
    inputs = oh.batch("bert-mlm")
    want = oh.ort_outputs(oh.ort_session(edited / "model.onnx"), inputs)
    llmstd.convert(tmp_path / "canonical", tmp_path / "onnx", to="onnx")
    got = oh.ort_outputs(oh.ort_session(tmp_path / "onnx" / "model.onnx"), inputs)
    assert oh.max_abs_on_tokens(want[next(iter(want))], got["logits"], inputs["attention_mask"]) <= 1e-4


def test_tied_copy_that_differs_is_refused(store, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    import llmstd
    from llmstd.errors import MappingError

    src = store.export("llama-tied", "dynamo")
    model = onnx.load(str(src / "model.onnx"))
    vocab_rows = oh.VOCAB
    (copy,) = [i for i in model.graph.initializer if list(i.dims) == [32, vocab_rows] and i.name.startswith("val_")]
    array = numpy_helper.to_array(copy).copy()
    array[0, 0] += 1.0
    copy.CopyFrom(numpy_helper.from_array(array, copy.name))
    edited = tmp_path / "edited"
    edited.mkdir()
    onnx.save(model, str(edited / "model.onnx"))
    (edited / "config.json").write_bytes((src / "config.json").read_bytes())
    with pytest.raises(MappingError, match="differ"):
        llmstd.convert(edited, tmp_path / "hf", to="hf")


def test_foreign_onnx_without_config_is_refused(store, tmp_path: Path, copy_of) -> None:
    import llmstd
    from llmstd.errors import FormatError

    src = copy_of(store.export("llama", "torchscript"))
    (src / "config.json").unlink()
    with pytest.raises(FormatError, match="config.json"):
        llmstd.convert(src, tmp_path / "hf", to="hf")


OPTIMUM = Path(__file__).resolve().parents[1] / "data" / "optimum_llama"


def test_optimum_export_with_cache_converts_back_bit_identical(tmp_path: Path) -> None:
    """Optimum's own export (kept in tests/data: it needs transformers < 4.58) of a random Llama,
    with position_ids and a key/value cache: every weight recovered bit for bit, and transformers
    loads the result without a missing or unexpected key."""
    import transformers
    from safetensors.numpy import load_file

    import llmstd

    llmstd.convert(OPTIMUM / "onnx" / "model.onnx", tmp_path / "hf", to="hf")
    want, have = load_file(str(OPTIMUM / "hf" / "model.safetensors")), load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert sorted(want) == sorted(have)
    for name in want:
        assert want[name].tobytes() == have[name].tobytes(), name
    _, info = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
