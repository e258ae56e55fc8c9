"""ONNX written by llmstd reads back exactly: HF -> ONNX -> HF is bit-identical, also with the
weights in an external data file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_helpers as oh
import pytest

ALL = oh.DECODERS + oh.ENCODERS


def _safetensors(directory: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(directory / "model.safetensors"))


def _assert_same_bytes(want: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    assert sorted(want) == sorted(got)
    for name, array in want.items():
        assert array.dtype == got[name].dtype and array.shape == got[name].shape, name
        assert array.tobytes() == got[name].tobytes(), f"{name}: bytes differ"


@pytest.mark.parametrize("kind", ALL)
def test_hf_onnx_hf_is_bit_identical(store, tmp_path: Path, kind: str) -> None:
    import llmstd

    report = llmstd.convert(store.onnx_dir(kind), tmp_path / "hf", to="hf")
    assert report.source_format == "onnx" and report.container == "onnx"
    _assert_same_bytes(_safetensors(store.hf_dir(kind)), _safetensors(tmp_path / "hf"))
    # The config round-trips too: transformers loads the result without missing or unexpected keys.
    import transformers

    _, info = getattr(transformers, oh.KINDS[kind][1]).from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))


def test_onnx_to_canonical_and_back(store, tmp_path: Path) -> None:
    import llmstd
    from llmstd.conversion import load

    llmstd.convert(store.onnx_dir("qwen2"), tmp_path / "canonical", to="canonical")
    llmstd.convert(tmp_path / "canonical", tmp_path / "onnx", to="onnx")
    a, b = load(store.onnx_dir("qwen2")), load(tmp_path / "onnx")
    assert a.config == b.config
    assert list(a.tensors) == list(b.tensors)
    for name in a.tensors:
        assert a.tensors[name].load().tobytes() == b.tensors[name].load().tobytes(), name


def test_external_data_round_trip_and_run(store, tmp_path: Path) -> None:
    import onnx

    import llmstd

    out = tmp_path / "onnx"
    report = llmstd.convert(store.hf_dir("llama-tied"), out, to="onnx", shard_size="10KB")
    assert report.files == ["config.json", "generation_config.json", "model.onnx", "model.onnx.data"]
    data = out / "model.onnx.data"
    assert data.stat().st_size >= report.bytes
    # The graph alone is ~30 KB; with the 90 KB of weights inside it could not be below half of them.
    assert (out / "model.onnx").stat().st_size < report.bytes / 2
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    weights = [i for i in model.graph.initializer if not i.name.startswith("llmstd/")]
    assert weights and all(i.data_location == onnx.TensorProto.EXTERNAL for i in weights)
    assert {e.value for i in weights for e in i.external_data if e.key == "location"} == {"model.onnx.data"}
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)

    inputs = oh.batch("llama-tied")
    got = oh.ort_outputs(oh.ort_session(out / "model.onnx"), inputs)["logits"]
    assert oh.max_abs_on_tokens(store.reference("llama-tied")["logits"], got, inputs["attention_mask"]) <= 1e-4

    back = llmstd.convert(out, tmp_path / "hf", to="hf")
    assert back.container == "onnx-external-data"
    _assert_same_bytes(_safetensors(store.hf_dir("llama-tied")), _safetensors(tmp_path / "hf"))


def test_bare_onnx_file_is_detected(store) -> None:
    from llmstd.conversion import load
    from llmstd.formats import detect

    path = store.onnx_dir("gpt2") / "model.onnx"
    assert detect(path).name == "onnx"
    assert load(path).config == load(store.onnx_dir("gpt2")).config
