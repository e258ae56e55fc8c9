"""Wall time and peak RSS of one command, measured for that command alone, from a settled machine.

GNU time measures its own child, which it forks from a small process, so the figure is the
command's own high-water mark and not the (possibly large) benchmark driver's, which a fork from
Python would inherit in ru_maxrss.

Before every timed command :func:`settle` puts the machine in the same state: the previous output
removed, every dirty page written (``sync``), and free memory *primed*. Priming matters on virtual
machines whose host reclaims memory the guest has freed (virtio-balloon free page reporting): there,
the first touch of reclaimed memory costs ~1 s per GB, so the same ``cp -r`` of 2.2 GB took 0.5 s or
4-5 s depending on how long the machine had idled before. Touching and releasing enough memory just
before the command gives every command the host-backed free memory a bare-metal machine has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = shutil.which("time") or "/usr/bin/time"


@dataclass
class Sample:
    seconds: float
    peak_rss_mb: float
    stdout: str = ""


def run_once(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None) -> Sample:
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        started = time.perf_counter()
        # stdout is kept (small: e.g. `llmstd convert --json`'s report), not shown
        proc = subprocess.run([GNU_TIME, "-f", "%M", "-o", report.name, *argv], env=env, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed with {proc.returncode}: {proc.stderr[-3000:]}")
        peak_kib = int(report.read().strip().splitlines()[-1])
    return Sample(seconds, peak_kib / 1024, proc.stdout)


def meminfo(key: str) -> int:
    """A /proc/meminfo field in bytes (0 where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def balloon_reporting() -> bool:
    """True on a VM whose host takes back freed guest memory (virtio-balloon free page reporting)."""
    return Path("/sys/module/page_reporting").is_dir() and Path("/sys/bus/virtio/drivers/virtio_balloon").is_dir()


def prime_memory(nbytes: int) -> None:
    """Touch ``nbytes`` of fresh memory and release it, so the next process finds it host-backed."""
    import numpy as np

    nbytes = min(nbytes, meminfo("MemAvailable") // 2)
    if nbytes > 0:
        # writes every page, then frees them at once (munmap): back on the kernel's free lists, still backed
        np.ones(nbytes, dtype=np.uint8)


def settle(output: Path | None, prime_bytes: int) -> None:
    """Remove ``output``, flush every dirty page, then prime memory (see the module docstring)."""
    if output is not None:
        shutil.rmtree(output, ignore_errors=True)
    os.sync()
    prime_memory(prime_bytes)
