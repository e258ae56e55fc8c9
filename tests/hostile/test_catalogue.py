"""Every catalogue case: a typed llmstd error naming the file, quickly and in bounded memory,
exit code 1 with one line from the CLI, and nothing written at the destination."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

import llmstd
from llmstd import errors

from .catalogue import CASES, Case, canary_path

LLMSTD = Path(sys.executable).parent / "llmstd"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reading_fails_with_typed_error(case: Case, tmp_path: Path) -> None:
    src = case.build(tmp_path)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(case.error) as info:
            llmstd.convert(src, tmp_path / "out", to="canonical")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - started < 10
    # Nothing is allocated from a lying header value: peak Python allocation stays small.
    assert peak < 64 * 1024 * 1024, f"peak allocation {peak} bytes"
    err = info.value
    assert isinstance(err, errors.LlmstdError)
    assert case.message in str(err)
    assert err.file is not None and str(tmp_path) in err.file, f"error does not name the file: {err}"
    assert not (tmp_path / "out").exists()
    assert not canary_path(tmp_path).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".llmstd-staging")]


@pytest.mark.parametrize("case", CASES[::3], ids=[c.name for c in CASES[::3]])
def test_cli_reports_one_line(case: Case, tmp_path: Path) -> None:
    src = case.build(tmp_path)
    proc = subprocess.run([str(LLMSTD), "convert", str(src), str(tmp_path / "out"), "--to", "hf"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert not canary_path(tmp_path).exists()
