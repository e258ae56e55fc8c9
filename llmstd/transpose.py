"""Contiguous matrix transposes, the one layout change that costs real CPU time.

GPT-2's Conv1D and Keras Dense kernels are ``[in, out]`` while canonical is ``[out, in]``, so a
GPT-2 or TensorFlow conversion transposes almost every byte of the model. numpy copies a transposed
view element by element; how fast that runs depends on the cache, so the copy is cut into strips:

- the copy goes a strip of source rows at a time, across the full width, so that one numpy call
  moves a whole strip and the Python overhead per byte stays low: strips of 256 rows, whose output
  rows then fill many cache lines at a time;
- rows whose starts fall on fewer than four distinct offsets modulo 4 KiB (the span of the L1
  cache's sets: row lengths that are multiples of 2 KiB, such as 2048 or 4096 bfloat16 columns)
  evict one another when many are read at once. Such rows are first copied 128 at a time
  (contiguously, which is cheap) into a staging buffer whose rows are 64 bytes longer, and
  transposed from there;
- measured on one core (best of three), GB/s, strips of 16 rows / 256 rows / 128 rows staged:
  bfloat16 [5632, 2048] 1.01 / 0.68 / 2.29, [4096, 4096] 1.46 / 0.68 / 2.56, [32000, 2048] 1.45 /
  0.64 / 2.65 (these rows alias); bfloat16 [2048, 5632] 0.92 / 1.57 / 1.49, [2048, 32000] 1.00 /
  2.04 / 1.52, [4096, 11008] 1.18 / 2.04 / 1.81; float32 [1024, 3072] 2.50 / 1.32 / 3.71 (aliased),
  [1024, 2816] 2.03 / 3.14 / 3.57;
- elements are copied as unsigned integers of their width: numpy then uses its own copy loops
  instead of calling a custom dtype's element copy (bfloat16 via ml_dtypes copies ~25% slower);
- a large matrix is split into bands of rows copied on several threads (numpy releases the GIL
  inside each strip's copy), so the transposes of a conversion use every core.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from llmstd.lazy_numpy import np
from llmstd.oscalls import usable_cores

STRIP_ROWS = 256
STAGED_ROWS = 128
STAGING_BYTES = 4 * 1024 * 1024  # per thread; rows wider than 32 KiB are staged fewer at a time
CACHE_SET_SPAN = 4096  # bytes: addresses this far apart share an L1 set (64 sets of 64-byte lines)
STAGING_PAD = 64  # bytes added to each staged row: one cache line, so staged rows spread over the sets
PARALLEL_MIN_BYTES = 4 * 1024 * 1024  # below this, starting threads costs more than it saves
MAX_THREADS = 8
_AS_BITS = {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}  # unsigned integers of each width

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


def rows_alias(x: np.ndarray) -> bool:
    """True when ``x``'s rows start on fewer than four distinct offsets modulo 4 KiB, so that a strip
    of them read at once evicts itself from the cache (see the module docstring)."""
    row_stride = abs(x.strides[0]) or x.itemsize
    return CACHE_SET_SPAN // math.gcd(row_stride, CACHE_SET_SPAN) < 4


def rows_per_step(x: np.ndarray) -> int:
    """How many source rows one copy moves."""
    if not rows_alias(x):
        return STRIP_ROWS
    return max(1, min(STAGED_ROWS, STAGING_BYTES // max(1, x.shape[1] * x.itemsize)))


def _copy_band(x: np.ndarray, out: np.ndarray, first: int, stop: int, step: int, staged: bool) -> None:
    """``out[:, first:stop] = x[first:stop].T``, ``step`` rows at a time, through a staging buffer
    when ``staged``."""
    if not staged:
        for i in range(first, stop, step):
            end = min(i + step, stop)
            out[:, i:end] = x[i:end].T
        return
    cols = x.shape[1]
    padded = np.empty((step, cols + max(1, STAGING_PAD // x.itemsize)), dtype=x.dtype)
    staging = padded[:, :cols]
    for i in range(first, stop, step):
        end = min(i + step, stop)
        staging[:end - i] = x[i:end]
        out[:, i:end] = staging[:end - i].T


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
    step, staged = rows_per_step(x), rows_alias(x)
    threads = _threads() if x.nbytes >= PARALLEL_MIN_BYTES else 1
    if threads == 1 or rows < 2 * step:
        _copy_band(x, out, 0, rows, step, staged)
        return result
    band = -(-rows // threads)
    band += -band % step  # bands start on step boundaries
    helpers = _helpers()
    pending: list[Future[None]] = [helpers.submit(_copy_band, x, out, start, min(start + band, rows), step, staged)
                                   for start in range(band, rows, band)]
    _copy_band(x, out, 0, min(band, rows), step, staged)  # the calling thread copies the first band itself
    for done in pending:
        done.result()
    return result
