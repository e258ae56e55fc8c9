"""Today's dense architectures (qwen3, gemma, gemma2, gemma3_text, phi3, gpt_neox) on the one model
definition, proven against transformers 5.

Each model is tiny, saved by transformers' own ``save_pretrained``, with EVERY parameter random and
sharpened (norm weights included, so a ``1 + w`` offset applied twice or not at all shows) and a
config chosen to be awkward: GQA and MQA, tied and untied, head_dim != hidden/heads, sliding windows
shorter than check's 128-token inputs, soft-caps low enough to bite, LongRoPE beyond its original
context, partial rotary. For every format llmstd writes: HF -> format -> HF is bit-identical and
loads without missing or unexpected keys, and ``llmstd check`` against the transformers original
passes with each side in its own reference runtime (onnxruntime for ONNX, llmstd's TF runtime for
the TF formats, llmstd-torch for canonical). A control per architecture shows that the awkward
settings change transformers' own logits, so agreeing with it proves they are computed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import helpers
import llmstd
from llmstd.checking import check

pytest.importorskip("torch")
pytest.importorskip("transformers")

V = helpers.VOCAB
SMALL = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
             max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
LONG_FACTORS = dict(short_factor=[1.0, 1.3, 2.1, 3.0], long_factor=[1.5, 2.5, 4.0, 7.0])

# name -> (config class, model class, config kwargs, a setting that must change the logits)
ARCHS: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM",
              dict(SMALL, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False, rope_theta=1000.0),
              dict(rope_theta=10000.0)),
    "qwen3-tied": ("Qwen3Config", "Qwen3ForCausalLM",
                   dict(SMALL, num_key_value_heads=4, head_dim=12, tie_word_embeddings=True), dict(rms_norm_eps=0.5)),
    "gemma-mqa": ("GemmaConfig", "GemmaForCausalLM",
                  dict(SMALL, num_key_value_heads=1, head_dim=16), dict(hidden_act="silu")),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               dict(SMALL, num_key_value_heads=2, head_dim=16, sliding_window=8, query_pre_attn_scalar=24,
                    attn_logit_softcapping=4.0, final_logit_softcapping=3.0, tie_word_embeddings=False),
               dict(attn_logit_softcapping=None)),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM",
                    dict(SMALL, num_hidden_layers=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                         sliding_window_pattern=2, rope_theta=5000.0, rope_local_base_freq=100.0,
                         final_logit_softcapping=6.0),
                    dict(rope_local_base_freq=5000.0)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM",
             dict(SMALL, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, partial_rotary_factor=0.5,
                  original_max_position_embeddings=32,
                  rope_scaling=dict(type="longrope", **LONG_FACTORS),  # the spelling 4.57's Phi3Config demands
                  pad_token_id=0, bos_token_id=1, eos_token_id=2),
             dict(rope_scaling=dict(type="longrope", short_factor=LONG_FACTORS["short_factor"],
                                    long_factor=LONG_FACTORS["short_factor"]))),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM",
                 dict(SMALL, hidden_size=64, rotary_pct=0.5, rotary_emb_base=500.0, use_parallel_residual=True),
                 dict(rotary_pct=1.0)),
    "gpt_neox-sequential": ("GPTNeoXConfig", "GPTNeoXForCausalLM",
                            dict(SMALL, hidden_size=64, rotary_pct=0.25, use_parallel_residual=False,
                                 attention_bias=False),
                            dict(use_parallel_residual=True)),
}
# format -> the runtime check must run it in (its reference runtime, or llmstd's own for canonical)
FORMATS = {"canonical": "llmstd-torch", "tf-h5": "llmstd-tf", "tf-ckpt": "llmstd-tf", "onnx": "onnxruntime"}


def build(arch: str, **overrides: Any) -> Any:
    config_cls, model_cls, kwargs, _ = ARCHS[arch]
    return helpers.sharp_random_model(config_cls, model_cls, {**kwargs, **overrides}, seed=5)


class Store(helpers.ConvertedStore):
    def hf(self, arch: str) -> Path:
        if (arch, "hf") not in self.dirs:
            self.dirs[arch, "hf"] = helpers.save(build(arch), self.root / f"{arch}-hf", "safetensors")
        return self.dirs[arch, "hf"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("dense"))


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_format_round_trips_and_checks_against_transformers(store: Store, tmp_path: Path, arch: str, fmt: str) -> None:
    src = store.hf(arch)
    out = store.converted(arch, fmt)
    back = tmp_path / "hf"
    llmstd.convert(out, back, to="hf")
    helpers.assert_tensors_bit_identical(helpers.read_safetensors_dir(src), back)
    import transformers

    _, info = transformers.AutoModelForCausalLM.from_pretrained(str(back), output_loading_info=True)
    helpers.assert_clean_loading_info(info)

    report = check(src, out)
    assert report.passed, report.summary()
    assert report.a.runtime == "transformers" and report.a.in_reference
    assert report.b.runtime == FORMATS[fmt], report.b.notes
    assert report.inputs["seq_len"] == 128


@pytest.mark.parametrize("arch", list(ARCHS))
def test_the_awkward_setting_changes_transformers_logits(store: Store, arch: str) -> None:
    """Control: with the one setting changed transformers' logits move far beyond check's limits, so
    agreeing with transformers (above) proves llmstd computes that setting."""
    import torch

    ids, mask = helpers.padded_batch(seq=100, vocab=V)
    with torch.no_grad():
        base = build(arch)(input_ids=ids, attention_mask=mask).logits
        changed = build(arch, **ARCHS[arch][3])(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    nmse = float(((base - changed)[keep] ** 2).mean() / (base[keep] ** 2).mean())
    assert nmse > 1e-6, f"{arch}: {ARCHS[arch][3]} changes logits by NMSE {nmse:.1e} only"


@pytest.mark.parametrize("arch", list(ARCHS))
def test_canonical_config_records_the_architecture(store: Store, arch: str) -> None:
    config = llmstd.load(store.converted(arch, "canonical")).config
    kwargs = ARCHS[arch][2]
    assert config.architecture == arch.split("-")[0]
    if "head_dim" in kwargs:
        assert config.head_dim == kwargs["head_dim"] != config.hidden_size // config.num_heads
    if arch.startswith("gemma"):
        assert config.norm_weight_offset == 1.0
        assert config.embedding_scale == pytest.approx(config.hidden_size ** 0.5)
    if arch == "gemma2":
        assert config.norm_position == "sandwich"
        assert (config.attn_logit_softcap, config.final_logit_softcap, config.attention_scale_dim) == (4.0, 3.0, 24)
        assert config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]
    if arch == "gemma3_text":
        assert config.qk_norm and config.rope_theta == 5000.0 and config.rope_theta_sliding == 100.0
        assert config.layer_types == ["sliding_attention", "full_attention"] * 2
    if arch == "phi3":
        assert config.rotary_dim == config.head_dim // 2
        assert config.rope_scaling is not None and config.rope_scaling["rope_type"] == "longrope"
    if arch.startswith("gpt_neox"):
        assert config.parallel_residual == kwargs["use_parallel_residual"]
        assert config.rotary_dim == int(config.head_dim * kwargs["rotary_pct"])
    if arch == "gpt_neox":
        assert config.rope_theta == 500.0


def test_gemma_norm_weights_are_stored_as_in_the_file(store: Store) -> None:
    """The (1 + w) offset is a config field, never a change of the stored values."""
    src = helpers.read_safetensors_dir(store.hf("gemma2"))
    canonical = llmstd.load(store.converted("gemma2", "canonical"))
    stored = np.asarray(canonical["layers.0.attn_post_norm.weight"].load())
    assert np.array_equal(stored, src["model.layers.0.post_attention_layernorm.weight"].numpy())


def test_phi3_fused_projections_split_into_canonical_blocks(store: Store) -> None:
    src = helpers.read_safetensors_dir(store.hf("phi3"))
    ckpt = llmstd.load(store.converted("phi3", "canonical"))
    qkv = src["model.layers.1.self_attn.qkv_proj.weight"].numpy()
    q, k, v = (np.asarray(ckpt[f"layers.1.attn.{x}.weight"].load()) for x in "qkv")
    assert q.shape == (64, 64) and k.shape == v.shape == (32, 64)
    assert np.array_equal(np.concatenate([q, k, v]), qkv)
    gate_up = src["model.layers.1.mlp.gate_up_proj.weight"].numpy()
    gate, up = (np.asarray(ckpt[f"layers.1.mlp.{x}.weight"].load()) for x in ("gate", "up"))
    assert np.array_equal(gate, gate_up[:64]) and np.array_equal(up, gate_up[64:])


def test_gpt_neox_fused_qkv_is_deinterleaved_per_head(store: Store) -> None:
    src = helpers.read_safetensors_dir(store.hf("gpt_neox"))
    ckpt = llmstd.load(store.converted("gpt_neox", "canonical"))
    fused = src["gpt_neox.layers.0.attention.query_key_value.weight"].numpy().reshape(4, 3, 16, 64)
    for part, name in enumerate("qkv"):
        got = np.asarray(ckpt[f"layers.0.attn.{name}.weight"].load())
        assert np.array_equal(got, fused[:, part].reshape(64, 64)), name


# -- transformers 4.57 ------------------------------------------------------------------------
# The same architectures saved by transformers 4.57 (its config spellings: rope_theta, rope_scaling,
# rotary_emb_base/rotary_pct, torch_dtype, ...) convert the same way and check against 4.57 itself.


@pytest.mark.legacy
@pytest.mark.parametrize("fmt", ["canonical", "onnx"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_saved_by_transformers_4_converts_and_checks(store: Store, tmp_path: Path, arch: str, fmt: str) -> None:
    src = store.hf(arch)
    assert "rope_parameters" not in (src / "config.json").read_text()  # a 4.x spelling
    out = store.converted(arch, fmt)
    llmstd.convert(out, tmp_path / "hf", to="hf")
    helpers.assert_tensors_bit_identical(helpers.read_safetensors_dir(src), tmp_path / "hf")
    import transformers

    _, info = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    helpers.assert_clean_loading_info(info)
    report = check(src, out)
    assert report.passed, report.summary()
    assert report.a.runtime == "transformers" and report.a.in_reference
    assert report.b.runtime == FORMATS[fmt]


def test_written_config_is_the_same_model_in_transformers_4(store: Store, legacy_python: str, tmp_path: Path) -> None:
    """llmstd's HF output of each transformers 5 save loads in transformers 4.57 (a subprocess of the
    legacy environment) as the same model: its logits equal transformers 5's within check's float32
    limits (the two generations' kernels may round differently)."""
    models = {}
    for arch in ARCHS:
        llmstd.convert(store.converted(arch, "canonical"), tmp_path / arch, to="hf")
        models[arch] = (tmp_path / arch, build(arch))
    helpers.assert_transformers_4_computes(legacy_python, tmp_path, models)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_cached_onnx_generation_is_token_identical_to_generate(store: Store, arch: str) -> None:
    """Greedy generation of 32 new tokens from a left-padded batch of two prompts: onnxruntime driving
    the graph's key/value cache by hand gives transformers 5 ``generate``'s tokens, every step's
    logits within check's float32 limit (windows of 8 are outgrown, LongRoPE switches to its long
    factors past 32 positions)."""
    helpers.assert_cached_onnx_generation_matches(store.converted(arch, "onnx"), build(arch))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_onnxruntime_genai_package_generates_as_transformers(store: Store, tmp_path: Path, arch: str) -> None:
    """``--onnx-package genai``: onnxruntime_genai.Model(dir) generates up to 32 greedy tokens (until
    eos) identical to transformers 5 ``generate`` from one prompt; the package still converts back
    bit-identically."""
    pytest.importorskip("onnxruntime_genai")

    package = tmp_path / "genai"
    llmstd.convert(store.hf(arch), package, to="onnx", onnx_package="genai")
    genai_config = json.loads((package / "genai_config.json").read_text())
    assert genai_config["model"]["decoder"]["num_key_value_heads"] == ARCHS[arch][2].get("num_key_value_heads", 4)
    prompt = helpers.padded_batch(seq=40, vocab=V)[0][0].numpy()
    np.testing.assert_array_equal(helpers.greedy_genai(package, prompt), helpers.greedy_with_eos(build(arch), prompt))
    llmstd.convert(package, tmp_path / "hf", to="hf")
    helpers.assert_tensors_bit_identical(helpers.read_safetensors_dir(store.hf(arch)), tmp_path / "hf")
    assert not (tmp_path / "hf" / "genai_config.json").exists()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_check_decode_steps_compares_cached_generation(store: Store, arch: str) -> None:
    """``check --decode-steps``: the prompt and 8 cached steps, transformers (its cache) against
    onnxruntime (the graph's cache), every step within tolerance and greedy tokens identical."""
    report = check(store.hf(arch), store.converted(arch, "onnx"), decode_steps=8, hidden_states=False)
    assert report.passed, report.summary()
    assert report.decode is not None and len(report.decode.steps) == 9
    assert report.decode.greedy_agreement == 1.0
    assert "cached decode steps" in report.summary()
    json.loads(report.to_json())


@pytest.mark.parametrize("fmt", ["canonical", "tf-ckpt"])
def test_check_decode_steps_in_llmstd_runtimes(store: Store, fmt: str) -> None:
    report = check(store.hf("gemma3_text"), store.converted("gemma3_text", fmt), decode_steps=6, hidden_states=False)
    assert report.passed, report.summary()
    assert report.b.runtime == FORMATS[fmt] and report.decode.greedy_agreement == 1.0


def test_check_decode_steps_fails_on_a_wrong_sliding_base(store: Store, tmp_path: Path) -> None:
    """Control: a canonical copy whose sliding layers' rotary base is wrong fails, already at the
    prompt and at every cached step after it."""
    import shutil

    from llmstd.converters import safetensors_io
    from llmstd.formats import canonical

    bad = tmp_path / "bad"
    shutil.copytree(store.converted("gemma3_text", "canonical"), bad)
    path = bad / canonical.SINGLE
    meta = dict(safetensors_io.open_file(path).metadata)
    config = json.loads(meta[canonical.KEY_CONFIG])
    config["rope_theta_sliding"] = 5000.0
    meta[canonical.KEY_CONFIG] = json.dumps(config)
    safetensors_io.rewrite_metadata(path, meta)
    report = check(store.hf("gemma3_text"), bad, decode_steps=4, hidden_states=False)
    assert not report.passed
    assert report.decode is not None and not any(s.logits.passed for s in report.decode.steps)
