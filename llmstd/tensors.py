"""Lazy tensors: a shape and dtype known up front, bytes loaded only when asked.

Readers hand out :class:`FileSliceTensor` (a byte range of a file, memory-mapped on load), layout
transforms wrap them in :class:`DerivedTensor`, and writers pull one tensor at a time, so peak memory
tracks the largest tensor rather than the model.
"""

from __future__ import annotations

import errno
import hashlib
import math
import mmap
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from llmstd import timing
from llmstd.dtypes import DType
from llmstd.errors import FormatError
from llmstd.lazy_numpy import np
from llmstd.oscalls import in_page_cache, sync_file_range


class LazyTensor:
    """A tensor whose bytes are produced on demand by :meth:`load`."""

    shape: tuple[int, ...]
    dtype: DType

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def load(self) -> np.ndarray:
        """Return the tensor as a numpy array (possibly a read-only memory map)."""
        raise NotImplementedError

    def numpy(self) -> np.ndarray:
        return self.load()

    def sha256(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.load()).view(np.uint8).data).hexdigest()

    def part(self, start: int, shape: Sequence[int], description: str) -> LazyTensor:
        """Elements ``[start, start + prod(shape))`` of this tensor in C order, as a tensor of ``shape``
        (one expert of a packed tensor, q of a fused qkv): only that range is ever read."""
        count = math.prod(shape)

        def compute(arrays: list[np.ndarray]) -> np.ndarray:
            return np.ascontiguousarray(arrays[0].reshape(-1)[start:start + count]).reshape(tuple(shape))

        return DerivedTensor([self], compute, shape, self.dtype, description)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype.name})"


class ArrayTensor(LazyTensor):
    """An in-memory array (used by tests and by transforms that must materialise)."""

    def __init__(self, array: np.ndarray) -> None:
        from llmstd.dtypes import from_numpy

        self._array = array
        self.shape = tuple(int(d) for d in array.shape)
        self.dtype = from_numpy(array.dtype)

    def load(self) -> np.ndarray:
        return self._array


class FileSliceTensor(LazyTensor):
    """A contiguous C-order tensor stored at ``[offset, offset + nbytes)`` of a file.

    The byte range must already have been checked against the file size by the reader; ``load``
    re-checks it because files can change between header parsing and loading.
    """

    def __init__(
        self,
        path: Path,
        offset: int,
        shape: Sequence[int],
        dtype: DType,
        *,
        big_endian: bool = False,
        verify: Callable[[memoryview], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.offset = int(offset)
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.big_endian = big_endian
        self._verify = verify
        self.whole: FileSliceTensor | None = None  # the tensor this one is a part of (see part)

    @property
    def is_plain(self) -> bool:
        """True when the file bytes are exactly the native little-endian tensor bytes."""
        return not self.big_endian and self._verify is None

    def load(self) -> np.ndarray:
        if self.nbytes == 0:
            return np.zeros(self.shape, dtype=self.dtype.numpy)
        size = os.path.getsize(self.path)
        if self.offset + self.nbytes > size:
            raise FormatError(
                f"tensor bytes [{self.offset}, {self.offset + self.nbytes}) run past the end of the file "
                f"({size} bytes); the file is truncated",
                file=self.path,
                offset=self.offset,
                hint="re-download or re-save the checkpoint",
            )
        with open(self.path, "rb") as fh:
            # Map only the pages covering this tensor so resident memory stays per-tensor.
            start = self.offset - self.offset % mmap.ALLOCATIONGRANULARITY
            mm = mmap.mmap(fh.fileno(), self.offset + self.nbytes - start, access=mmap.ACCESS_READ, offset=start)
        view = memoryview(mm)[self.offset - start : self.offset - start + self.nbytes]
        if self._verify is not None:
            self._verify(view)
        np_dtype = self.dtype.numpy.newbyteorder(">") if self.big_endian else self.dtype.numpy
        array = np.frombuffer(view, dtype=np_dtype).reshape(self.shape)
        if self.big_endian:
            array = array.astype(self.dtype.numpy)
        return array

    def part(self, start: int, shape: Sequence[int], description: str) -> LazyTensor:
        if not self.is_plain:
            return super().part(start, shape, description)
        piece = FileSliceTensor(self.path, self.offset + start * self.dtype.itemsize, shape, self.dtype)
        piece.whole = self  # so that the parts laid end to end again are this very tensor (see concat)
        return piece

    def copy_to(self, out_fd: int) -> None:
        """Copy this tensor's bytes into ``out_fd`` at its current position without loading them,
        one window of the source at a time, each the faster of two ways for where it is:

        - already in the page cache: mapped and written from the mapping, one copy from page cache to
          page cache. On this project's ext4 machine (kernel 6.18) that copied a 985 MB shard in
          0.21-0.25 s of CPU, against 0.32-0.41 s for ``copy_file_range``, whose splice path fills
          the destination one 4 KiB page per step, and 0.31-0.34 s for ``pread`` into a buffer then
          ``write`` (two copies);
        - not (wholly) in the cache, or where the system cannot tell: ``copy_file_range``, whose reads
          get the kernel's sequential readahead. Faulting a cold mapping in reads around each fault
          instead: 2 GB took 6.1 s that way against 1.6 s.
        """
        offset, end = self.offset, self.offset + self.nbytes
        with open(self.path, "rb") as src:
            fd = src.fileno()
            while offset < end:
                base = offset - offset % mmap.ALLOCATIONGRANULARITY
                stop = min(base + _COPY_WINDOW, end)
                if in_page_cache(fd, base, stop - base):
                    written = _write_mapped(fd, out_fd, base, offset, stop)
                else:
                    written = os.copy_file_range(fd, out_fd, stop - offset, offset)
                if written == 0:
                    raise FormatError(f"file ended while copying tensor bytes (it is now {os.fstat(fd).st_size} "
                                      "bytes)", file=self.path, offset=offset,
                                      hint="the file changed during the conversion; convert again once it is complete")
                offset += written


#: Bytes of a source file copied per step by :meth:`FileSliceTensor.copy_to` (a multiple of
#: mmap.ALLOCATIONGRANULARITY); mapped 4, 16 and 64 MiB windows copied equally fast.
_COPY_WINDOW = 16 * 1024 * 1024


def map_populated(fd: int, offset: int, length: int) -> mmap.mmap:
    """A read-only shared mapping of ``[offset, offset + length)`` of the open file, its pages
    faulted in when it is mapped rather than one 4 KiB page at a time (``MAP_POPULATE`` where the
    system has it). ``offset`` is a multiple of mmap.ALLOCATIONGRANULARITY; a range past the end of
    the file raises ValueError."""
    return mmap.mmap(fd, length, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0), prot=mmap.PROT_READ,
                     offset=offset)


def _write_mapped(src_fd: int, out_fd: int, base: int, offset: int, stop: int) -> int:
    """Write bytes ``[offset, stop)`` of ``src_fd`` to ``out_fd`` from a mapping of ``[base, stop)``;
    the count written, 0 once the source has shrunk below them. Only the kernel touches the mapping,
    so a file truncated meanwhile makes ``write`` fail or come up short instead of raising SIGBUS in
    this process."""
    try:
        window = map_populated(src_fd, base, stop - base)
    except ValueError:  # the window runs past the end of the file
        return 0
    with window, memoryview(window) as view, view[offset - base:] as chunk:
        try:
            return os.write(out_fd, chunk)
        except OSError as exc:
            if exc.errno != errno.EFAULT:  # EFAULT: the mapped pages are gone (truncated)
                raise
            return 0


class DerivedTensor(LazyTensor):
    """A tensor computed from other lazy tensors by a layout transform."""

    def __init__(
        self,
        sources: Sequence[LazyTensor],
        compute: Callable[[list[np.ndarray]], np.ndarray],
        shape: Sequence[int],
        dtype: DType,
        description: str,
    ) -> None:
        self.sources = tuple(sources)
        self._compute = compute
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.description = description

    def load(self) -> np.ndarray:
        array = self._compute([s.load() for s in self.sources])
        if tuple(array.shape) != self.shape or array.dtype != self.dtype.numpy:
            raise AssertionError(
                f"transform '{self.description}' produced {array.shape} {array.dtype}, "
                f"declared {self.shape} {self.dtype.name}"
            )
        return array


class ConcatTensor(LazyTensor):
    """Tensors laid end to end in C order, as one tensor of ``shape`` (experts packed into one, q|k|v
    fused): the inverse of :meth:`LazyTensor.part`. Loading holds the result and one part; when every
    part is a plain file slice, writers copy the parts file to file and hold none."""

    def __init__(self, parts: Sequence[LazyTensor], shape: Sequence[int], description: str) -> None:
        self.parts = tuple(parts)
        self.shape = tuple(int(d) for d in shape)
        self.dtype = self.parts[0].dtype
        self.description = description
        if sum(p.numel for p in self.parts) != self.numel or any(p.dtype != self.dtype for p in self.parts):
            raise AssertionError(f"'{description}': parts do not make up {self.shape} {self.dtype.name}")

    @property
    def is_plain(self) -> bool:
        return all(is_plain_slice(p) for p in self.parts)

    def load(self) -> np.ndarray:
        out = np.empty(self.numel, dtype=self.dtype.numpy)
        at = 0
        for part in self.parts:
            out[at:at + part.numel] = part.load().reshape(-1)
            at += part.numel
        return out.reshape(self.shape)

    def copy_to(self, out_fd: int) -> None:
        for part in self.parts:
            part.copy_to(out_fd)  # type: ignore[attr-defined]


def concat(parts: Sequence[LazyTensor], shape: Sequence[int], description: str) -> LazyTensor:
    """``parts`` end to end as one tensor of ``shape``; parts that are adjacent byte ranges of one
    file (a packed tensor that was unpacked) become that byte range again."""
    first = parts[0]
    if all(isinstance(p, FileSliceTensor) and p.is_plain for p in parts):
        slices: list[FileSliceTensor] = list(parts)  # type: ignore[arg-type]
        if all(b.path == first.path and b.offset == a.offset + a.nbytes for a, b in zip(slices, slices[1:])):
            whole = slices[0].whole
            if whole is not None and (whole.offset, whole.shape) == (slices[0].offset, tuple(shape)):
                return whole  # the tensor the parts were cut from, as the reader handed it out
            return FileSliceTensor(slices[0].path, slices[0].offset, shape, first.dtype)
    return ConcatTensor(parts, shape, description)


class CastTensor(LazyTensor):
    """A tensor cast to another dtype on load, refusing lossy casts unless forced."""

    def __init__(self, source: LazyTensor, target: DType, name: str, force: bool) -> None:
        self.source = source
        self.shape = source.shape
        self.dtype = target
        self._name = name
        self._force = force

    def load(self) -> np.ndarray:
        from llmstd.dtypes import cast

        return cast(self.source.load(), self.dtype, tensor=self._name, force=self._force)


def same_bytes(a: LazyTensor, b: LazyTensor) -> bool:
    """True when two tensors hold exactly the same bytes (dtype and shape included); used to verify
    that a tied copy or an alias really duplicates its twin before one of them is dropped."""
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if isinstance(a, FileSliceTensor) and isinstance(b, FileSliceTensor) and (a.path, a.offset) == (b.path, b.offset):
        return True  # the same bytes of the same file (e.g. a shared storage in a .bin)
    return bool(np.array_equal(np.ascontiguousarray(a.load()).view(np.uint8),
                               np.ascontiguousarray(b.load()).view(np.uint8)))


def is_plain_slice(tensor: LazyTensor) -> bool:
    """True when a writer may copy the tensor's bytes straight from its file(s) with ``copy_to``
    (see :func:`stream`)."""
    return isinstance(tensor, (FileSliceTensor, ConcatTensor)) and tensor.is_plain


_WRITEBACK_MIN = 8 * 1024 * 1024


def require_declared(array: np.ndarray, tensor: LazyTensor, path: Path, name: str) -> None:
    """Refuse to write a loaded array that is not the dtype and shape its tensor declared (the
    header or index describing it has already been laid out from the declaration)."""
    if array.dtype != tensor.dtype.numpy or tuple(array.shape) != tensor.shape:
        raise FormatError(f"produced {array.dtype}{list(array.shape)} instead of the declared "
                          f"{tensor.dtype.name}{list(tensor.shape)}", file=path, tensor=name)


def write_streamed(fh: BinaryIO, path: Path, name: str, tensor: LazyTensor, array: np.ndarray | None, *,
                   at: int | None = None) -> None:
    """Write one tensor yielded by :func:`stream` into ``fh`` (the file at ``path``) at byte ``at``,
    or at the end: a plain file slice (``array`` None) file to file, otherwise the array after
    checking it is what the tensor declared. Writeback of a large tensor starts at once (without
    dropping it from the page cache), so the final fsync has little left to wait for and dirty data
    does not pile up."""
    fh.flush()
    start = fh.seek(0, os.SEEK_END) if at is None else fh.seek(at)
    if array is None:
        with timing.phase("copy"):
            tensor.copy_to(fh.fileno())  # type: ignore[attr-defined]
        fh.seek(start + tensor.nbytes)  # the copy moved the descriptor's position; keep fh's in step
    else:
        require_declared(array, tensor, path, name)
        with timing.phase("write"):
            fh.write(memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
    if tensor.nbytes >= _WRITEBACK_MIN:
        with timing.phase("writeback"):
            fh.flush()
            sync_file_range(fh.fileno(), start, tensor.nbytes)


def stream(entries: Sequence[tuple[str, LazyTensor]], *, copyable: Callable[[LazyTensor], bool] = lambda t: False,
           ) -> Iterator[tuple[str, LazyTensor, np.ndarray | None]]:
    """Yield ``(name, tensor, array)`` in order, loading the next tensor on a second thread while the
    caller writes the current one (numpy and file I/O release the GIL, so both cores work).

    Tensors for which ``copyable`` is true are not loaded (``array`` is None): the caller copies their
    bytes directly. At most two loaded tensors are alive at once, so memory stays ~2x the largest.
    """
    from concurrent.futures import ThreadPoolExecutor

    def load(tensor: LazyTensor) -> np.ndarray | None:
        if copyable(tensor):
            return None
        with timing.phase("compute"):
            return tensor.load()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmstd-load") as pool:
        pending = pool.submit(load, entries[0][1]) if entries else None
        for k, (name, tensor) in enumerate(entries):
            assert pending is not None
            with timing.phase("wait for compute"):
                array = pending.result()
            pending = pool.submit(load, entries[k + 1][1]) if k + 1 < len(entries) else None
            yield name, tensor, array
            del array
