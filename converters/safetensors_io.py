"""safetensors container: strict header parsing, memory-mapped reading, streaming writing, and
the sharded-set layout lives in ``shard_index``.

The header is parsed here rather than by the safetensors package because readers must (a) reject
every inconsistency with a typed error naming the file and tensor before allocating anything from a
header value, (b) hand out lazy per-tensor memory maps including bfloat16/float8 via ml_dtypes, and
(c) writers must stream one tensor at a time (safetensors' own writers take every tensor in memory).
Files written here are read back by the safetensors package and by transformers in the tests.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmstd import dtypes, timing
from llmstd.errors import FormatError
from llmstd.tensors import FileSliceTensor, LazyTensor, write_streamed, is_plain_slice, stream

MAX_HEADER_BYTES = 100 * 1024 * 1024  # same limit as the reference implementation
MAX_METADATA_BYTES = 16 * 1024 * 1024
ALIGNMENT = 8  # the data section starts 8-byte aligned, as the reference writer does

Progress = Callable[[str, int], None]  # (tensor name, bytes just written)


@dataclass
class SafetensorsFile:
    path: Path
    metadata: dict[str, str]
    tensors: dict[str, FileSliceTensor]


def read_header(path: Path) -> tuple[dict[str, object], int]:
    """Parse and validate the header; return (header dict, byte offset of the data section)."""
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise FormatError("file is shorter than the 8-byte safetensors header length", file=path)
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or header_len > file_size - 8:
                raise FormatError(
                    f"header length {header_len} exceeds the file ({file_size} bytes) or the "
                    f"{MAX_HEADER_BYTES}-byte limit; not a safetensors file or truncated",
                    file=path, offset=0,
                )
            raw = fh.read(header_len)
    except OSError as exc:
        raise FormatError(f"cannot read: {exc.strerror}", file=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"header is not UTF-8 (byte {exc.start})", file=path, offset=8 + exc.start) from None
    if not text.startswith("{"):
        raise FormatError("header is not a JSON object", file=path, offset=8)
    from llmstd.jsonfile import loads

    header = loads(text.rstrip(" "), source=path)
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object", file=path, offset=8)
    return header, 8 + header_len


def open_file(path: Path) -> SafetensorsFile:
    """Validate a safetensors file completely and return lazy tensors over it."""
    path = Path(path)
    header, data_start = read_header(path)
    file_size = path.stat().st_size
    data_size = file_size - data_start
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise FormatError("__metadata__ must map strings to strings", file=path)
    if sum(len(k) + len(v) for k, v in metadata.items()) > MAX_METADATA_BYTES:
        raise FormatError(f"__metadata__ is larger than {MAX_METADATA_BYTES} bytes", file=path)

    spans: list[tuple[int, int, str]] = []
    tensors: dict[str, FileSliceTensor] = {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise FormatError("entry must have exactly dtype, shape and data_offsets", file=path, tensor=name)
        dt = dtypes.BY_SAFETENSORS.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dt is None:
            raise FormatError(f"unknown dtype {info['dtype']!r}", file=path, tensor=name,
                              hint=f"supported: {', '.join(dtypes.BY_SAFETENSORS)}")
        shape = info["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise FormatError(f"shape {shape!r} must be a list of non-negative integers", file=path, tensor=name)
        offsets = info["data_offsets"]
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise FormatError(f"data_offsets {offsets!r} must be two integers", file=path, tensor=name)
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise FormatError(f"data_offsets [{begin}, {end}] fall outside the {data_size}-byte data section",
                              file=path, tensor=name, offset=data_start + begin,
                              hint="the file is truncated or its header is corrupt")
        expected = math.prod(shape) * dt.itemsize
        if end - begin != expected:
            raise FormatError(f"byte span {end - begin} does not match shape {shape} x {dt.name} = {expected} bytes",
                              file=path, tensor=name, offset=data_start + begin)
        spans.append((begin, end, name))
        tensors[name] = FileSliceTensor(path, data_start + begin, shape, dt)
    # The data section must be covered exactly once: no overlaps (aliasing), gaps or trailing bytes.
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            kind = "overlaps the previous tensor" if begin < position else f"leaves a gap of {begin - position} bytes"
            raise FormatError(kind, file=path, tensor=name, offset=data_start + begin)
        position = end
    if position != data_size:
        raise FormatError(f"{data_size - position} unexplained bytes after the last tensor", file=path,
                          offset=data_start + position, hint="the file is corrupt or was appended to")
    return SafetensorsFile(path, metadata, tensors)


# --------------------------------------------------------------------------------------------
# writing


def _header_bytes(entries: Sequence[tuple[str, LazyTensor]], metadata: Mapping[str, str], reserve: int) -> bytes:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, tensor in entries:
        header[name] = {"dtype": tensor.dtype.safetensors, "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * reserve
    raw += b" " * (-(8 + len(raw)) % ALIGNMENT)
    return struct.pack("<Q", len(raw)) + raw


def write_file(
    path: Path,
    entries: Sequence[tuple[str, LazyTensor]],
    metadata: Mapping[str, str] | None = None,
    *,
    progress: Progress | None = None,
    metadata_reserve: int = 0,
) -> None:
    """Stream ``entries`` into a new safetensors file at ``path``, one tensor in memory at a time.

    Tensors that are plain byte ranges of another file are copied file to file without passing
    through Python. ``metadata_reserve`` leaves room to rewrite the metadata later in place
    (:func:`rewrite_metadata`), e.g. to record source hashes computed while writing.
    """
    names = [n for n, _ in entries]
    if len(set(names)) != len(names):
        raise FormatError("duplicate tensor names in one file", file=path)
    if "__metadata__" in names:
        raise FormatError("a tensor may not be named '__metadata__'", file=path)
    with open(path, "wb") as fh:
        fh.write(_header_bytes(entries, metadata or {}, metadata_reserve))
        for name, tensor, array in stream(entries, copyable=is_plain_slice):
            write_streamed(fh, path, name, tensor, array)
            del array
            if progress:
                progress(name, tensor.nbytes)
        fh.flush()
        timing.fsync(fh.fileno())


def rewrite_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    """Replace ``__metadata__`` in place; the new header must fit in the space the old one used."""
    header, data_start = read_header(path)
    header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    room = data_start - 8
    if len(raw) > room:
        raise FormatError(f"new metadata needs {len(raw)} header bytes, only {room} reserved", file=path)
    with open(path, "r+b") as fh:
        fh.seek(8)
        fh.write(raw + b" " * (room - len(raw)))
        fh.flush()
        timing.fsync(fh.fileno())
