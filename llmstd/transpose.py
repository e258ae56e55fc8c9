"""Contiguous matrix transposes, the one layout change that costs real CPU time.

GPT-2's Conv1D and Keras Dense kernels are ``[in, out]`` while canonical is ``[out, in]``, so a
GPT-2 or TensorFlow conversion transposes almost every byte of the model. numpy copies a transposed
view element by element; how fast that runs depends on the cache, so the copy is cut into tiles:

- a tile is a strip of 16 source rows across the full width: each output row of the strip then
  fills whole cache lines, and rows whose length is a power of two (2048, 4096: most models) do
  not evict one another, which square tiles do (measured on one core, bfloat16 [2048, 2048]:
  0.7 GB/s with 256x256 tiles, 1.1 GB/s with 16-row strips); one numpy call per strip also keeps
  the Python overhead per byte low;
- elements are copied as unsigned integers of their width: numpy then uses its own copy loops
  instead of calling a custom dtype's element copy (bfloat16 via ml_dtypes copies ~25% slower);
- a large matrix is split into bands of rows copied on several threads (numpy releases the GIL
  inside each tile's copy), so the transposes of a conversion use every core.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from llmstd.oscalls import usable_cores

TILE_ROWS = 16
PARALLEL_MIN_BYTES = 4 * 1024 * 1024  # below this, starting threads costs more than it saves
MAX_THREADS = 8
_AS_BITS = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32), 8: np.dtype(np.uint64)}

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _threads() -> int:
    return min(usable_cores(), MAX_THREADS)


def _helpers() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_threads() - 1, thread_name_prefix="llmstd-transpose")
        return _pool


def _copy_band(x: np.ndarray, out: np.ndarray, first: int, stop: int) -> None:
    """``out[:, first:stop] = x[first:stop].T``, one strip of rows at a time."""
    for i in range(first, stop, TILE_ROWS):
        end = min(i + TILE_ROWS, stop)
        out[:, i:end] = x[i:end].T


def transpose2d(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``x.T`` as a new C-contiguous array (or written into ``out``, shape ``x.shape[::-1]``)."""
    if x.ndim != 2:
        raise ValueError(f"transpose2d needs a matrix, got shape {x.shape}")
    rows, cols = x.shape
    if out is None:
        out = np.empty((cols, rows), dtype=x.dtype)
    elif out.shape != (cols, rows) or out.dtype != x.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {x.dtype} array of shape {(cols, rows)}")
    result = out
    bits = _AS_BITS.get(x.dtype.itemsize)
    if bits is not None:  # same bytes, native copy loops
        x, out = x.view(bits), out.view(bits)
    threads = _threads() if x.nbytes >= PARALLEL_MIN_BYTES else 1
    if threads == 1 or rows < 2 * TILE_ROWS:
        _copy_band(x, out, 0, rows)
        return result
    band = -(-rows // threads)
    band += -band % TILE_ROWS  # bands start on tile boundaries
    helpers = _helpers()
    pending: list[Future[None]] = [helpers.submit(_copy_band, x, out, start, min(start + band, rows))
                                   for start in range(band, rows, band)]
    _copy_band(x, out, 0, min(band, rows))  # the calling thread copies the first band itself
    for done in pending:
        done.result()
    return result
