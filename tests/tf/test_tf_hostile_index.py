"""Hostile tf.train index tables and odd h5 layouts found in review: bombs that a small file could set
off (quadratic prefix-compressed keys, repeated data blocks, snappy output past its declared size) are
refused with a FormatError; an empty h5 dataset (no storage allocated) reads as an empty tensor.
"""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import numpy as np
import pytest

from llmstd.converters import crc32c, h5_io, tf_checkpoint as t
from llmstd.errors import FormatError
from llmstd.tensors import ArrayTensor


def _raw_table(path: Path, data_blocks: list[bytes], index_handles: list[tuple[bytes, int]]) -> None:
    """An SSTable whose index block lists ``(key, data block number)`` in the order given."""
    out = bytearray()
    placed = []

    def emit(block: bytes) -> tuple[int, int]:
        offset = len(out)
        out.extend(block + b"\x00" + struct.pack("<I", crc32c.mask(crc32c.value(block + b"\x00"))))
        return offset, len(block)

    for block in data_blocks:
        placed.append(emit(block))
    index = t._BlockBuilder()
    for key, k in index_handles:
        index.add(key, t._enc_varint(placed[k][0]) + t._enc_varint(placed[k][1]))
    meta = emit(t._BlockBuilder().finish())
    idx = emit(index.finish())
    footer = b"".join(t._enc_varint(v) for v in (*meta, *idx)).ljust(t.FOOTER_BYTES - 8, b"\x00")
    path.write_bytes(bytes(out) + footer + struct.pack("<Q", t.MAGIC))


def test_prefix_compressed_key_bomb_is_refused(tmp_path: Path) -> None:
    # Each entry reuses the whole previous key and adds one byte: ~100 KB of block, ~200 MB of keys.
    n = 20_000
    buf = bytearray()
    for i in range(n):
        buf += t._enc_varint(i) + t._enc_varint(1) + t._enc_varint(0) + b"a"
    block = bytes(buf) + struct.pack("<I", 0) + struct.pack("<I", 1)
    _raw_table(tmp_path / "m.ckpt.index", [block], [(b"\xff", 0)])
    with pytest.raises(FormatError, match="more key bytes"):
        t.read_table(tmp_path / "m.ckpt.index")


def test_repeated_data_block_is_refused(tmp_path: Path) -> None:
    empty = t._BlockBuilder().finish()
    _raw_table(tmp_path / "m.ckpt.index", [empty], [(b"a", 0), (b"b", 0)])
    with pytest.raises(FormatError, match="overlaps the previous data block"):
        t.read_table(tmp_path / "m.ckpt.index")


def test_snappy_output_past_declared_length_is_refused_early() -> None:
    # declares 4 bytes, then a literal "abcd" and a copy of 64 more bytes
    block = bytes([4, (3 << 2) | 0]) + b"abcd" + bytes([(63 << 2) | 2, 4, 0])
    with pytest.raises(FormatError, match="past its declared 4 bytes"):
        t._snappy_decompress(block, Path("x"))
    # a literal longer than declared
    with pytest.raises(FormatError, match="past its declared 2 bytes"):
        t._snappy_decompress(bytes([2, (3 << 2) | 0]) + b"abcd", Path("x"))


def test_valid_tables_still_read(tmp_path: Path) -> None:
    # many tensors with long shared-prefix names: several data blocks, well inside the budget
    entries = [(f"{'scope/' * 40}layer_{i:05d}/kernel", ArrayTensor(np.full((2,), i, np.float32)))
               for i in range(3000)]
    t.write_checkpoint(tmp_path / "m.ckpt", entries)
    ckpt = t.read_checkpoint(tmp_path / "m.ckpt")
    assert len(ckpt.tensors) == 3000
    assert ckpt.tensors[entries[-1][0]].load().tolist() == [2999.0, 2999.0]


def test_h5_empty_dataset_reads_and_roundtrips(tmp_path: Path) -> None:
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        h5_io.write_string_list(f, "layer_names", ["dense"])
        g = f.create_group("dense")
        g.create_dataset("m/k:0", shape=(0, 4), dtype="f4")  # contiguous, no storage allocated
        h5_io.write_string_list(g, "weight_names", ["m/k:0"])
    w = h5_io.read_h5(path)
    assert w.weights["m/k:0"].load().shape == (0, 4)
    out = h5_io.write_h5(tmp_path / "o.h5", [("dense", [("m/k:0", ArrayTensor(np.zeros((0, 3), np.float16)))])])
    assert h5_io.read_h5(out).weights["m/k:0"].load().shape == (0, 3)
