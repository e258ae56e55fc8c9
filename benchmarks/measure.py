"""Wall time and peak RSS of one command, measured for that command alone.

GNU time measures its own child, which it forks from a small process, so the figure is the
command's own high-water mark and not the (possibly large) benchmark driver's, which a fork from
Python would inherit in ru_maxrss.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = shutil.which("time") or "/usr/bin/time"


@dataclass
class Sample:
    seconds: float
    peak_rss_mb: float


def run_once(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None) -> Sample:
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        started = time.perf_counter()
        proc = subprocess.run([GNU_TIME, "-f", "%M", "-o", report.name, *argv], env=env, timeout=timeout,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed with {proc.returncode}: {proc.stderr[-3000:]}")
        peak_kib = int(report.read().strip().splitlines()[-1])
    return Sample(seconds, peak_kib / 1024)


def median_of(runs: int, argv: Sequence[str], *, before: Callable[[], None] | None = None,
              env: dict[str, str] | None = None, timeout: float | None = None) -> tuple[Sample, list[Sample]]:
    samples = []
    for _ in range(runs):
        if before:
            before()
        samples.append(run_once(argv, env, timeout))
    median = Sample(statistics.median(s.seconds for s in samples), statistics.median(s.peak_rss_mb for s in samples))
    return median, samples


def remove(path: Path) -> Callable[[], None]:
    def clear() -> None:
        shutil.rmtree(path, ignore_errors=True)
        os.sync()  # start each run with the previous run's dirty pages on disk

    return clear
