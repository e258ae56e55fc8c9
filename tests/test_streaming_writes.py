"""The one step every streaming writer shares (tensors.write_streamed): plain file slices copied
file to file without being loaded, computed tensors written after a check that they are what they
declared."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import pytest

from llmstd import dtypes, oscalls, tensors
from llmstd.converters import safetensors_io
from llmstd.errors import FormatError
from llmstd.tensors import ArrayTensor, DerivedTensor, FileSliceTensor, write_streamed, is_plain_slice, stream


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


def _unaligned_source(tmp_path: Path, nbytes: int) -> tuple[FileSliceTensor, bytes]:
    """A float32 tensor at byte 13 of a file: off every page boundary, as safetensors data usually is."""
    data = np.random.default_rng(1).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    source = tmp_path / "source.bin"
    source.write_bytes(b"h" * 13 + data + b"tail")
    return FileSliceTensor(source, 13, (nbytes // 4,), dtypes.dtype("float32")), data


#: copy_to's two ways: a window in the page cache is written from a mapping, one that is not goes
#: through copy_file_range (chosen here by what in_page_cache answers)
COPY_PATHS = {"mapped": True, "copy_file_range": False}


@pytest.mark.parametrize("path", COPY_PATHS)
def test_a_plain_slice_is_copied_window_by_window_at_any_alignment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   path: str) -> None:
    monkeypatch.setattr(tensors, "_COPY_WINDOW", 2 * mmap.ALLOCATIONGRANULARITY)
    monkeypatch.setattr(tensors, "in_page_cache", lambda fd, offset, nbytes: COPY_PATHS[path])
    tensor, data = _unaligned_source(tmp_path, 5 * mmap.ALLOCATIONGRANULARITY + 40)  # six windows, the last partial
    out = tmp_path / "out.bin"
    with open(out, "wb") as fh:
        fh.write(b"x" * 5)  # the destination is off the page boundary too, by another amount
        write_streamed(fh, out, "w", tensor, None)
        fh.write(b"end")
    assert out.read_bytes() == b"x" * 5 + data + b"end"


@pytest.mark.parametrize("path", COPY_PATHS)
@pytest.mark.parametrize("when", ["before the copy", "during the copy"])
def test_a_source_truncated_under_the_copy_is_a_format_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             when: str, path: str) -> None:
    """The reader checked the file's size; if it shrinks before or while its bytes are copied, the copy
    stops with an error naming the file (the mapped pages past the new end are never touched by Python,
    so this process gets no SIGBUS)."""
    monkeypatch.setattr(tensors, "_COPY_WINDOW", 4 * mmap.ALLOCATIONGRANULARITY)
    tensor, _ = _unaligned_source(tmp_path, 12 * mmap.ALLOCATIONGRANULARITY)
    cut = 2 * mmap.ALLOCATIONGRANULARITY  # the middle of the first window

    def in_page_cache(fd: int, offset: int, nbytes: int) -> bool:
        if when == "during the copy" and tensor.path.stat().st_size > cut:
            os.truncate(tensor.path, cut)  # after the reader checked the size, before the window is copied
        return COPY_PATHS[path]

    if when == "before the copy":
        os.truncate(tensor.path, cut)
    monkeypatch.setattr(tensors, "in_page_cache", in_page_cache)
    out = tmp_path / "out.bin"
    with open(out, "wb") as fh, pytest.raises(FormatError, match="file ended while copying") as caught:
        write_streamed(fh, out, "w", tensor, None)
    assert caught.value.file == str(tensor.path) and "convert again" in str(caught.value)


def _kernel_with_cachestat() -> bool:
    uname = os.uname()
    version = tuple(int(part) for part in uname.release.split("-")[0].split(".")[:2])
    return uname.sysname == "Linux" and version >= (6, 5) and uname.machine in oscalls._CACHESTAT_MACHINES


@pytest.mark.skipif(not _kernel_with_cachestat(), reason="cachestat needs Linux 6.5+ on a known architecture")
def test_in_page_cache_tells_cached_pages_from_dropped_ones(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(8 * mmap.PAGESIZE))
    with open(path, "rb") as fh:
        fd = fh.fileno()
        os.fsync(fd)
        cached = oscalls.in_page_cache(fd, 0, 8 * mmap.PAGESIZE)
        if oscalls._cachestat_missing:
            pytest.skip("the system call is refused here (a seccomp filter)")
        assert cached
        assert oscalls.in_page_cache(fd, 100, 3 * mmap.PAGESIZE)  # any range, rounded out to whole pages
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages leave the cache
        assert not oscalls.in_page_cache(fd, 0, 8 * mmap.PAGESIZE)
        os.pread(fd, mmap.PAGESIZE, 2 * mmap.PAGESIZE)
        assert oscalls.in_page_cache(fd, 2 * mmap.PAGESIZE, mmap.PAGESIZE)
    assert not oscalls.in_page_cache(fd, 0, mmap.PAGESIZE)  # a closed descriptor: cannot tell
