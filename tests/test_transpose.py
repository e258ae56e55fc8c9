"""transpose2d, the tiled and threaded transpose behind every [in, out] <-> [out, in] layout change:
bit-exact against numpy's own transpose for every tile/band edge case, on one thread and on several."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmstd import transpose
from llmstd.transpose import transpose2d

DTYPES = [np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float64),
          np.dtype(np.uint8)]


def _random(rows: int, cols: int, dtype: np.dtype, seed: int) -> np.ndarray:
    raw = np.random.default_rng(seed).bytes(rows * cols * dtype.itemsize)
    return np.frombuffer(raw, dtype=dtype).reshape(rows, cols)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# monkeypatch.context() undoes each example's change, so sharing the fixture across examples is safe.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 3 * transpose.STRIP_ROWS + 5), cols=st.integers(1, 1100),
       dtype=st.sampled_from(DTYPES), threaded=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_matches_numpy_bit_for_bit(rows: int, cols: int, dtype: np.dtype, threaded: bool, seed: int,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Threads normally start at 4 MB; lowering the threshold sends small matrices through the bands too.
    with monkeypatch.context() as m:
        m.setattr(transpose, "PARALLEL_MIN_BYTES", 0 if threaded else 1 << 62)
        x = _random(rows, cols, dtype, seed)
        y = transpose2d(x)
    assert y.flags.c_contiguous
    assert _same(y, np.ascontiguousarray(x.T))


def test_large_matrix_uses_bands_and_stays_exact() -> None:
    x = _random(1000, 2100, np.dtype(ml_dtypes.bfloat16), 7)  # 4.2 MB: above the threading threshold
    assert x.nbytes >= transpose.PARALLEL_MIN_BYTES
    assert _same(transpose2d(x), np.ascontiguousarray(x.T))
    assert _same(transpose2d(transpose2d(x)), x)


def test_writes_into_out_and_checks_it() -> None:
    x = _random(40, 70, np.dtype(np.float32), 3)
    out = np.empty((70, 40), np.float32)
    assert transpose2d(x, out) is out
    assert _same(out, np.ascontiguousarray(x.T))
    with pytest.raises(ValueError, match="shape"):
        transpose2d(x, np.empty((40, 70), np.float32))
    with pytest.raises(ValueError, match="float32"):
        transpose2d(x, np.empty((70, 40), np.float64))
    with pytest.raises(ValueError, match="matrix"):
        transpose2d(np.zeros((2, 2, 2)))


def test_non_contiguous_input() -> None:
    base = _random(64, 2100, np.dtype(np.float16), 11)
    x = base[::3, 5::2]
    assert _same(transpose2d(x), np.ascontiguousarray(x.T))


@pytest.mark.parametrize("rows, cols, dtype, aliased", [
    (300, 2048, np.dtype(ml_dtypes.bfloat16), True),  # rows 4 KiB apart: staged
    (300, 1536, np.dtype(np.float32), True),  # 6 KiB: two offsets modulo 4 KiB
    (600, 2816, np.dtype(ml_dtypes.bfloat16), False),  # 5.5 KiB: eight offsets
    (600, 1000, np.dtype(np.float32), False),
])
@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("staging_bytes", [transpose.STAGING_BYTES, 3 * 4096])  # 128 staged rows, or 3 or 2
def test_strips_and_staged_strips_are_exact(rows: int, cols: int, dtype: np.dtype, aliased: bool, threaded: bool,
                                            staging_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    x = _random(rows, cols, dtype, rows + cols)
    assert transpose.rows_alias(x) == aliased
    monkeypatch.setattr(transpose, "PARALLEL_MIN_BYTES", 0 if threaded else 1 << 62)
    monkeypatch.setattr(transpose, "STAGING_BYTES", staging_bytes)
    assert _same(transpose2d(x), np.ascontiguousarray(x.T))
