"""Mixture-of-experts architectures (mixtral, qwen2_moe, qwen3_moe) in both of transformers' expert
layouts, proven against transformers 5.

Each model is tiny, with EVERY parameter random and sharpened (routers included, so routing is decided
by real margins), saved by transformers' own ``save_pretrained`` twice: per expert (its default, what
4.x reads) and packed (``save_original_format=False``: ``mlp.experts.gate_up_proj [E, 2I, H]``). Configs
are awkward on purpose: qwen2_moe mixes dense and sparse layers (``mlp_only_layers``) and has a shared
expert; qwen3_moe picks 3 of 8 experts, renormalised, with a dense layer from ``decoder_sparse_step``.
"""

from __future__ import annotations

import dataclasses
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import helpers
import llmstd
from llmstd import formats, vocab
from llmstd.checking import check
from llmstd.config import CanonicalConfig
from llmstd.tensors import ArrayTensor

pytest.importorskip("torch")
pytest.importorskip("transformers")

V = helpers.VOCAB
COMMON = dict(vocab_size=V, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
# name -> (config class, model class, config kwargs, expected moe_layers)
ARCHS: dict[str, tuple[str, str, dict[str, Any], list[int]]] = {
    "mixtral": ("MixtralConfig", "MixtralForCausalLM",
                dict(COMMON, intermediate_size=48, num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2,
                     rope_theta=1000.0), [0, 1]),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                  dict(COMMON, intermediate_size=40, moe_intermediate_size=24, shared_expert_intermediate_size=48,
                       num_hidden_layers=3, num_experts=6, num_experts_per_tok=2, mlp_only_layers=[1]), [0, 2]),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM",
                  dict(COMMON, intermediate_size=40, moe_intermediate_size=24, num_hidden_layers=3, num_experts=8,
                       num_experts_per_tok=3, head_dim=16, norm_topk_prob=True, decoder_sparse_step=2), [1]),
}
LAYOUTS = {"per-expert": True, "packed": False}  # llmstd's --experts -> transformers' save_original_format
FORMATS = {"canonical": "llmstd-torch", "tf-h5": "llmstd-tf", "tf-ckpt": "llmstd-tf", "onnx": "onnxruntime"}


def build(arch: str, **overrides: Any) -> Any:
    config_cls, model_cls, kwargs, _ = ARCHS[arch]
    return helpers.sharp_random_model(config_cls, model_cls, {**kwargs, **overrides}, seed=7)


class Store(helpers.ConvertedStore):
    def hf(self, arch: str, layout: str = "per-expert") -> Path:
        if (arch, layout) not in self.dirs:
            directory = self.root / f"{arch}-hf-{layout}"
            if helpers.transformers_major() < 5:  # 4.x saves per expert only, and knows no such keyword
                assert layout == "per-expert"
                build(arch).save_pretrained(directory)
            else:
                build(arch).save_pretrained(directory, save_original_format=LAYOUTS[layout])
            self.dirs[arch, layout] = directory
        return self.dirs[arch, layout]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("moe"))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_both_layouts_read_as_the_same_canonical_model(store: Store, arch: str) -> None:
    per_expert, packed = llmstd.load(store.hf(arch, "per-expert")), llmstd.load(store.hf(arch, "packed"))
    assert (per_expert.dialect, packed.dialect) == ("hf", "hf_packed")
    assert per_expert.config == packed.config
    assert per_expert.config.moe_layers == ARCHS[arch][3]
    assert not per_expert.report.config_keys_unreviewed, per_expert.report.config_keys_unreviewed
    assert list(per_expert.tensors) == list(packed.tensors)
    for name, tensor in per_expert.tensors.items():
        assert np.array_equal(tensor.load(), packed.tensors[name].load()), name
    # Dense layers hold an MLP, sparse ones a router and experts only.
    names = set(per_expert.tensors)
    for layer in range(per_expert.config.num_layers):
        sparse = layer in ARCHS[arch][3]
        assert (vocab.UP[0].format(i=layer) in names) != sparse
        assert (vocab.ROUTER[0].format(i=layer) in names) == sparse


@pytest.mark.parametrize("fmt", ["hf", *FORMATS])
@pytest.mark.parametrize("source_layout", list(LAYOUTS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_format_back_to_hf_is_bit_identical_in_both_layouts(store: Store, tmp_path: Path, arch: str,
                                                                  source_layout: str, fmt: str) -> None:
    import transformers

    middle = tmp_path / fmt
    llmstd.convert(store.hf(arch, source_layout), middle, to=fmt)
    for layout in LAYOUTS:
        back = tmp_path / f"back-{layout}"
        llmstd.convert(middle, back, to="hf", experts=layout)
        helpers.assert_tensors_bit_identical(helpers.read_safetensors_dir(store.hf(arch, layout)), back)
        if fmt == "canonical":  # transformers 5 loads both layouts without a missing or unexpected key
            _, info = transformers.AutoModelForCausalLM.from_pretrained(str(back), output_loading_info=True)
            helpers.assert_clean_loading_info(info)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_check_passes_against_transformers_in_every_runtime(store: Store, arch: str, fmt: str) -> None:
    report = check(store.hf(arch), store.converted(arch, fmt))
    assert report.passed, report.summary()
    assert report.a.runtime == "transformers" and report.a.in_reference
    assert report.b.runtime == FORMATS[fmt], report.b.notes


@pytest.mark.parametrize("arch", list(ARCHS))
def test_packed_checkpoint_checks_against_its_per_expert_twin(store: Store, arch: str) -> None:
    """transformers 5 runs both layouts; so does check, each side in transformers."""
    report = check(store.hf(arch, "per-expert"), store.hf(arch, "packed"))
    assert report.passed and report.b.runtime == "transformers", report.summary()


def _plant(source: Path, destination: Path, layer: int, swap_router: bool) -> Path:
    """A canonical copy of ``source`` with experts 0 and 1 of ``layer`` swapped, their router rows too
    when ``swap_router`` (the same model) or not (another model)."""
    ckpt = llmstd.load(source)
    arrays = {n: np.array(t.load()) for n, t in ckpt.tensors.items()}
    for pair in (vocab.EXPERT_GATE, vocab.EXPERT_UP, vocab.EXPERT_DOWN):
        a, b = (pair[0].format(i=layer, e=e) for e in (0, 1))
        arrays[a], arrays[b] = arrays[b], arrays[a]
    if swap_router:
        router = arrays[vocab.ROUTER[0].format(i=layer)]
        router[[0, 1]] = router[[1, 0]]
    planted = dataclasses.replace(ckpt, tensors={n: ArrayTensor(a) for n, a in arrays.items()})
    destination.mkdir(parents=True)
    formats.get("canonical").write(planted, destination, formats.WriteOptions())
    return destination


@pytest.mark.parametrize("arch", list(ARCHS))
def test_experts_swapped_without_their_router_rows_fail_check_in_that_layer(store: Store, tmp_path: Path,
                                                                             arch: str) -> None:
    layer = ARCHS[arch][3][-1]
    bad = _plant(store.hf(arch), tmp_path / "bad", layer, swap_router=False)
    report = check(store.hf(arch), bad)
    assert not report.passed, report.summary()
    first = report.first_divergence
    assert first is not None and first["layer"] == layer, report.summary()
    swapped = {p[0].format(i=layer, e=e) for p in (vocab.EXPERT_GATE, vocab.EXPERT_UP, vocab.EXPERT_DOWN)
               for e in (0, 1)}
    assert set(first["differing_parameters"]) == swapped, first
    # Swapping the router rows along with the experts is a relabelling: the same model.
    same = _plant(store.hf(arch), tmp_path / "same", layer, swap_router=True)
    assert check(store.hf(arch), same).passed


@pytest.mark.parametrize("arch", list(ARCHS))
def test_routing_settings_change_transformers_logits(arch: str) -> None:
    """Control: choosing one expert fewer moves transformers' logits far beyond check's limits, so
    agreeing with it (above) proves the routing is computed, not merely the experts' average."""
    import torch

    key = "num_experts_per_tok"
    ids, mask = helpers.padded_batch(seq=64, vocab=V)
    with torch.no_grad():
        base = build(arch)(input_ids=ids, attention_mask=mask).logits
        changed = build(arch, **{key: ARCHS[arch][2][key] - 1})(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    nmse = float(((base - changed)[keep] ** 2).mean() / (base[keep] ** 2).mean())
    assert nmse > 1e-4, f"{arch}: routing one expert fewer changes logits by NMSE {nmse:.1e} only"


def test_tied_router_scores_choose_the_lower_expert_in_onnx_and_tf(store: Store, tmp_path: Path) -> None:
    """Experts whose router rows are equal score exactly alike. ONNX TopK and tf.math.top_k keep the
    lower index of equal values (both document it); torch.topk documents no order and was measured to
    choose either, so on a tie at the top-k boundary llmstd's ONNX and TF runtimes agree with each
    other, and llmstd's torch runtime (which calls torch.topk, as transformers does) with transformers."""
    ckpt = llmstd.load(store.hf("mixtral"))
    arrays = {n: np.array(t.load()) for n, t in ckpt.tensors.items()}
    for layer in ckpt.config.moe_layers:
        router = arrays[vocab.ROUTER[0].format(i=layer)]
        router[1] = router[0]
        router[0:2] *= 4.0  # experts 0 and 1 lead, tied: with one expert per token the tie decides
    config = ckpt.config.replace(experts_per_token=1)
    tied = tmp_path / "tied"
    tied.mkdir()
    formats.get("canonical").write(dataclasses.replace(ckpt, config=config, tensors={
        n: ArrayTensor(a) for n, a in arrays.items()}), tied, formats.WriteOptions())
    llmstd.convert(tied, tmp_path / "onnx", to="onnx")
    llmstd.convert(tied, tmp_path / "tf", to="tf-h5")
    report = check(tmp_path / "onnx", tmp_path / "tf")
    assert report.passed and report.b.runtime == "llmstd-tf", report.summary()


def test_packing_and_unpacking_stream_one_expert_at_a_time(tmp_path: Path) -> None:
    """Per-expert -> packed and back through a dtype cast (so parts are computed, not copied by the
    kernel): Python-side allocations stay within two packed tensors (the writer's one-ahead
    prefetch) plus a few experts, far below the model."""
    model = build("mixtral", hidden_size=128, intermediate_size=512, num_local_experts=16, vocab_size=64)
    source = tmp_path / "src"
    model.save_pretrained(source)
    ckpt = llmstd.load(source)
    packed = 16 * 2 * 512 * 128 * 2  # gate_up_proj in float16
    expert = 512 * 128 * 4
    for name, src, layout in (("packed", source, "packed"), ("unpacked", tmp_path / "packed", "per-expert")):
        tracemalloc.start()
        llmstd.convert(src, tmp_path / name, to="hf", experts=layout, dtype="float16" if name == "packed" else "keep")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 2 * packed + 4 * expert, (name, peak, ckpt.nbytes)
    from safetensors.numpy import load_file

    original, unpacked = load_file(source / "model.safetensors"), load_file(tmp_path / "unpacked" / "model.safetensors")
    assert set(original) == set(unpacked)
    for name, array in original.items():
        assert np.array_equal(array.astype(np.float16), unpacked[name]), name


def test_canonical_config_validates_expert_fields() -> None:
    ckpt_config = dict(
        architecture="mixtral", head="causal_lm", causal=True, vocab_size=8, hidden_size=8, num_layers=2,
        num_heads=2, num_kv_heads=2, head_dim=4, intermediate_size=8, max_positions=16, norm_kind="rmsnorm",
        norm_eps=1e-5, norm_position="pre", norm_bias=False, norm_weight_offset=0.0, final_norm=True,
        embedding_norm=False, mlp_norm=True, activation="silu", gated_mlp=True, positional="rope", rope_theta=1e4,
        rotary_dim=4, rope_scaling=None, attn_qkv_bias=False, attn_out_bias=False, mlp_bias=False, lm_head_bias=False,
        tie_word_embeddings=False, parallel_residual=False, type_vocab_size=0, pooler=False, sliding_window=None,
        layer_types=None, qk_norm=False, embedding_scale=None, attention_scale_dim=None, attn_logit_softcap=None,
        final_logit_softcap=None, rope_theta_sliding=None, rope_scaling_sliding=None, bos_token_id=None,
        eos_token_id=None, pad_token_id=None, dtype="float32", num_experts=4, experts_per_token=2,
        moe_intermediate_size=8, moe_layers=[0, 1], moe_normalize_weights=True, shared_expert_intermediate_size=0,
        shared_expert_gate=False)
    config = CanonicalConfig(**ckpt_config)
    assert sum(".experts." in n for n in vocab.expected_tensors(config)) == 2 * 4 * 3
    from llmstd.errors import ConfigError

    for bad, message in ((dict(experts_per_token=5), "experts_per_token"), (dict(moe_layers=[1, 0]), "moe_layers"),
                         (dict(moe_layers=[2]), "moe_layers"), (dict(shared_expert_gate=True), "shared_expert_gate"),
                         (dict(num_experts=0), "must not set"), (dict(num_experts=10**6), "num_experts")):
        with pytest.raises(ConfigError, match=message):
            CanonicalConfig(**{**ckpt_config, **bad})


# -- generation (ONNX with a key/value cache, onnxruntime-genai) --------------------------------


@pytest.mark.parametrize("arch", list(ARCHS))
def test_cached_onnx_generation_is_token_identical_to_generate(store: Store, arch: str) -> None:
    """32 greedy tokens from a left-padded batch of two prompts: onnxruntime driving the cache by hand
    gives transformers 5 generate's tokens (routing decided afresh at every step), each step's logits
    within check's float32 limit."""
    helpers.assert_cached_onnx_generation_matches(store.converted(arch, "onnx"), build(arch))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_onnxruntime_genai_package_generates_as_transformers(store: Store, tmp_path: Path, arch: str) -> None:
    pytest.importorskip("onnxruntime_genai")

    package = tmp_path / "genai"
    llmstd.convert(store.hf(arch, "packed"), package, to="onnx", onnx_package="genai")
    assert json.loads((package / "genai_config.json").read_text())["model"]["decoder"]["num_key_value_heads"] == 2
    prompt = helpers.padded_batch(seq=40, vocab=V)[0][0].numpy()
    np.testing.assert_array_equal(helpers.greedy_genai(package, prompt), helpers.greedy_with_eos(build(arch), prompt))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_check_decode_steps_against_onnx(store: Store, arch: str) -> None:
    report = check(store.hf(arch), store.converted(arch, "onnx"), decode_steps=8, hidden_states=False)
    assert report.passed, report.summary()
    assert report.decode is not None and report.decode.greedy_agreement == 1.0


# -- transformers 4.57 ------------------------------------------------------------------------


def test_written_config_is_the_same_model_in_transformers_4(store: Store, legacy_python: str, tmp_path: Path) -> None:
    """llmstd's HF output (per expert, as 4.x reads) of each transformers 5 save -- packed included --
    loads in transformers 4.57 as the same model: Qwen3-MoE's expert count is written as num_experts
    (5.x writes num_local_experts, which 4.57 would ignore for its default of 128)."""
    models = {}
    for arch in ARCHS:
        out = tmp_path / arch
        llmstd.convert(store.hf(arch, "packed"), out, to="hf")
        assert "num_local_experts" not in json.loads((out / "config.json").read_text()) or arch == "mixtral"
        models[arch] = (out, build(arch))
    helpers.assert_transformers_4_computes(legacy_python, tmp_path, models, seq=64)


@pytest.mark.legacy
@pytest.mark.parametrize("fmt", ["canonical", "onnx"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_saved_by_transformers_4_converts_and_checks(store: Store, tmp_path: Path, arch: str, fmt: str) -> None:
    import transformers

    src = store.hf(arch)
    out = store.converted(arch, fmt)
    llmstd.convert(out, tmp_path / "hf", to="hf")
    helpers.assert_tensors_bit_identical(helpers.read_safetensors_dir(src), tmp_path / "hf")
    _, info = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    helpers.assert_clean_loading_info(info)
    report = check(src, out)
    assert report.passed, report.summary()
    assert report.a.runtime == "transformers" and report.a.in_reference


# -- bad input ----------------------------------------------------------------------------------


def test_hostile_expert_keys_are_refused_by_name(store: Store, tmp_path: Path) -> None:
    import shutil

    from llmstd.errors import ConfigError

    for key, value, needle in (("mlp_only_layers", 5, "mlp_only_layers"), ("num_experts", 10**7, "num_experts"),
                               ("num_experts_per_tok", 99, "experts_per_token")):
        bad = tmp_path / key
        shutil.copytree(store.hf("qwen2_moe"), bad)
        config = json.loads((bad / "config.json").read_text())
        config[key] = value
        (bad / "config.json").write_text(json.dumps(config))
        with pytest.raises(ConfigError, match=needle):
            llmstd.load(bad)


def test_experts_option_applies_to_hf_only(store: Store, tmp_path: Path) -> None:
    from llmstd.errors import LlmstdError

    with pytest.raises(LlmstdError, match="--experts packed applies to --to hf"):
        llmstd.convert(store.hf("mixtral"), tmp_path / "x", to="canonical", experts="packed")
    with pytest.raises(LlmstdError, match="unknown experts layout"):
        llmstd.convert(store.hf("mixtral"), tmp_path / "y", to="hf", experts="stacked")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
