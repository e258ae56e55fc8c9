"""KerasHub presets (format ``keras-hub``) against KerasHub itself and transformers 5.

For every architecture KerasHub has a backbone for: a tiny transformers model with every parameter
random and sharpened -> keras-hub preset -> ``keras_hub.models.<Task>.from_preset`` under the
TensorFlow backend computes transformers' logits (``llmstd check``, each side in its reference
runtime), and the preset converts back to Hugging Face bit for bit. A preset saved by KerasHub's own
``save_to_preset`` (every variable random) converts to Hugging Face, and transformers computes
KerasHub's outputs. Also: what KerasHub cannot express is refused by field, a damaged preset fails
the check at the damaged layer, sharded weights, and a trained checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import helpers
import llmstd
from llmstd.checking import check
from llmstd.errors import ConfigError, FormatError

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
pytest.importorskip("torch")
pytest.importorskip("transformers")
keras_hub = pytest.importorskip("keras_hub")

V = helpers.VOCAB
SMALL = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
             max_position_embeddings=128, bos_token_id=1, eos_token_id=2)

# name -> (llmstd architecture, transformers config class, model class, config kwargs)
ARCHS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    # mixture of experts (packed per layer in KerasHub): a sliding window shorter than the check's inputs,
    # 6 experts top-3, one kv head
    "mixtral": ("mixtral", "MixtralConfig", "MixtralForCausalLM",
                dict(SMALL, intermediate_size=40, num_key_value_heads=1, num_local_experts=6, num_experts_per_tok=3,
                     rope_theta=5000.0, rms_norm_eps=1e-5, sliding_window=40, tie_word_embeddings=False)),
    # every layer sparse (KerasHub's QwenMoe cannot mix dense layers in: refused), renormalised top-2 of 5
    "qwen2_moe": ("qwen2_moe", "Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                  dict(SMALL, intermediate_size=40, moe_intermediate_size=24, shared_expert_intermediate_size=48,
                       num_key_value_heads=2, num_experts=5, num_experts_per_tok=2, norm_topk_prob=True,
                       rope_theta=20000.0, rms_norm_eps=1e-5)),
    # layer 1 dense, top-3 of 8 not renormalised, head_dim 16 != hidden / heads, tied
    "qwen3_moe": ("qwen3_moe", "Qwen3MoeConfig", "Qwen3MoeForCausalLM",
                  dict(SMALL, intermediate_size=40, moe_intermediate_size=24, num_key_value_heads=2, num_experts=8,
                       num_experts_per_tok=3, head_dim=16, norm_topk_prob=False, mlp_only_layers=[1],
                       rope_theta=20000.0, tie_word_embeddings=True)),
    # a window shorter than the check's inputs, head_dim 16 != hidden / heads (KerasHub Mistral is always untied)
    "mistral": ("mistral", "MistralConfig", "MistralForCausalLM",
                dict(SMALL, num_key_value_heads=2, head_dim=16, sliding_window=5, rope_theta=20000.0,
                     rms_norm_eps=1e-5, tie_word_embeddings=False)),
    # no window (null: KerasHub's None, not its default 512 or transformers' absent-key 4096)
    "mistral-nowindow": ("mistral", "MistralConfig", "MistralForCausalLM",
                         dict(SMALL, num_key_value_heads=1, sliding_window=None, tie_word_embeddings=False)),
    "qwen2": ("qwen2", "Qwen2Config", "Qwen2ForCausalLM",
              dict(SMALL, num_key_value_heads=2, rope_theta=20000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)),
    "qwen2-tied": ("qwen2", "Qwen2Config", "Qwen2ForCausalLM",
                   dict(SMALL, num_key_value_heads=1, tie_word_embeddings=True)),
    # rms_norm_eps 1e-5 = KerasHub's hard-wired q/k-norm epsilon: the same computation exactly
    "qwen3": ("qwen3", "Qwen3Config", "Qwen3ForCausalLM",
              dict(SMALL, num_key_value_heads=2, head_dim=16, rope_theta=20000.0, rms_norm_eps=1e-5,
                   tie_word_embeddings=False)),
    # multi-query, head_dim 12 != hidden / heads (KerasHub's Gemma: rope base 10000 and eps 1e-6 hard-wired)
    "gemma": ("gemma", "GemmaConfig", "GemmaForCausalLM",
              dict(SMALL, num_key_value_heads=1, head_dim=12, hidden_act="gelu_pytorch_tanh")),
    # soft caps low enough to bite, a window shorter than the check's inputs, query_pre_attn_scalar =
    # head_dim 12 != hidden / heads (KerasHub scales by head_dim whatever it is told: see gemma2.toml)
    "gemma2": ("gemma2", "Gemma2Config", "Gemma2ForCausalLM",
               dict(SMALL, intermediate_size=40, num_key_value_heads=2, head_dim=12, query_pre_attn_scalar=12,
                    attn_logit_softcapping=3.0, final_logit_softcapping=5.0, sliding_window=16)),
    # 7 layers: five sliding, one global (KerasHub's hard-wired pattern), one sliding again; a window
    # shorter than the check's inputs; a final soft cap; an attention soft cap transformers ignores
    # (written as KerasHub's null); multi-query, head_dim 12
    "gemma3_text": ("gemma3_text", "Gemma3TextConfig", "Gemma3ForCausalLM",
                    dict(SMALL, intermediate_size=40, num_hidden_layers=7, num_key_value_heads=1, head_dim=12,
                         query_pre_attn_scalar=12, attn_logit_softcapping=3.0, final_logit_softcapping=5.0,
                         sliding_window=16)),
    "llama": ("llama", "LlamaConfig", "LlamaForCausalLM",
              dict(SMALL, num_key_value_heads=2, tie_word_embeddings=False, rope_theta=5000.0, rms_norm_eps=1e-5)),
    "llama-tied": ("llama", "LlamaConfig", "LlamaForCausalLM",
                   dict(SMALL, num_key_value_heads=1, tie_word_embeddings=True)),
    # Llama 3.1's rope scaling, its original context (16) far inside check's 128 tokens so it bites
    "llama3-rope": ("llama", "LlamaConfig", "LlamaForCausalLM",
                    dict(SMALL, num_key_value_heads=2, rope_theta=500000.0,
                         rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                           original_max_position_embeddings=16))),
    "gpt2": ("gpt2", "GPT2Config", "GPT2LMHeadModel",
             dict(vocab_size=V, n_positions=128, n_embd=32, n_layer=3, n_head=4, n_inner=48, bos_token_id=0,
                  eos_token_id=0)),
    # transformers' BertModel with the tanh gelu KerasHub runs (its exact gelu is refused: see below)
    "bert": ("bert", "BertConfig", "BertModel",
             dict(vocab_size=V, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                  max_position_embeddings=128, type_vocab_size=3, hidden_act="gelu_new")),
}

# name -> (KerasHub backbone class, task class or None for a backbone alone, backbone kwargs): presets
# saved by KerasHub itself
KERAS_OWN: dict[str, tuple[str, str | None, dict[str, Any]]] = {
    "mixtral": ("MixtralBackbone", "MixtralCausalLM",
                dict(vocabulary_size=V, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
                     intermediate_dim=40, num_experts=5, top_k=2, rope_max_wavelength=500.0, layer_norm_epsilon=1e-5,
                     sliding_window=None)),
    "qwen2_moe": ("QwenMoeBackbone", "QwenMoeCausalLM",
                  dict(vocabulary_size=V, num_layers=2, num_query_heads=4, num_key_value_heads=1, hidden_dim=32,
                       intermediate_dim=40, moe_intermediate_dim=16, shared_expert_intermediate_dim=24, num_experts=6,
                       top_k=3, norm_top_k_prob=False, rope_max_wavelength=500.0, layer_norm_epsilon=1e-5,
                       tie_word_embeddings=True)),
    # layers 0 and 2 dense (decoder_sparse_step 2); no window (KerasHub's default 32768 is refused)
    "qwen3_moe": ("Qwen3MoeBackbone", "Qwen3MoeCausalLM",
                  dict(vocabulary_size=V, num_layers=3, num_query_heads=4, num_key_value_heads=2, head_dim=12,
                       hidden_dim=32, intermediate_dim=40, moe_intermediate_dim=16, num_experts=4, top_k=2,
                       norm_top_k_prob=True, decoder_sparse_step=2, rope_max_wavelength=500.0,
                       sliding_window_size=None)),
    "mistral": ("MistralBackbone", "MistralCausalLM",
                dict(vocabulary_size=V, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
                     head_dim=16, intermediate_dim=48, sliding_window=7, rope_max_wavelength=500.0,
                     layer_norm_epsilon=1e-5)),
    "qwen2": ("QwenBackbone", "QwenCausalLM",
              dict(vocabulary_size=V, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
                   intermediate_dim=48, rope_max_wavelength=500.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True)),
    # no window (KerasHub's default 32768 is refused); epsilon 1e-5 = its q/k-norm epsilon
    "qwen3": ("Qwen3Backbone", "Qwen3CausalLM",
              dict(vocabulary_size=V, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
                   head_dim=16, intermediate_dim=48, rope_max_wavelength=500.0, layer_norm_epsilon=1e-5,
                   tie_word_embeddings=False, sliding_window_size=None)),
    "gemma": ("GemmaBackbone", "GemmaCausalLM",
              dict(vocabulary_size=V, num_layers=2, num_query_heads=4, num_key_value_heads=1, hidden_dim=32,
                   head_dim=12, intermediate_dim=80)),
    # GemmaBackbone again, with Gemma 2's switches: read as gemma2
    "gemma2": ("GemmaBackbone", "GemmaCausalLM",
               dict(vocabulary_size=V, num_layers=3, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
                    head_dim=12, intermediate_dim=80, use_post_ffw_norm=True, use_post_attention_norm=True,
                    attention_logit_soft_cap=3.0, final_logit_soft_cap=5.0, use_sliding_window_attention=True,
                    sliding_window_size=16)),
    "gemma3_text": ("Gemma3Backbone", "Gemma3CausalLM",
                    dict(vocabulary_size=V, image_size=None, num_layers=7, num_query_heads=4, num_key_value_heads=2,
                         hidden_dim=32, head_dim=12, intermediate_dim=40, use_post_ffw_norm=True,
                         use_post_attention_norm=True, final_logit_soft_cap=5.0, use_sliding_window_attention=True,
                         sliding_window_size=16)),
    "llama": ("Llama3Backbone", "Llama3CausalLM",
              dict(vocabulary_size=V, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
                   intermediate_dim=48, rope_max_wavelength=500.0, layer_norm_epsilon=1e-5)),
    "llama3-rope": ("Llama3Backbone", "Llama3CausalLM",
                    dict(vocabulary_size=V, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
                         intermediate_dim=48, rope_max_wavelength=500000.0, rope_frequency_adjustment_factor=8.0,
                         rope_low_freq_factor=1.0, rope_high_freq_factor=4.0, rope_pretraining_sequence_length=16)),
    "gpt2": ("GPT2Backbone", "GPT2CausalLM",
             dict(vocabulary_size=V, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=48,
                  max_sequence_length=64)),
    "bert": ("BertBackbone", None,
             dict(vocabulary_size=V, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=48,
                  max_sequence_length=64, num_segments=3)),
}


class Store(helpers.ConvertedStore):
    def hf(self, arch: str) -> Path:
        if (arch, "hf") not in self.dirs:
            _, config_cls, model_cls, kwargs = ARCHS[arch]
            model = helpers.sharp_random_model(config_cls, model_cls, kwargs, seed=7)
            self.dirs[arch, "hf"] = helpers.save(model, self.root / f"{arch}-hf", "safetensors")
        return self.dirs[arch, "hf"]

    def keras_own(self, name: str) -> Path:
        """A preset saved by KerasHub's save_to_preset, every variable random (norm scales near 1)."""
        if (name, "keras-own") not in self.dirs:
            backbone_cls, task_cls, kwargs = KERAS_OWN[name]
            backbone = getattr(keras_hub.models, backbone_cls)(**kwargs)
            rng = np.random.default_rng(11)
            for var in backbone.weights:
                shape = tuple(var.shape)
                scale = 0.1 if len(shape) == 1 else 0.4
                var.assign((rng.standard_normal(shape) * scale + (1.0 if len(shape) == 1 else 0.0)).astype("float32"))
            saved = backbone if task_cls is None else getattr(keras_hub.models, task_cls)(backbone=backbone,
                                                                                        preprocessor=None)
            out = self.root / f"{name}-keras-own"
            saved.save_to_preset(str(out))
            self.dirs[name, "keras-own"] = out
        return self.dirs[name, "keras-own"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("keras-hub"))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_preset_runs_in_keras_hub_as_transformers_and_converts_back_bit_identical(
        store: Store, tmp_path: Path, arch: str) -> None:
    src = store.hf(arch)
    preset = store.converted(arch, "keras-hub")
    report = check(src, preset)
    assert report.passed, report.summary()
    assert report.a.runtime == "transformers" and report.a.in_reference
    assert report.b.runtime == "keras-hub" and report.b.in_reference, report.b.notes
    assert report.inputs["seq_len"] == 128

    back = tmp_path / "hf"
    llmstd.convert(preset, back, to="hf")
    helpers.assert_tensors_bit_identical(helpers.read_safetensors_dir(src), back)
    import transformers

    _, info = getattr(transformers, ARCHS[arch][2]).from_pretrained(str(back), output_loading_info=True)
    helpers.assert_clean_loading_info(info)
    # the config.json llmstd writes for the original itself, key for key
    direct = tmp_path / "direct"
    llmstd.convert(src, direct, to="hf")
    assert json.loads((back / "config.json").read_text()) == json.loads((direct / "config.json").read_text())


@pytest.mark.parametrize("name", list(KERAS_OWN))
def test_preset_saved_by_keras_hub_converts_and_transformers_computes_it(
        store: Store, tmp_path: Path, name: str) -> None:
    preset = store.keras_own(name)
    hf_dir = tmp_path / "hf"
    llmstd.convert(preset, hf_dir, to="hf")
    report = check(preset, hf_dir)
    assert report.passed, report.summary()
    assert report.a.runtime == "keras-hub" and report.a.in_reference
    assert report.b.runtime == "transformers" and report.b.in_reference
    # and back: the preset llmstd writes holds KerasHub's variables bit for bit
    again = tmp_path / "keras-hub"
    llmstd.convert(hf_dir, again, to="keras-hub")
    from llmstd.converters import keras3_h5

    theirs = keras3_h5.read_weights(preset / "model.weights.h5")
    ours = keras3_h5.read_weights(again / "model.weights.h5")
    assert set(ours) == set(theirs)
    for key, tensor in theirs.items():
        assert helpers.np_bytes(ours[key].load()) == helpers.np_bytes(tensor.load()), key


def test_a_damaged_layer_fails_the_check_there(store: Store, tmp_path: Path) -> None:
    """Two query heads of layer 1 swapped in the preset's einsum kernel: KerasHub's output differs
    from transformers', and the localisation names layer 1."""
    import h5py

    preset = tmp_path / "preset"
    shutil.copytree(store.converted("llama", "keras-hub"), preset)
    with h5py.File(preset / "model.weights.h5", "r+") as f:
        kernel = f["layers/llama_transformer_decoder_1/_self_attention_layer/_query_dense/vars/0"]
        value = kernel[()]
        kernel[()] = value[:, [1, 0, 2, 3], :]
    report = check(store.hf("llama"), preset)
    assert not report.passed
    first = next(layer for layer in report.layers if layer.diverged)
    assert first.layer == 1, report.summary()


# (name, transformers config class, model class, config kwargs, the canonical field KerasHub cannot express)
INEXPRESSIBLE = [
    ("llama-qkv-bias", "LlamaConfig", "LlamaForCausalLM", dict(SMALL, attention_bias=True), "attn_qkv_bias"),
    ("llama-head-dim", "LlamaConfig", "LlamaForCausalLM", dict(SMALL, head_dim=16), "head_dim"),
    ("llama-linear-rope", "LlamaConfig", "LlamaForCausalLM",
     dict(SMALL, rope_scaling=dict(rope_type="linear", factor=2.0)), "rope_scaling"),
    # KerasHub's Gemma/Gemma 2/Gemma 3 scale queries by 1/sqrt(head_dim) whatever query_head_dim_normalize says
    ("gemma2-query-pre-attn-scalar", "Gemma2Config", "Gemma2ForCausalLM",
     dict(SMALL, head_dim=8, query_pre_attn_scalar=24), "attention_scale_dim"),
    ("gemma3-query-pre-attn-scalar", "Gemma3TextConfig", "Gemma3ForCausalLM",
     dict(SMALL, head_dim=8, query_pre_attn_scalar=24), "attention_scale_dim"),
    # rotary bases hard-wired: Gemma/Gemma 2 10000, Gemma 3 1e6 global and 10000 sliding
    ("gemma-rope-theta", "GemmaConfig", "GemmaForCausalLM",
     dict(SMALL, num_key_value_heads=2, head_dim=8, rope_theta=5000.0), "rope_theta"),
    ("gemma2-rope-theta", "Gemma2Config", "Gemma2ForCausalLM",
     dict(SMALL, head_dim=8, query_pre_attn_scalar=8, rope_theta=5000.0), "rope_theta"),
    ("gemma3-rope-theta", "Gemma3TextConfig", "Gemma3ForCausalLM",
     dict(SMALL, head_dim=8, query_pre_attn_scalar=8, rope_local_base_freq=500.0), "rope_theta_sliding"),
    # Gemma 3's sliding pattern is hard-wired (i % 6 < 5); its block and QK norms' eps are 1e-6
    ("gemma3-sliding-pattern", "Gemma3TextConfig", "Gemma3ForCausalLM",
     dict(SMALL, head_dim=8, query_pre_attn_scalar=8, sliding_window_pattern=2), "layer_types"),
    ("gemma3-eps", "Gemma3TextConfig", "Gemma3ForCausalLM",
     dict(SMALL, head_dim=8, query_pre_attn_scalar=8, rms_norm_eps=1e-5), "norm_eps"),
    # KerasHub's Gemma head is always the tied embedding
    ("gemma-untied", "GemmaConfig", "GemmaForCausalLM",
     dict(SMALL, num_key_value_heads=1, head_dim=8, tie_word_embeddings=False), "tie_word_embeddings"),
    ("gpt2-eps", "GPT2Config", "GPT2LMHeadModel",
     dict(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4, layer_norm_epsilon=1e-6), "norm_eps"),
    ("gpt2-relu", "GPT2Config", "GPT2LMHeadModel",
     dict(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4, activation_function="relu"), "activation"),
    # KerasHub's QwenMoe runs every layer as layer 0 (it never passes layer_index): dense layers are lost
    ("qwen2_moe-dense-layer", "Qwen2MoeConfig", "Qwen2MoeForCausalLM",
     dict(SMALL, num_key_value_heads=2, moe_intermediate_size=16, shared_expert_intermediate_size=24, num_experts=4,
          num_experts_per_tok=2, mlp_only_layers=[1]), "moe_layers"),
    ("qwen2_moe-sparse-step", "Qwen2MoeConfig", "Qwen2MoeForCausalLM",
     dict(SMALL, num_key_value_heads=2, moe_intermediate_size=16, shared_expert_intermediate_size=24, num_experts=4,
          num_experts_per_tok=2, decoder_sparse_step=2), "moe_layers"),
    ("mixtral-tied", "MixtralConfig", "MixtralForCausalLM",
     dict(SMALL, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=True),
     "tie_word_embeddings"),
    # KerasHub's Qwen3Moe fixes its q/k-norm epsilon at 1e-6, transformers uses rms_norm_eps there too
    ("qwen3_moe-eps", "Qwen3MoeConfig", "Qwen3MoeForCausalLM",
     dict(SMALL, num_key_value_heads=2, moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2,
          rms_norm_eps=1e-5), "norm_eps"),
    # rms_norm_eps 1e-6 (every published Qwen3): KerasHub's q/k norms use 1e-5 (see qwen3.toml)
    ("qwen3-eps1e-6", "Qwen3Config", "Qwen3ForCausalLM",
     dict(SMALL, num_key_value_heads=1, head_dim=12, rms_norm_eps=1e-6, tie_word_embeddings=True), "norm_eps"),
    ("bert-exact-gelu", "BertConfig", "BertModel",
     dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
          max_position_embeddings=64), "activation"),
    # KerasHub's Mistral always has its own output matrix (no tie_word_embeddings key)
    ("mistral-tied", "MistralConfig", "MistralForCausalLM", dict(SMALL, num_key_value_heads=2, tie_word_embeddings=True),
     "tie_word_embeddings"),
    # KerasHub's Qwen2 head size is always hidden_dim // num_query_heads
    ("qwen2-head-dim", "Qwen2Config", "Qwen2ForCausalLM", dict(SMALL, num_key_value_heads=2, head_dim=16), "head_dim"),
    # KerasHub's Qwen3 has no q/k/v biases
    ("qwen3-qkv-bias", "Qwen3Config", "Qwen3ForCausalLM", dict(SMALL, num_key_value_heads=2, head_dim=8, attention_bias=True),
     "attn_qkv_bias"),
]


@pytest.mark.parametrize("case", INEXPRESSIBLE, ids=[c[0] for c in INEXPRESSIBLE])
def test_model_keras_hub_cannot_express_is_refused_by_field(tmp_path: Path, case: tuple) -> None:
    _, config_cls, model_cls, kwargs, field = case
    model = helpers.sharp_random_model(config_cls, model_cls, kwargs, seed=3)
    src = helpers.save(model, tmp_path / "hf", "safetensors")
    with pytest.raises(ConfigError, match=f"cannot express this model: .*{field} = "):
        llmstd.convert(src, tmp_path / "out", to="keras-hub")
    assert not (tmp_path / "out").exists()


def test_qwen_sliding_window_keras_hub_computes_differently_is_refused(tmp_path: Path) -> None:
    """transformers' Qwen2/Qwen3 slide the window over layers max_window_layers.. only, KerasHub's
    over every layer: a windowed Hugging Face model is refused, and so are KerasHub's windowed
    presets -- Qwen3's by default (sliding_window_size 32768)."""
    model = helpers.sharp_random_model("Qwen2Config", "Qwen2ForCausalLM",
                                       dict(SMALL, num_key_value_heads=2, use_sliding_window=True, sliding_window=5,
                                            max_window_layers=1),
                                       seed=3)
    src = helpers.save(model, tmp_path / "hf", "safetensors")
    with pytest.raises(ConfigError, match="layer_types|use_sliding_window"):
        llmstd.convert(src, tmp_path / "out", to="keras-hub")
    assert not (tmp_path / "out").exists()
    for cls, task, extra, key in [
            ("QwenBackbone", "QwenCausalLM", dict(use_sliding_window_attention=True, sliding_window_size=5),
             "use_sliding_window_attention"),
            ("Qwen3Backbone", "Qwen3CausalLM", dict(head_dim=8), "use_sliding_window")]:
        backbone = getattr(keras_hub.models, cls)(vocabulary_size=V, num_layers=1, num_query_heads=4,
                                                  num_key_value_heads=2, hidden_dim=32, intermediate_dim=48, **extra)
        preset = tmp_path / cls
        getattr(keras_hub.models, task)(backbone=backbone, preprocessor=None).save_to_preset(str(preset))
        with pytest.raises(ConfigError, match=f"'{key}' = True"):
            llmstd.convert(preset, tmp_path / f"{cls}-hf", to="hf")
        assert not (tmp_path / f"{cls}-hf").exists()


def test_qwen3_inactive_window_is_written_as_keras_hub_null(tmp_path: Path) -> None:
    """transformers 4.x saved Qwen3's sliding_window (4096) beside use_sliding_window false; KerasHub
    would slide any non-null sliding_window_size over every layer, so the preset holds null."""
    model = helpers.sharp_random_model("Qwen3Config", "Qwen3ForCausalLM",
                                       dict(SMALL, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-5), seed=3)
    src = helpers.save(model, tmp_path / "hf", "safetensors")
    config = json.loads((src / "config.json").read_text())
    config.update(use_sliding_window=False, sliding_window=4, max_window_layers=0)
    config.pop("layer_types")
    (src / "config.json").write_text(json.dumps(config))
    preset = tmp_path / "preset"
    llmstd.convert(src, preset, to="keras-hub")
    backbone = json.loads((preset / "config.json").read_text())["config"]
    assert "sliding_window_size" in backbone and backbone["sliding_window_size"] is None
    assert json.loads((preset / "task.json").read_text())["config"]["backbone"]["config"] == backbone
    report = check(src, preset)
    assert report.passed and report.b.runtime == "keras-hub", report.summary()


@pytest.mark.parametrize("name,field,passes", [("bert-exact-gelu", "activation", False),
                                               ("qwen3-eps1e-6", "norm_eps", True)])
def test_an_accepted_difference_is_written_and_check_measures_it(tmp_path: Path, name: str, field: str,
                                                                 passes: bool) -> None:
    """A difference accepted by name is written; KerasHub runs the preset and check says what it costs:
    transformers' exact-gelu BERT as KerasHub's tanh-gelu backbone fails, naming the configs'
    difference; a Qwen3 with rms_norm_eps 1e-6 (KerasHub's q/k norms use 1e-5) stays within float32
    limits on this tiny model."""
    _, config_cls, model_cls, kwargs, _ = next(c for c in INEXPRESSIBLE if c[0] == name)
    src = helpers.save(helpers.sharp_random_model(config_cls, model_cls, kwargs, seed=3), tmp_path / "hf",
                       "safetensors")
    report = llmstd.convert(src, tmp_path / "out", to="keras-hub", accept_differences=[field])
    assert report.accepted_differences == [field]
    assert field in llmstd.load(tmp_path / "out").report.deviations or field == "activation"
    result = check(src, tmp_path / "out")
    assert result.b.runtime == "keras-hub" and result.passed == passes, result.summary()
    if not passes:
        assert "activation 'gelu' vs 'gelu_tanh'" in result.summary()


def test_unknown_keras_hub_config_key_is_an_error_naming_it(store: Store, tmp_path: Path) -> None:
    preset = tmp_path / "preset"
    shutil.copytree(store.converted("llama", "keras-hub"), preset)
    config = json.loads((preset / "config.json").read_text())
    config["config"]["use_magic_attention"] = True
    (preset / "config.json").write_text(json.dumps(config))
    task = json.loads((preset / "task.json").read_text())  # KerasHub's task reads its own copy
    task["config"]["backbone"] = config
    (preset / "task.json").write_text(json.dumps(task))
    with pytest.raises(ConfigError, match="use_magic_attention"):
        llmstd.load(preset)


def test_sharded_preset_loads_in_keras_hub(store: Store, tmp_path: Path) -> None:
    from llmstd.formats import WriteOptions, get

    ckpt = llmstd.load(store.hf("llama"))
    out = tmp_path / "sharded"
    out.mkdir()
    written = get("keras-hub").write(ckpt, out, WriteOptions(shard_size=20_000))
    assert (out / "model.weights.json").is_file() and not (out / "model.weights.h5").exists()
    assert sum(1 for p in written if p.name.startswith("model_")) >= 3
    report = check(store.hf("llama"), out)
    assert report.passed and report.b.runtime == "keras-hub", report.summary()


def test_trained_checkpoint_through_keras_hub(real_decoder: Path, tmp_path: Path) -> None:
    preset = tmp_path / "preset"
    llmstd.convert(real_decoder, preset, to="keras-hub")
    report = check(real_decoder, preset)
    assert report.passed, report.summary()
    assert report.b.runtime == "keras-hub"
    back = tmp_path / "hf"
    llmstd.convert(preset, back, to="hf")
    helpers.assert_tensors_bit_identical(helpers.read_safetensors_dir(real_decoder), back)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (real_decoder / name).is_file():
            assert (back / name).read_bytes() == (real_decoder / name).read_bytes()


SAMPLES = ["Hello World! The quick brown fox jumps over the lazy dog, naïvely.", "Tokenizers: 12345 état  x\ty"]


def test_wordpiece_tokenizer_travels_and_encodes_as_transformers(real_encoder: Path, tmp_path: Path) -> None:
    """The trained all-MiniLM-L6-v2 (exact gelu, accepted by name): its WordPiece vocabulary becomes
    KerasHub's BertTokenizer, which encodes sample text to transformers' ids."""
    from transformers import AutoTokenizer

    preset = tmp_path / "preset"
    llmstd.convert(real_encoder, preset, to="keras-hub", accept_differences=["activation"])
    assert (preset / "assets/tokenizer/vocabulary.txt").is_file()
    ours = keras_hub.models.BertTokenizer.from_preset(str(preset))
    theirs = AutoTokenizer.from_pretrained(str(real_encoder))
    for text in SAMPLES:
        assert [int(i) for i in np.asarray(ours(text))] == theirs(text, add_special_tokens=False)["input_ids"]


def test_byte_level_bpe_tokenizer_travels_and_encodes_as_transformers(store: Store, tmp_path: Path) -> None:
    """A GPT-2 style byte-level BPE tokenizer (trained here on a few sentences) becomes KerasHub's
    GPT2Tokenizer: same ids as transformers, and GPT2CausalLM.from_preset builds its preprocessor."""
    import tokenizers
    from transformers import AutoTokenizer, GPT2TokenizerFast

    src = tmp_path / "hf"
    shutil.copytree(store.hf("gpt2"), src)
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(SAMPLES * 20 + ["the lazy dog sleeps; the fox runs 42 times"] * 20, vocab_size=300,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                      bos_token="<|endoftext|>").save_pretrained(str(src))
    preset = tmp_path / "preset"
    llmstd.convert(src, preset, to="keras-hub")
    ours = keras_hub.models.GPT2Tokenizer.from_preset(str(preset))
    theirs = AutoTokenizer.from_pretrained(str(src))
    for text in [*SAMPLES, "the lazy dog sleeps; the fox runs 42 times"]:
        assert [int(i) for i in np.asarray(ours(text))] == theirs(text)["input_ids"]
    task = keras_hub.models.GPT2CausalLM.from_preset(str(preset))
    assert task.preprocessor is not None


def test_tokenizer_keras_hub_cannot_use_is_reported(real_decoder: Path, tmp_path: Path) -> None:
    """SmolLM2's tokenizer lacks the special tokens KerasHub's Llama3Tokenizer requires: the preset
    is weights-only and the report says why."""
    report = llmstd.convert(real_decoder, tmp_path / "preset", to="keras-hub")
    why = report.side_files_skipped["KerasHub tokenizer"]
    assert "<|begin_of_text|>" in why and "preprocessor=None" in why
    assert not (tmp_path / "preset" / "tokenizer.json").exists()


@pytest.mark.parametrize(("cls", "task", "kwargs", "key"), [
    # KerasHub ignores the flag (always 1/sqrt(head_dim)): the preset says what KerasHub does not compute
    ("GemmaBackbone", "GemmaCausalLM",
     dict(use_post_ffw_norm=True, use_post_attention_norm=True, use_sliding_window_attention=True,
          query_head_dim_normalize=False), "'query_head_dim_normalize' = False"),
    # KerasHub's Gemma 3 soft-caps attention scores, transformers' Gemma 3 never does
    ("Gemma3Backbone", "Gemma3CausalLM",
     dict(image_size=None, use_post_ffw_norm=True, use_post_attention_norm=True, use_sliding_window_attention=True,
          attention_logit_soft_cap=3.0), "'attention_logit_soft_cap' = 3.0"),
], ids=["gemma2-query-head-dim-normalize", "gemma3-attention-soft-cap"])
def test_gemma_preset_transformers_cannot_compute_is_refused_by_key(tmp_path: Path, cls: str, task: str,
                                                                    kwargs: dict[str, Any], key: str) -> None:
    backbone = getattr(keras_hub.models, cls)(vocabulary_size=V, num_layers=2, num_query_heads=4,
                                              num_key_value_heads=2, hidden_dim=32, head_dim=8, intermediate_dim=48,
                                              **kwargs)
    preset = tmp_path / "preset"
    getattr(keras_hub.models, task)(backbone=backbone, preprocessor=None).save_to_preset(str(preset))
    with pytest.raises(ConfigError, match=key):
        llmstd.convert(preset, tmp_path / "hf", to="hf")
    assert not (tmp_path / "hf").exists()


def test_task_json_backbone_that_differs_from_config_json_is_refused(store: Store, tmp_path: Path) -> None:
    preset = tmp_path / "preset"
    shutil.copytree(store.converted("llama", "keras-hub"), preset)
    task = json.loads((preset / "task.json").read_text())
    task["config"]["backbone"]["config"]["layer_norm_epsilon"] = 0.5
    (preset / "task.json").write_text(json.dumps(task))
    with pytest.raises(FormatError, match="differs from config.json"):
        llmstd.load(preset)
