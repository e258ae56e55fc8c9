"""Atomic output directories: everything is written into a hidden staging directory next to the
destination, fsynced, and moved into place with one rename (or an atomic exchange when replacing an
existing output). A crash at any point leaves either no destination or the complete previous one;
the staging directory is removed on error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from llmstd.errors import OutputError
from llmstd.oscalls import exchange

STAGING_MARK = ".llmstd-staging-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # (timed as part of the conversion's 'finish', not as 'fsync')
    finally:
        os.close(fd)


def check_not_overlapping(sources: list[Path], dst: Path) -> None:
    dst_real = dst.resolve()
    for src in sources:
        src_real = src.resolve()
        src_dir = src_real if src_real.is_dir() else src_real.parent
        if dst_real == src_real or dst_real == src_dir or src_real.is_relative_to(dst_real) or (
            src_real.is_dir() and dst_real.is_relative_to(src_real)
        ):
            raise OutputError(f"destination {dst} overlaps the input {src}", file=dst,
                              hint="choose a destination outside the source checkpoint")


def _remove(path: Path) -> None:
    """Delete a staging path, which after an exchange may hold a replaced file rather than a directory."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_abandoned(parent: Path, name: str) -> None:
    """Delete staging directories for ``name`` left by killed conversions (their pid is gone)."""
    prefix = f"{STAGING_MARK}{name}-"
    for entry in parent.iterdir():
        if not entry.name.startswith(prefix) or not entry.is_dir():
            continue
        pid, _, rest = entry.name[len(prefix):].partition("-")
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if rest.startswith("old-") and not (parent / name).exists():
            # Killed between moving the previous output aside and moving the new one in: restore it.
            os.rename(entry, parent / name)
        else:
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(dst: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging directory; on success it becomes ``dst`` atomically."""
    dst = Path(dst)
    if dst.exists() and not overwrite:
        if not dst.is_dir() or any(dst.iterdir()):
            raise OutputError("destination already exists", file=dst, hint="pass --overwrite to replace it")
    parent = dst.parent if str(dst.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(parent, dst.name)
        staging = parent / f"{STAGING_MARK}{dst.name}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
    except OSError as exc:
        raise OutputError(f"cannot create the output directory: {exc.strerror}", file=dst) from None
    try:
        yield staging
        _fsync_dir(staging)
        if dst.exists():
            if not exchange(staging, dst):
                # Fallback without an atomic swap: the old output is moved aside first, so a crash
                # in between leaves no destination (never a partial one) and the old copy next to it.
                aside = parent / f"{STAGING_MARK}{dst.name}-{os.getpid()}-old-{uuid.uuid4().hex[:12]}"
                os.rename(dst, aside)
                os.rename(staging, dst)
                staging = aside
            _remove(staging)  # now holds the previous output
        else:
            os.rename(staging, dst)
        _fsync_dir(parent)
    except BaseException as exc:
        _remove(staging)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise OutputError("the disk is full; nothing was written", file=dst,
                              hint="free space and run the conversion again") from None
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            raise OutputError(f"writing failed: {exc.strerror or exc}", file=dst) from None
        raise
