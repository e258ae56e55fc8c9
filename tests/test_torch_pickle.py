"""torch.save checkpoints: the torch-free reader agrees with torch bit for bit, refuses code, detects
damage, and the torch-free writer produces files torch.load(weights_only=True) accepts."""

from __future__ import annotations

import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from llmstd.dtypes import BY_NAME, from_numpy  # noqa: E402
from llmstd.errors import FormatError, OutputError, UnsafeInputError  # noqa: E402
from llmstd.tensors import ArrayTensor, DerivedTensor, FileSliceTensor  # noqa: E402
from llmstd.converters import torch_pickle  # noqa: E402
from llmstd.converters.torch_pickle import read_torch_checkpoint, write_torch_checkpoint  # noqa: E402


# ------------------------------------------------------------------------------------------------
# helpers


def _torch_bytes(t: "torch.Tensor") -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _np_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).tobytes()


def _assert_same(reference: dict, lazy: dict) -> None:
    assert set(lazy) == set(reference)
    for name, t in reference.items():
        array = lazy[name].load()
        assert lazy[name].dtype.name == str(t.dtype).removeprefix("torch."), name
        assert tuple(array.shape) == tuple(t.shape), name
        assert array.dtype == lazy[name].dtype.numpy, name
        assert _np_bytes(array) == _torch_bytes(t), name


def _rewrite_zip(path: Path, replace: dict[str, bytes] | None = None, compress: int = zipfile.ZIP_STORED) -> None:
    """Rewrite a torch zip with some members replaced (CRCs recomputed by zipfile)."""
    with zipfile.ZipFile(path) as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    replace = replace or {}
    with zipfile.ZipFile(path, "w", compress) as zf:
        for name, data in members:
            zf.writestr(name, replace.get(name, data))


def _member(path: Path, suffix: str) -> str:
    with zipfile.ZipFile(path) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(suffix)]
    return name


def _data_offset(path: Path, member: str) -> int:
    """Data offset computed independently of the reader, from the local header."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _evil_checkpoint(tmp_path: Path, payload: bytes) -> Path:
    path = tmp_path / "evil.bin"
    torch.save({"w": torch.ones(2)}, path)
    _rewrite_zip(path, {_member(path, "/data.pkl"): payload})
    return path


# ------------------------------------------------------------------------------------------------
# reading real torch.save output


def test_reads_torch_save_bit_identical(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, generator=g)
    shared = torch.randn(6, generator=g)
    attr = torch.randn(3, generator=g)
    attr.note = "python attribute -> _rebuild_from_type_v2"
    sd = {
        "f32": torch.randn(3, 5, generator=g),
        "f16": torch.randn(4, 3, generator=g).half(),
        "bf16": torch.randn(2, 7, generator=g).bfloat16(),
        "f64": torch.randn(3, generator=g).double(),
        "i64": torch.arange(-5, 7),
        "i32": torch.arange(9, dtype=torch.int32),
        "i16": torch.arange(4, dtype=torch.int16),
        "i8": torch.arange(-3, 3, dtype=torch.int8),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        # dtypes without a legacy storage class: torch writes _rebuild_tensor_v3 + UntypedStorage
        "f8_e4m3": torch.randn(5, generator=g).to(torch.float8_e4m3fn),
        "f8_e5m2_view": torch.randn(4, 6, generator=g).to(torch.float8_e5m2)[1:3, ::2],
        "u16": torch.arange(60000, 60005, dtype=torch.int32).to(torch.uint16),
        "u32": torch.arange(7).to(torch.uint32)[2:],
        "u64": torch.arange(3).to(torch.uint64),
        "transposed": torch.randn(3, 4, generator=g).t(),
        "sliced": base[5:17],
        "strided_slice": base.view(5, 8)[1:4, ::3],
        "share_a": shared[:3],
        "share_b": shared[3:],
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
        "attr": attr,
    }
    path = tmp_path / "pytorch_model.bin"
    torch.save(sd, path)
    lazy = read_torch_checkpoint(path)
    _assert_same(sd, lazy)
    assert isinstance(lazy["f32"], FileSliceTensor)
    assert isinstance(lazy["sliced"], FileSliceTensor)  # contiguous view: mapped, not copied
    assert isinstance(lazy["transposed"], DerivedTensor)
    assert isinstance(lazy["strided_slice"], DerivedTensor)
    # both halves of one storage point into the same zip member, 12 bytes apart
    assert lazy["share_b"].offset - lazy["share_a"].offset == 3 * 4


def test_state_dict_with_metadata_and_non_tensors(tmp_path: Path) -> None:
    linear = torch.nn.Linear(3, 2)
    sd = linear.state_dict()  # an OrderedDict carrying _metadata, restored by BUILD
    assert hasattr(sd, "_metadata")
    path = tmp_path / "linear.bin"
    torch.save(sd, path)
    _assert_same(dict(sd), read_torch_checkpoint(path))

    mixed = tmp_path / "mixed.bin"
    torch.save({"w": torch.ones(2), "step": 7, "name": "x", "cfg": {"a": 1}}, mixed)
    assert list(read_torch_checkpoint(mixed)) == ["w"]


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_unwraps_well_known_wrappers(tmp_path: Path, wrapper: str) -> None:
    sd = {"a.weight": torch.randn(2, 3), "a.bias": torch.randn(2)}
    path = tmp_path / "ckpt.bin"
    torch.save({wrapper: sd, "epoch": 3}, path)
    _assert_same(sd, read_torch_checkpoint(path))


def test_refuses_dict_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "opt.bin"
    torch.save({"optimizer": {"state": {0: torch.ones(1)}}, "epoch": 3}, path)
    with pytest.raises(FormatError, match="no tensors"):
        read_torch_checkpoint(path)


def test_view_of_larger_storage_uses_only_view_bytes(tmp_path: Path) -> None:
    base = torch.arange(1000, dtype=torch.float32)
    path = tmp_path / "view.bin"
    torch.save({"v": base[100:110], "s": base.view(10, 100)[2:5, 7:90:20]}, path)
    member = _member(path, "/data/0")
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo(member).file_size == 4000  # torch stored the whole storage
    lazy = read_torch_checkpoint(path)
    v = lazy["v"]
    assert isinstance(v, FileSliceTensor)
    assert v.nbytes == 40
    assert v.offset == _data_offset(path, member) + 100 * 4
    np.testing.assert_array_equal(v.load(), np.arange(100, 110, dtype=np.float32))
    s = lazy["s"].load()
    assert s.shape == (3, 5) and s.flags["C_CONTIGUOUS"]
    owner = s
    while owner.base is not None:
        owner = owner.base
    assert isinstance(owner, np.ndarray) and owner.nbytes == 15 * 4  # a copy of the view only
    np.testing.assert_array_equal(s, base.view(10, 100)[2:5, 7:90:20].numpy())


@pytest.mark.legacy  # transformers 5 no longer writes .bin
def test_transformers_gpt2_save_pretrained(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    os.environ.setdefault("USE_TF", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64, n_positions=16))
    model.save_pretrained(tmp_path, safe_serialization=False)
    path = tmp_path / "pytorch_model.bin"
    reference = torch.load(path, weights_only=True)
    lazy = read_torch_checkpoint(path)
    assert len(lazy) >= 10
    _assert_same(reference, lazy)


def test_big_endian_checkpoint(tmp_path: Path) -> None:
    sd = {"f": torch.randn(3, 2), "h": torch.randn(5).half(), "b": torch.randn(4).bfloat16(), "l": torch.arange(3)}
    path = tmp_path / "big.bin"
    torch.save(sd, path)
    # Byte-swap every storage and flip the byteorder record, as a big-endian machine would write it.
    swaps = {_member(path, "/byteorder"): b"big"}
    for key, t in enumerate(sd.values()):
        itemsize = t.element_size()
        raw = np.frombuffer(_torch_bytes(t), dtype=f"<u{itemsize}")
        swaps[_member(path, f"/data/{key}")] = raw.astype(f">u{itemsize}").tobytes()
    _rewrite_zip(path, swaps)
    lazy = read_torch_checkpoint(path)
    assert all(t.big_endian for t in lazy.values())
    _assert_same(sd, lazy)
    _assert_same(sd, {n: read_torch_checkpoint(path)[n] for n in sd})
    for name, t in torch.load(path, weights_only=True).items():  # torch agrees on the swapped file
        assert _torch_bytes(t) == _torch_bytes(sd[name])


# ------------------------------------------------------------------------------------------------
# refusing code


def test_reduce_os_system_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "CANARY"
    payload = pickle.dumps({"w": _Evil(os.system, f"touch {canary}")}, protocol=2)
    path = _evil_checkpoint(tmp_path, payload)
    with pytest.raises(UnsafeInputError) as info:
        read_torch_checkpoint(path)
    assert "system" in str(info.value)
    assert str(path) in str(info.value)
    assert "never runs code" in str(info.value)
    assert not canary.exists()


def test_reduce_builtins_exec_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "CANARY"
    payload = pickle.dumps(_Evil(exec, f"open({str(canary)!r}, 'w').close()"), protocol=4)
    path = _evil_checkpoint(tmp_path, payload)
    with pytest.raises(UnsafeInputError, match="builtins.exec"):
        read_torch_checkpoint(path)
    assert not canary.exists()


def test_payload_followed_by_truncated_stream(tmp_path: Path) -> None:
    canary = tmp_path / "CANARY"
    payload = pickle.dumps({"w": _Evil(os.system, f"touch {canary}")}, protocol=2)
    path = _evil_checkpoint(tmp_path, payload[: len(payload) - 3])
    with pytest.raises(UnsafeInputError):
        read_torch_checkpoint(path)
    assert not canary.exists()


def test_truncated_pickle_is_format_error(tmp_path: Path) -> None:
    path = tmp_path / "trunc.bin"
    torch.save({"w": torch.ones(2)}, path)
    name = _member(path, "/data.pkl")
    with zipfile.ZipFile(path) as zf:
        data = zf.read(name)
    _rewrite_zip(path, {name: data[: len(data) // 2]})
    with pytest.raises(FormatError, match="truncated"):
        read_torch_checkpoint(path)


def test_raw_pickle_is_not_unpickled(tmp_path: Path) -> None:
    canary = tmp_path / "CANARY"
    path = tmp_path / "raw.bin"
    path.write_bytes(pickle.dumps(_Evil(os.system, f"touch {canary}"), protocol=2))
    with pytest.raises(FormatError):
        read_torch_checkpoint(path)
    assert not canary.exists()


def test_rebuild_from_type_must_wrap_a_tensor_rebuild(tmp_path: Path) -> None:
    t = torch.ones(2)
    t.extra = 1  # makes torch emit _rebuild_from_type_v2(_rebuild_tensor_v2, Tensor, ...)
    path = tmp_path / "typed.bin"
    torch.save({"t": t}, path)
    name = _member(path, "/data.pkl")
    with zipfile.ZipFile(path) as zf:
        data = zf.read(name)
    assert data.count(b"ctorch._utils\n_rebuild_tensor_v2\n") == 1
    _assert_same({"t": t}, read_torch_checkpoint(path))  # the genuine file is fine
    _rewrite_zip(path, {name: data.replace(b"ctorch._utils\n_rebuild_tensor_v2\n", b"ccollections\nOrderedDict\n")})
    with pytest.raises(UnsafeInputError, match="tensor rebuild"):
        read_torch_checkpoint(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still writable
def test_torchscript_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(UnsafeInputError, match="TorchScript archive: contains code"):
        read_torch_checkpoint(path)


def test_unsupported_tensor_kind(tmp_path: Path) -> None:
    path = tmp_path / "complex.bin"
    torch.save({"c": torch.ones(2, dtype=torch.complex64)}, path)
    with pytest.raises(FormatError, match="unsupported"):
        read_torch_checkpoint(path)


# ------------------------------------------------------------------------------------------------
# legacy and damaged files


def test_legacy_pickle_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "legacy.bin"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(FormatError, match="legacy") as info:
        read_torch_checkpoint(path)
    assert "torch>=1.6" in str(info.value)


def test_legacy_tar_format_is_refused(tmp_path: Path) -> None:
    inner = tmp_path / "pickle"
    inner.write_bytes(b"\x80\x02}q\x00.")
    path = tmp_path / "legacy_tar.bin"
    with tarfile.open(path, "w") as tar:
        tar.add(inner, arcname="pickle")
    with pytest.raises(FormatError, match="tar"):
        read_torch_checkpoint(path)


def test_damaged_zip(tmp_path: Path) -> None:
    path = tmp_path / "cut.bin"
    torch.save({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:-30])  # loses the end-of-central-directory record
    with pytest.raises(FormatError):
        read_torch_checkpoint(path)
    other = tmp_path / "text.bin"
    other.write_text("hello")
    with pytest.raises(FormatError, match="not a zip"):
        read_torch_checkpoint(other)


def test_bad_crc_detected_at_load(tmp_path: Path) -> None:
    path = tmp_path / "crc.bin"
    torch.save({"good": torch.ones(4), "bad": torch.arange(16, dtype=torch.float32)}, path)
    offset = _data_offset(path, _member(path, "/data/1")) + 5
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))
    lazy = read_torch_checkpoint(path)  # lazy: nothing read yet
    np.testing.assert_array_equal(lazy["good"].load(), np.ones(4, dtype=np.float32))
    with pytest.raises(FormatError, match="CRC") as info:
        lazy["bad"].load()
    assert info.value.tensor == "bad"
    assert str(path) in str(info.value) and "'bad'" in str(info.value)


def test_bad_crc_outside_a_partial_view(tmp_path: Path) -> None:
    path = tmp_path / "crcview.bin"
    torch.save({"head": torch.arange(100, dtype=torch.float32)[:10]}, path)
    offset = _data_offset(path, _member(path, "/data/0")) + 50 * 4  # inside storage, outside the view
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="CRC"):
        read_torch_checkpoint(path)["head"].load()


def test_storage_size_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "numel.bin"
    torch.save({"w": torch.ones(5)}, path)
    name = _member(path, "/data.pkl")
    with zipfile.ZipFile(path) as zf:
        data = zf.read(name)
    assert data.count(b"K\x05t") == 1  # the persistent id's numel, closing its tuple
    _rewrite_zip(path, {name: data.replace(b"K\x05t", b"K\x06t")})
    with pytest.raises(FormatError, match="24 bytes.*holds 20 bytes"):
        read_torch_checkpoint(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (b"QK\x00K\x04\x85", b"QK\x02K\x04\x85", "reaches element"),  # view runs past storage
        (b"K\x01\x85", b"J\xff\xff\xff\xff\x85", "negative"),  # stride -1
    ],
)
def test_view_outside_storage_or_negative_stride(tmp_path: Path, old: bytes, new: bytes, message: str) -> None:
    path = tmp_path / "view.bin"
    torch.save({"w": torch.ones(4)}, path)
    name = _member(path, "/data.pkl")
    with zipfile.ZipFile(path) as zf:
        data = zf.read(name)
    assert data.count(old) == 1
    _rewrite_zip(path, {name: data.replace(old, new)})
    with pytest.raises(FormatError, match=message) as info:
        read_torch_checkpoint(path)
    assert info.value.tensor == "w"


def test_compressed_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "deflated.bin"
    torch.save({"w": torch.ones(64)}, path)
    _rewrite_zip(path, compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(FormatError, match="compressed"):
        read_torch_checkpoint(path)


# ------------------------------------------------------------------------------------------------
# writing


def _sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((4, 2, 3)).astype(np.float16),
        "bf16": rng.standard_normal((7,)).astype(BY_NAME["bfloat16"].numpy),
        "f64": rng.standard_normal((2, 2)),
        "i64": np.arange(-3, 300, dtype=np.int64),
        "i32": np.arange(70000, 70010, dtype=np.int32),
        "i16": np.arange(-4, 4, dtype=np.int16),
        "i8": np.arange(-128, 127, 50, dtype=np.int8),
        "u8": np.arange(256, dtype=np.uint8),
        "bool": np.array([True, False, False, True]),
        "f8": rng.standard_normal(6).astype(BY_NAME["float8_e4m3fn"].numpy),
        "f8_e5m2": rng.standard_normal((2, 3)).astype(BY_NAME["float8_e5m2"].numpy),
        "u16": np.arange(65530, 65536, dtype=np.uint16),
        "u32": np.arange(2**32 - 3, 2**32, dtype=np.uint32),
        "u64": np.arange(2**64 - 3, 2**64, dtype=np.uint64),
        "scalar": np.array(1.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "four_d": rng.standard_normal((2, 1, 3, 2)).astype(np.float32),
    }
    arrays["bf16"][0] = np.nan  # non-finite values must survive bit-exactly
    arrays["f16"].flat[0] = np.inf
    return arrays


def test_write_round_trip_through_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_pickle, "_WRITE_CHUNK", 7)  # force multi-chunk streaming
    arrays = _sample_arrays()
    path = tmp_path / "written.bin"
    write_torch_checkpoint(path, ((n, ArrayTensor(a)) for n, a in arrays.items()))
    loaded = torch.load(path, weights_only=True)
    assert list(loaded) == list(arrays)
    for name, array in arrays.items():
        t = loaded[name]
        assert str(t.dtype).removeprefix("torch.") == from_numpy(array.dtype).name, name
        assert tuple(t.shape) == array.shape, name
        assert _torch_bytes(t) == _np_bytes(array), name
        assert t.is_contiguous() and not t.requires_grad
    # torch's mmap loader relies on the 64-byte storage alignment the writer promises
    for name, t in torch.load(path, weights_only=True, mmap=True).items():
        assert _torch_bytes(t) == _np_bytes(arrays[name]), name


def test_write_round_trip_through_reader_and_alignment(tmp_path: Path) -> None:
    arrays = _sample_arrays()
    path = tmp_path / "pytorch_model.bin"
    write_torch_checkpoint(path, [(n, ArrayTensor(a)) for n, a in arrays.items()])
    lazy = read_torch_checkpoint(path)
    assert list(lazy) == list(arrays)
    for name, array in arrays.items():
        assert lazy[name].dtype == from_numpy(array.dtype)
        assert _np_bytes(lazy[name].load()) == _np_bytes(array), name
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert zf.read("pytorch_model/version") == b"3\n"
        assert zf.read("pytorch_model/byteorder") == b"little"
        assert zf.read("pytorch_model/.storage_alignment") == b"64"
        assert all(zf.getinfo(n).compress_type == zipfile.ZIP_STORED for n in names)
    for name in names:
        assert _data_offset(path, name) % 64 == 0, name
    assert not list(tmp_path.glob(".*.partial"))


def test_write_copies_a_read_checkpoint(tmp_path: Path) -> None:
    sd = {"t": torch.randn(4, 3).t(), "h": torch.randn(5).half(), "b": torch.randn(2, 2).bfloat16()}
    src = tmp_path / "src.bin"
    torch.save(sd, src)
    dst = tmp_path / "dst.bin"
    write_torch_checkpoint(dst, read_torch_checkpoint(src).items())
    for name, t in torch.load(dst, weights_only=True).items():
        assert _torch_bytes(t) == _torch_bytes(sd[name])
        assert tuple(t.shape) == tuple(sd[name].shape)


def test_write_refuses_duplicate_names_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "dup.bin"
    one = ArrayTensor(np.ones(2, dtype=np.float32))
    with pytest.raises(OutputError, match="twice"):
        write_torch_checkpoint(path, [("a", one), ("a", one)])
    assert list(tmp_path.iterdir()) == []


def test_reader_and_writer_never_import_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    src = tmp_path / "src.bin"
    torch.save({"w": torch.arange(6, dtype=torch.float32).view(2, 3).t()}, src)
    script = (
        "import sys; from pathlib import Path\n"
        "from llmstd.converters.torch_pickle import read_torch_checkpoint, write_torch_checkpoint\n"
        f"lazy = read_torch_checkpoint(Path({str(src)!r}))\n"
        "assert lazy['w'].load().tolist() == [[0, 3], [1, 4], [2, 5]]\n"
        f"write_torch_checkpoint(Path({str(tmp_path / 'out.bin')!r}), lazy.items())\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    expected = torch.tensor([[0.0, 3], [1, 4], [2, 5]])
    assert torch.equal(torch.load(tmp_path / "out.bin", weights_only=True)["w"], expected)
