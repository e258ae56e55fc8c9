"""The dtype table: every llmstd dtype's numpy type, looked up by name on first use, agrees with the
byte size headers are read with, and numpy types map back to exactly one llmstd dtype."""

from __future__ import annotations

import numpy as np
import pytest

from llmstd import dtypes
from llmstd.errors import FormatError


@pytest.mark.parametrize("name", list(dtypes.BY_NAME))
def test_numpy_type_matches_the_table(name: str) -> None:
    dtype = dtypes.dtype(name)
    assert dtype.numpy.itemsize == dtype.itemsize
    assert dtypes.from_numpy(dtype.numpy) is dtype
    assert dtypes.from_numpy(dtype.numpy.newbyteorder(">")) is dtype  # byte order is the reader's business
    assert dtypes.BY_SAFETENSORS[dtype.safetensors] is dtype


@pytest.mark.parametrize("foreign", [np.complex64, np.dtype("U4"), np.dtype([("a", "<f4")]), np.longdouble])
def test_types_llmstd_lacks_are_refused(foreign: object) -> None:
    with pytest.raises(FormatError, match="has no llmstd equivalent"):
        dtypes.from_numpy(np.dtype(foreign))
