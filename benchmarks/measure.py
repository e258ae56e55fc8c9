"""Wall time and peak RSS of a command, measured for that child process alone (os.wait4)."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Sample:
    seconds: float
    peak_rss_mb: float


def run_once(argv: Sequence[str], env: dict[str, str] | None = None) -> Sample:
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"{' '.join(argv)} failed with {proc.returncode}: {err[-2000:]}")
    return Sample(seconds, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux


def median_of(runs: int, argv: Sequence[str], *, before: Callable[[], None] | None = None,
              env: dict[str, str] | None = None) -> tuple[Sample, list[Sample]]:
    samples = []
    for _ in range(runs):
        if before:
            before()
        samples.append(run_once(argv, env))
    return Sample(statistics.median(s.seconds for s in samples),
                  statistics.median(s.peak_rss_mb for s in samples)), samples


def remove(path: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(path, ignore_errors=True)
