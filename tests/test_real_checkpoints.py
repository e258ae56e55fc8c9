"""Real trained checkpoints through every format llmstd writes, and back (tests/real_checkpoints.py
fetches them): SmolLM2-135M-Instruct (llama, GQA 9/3, tied, rope_theta 100000; 538 MB in float32)
and all-MiniLM-L6-v2 (a sentence-transformers BERT checkpoint with its side files).

- HF -> canonical | tf-h5 | tf-ckpt | onnx -> HF is bit-identical: same tensor names, dtypes, shapes
  and bytes as the source's model.safetensors; the only tensor left behind is one the report names
  with its reason (BERT's ``position_ids`` buffer, which is 0..511 and not a parameter).
- Every non-weight file of the source directory (README.md, modules.json, 1_Pooling/config.json,
  tokenizer files, chat template, ...) arrives byte-identical, and the reports list it in side_files.
- The config.json that ``llmstd convert --to hf`` writes loads as the same model in transformers 5
  (in process) and in transformers 4.57 (a subprocess in the legacy environment): identical logits,
  equal to the original directory's under transformers 5. transformers 4.57 reads the original
  5.x-written config with rope_theta 10000 -- the trap this guards against.
- In the legacy environment (marked ``legacy``): transformers' TF class and its Google-checkpoint
  reader load llmstd's TF outputs of the encoder, and 4.57 reads the decoder llmstd writes right.

Each conversion runs once per module; the directories are removed when the module is done.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import llmstd
from helpers import BuiltOnce, assert_tensors_bit_identical, padded_batch, read_safetensors_dir, run_cli

pytest.importorskip("torch")
pytest.importorskip("transformers")

FORMATS = ("canonical", "tf-h5", "tf-ckpt", "onnx")
MODELS = ("decoder", "encoder")
VOCAB = {"decoder": 49152, "encoder": 30522}
SEQ = 32
# Files of a Hugging Face directory that a conversion writes anew rather than carries.
WRITTEN = {"config.json", "model.safetensors"}
# What a conversion may leave behind of the source's tensors, with the reason it must give.
IGNORED = {"decoder": {}, "encoder": {"embeddings.position_ids": "position index buffer"}}
ROPE_THETA = 100000.0  # SmolLM2's; transformers 4.57 reads a 5.x config as the default 10000


class Real(BuiltOnce):
    """The real checkpoints' conversions, each made once on first use."""

    def __init__(self, request: pytest.FixtureRequest, root: Path) -> None:
        super().__init__()
        self.request = request
        self.root = root

    def source(self, model: str) -> Path:
        return self.request.getfixturevalue(f"real_{model}")

    def expected(self, model: str) -> dict[str, Any]:
        """The source's tensors as stored, less those the conversion leaves behind by design."""
        def build() -> dict[str, Any]:
            tensors = read_safetensors_dir(self.source(model))
            return {k: v for k, v in tensors.items() if k not in IGNORED[model]}
        return self._once(("expected", model), build)

    def there(self, model: str, fmt: str) -> tuple[Path, dict[str, Any]]:
        """HF -> ``fmt`` with the Python API: (directory, report)."""
        def build() -> tuple[Path, dict[str, Any]]:
            out = self.root / f"{model}-{fmt}"
            return out, llmstd.convert(self.source(model), out, to=fmt).to_dict()
        return self._once(("there", model, fmt), build)

    def back(self, model: str, fmt: str) -> tuple[Path, dict[str, Any]]:
        """``fmt`` -> HF with the CLI (``llmstd convert --to hf --json``): (directory, report)."""
        def build() -> tuple[Path, dict[str, Any]]:
            src, _ = self.there(model, fmt)
            out = self.root / f"{model}-{fmt}-hf"
            done = run_cli("convert", src, out, "--to", "hf", "--json", timeout=600)
            assert done.returncode == 0, done.stderr
            return out, json.loads(done.stdout)
        return self._once(("back", model, fmt), build)


@pytest.fixture(scope="module")
def real(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("real-checkpoints")
    yield Real(request, root)
    shutil.rmtree(root, ignore_errors=True)  # ~5 GB of conversions: not kept for later sessions


def batch(model: str) -> tuple[Any, Any]:
    """Two rows of SEQ token ids, the second right-padded (its last 6 positions masked)."""
    return padded_batch(seq=SEQ, vocab=VOCAB[model], seed=1)


def run_torch(path: Path, model: str, **kwargs: Any) -> Any:
    """The model at ``path`` run by this environment's transformers (eager attention, float32)."""
    import torch
    import transformers

    transformers.logging.disable_progress_bar()
    auto = transformers.AutoModelForCausalLM if model == "decoder" else transformers.AutoModel
    net = auto.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager", **kwargs).eval()
    ids, mask = batch(model)
    with torch.no_grad():
        out = net(input_ids=ids, attention_mask=mask)
    return out.logits if model == "decoder" else out


# ------------------------------------------------------------------------------------------------
# bit-identical round trips and side files (main environment)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model", MODELS)
def test_round_trip_is_bit_identical(real, model: str, fmt: str) -> None:
    _, there = real.there(model, fmt)
    out, back = real.back(model, fmt)
    assert there["target_format"] == fmt and back["source_format"] == fmt
    ignored = {item["name"]: item["reason"] for item in there["ignored"]}
    assert set(ignored) == set(IGNORED[model])
    for name, reason in IGNORED[model].items():
        assert reason in ignored[name]
    assert_tensors_bit_identical(real.expected(model), out)


def test_dropped_position_ids_are_the_default_positions(real) -> None:
    """What the encoder round trip leaves out is transformers' own default, so nothing is lost."""
    import torch

    stored = read_safetensors_dir(real.source("encoder"))["embeddings.position_ids"]
    assert torch.equal(stored, torch.arange(stored.shape[-1]).expand_as(stored))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model", MODELS)
def test_side_files_survive_byte_identical(real, model: str, fmt: str) -> None:
    source = real.source(model)
    side = sorted(rel for rel in (p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
                  if rel not in WRITTEN)
    if model == "encoder":  # the sentence-transformers files this checkpoint is about
        assert {"README.md", "modules.json", "1_Pooling/config.json", "config_sentence_transformers.json",
                "sentence_bert_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                "special_tokens_map.json"} <= set(side)
    else:
        assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= set(side)
    there_dir, there = real.there(model, fmt)
    back_dir, back = real.back(model, fmt)
    assert sorted(there["side_files"]) == side
    assert sorted(back["side_files"]) == side
    for rel in side:
        want = (source / rel).read_bytes()
        assert (there_dir / rel).read_bytes() == want, f"{fmt}: {rel}"
        assert (back_dir / rel).read_bytes() == want, f"{fmt} -> hf: {rel}"


# ------------------------------------------------------------------------------------------------
# the written config.json, read by both transformers generations


@pytest.fixture(scope="module")
def original_logits(real) -> Any:
    """The original decoder directory's logits under transformers 5."""
    return real._once(("logits", "decoder"), lambda: run_torch(real.source("decoder"), "decoder"))


def test_written_decoder_config_spells_rope_for_both_generations(real) -> None:
    config = json.loads((real.back("decoder", "canonical")[0] / "config.json").read_text())
    original = json.loads((real.source("decoder") / "config.json").read_text())
    assert "rope_theta" not in original  # transformers 5 wrote only rope_parameters
    assert original["rope_parameters"]["rope_theta"] == ROPE_THETA
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == ROPE_THETA


def test_decoder_written_by_llmstd_runs_identically_in_transformers_5(real, original_logits) -> None:
    import torch

    got = run_torch(real.back("decoder", "canonical")[0], "decoder")
    assert torch.equal(got, original_logits)


def test_encoder_written_by_llmstd_runs_identically_in_transformers_5(real) -> None:
    import torch

    want = run_torch(real.source("encoder"), "encoder")
    got = run_torch(real.back("encoder", "canonical")[0], "encoder")
    assert torch.equal(got.last_hidden_state, want.last_hidden_state)
    assert torch.equal(got.pooler_output, want.pooler_output)


LEGACY_SCRIPT = """
import json, sys
import numpy as np, torch, transformers
from transformers import AutoConfig, AutoModelForCausalLM
converted, original, inputs, out = sys.argv[1:5]
data = np.load(inputs)
model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32, attn_implementation="eager").eval()
with torch.no_grad():
    logits = model(input_ids=torch.from_numpy(data["input_ids"]),
                   attention_mask=torch.from_numpy(data["attention_mask"])).logits
np.save(out, logits.numpy())
print(json.dumps({"version": transformers.__version__, "rope_theta": model.config.rope_theta,
                  "original_rope_theta": AutoConfig.from_pretrained(original).rope_theta}))
"""


def test_decoder_written_by_llmstd_runs_identically_in_transformers_4(real, original_logits, legacy_python,
                                                                      tmp_path: Path) -> None:
    ids, mask = batch("decoder")
    np.savez(tmp_path / "inputs.npz", input_ids=ids.numpy(), attention_mask=mask.numpy())
    env = {**os.environ, "USE_TORCH": "1", "USE_TF": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([legacy_python, "-c", LEGACY_SCRIPT, str(real.back("decoder", "canonical")[0]),
                           str(real.source("decoder")), str(tmp_path / "inputs.npz"), str(tmp_path / "logits.npy")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["version"].startswith("4.")
    assert info["rope_theta"] == ROPE_THETA
    # Control: the original, written by transformers 5, is misread by 4.57 -- so agreement below
    # depends on what llmstd wrote.
    assert info["original_rope_theta"] == 10000.0
    got = np.load(tmp_path / "logits.npy")
    assert np.array_equal(got, original_logits.numpy())


# ------------------------------------------------------------------------------------------------
# legacy environment: transformers 4.57's TF classes and readers on the real encoder, and its
# reading of the decoder llmstd writes


@pytest.mark.legacy
def test_encoder_tf_h5_loads_in_transformers_tf_class(real) -> None:
    import transformers

    out, _ = real.there("encoder", "tf-h5")
    tf_model, info = transformers.TFBertModel.from_pretrained(str(out), output_loading_info=True)
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not list(info.get(key, [])), f"{key}: {info.get(key)}"
    want = run_torch(real.source("encoder"), "encoder")
    ids, mask = batch("encoder")
    got = tf_model(input_ids=ids.numpy(), attention_mask=mask.numpy())
    for name in ("last_hidden_state", "pooler_output"):
        a, b = getattr(got, name).numpy(), getattr(want, name).numpy()
        # Two frameworks' float32 kernels: relative to the trained model's activation scale.
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, float(np.abs(b).max())), name


@pytest.mark.legacy
def test_encoder_google_checkpoint_loads_with_transformers_reader(real) -> None:
    import torch
    import transformers

    out, _ = real.there("encoder", "tf-ckpt")
    config = transformers.BertConfig.from_json_file(str(out / "bert_config.json"))
    config._attn_implementation = "eager"

    class Pretraining(torch.nn.Module):  # Google's names start at "bert/", as in BertForPreTraining
        def __init__(self) -> None:
            super().__init__()
            self.bert = transformers.BertModel(config)

    holder = Pretraining()
    transformers.load_tf_weights_in_bert(holder, config, str(out / "bert_model.ckpt"))
    original = transformers.BertModel.from_pretrained(str(real.source("encoder")), attn_implementation="eager")
    params = dict(original.named_parameters())
    loaded = dict(holder.bert.named_parameters())
    assert sorted(loaded) == sorted(params)
    for name, value in params.items():
        assert torch.equal(loaded[name], value), name
    ids, mask = batch("encoder")
    with torch.no_grad():
        got = holder.bert.eval()(input_ids=ids, attention_mask=mask)
        want = original.eval()(input_ids=ids, attention_mask=mask)
    # Same values, but the reader leaves kernels as transposed views, so a GEMM may take another
    # path: equal to float32 rounding, not necessarily bit for bit.
    for name in ("last_hidden_state", "pooler_output"):
        a, b = getattr(got, name), getattr(want, name)
        assert float((a - b).abs().max()) <= 1e-6 * max(1.0, float(b.abs().max())), name


@pytest.mark.legacy
def test_transformers_4_reads_the_decoder_llmstd_writes(real) -> None:
    import torch
    import transformers

    converted = real.back("decoder", "canonical")[0]
    assert transformers.AutoConfig.from_pretrained(str(converted)).rope_theta == ROPE_THETA
    # The trap: 4.57 reads transformers 5's config.json with its default rope_theta.
    assert transformers.AutoConfig.from_pretrained(str(real.source("decoder"))).rope_theta == 10000.0
    got = run_torch(converted, "decoder")
    want = run_torch(real.source("decoder"), "decoder", rope_theta=ROPE_THETA)
    assert torch.equal(got, want)


def test_trained_decoder_generates_through_onnxruntime_genai_as_through_transformers(
        real_decoder: Path, tmp_path: Path) -> None:
    """SmolLM2 as an onnxruntime-genai package (float32 graph with its key/value cache, its own
    tokenizer files carried along): genai's tokenizer encodes the chat prompt as transformers' does,
    and the greedy continuation is token-identical to transformers 5 ``generate``."""
    pytest.importorskip("onnxruntime_genai")
    import onnxruntime_genai as og
    import torch
    import transformers

    from helpers import greedy_genai, greedy_with_eos

    package = tmp_path / "genai"
    llmstd.convert(real_decoder, package, to="onnx", onnx_package="genai")
    assert (package / "tokenizer.json").is_file() and (package / "genai_config.json").is_file()
    tokenizer = transformers.AutoTokenizer.from_pretrained(real_decoder)
    text = "The three primary colours are"
    want_ids = np.asarray(tokenizer(text)["input_ids"])
    assert np.array_equal(np.asarray(og.Tokenizer(og.Model(str(package))).encode(text)), want_ids)
    model = transformers.AutoModelForCausalLM.from_pretrained(real_decoder, dtype=torch.float32).eval()
    want = greedy_with_eos(model, want_ids)
    got = greedy_genai(package, want_ids)
    assert len(want) > len(want_ids) + 8, "the continuation should be more than a few tokens"
    np.testing.assert_array_equal(got, want)
