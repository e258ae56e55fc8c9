"""``llmstd check`` on trained checkpoints: correct conversions pass in float32, float16 and
bfloat16 across runtimes, and planted faults -- down to one projection rounded to bfloat16 -- fail,
localised to their layer and blamed on what was planted.

The cases and faults are those of benchmarks/calibrate_check.py (which reports every one of them
with its margin to the limits in benchmarks/CALIBRATION.md); this module runs a subset that covers
each runtime, each dtype and each kind of fault within the suite's time budget.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import helpers
from llmstd.checking import check

pytest.importorskip("torch")
pytest.importorskip("transformers")
sys.path.insert(0, str(helpers.REPO / "benchmarks"))
import calibrate_check as cal  # noqa: E402

CORRECT = [
    ("decoder", "onnx", "keep"),  # onnxruntime, float32 (the false FAIL at max abs 2.4e-4)
    ("decoder", "tf-h5", "keep"),  # llmstd's TensorFlow runtime
    ("decoder", "canonical", "float16"),  # llmstd-torch computing in float16
    ("decoder", "onnx", "bfloat16"),  # bfloat16 weights, float32 compute
    ("encoder", "onnx", "keep"),
    ("encoder", "tf-ckpt", "keep"),
    ("encoder", "canonical", "bfloat16"),
]
FAULTS = {fault.name: fault for fault in cal.FAULTS}
PLANTED = [
    "one attention projection rounded to bfloat16 (layer 15 q)",
    "rope_theta 10000 instead of 100000",
    "llama3 rope scaling dropped (factor 8, original context 8192)",
    "rope_theta 10000 in a bfloat16 conversion",
    "position table off by one row",
]


@pytest.fixture(scope="module")
def sources(request: pytest.FixtureRequest) -> dict[str, Path]:
    return {model: request.getfixturevalue(f"real_{model}") for model in ("decoder", "encoder")}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("real-check")
    yield root
    shutil.rmtree(root, ignore_errors=True)  # ~4 GB of conversions: not kept for later sessions


@pytest.mark.parametrize("model,fmt,dtype", CORRECT)
def test_correct_conversion_of_a_trained_model_passes(sources: dict[str, Path], workdir: Path, model: str, fmt: str,
                                                      dtype: str) -> None:
    report = check(sources[model], cal.converted(sources[model], workdir, model, fmt, dtype))
    assert report.passed, report.summary()
    assert report.a.runtime == "transformers" and report.a.in_reference
    assert report.dtype == ("float32" if dtype == "keep" else dtype)
    # Not merely passing: well inside every limit (the calibration's margins are larger still).
    assert max(cal.limit_ratios(report).values()) < 0.5, cal.limit_ratios(report)


@pytest.mark.parametrize("name", PLANTED)
def test_planted_fault_fails_where_it_was_planted(sources: dict[str, Path], workdir: Path, name: str) -> None:
    fault = FAULTS[name]
    a, b = cal.faulty(sources[fault.model], workdir, fault)
    try:
        report = check(a, b)
    finally:  # each faulty copy (up to 517 MB) serves this test alone
        for side in (a, b):
            if workdir in side.parents:
                shutil.rmtree(side, ignore_errors=True)
    assert not report.passed, report.summary()
    assert cal.found_as_planted(report, fault), (report.first_divergence, report.summary())
    # Far beyond the limit, not at its edge.
    assert max(cal.limit_ratios(report).values()) > 10, cal.limit_ratios(report)
    if fault.stage is not None:  # every stage before the planted one agrees
        stages = [s.stage for s in report.layers]
        assert not any(s.diverged for s in report.layers[:stages.index(fault.stage)])
