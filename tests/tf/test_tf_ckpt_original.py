"""tf.train checkpoints in the original releases' naming (issue 3).

- BERT in Google's naming (bert_model.ckpt + bert_config.json) and GPT-2 in OpenAI's naming
  (model.ckpt + hparams.json, Conv1D weights [1, in, out]); TensorFlow itself reads them;
  transformers' load_tf_weights_in_bert / load_tf_weights_in_gpt2 load them into torch models whose
  logits match the source; llmstd reads them back bit-identically.
- A Google-style checkpoint holding adam_m / adam_v / global_step converts, and the report lists
  every skipped tensor with its reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers

import llmstd
from conftest import TOL, batch, max_abs
from helpers import assert_tensors_bit_identical, np_bytes, read_safetensors_dir, torch_bytes
from llmstd.converters import tf_checkpoint
from llmstd.tensors import ArrayTensor


def _tf_variables(prefix: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _google_bert_logits(directory: Path, model_class: type, output: str) -> torch.Tensor:
    """MLM logits of ``model_class`` loaded by transformers' reader of Google's original checkpoints
    (bert_config.json + bert_model.ckpt) on the test batch."""
    config = transformers.BertConfig.from_json_file(str(directory / "bert_config.json"))
    model = model_class(config).eval()
    transformers.load_tf_weights_in_bert(model, config, str(directory / "bert_model.ckpt"))
    ids, mask = batch()
    with torch.no_grad():
        return getattr(model(input_ids=ids, attention_mask=mask), output)


@pytest.mark.legacy  # load_tf_weights_in_* exist only in transformers 4.x
def test_bert_google_naming_loads_in_transformers(tfstore) -> None:
    out = tfstore.converted("bert-mlm", "tf-ckpt")
    assert {"bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001", "checkpoint", "bert_config.json",
            "llmstd_config.json"} <= {p.name for p in out.iterdir()}
    variables = _tf_variables(out / "bert_model.ckpt")  # TensorFlow reads llmstd's pure-Python writer
    assert variables["bert/encoder/layer_0/attention/self/query/kernel"].shape == (32, 32)
    assert variables["bert/encoder/layer_0/intermediate/dense/kernel"].shape == (32, 64)  # [in, out]
    assert "cls/predictions/output_bias" in variables and "bert/embeddings/word_embeddings" in variables
    # Google's BertConfig / transformers' BertConfig.from_json_file read bert_config.json.
    got = _google_bert_logits(out, transformers.BertForMaskedLM, "logits")
    assert max_abs(got, tfstore.reference("bert-mlm").logits) <= TOL
    # llmstd reads its output back bit-identically
    back = llmstd.load(out)
    assert back.dialect == "tf_original" and back.config == llmstd.load(tfstore.hf_dir("bert-mlm")).config
    expected = llmstd.load(tfstore.hf_dir("bert-mlm"))
    for name, tensor in expected.items():
        assert np_bytes(back[name].load()) == np_bytes(tensor.load()), name


@pytest.mark.legacy  # load_tf_weights_in_* exist only in transformers 4.x
def test_gpt2_openai_naming_loads_in_transformers(tfstore) -> None:
    out = tfstore.converted("gpt2", "tf-ckpt")
    hparams = json.loads((out / "hparams.json").read_text())
    assert hparams == {"n_vocab": 128, "n_ctx": 128, "n_embd": 32, "n_head": 4, "n_layer": 2}  # OpenAI's keys only
    variables = _tf_variables(out / "model.ckpt")
    assert variables["model/h0/attn/c_attn/w"].shape == (1, 32, 96)  # [1, in, out]
    assert variables["model/h1/mlp/c_proj/w"].shape == (1, 128, 32)
    assert variables["model/wte"].shape == (128, 32)
    config = transformers.GPT2Config(vocab_size=128, n_positions=128, n_embd=32, n_layer=2, n_head=4)
    config._attn_implementation = "eager"
    model = transformers.GPT2LMHeadModel(config).eval()
    transformers.load_tf_weights_in_gpt2(model.transformer, config, str(out / "model.ckpt"))  # OpenAI's names start at the transformer
    ids, mask = batch()
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).logits
    assert max_abs(got, tfstore.reference("gpt2").logits) <= TOL
    back = llmstd.load(out)
    expected = llmstd.load(tfstore.hf_dir("gpt2"))
    assert back.dialect == "tf_original" and back.config == expected.config
    for name, tensor in expected.items():
        assert np_bytes(back[name].load()) == np_bytes(tensor.load()), name


def test_release_checkpoint_without_llmstd_config(tfstore, tmp_path: Path) -> None:
    # A real download has only the release config: llmstd reads it (defaults of the release code).
    import shutil

    for kind in ("gpt2", "bert-mlm"):
        src = tmp_path / kind
        shutil.copytree(tfstore.converted(kind, "tf-ckpt"), src)
        (src / "llmstd_config.json").unlink()
        (src / "checkpoint").unlink()  # the only .index file is found without it
        ckpt = llmstd.load(src)
        reference = llmstd.load(tfstore.converted(kind, "tf-ckpt"))
        assert ckpt.config.replace(extras={}, bos_token_id=None, eos_token_id=None, pad_token_id=None) == \
            reference.config.replace(extras={}, bos_token_id=None, eos_token_id=None, pad_token_id=None)
        out = tmp_path / f"{kind}-hf"
        llmstd.convert(src, out, to="hf")
        assert_tensors_bit_identical(read_safetensors_dir(tfstore.hf_dir(kind)), out)


@pytest.mark.legacy  # load_tf_weights_in_* exist only in transformers 4.x
def test_google_checkpoint_with_optimizer_state(tfstore, tmp_path: Path) -> None:
    """adam_m / adam_v slots, global_step and the NSP head are skipped and reported, never silently."""
    src_dir = tfstore.converted("bert-mlm", "tf-ckpt")
    original = tf_checkpoint.read_checkpoint(src_dir / "bert_model.ckpt")
    rng = np.random.default_rng(0)
    entries = []
    for name, tensor in original.tensors.items():
        entries.append((name, tensor))
        for slot in ("adam_m", "adam_v"):
            entries.append((f"{name}/{slot}", ArrayTensor(rng.standard_normal(tensor.shape).astype(np.float32))))
    entries.append(("global_step", ArrayTensor(np.array(1000, dtype=np.int64))))
    entries.append(("cls/seq_relationship/output_weights", ArrayTensor(rng.standard_normal((2, 32)).astype(np.float32))))
    entries.append(("cls/seq_relationship/output_bias", ArrayTensor(rng.standard_normal(2).astype(np.float32))))
    google = tmp_path / "google"
    google.mkdir()
    tf_checkpoint.write_checkpoint(google / "bert_model.ckpt", entries)
    (google / "bert_config.json").write_text((src_dir / "bert_config.json").read_text())
    assert "global_step" in _tf_variables(google / "bert_model.ckpt")

    report = llmstd.convert(google, tmp_path / "hf", to="hf")
    ignored = {item["name"]: item["reason"] for item in report.ignored}
    slots = {n for n, _ in entries if n.endswith(("/adam_m", "/adam_v"))}
    assert slots <= set(ignored) and len(slots) == 2 * len(original.tensors)
    assert {"global_step", "cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias"} <= set(ignored)
    assert all(reason for reason in ignored.values())
    assert "optimizer" in ignored["bert/encoder/layer_1/output/dense/kernel/adam_m"]
    assert_tensors_bit_identical(read_safetensors_dir(tfstore.hf_dir("bert-mlm")), tmp_path / "hf")
    # transformers' own loader skips the same optimizer names; with the NSP head present it needs the
    # pre-training class, whose MLM logits equal the source model's.
    got = _google_bert_logits(google, transformers.BertForPreTraining, "prediction_logits")
    assert max_abs(got, tfstore.reference("bert-mlm").logits) <= TOL


def test_gpt2_release_refuses_what_hparams_cannot_express(tiny, tmp_path: Path) -> None:
    config = json.loads((tiny.hf_dir("gpt2") / "config.json").read_text())
    src = tmp_path / "src"
    import shutil

    shutil.copytree(tiny.hf_dir("gpt2"), src)
    config["layer_norm_epsilon"] = 1e-3
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(llmstd.errors.ConfigError, match="hparams.json cannot express"):
        llmstd.convert(src, tmp_path / "out", to="tf-ckpt")
    assert not (tmp_path / "out").exists()
    # the h5 route can express it
    llmstd.convert(src, tmp_path / "h5", to="tf-h5")
    assert llmstd.load(tmp_path / "h5").config.norm_eps == 1e-3


def test_tf_written_checkpoint_reads_bit_identically(tmp_path: Path) -> None:
    """A bundle written by TensorFlow itself (tf.train.Checkpoint's SaveV2) is read without TF, CRCs checked."""
    rng = np.random.default_rng(0)
    values = {"a/kernel": rng.standard_normal((3, 5)).astype(np.float32), "b/bias": np.arange(7, dtype=np.int64),
              "c/scalar": np.array(2.5, dtype=np.float64)}
    tf.raw_ops.SaveV2(prefix=str(tmp_path / "m.ckpt"), tensor_names=list(values), shape_and_slices=[""] * 3,
                      tensors=list(values.values()))
    bf16 = tf.constant(rng.standard_normal(4).astype(np.float32), dtype=tf.bfloat16)
    tf.raw_ops.SaveV2(prefix=str(tmp_path / "b.ckpt"), tensor_names=["x"], shape_and_slices=[""], tensors=[bf16])
    ckpt = tf_checkpoint.read_checkpoint(tmp_path / "m.ckpt")
    for name, value in values.items():
        got = ckpt.tensors[name].load()
        assert got.dtype == value.dtype and got.shape == value.shape and np_bytes(got) == np_bytes(value)
    got = tf_checkpoint.read_checkpoint(tmp_path / "b.ckpt").tensors["x"].load()
    assert got.dtype.name == "bfloat16" and np_bytes(got) == np_bytes(bf16.numpy())


def test_multi_block_index_is_read_by_tensorflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tf_checkpoint, "BLOCK_SIZE", 256)  # force many data blocks in the index table
    rng = np.random.default_rng(1)
    entries = [(f"layer_{i:03d}/w", ArrayTensor(rng.standard_normal((2, 3)).astype(np.float32))) for i in range(200)]
    tf_checkpoint.write_checkpoint(tmp_path / "m.ckpt", entries)
    variables = _tf_variables(tmp_path / "m.ckpt")
    assert len(variables) == 200
    for name, tensor in entries:
        assert np_bytes(variables[name]) == np_bytes(tensor.load())
    back = tf_checkpoint.read_checkpoint(tmp_path / "m.ckpt")
    assert list(back.tensors) == [n for n, _ in entries]


def test_torch_bytes_helper_agrees() -> None:  # guards the comparisons above
    t = torch.arange(4, dtype=torch.float32)
    assert torch_bytes(t) == np_bytes(t.numpy())
