"""``llmstd check`` with torch on CUDA against the CPU side (skipped where CUDA is absent).

Run alone with ``pytest -m gpu -s`` to see the figures (max abs error, time per side).
"""

from __future__ import annotations

import json

import pytest

import helpers
from llmstd.checking import check
from sharp_models import SharpModels, sharp  # noqa: F401  (sharp is a fixture)

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("kind", ["gpt2", "bert-mlm", "llama", "mistral"])
def test_cuda_side_matches_cpu_side(sharp: SharpModels, kind: str) -> None:
    # transformers on the GPU (A) against llmstd's torch implementation on the CPU (B), and back.
    for device_a, device_b in (("cuda", "cpu"), ("cpu", "cuda")):
        report = check(sharp.hf_dir(kind), sharp.canonical_dir(kind), device_a=device_a, device_b=device_b)
        assert report.passed, report.summary()
        gpu_side = report.a if device_a == "cuda" else report.b
        cpu_side = report.b if device_a == "cuda" else report.a
        assert gpu_side.device.startswith("cuda:") and cpu_side.device == "cpu"
        print(f"\n{kind}: A {report.a.runtime} on {report.a.device} run {report.a.run_seconds:.4f}s | "
              f"B {report.b.runtime} on {report.b.device} run {report.b.run_seconds:.4f}s | "
              f"max abs {max(o.max_abs for o in report.outputs):.3g}")


def test_same_runtime_on_both_devices(sharp: SharpModels) -> None:
    report = check(sharp.canonical_dir("qwen2"), sharp.canonical_dir("qwen2"), device_a="cpu", device_b="cuda")
    assert report.passed and report.b.device.startswith("cuda:")
    assert not any(layer.diverged for layer in report.layers)


def test_cli_device_cuda(sharp: SharpModels, tmp_path) -> None:
    out = tmp_path / "report.json"
    result = helpers.run_cli("check", sharp.hf_dir("llama"), sharp.canonical_dir("llama"), "--device", "cuda",
                             "--json", out)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert data["a"]["device"].startswith("cuda:") and data["b"]["device"].startswith("cuda:")
