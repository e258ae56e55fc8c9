"""llmstd's ONNX writer against the real client: onnxruntime runs what llmstd writes and agrees with
transformers on a padded batch and in greedy generation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import helpers
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
    from llmstd.conversion import load

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
    dims = {value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            for value in model.graph.input}
    outputs = {value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
               for value in model.graph.output}
    if kind in oh.ENCODERS:
        assert dims == {name: ["batch", "sequence"] for name in ("input_ids", "token_type_ids", "attention_mask")}
    else:  # the generation interface: GQA kept in the cache (kv heads, not query heads)
        kv = ["batch", config.num_kv_heads, "past_sequence", config.head_dim]
        assert dims == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "total_sequence"],
                        "position_ids": ["batch", "sequence"],
                        **{f"past_key_values.{i}.{k}": kv for i in range(config.num_layers) for k in ("key", "value")}}
        assert list(dims)[:3] == ["input_ids", "attention_mask", "position_ids"]
        assert outputs == {"logits": ["batch", "sequence", config.vocab_size],
                           **{f"present.{i}.{k}": ["batch", config.num_kv_heads, "total_sequence", config.head_dim]
                              for i in range(config.num_layers) for k in ("key", "value")}}
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
def test_greedy_generation_with_the_cache_matches_generate(store, kind: str) -> None:
    """A left-padded batch of two prompts, 32 new tokens: onnxruntime driving the graph's key/value
    cache gives generate's tokens, and every step's logits within check's float32 limit."""
    session = oh.ort_session(store.onnx_dir(kind) / "model.onnx")
    prompt = oh.left_padded(oh.batch(kind))
    assert prompt["attention_mask"][1, 0] == 0  # really left-padded
    ours, our_logits = helpers.greedy_ort(session, prompt)
    theirs, their_logits = helpers.greedy_torch(store.model(kind), prompt)
    assert ours.shape == theirs.shape == (2, oh.SEQ + helpers.NEW_TOKENS)
    np.testing.assert_array_equal(ours, theirs)
    assert helpers.step_nmse(our_logits, their_logits) <= 1e-10


def test_sliding_window_is_applied(store) -> None:
    """Control for mistral: without the window the graph would give different logits."""
    import onnx

    from llmstd.conversion import load
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
    from llmstd.conversion import load
    from llmstd.errors import ConfigError
    from llmstd.onnx_graph import build_graph

    ckpt = load(store.hf_dir("llama"))
    config = ckpt.config.replace(rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(ConfigError, match="rope_scaling of rope_type 'dynamic' is not implemented by llmstd's runtimes"):
        build_graph(config, {n: t.dtype for n, t in ckpt.tensors.items()})




@pytest.mark.parametrize("kind", oh.DECODERS)
def test_onnxruntime_genai_package_generates_as_transformers(store, tmp_path: Path, kind: str) -> None:
    """``--onnx-package genai`` for every decoder (GPT-2's learned positions through genai's generic
    decoder type): up to 32 greedy tokens, until eos, identical to transformers' generate."""
    pytest.importorskip("onnxruntime_genai")
    import llmstd

    package = tmp_path / "genai"
    llmstd.convert(store.hf_dir(kind), package, to="onnx", onnx_package="genai")
    prompt = oh.batch(kind)["input_ids"][0, :40]
    np.testing.assert_array_equal(helpers.greedy_genai(package, prompt), helpers.greedy_with_eos(store.model(kind), prompt))


def test_genai_package_is_refused_for_an_encoder(store, tmp_path: Path) -> None:
    import llmstd
    from llmstd.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a causal language model"):
        llmstd.convert(store.hf_dir("bert-mlm"), tmp_path / "genai", to="onnx", onnx_package="genai")
    assert not (tmp_path / "genai").exists()


@pytest.mark.parametrize("dtype", ["keep", "float16"])
def test_cached_graph_converts_back_to_the_weights_it_holds(store, tmp_path: Path, dtype: str) -> None:
    """The generation graph, in float32 and with float16 weights (computed in float32), reads back
    to Hugging Face bit-identically: to the source's weights, or to their float16 cast."""
    import llmstd

    src = store.hf_dir("llama")
    graph = tmp_path / "onnx"
    llmstd.convert(src, graph, to="onnx", dtype=dtype)
    inputs = [i.name for i in oh.ort_session(graph / "model.onnx").get_inputs()]
    assert "past_key_values.0.key" in inputs and "position_ids" in inputs
    llmstd.convert(graph, tmp_path / "hf", to="hf")
    llmstd.convert(src, tmp_path / "want", to="hf", dtype=dtype)  # the same cast, without ONNX
    helpers.assert_tensors_bit_identical(helpers.read_safetensors_dir(tmp_path / "want"), tmp_path / "hf")
    if dtype == "float16":
        assert {str(t.dtype) for t in helpers.read_safetensors_dir(tmp_path / "hf").values()} == {"torch.float16"}
