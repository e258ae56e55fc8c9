"""tf.train checkpoint container (TensorFlow's "V2" tensor bundle), read and written in pure Python.

A checkpoint with prefix ``P`` is ``P.index`` plus ``P.data-0000k-of-0000n``. The index is a
LevelDB-style sorted table (SSTable): data blocks of prefix-compressed key/value entries, an index
block pointing at them, and a 48-byte footer. Key ``""`` holds a ``BundleHeaderProto`` (shard count,
endianness); every other key is a tensor name whose value is a ``BundleEntryProto`` (dtype, shape,
shard, byte offset and size in that shard, masked CRC-32C of the bytes).

Why not TensorFlow: reading a checkpoint must not import a 500 MB framework (it takes ~10 s and may
not be installed); the formats are small and stable. Every number read from the file is checked
before it is used: block handles, offsets and sizes against the file lengths, shard ids against the
header, sizes against ``dtype x shape``, and CRCs on every index block and on tensor bytes when they
are loaded. Tensors are handed out as lazy memory-mapped slices. The writer produces the same layout
TensorFlow's BundleWriter does (unaligned data, uncompressed index blocks, restart interval 16), so
``tf.train.load_checkpoint`` and transformers' original-checkpoint readers load it; the tests check both.

This module moves bytes only: it never interprets a tensor name.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmstd.converters import crc32c

from llmstd import dtypes, timing
from llmstd.errors import FormatError
from llmstd.lazy_numpy import np
from llmstd.tensors import FileSliceTensor, LazyTensor, stream, write_streamed

INDEX_SUFFIX = ".index"
MAGIC = 0xDB4775248B80FB57  # LevelDB/TensorFlow table magic number
FOOTER_BYTES = 48  # two block handles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER_BYTES = 5  # 1 compression-type byte + masked CRC-32C
BLOCK_SIZE = 256 * 1024  # TensorFlow's table::Options default
RESTART_INTERVAL = 16
MAX_INDEX_BYTES = 1 << 30  # an index of 1 GiB would describe ~10 million tensors: refuse sooner
HEADER_KEY = b""
MAX_DECODED_FLOOR = 64 << 20  # decoded index entries may total this much plus ...
MAX_DECODED_RATIO = 32  # ... this many times the index file size (restart interval 16 bounds real files)

Progress = Callable[[str, int], None]

# TensorFlow DataType enum (types.proto) <-> llmstd dtype names.
TF_DTYPES: dict[int, str] = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 9: "int64", 10: "bool",
    14: "bfloat16", 17: "uint16", 19: "float16", 22: "uint32", 23: "uint64",
    24: "float8_e5m2", 25: "float8_e4m3fn",
}
TF_DTYPE_OF = {name: code for code, name in TF_DTYPES.items()}
# Entries that are not numeric arrays (DT_STRING bookkeeping such as a TF2 object graph, resources).
NON_NUMERIC = {7: "string", 20: "resource", 21: "variant"}


def data_file_name(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


# ------------------------------------------------------------------------------------------------
# protobuf wire format (the three messages we need)


def _varint(buf: bytes, pos: int, end: int, where: str, path: Path) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise FormatError(f"malformed varint in {where}", file=path)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, path: Path, where: str) -> Iterable[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field of a serialized message."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, end, where, path)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end, where, path)
            yield number, wire, value
        elif wire == 1:
            if pos + 8 > end:
                raise FormatError(f"truncated fixed64 in {where}", file=path)
            yield number, wire, struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos, end, where, path)
            if pos + length > end:
                raise FormatError(f"truncated field in {where}", file=path)
            yield number, wire, bytes(buf[pos:pos + length])
            pos += length
        elif wire == 5:
            if pos + 4 > end:
                raise FormatError(f"truncated fixed32 in {where}", file=path)
            yield number, wire, struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise FormatError(f"unsupported protobuf wire type {wire} in {where}", file=path)


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _enc_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _enc_field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = _enc_varint((number << 3) | wire)
    if wire == 0:
        assert isinstance(payload, int)
        return key + _enc_varint(payload)
    if wire == 5:
        assert isinstance(payload, int)
        return key + struct.pack("<I", payload)
    assert isinstance(payload, bytes)
    return key + _enc_varint(len(payload)) + payload


@dataclass(frozen=True)
class BundleHeader:
    num_shards: int
    big_endian: bool
    producer: int


@dataclass(frozen=True)
class BundleEntry:
    dtype_code: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    has_slices: bool


def _parse_header(buf: bytes, path: Path) -> BundleHeader:
    num_shards, endian, producer = 0, 0, 0
    for number, wire, value in _fields(buf, path, "the bundle header"):
        if number == 1 and wire == 0:
            num_shards = _signed(int(value))  # type: ignore[arg-type]
        elif number == 2 and wire == 0:
            endian = int(value)  # type: ignore[arg-type]
        elif number == 3 and wire == 2:
            for n2, w2, v2 in _fields(value, path, "the bundle version"):  # type: ignore[arg-type]
                if n2 == 1 and w2 == 0:
                    producer = int(v2)  # type: ignore[arg-type]
    if num_shards < 1 or num_shards > 100_000:
        raise FormatError(f"bundle header declares {num_shards} shards", file=path,
                          hint="the .index file is damaged; re-save the checkpoint")
    if endian not in (0, 1):
        raise FormatError(f"bundle header has unknown endianness {endian}", file=path)
    return BundleHeader(num_shards, endian == 1, producer)


def _parse_shape(buf: bytes, path: Path, name: str) -> tuple[int, ...]:
    dims: list[int] = []
    for number, wire, value in _fields(buf, path, f"the shape of '{name}'"):
        if number == 2 and wire == 2:
            size = 0
            for n2, w2, v2 in _fields(value, path, f"a dimension of '{name}'"):  # type: ignore[arg-type]
                if n2 == 1 and w2 == 0:
                    size = _signed(int(v2))  # type: ignore[arg-type]
            if size < 0:
                raise FormatError(f"dimension {size} is negative or unknown", file=path, tensor=name)
            dims.append(size)
        elif number == 3 and wire == 0 and value:
            raise FormatError("shape has unknown rank", file=path, tensor=name)
    return tuple(dims)


def _parse_entry(buf: bytes, path: Path, name: str) -> BundleEntry:
    dtype_code, shape, shard, offset, size, crc, slices = 0, (), 0, 0, 0, 0, False
    for number, wire, value in _fields(buf, path, f"the entry of '{name}'"):
        if number == 1 and wire == 0:
            dtype_code = int(value)  # type: ignore[arg-type]
        elif number == 2 and wire == 2:
            shape = _parse_shape(value, path, name)  # type: ignore[arg-type]
        elif number == 3 and wire == 0:
            shard = _signed(int(value))  # type: ignore[arg-type]
        elif number == 4 and wire == 0:
            offset = _signed(int(value))  # type: ignore[arg-type]
        elif number == 5 and wire == 0:
            size = _signed(int(value))  # type: ignore[arg-type]
        elif number == 6 and wire == 5:
            crc = int(value)  # type: ignore[arg-type]
        elif number == 7:
            slices = True
    return BundleEntry(dtype_code, tuple(shape), shard, offset, size, crc, slices)


def _encode_entry(dtype_code: int, shape: Sequence[int], offset: int, size: int, crc_masked: int) -> bytes:
    # Field order and default omission as TensorFlow's BundleWriter serializes it.
    shape_msg = b"".join(_enc_field(2, 2, _enc_field(1, 0, d) if d else b"") for d in shape)
    out = _enc_field(1, 0, dtype_code) + _enc_field(2, 2, shape_msg)
    if offset:
        out += _enc_field(4, 0, offset)
    if size:
        out += _enc_field(5, 0, size)
    return out + _enc_field(6, 5, crc_masked)


def _encode_header(num_shards: int) -> bytes:
    return _enc_field(1, 0, num_shards) + _enc_field(3, 2, _enc_field(1, 0, 1))  # version.producer = 1


# ------------------------------------------------------------------------------------------------
# SSTable reading


def _snappy_decompress(src: bytes, path: Path) -> bytes:
    """Snappy raw-format decompression (TensorFlow may compress index blocks with it)."""
    pos, end = 0, len(src)
    length, pos = _varint(src, pos, end, "a snappy block", path)
    if length > MAX_INDEX_BYTES:
        raise FormatError(f"snappy block claims {length} bytes", file=path)
    out = bytearray()
    while pos < end:
        tag = src[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            n = tag >> 2
            if n >= 60:
                extra = n - 59
                if pos + extra > end:
                    raise FormatError("truncated snappy literal", file=path)
                n = int.from_bytes(src[pos:pos + extra], "little")
                pos += extra
            n += 1
            if pos + n > end:
                raise FormatError("truncated snappy literal", file=path)
            if len(out) + n > length:
                raise FormatError(f"snappy block decompresses past its declared {length} bytes", file=path)
            out += src[pos:pos + n]
            pos += n
            continue
        if kind == 1:
            if pos + 1 > end:
                raise FormatError("truncated snappy copy", file=path)
            n = 4 + ((tag >> 2) & 7)
            off = ((tag >> 5) << 8) | src[pos]
            pos += 1
        else:
            width = 2 if kind == 2 else 4
            if pos + width > end:
                raise FormatError("truncated snappy copy", file=path)
            n = (tag >> 2) + 1
            off = int.from_bytes(src[pos:pos + width], "little")
            pos += width
        if off == 0 or off > len(out):
            raise FormatError("snappy copy points before the start of the block", file=path)
        if len(out) + n > length:
            raise FormatError(f"snappy block decompresses past its declared {length} bytes", file=path)
        for _ in range(n):  # copies may overlap their own output
            out.append(out[-off])
    if len(out) != length:
        raise FormatError(f"snappy block decompressed to {len(out)} bytes, header says {length}", file=path)
    return bytes(out)


def _read_block(data: bytes, offset: int, size: int, path: Path, what: str) -> bytes:
    if offset < 0 or size < 0 or offset + size + BLOCK_TRAILER_BYTES > len(data) - FOOTER_BYTES:
        raise FormatError(f"{what} at [{offset}, {offset + size}) lies outside the index file ({len(data)} bytes)",
                          file=path, offset=offset, hint="the .index file is truncated or damaged")
    contents = data[offset:offset + size]
    kind = data[offset + size]
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    actual = crc32c.value(data[offset:offset + size + 1])
    if crc32c.unmask(stored) != actual:
        raise FormatError(f"CRC-32C mismatch in {what}", file=path, offset=offset,
                          hint="the .index file is corrupted; re-save or re-download the checkpoint")
    if kind == 0:
        return contents
    if kind == 1:
        return _snappy_decompress(contents, path)
    raise FormatError(f"{what} uses unknown compression type {kind}", file=path, offset=offset)


def _block_entries(block: bytes, path: Path, what: str, budget: int | None = None) -> list[tuple[bytes, bytes]]:
    """The block's entries; ``budget`` caps their total key + value bytes (prefix compression lets a
    small block describe quadratically many key bytes: each key may reuse all of the previous one)."""
    if len(block) < 4:
        raise FormatError(f"{what} is too short", file=path)
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * num_restarts
    if num_restarts == 0 or limit < 0:
        raise FormatError(f"{what} has a bad restart array ({num_restarts} restarts)", file=path)
    entries: list[tuple[bytes, bytes]] = []
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, limit, what, path)
        non_shared, pos = _varint(block, pos, limit, what, path)
        value_len, pos = _varint(block, pos, limit, what, path)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise FormatError(f"malformed entry in {what}", file=path, offset=pos)
        if budget is not None:
            budget -= shared + non_shared + value_len
            if budget < 0:
                raise FormatError(f"{what} expands to more key bytes than any real checkpoint index holds",
                                  file=path, offset=pos, hint="the .index file is damaged or malicious")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos:pos + value_len]))
        pos += value_len
    return entries


def _handle(buf: bytes, pos: int, path: Path) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos, len(buf), "a block handle", path)
    size, pos = _varint(buf, pos, len(buf), "a block handle", path)
    return offset, size, pos


def read_table(path: Path) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of an SSTable, in order, every block's CRC checked."""
    try:
        size = path.stat().st_size
        if size > MAX_INDEX_BYTES:
            raise FormatError(f"index file is {size} bytes, over the {MAX_INDEX_BYTES}-byte limit", file=path)
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"cannot read: {exc.strerror}", file=path) from None
    if len(data) < FOOTER_BYTES:
        raise FormatError(f"file is {len(data)} bytes, shorter than the {FOOTER_BYTES}-byte table footer", file=path,
                          hint="not a tf.train checkpoint index, or truncated")
    footer = data[-FOOTER_BYTES:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_BYTES - 8)
    if magic != MAGIC:
        raise FormatError("bad table magic number; not a tf.train checkpoint index", file=path,
                          offset=len(data) - 8)
    _, _, pos = _handle(footer, 0, path)  # metaindex: unused by bundles
    index_offset, index_size, _ = _handle(footer, pos, path)
    index = _read_block(data, index_offset, index_size, path, "the index block")
    # Decoded entries may legitimately exceed the file size (shared key prefixes), but only by about the
    # restart interval; a hostile index could otherwise make them grow quadratically.
    budget = MAX_DECODED_FLOOR + MAX_DECODED_RATIO * len(data)
    out: list[tuple[bytes, bytes]] = []
    previous_end = 0
    for k, (_, handle) in enumerate(_block_entries(index, path, "the index block", budget)):
        offset, block_size, _ = _handle(handle, 0, path)
        if offset + block_size > index_offset:
            raise FormatError(f"data block {k} at [{offset}, {offset + block_size}) overlaps the index block",
                              file=path, offset=offset)
        if offset < previous_end:  # blocks are written in order; a repeat would be decoded again and again
            raise FormatError(f"data block {k} at [{offset}, {offset + block_size}) overlaps the previous data block",
                              file=path, offset=offset, hint="the .index file is damaged")
        previous_end = offset + block_size + BLOCK_TRAILER_BYTES
        entries = _block_entries(_read_block(data, offset, block_size, path, f"data block {k}"), path,
                                 f"data block {k}", budget)
        budget -= sum(len(key) + len(value) for key, value in entries)
        out.extend(entries)
    for (a, _), (b, _) in zip(out, out[1:]):
        if not a < b:
            raise FormatError(f"index keys are not strictly increasing at {b!r}", file=path,
                              hint="the .index file is damaged")
    return out


# ------------------------------------------------------------------------------------------------
# checkpoint reading


@dataclass
class TFCheckpoint:
    prefix: Path  # path without .index
    header: BundleHeader
    tensors: dict[str, LazyTensor]  # numeric entries, lazy, CRC-checked on load
    non_numeric: dict[str, str] = field(default_factory=dict)  # name -> kind ("string", ...)
    files: list[Path] = field(default_factory=list)


def _crc_verifier(path: Path, name: str, offset: int, masked: int) -> Callable[[memoryview], None]:
    expected = crc32c.unmask(masked)

    def verify(view: memoryview) -> None:
        if crc32c.value(view) != expected:
            raise FormatError("CRC-32C of the tensor bytes does not match the index", file=path, tensor=name,
                              offset=offset, hint="the data file is corrupted; re-save or re-download the checkpoint")

    return verify


def read_checkpoint(prefix: Path) -> TFCheckpoint:
    """Open the checkpoint ``prefix`` (``prefix.index`` + data shards); nothing is loaded yet."""
    prefix = Path(prefix)
    index_path = Path(str(prefix) + INDEX_SUFFIX)
    table = read_table(index_path)
    if not table or table[0][0] != HEADER_KEY:
        raise FormatError("index has no bundle header (empty first key)", file=index_path,
                          hint="not a TensorFlow V2 checkpoint index")
    header = _parse_header(table[0][1], index_path)
    shard_paths = [prefix.parent / data_file_name(prefix.name, k, header.num_shards) for k in range(header.num_shards)]
    sizes: dict[int, int] = {}
    tensors: dict[str, LazyTensor] = {}
    non_numeric: dict[str, str] = {}
    for key, value in table[1:]:
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"tensor name {key!r} is not UTF-8", file=index_path) from None
        entry = _parse_entry(value, index_path, name)
        if entry.has_slices:
            raise FormatError("is a partitioned variable (saved in slices), which llmstd does not read", file=index_path,
                              tensor=name, hint="re-save it unpartitioned (e.g. restore it in TensorFlow and save again)")
        if not 0 <= entry.shard_id < header.num_shards:
            raise FormatError(f"shard id {entry.shard_id} is out of range (the header declares "
                              f"{header.num_shards} shard(s))", file=index_path, tensor=name)
        shard_path = shard_paths[entry.shard_id]
        if entry.shard_id not in sizes:
            try:
                sizes[entry.shard_id] = shard_path.stat().st_size
            except OSError:
                raise FormatError("data shard is missing", file=shard_path,
                                  hint="copy every .data-* file next to the .index file") from None
        if entry.offset < 0 or entry.size < 0 or entry.offset + entry.size > sizes[entry.shard_id]:
            raise FormatError(
                f"bytes [{entry.offset}, {entry.offset + entry.size}) lie past the end of the data file "
                f"({sizes[entry.shard_id]} bytes)", file=shard_path, tensor=name, offset=entry.offset,
                hint="the data file is truncated or belongs to another index")
        if entry.dtype_code in NON_NUMERIC:
            non_numeric[name] = NON_NUMERIC[entry.dtype_code]
            continue
        if entry.dtype_code not in TF_DTYPES:
            raise FormatError(f"has TensorFlow dtype code {entry.dtype_code}, which llmstd cannot represent",
                              file=index_path, tensor=name)
        dtype = dtypes.dtype(TF_DTYPES[entry.dtype_code])
        expected = math.prod(entry.shape) * dtype.itemsize
        if entry.size != expected:
            raise FormatError(f"entry stores {entry.size} bytes but {dtype.name}{list(entry.shape)} needs {expected}",
                              file=index_path, tensor=name)
        tensors[name] = FileSliceTensor(shard_path, entry.offset, entry.shape, dtype,
                                        big_endian=header.big_endian and dtype.itemsize > 1,
                                        verify=_crc_verifier(shard_path, name, entry.offset, entry.crc32c))
    return TFCheckpoint(prefix, header, tensors, non_numeric, [index_path, *shard_paths])


def find_prefix(directory: Path) -> Path | None:
    """The checkpoint prefix in a directory: from its ``checkpoint`` state file, else the only ``*.index``."""
    state = directory / "checkpoint"
    if state.is_file() and state.stat().st_size < 1 << 20:
        for line in state.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model_checkpoint_path:"):
                value = line.split(":", 1)[1].strip().strip('"')
                candidate = Path(value) if Path(value).is_absolute() else directory / value
                if Path(str(candidate) + INDEX_SUFFIX).is_file() and candidate.parent.resolve() == directory.resolve():
                    return candidate
    indexes = sorted(directory.glob("*" + INDEX_SUFFIX))
    if len(indexes) == 1:
        return indexes[0].with_name(indexes[0].name[: -len(INDEX_SUFFIX)])
    return None


# ------------------------------------------------------------------------------------------------
# writing


class _BlockBuilder:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < RESTART_INTERVAL:
            limit = min(len(key), len(self.last))
            while shared < limit and key[shared] == self.last[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buf))
            self.counter = 0
        self.buf += _enc_varint(shared) + _enc_varint(len(key) - shared) + _enc_varint(len(value))
        self.buf += key[shared:] + value
        self.last = key
        self.counter += 1

    def estimated_size(self) -> int:
        return len(self.buf) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        return bytes(self.buf) + b"".join(struct.pack("<I", r) for r in self.restarts) + struct.pack(
            "<I", len(self.restarts))


def _write_table(path: Path, items: Sequence[tuple[bytes, bytes]]) -> None:
    out = bytearray()
    index = _BlockBuilder()

    def emit(block: bytes) -> tuple[int, int]:
        offset = len(out)
        out.extend(block)
        trailer_type = b"\x00"
        out.extend(trailer_type + struct.pack("<I", crc32c.mask(crc32c.value(block + trailer_type))))
        return offset, len(block)

    block = _BlockBuilder()
    for key, value in items:
        block.add(key, value)
        if block.estimated_size() >= BLOCK_SIZE:
            offset, size = emit(block.finish())
            # The index key must be >= every key in the block and < the next block's keys: the
            # block's last key is the simplest such separator.
            index.add(block.last, _enc_varint(offset) + _enc_varint(size))
            block = _BlockBuilder()
    if block.counter or not index.counter:
        offset, size = emit(block.finish())
        index.add(block.last, _enc_varint(offset) + _enc_varint(size))
    meta_offset, meta_size = emit(_BlockBuilder().finish())
    index_offset, index_size = emit(index.finish())
    footer = (_enc_varint(meta_offset) + _enc_varint(meta_size) + _enc_varint(index_offset) + _enc_varint(index_size))
    footer = footer.ljust(FOOTER_BYTES - 8, b"\x00") + struct.pack("<Q", MAGIC)
    out.extend(footer)
    with open(path, "wb") as fh:
        fh.write(out)
        fh.flush()
        timing.fsync(fh.fileno())


def write_checkpoint(prefix: Path, tensors: Sequence[tuple[str, LazyTensor]], *,
                     progress: Progress | None = None) -> list[Path]:
    """Write ``prefix.index`` and ``prefix.data-00000-of-00001``, holding at most two loaded tensors.

    Returns the files written. Names must be unique; they are stored sorted, as the table requires.
    """
    prefix = Path(prefix)
    names = [n for n, _ in tensors]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise FormatError(f"tensor names written twice: {', '.join(dupes)}", file=prefix)
    if "" in names:
        raise FormatError("a tensor may not have the empty name (it is reserved for the bundle header)", file=prefix)
    for name, tensor in tensors:
        if tensor.dtype.name not in TF_DTYPE_OF:
            raise FormatError(f"dtype {tensor.dtype.name} has no TensorFlow equivalent", tensor=name, file=prefix)
    data_path = prefix.parent / data_file_name(prefix.name, 0, 1)
    entries: list[tuple[bytes, bytes]] = []
    offset = 0
    with open(data_path, "wb") as fh:
        # The next tensor loads on a second thread while this one is checksummed and written; every
        # tensor is loaded (a file slice as a mapped view), since its bytes must be checksummed.
        for name, tensor, array in stream(list(tensors)):
            array = np.asarray(array)
            if array.dtype.byteorder == ">":  # TensorFlow writes little-endian bundles (the header says so)
                array = array.astype(array.dtype.newbyteorder("<"))
            if not array.flags.c_contiguous:  # np.ascontiguousarray would turn a scalar into shape (1,)
                array = array.copy(order="C")
            write_streamed(fh, data_path, name, tensor, array)  # refuses an array not as declared
            raw = array.reshape(-1).view(np.uint8)
            with timing.phase("checksum"):
                checksum = crc32c.mask(crc32c.value(raw))
            size = int(raw.size)
            entries.append((name.encode("utf-8"),
                            _encode_entry(TF_DTYPE_OF[tensor.dtype.name], tensor.shape, offset, size, checksum)))
            offset += size
            if progress:
                progress(name, size)
        fh.flush()
        timing.fsync(fh.fileno())
    entries.sort(key=lambda kv: kv[0])
    index_path = Path(str(prefix) + INDEX_SUFFIX)
    _write_table(index_path, [(HEADER_KEY, _encode_header(1)), *entries])
    return [index_path, data_path]


def write_state_file(directory: Path, prefix_name: str) -> Path:
    """The ``checkpoint`` file through which tf.train.latest_checkpoint finds the prefix."""
    path = directory / "checkpoint"
    path.write_text(f'model_checkpoint_path: "{prefix_name}"\nall_model_checkpoint_paths: "{prefix_name}"\n',
                    encoding="utf-8")
    return path
