"""tf_model.h5 against transformers' own TF classes (issue 3).

- llmstd's tf-h5 output of gpt2, bert (MLM head) and mistral loads into TFGPT2LMHeadModel /
  TFBertForMaskedLM / TFMistralForCausalLM with no missing, unexpected or mismatched weights, and
  their logits on a padded 64-token batch match the torch model (max abs <= 1e-4).
- A tf_model.h5 written by transformers' own TF save_pretrained converts with llmstd to an HF torch
  directory bit-identical to transformers' cross-loading (from_pretrained(from_tf=True) + save), and
  runs to the same logits.
- The written h5 has the structure transformers' loader reads (layer_names, weight_names, Keras attrs).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import transformers

import llmstd
from conftest import SEQ, TOL, batch, max_abs
from helpers import assert_clean_loading_info, assert_tensors_bit_identical, load_hf, logits, read_safetensors_dir

TF_CLASSES = {"gpt2": "TFGPT2LMHeadModel", "bert-mlm": "TFBertForMaskedLM", "mistral": "TFMistralForCausalLM"}


def _tf_logits(model, input_ids, attention_mask) -> np.ndarray:
    out = model(input_ids=input_ids.numpy(), attention_mask=attention_mask.numpy())
    return out.logits.numpy()


@pytest.mark.legacy  # transformers 4.x TF classes
@pytest.mark.parametrize("kind", sorted(TF_CLASSES))
def test_transformers_tf_class_loads_llmstd_h5(tfstore, kind: str) -> None:
    out = tfstore.converted(kind, "tf-h5")
    assert sorted(p.name for p in out.iterdir() if p.name != "generation_config.json") == ["config.json",
                                                                                        "tf_model.h5"]
    model, info = getattr(transformers, TF_CLASSES[kind]).from_pretrained(str(out), output_loading_info=True)
    assert_clean_loading_info(info)
    ids, mask = batch()
    assert ids.shape[1] >= 64
    got = _tf_logits(model, ids, mask)
    want = tfstore.reference(kind).logits.numpy()
    assert got.shape == want.shape
    assert max_abs(got, want) <= TOL


def _fixed_length_strings(f: h5py.File, owner: str, name: str) -> list[str]:
    """A string-list attribute, checked to be stored as tf_keras stores it: fixed-length bytes."""
    attr = f[owner].attrs.get_id(name) if owner != "/" else f.attrs.get_id(name)
    assert not attr.get_type().is_variable_str(), f"{owner}:{name} is a variable-length string"
    values = (f[owner].attrs if owner != "/" else f.attrs)[name]
    return [v.decode("utf-8") for v in np.atleast_1d(values).tolist()]


def test_h5_structure_mirrors_keras(tfstore) -> None:
    path = tfstore.converted("bert-mlm", "tf-h5") / "tf_model.h5"
    with h5py.File(path, "r") as f:
        assert _fixed_length_strings(f, "/", "layer_names") == ["bert", "mlm___cls"]
        assert _fixed_length_strings(f, "/", "backend") == ["tensorflow"]
        assert "keras_version" in f.attrs
        assert "top_level_model_weights" in f
        names = _fixed_length_strings(f, "bert", "weight_names")
        assert all(n.startswith("tf_bert_for_masked_lm/bert/") for n in names)
        for n in names:
            assert isinstance(f["bert"][n], h5py.Dataset)
        # Keras lists the embedding layer again under the MLM head that reuses it; so does llmstd.
        mlm = _fixed_length_strings(f, "mlm___cls", "weight_names")
        assert "tf_bert_for_masked_lm/bert/embeddings/word_embeddings/weight:0" in mlm
        assert "tf_bert_for_masked_lm/mlm___cls/predictions/bias:0" in mlm
        # Dense kernels are [in, out]: the intermediate layer maps hidden 32 -> 64.
        assert f["bert"]["tf_bert_for_masked_lm/bert/encoder/layer_._0/intermediate/dense/kernel:0"].shape == (32, 64)


@pytest.fixture(scope="module")
def hf_written_h5(tfstore, tmp_path_factory) -> dict[str, Path]:
    """tf_model.h5 directories written by transformers' own TF save_pretrained (weights from torch)."""
    root = tmp_path_factory.mktemp("hf-tf-save")
    out = {}
    for kind, cls in TF_CLASSES.items():
        tf_model = getattr(transformers, cls).from_pretrained(str(tfstore.hf_dir(kind)), from_pt=True)
        tf_model.save_pretrained(str(root / kind))
        out[kind] = root / kind
    return out


@pytest.mark.legacy  # transformers 4.x TF classes
@pytest.mark.parametrize("kind", sorted(TF_CLASSES))
def test_hf_tf_save_converts_like_transformers_cross_loading(tfstore, hf_written_h5, tmp_path: Path, kind: str) -> None:
    src = hf_written_h5[kind]
    report = llmstd.convert(src, tmp_path / "llmstd", to="hf")
    assert report.source_format == "tf-h5" and report.dialect == "hf_tf"
    # transformers' own route: TF weights cross-loaded into the torch class, then saved. (4.57's
    # from_pretrained(from_tf=True) leaves BertForMaskedLM's parameters on the meta device, so the
    # cross-loading function it calls is used directly on a normally built model.)
    from transformers.modeling_tf_pytorch_utils import load_tf2_checkpoint_in_pytorch_model

    torch_cls = {"gpt2": "GPT2LMHeadModel", "bert-mlm": "BertForMaskedLM", "mistral": "MistralForCausalLM"}[kind]
    config = transformers.AutoConfig.from_pretrained(str(src))
    config._attn_implementation = "eager"
    model = load_tf2_checkpoint_in_pytorch_model(getattr(transformers, torch_cls)(config), str(src / "tf_model.h5"))
    model.save_pretrained(tmp_path / "transformers", safe_serialization=True)
    assert_tensors_bit_identical(read_safetensors_dir(tmp_path / "transformers"), tmp_path / "llmstd")
    ours, info = load_hf(kind, tmp_path / "llmstd")
    assert_clean_loading_info(info)
    ids, mask = batch()
    model.eval()
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
    got = logits(ours, ids, mask)
    assert torch.equal(got, want)
    # ...and both equal the original torch model: the TF detour lost nothing.
    assert max_abs(got, tfstore.reference(kind).logits) <= TOL


@pytest.mark.legacy  # transformers 4.x TF classes
def test_h5_scope_of_a_second_keras_model_is_accepted(hf_written_h5) -> None:
    # Keras numbers scopes per process (tfgpt2lm_head_model_1, ...); transformers ignores the scope.
    with h5py.File(hf_written_h5["gpt2"] / "tf_model.h5", "r") as f:
        scope = list(f["transformer"].attrs["weight_names"])[0].split("/")[0]
    assert scope.startswith("tfgpt2lm_head_model")
    ckpt = llmstd.load(hf_written_h5["gpt2"])
    assert ckpt.format == "tf-h5" and ckpt.config.head == "causal_lm"
    assert SEQ <= ckpt.config.max_positions
