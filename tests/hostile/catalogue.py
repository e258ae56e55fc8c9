"""A catalogue of malformed and malicious checkpoints, generated on demand.

Each case builds a checkpoint directory under a given root and names the typed llmstd error that
reading it must raise. The cases are shared by the catalogue test, the audit-hook test (no code
execution while reading) and the CLI test.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass
from pathlib import Path

from llmstd import errors

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt2"


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]  # root -> path to hand to llmstd.load
    error: type[errors.LlmstdError]
    message: str  # a fragment the error message must contain


# --------------------------------------------------------------------------------------------
# safetensors


def _hf_dir(root: Path) -> Path:
    d = root / "ckpt"
    d.mkdir(parents=True)
    shutil.copy(EXAMPLE / "config.json", d / "config.json")
    return d


def _valid_bytes() -> bytes:
    return (EXAMPLE / "model.safetensors").read_bytes()


def _split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _join(header: dict | bytes, body: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _st(mutate: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        d = _hf_dir(root)
        (d / "model.safetensors").write_bytes(mutate(_valid_bytes()))
        return d

    return build


def _header_edit(edit: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def mutate(data: bytes) -> bytes:
        header, body = _split(data)
        edit(header)
        return _join(header, body)

    return mutate


def _first_tensor(header: dict) -> str:
    return next(k for k in header if k != "__metadata__")


def _overlap(h: dict) -> None:
    names = [k for k in h if k != "__metadata__"]
    a, b = sorted(names, key=lambda k: h[k]["data_offsets"][0])[:2]
    size = h[b]["data_offsets"][1] - h[b]["data_offsets"][0]
    start = h[a]["data_offsets"][0]
    h[b]["data_offsets"] = [start, start + size]


def _gap(data: bytes) -> bytes:
    header, body = _split(data)
    for k in header:
        if k != "__metadata__":
            header[k]["data_offsets"] = [o + 16 for o in header[k]["data_offsets"]]
    return _join(header, b"\0" * 16 + body)


def _shape_mismatch(h: dict) -> None:
    name = _first_tensor(h)
    h[name]["shape"] = [h[name]["shape"][0] + 1] + h[name]["shape"][1:]


def _negative(h: dict) -> None:
    name = _first_tensor(h)
    h[name]["shape"] = [-1] + h[name]["shape"][1:]


def _rename_to_metadata(h: dict) -> None:
    name = _first_tensor(h)
    h["__metadata__"] = h.pop(name)


def _duplicate_keys(data: bytes) -> bytes:
    header, body = _split(data)
    name = _first_tensor(header)
    raw = json.dumps(header)
    entry = json.dumps({name: header[name]})[1:-1]
    return _join((raw[:-1] + ", " + entry + "}").encode(), body)


SAFETENSORS = [
    Case("st-header-length-huge", _st(lambda d: struct.pack("<Q", 2**62) + d[8:]), errors.FormatError, "header length"),
    Case("st-header-past-file", _st(lambda d: struct.pack("<Q", len(d)) + d[8:]), errors.FormatError, "header length"),
    Case("st-header-not-utf8", _st(lambda d: _join(b"{\xff\xfe}", b"")), errors.FormatError, "UTF-8"),
    Case("st-header-not-json", _st(lambda d: _join(b"{not json", b"")), errors.FormatError, "JSON"),
    Case("st-header-array", _st(lambda d: _join(b"[1, 2, 3]", b"")), errors.FormatError, "JSON object"),
    Case("st-duplicate-keys", _st(_duplicate_keys), errors.FormatError, "duplicate"),
    Case("st-overlapping-offsets", _st(_header_edit(_overlap)), errors.FormatError, "overlaps"),
    Case("st-gapped-offsets", _st(_gap), errors.FormatError, "gap"),
    Case("st-offsets-out-of-range",
         _st(_header_edit(lambda h: h[_first_tensor(h)].update(data_offsets=[0, 10**12]))),
         errors.FormatError, "outside"),
    Case("st-shape-vs-span", _st(_header_edit(_shape_mismatch)), errors.FormatError, "does not match shape"),
    Case("st-negative-dim", _st(_header_edit(_negative)), errors.FormatError, "non-negative"),
    Case("st-trailing-bytes", _st(lambda d: d + b"\0" * 64), errors.FormatError, "unexplained bytes"),
    Case("st-truncated-mid-tensor", _st(lambda d: d[: len(d) - 1000]), errors.FormatError, "outside"),
    Case("st-unknown-dtype", _st(_header_edit(lambda h: h[_first_tensor(h)].update(dtype="F13"))),
         errors.FormatError, "unknown dtype"),
    Case("st-tensor-named-metadata", _st(_header_edit(_rename_to_metadata)), errors.FormatError, "__metadata__"),
    Case("st-oversized-metadata",
         _st(_header_edit(lambda h: h.update(__metadata__={"k": "x" * (17 * 1024 * 1024)}))),
         errors.FormatError, "__metadata__"),
]


# --------------------------------------------------------------------------------------------
# sharded index


def _sharded(edit: Callable[[Path, dict], None]) -> Callable[[Path], Path]:
    """Split the example into two shards plus an index, then let ``edit`` corrupt it."""

    def build(root: Path) -> Path:
        d = _hf_dir(root)
        header, body = _split(_valid_bytes())
        header.pop("__metadata__", None)
        names = sorted(header, key=lambda k: header[k]["data_offsets"][0])
        halves = [names[: len(names) // 2], names[len(names) // 2:]]
        weight_map = {}
        for k, group in enumerate(halves, start=1):
            shard_header, chunks, offset = {}, [], 0
            for name in group:
                begin, end = header[name]["data_offsets"]
                shard_header[name] = dict(header[name], data_offsets=[offset, offset + end - begin])
                chunks.append(body[begin:end])
                offset += end - begin
            fname = f"model-0000{k}-of-00002.safetensors"
            (d / fname).write_bytes(_join(shard_header, b"".join(chunks)))
            weight_map.update({name: fname for name in group})
        index = {"metadata": {"total_size": len(body)}, "weight_map": weight_map}
        edit(d, index)
        if index is not None:
            (d / "model.safetensors.index.json").write_text(json.dumps(index))
        return d

    return build


def _point_first(target: str) -> Callable[[Path, dict], None]:
    def edit(d: Path, index: dict) -> None:
        index["weight_map"][next(iter(index["weight_map"]))] = target

    return edit


def _absent_from_shard(d: Path, index: dict) -> None:
    wm = index["weight_map"]
    name = next(k for k, v in wm.items() if v.startswith("model-00001"))
    wm[name] = "model-00002-of-00002.safetensors"


def _in_two_shards(d: Path, index: dict) -> None:
    # A tensor stored in both shards: copy shard 1 over shard 2's name set plus one of its own.
    shard1, shard2 = d / "model-00001-of-00002.safetensors", d / "model-00002-of-00002.safetensors"
    h1, b1 = _split(shard1.read_bytes())
    h2, b2 = _split(shard2.read_bytes())
    name = _first_tensor(h1)
    begin, end = h1[name]["data_offsets"]
    h2[name] = dict(h1[name], data_offsets=[len(b2), len(b2) + end - begin])
    shard2.write_bytes(_join(h2, b2 + b1[begin:end]))


INDEX = [
    Case("index-parent-path", _sharded(_point_first("../model-00001-of-00002.safetensors")), errors.UnsafeInputError,
         "plain file name"),
    Case("index-absolute-path", _sharded(_point_first("/etc/passwd")), errors.UnsafeInputError, "plain file name"),
    Case("index-missing-shard", _sharded(_point_first("model-00009-of-00009.safetensors")), errors.FormatError,
         "do not exist"),
    Case("index-tensor-absent-from-shard", _sharded(_absent_from_shard), errors.FormatError, "does not contain"),
    Case("index-tensor-in-two-shards", _sharded(_in_two_shards), errors.FormatError, "also contains"),
    Case("index-wrong-total-size",
         _sharded(lambda d, index: index["metadata"].update(total_size=index["metadata"]["total_size"] + 4)),
         errors.FormatError, "total_size"),
]


def _malformed_index(root: Path) -> Path:
    d = _sharded(lambda d, index: None)(root)
    (d / "model.safetensors.index.json").write_text('{"weight_map": {"a": ')
    return d


INDEX.append(Case("index-malformed-json", _malformed_index, errors.FormatError, "invalid JSON"))


# --------------------------------------------------------------------------------------------
# torch pickle (.bin): built without torch, with the stdlib pickle and zipfile modules


class _Payload:
    """Pickles to a call of os.system: what a malicious checkpoint does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (self.command,))


def _bin(pickle_bytes: Callable[[Path], bytes], extra: dict[str, bytes] | None = None) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        d = _hf_dir(root)
        with zipfile.ZipFile(d / "pytorch_model.bin", "w") as zf:
            zf.writestr("archive/data.pkl", pickle_bytes(root))
            zf.writestr("archive/byteorder", "little")
            zf.writestr("archive/version", "3\n")
            for name, data in (extra or {}).items():
                zf.writestr(f"archive/{name}", data)
        return d

    return build


def canary_path(root: Path) -> Path:
    return root / "CANARY"


def _reduce_payload(root: Path) -> bytes:
    import pickle

    return pickle.dumps({"x": _Payload(f"touch {canary_path(root)}")}, protocol=2)


def _truncated_payload(root: Path) -> bytes:
    return _reduce_payload(root)[:-7]


def _torchscript(root: Path) -> Path:
    return _bin(lambda r: b"\x80\x02}q\x00.", {"constants.pkl": b"\x80\x02).", "code/__torch__.py": b"x = 1\n"})(root)


def _legacy_tar(root: Path) -> Path:
    import tarfile

    d = _hf_dir(root)
    with tarfile.open(d / "pytorch_model.bin", "w") as tf:
        for name in ("sys_info", "pickle", "tensors", "storages"):
            path = root / name
            path.write_bytes(b"\x80\x02}q\x00.")
            tf.add(path, arcname=name)
    return d


def _real_bin(root: Path) -> Path:
    """A real pytorch_model.bin written by llmstd's own writer from the example weights."""
    from llmstd.converters import torch_pickle, safetensors_io

    d = _hf_dir(root)
    sf = safetensors_io.open_file(EXAMPLE / "model.safetensors")
    torch_pickle.write_torch_checkpoint(d / "pytorch_model.bin", list(sf.tensors.items()))
    return d


def _bad_crc(root: Path) -> Path:
    d = _real_bin(root)
    path = d / "pytorch_model.bin"
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if "/data/" in i.filename and i.file_size > 16)
        local = info.header_offset
        name_len, extra_len = struct.unpack("<HH", data[local + 26: local + 30])
        start = local + 30 + name_len + extra_len
    data[start + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    return d


def _storage_size_mismatch(root: Path) -> Path:
    d = _real_bin(root)
    path = d / "pytorch_model.bin"
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    pkl_name = next(n for n in members if n.endswith("data.pkl"))
    pkl = members[pkl_name]
    # Shrink one storage member by 4 bytes: its byte size no longer equals numel x itemsize.
    victim = next(n for n in members if "/data/" in n and len(members[n]) > 16)
    members[victim] = members[victim][:-4]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, pkl if name == pkl_name else data)
    return d


PICKLE = [
    Case("pickle-reduce-payload", _bin(_reduce_payload), errors.UnsafeInputError, "system"),
    Case("pickle-payload-truncated", _bin(_truncated_payload), errors.LlmstdError, ""),
    Case("pickle-torchscript", _torchscript, errors.UnsafeInputError, "TorchScript"),
    Case("pickle-legacy-tar", _legacy_tar, errors.FormatError, ""),
    Case("pickle-bad-zip-crc", _bad_crc, errors.FormatError, "CRC"),
    Case("pickle-storage-size-mismatch", _storage_size_mismatch, errors.FormatError, ""),
]


# --------------------------------------------------------------------------------------------
# config.json


def _config(edit: Callable[[dict], None]) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        d = _hf_dir(root)
        shutil.copy(EXAMPLE / "model.safetensors", d / "model.safetensors")
        config = json.loads((d / "config.json").read_text())
        edit(config)
        (d / "config.json").write_text(json.dumps(config))
        return d

    return build


CONFIG = [
    Case("config-missing-field", _config(lambda c: c.pop("n_embd")), errors.ConfigError, "n_embd"),
    Case("config-wrong-type", _config(lambda c: c.update(n_layer="2")), errors.ConfigError, "num_layers"),
    Case("config-huge-layer-count", _config(lambda c: c.update(n_layer=10**12)), errors.ConfigError, "num_layers"),
    Case("config-contradicts-shapes", _config(lambda c: c.update(n_embd=64)), errors.MappingError, "config implies"),
    Case("config-not-an-object", _config(lambda c: None), errors.FormatError, "object"),
]


def _config_array(root: Path) -> Path:
    d = _config(lambda c: None)(root)
    (d / "config.json").write_text("[1, 2]")
    return d


CONFIG[-1] = Case("config-not-an-object", _config_array, errors.FormatError, "object")

# --------------------------------------------------------------------------------------------
# HDF5 (tf_model.h5) and tf.train checkpoints: written by llmstd from the example, then damaged


def _converted(root: Path, to: str) -> Path:
    import llmstd

    d = root / "ckpt"
    llmstd.convert(EXAMPLE, d, to=to)
    return d


def _h5_first_dataset(f: Any) -> str:
    import h5py

    found: list[str] = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and not found else None)
    return found[0]


def _h5(edit: Callable[[Any, str, Path], None]) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        import h5py

        d = _converted(root, "tf-h5")
        with h5py.File(d / "tf_model.h5", "r+") as f:
            name = _h5_first_dataset(f)
            edit(f, name, root)
        return d

    return build


def _external_link(f: Any, name: str, root: Path) -> None:
    import h5py

    with h5py.File(root / "host.h5", "w") as host:
        host.create_dataset("secret", data=f[name][()])
    del f[name]
    f[name] = h5py.ExternalLink(str(root / "host.h5"), "secret")


def _soft_link(f: Any, name: str, root: Path) -> None:
    import h5py

    f["elsewhere"] = f[name][()]
    del f[name]
    f[name] = h5py.SoftLink("/elsewhere")


def _virtual(f: Any, name: str, root: Path) -> None:
    import h5py

    data = f[name][()]
    with h5py.File(root / "source.h5", "w") as src:
        src.create_dataset("x", data=data)
    layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
    layout[...] = h5py.VirtualSource(str(root / "source.h5"), "x", shape=data.shape)
    del f[name]
    f.create_virtual_dataset(name, layout)


def _shape_bomb(f: Any, name: str, root: Path) -> None:
    dtype = f[name].dtype
    del f[name]
    bomb = f.create_dataset(name, shape=(1 << 20, 1 << 20), dtype=dtype, chunks=(64, 64), compression="gzip")
    bomb[0:64, 0:64] = 1


H5 = [
    Case("h5-external-link", _h5(_external_link), errors.UnsafeInputError, "external link"),
    Case("h5-soft-link", _h5(_soft_link), errors.UnsafeInputError, "soft link"),
    Case("h5-virtual-dataset", _h5(_virtual), errors.UnsafeInputError, "virtual dataset"),
    Case("h5-shape-bomb", _h5(_shape_bomb), errors.FormatError, "bomb"),
]


def _ckpt(edit: Callable[[Path], None]) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        from llmstd.converters import tf_checkpoint

        d = _converted(root, "tf-ckpt")
        prefix = tf_checkpoint.find_prefix(d)
        assert prefix is not None
        edit(prefix)
        return d

    return build


def _data_file(prefix: Path) -> Path:
    from llmstd.converters import tf_checkpoint

    return prefix.parent / tf_checkpoint.data_file_name(prefix.name, 0, 1)


def _truncate_data(prefix: Path) -> None:
    data = _data_file(prefix)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _flip_data_byte(prefix: Path) -> None:
    data = _data_file(prefix)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    data.write_bytes(bytes(raw))


def _shard_out_of_range(prefix: Path) -> None:
    from llmstd.converters import tf_checkpoint

    index = Path(str(prefix) + ".index")
    items = tf_checkpoint.read_table(index)
    key, value = items[1]
    items[1] = (key, value + tf_checkpoint._enc_field(3, 0, 3))  # shard_id = 3 of 1 (the last field wins)
    tf_checkpoint._write_table(index, items)


CKPT = [
    Case("ckpt-offset-past-end", _ckpt(_truncate_data), errors.FormatError, "past the end"),
    Case("ckpt-crc32c-mismatch", _ckpt(_flip_data_byte), errors.FormatError, "CRC-32C"),
    Case("ckpt-shard-id-out-of-range", _ckpt(_shard_out_of_range), errors.FormatError, "out of range"),
]

CASES: list[Case] = [*SAFETENSORS, *INDEX, *PICKLE, *CONFIG, *H5, *CKPT]
