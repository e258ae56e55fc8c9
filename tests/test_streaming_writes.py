"""The one step every streaming writer shares (tensors.write_streamed): plain file slices copied
kernel to kernel, computed tensors written after a check that they are what they declared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmstd import dtypes
from llmstd.converters import safetensors_io
from llmstd.errors import FormatError
from llmstd.tensors import ArrayTensor, DerivedTensor, write_streamed, is_plain_slice, stream


def test_mixed_plain_and_computed_tensors_land_byte_for_byte(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    big = rng.standard_normal((1024, 2304)).astype(np.float32)  # 9.4 MB: takes the early-writeback path
    small = rng.standard_normal((3, 5)).astype(np.float32)
    source = tmp_path / "source.safetensors"
    safetensors_io.write_file(source, [("big", ArrayTensor(big)), ("small", ArrayTensor(small))])
    sliced = safetensors_io.open_file(source).tensors
    transposed = DerivedTensor([sliced["small"]], lambda xs: np.ascontiguousarray(xs[0].T), (5, 3),
                            dtypes.dtype("float32"), "transpose")
    entries = [("small.T", transposed), ("big", sliced["big"]), ("small", sliced["small"])]
    assert [is_plain_slice(t) for _, t in entries] == [False, True, True]

    out = tmp_path / "out.bin"
    with open(out, "wb") as fh:
        for name, tensor, array in stream(entries, copyable=is_plain_slice):
            assert (array is None) == is_plain_slice(tensor)
            write_streamed(fh, out, name, tensor, array)
    assert out.read_bytes() == small.T.tobytes() + big.tobytes() + small.tobytes()


def test_a_computed_tensor_that_is_not_what_it_declared_is_refused(tmp_path: Path) -> None:
    declared = DerivedTensor([ArrayTensor(np.zeros((2, 3), np.float32))], lambda xs: xs[0], (3, 2),
                             dtypes.dtype("float32"), "broken")
    out = tmp_path / "out.bin"
    with open(out, "wb") as fh, pytest.raises(FormatError) as caught:
        write_streamed(fh, out, "w", declared, np.zeros((2, 3), np.float32))
    assert caught.value.tensor == "w" and str(out) in str(caught.value.file)
    assert "instead of the declared float32[3, 2]" in str(caught.value)
