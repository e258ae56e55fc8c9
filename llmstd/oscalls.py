"""Linux system calls the standard library does not expose, with harmless fallbacks elsewhere:
``renameat2(RENAME_EXCHANGE)`` for atomically replacing a directory, ``sync_file_range`` for
starting writeback early and ``cachestat`` for asking what of a file is in the page cache; plus the
number of cores this process may run on."""

from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import os
from collections.abc import Callable

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h
# cachestat (Linux 6.5) has this number on every architecture below: system calls added since Linux
# 5.1 share one table (alpha, which offsets them, is not among them).
_CACHESTAT = 451
_CACHESTAT_MACHINES = {"x86_64", "aarch64", "riscv64", "ppc64le", "s390x"}


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64)
                for name in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    # The process's own symbols, which include the C library's: no search for libc's file name
    # (ctypes.util.find_library imports subprocess and may run ldconfig).
    try:
        return ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):  # a platform without dlopen(NULL)
        return None


def exchange(a: os.PathLike[str] | str, b: os.PathLike[str] | str) -> bool:
    """Atomically swap two paths; False where the system cannot (the caller falls back)."""
    libc = _libc()
    renameat2 = getattr(libc, "renameat2", None) if libc else None
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


def sync_file_range(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing a byte range to disk, without waiting; no-op if unsupported."""
    libc = _libc()
    call = getattr(libc, "sync_file_range", None) if libc else None
    if call is not None:
        call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        call(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


@functools.lru_cache(maxsize=1)
def _cachestat() -> Callable[..., int] | None:
    libc = _libc()
    if libc is None or not hasattr(libc, "syscall") or os.uname().machine not in _CACHESTAT_MACHINES:
        return None
    call = libc.syscall
    call.restype = ctypes.c_long
    call.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint)
    return call


_cachestat_missing = False  # set once the kernel has answered ENOSYS (older than 6.5) or EPERM (seccomp)


def in_page_cache(fd: int, offset: int, nbytes: int) -> bool:
    """True when every page of bytes ``[offset, offset + nbytes)`` of the open file is in the page
    cache; False when some are not, or where the system cannot tell."""
    global _cachestat_missing
    call = None if _cachestat_missing else _cachestat()
    if call is None or nbytes <= 0:
        return False
    first, last = offset // mmap.PAGESIZE, (offset + nbytes - 1) // mmap.PAGESIZE
    span = _CachestatRange(first * mmap.PAGESIZE, (last + 1 - first) * mmap.PAGESIZE)
    stat = _Cachestat()
    if call(_CACHESTAT, fd, ctypes.byref(span), ctypes.byref(stat), 0) != 0:
        if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):
            _cachestat_missing = True
        return False
    return stat.nr_cache >= last + 1 - first


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
