"""A conversion's report says where its time went (llmstd.timing): the converting thread's phases
never overlap, so they add up to no more than the wall time, and each writer's work shows under its
own phase."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmstd
from llmstd import timing

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny-gpt2"
BACKGROUND = ("compute", "hash")  # phases of other threads, overlapping the converting thread's


def _converting_thread(timings: dict[str, float]) -> float:
    return sum(v for k, v in timings.items() if k not in (*BACKGROUND, "wall"))


@pytest.mark.parametrize(("to", "expected"), [
    # canonical: tensors copied kernel to kernel, sources hashed for provenance on another thread
    ("canonical", {"read source", "copy", "fsync", "hash", "wait for hashes", "finish"}),
    # tf-h5: GPT-2's Conv1D weights are already [in, out]; the HDF5 structure laid out first
    ("tf-h5", {"read source", "lay out", "fsync", "finish"}),
    # onnx: the fused c_attn is split into q, k, v (computed on the loader thread); this small a
    # model keeps its weights inside the graph
    ("onnx", {"read source", "compute", "wait for compute", "write graph", "fsync", "finish"}),
])
def test_conversion_report_breaks_its_time_into_phases(tmp_path: Path, to: str, expected: set[str]) -> None:
    timings = llmstd.convert(EXAMPLE, tmp_path / "out", to=to).timings
    assert expected <= set(timings), timings
    assert all(v >= 0 for v in timings.values())
    assert _converting_thread(timings) <= timings["wall"] + 1e-3, timings


def test_converting_thread_phases_do_not_overlap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fsync made slow: were any counted twice (as 'fsync' and inside another phase such as
    'finish'), the converting thread's phases would add up to more than the wall time."""
    import os
    import time

    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (time.sleep(0.05), real(fd))[1])
    timings = llmstd.convert(EXAMPLE, tmp_path / "out", to="canonical").timings
    assert timings["fsync"] >= 0.05 and timings["finish"] >= 0.05, timings
    assert _converting_thread(timings) <= timings["wall"] + 1e-3, timings


def test_phases_outside_a_collection_are_not_kept() -> None:
    with timing.phase("stray"):
        pass
    with timing.collect() as inside:
        with timing.phase("a"):
            pass
    assert set(inside) == {"a", "wall"}
    with timing.collect() as again:
        pass
    assert set(again) == {"wall"}
