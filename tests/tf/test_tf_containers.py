"""Hostile and unusual inputs to the TF containers (issue 3): h5 files with links, virtual or
external datasets and shape bombs are refused before anything is allocated; big-endian h5 data is
byteswapped; tf.train checkpoints whose index points past the data, names a missing shard or carries
a wrong CRC are refused. Plus CRC-32C and snappy against known values.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest

import llmstd
from llmstd.converters import crc32c, h5_io, tf_checkpoint
from llmstd.errors import FormatError, UnsafeInputError
from llmstd.tensors import ArrayTensor


def _keras_h5(path: Path, build) -> Path:  # noqa: ANN001
    """A minimal Keras-2-layout file with one layer 'dense' holding what ``build(group)`` creates."""
    with h5py.File(path, "w") as f:
        h5_io.write_string_list(f, "layer_names", ["dense"])
        g = f.create_group("dense")
        names = build(f, g)
        h5_io.write_string_list(g, "weight_names", names)
    return path


def test_h5_roundtrip_and_big_endian(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)).astype(np.float32)

    def build(f, g):  # noqa: ANN001, ANN202
        g.create_dataset("m/dense/kernel:0", data=a.astype(">f4"))  # big-endian on disk
        g.create_dataset("m/dense/bias:0", data=np.arange(4, dtype=">i8"), chunks=(2,), compression="gzip")
        return ["m/dense/kernel:0", "m/dense/bias:0"]

    weights = h5_io.read_h5(_keras_h5(tmp_path / "be.h5", build)).weights
    kernel = weights["m/dense/kernel:0"].load()
    assert kernel.dtype == np.float32 and kernel.dtype.byteorder in ("=", "<") and np.array_equal(kernel, a)
    bias = weights["m/dense/bias:0"].load()
    assert bias.dtype == np.int64 and np.array_equal(bias, np.arange(4))


def test_h5_bfloat16_uses_keras3_convention(tmp_path: Path) -> None:
    import ml_dtypes

    value = np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(2, 3)
    h5_io.write_h5(tmp_path / "bf.h5", [("dense", [("m/dense/kernel:0", ArrayTensor(value))])])
    with h5py.File(tmp_path / "bf.h5", "r") as f:
        assert f["dense/m/dense/kernel:0"].attrs["dtype"] == "bfloat16"
    got = h5_io.read_h5(tmp_path / "bf.h5").weights["m/dense/kernel:0"].load()
    assert got.dtype == value.dtype and got.tobytes() == value.tobytes()


LONG_NAMES = [f"m/dense/{'x' * 200}_{k}:0" for k in range(400)]  # > 64 KB of names


def _long_weight_list(tmp_path: Path) -> Path:
    path = tmp_path / "long.h5"
    h5_io.write_h5(path, [("dense", [(n, ArrayTensor(np.zeros(1, np.float32))) for n in LONG_NAMES])])
    return path


def test_h5_long_weight_lists_are_chunked(tmp_path: Path) -> None:
    path = _long_weight_list(tmp_path)
    with h5py.File(path, "r") as f:
        assert "weight_names" not in f["dense"].attrs and "weight_names0" in f["dense"].attrs
    assert list(h5_io.read_h5(path).weights) == LONG_NAMES


@pytest.mark.legacy  # tf-keras is installed beside transformers 4.x only
def test_h5_long_weight_lists_are_chunked_like_tf_keras(tmp_path: Path) -> None:
    path = _long_weight_list(tmp_path)
    from tf_keras.src.saving.legacy.hdf5_format import load_attributes_from_hdf5_group

    with h5py.File(path, "r") as f:
        assert [n if isinstance(n, str) else n.decode() for n in load_attributes_from_hdf5_group(f["dense"], "weight_names")] == LONG_NAMES


def test_h5_oversized_attributes_are_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [f"m/dense/w{k}:0" for k in range(50)]
    h5_io.write_h5(tmp_path / "w.h5", [("dense", [(n, ArrayTensor(np.zeros(1, np.float32))) for n in names])])
    monkeypatch.setattr(h5_io, "MAX_ATTRIBUTE_BYTES", 100)  # the 50 names declare more than this
    with pytest.raises(FormatError, match="attribute 'weight_names' of /dense declares .* bytes") as caught:
        h5_io.read_h5(tmp_path / "w.h5")
    assert str(tmp_path / "w.h5") in str(caught.value)


def test_h5_datasets_hold_the_tensor_bytes_at_their_offsets(tmp_path: Path) -> None:
    # The writer places bytes itself (HDF5 only allocates); h5py must read back exactly the tensors,
    # including a plain file slice copied kernel to kernel and an empty tensor that has no storage.
    from llmstd.converters import safetensors_io

    rng = np.random.default_rng(5)
    big = rng.standard_normal((700, 3000)).astype(np.float32)  # 8.4 MB: early writeback too
    safetensors_io.write_file(tmp_path / "src.safetensors", [("big", ArrayTensor(big))])
    sliced = safetensors_io.open_file(tmp_path / "src.safetensors").tensors["big"]
    small = rng.standard_normal((3, 4)).astype(np.float16)
    layers = [("dense", [("m/dense/kernel:0", sliced), ("m/dense/bias:0", ArrayTensor(small))]),
              ("empty", [("m/empty/kernel:0", ArrayTensor(np.zeros((0, 3), np.float32)))])]
    h5_io.write_h5(tmp_path / "w.h5", layers)
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert f["dense/m/dense/kernel:0"][...].tobytes() == big.tobytes()
        assert f["dense/m/dense/bias:0"][...].tobytes() == small.tobytes()
        assert f["empty/m/empty/kernel:0"].shape == (0, 3)


@pytest.mark.parametrize("link", ["external", "soft"])
def test_h5_links_are_refused(tmp_path: Path, link: str) -> None:
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("secret", data=np.zeros(4, np.float32))

    def build(f, g):  # noqa: ANN001, ANN202
        g.create_dataset("m/dense/bias:0", data=np.zeros(4, np.float32))
        if link == "external":
            g["m/dense"]["kernel:0"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/secret")
        else:
            g["m/dense"]["kernel:0"] = h5py.SoftLink("/dense/m/dense/bias:0")
        return ["m/dense/kernel:0", "m/dense/bias:0"]

    path = _keras_h5(tmp_path / f"{link}.h5", build)
    with pytest.raises(UnsafeInputError, match=f"{link} link"):
        h5_io.read_h5(path)


def test_h5_soft_link_to_a_layer_group_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "g.h5", "w") as f:
        h5_io.write_string_list(f, "layer_names", ["dense"])
        real = f.create_group("real")
        real.create_dataset("m/dense/kernel:0", data=np.zeros(2, np.float32))
        h5_io.write_string_list(real, "weight_names", ["m/dense/kernel:0"])
        f["dense"] = h5py.SoftLink("/real")
    with pytest.raises(UnsafeInputError, match="soft link"):
        h5_io.read_h5(tmp_path / "g.h5")


def test_h5_virtual_dataset_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "src.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(4, np.float32))

    def build(f, g):  # noqa: ANN001, ANN202
        layout = h5py.VirtualLayout(shape=(4,), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(tmp_path / "src.h5"), "x", shape=(4,))
        g.require_group("m/dense").create_virtual_dataset("kernel:0", layout)
        return ["m/dense/kernel:0"]

    with pytest.raises(UnsafeInputError, match="virtual dataset"):
        h5_io.read_h5(_keras_h5(tmp_path / "v.h5", build))


def test_h5_shape_bomb_is_refused_before_allocating(tmp_path: Path) -> None:
    # A chunked dataset declaring 4 TiB with only a few chunks stored (never written).
    def build(f, g):  # noqa: ANN001, ANN202
        d = g.create_dataset("m/dense/kernel:0", shape=(1 << 20, 1 << 20), dtype=np.float32, chunks=(64, 64),
                             compression="gzip")
        d[0:64, 0:64] = 1.0
        return ["m/dense/kernel:0"]

    path = _keras_h5(tmp_path / "bomb.h5", build)
    with pytest.raises(FormatError, match="shape/decompression bomb"):
        h5_io.read_h5(path)


def test_h5_contiguous_dataset_with_wrong_size_is_refused(tmp_path: Path) -> None:
    def build(f, g):  # noqa: ANN001, ANN202
        g.create_dataset("m/dense/kernel:0", shape=(1 << 16, 1 << 16), dtype=np.float32)  # declared, never written
        return ["m/dense/kernel:0"]

    with pytest.raises(FormatError, match="stores none"):
        h5_io.read_h5(_keras_h5(tmp_path / "empty.h5", build))


def test_h5_dataset_missing_from_weight_names_list_is_an_error(tmp_path: Path) -> None:
    def build(f, g):  # noqa: ANN001, ANN202
        return ["m/dense/kernel:0"]

    with pytest.raises(FormatError, match="does not exist"):
        h5_io.read_h5(_keras_h5(tmp_path / "missing.h5", build))


# ---------------------------------------------------------------------------------------------- tf.train


@pytest.fixture()
def small_ckpt(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    entries = [("a/kernel", ArrayTensor(rng.standard_normal((8, 8)).astype(np.float32))),
               ("b/bias", ArrayTensor(rng.standard_normal(8).astype(np.float32)))]
    tf_checkpoint.write_checkpoint(tmp_path / "m.ckpt", entries)
    return tmp_path / "m.ckpt"


def _data(prefix: Path) -> Path:
    return prefix.parent / tf_checkpoint.data_file_name(prefix.name, 0, 1)


def test_index_pointing_past_the_data_file_is_refused(small_ckpt: Path) -> None:
    data = _data(small_ckpt)
    data.write_bytes(data.read_bytes()[:-16])  # truncate the data shard
    with pytest.raises(FormatError, match="past the end of the data file"):
        tf_checkpoint.read_checkpoint(small_ckpt)


def test_missing_shard_is_refused(small_ckpt: Path) -> None:
    _data(small_ckpt).unlink()
    with pytest.raises(FormatError, match="data shard is missing"):
        tf_checkpoint.read_checkpoint(small_ckpt)


def test_shard_id_out_of_range_is_refused(tmp_path: Path) -> None:
    entry = tf_checkpoint._encode_entry(1, [2], 0, 8, 0)
    entry += tf_checkpoint._enc_field(3, 0, 3)  # shard_id = 3 of 1
    tf_checkpoint._write_table(tmp_path / "m.ckpt.index", [(b"", tf_checkpoint._encode_header(1)), (b"x", entry)])
    _data(tmp_path / "m.ckpt").write_bytes(b"\0" * 8)
    with pytest.raises(FormatError, match="shard id 3 is out of range"):
        tf_checkpoint.read_checkpoint(tmp_path / "m.ckpt")


def test_data_crc_mismatch_is_refused_on_load(small_ckpt: Path) -> None:
    data = _data(small_ckpt)
    raw = bytearray(data.read_bytes())
    raw[5] ^= 0x40
    data.write_bytes(bytes(raw))
    ckpt = tf_checkpoint.read_checkpoint(small_ckpt)  # lazy: nothing read yet
    with pytest.raises(FormatError, match="CRC-32C of the tensor bytes"):
        ckpt.tensors["a/kernel"].load()


def test_index_crc_mismatch_and_garbage_are_refused(small_ckpt: Path) -> None:
    index = Path(str(small_ckpt) + ".index")
    raw = bytearray(index.read_bytes())
    raw[12] ^= 0x01
    index.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="CRC-32C mismatch"):
        tf_checkpoint.read_checkpoint(small_ckpt)
    index.write_bytes(b"not an index at all, just some bytes; long enough for a footer........")
    with pytest.raises(FormatError, match="magic"):
        tf_checkpoint.read_checkpoint(small_ckpt)


def test_converting_a_damaged_checkpoint_fails_cleanly(tmp_path: Path, tfstore) -> None:
    src = tmp_path / "src"
    shutil.copytree(tfstore.converted("llama", "tf-ckpt", sharp=False), src)
    data = _data(src / "model.ckpt")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(FormatError, match="past the end of the data file"):
        llmstd.convert(src, tmp_path / "out", to="hf")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("native", [True, False], ids=["google_crc32c", "numpy-lanes"])
def test_crc32c_known_values(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if native:
        assert crc32c._native() is not None, "google-crc32c (a dependency) is not installed with its C implementation"
        monkeypatch.setattr(crc32c, "_NATIVE_CHUNK", 4096 + 7)  # many chunks, boundaries mid-word
    else:
        monkeypatch.setattr(crc32c, "_native", lambda: None)
    assert crc32c.value(b"123456789") == 0xE3069283
    assert crc32c.value(b"") == 0
    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, 300_001, dtype=np.uint8)
    assert crc32c.value(big) == crc32c._update_scalar(0xFFFFFFFF, big.tobytes()) ^ 0xFFFFFFFF
    assert crc32c.value(big[1:].reshape(1000, 300)) == crc32c._update_scalar(0xFFFFFFFF, big[1:].tobytes()) ^ 0xFFFFFFFF
    assert crc32c.unmask(crc32c.mask(0x12345678)) == 0x12345678


def test_snappy_blocks_decompress() -> None:
    # literal "abcd" then a copy of 8 bytes at offset 4: "abcdabcdabcd"
    block = bytes([12, (3 << 2) | 0]) + b"abcd" + bytes([((8 - 4) << 2) | 1, 4])
    assert tf_checkpoint._snappy_decompress(block, Path("x")) == b"abcdabcdabcd"
    with pytest.raises(FormatError):
        tf_checkpoint._snappy_decompress(bytes([4, 1 | (0 << 2), 9]), Path("x"))
    assert struct.calcsize("<Q") == 8
