"""Where a conversion's time goes, measured: seconds spent in named phases, summed per phase.

The writers mark their phases with :func:`phase` (and :func:`fsync`); :func:`collect` around a
conversion gathers the sums, which the conversion report carries as ``timings``. Phases of the
converting thread never nest or overlap one another, so what they leave of ``wall`` is the
bookkeeping between them. Two phases run on other threads and overlap the rest: ``compute``
(loading the tensors that are not plain byte ranges -- reading, casting, transposing, splitting --
on the loader thread while the previous tensor is written) and ``hash`` (the canonical writer's
provenance sha256 of the source files). Interpreter start-up and imports happen before a
conversion starts and are not in ``wall``.

Phases: ``read source`` (open the source: headers, config, map), ``wait for compute`` (the writer
idle until the loader has the next tensor), ``copy`` (plain byte ranges, file to file),
``write`` (computed arrays), ``writeback`` (starting the disk writes of a large tensor),
``fsync``, ``hash after writing`` (source files no background thread had started when the writer
finished, hashed by the writer), ``wait for hashes``, ``lay out`` (HDF5 creating a weights file's
structure), ``write graph`` (an ONNX graph serialised), ``finish`` (the staging directory fsynced
and renamed into place). The tf.train writer loads on the converting thread: its ``compute`` is
not overlapped.

Collecting costs two clock reads per phase; nothing is kept when no collection is open. The sums
are per process: two conversions running at once in one process would share them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

_lock = threading.Lock()
_totals: dict[str, float] | None = None


def add(name: str, seconds: float) -> None:
    with _lock:
        if _totals is not None:
            _totals[name] = _totals.get(name, 0.0) + seconds


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - started)


def fsync(fd: int) -> None:
    """``os.fsync``, timed as the ``fsync`` phase."""
    with phase("fsync"):
        os.fsync(fd)


@contextlib.contextmanager
def collect() -> Iterator[dict[str, float]]:
    """Collect the phases of the code inside; the yielded dict is filled on exit (seconds, rounded
    to the millisecond, plus ``wall``)."""
    global _totals
    result: dict[str, float] = {}
    with _lock:
        _totals = {}
    started = time.perf_counter()
    try:
        yield result
    finally:
        wall = time.perf_counter() - started
        with _lock:
            totals, _totals = _totals or {}, None
        result.update({name: round(seconds, 3) for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1])})
        result["wall"] = round(wall, 3)
