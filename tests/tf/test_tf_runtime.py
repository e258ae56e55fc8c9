"""llmstd's TensorFlow implementation (llmstd.runtimes.tf_model) against the torch models (issue 3).

llama (GQA, tied and untied), qwen2 and every other architecture are converted to a TF format by
llmstd, read back, and run in TF: logits on a padded 64-token batch match transformers' torch model
(max abs <= 1e-4); so do the per-layer hidden states. Sliding windows and rope scaling are checked
with settings under which they change the result.
"""

from __future__ import annotations

import numpy as np
import pytest

import llmstd
from conftest import SEQ, TOL, batch, max_abs
from llmstd.errors import ConfigError
from llmstd.runtimes.tf_model import TFModel

# kind -> TF format llmstd writes it in for the check (both formats are covered across kinds)
CASES = {
    "llama": "tf-ckpt", "llama-tied": "tf-h5", "qwen2": "tf-ckpt", "gpt2": "tf-h5", "bert": "tf-ckpt",
    "bert-mlm": "tf-h5", "mistral": "tf-ckpt", "mistral-window16": "tf-h5", "llama-rope-linear": "tf-ckpt",
    "llama-rope-llama3": "tf-h5",
}


@pytest.mark.parametrize("kind", list(CASES))
def test_tf_runtime_matches_torch(tfstore, kind: str) -> None:
    out_dir = tfstore.converted(kind, CASES[kind])
    ckpt = llmstd.load(out_dir)
    assert ckpt.format == CASES[kind]
    model = TFModel.from_checkpoint(ckpt)
    ids, mask = batch()
    assert ids.shape[1] == SEQ >= 64
    out = model(ids.numpy(), mask.numpy())
    ref = tfstore.reference(kind)
    # Padding positions carry no meaning (their position ids follow llmstd's convention, not
    # transformers' forward); every real position is compared.
    real = mask.numpy().astype(bool)
    if ckpt.config.head == "base":
        assert out.logits is None
        assert max_abs(out.last_hidden_state[real], ref.last_hidden_state[real]) <= TOL
        assert max_abs(out.pooled, ref.pooler_output) <= TOL
    else:
        assert out.logits.shape == tuple(ref.logits.shape)
        assert max_abs(out.logits[real], ref.logits[real]) <= TOL
    assert len(out.hidden_states) == len(ref.hidden_states) == ckpt.config.num_layers + 1
    for k, (got, want) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        assert max_abs(got[real], want[real]) <= TOL, f"hidden state {k}"


def test_llama_gqa_and_tying_are_exercised(tfstore) -> None:
    untied = llmstd.load(tfstore.converted("llama", "tf-ckpt"))
    tied = llmstd.load(tfstore.converted("llama-tied", "tf-h5"))
    assert untied.config.num_kv_heads < untied.config.num_heads
    assert not untied.config.tie_word_embeddings and "lm_head.weight" in untied
    assert tied.config.tie_word_embeddings and "lm_head.weight" not in tied
    assert untied.dialect == tied.dialect == "tf_llmstd"


def test_sliding_window_and_rope_scaling_matter(tfstore) -> None:
    """Control: the settings under test change the logits, so matching torch proves they are applied."""
    ids, mask = batch()
    for kind, change in (("mistral-window16", {"sliding_window": None}), ("llama-rope-linear", {"rope_scaling": None}),
                         ("llama-rope-llama3", {"rope_scaling": None})):
        ckpt = llmstd.load(tfstore.converted(kind, CASES[kind]))
        with_it = TFModel(ckpt.tensors, ckpt.config)(ids.numpy(), mask.numpy()).logits
        without = TFModel(ckpt.tensors, ckpt.config.replace(**change))(ids.numpy(), mask.numpy()).logits
        assert max_abs(with_it, without) > 10 * TOL, kind  # logits are ~1e-2 (weights ~N(0, 0.05))


def test_bfloat16_weights_run(tfstore) -> None:
    ckpt = llmstd.load(tfstore.converted("qwen2", "tf-ckpt", "bfloat16"))
    assert ckpt.config.dtype == "bfloat16"
    ids, mask = batch()
    logits = TFModel.from_checkpoint(ckpt)(ids.numpy(), mask.numpy()).logits
    assert logits.dtype == np.float32 and np.isfinite(logits).all()


def test_unknown_rope_scaling_is_refused(tfstore) -> None:
    ckpt = llmstd.load(tfstore.converted("llama", "tf-ckpt"))
    config = ckpt.config.replace(rope_scaling={"rope_type": "dynamic", "factor": 4.0})
    with pytest.raises(ConfigError, match="'dynamic' is not implemented"):
        TFModel(ckpt.tensors, config)


def test_attention_direction_comes_from_the_config(tfstore) -> None:  # noqa: ANN001
    ckpt = llmstd.load(tfstore.converted("llama", "tf-ckpt"))
    assert ckpt.config.causal
    ids, mask = batch()
    base = ckpt.config.replace(head="base")
    weights = {name: ckpt[name] for name in ckpt.tensors if name != "lm_head.weight"}
    causal = TFModel(weights, base)(ids, mask).last_hidden_state
    bidirectional = TFModel(weights, base.replace(causal=False))(ids, mask).last_hidden_state
    assert max_abs(causal, bidirectional) > 10 * TOL
    with pytest.raises(ConfigError, match="causal LM head on a bidirectional model"):
        TFModel(ckpt.tensors, ckpt.config.replace(causal=False))
