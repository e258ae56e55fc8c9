"""llmstd's ONNX writer against the real client: onnxruntime runs what llmstd writes and agrees with
transformers on a padded batch and in greedy generation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx_helpers as oh
import pytest

ALL = oh.DECODERS + oh.ENCODERS
TOLERANCE = 1e-4


def _model_proto(path: Path):  # type: ignore[no-untyped-def]
    import onnx

    return onnx.load(str(path / "model.onnx"), load_external_data=False)


@pytest.mark.parametrize("kind", ALL)
def test_graph_is_valid_and_named_canonically(store, kind: str) -> None:
    import onnx

    from llmstd import vocab
    from llmstd.convert import load

    out = store.onnx_dir(kind)
    onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
    model = _model_proto(out)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    config = load(out).config
    expected = vocab.expected_tensors(config)
    weights = [i.name for i in model.graph.initializer if not i.name.startswith("llmstd/")]
    assert sorted(weights) == sorted(expected)  # canonical names; a tied head is stored once
    assert len(weights) == len(set(weights))
    if vocab.tied_tensors(config):
        assert "lm_head.weight" not in weights
    for value in model.graph.input:
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], (value.name, dims)
    inputs = [i.name for i in model.graph.input]
    assert inputs == (["input_ids", "token_type_ids", "attention_mask"] if kind in oh.ENCODERS
                      else ["input_ids", "attention_mask"])
    assert {p.key for p in model.metadata_props} >= {"llmstd.spec_version", "llmstd.architecture", "llmstd.config"}


@pytest.mark.parametrize("kind", ALL)
def test_onnxruntime_matches_transformers(store, kind: str) -> None:
    session = oh.ort_session(store.onnx_dir(kind) / "model.onnx")
    inputs = oh.batch(kind)
    assert inputs["input_ids"].shape[1] >= 64
    got = oh.ort_outputs(session, inputs)
    reference = store.reference(kind)
    assert set(reference) <= set(got)
    for name, want in reference.items():
        assert got[name].dtype == np.float32
        diff = oh.max_abs_on_tokens(want, got[name], inputs["attention_mask"])
        assert diff <= TOLERANCE, f"{kind} {name}: max abs {diff}"


@pytest.mark.parametrize("kind", oh.DECODERS)
def test_greedy_generation_matches_generate(store, kind: str) -> None:
    session = oh.ort_session(store.onnx_dir(kind) / "model.onnx")
    prompt = oh.left_padded(oh.batch(kind))
    ours = oh.greedy_ort(session, prompt)
    theirs = oh.greedy_torch(store.model(kind), prompt)
    assert ours.shape == theirs.shape == (2, oh.SEQ + oh.NEW_TOKENS)
    np.testing.assert_array_equal(ours, theirs)


def test_sliding_window_is_applied(store) -> None:
    """Control for mistral: without the window the graph would give different logits."""
    import onnx

    from llmstd.convert import load
    from llmstd.formats.onnx import write_onnx

    ckpt = load(store.hf_dir("mistral"))
    assert ckpt.config.sliding_window is not None and ckpt.config.sliding_window < oh.SEQ
    unwindowed = dataclasses.replace(ckpt, config=ckpt.config.replace(sliding_window=None))
    out = store.root / "mistral-no-window"
    out.mkdir()
    write_onnx(unwindowed, out)
    onnx.checker.check_model(str(out / "model.onnx"))
    inputs = oh.batch("mistral")
    got = oh.ort_outputs(oh.ort_session(out / "model.onnx"), inputs)["logits"]
    assert oh.max_abs_on_tokens(store.reference("mistral")["logits"], got, inputs["attention_mask"]) > 1e-2


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_weights_run_in_float32(store, tmp_path: Path, dtype: str) -> None:
    import llmstd

    out = tmp_path / dtype
    llmstd.convert(store.hf_dir("llama"), out, to="onnx", dtype=dtype)
    model = _model_proto(out)
    assert {i.data_type for i in model.graph.initializer if not i.name.startswith("llmstd/")} == {
        10 if dtype == "float16" else 16}
    inputs = oh.batch("llama")
    got = oh.ort_outputs(oh.ort_session(out / "model.onnx"), inputs)["logits"]
    assert got.dtype == np.float32
    assert oh.max_abs_on_tokens(store.reference("llama")["logits"], got, inputs["attention_mask"]) < 0.05


def test_unsupported_rope_scaling_is_refused(store) -> None:
    from llmstd.convert import load
    from llmstd.errors import ConfigError
    from llmstd.onnx_graph import build_graph

    ckpt = load(store.hf_dir("llama"))
    config = ckpt.config.replace(rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(ConfigError, match="rope_scaling of rope_type 'dynamic' is not implemented by llmstd's runtimes"):
        build_graph(config, {n: t.dtype for n, t in ckpt.tensors.items()})


