"""Configs across the two transformers generations: a checkpoint saved by transformers 5 (which
writes ``rope_parameters`` and ``dtype`` only) converts to every format and back bit-exactly, and
the config.json llmstd writes loads as the same model in transformers 5 and in 4.57 -- which reads
a 5.x config with the default rope_theta 10000 and no scaling, silently.

Tiny llama, mistral and qwen2 models (every parameter random, sharpened so rotary settings move the
logits) with rope_theta 500000, and llama with llama3 and linear scaling. transformers 4.57 runs in
a subprocess of the legacy environment (LLMSTD_LEGACY_PYTHON). A rope type llmstd does not
understand is refused, naming the key.
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
from helpers import (
    BuiltOnce,
    assert_cli_error,
    assert_tensors_bit_identical,
    padded_batch,
    randomize_,
    read_safetensors_dir,
    run_cli,
    sharpen_,
)

pytest.importorskip("torch")
pytest.importorskip("transformers")

FORMATS = ("canonical", "tf-h5", "tf-ckpt", "onnx")
SEQ = 32
_COMMON = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128)
# case -> (config class, model class, config kwargs in transformers 5's spelling)
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama-theta": ("LlamaConfig", "LlamaForCausalLM", dict(
        _COMMON, tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 500000.0})),
    "llama-llama3": ("LlamaConfig", "LlamaForCausalLM", dict(
        _COMMON, tie_word_embeddings=False, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    "llama-linear": ("LlamaConfig", "LlamaForCausalLM", dict(
        _COMMON, tie_word_embeddings=True, rope_parameters={"rope_type": "linear", "rope_theta": 500000.0,
                                                            "factor": 4.0})),
    "mistral-theta": ("MistralConfig", "MistralForCausalLM", dict(
        _COMMON, tie_word_embeddings=False, sliding_window=16,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0})),
    "qwen2-theta": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        _COMMON, tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 500000.0})),
}


def batch() -> tuple[Any, Any]:
    return padded_batch(seq=SEQ, seed=3)


class Generations(BuiltOnce):
    """Each case's model, its transformers 5 save, logits and llmstd's conversions, built once."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def model(self, case: str) -> Any:
        def build() -> Any:
            import transformers

            config_cls, model_cls, kwargs = CASES[case]
            config = getattr(transformers, config_cls)(**kwargs)
            config._attn_implementation = "eager"
            return sharpen_(randomize_(getattr(transformers, model_cls)(config), seed=5)).eval()
        return self._once(("model", case), build)

    def hf_dir(self, case: str) -> Path:
        def build() -> Path:
            out = self.root / case / "hf"
            self.model(case).save_pretrained(out)
            return out
        return self._once(("hf", case), build)

    def logits(self, case: str) -> Any:
        def build() -> Any:
            import torch

            with torch.no_grad():
                return self.model(case)(*batch()).logits
        return self._once(("logits", case), build)

    def back(self, case: str, fmt: str) -> Path:
        """transformers 5's save -> ``fmt`` -> HF, both with llmstd."""
        def build() -> Path:
            there, out = self.root / case / fmt, self.root / case / f"{fmt}-hf"
            llmstd.convert(self.hf_dir(case), there, to=fmt)
            llmstd.convert(there, out, to="hf")
            return out
        return self._once(("back", case, fmt), build)


@pytest.fixture(scope="module")
def gens(tmp_path_factory: pytest.TempPathFactory) -> Generations:
    return Generations(tmp_path_factory.mktemp("generations"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_transformers_5_writes_rope_parameters_only(gens, case: str) -> None:
    """Precondition: the source config is in transformers 5's spelling, which 4.57 misreads."""
    config = json.loads((gens.hf_dir(case) / "config.json").read_text())
    assert config["rope_parameters"]["rope_theta"] == 500000.0
    assert "rope_theta" not in config and "rope_scaling" not in config and "torch_dtype" not in config


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_format_round_trips_bit_exactly(gens, case: str, fmt: str) -> None:
    assert_tensors_bit_identical(read_safetensors_dir(gens.hf_dir(case)), gens.back(case, fmt))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_written_config_runs_identically_in_transformers_5(gens, case: str, fmt: str) -> None:
    import torch
    import transformers

    path = gens.back(case, fmt)
    config = json.loads((path / "config.json").read_text())
    want = gens.model(case).config.rope_parameters
    assert config["rope_parameters"] == want
    assert config["rope_theta"] == want["rope_theta"]  # what transformers 4.x reads
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    assert model.config.rope_parameters == want
    with torch.no_grad():
        got = model(*batch()).logits
    assert torch.equal(got, gens.logits(case))


LEGACY_SCRIPT = """
import json, sys
import numpy as np, torch, transformers
from transformers import AutoModelForCausalLM
jobs, inputs = json.loads(sys.argv[1]), np.load(sys.argv[2])
ids, mask = torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"])
seen = {}
for job in jobs:
    model = AutoModelForCausalLM.from_pretrained(job["dir"], dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        np.save(job["out"], model(input_ids=ids, attention_mask=mask).logits.numpy())
    seen[job["out"]] = {"rope_theta": model.config.rope_theta,
                        "rope_scaling": getattr(model.config, "rope_scaling", None)}  # mistral has none
print(json.dumps({"version": transformers.__version__, "configs": seen}))
"""


@pytest.fixture(scope="module")
def legacy_logits(gens, legacy_python: str, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Any]:
    """transformers 4.57's logits for every written directory ('hf': the transformers 5 original),
    from one subprocess in the legacy environment; (case, fmt) -> (logits, config as read)."""
    root = tmp_path_factory.mktemp("legacy-logits")
    ids, mask = batch()
    np.savez(root / "inputs.npz", input_ids=ids.numpy(), attention_mask=mask.numpy())
    jobs = {(case, fmt): {"dir": str(gens.back(case, fmt) if fmt != "hf" else gens.hf_dir(case)),
                          "out": str(root / f"{case}-{fmt}.npy")}
            for case in CASES for fmt in ("hf", *FORMATS)}
    env = {**os.environ, "USE_TORCH": "1", "USE_TF": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([legacy_python, "-c", LEGACY_SCRIPT, json.dumps(list(jobs.values())),
                           str(root / "inputs.npz")], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["version"].startswith("4."), report["version"]
    return {key: (np.load(job["out"]), report["configs"][job["out"]]) for key, job in jobs.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_written_config_runs_identically_in_transformers_4(gens, legacy_logits, case: str) -> None:
    want = gens.logits(case).numpy()
    rope = gens.model(case).config.rope_parameters
    # Control: 4.57 misreads transformers 5's own config (theta 10000, no scaling) and so computes
    # another model -- agreement below is owed to the config llmstd writes.
    original, original_config = legacy_logits[(case, "hf")]
    assert original_config["rope_theta"] == 10000.0 and original_config["rope_scaling"] is None
    assert not np.allclose(original, want, atol=1e-3)
    for fmt in FORMATS:
        got, config = legacy_logits[(case, fmt)]
        assert config["rope_theta"] == rope["rope_theta"], fmt
        if rope["rope_type"] != "default":
            assert config["rope_scaling"]["rope_type"] == rope["rope_type"], fmt
        assert np.array_equal(got, want), f"{fmt}: max abs {np.abs(got - want).max():.3g}"


def test_unknown_rope_type_is_refused_naming_the_key(gens, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(gens.hf_dir("llama-theta"), src)
    config = json.loads((src / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "proportional", "rope_theta": 500000.0, "factor": 2.0}
    (src / "config.json").write_text(json.dumps(config))
    for fmt in ("canonical", "hf"):
        assert_cli_error(run_cli("convert", src, tmp_path / f"out-{fmt}", "--to", fmt),
                         "rope_parameters.rope_type", "proportional")
        assert not (tmp_path / f"out-{fmt}").exists()
