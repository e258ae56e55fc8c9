"""Linux system calls the standard library does not expose, with harmless fallbacks elsewhere:
``renameat2(RENAME_EXCHANGE)`` for atomically replacing a directory, and ``sync_file_range`` for
starting writeback early; plus the number of cores this process may run on."""

from __future__ import annotations

import ctypes
import errno
import functools
import os

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h


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


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
