"""llmstd's own PyTorch implementation matches transformers' models (max abs <= 1e-5, float32) on
logits and on every layer's hidden state, for every architecture and rope_scaling type it supports.

Models are the tiny, fully randomized ones from tests/helpers.py rescaled to O(1) activations
(tests/sharp_models.py: with helpers' 0.05 scale attention is uniform and rotary code would be
untested); inputs are 2 x 128 tokens with the second row right-padded, so rotary (> 20 tokens),
the sliding window (64) and padding all matter.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import helpers
import llmstd
from llmstd.errors import ConfigError
from llmstd.runtimes import torch_model
from sharp_models import sharp, sharpen_  # noqa: F401  (sharp is a fixture)

TOL = 1e-5
SEQ = 128


def _batch(vocab: int = helpers.VOCAB, seq: int = SEQ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    ids = rng.integers(0, vocab, size=(2, seq), dtype=np.int64)
    mask = np.ones((2, seq), dtype=np.int64)
    mask[1, seq - seq // 4:] = 0
    ids[mask == 0] = 0
    return ids, mask


def _hf_run(model, ids: np.ndarray, mask: np.ndarray) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), output_hidden_states=True)
    names = ["logits"] if getattr(out, "logits", None) is not None else ["last_hidden_state", "pooler_output"]
    outputs = {n: getattr(out, n).float().numpy() for n in names if getattr(out, n, None) is not None}
    return outputs, [h.float().numpy() for h in out.hidden_states]


def _assert_match(model, ckpt_dir, ids: np.ndarray, mask: np.ndarray, tol: float = TOL) -> float:
    ckpt = llmstd.load(ckpt_dir)
    want, want_hidden = _hf_run(model, ids, mask)
    got = torch_model.run(ckpt, ckpt.config, ids, mask)
    real = mask.astype(bool)
    assert set(got.outputs) == set(want), (set(got.outputs), set(want))
    worst = 0.0
    for name, value in want.items():
        a, b = (value[real], got.outputs[name][real]) if value.ndim == 3 else (value, got.outputs[name])
        err = float(np.abs(a - b).max())
        assert err <= tol, f"{name}: max abs {err:.3g}"
        worst = max(worst, err)
    assert got.hidden_states is not None and len(got.hidden_states) == len(want_hidden) == ckpt.config.num_layers + 1
    for index, (a, b) in enumerate(zip(want_hidden, got.hidden_states)):
        err = float(np.abs(a[real] - b[real]).max())
        assert err <= tol, f"hidden state {index}: max abs {err:.3g}"
    return worst


@pytest.mark.parametrize("kind", helpers.ALL_KINDS)
def test_matches_transformers(sharp, kind: str) -> None:
    ids, mask = _batch()
    _assert_match(sharp.model(kind), sharp.canonical_dir(kind), ids, mask)


ROPE_CASES = {
    "linear": dict(rope_scaling={"rope_type": "linear", "factor": 2.0}),
    # The original context below the 128 tokens run, so the long factors are the ones used.
    "longrope": dict(rope_scaling={"rope_type": "longrope", "short_factor": [1.0, 1.5, 2.0, 4.0],
                                   "long_factor": [2.0, 3.0, 5.0, 9.0], "original_max_position_embeddings": 64}),
    "llama3": dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
                   rope_theta=500000.0),
    "yarn": dict(rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}),
    "theta": dict(rope_theta=1234.5),
}


def _llama(tmp_path, **changes):
    import transformers

    kwargs = dict(helpers.KINDS["llama"]["kwargs"], **changes)
    config = transformers.LlamaConfig(**kwargs)
    config._attn_implementation = "eager"
    model = sharpen_(helpers.randomize_(transformers.LlamaForCausalLM(config), seed=3)).eval()
    model.save_pretrained(tmp_path)
    return model


@pytest.mark.parametrize("case", sorted(ROPE_CASES))
def test_rope_variants_match_transformers(tmp_path, case: str) -> None:
    model = _llama(tmp_path, **ROPE_CASES[case])
    ids, mask = _batch()
    _assert_match(model, tmp_path, ids, mask)
    # The scaling must change the numbers, or this test would prove nothing about it.
    ckpt = llmstd.load(tmp_path)
    plain = torch_model.run(ckpt, ckpt.config.replace(rope_scaling=None, rope_theta=10000.0), ids, mask,
                            output_hidden_states=False)
    scaled = torch_model.run(ckpt, ckpt.config, ids, mask, output_hidden_states=False)
    assert np.abs(plain.outputs["logits"] - scaled.outputs["logits"]).max() > 1e-2


def test_unsupported_rope_type_is_a_clear_error(tiny) -> None:
    """'dynamic' recomputes the base whenever the sequence outgrows max_positions, which a graph built
    once cannot express: the model definition refuses it for every runtime, by name."""
    ckpt = llmstd.load(tiny.canonical_dir("llama"))
    config = ckpt.config.replace(rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(ConfigError, match="rope_scaling of rope_type 'dynamic' is not implemented"):
        torch_model.TorchModel(ckpt, config)


def test_half_precision_runs_close_to_float32(sharp) -> None:
    ckpt = llmstd.load(sharp.canonical_dir("llama"))
    ids, mask = _batch()
    full = torch_model.run(ckpt, ckpt.config, ids, mask)
    for dtype in ("bfloat16", "float16"):
        half = torch_model.run(ckpt, ckpt.config, ids, mask, dtype=dtype)
        assert half.dtype == dtype
        real = mask.astype(bool)
        a, b = full.outputs["logits"][real], half.outputs["logits"][real]
        assert np.isfinite(b).all()
        assert float(((a - b) ** 2).sum() / (a ** 2).sum()) < 1e-3


def test_bad_inputs_are_typed_errors(tiny) -> None:
    ckpt = llmstd.load(tiny.canonical_dir("gpt2"))
    model = torch_model.TorchModel(ckpt, ckpt.config)
    with pytest.raises(llmstd.LlmstdError, match="token ids"):
        model(np.array([[0, helpers.VOCAB]]))
    with pytest.raises(llmstd.LlmstdError, match="learned positions"):
        model(np.zeros((1, ckpt.config.max_positions + 1), dtype=np.int64))
    with pytest.raises(llmstd.LlmstdError, match="missing"):
        torch_model.TorchModel({}, ckpt.config)


def test_torch_is_imported_lazily() -> None:
    code = ("import sys, llmstd, llmstd.runtimes.torch_model, llmstd.checking, llmstd.validation; "
            "print(sorted(m for m in ('torch', 'transformers', 'tensorflow', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
