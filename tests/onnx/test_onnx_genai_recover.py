"""Weights recovered from onnxruntime-genai's own exports: ``python -m onnxruntime_genai.models.builder``
run on tiny random Hugging Face models, then ``llmstd convert <export> --to hf``.

The builder names modules after a template of its own (``model.layers.0.attn.qkv_proj``), packs
q|k|v into one [in, out] matrix (or keeps three, as its fp16 CPU graphs do), splits Phi-3's fused
gate_up_proj, files the final norm under layer index num_layers, and writes no config.json: the
tests copy the Hugging Face config.json beside the graph, as a user must. Every parameter is random
(transformers' init would leave norms at 1 and biases at 0, which the builder may drop), so a swapped
or lost tensor shows; the result must equal the original safetensors bit for bit and load in
transformers without missing or unexpected keys.

All exports are built once, in one builder process (the builder's imports cost seconds per run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx_helpers as oh
import pytest

pytest.importorskip("onnxruntime_genai")

_COMMON = {"vocab_size": oh.VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
           "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}

# arch -> (config class, model class, settings beyond _COMMON)
ARCHS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": False}),
    # q/k/v biases (packed into one Add by the builder) and a tied LM head (the builder keeps the
    # head and gathers the embedding through a Transpose of it).
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    # QK-norm, and head_dim 16 != hidden/heads.
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16, "tie_word_embeddings": False}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 64, "tie_word_embeddings": False}),
    # Fused qkv_proj and gate_up_proj in Hugging Face. The builder takes *any* Linear with
    # out_features == vocab_size for the LM head, so gate_up_proj (2 * intermediate rows) must not
    # have 128 rows; and it picks its LongRoPE class whenever original_max_position_embeddings
    # differs from max_position_embeddings (Phi3Config's default 4096 does), which then fails on a
    # config without LongRoPE factors ("KeyError: 'multi_cache'").
    "phi3": ("Phi3Config", "Phi3ForCausalLM",
             {"intermediate_size": 48, "original_max_position_embeddings": 128, "tie_word_embeddings": False}),
    # Phi-3 with LongRoPE (as Phi-3-mini-128k): the builder selects its cos/sin tables in an If.
    # One kv head keeps the packed qkv_proj (64 + 16 + 16 rows) off the vocabulary size.
    "phi3-longrope": ("Phi3Config", "Phi3ForCausalLM",
                      {"hidden_size": 64, "intermediate_size": 48, "num_key_value_heads": 1,
                       "partial_rotary_factor": 0.5, "original_max_position_embeddings": 32,
                       "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.3, 2.1, 3.0],
                                        "long_factor": [1.5, 2.5, 4.0, 7.0]},
                       "tie_word_embeddings": False}),
    # Refused: its norms apply 1 + w, which the builder stores as the sum.
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 8}),
}
RECOVERED = ("llama", "qwen2", "qwen3", "mistral", "phi3", "phi3-longrope")
FP16 = ("qwen2", "qwen3")
# (arch, precision) exports the tests use; int4 only to see it refused.
EXPORTS = [*((a, "fp32") for a in (*RECOVERED, "gemma")), *((a, "fp16") for a in FP16), ("llama", "int4")]

# Runs the builder's command line once per job in one process; records each failure's traceback.
_DRIVER = """
import json, runpy, sys, traceback
jobs, errors_file, errors = json.loads(sys.argv[1]), sys.argv[2], {}
for key, args in jobs.items():
    sys.argv = ["onnxruntime_genai.models.builder", *args]
    try:
        runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code not in (None, 0):
            errors[key] = traceback.format_exc()
    except Exception:
        errors[key] = traceback.format_exc()
with open(errors_file, "w") as f:
    json.dump(errors, f)
"""


def _save_tokenizer(directory: Path) -> None:
    """A word-level tokenizer over the model's vocabulary: the builder loads one (AutoTokenizer)
    for its genai_config.json and copies it on."""
    import tokenizers
    import transformers

    words = {f"w{i}": i for i in range(3, oh.VOCAB)} | {"<unk>": 0, "<s>": 1, "</s>": 2}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                         pad_token="<unk>").save_pretrained(directory)


class Exports:
    """Tiny random models, saved by transformers, and their builder exports (config.json copied in)."""

    def __init__(self, root: Path) -> None:
        import torch
        import transformers

        self.root = root
        self.models: dict[str, Any] = {}
        for arch, (config_cls, model_cls, settings) in ARCHS.items():
            config = getattr(transformers, config_cls)(**{**_COMMON, **settings})
            config._attn_implementation = "eager"
            torch.manual_seed(0)
            model = oh.randomize_(getattr(transformers, model_cls)(config), seed=0).eval()
            model.save_pretrained(self.hf(arch))
            _save_tokenizer(self.hf(arch))
            self.models[arch] = model
        jobs = {f"{a}-{p}": ["-i", str(self.hf(a)), "-o", str(self.export(a, p)), "-p", p, "-e", "cpu",
                             "-c", str(root / "cache")] for a, p in EXPORTS}
        errors_file = root / "builder-errors.json"
        run = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(jobs), str(errors_file)], capture_output=True,
                             text=True, timeout=600)
        assert errors_file.is_file(), run.stderr[-3000:]
        self.errors: dict[str, str] = json.loads(errors_file.read_text())
        for arch, precision in EXPORTS:
            if f"{arch}-{precision}" not in self.errors:
                shutil.copy(self.hf(arch) / "config.json", self.export(arch, precision) / "config.json")

    def hf(self, arch: str) -> Path:
        return self.root / "hf" / arch

    def export(self, arch: str, precision: str) -> Path:
        key = f"{arch}-{precision}"
        if key in getattr(self, "errors", {}):
            pytest.fail(f"the onnxruntime-genai builder failed for {key}:\n{self.errors[key]}")
        return self.root / "genai" / key


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return Exports(tmp_path_factory.mktemp("genai"))


def _initializers(directory: Path) -> dict[str, list[int]]:
    import onnx

    model = onnx.load(str(directory / "model.onnx"), load_external_data=False)
    assert model.producer_name == "onnxruntime-genai"
    return {i.name: list(i.dims) for i in model.graph.initializer}


def _recover(src: Path, dst: Path) -> dict[str, Any]:
    import llmstd

    return llmstd.convert(src, dst, to="hf").to_dict()


def _assert_same_tensors(want: dict[str, np.ndarray], have: dict[str, np.ndarray]) -> None:
    assert sorted(want) == sorted(have)
    for name, array in want.items():
        assert have[name].dtype == array.dtype and np.array_equal(have[name], array), name


@pytest.mark.parametrize("arch", RECOVERED)
def test_fp32_export_recovers_the_original_bit_for_bit(exports: Exports, tmp_path: Path, arch: str) -> None:
    import torch
    import transformers
    from safetensors.numpy import load_file

    src = exports.export(arch, "fp32")
    names = _initializers(src)
    # Preconditions: the builder's own naming, q|k|v packed into one [in, out] matrix.
    hidden = ARCHS[arch][2].get("hidden_size", _COMMON["hidden_size"])
    packed = names["model.layers.0.attn.qkv_proj.MatMul.weight"]
    assert packed[0] == hidden and packed[1] > hidden, packed
    assert "model.layers.2.final_norm_layernorm.weight" in names
    if arch == "qwen3":
        assert "model.layers.0.attn.q_norm.layernorm.weight" in names

    report = _recover(src, tmp_path / "hf")
    want = load_file(str(exports.hf(arch) / "model.safetensors"))
    _assert_same_tensors(want, load_file(str(tmp_path / "hf" / "model.safetensors")))
    # Every initializer is accounted for: parameters, and the rotary tables ignored with a reason
    # (LongRoPE's four are constants in the branches of an If that hands the chosen pair on).
    ignored = {i["name"]: i["reason"] for i in report["ignored"]}
    tables = [f"{t}_cache{s}" for t in ("cos", "sin") for s in (("_large", "_small") if "longrope" in arch else ("",))]
    assert sorted(ignored) == sorted(tables) and all("rotary" in r for r in ignored.values()), ignored
    assert any("onnxruntime-genai builder" in t.get("evidence", "") and "packed projection" in t["evidence"]
               for t in report["transforms"])
    if arch == "qwen2":  # tied: the head, gathered through a Transpose for the embedding, verified equal
        assert report["duplicates_dropped"] == [{"name": "lm_head.weight", "equal_to": "embed.tokens.weight"}]
    # genai_config.json describes the ONNX package: not carried into the Hugging Face directory.
    assert not (tmp_path / "hf" / "genai_config.json").exists()
    assert (tmp_path / "hf" / "tokenizer.json").is_file()

    model, info = getattr(transformers, ARCHS[arch][1]).from_pretrained(
        tmp_path / "hf", output_loading_info=True, attn_implementation="eager")
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    ids = torch.from_numpy(oh.batch(arch)["input_ids"][:2, :24])
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, exports.models[arch](ids).logits)


@pytest.mark.parametrize("arch", FP16)
def test_fp16_export_recovers_the_float16_weights(exports: Exports, tmp_path: Path, arch: str) -> None:
    import transformers
    from safetensors.numpy import load_file

    src = exports.export(arch, "fp16")
    names = _initializers(src)
    assert "model.layers.0.attn.q_proj.MatMul.weight" in names  # the fp16 CPU graph keeps q, k, v apart
    _recover(src, tmp_path / "hf")
    want = {n: a.astype(np.float16) for n, a in load_file(str(exports.hf(arch) / "model.safetensors")).items()}
    _assert_same_tensors(want, load_file(str(tmp_path / "hf" / "model.safetensors")))
    _, info = getattr(transformers, ARCHS[arch][1]).from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info


def test_export_without_config_is_refused(exports: Exports, tmp_path: Path) -> None:
    import llmstd
    from llmstd.errors import FormatError

    src = tmp_path / "export"
    shutil.copytree(exports.export("llama", "fp32"), src)
    (src / "config.json").unlink()
    with pytest.raises(FormatError) as info:
        llmstd.convert(src, tmp_path / "hf", to="hf")
    assert "onnxruntime-genai" in str(info.value) and "config.json" in str(info.value) and "-i" in str(info.value)
    assert not (tmp_path / "hf").exists()


def test_config_of_another_model_is_refused(exports: Exports, tmp_path: Path) -> None:
    """The user copies config.json by hand: one that disagrees with the graph is refused."""
    import llmstd
    from llmstd.errors import MappingError

    src = tmp_path / "export"
    shutil.copytree(exports.export("llama", "fp32"), src)
    for key, value, said in (("rms_norm_eps", 1e-5, "epsilon"), ("num_attention_heads", 2, "num_heads")):
        config = json.loads((exports.hf("llama") / "config.json").read_text())
        config[key] = value
        if key == "num_attention_heads":
            config["head_dim"] = 16  # same projection shapes, other heads: only the graph's attributes tell
        (src / "config.json").write_text(json.dumps(config))
        with pytest.raises(MappingError, match=said):
            llmstd.convert(src, tmp_path / "hf", to="hf")


def test_gemma_norms_stored_as_one_plus_w_are_refused(exports: Exports, tmp_path: Path) -> None:
    """The builder stores Gemma's norm factor 1 + w; (1 + w) - 1 is not w in floating point."""
    import llmstd
    from llmstd.errors import MappingError

    with pytest.raises(MappingError) as info:
        llmstd.convert(exports.export("gemma", "fp32"), tmp_path / "hf", to="hf")
    text = str(info.value)
    assert "input_layernorm.weight" in text and "1 + w" in text and "floating point" in text


def test_quantized_export_is_refused(exports: Exports, tmp_path: Path) -> None:
    import llmstd
    from llmstd.errors import MappingError

    with pytest.raises(MappingError, match="MatMulNBits.*cannot be recovered exactly"):
        llmstd.convert(exports.export("llama", "int4"), tmp_path / "hf", to="hf")


def _edited(src: Path, dst: Path, edit: Any) -> Path:
    import onnx

    model = onnx.load(str(src / "model.onnx"))  # with its external data
    edit(model.graph)
    dst.mkdir()
    onnx.save(model, str(dst / "model.onnx"))
    shutil.copy(src / "config.json", dst / "config.json")
    return dst


def test_zero_bias_left_out_by_the_builder_is_proven_zero(exports: Exports, tmp_path: Path) -> None:
    """The builder leaves out the Add of an all-zero bias; the graph then proves q, k and v biases zero."""
    from safetensors.numpy import load_file

    def drop_bias(graph: Any) -> None:
        (add,) = [n for n in graph.node if n.name == "/model/layers.1/attn/qkv_proj/Add"]
        for node in graph.node:
            node.input[:] = [add.input[0] if v == add.output[0] else v for v in node.input]
        graph.node.remove(add)
        graph.initializer.remove(next(i for i in graph.initializer if i.name == add.input[1]))

    src = _edited(exports.export("qwen2", "fp32"), tmp_path / "edited", drop_bias)
    report = _recover(src, tmp_path / "hf")
    zeros = {t["recovered"] for t in report["transforms"] if t.get("value") == "zeros"}
    assert zeros == {f"model.layers.1.self_attn.{x}_proj.bias" for x in "qkv"}
    want = load_file(str(exports.hf("qwen2") / "model.safetensors"))
    have = load_file(str(tmp_path / "hf" / "model.safetensors"))
    for name in want:
        expected = np.zeros_like(want[name]) if name in zeros else want[name]
        assert np.array_equal(have[name], expected), name


def test_unknown_initializer_is_an_error(exports: Exports, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    import llmstd
    from llmstd.errors import MappingError

    def add_scale(graph: Any) -> None:
        (node,) = [n for n in graph.node if n.name == "/lm_head/MatMul"]
        scale = numpy_helper.from_array(np.full(oh.VOCAB, 2.0, dtype=np.float32), "logit_scale")
        graph.initializer.append(scale)
        node.output[0] = "unscaled"
        graph.node.append(onnx.helper.make_node("Mul", ["unscaled", "logit_scale"], ["scaled"], name="/lm_head/Mul"))
        graph.output[0].name = "scaled"

    src = _edited(exports.export("llama", "fp32"), tmp_path / "edited", add_scale)
    with pytest.raises(MappingError, match="neither a parameter of the map nor a rotary table.*logit_scale"):
        llmstd.convert(src, tmp_path / "hf", to="hf")
