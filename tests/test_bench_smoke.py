"""Keeps the benchmark scripts working: one tiny run end to end (the targets are checked by
`make bench`, never here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


@pytest.mark.slow
def test_benchmark_smoke(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, str(BENCH), "--workdir", str(tmp_path / "work"), "--smoke", "--no-check",
                           "--results", str(results)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = results.read_text()
    assert "| cp -r |" in text
    assert "| llmstd HF -> canonical |" in text and "| llmstd canonical -> HF |" in text
    assert "| llmstd HF -> tf-ckpt |" in text and "| llmstd tf-ckpt -> HF |" in text
    assert "Targets:" in text and "peak RSS" in text
    # every conversion row says where its time went
    assert "- llmstd HF -> canonical: where the time goes (s, medians): start-up, imports and exit " in text
    assert "copy " in text and "fsync " in text and "on other threads, overlapping: " in text
    assert "| llmstd HF -> HF packed experts |" in text and "| llmstd HF packed experts -> canonical |" in text
    # A later run of one shape keeps the other shape's section.
    proc = subprocess.run([sys.executable, str(BENCH), "--workdir", str(tmp_path / "work"), "--runs", "1", "--no-hf",
                           "--no-check", "--shapes", "mixtral-tiny", "--results", str(results)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = results.read_text()
    assert text.count("## llama-tiny") == 1 and text.count("## mixtral-tiny") == 1
