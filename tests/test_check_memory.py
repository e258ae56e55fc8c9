"""``llmstd check --max-memory``: checking a model larger than memory.

llmstd-torch streams one layer's weights at a time and computes exactly what it computes with the
whole model loaded; transformers runs through accelerate's offload, reading what does not fit from
the checkpoint's own files; a fault is still localised to its layer; runtimes that load the whole
model are refused rather than run past the budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import helpers
import llmstd
from llmstd.checking import check
from llmstd.checking.runtimes import RUNTIME_OVERHEAD
from llmstd.errors import LlmstdError

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

KWARGS = dict(vocab_size=helpers.VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)
#: a budget that leaves accelerate 40 kB for weights: most of the tiny model is read from disk
TIGHT = RUNTIME_OVERHEAD + 40_000


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("memory")
    model = helpers.sharp_random_model("LlamaConfig", "LlamaForCausalLM", KWARGS, seed=4)
    hf = helpers.save(model, root / "hf", "safetensors")
    llmstd.convert(hf, root / "canonical")
    return {"hf": hf, "canonical": root / "canonical"}


def test_streamed_weights_compute_the_same_and_hold_one_layer(dirs: dict[str, Path]) -> None:
    from llmstd import vocab
    from llmstd.runtimes.torch_model import StreamedWeights, TorchModel

    ckpt = llmstd.load(dirs["canonical"])
    ids, mask = (t.numpy() for t in helpers.padded_batch())
    whole = TorchModel(ckpt.tensors, ckpt.config)(ids, mask)
    model = TorchModel(ckpt.tensors, ckpt.config, stream=True)
    streamed = model(ids, mask)
    assert np.array_equal(whole.outputs["logits"], streamed.outputs["logits"])
    assert all(np.array_equal(a, b) for a, b in zip(whole.hidden_states, streamed.hidden_states))
    assert isinstance(model.weights, StreamedWeights)
    nbytes = {name: t.nbytes for name, t in ckpt.tensors.items()}
    model_wide = sum(n for name, n in nbytes.items() if vocab.layer_of(name) is None)
    largest_layer = max(sum(n for name, n in nbytes.items() if vocab.layer_of(name) == i)
                        for i in range(ckpt.config.num_layers))
    assert model.weights.peak_bytes <= model_wide + largest_layer < sum(nbytes.values())


def test_check_within_max_memory_offloads_transformers_and_passes(dirs: dict[str, Path]) -> None:
    report = check(dirs["hf"], dirs["canonical"], max_memory=TIGHT)
    assert report.passed, report.summary()
    assert report.a.runtime == "transformers" and any("accelerate" in n for n in report.a.notes)
    assert any("streamed" in n for n in report.b.notes), report.b.notes
    assert len(report.layers) == KWARGS["num_hidden_layers"] + 1


def test_decoding_within_max_memory_reports_the_placement_once(dirs: dict[str, Path]) -> None:
    # --decode-steps loads the transformers side a second time; its notes say where it went once.
    report = check(dirs["hf"], dirs["canonical"], max_memory=TIGHT, decode_steps=3)
    assert report.passed, report.summary()
    placement = [n for n in report.a.notes if "accelerate" in n]
    assert len(placement) == 2 and len(set(placement)) == 2, report.a.notes


def test_a_fault_is_localised_within_max_memory(dirs: dict[str, Path], tmp_path: Path) -> None:
    import safetensors
    from safetensors.numpy import save_file

    damaged = tmp_path / "canonical"
    damaged.mkdir()
    source = dirs["canonical"] / "canonical.safetensors"
    with safetensors.safe_open(str(source), "np") as f:
        metadata = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    tensors["layers.2.mlp.down.weight"] = tensors["layers.2.mlp.down.weight"] * np.float32(1.01)
    save_file(tensors, str(damaged / "canonical.safetensors"), metadata=metadata)
    report = check(dirs["hf"], damaged, max_memory=TIGHT)
    assert not report.passed
    assert next(layer for layer in report.layers if layer.diverged).layer == 2, report.summary()


def test_max_memory_refuses_a_runtime_that_loads_the_whole_model(dirs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    llmstd.convert(dirs["hf"], tmp_path / "onnx", to="onnx")
    with pytest.raises(LlmstdError, match="onnxruntime, which loads the whole model"):
        check(dirs["hf"], tmp_path / "onnx", max_memory="8GB")


def test_cli_max_memory(dirs: dict[str, Path]) -> None:
    result = helpers.run_cli("check", str(dirs["hf"]), str(dirs["canonical"]), "--max-memory", str(TIGHT),
                             "--seq-len", "16")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "streamed one layer at a time" in result.stdout and "accelerate" in result.stdout


def test_device_map_places_the_transformers_side_with_accelerate(dirs: dict[str, Path]) -> None:
    report = check(dirs["hf"], dirs["canonical"], device_map="auto")
    assert report.passed, report.summary()
    assert any(n.startswith("accelerate placed the modules") and "on cpu" in n for n in report.a.notes), report.a.notes
    assert any("--device-map applies to transformers; llmstd-torch runs on cpu" in n for n in report.b.notes)
    with pytest.raises(LlmstdError, match="unknown --device-map 'everywhere'"):
        check(dirs["hf"], dirs["canonical"], device_map="everywhere")


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.skipif(_cuda_devices() == 0, reason="needs a CUDA device (runs when the device machine is lent)")
@pytest.mark.parametrize("max_memory", [None, TIGHT])
def test_device_map_auto_on_cuda(dirs: dict[str, Path], max_memory: int | None) -> None:
    """transformers spread by accelerate over every GPU (offloading past the budget), llmstd-torch on
    the first: the same model within the float32 tolerances."""
    report = check(dirs["hf"], dirs["canonical"], device="cuda", device_map="auto", max_memory=max_memory)
    assert report.passed, report.summary()
    placed = next(n for n in report.a.notes if n.startswith("accelerate placed the modules"))
    assert "on 0" in placed or "on cuda" in placed, placed
