"""``llmstd check``: passes for every correct conversion between every pair of formats, fails and
names the culprit layer for each planted fault, and reports as documented.

Pair tests are parametrized over ``llmstd.formats.names()``, so formats added later are picked up;
a pair is skipped only when a side's runtime is not importable. Faults are planted in canonical
tensors (through the canonical vocabulary, never by framework names) of models whose activations
are O(1) (tests/sharp_models.py), and checked against the unmodified model run by transformers.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import helpers
import llmstd
from llmstd import formats, vocab
from llmstd.checking import Tolerance, check, default_inputs, inputs_from_ids, judged_dtype, tolerance_for
from llmstd.config import CanonicalConfig
from llmstd.errors import LlmstdError, MissingDependencyError
from llmstd.tensors import ArrayTensor
from llmstd.transforms import REGISTRY
from sharp_models import SharpModels, sharp  # noqa: F401  (sharp is a fixture)

FORMATS = formats.names()
#: The module each format's own runtime needs; formats not listed run on torch.
RUNTIME_MODULE = {"tf-h5": "tensorflow", "tf-ckpt": "tensorflow", "onnx": "onnxruntime", "keras-hub": "keras_hub"}
#: Runtimes that count as the format's own (anything else means check fell back to llmstd-torch).
NATIVE = {"hf": {"transformers"}, "canonical": {"llmstd-torch"}, "onnx": {"onnxruntime"},
          "tf-h5": {"transformers-tf", "llmstd-tf"}, "tf-ckpt": {"llmstd-tf"}, "keras-hub": {"keras-hub"}}
#: (format, kind) pairs the format cannot express, and the canonical field its refusal names: KerasHub's
#: BertBackbone runs tanh gelu (these BERTs use the exact one) and it has no BertForMaskedLM.
REFUSED = {("keras-hub", "bert"): "activation", ("keras-hub", "bert-mlm"): "activation|masked_lm"}
PAIR_KINDS = ("gpt2", "llama")  # fused/transposed Conv1D and learned positions; GQA + rotary
TOLERANCE_FLOOR = {"float16": 0.95, "bfloat16": 0.9}  # top-1 these sharp tiny models reach in half precision


def _need_runtime(fmt: str) -> None:
    module = RUNTIME_MODULE.get(fmt, "torch")
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} (the runtime for {fmt}) is not installed")


def _assert_native(report, fmt_a: str, fmt_b: str) -> None:
    for side, fmt in ((report.a, fmt_a), (report.b, fmt_b)):
        if fmt in NATIVE and side.runtime not in NATIVE[fmt]:
            if side.runtime == "llmstd-torch" and fmt.startswith("tf"):
                pytest.skip(f"{fmt}: TensorFlow runtime not available here ({side.notes})")
            raise AssertionError(f"{fmt} ran on {side.runtime}: {side.notes}")


# ------------------------------------------------------------------------------------------------
# every correct conversion passes


@pytest.mark.parametrize("kind", helpers.ALL_KINDS)
@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "hf"])
def test_every_conversion_passes(sharp: SharpModels, kind: str, fmt: str) -> None:
    _need_runtime(fmt)
    if (fmt, kind) in REFUSED:
        with pytest.raises(LlmstdError, match=REFUSED[fmt, kind]):
            sharp.converted(kind, fmt)
        return
    report = check(sharp.hf_dir(kind), sharp.converted(kind, fmt))
    _assert_native(report, "hf", fmt)
    assert report.passed, report.summary()
    assert report.dtype == "float32" and all(o.nmse <= 1e-12 for o in report.outputs)


def _pair_dirs(sharp: SharpModels, kind: str, fmt_a: str, fmt_b: str) -> tuple[Path, Path]:
    a = sharp.converted(kind, fmt_a)
    if fmt_a != fmt_b:
        return a, sharp.converted(kind, fmt_b)
    # The same format on both sides: the round trip through another format against the direct one.
    via = "canonical" if fmt_a != "canonical" else "hf"
    back = sharp.root / f"{kind}-{fmt_a}-via-{via}"
    if not back.exists():
        llmstd.convert(sharp.converted(kind, via), back, to=fmt_a)
    return a, back


@pytest.mark.parametrize("kind", PAIR_KINDS)
@pytest.mark.parametrize("fmt_a,fmt_b", list(itertools.combinations_with_replacement(FORMATS, 2)))
def test_every_pair_of_formats_passes(sharp: SharpModels, kind: str, fmt_a: str, fmt_b: str) -> None:
    _need_runtime(fmt_a)
    _need_runtime(fmt_b)
    a, b = _pair_dirs(sharp, kind, fmt_a, fmt_b)
    report = check(a, b)
    _assert_native(report, fmt_a, fmt_b)
    assert report.passed, report.summary()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_conversions_pass_on_dtype_tolerances(sharp: SharpModels, dtype: str) -> None:
    for kind in ("gpt2", "bert-mlm", "llama"):
        report = check(sharp.hf_dir(kind), sharp.converted(kind, "canonical", dtype))
        assert report.dtype == dtype
        assert report.passed, report.summary()
        logits = report.outputs[0]
        assert logits.top1 is not None and logits.top1 >= TOLERANCE_FLOOR[dtype]
        assert not report.first_divergence


def test_bin_and_sharded_sources_pass(sharp: SharpModels, tmp_path: Path) -> None:
    model = sharp.model("qwen2")
    for form in ("bin", "sharded"):
        path = helpers.save(model, tmp_path / form, form)
        assert check(path, sharp.canonical_dir("qwen2")).passed


# ------------------------------------------------------------------------------------------------
# planted faults: fail, and name the culprit layer and its parameters


def _name(pattern: str, layer: int | None = None) -> str:
    return pattern.format(i=layer) if layer is not None else pattern


def plant(source: Path, destination: Path,
          change: Callable[[dict[str, np.ndarray], CanonicalConfig], CanonicalConfig | None]) -> Path:
    """A canonical checkpoint of ``source`` after ``change`` edited its arrays (and maybe config)."""
    ckpt = llmstd.load(source)
    arrays = {n: np.array(t.load()) for n, t in ckpt.tensors.items()}
    config = change(arrays, ckpt.config) or ckpt.config
    planted = dataclasses.replace(ckpt, config=config, tensors={n: ArrayTensor(a) for n, a in arrays.items()})
    destination.mkdir(parents=True)
    formats.get("canonical").write(planted, destination, formats.WriteOptions())
    return destination


def _assert_culprit(report, layer: int | None, *parameters: str, stage: str | None = None) -> None:
    assert not report.passed, report.summary()
    first = report.first_divergence
    assert first is not None, report.summary()
    if stage is not None:
        assert first["stage"] == stage, first
    assert first["layer"] == layer, first
    for name in parameters:
        assert name in first["parameters"], (name, first["parameters"])
        # ...and blamed only because its values differ between the two checkpoints.
        assert name in first["differing_parameters"], (name, first["differing_parameters"])
    assert set(first["differing_parameters"]) <= set(parameters), first["differing_parameters"]
    assert "first divergence" in report.summary()
    # Every stage before the culprit agrees.
    before = [s for s in report.layers if s.layer is not None and layer is not None and s.layer < layer]
    assert not any(s.diverged for s in before)


def test_fault_q_and_k_swapped_in_one_layer(sharp: SharpModels, tmp_path: Path) -> None:
    def swap(arrays: dict[str, np.ndarray], config: CanonicalConfig) -> None:
        for weight_or_bias in range(2):
            q, k = _name(vocab.Q[weight_or_bias], 1), _name(vocab.K[weight_or_bias], 1)
            arrays[q], arrays[k] = arrays[k], arrays[q]

    bad = plant(sharp.canonical_dir("gpt2"), tmp_path / "bad", swap)
    _assert_culprit(check(sharp.hf_dir("gpt2"), bad), 1, *(_name(p, 1) for p in (*vocab.Q, *vocab.K)))


def test_fault_square_weight_transposed(sharp: SharpModels, tmp_path: Path) -> None:
    name = _name(vocab.O[0], 0)

    def transpose(arrays: dict[str, np.ndarray], config: CanonicalConfig) -> None:
        assert arrays[name].shape[0] == arrays[name].shape[1], "the trap is a *square* matrix"
        arrays[name] = np.ascontiguousarray(arrays[name].T)

    bad = plant(sharp.canonical_dir("llama"), tmp_path / "bad", transpose)
    _assert_culprit(check(sharp.hf_dir("llama"), bad), 0, name, stage="layer 0")


def _rotary(arrays: dict[str, np.ndarray], pattern: str, layer: int, to_meta: int, back: int | None) -> None:
    """Re-lay q or k rows as Meta's interleaved checkpoint has them (inverse with the right head
    count), then apply the forward permutation with ``back`` heads (None: forget to apply it)."""
    kind = REGISTRY["rotary_permute"]
    name = _name(pattern, layer)
    meta = kind.inverse([arrays[name]], {"heads": to_meta})[0]
    arrays[name] = meta if back is None else kind.forward([meta], {"heads": back})[0]


def test_fault_rotary_permutation_missing(sharp: SharpModels, tmp_path: Path) -> None:
    def forget(arrays: dict[str, np.ndarray], config: CanonicalConfig) -> None:
        for layer in range(config.num_layers):
            _rotary(arrays, vocab.Q[0], layer, config.num_heads, None)
            _rotary(arrays, vocab.K[0], layer, config.num_kv_heads, None)

    bad = plant(sharp.canonical_dir("llama"), tmp_path / "bad", forget)
    _assert_culprit(check(sharp.hf_dir("llama"), bad), 0, _name(vocab.Q[0], 0), _name(vocab.K[0], 0))


def test_fault_rotary_permutation_with_head_count_instead_of_kv_heads(sharp: SharpModels, tmp_path: Path) -> None:
    ckpt = llmstd.load(sharp.canonical_dir("llama"))
    assert ckpt.config.num_kv_heads < ckpt.config.num_heads, "needs a GQA model"

    def wrong_heads(arrays: dict[str, np.ndarray], config: CanonicalConfig) -> None:
        for layer in range(config.num_layers):  # q is right; k is permuted with the q head count
            _rotary(arrays, vocab.K[0], layer, config.num_kv_heads, config.num_heads)

    bad = plant(sharp.canonical_dir("llama"), tmp_path / "bad", wrong_heads)
    report = check(sharp.hf_dir("llama"), bad)
    _assert_culprit(report, 0, _name(vocab.K[0], 0))


def test_fault_lm_head_untied_and_randomised(sharp: SharpModels, tmp_path: Path) -> None:
    head, embedding = vocab.LM_HEAD[0], vocab.EMBED_TOKENS

    def untie(arrays: dict[str, np.ndarray], config: CanonicalConfig) -> CanonicalConfig:
        rng = np.random.default_rng(5)
        arrays[head] = (rng.standard_normal(arrays[embedding].shape) * 0.25).astype(arrays[embedding].dtype)
        return config.replace(tie_word_embeddings=False)

    bad = plant(sharp.canonical_dir("llama-tied"), tmp_path / "bad", untie)
    report = check(sharp.hf_dir("llama-tied"), bad)
    _assert_culprit(report, None, head, stage="head")
    assert not any(s.diverged for s in report.layers)  # every hidden state agrees; only the head differs
    assert report.config_differences == {"tie_word_embeddings": [True, False]}


def test_fault_norm_weight_shifted_by_one(sharp: SharpModels, tmp_path: Path) -> None:
    name = _name(vocab.MLP_NORM[0], 1)

    def shift(arrays: dict[str, np.ndarray], config: CanonicalConfig) -> None:
        arrays[name] = arrays[name] + np.float32(1.0)  # a (1 + w) norm convention applied twice

    bad = plant(sharp.canonical_dir("llama"), tmp_path / "bad", shift)
    _assert_culprit(check(sharp.hf_dir("llama"), bad), 1, name)


def test_fault_float16_cast_overflowed_to_inf(sharp: SharpModels, tmp_path: Path) -> None:
    name = _name(vocab.UP[0], 1)

    def large(arrays: dict[str, np.ndarray], config: CanonicalConfig) -> None:
        arrays[name][0, 0] = np.float32(1e5)  # finite in float32, beyond float16's 65504

    source = plant(sharp.canonical_dir("gpt2"), tmp_path / "fp32", large)
    with pytest.raises(llmstd.errors.CastError):  # the guarded cast refuses...
        llmstd.convert(source, tmp_path / "refused", to="canonical", dtype="float16")
    llmstd.convert(source, tmp_path / "fp16", to="canonical", dtype="float16", force=True)  # ...unless forced
    report = check(source, tmp_path / "fp16")
    assert report.dtype == "float16"
    _assert_culprit(report, 1, name)
    assert any("non-finite" in f for f in report.failures)
    json.loads(report.to_json())  # inf/NaN never leak into the JSON


def test_fault_localised_through_onnx_by_rerunning_its_weights(sharp: SharpModels, tmp_path: Path) -> None:
    if "onnx" not in FORMATS:
        pytest.skip("no onnx format")
    _need_runtime("onnx")
    name = _name(vocab.MLP_NORM[0], 0)

    def shift(arrays: dict[str, np.ndarray], config: CanonicalConfig) -> None:
        arrays[name] = arrays[name] + np.float32(1.0)

    bad = plant(sharp.canonical_dir("qwen2"), tmp_path / "bad", shift)
    llmstd.convert(bad, tmp_path / "bad-onnx", to="onnx")
    report = check(sharp.hf_dir("qwen2"), tmp_path / "bad-onnx")
    assert report.b.runtime == "onnxruntime"
    assert "re-run with llmstd-torch" in report.localisation
    _assert_culprit(report, 0, name)


def test_runtime_fault_with_correct_weights_is_blamed_on_the_runtime(sharp: SharpModels,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if "onnx" not in FORMATS:
        pytest.skip("no onnx format")
    _need_runtime("onnx")
    from llmstd.checking import runtimes

    real = runtimes._run_onnx

    def skewed(*args, **kwargs):  # a graph bug: right weights, wrong arithmetic
        out, loaded = real(*args, **kwargs)
        out.outputs["logits"] = out.outputs["logits"] * np.float32(1.01)
        return out, loaded

    monkeypatch.setattr(runtimes, "_run_onnx", skewed)
    report = check(sharp.hf_dir("llama"), sharp.converted("llama", "onnx"))
    assert not report.passed and report.first_divergence is not None
    assert report.first_divergence["stage"] == "runtime" and not any(s.diverged for s in report.layers)


# ------------------------------------------------------------------------------------------------
# report, inputs, tolerances, runtimes


def test_report_serialises_and_describes_both_sides(sharp: SharpModels) -> None:
    report = check(sharp.hf_dir("bert"), sharp.canonical_dir("bert"))
    data = json.loads(report.to_json())
    assert data["passed"] is True
    assert data["a"]["runtime"] == "transformers" and data["b"]["runtime"] == "llmstd-torch"
    assert data["a"]["device"] == "cpu" and data["b"]["device"] == "cpu"
    assert [o["name"] for o in data["outputs"]] == ["last_hidden_state", "pooler_output"]
    assert data["inputs"] == {"source": "default", "batch": 2, "seq_len": 128, "real_tokens": [128, 96]}
    assert len(data["layers"]) == 3 and data["first_divergence"] is None
    for key in ("max_abs", "max_rel", "nmse", "cosine"):
        assert isinstance(data["outputs"][0][key], float)


def test_logit_metrics(sharp: SharpModels) -> None:
    report = check(sharp.hf_dir("gpt2"), sharp.canonical_dir("gpt2"))
    logits = report.outputs[0]
    assert logits.name == "logits" and logits.positions == 128 + 96
    assert logits.top1 == 1.0 and logits.top5 == 1.0
    assert logits.kl_mean is not None and 0 <= logits.kl_mean < 1e-9
    assert logits.cosine > 0.999999 and logits.nmse < 1e-10


def test_default_inputs_are_deterministic_padded_and_capped(sharp: SharpModels) -> None:
    config = llmstd.load(sharp.canonical_dir("bert")).config
    first, second = default_inputs([config]), default_inputs([config])
    assert np.array_equal(first.input_ids, second.input_ids)
    assert first.input_ids.shape == (2, 128) and first.attention_mask[1].sum() == 96
    assert first.token_type_ids is not None and set(np.unique(first.token_type_ids)) == {0, 1}
    short = default_inputs([config.replace(max_positions=40, vocab_size=7)])
    assert short.input_ids.shape == (2, 40) and short.input_ids.max() < 7


def test_user_token_ids(sharp: SharpModels, tmp_path: Path) -> None:
    a, b = sharp.hf_dir("llama"), sharp.canonical_dir("llama")
    report = check(a, b, input_ids="[[1, 2, 3, 4, 5], [6, 7]]")
    assert report.passed and report.inputs == {"source": "input-ids", "batch": 2, "seq_len": 5,
                                               "real_tokens": [5, 2]}
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps({"input_ids": [[3, 4, 5, 0]], "attention_mask": [[1, 1, 1, 0]]}))
    assert check(a, b, input_ids=ids_file).inputs["real_tokens"] == [3]
    config = llmstd.load(b).config
    with pytest.raises(LlmstdError, match="token ids must lie"):
        inputs_from_ids([[helpers.VOCAB]], [config])
    with pytest.raises(LlmstdError, match="right padding"):
        inputs_from_ids({"input_ids": [[1, 2]], "attention_mask": [[0, 1]]}, [config])
    with pytest.raises(LlmstdError, match="neither a file nor JSON"):
        inputs_from_ids("no-such-file.json", [config])


def _word_tokenizer(directory: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    words = {f"w{i}": i for i in range(1, 40)}
    words["[UNK]"] = 0
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(words, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(directory / "tokenizer.json"))


def test_text_needs_a_tokenizer_and_uses_it(sharp: SharpModels, tmp_path: Path) -> None:
    with pytest.raises(LlmstdError, match="needs a tokenizer"):
        check(sharp.hf_dir("gpt2"), sharp.canonical_dir("gpt2"), text="w1 w2")
    with_tokenizer = tmp_path / "gpt2"
    shutil.copytree(sharp.hf_dir("gpt2"), with_tokenizer)
    _word_tokenizer(with_tokenizer)
    report = check(with_tokenizer, sharp.canonical_dir("gpt2"), text=["w1 w2 w3", "w4 w5 w6 w7 w8"])
    assert report.passed and report.inputs["source"] == "text" and report.inputs["real_tokens"] == [3, 5]


def test_tolerances_by_dtype_and_overrides(sharp: SharpModels) -> None:
    # Relative to the output's scale by default; absolute caps only when asked for.
    assert tolerance_for("float32").max_nmse == 1e-10 and tolerance_for("float32").logits_max_abs is None
    assert tolerance_for("float16").min_top1 is not None and tolerance_for("float16").max_rel_error is None
    assert judged_dtype("float32", "bfloat16") == "bfloat16" and judged_dtype("float16", "bfloat16") == "bfloat16"
    assert tolerance_for("float32", {"logits_max_abs": 0.5}).logits_max_abs == 0.5
    with pytest.raises(LlmstdError, match="unknown tolerance"):
        tolerance_for("float32", {"atol": 1.0})
    _need_runtime("onnx")
    a, b = sharp.hf_dir("gpt2"), sharp.converted("gpt2", "onnx")
    assert check(a, b).passed  # transformers vs onnxruntime differ by float rounding (~1e-6), not 0
    strict = check(a, b, tolerance={"logits_max_abs": 0.0})
    assert not strict.passed and "max abs error" in strict.failures[0]
    scaled = check(a, b, tolerance={"max_rel_error": 0.0})
    assert not scaled.passed and "of the output scale" in scaled.failures[0]
    assert check(a, b, tolerance=Tolerance(logits_max_abs=1.0)).tolerance.logits_max_abs == 1.0


def test_runtime_choice_fallbacks_and_errors(sharp: SharpModels, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = sharp.hf_dir("llama"), sharp.canonical_dir("llama")
    with pytest.raises(LlmstdError, match="onnxruntime runs ONNX graphs"):
        check(a, b, runtime_b="onnxruntime")
    with pytest.raises(LlmstdError, match="unknown runtime"):
        check(a, b, runtime_b="jax")
    # transformers absent: the HF side runs on llmstd's torch implementation, and says so.
    monkeypatch.setitem(sys.modules, "transformers", None)
    report = check(a, b)
    assert report.passed and report.a.runtime == "llmstd-torch"
    assert any("transformers is not installed" in n for n in report.a.notes)
    with pytest.raises(MissingDependencyError, match="not installed"):
        check(a, b, runtime_a="transformers")


def test_the_reference_runtime_is_named_first(sharp: SharpModels) -> None:
    """transformers (whichever generation is installed) is the reference of a Hugging Face side, and
    the verdict begins with which runtimes it rests on."""
    import transformers

    report = check(sharp.hf_dir("gpt2"), sharp.canonical_dir("gpt2"))
    assert report.a.runtime == "transformers" and report.a.in_reference
    assert report.a.runtime_detail.startswith(f"transformers {transformers.__version__}")
    assert report.b.reference_runtime is None and not report.b.in_reference
    assert report.summary().startswith("PASS A in its reference runtime transformers; B in llmstd-torch")
    data = json.loads(report.to_json())
    assert data["reference"] == report.reference and data["a"]["in_reference"] is True
    both_ours = check(sharp.canonical_dir("gpt2"), sharp.canonical_dir("gpt2"))
    assert both_ours.summary().startswith("PASS llmstd's own runtime on both sides")


def test_an_unsupported_transformers_line_is_said_in_the_verdict(sharp: SharpModels,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    monkeypatch.setattr(transformers, "__version__", "6.0.0")
    report = check(sharp.hf_dir("gpt2"), sharp.canonical_dir("gpt2"))
    assert report.passed and report.a.runtime == "llmstd-torch" and not report.a.in_reference
    assert any("not a release line llmstd supports" in n for n in report.a.notes)
    assert report.summary().startswith("PASS NO reference runtime ran")
    assert "NOT its reference runtime transformers" in report.summary()
    with pytest.raises(LlmstdError, match="would run in llmstd-torch, NOT its reference runtime transformers"):
        check(sharp.hf_dir("gpt2"), sharp.canonical_dir("gpt2"), require_reference=True)
    result = helpers.run_cli("check", sharp.canonical_dir("gpt2"), sharp.canonical_dir("gpt2"),
                             "--require-reference")
    helpers.assert_cli_error(result, "neither side has a reference runtime")


def test_missing_onnxruntime(sharp: SharpModels, monkeypatch: pytest.MonkeyPatch) -> None:
    if "onnx" not in FORMATS:
        pytest.skip("no onnx format")
    onnx_dir = sharp.converted("gpt2", "onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    report = check(sharp.hf_dir("gpt2"), onnx_dir)  # auto: the ONNX weights run on llmstd-torch
    assert report.passed and report.b.runtime == "llmstd-torch"
    assert any("onnxruntime is not installed" in n for n in report.b.notes)
    with pytest.raises(MissingDependencyError, match="pip install 'llmstd\\[onnx\\]'"):
        check(sharp.hf_dir("gpt2"), onnx_dir, runtime_b="onnxruntime")


def test_cuda_without_a_gpu_is_a_clear_error(sharp: SharpModels) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present (tests/test_gpu_check.py covers it)")
    with pytest.raises(LlmstdError, match="torch sees no CUDA device"):
        check(sharp.hf_dir("gpt2"), sharp.canonical_dir("gpt2"), device="cuda")


# ------------------------------------------------------------------------------------------------
# CLI


def test_cli_check_passes_with_table_and_json(sharp: SharpModels, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = helpers.run_cli("check", sharp.hf_dir("llama"), sharp.canonical_dir("llama"), "--json", out)
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stdout and "logits" in result.stdout and "layer 1 + final norm" in result.stdout
    assert "transformers" in result.stdout and "llmstd-torch" in result.stdout and "on cpu" in result.stdout
    assert json.loads(out.read_text())["passed"] is True
    piped = helpers.run_cli("check", sharp.hf_dir("llama"), sharp.canonical_dir("llama"), "--json", "-",
                            "--no-layers")
    assert piped.returncode == 0 and json.loads(piped.stdout)["layers"] == []


def test_cli_check_fails_with_exit_1_naming_the_layer(sharp: SharpModels, tmp_path: Path) -> None:
    name = _name(vocab.MLP_NORM[0], 0)

    def shift(arrays: dict[str, np.ndarray], config: CanonicalConfig) -> None:
        arrays[name] = arrays[name] + np.float32(1.0)

    bad = plant(sharp.canonical_dir("mistral"), tmp_path / "bad", shift)
    result = helpers.run_cli("check", sharp.hf_dir("mistral"), bad)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "FAIL" in result.stdout and "first divergence: layer 0" in result.stdout and name in result.stdout
    assert "parameters that differ between the sides" in result.stdout
    usage = helpers.run_cli("check", sharp.hf_dir("mistral"), bad, "--runtime-b", "onnxruntime")
    helpers.assert_cli_error(usage, "onnxruntime")


def test_pooler_output_is_compared_whole_even_when_its_width_equals_the_sequence_length() -> None:
    # [batch, hidden] outputs have no positions: a mask of the same shape must not drop "padded" columns.
    from llmstd.checking import compare_output

    mask = np.ones((2, 8), dtype=np.int64)
    mask[1, 6:] = 0
    a = np.random.default_rng(0).random((2, 8)).astype(np.float32)
    b = a.copy()
    b[1, 7] += 5.0
    report = compare_output("pooler_output", a, b, mask, tolerance_for("float32"))
    assert not report.passed and report.max_abs == pytest.approx(5.0)
    logits = np.random.default_rng(1).random((2, 8, 4)).astype(np.float32)
    shifted = logits.copy()
    shifted[1, 7] += 5.0  # a padded position: ignored
    assert compare_output("logits", logits, shifted, mask, tolerance_for("float32")).passed


def test_malformed_token_id_objects_are_llmstd_errors(sharp: SharpModels) -> None:
    config = llmstd.load(sharp.canonical_dir("bert")).config
    assert config.type_vocab_size == 2
    ok = {"input_ids": [[1, 2, 3]], "attention_mask": [[1, 1, 1]]}
    for bad, needle in [
        ({**ok, "token_type_ids": [[0, 5, 1]]}, "token_type_ids must lie"),
        ({**ok, "token_type_ids": [[0, 1]]}, "shape of input_ids"),
        ({**ok, "token_type_ids": "x"}, "list of integers"),
        ({**ok, "input_ids": [[1.5, 2, 3]]}, "list of integers"),
        ({**ok, "input_ids": [[1, 2, 3], [1]], "attention_mask": [[1, 1, 1], [1]]}, "list of integers"),
        ({**ok, "attention_mask": [[2, 1, 1]]}, "0 or 1"),
        ({"input_ids": [[]], "attention_mask": [[]]}, "equal-shaped"),
    ]:
        with pytest.raises(LlmstdError, match=needle):
            inputs_from_ids(bad, [config])
    assert inputs_from_ids({**ok, "token_type_ids": [[0, 1, 1]]}, [config]).token_type_ids.tolist() == [[0, 1, 1]]


def test_report_with_an_infinite_tolerance_serialises(sharp: SharpModels) -> None:
    report = check(sharp.hf_dir("gpt2"), sharp.canonical_dir("gpt2"), tolerance={"logits_max_abs": float("inf")},
                   hidden_states=False)
    assert report.passed and json.loads(report.to_json())["tolerance"]["logits_max_abs"] is None
