"""PyTorch ``torch.save`` checkpoints (``pytorch_model.bin``): a reader and a writer that never run
code from the file and never import torch.

Owns: the zip layout torch>=1.6 writes (``<prefix>/data.pkl`` + ``<prefix>/data/<key>`` storages),
a restricted unpickler whose allowlist maps torch's rebuild functions and storage types to inert
stand-ins, and a hand-written protocol-2 pickle emitter so llmstd can produce files that
``torch.load(weights_only=True)`` accepts.

Reading is lazy: each tensor is a :class:`~llmstd.tensors.FileSliceTensor` over the stored zip
member (memory-mapped on load) or, for non-contiguous views, a :class:`~llmstd.tensors.DerivedTensor`
that loads its storage and copies the strided view out. Each storage member's ZIP CRC-32 is checked
when it is first loaded.

Limitations (by design): compressed zip members are refused (torch never compresses storages, and
memory-mapping needs stored bytes); legacy pre-1.6 pickle/tar files and TorchScript archives are
refused; quantized, sparse, complex and other exotic tensor kinds are refused; tensors that share a
storage are read correctly but the writer gives every tensor its own storage.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from llmstd.dtypes import BY_NAME, DType
from llmstd.errors import FormatError, OutputError, UnsafeInputError
from llmstd.lazy_numpy import np
from llmstd.tensors import DerivedTensor, FileSliceTensor, LazyTensor

__all__ = ["read_torch_checkpoint", "write_torch_checkpoint"]

# Legacy typed-storage class names (used with _rebuild_tensor_v2). Newer dtypes (float8, uint16..64)
# are pickled as _rebuild_tensor_v3(UntypedStorage, ..., dtype) instead.
_STORAGE_CLASSES = {
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "DoubleStorage": "float64",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
_STORAGE_CLASS_FOR = {dtype: cls for cls, dtype in _STORAGE_CLASSES.items()}

_CRC_CHUNK = 16 << 20  # bytes hashed per zlib.crc32 call: bounded work per call, no big copies
_WRITE_CHUNK = 16 << 20
_ALIGNMENT = 64  # torch pads every record so its data starts at a multiple of 64 (mmap-friendly)
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # zip local file header, 30 bytes

# What torch.save(_use_new_zipfile_serialization=False) starts with: pickle of its magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."

_SAFE_HINT = (
    "llmstd never runs code from checkpoints — convert it with a trusted tool or get a safetensors copy"
)
_LEGACY_HINT = "re-save it with torch>=1.6 (torch.save default) or as safetensors"


# --------------------------------------------------------------------------------------------------
# Inert stand-ins for the torch objects a state-dict pickle mentions.


class _Inert:
    """Base of every stand-in: pickle's BUILD opcode may not set attributes on it.

    Without this, BUILD's "slot state" path would ``setattr`` on the shared stand-ins (e.g. change
    what ``torch.FloatStorage`` means for every later load in this process).
    """

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise FormatError(f"the pickle tries to set state on {type(self).__name__.lstrip('_')}")


class _StorageType(_Inert):
    """Stand-in for ``torch.FloatStorage``-style classes, ``torch.UntypedStorage`` and dtypes."""

    __slots__ = ("dtype", "label", "is_dtype")

    def __init__(self, dtype: DType, label: str, is_dtype: bool = False) -> None:
        self.dtype = dtype  # for UntypedStorage: uint8, so numel counts bytes
        self.label = label
        self.is_dtype = is_dtype  # torch.float8_e4m3fn & co: also the dtype argument of v3


class _Marker(_Inert):
    """Stand-in for a class that is only ever *named* (``torch.Tensor``, ``Parameter``)."""

    __slots__ = ("label",)

    def __init__(self, label: str) -> None:
        self.label = label


class _OrderedDict(dict):  # type: ignore[type-arg]
    """Stand-in for ``collections.OrderedDict`` (plain dicts keep order anyway).

    State dicts carry a ``_metadata`` attribute that pickle restores with BUILD; a no-op
    ``__setstate__`` makes BUILD ignore it instead of setting attributes on our object.
    """

    def __setstate__(self, state: object) -> None:
        pass


class _Storage(_Inert):
    """One ``<prefix>/data/<key>`` zip member, as the persistent id describes it."""

    __slots__ = ("key", "dtype", "numel", "data_offset", "nbytes", "crc", "member", "verified")

    def __init__(self, key: str, dtype: DType, numel: int, info: _Member) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data_offset = info.data_offset
        self.nbytes = info.size
        self.crc = info.crc
        self.member = info.name
        self.verified: tuple[int, int] | None = None  # (size, mtime_ns) of the file when CRC passed


class _TensorRef(_Inert):
    """What ``_rebuild_tensor_v2/v3`` return here: a view of a storage, not yet named.

    ``offset``, ``shape`` and ``stride`` count elements of ``dtype``, which differs from the
    storage's own dtype only for v3 (bytes of an untyped storage reinterpreted).
    """

    __slots__ = ("storage", "dtype", "offset", "shape", "stride")

    def __init__(
        self, storage: _Storage, dtype: DType, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage = storage
        self.dtype = dtype
        self.offset = offset
        self.shape = shape
        self.stride = stride


class _Member:  # never reaches the unpickler
    __slots__ = ("name", "data_offset", "size", "crc")

    def __init__(self, name: str, data_offset: int, size: int, crc: int) -> None:
        self.name = name
        self.data_offset = data_offset
        self.size = size
        self.crc = crc


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int for v in value):
        raise FormatError(f"tensor {what} must be a tuple of ints, got {value!r}")
    return value


def _tensor_ref(
    storage: object, dtype: DType | None, storage_offset: object, size: object, stride: object, metadata: object
) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise FormatError(f"tensor rebuild got {type(storage).__name__} instead of a storage")
    if type(storage_offset) is not int:
        raise FormatError(f"tensor storage offset must be an int, got {storage_offset!r}")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if metadata:
        # e.g. a negative/conjugate bit: the stored bytes would not mean what they say.
        raise FormatError(f"tensor carries metadata {metadata!r} that llmstd cannot apply")
    if dtype is None:
        dtype = storage.dtype
    elif storage.nbytes % dtype.itemsize:
        raise FormatError(f"storage '{storage.key}' of {storage.nbytes} bytes is not a whole number of {dtype.name}")
    return _TensorRef(storage, dtype, storage_offset, shape, strides)


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    backward_hooks: object,
    metadata: object = None,
) -> _TensorRef:
    return _tensor_ref(storage, None, storage_offset, size, stride, metadata)


def _rebuild_tensor_v3(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    backward_hooks: object,
    dtype: object,
    metadata: object = None,
) -> _TensorRef:
    # torch>=2.1 form for dtypes without a legacy storage class: untyped bytes + a dtype object.
    if not (isinstance(dtype, _StorageType) and dtype.is_dtype):
        raise FormatError(f"_rebuild_tensor_v3 got {dtype!r} where a dtype belongs")
    return _tensor_ref(storage, dtype.dtype, storage_offset, size, stride, metadata)


def _rebuild_parameter(data: object, requires_grad: object, backward_hooks: object) -> object:
    return data  # a Parameter is just its tensor for conversion purposes


def _rebuild_parameter_with_state(data: object, requires_grad: object, backward_hooks: object, state: object) -> object:
    return data  # python attributes set on the Parameter are irrelevant to its values


class _Callable(_Inert):
    """An allowlisted torch function; wrapping it keeps BUILD from rewriting its ``__defaults__``."""

    __slots__ = ("fn", "label")

    def __init__(self, fn: Callable[..., object], label: str) -> None:
        self.fn = fn
        self.label = label

    def __call__(self, *args: object) -> object:
        return self.fn(*args)


_REBUILD_TENSOR = _Callable(_rebuild_tensor_v2, "torch._utils._rebuild_tensor_v2")
_REBUILD_TENSOR_V3 = _Callable(_rebuild_tensor_v3, "torch._utils._rebuild_tensor_v3")
_REBUILD_PARAMETER = _Callable(_rebuild_parameter, "torch._utils._rebuild_parameter")
_REBUILD_PARAMETER_STATE = _Callable(_rebuild_parameter_with_state, "torch._utils._rebuild_parameter_with_state")
_TENSOR_REBUILDS = (_REBUILD_TENSOR, _REBUILD_TENSOR_V3, _REBUILD_PARAMETER, _REBUILD_PARAMETER_STATE)
_TENSOR = _Marker("torch.Tensor")
_PARAMETER = _Marker("torch.nn.parameter.Parameter")


def _rebuild_from_type_v2(func: object, new_type: object, args: object, state: object) -> object:
    # torch uses this for tensors with python attributes; anything beyond a plain tensor or
    # Parameter would need the subclass's own code, which we never run.
    if func not in _TENSOR_REBUILDS:
        raise UnsafeInputError("_rebuild_from_type_v2 wraps something other than a tensor rebuild")
    if new_type is not _TENSOR and new_type is not _PARAMETER:
        raise UnsafeInputError("_rebuild_from_type_v2 asks for a tensor subclass other than Tensor/Parameter")
    if not isinstance(args, tuple):
        raise FormatError("_rebuild_from_type_v2 arguments are not a tuple")
    return func(*args)  # type: ignore[operator]


_ALLOWED: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): _OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _REBUILD_TENSOR,
    ("torch._utils", "_rebuild_tensor_v3"): _REBUILD_TENSOR_V3,
    ("torch._utils", "_rebuild_parameter"): _REBUILD_PARAMETER,
    ("torch._utils", "_rebuild_parameter_with_state"): _REBUILD_PARAMETER_STATE,
    ("torch._tensor", "_rebuild_from_type_v2"): _Callable(_rebuild_from_type_v2, "torch._tensor._rebuild_from_type_v2"),
    # pre-1.9 torch pickled it under this module name
    ("torch.tensor", "_rebuild_from_type_v2"): _Callable(_rebuild_from_type_v2, "torch.tensor._rebuild_from_type_v2"),
    ("torch", "Tensor"): _TENSOR,
    ("torch._tensor", "Tensor"): _TENSOR,
    ("torch.nn.parameter", "Parameter"): _PARAMETER,
    ("torch", "UntypedStorage"): _StorageType(BY_NAME["uint8"], "torch.UntypedStorage"),
    ("torch.storage", "UntypedStorage"): _StorageType(BY_NAME["uint8"], "torch.storage.UntypedStorage"),
}
_ALLOWED.update(
    {("torch", cls): _StorageType(BY_NAME[dt], f"torch.{cls}") for cls, dt in _STORAGE_CLASSES.items()}
)
# dtype objects (GLOBAL 'torch float8_e4m3fn'): v3's dtype argument, and in some torch 2.x releases
# the storage type of a persistent id.
_ALLOWED.update({("torch", name): _StorageType(dt, f"torch.{name}", is_dtype=True) for name, dt in BY_NAME.items()})


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allowlisted globals, to inert stand-ins; everything else is refused."""

    def __init__(self, file: Any, path: Path, storages: Callable[[object], _Storage]) -> None:
        super().__init__(file)
        self._path = path
        self._storages = storages

    def find_class(self, module: str, name: str) -> object:
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        qualified = f"{module}.{name}"
        if (module == "torch" and name.endswith("Storage")) or (
            module == "torch._utils" and name.startswith("_rebuild_")
        ):
            # Known torch machinery (complex/quantized storages, sparse or meta tensors): not a
            # threat, just nothing llmstd can convert.
            raise FormatError(
                f"unsupported tensor kind: the pickle uses {qualified}",
                file=self._path,
                hint="only dense real-valued tensors are supported; convert to a plain state dict first",
            )
        # pickle records os.system as posix.system and (protocol<3) builtins as __builtin__.
        alias = {"posix": "os", "nt": "os", "__builtin__": "builtins"}.get(module)
        shown = f"{qualified} (that is, {alias}.{name})" if alias else qualified
        raise UnsafeInputError(
            f"refusing to unpickle global {qualified}",
            file=self._path,
            hint=f"this file tries to call {shown} while loading; {_SAFE_HINT}",
        )

    def persistent_load(self, pid: object) -> _Storage:
        return self._storages(pid)


# --------------------------------------------------------------------------------------------------
# Reading


def read_torch_checkpoint(path: Path) -> dict[str, LazyTensor]:
    """Map of state-dict name -> lazy tensor. Raises llmstd.errors typed errors."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
            file_size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise FormatError(f"cannot read file ({exc.strerror or exc})", file=path) from None
    if not head.startswith(b"PK"):
        _refuse_non_zip(path, head)

    try:
        with zipfile.ZipFile(path) as zf:
            prefix = _archive_prefix(zf, path)
            byteorder = _read_small(zf, f"{prefix}byteorder", path, default="little")
            if byteorder not in ("little", "big"):
                raise FormatError(f"byteorder record says '{byteorder}', expected 'little' or 'big'", file=path)
            members = _storage_members(zf, prefix, path, file_size)
            pickle_bytes = _read_member(zf, f"{prefix}data.pkl", path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error,
            NotImplementedError) as exc:
        # zipfile reports damaged archives through many exception types (a lying offset surfaces as
        # an OSError from seek, a bad header as struct.error); all mean the same to the user.
        raise FormatError(
            f"damaged zip archive ({type(exc).__name__}: {exc})", file=path,
            hint="re-download or re-save the checkpoint",
        ) from None

    storages: dict[str, _Storage] = {}

    def load_storage(pid: object) -> _Storage:
        # torch's persistent id: ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise FormatError(f"unexpected persistent id {pid!r}", file=path)
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise FormatError(f"persistent id names {storage_type!r}, not a storage type", file=path)
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise FormatError(f"malformed storage reference {pid!r}", file=path)
        member = members.get(key)
        if member is None:
            raise FormatError(f"storage '{key}' is referenced but {prefix}data/{key} is missing", file=path)
        if numel * storage_type.dtype.itemsize != member.size:
            raise FormatError(
                f"storage '{key}' declares {numel} x {storage_type.dtype.name} "
                f"({numel * storage_type.dtype.itemsize} bytes) but its zip member holds {member.size} bytes",
                file=path,
                hint="the checkpoint is damaged; re-download or re-save it",
            )
        existing = storages.get(key)
        if existing is not None:
            if existing.dtype != storage_type.dtype:
                raise FormatError(f"storage '{key}' is referenced with two storage types", file=path)
            return existing
        storages[key] = _Storage(key, storage_type.dtype, numel, member)
        return storages[key]

    try:
        obj = _RestrictedUnpickler(io.BytesIO(pickle_bytes), path, load_storage).load()
    except (FormatError, UnsafeInputError) as exc:
        if exc.file is None:  # raised by a stand-in, which does not know the file
            exc.file = str(path)
            exc.args = (str(exc),)
        raise
    except (EOFError, pickle.UnpicklingError) as exc:
        raise FormatError(f"data.pkl is truncated or corrupt ({exc})", file=path, hint=_LEGACY_HINT) from None
    except Exception as exc:  # anything the pickle VM raised on malformed input
        raise FormatError(f"data.pkl could not be decoded ({type(exc).__name__}: {exc})", file=path) from None

    state = _unwrap_state_dict(obj, path)
    return {name: _lazy_tensor(path, name, ref, byteorder == "big") for name, ref in state.items()}


def _refuse_non_zip(path: Path, head: bytes) -> None:
    if head.startswith(_LEGACY_MAGIC):
        raise FormatError("legacy (pre-1.6) torch.save format is not supported", file=path, hint=_LEGACY_HINT)
    if head[257:262] == b"ustar":
        raise FormatError("legacy tar-based torch.save format is not supported", file=path, hint=_LEGACY_HINT)
    if head.startswith(b"\x80"):
        raise FormatError(
            "a bare pickle stream, not a torch zip checkpoint (not unpickled)", file=path, hint=_LEGACY_HINT
        )
    raise FormatError("not a zip archive, so not a torch>=1.6 checkpoint", file=path)


def _archive_prefix(zf: zipfile.ZipFile, path: Path) -> str:
    names = zf.namelist()
    prefixes = {n.split("/", 1)[0] for n in names if "/" in n}
    for prefix in prefixes:
        if f"{prefix}/constants.pkl" in names or any(n.startswith(f"{prefix}/code/") for n in names):
            raise UnsafeInputError(
                "TorchScript archive: contains code",
                file=path,
                hint=f"TorchScript runs its own code; {_SAFE_HINT}",
            )
    pickles = [n for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)]
    if len(pickles) != 1:
        found = "no" if not pickles else f"{len(pickles)}"
        raise FormatError(
            f"zip archive has {found} '<prefix>/data.pkl' records, so it is not a torch checkpoint", file=path
        )
    return pickles[0][: -len("data.pkl")]


def _read_member(zf: zipfile.ZipFile, name: str, path: Path) -> bytes:
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        raise FormatError(
            f"zip member '{name}' is compressed; torch never compresses checkpoints",
            file=path,
            hint="re-save it with torch.save (or re-zip with 'zip -0')",
        )
    return zf.read(info)  # zipfile checks the CRC of small records itself


def _read_small(zf: zipfile.ZipFile, name: str, path: Path, default: str) -> str:
    if name not in zf.NameToInfo:
        return default  # torch 1.6-1.x wrote no byteorder record; those files are little-endian
    try:
        return _read_member(zf, name, path).decode("ascii").strip()
    except UnicodeDecodeError:
        raise FormatError(f"record '{name}' is not ASCII text", file=path) from None


def _storage_members(zf: zipfile.ZipFile, prefix: str, path: Path, file_size: int) -> dict[str, _Member]:
    """Absolute data offset, size and CRC of every ``<prefix>data/<key>`` member."""
    members: dict[str, _Member] = {}
    data_dir = f"{prefix}data/"
    with open(path, "rb") as fh:
        for info in zf.infolist():
            if not info.filename.startswith(data_dir) or info.is_dir():
                continue
            if info.compress_type != zipfile.ZIP_STORED:
                raise FormatError(
                    f"storage member '{info.filename}' is compressed; llmstd memory-maps storages and torch "
                    "never compresses them",
                    file=path,
                    hint="re-save it with torch.save",
                )
            # The central directory's extra field may differ from the local one (torch pads the
            # local one for alignment), so the data offset must come from the local header.
            fh.seek(info.header_offset)
            raw = fh.read(_LOCAL_HEADER.size)
            if len(raw) != _LOCAL_HEADER.size:
                raise FormatError(
                    "zip local header runs past the end of the file", file=path, offset=info.header_offset
                )
            sig, _ver, _flags, method, _t, _d, _crc, _cs, _us, name_len, extra_len = _LOCAL_HEADER.unpack(raw)
            if sig != b"PK\x03\x04" or method != zipfile.ZIP_STORED:
                raise FormatError(f"bad local header for '{info.filename}'", file=path, offset=info.header_offset)
            if fh.read(name_len).decode("utf-8", "replace") != info.orig_filename:
                raise FormatError(
                    f"local header name does not match central directory for '{info.filename}'",
                    file=path,
                    offset=info.header_offset,
                )
            data_offset = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            if data_offset + info.file_size > file_size:
                raise FormatError(
                    f"storage '{info.filename}' runs past the end of the file; the file is truncated",
                    file=path,
                    offset=data_offset,
                )
            key = info.filename[len(data_dir) :]
            members[key] = _Member(info.filename, data_offset, info.file_size, info.CRC)
    return members


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, _TensorRef]:
    if not isinstance(obj, dict):
        raise FormatError(f"top-level object is a {type(obj).__name__}, not a state dict", file=path)
    has_tensors = any(isinstance(v, _TensorRef) for v in obj.values())
    if not has_tensors:
        # Training checkpoints wrap the weights: {"state_dict": {...}, "epoch": 3} or {"model": {...}}.
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    tensors: dict[str, _TensorRef] = {}
    for name, value in obj.items():
        if not isinstance(value, _TensorRef):
            continue  # ints, strings, nested non-tensor config: not weights, safely ignored
        if not isinstance(name, str):
            raise FormatError(f"state-dict key {name!r} is not a string", file=path)
        tensors[name] = value
    if obj and not tensors:
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise FormatError(f"no tensors at the top level of the checkpoint (keys: {keys})", file=path)
    return tensors


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


def _is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    if math.prod(shape) == 0:
        return True
    # A size-1 dimension's stride is never used to address anything, so it may be arbitrary.
    return all(s == c for d, s, c in zip(shape, stride, _contiguous_strides(shape)) if d != 1)


def _lazy_tensor(path: Path, name: str, ref: _TensorRef, big_endian: bool) -> LazyTensor:
    storage, dtype, shape, stride, offset = ref.storage, ref.dtype, ref.shape, ref.stride, ref.offset
    storage_numel = storage.nbytes // dtype.itemsize  # in elements of the view's dtype
    if len(shape) != len(stride):
        raise FormatError(f"size {shape} and stride {stride} have different ranks", file=path, tensor=name)
    if any(d < 0 for d in shape) or any(s < 0 for s in stride) or offset < 0:
        raise FormatError(
            f"negative size, stride or offset (size {shape}, stride {stride}, offset {offset})",
            file=path,
            tensor=name,
        )
    numel = math.prod(shape)
    # Last element addressed, +1: must fit inside the storage the persistent id declared.
    extent = offset + sum((d - 1) * s for d, s in zip(shape, stride)) + 1 if numel else offset
    if extent > storage_numel:
        raise FormatError(
            f"view (offset {offset}, size {shape}, stride {stride}) reaches element {extent - 1} "
            f"of a {storage_numel}-element storage",
            file=path,
            tensor=name,
        )
    verify = _crc_checker(path, name, storage)
    itemsize = dtype.itemsize
    if _is_contiguous(shape, stride):
        # Only the view's bytes are mapped, even when the storage is larger.
        return FileSliceTensor(
            path, storage.data_offset + offset * itemsize, shape, dtype, big_endian=big_endian, verify=verify
        )
    whole = FileSliceTensor(path, storage.data_offset, (storage_numel,), dtype, big_endian=big_endian, verify=verify)
    byte_strides = tuple(s * itemsize for s in stride)

    def gather(arrays: list[np.ndarray]) -> np.ndarray:
        # as_strided goes through __array_interface__, which loses ml_dtypes types (bfloat16,
        # float8), so stride over same-width unsigned ints and reinterpret the copy.
        raw = arrays[0][offset:].view(f"u{itemsize}")
        view = np.lib.stride_tricks.as_strided(raw, shape=shape, strides=byte_strides, writeable=False)
        return np.array(view, copy=True).view(dtype.numpy)  # owns its bytes: the map can be released

    return DerivedTensor([whole], gather, shape, dtype, f"strided view of torch storage '{storage.key}'")


def _crc_checker(path: Path, name: str, storage: _Storage) -> Callable[[memoryview], None]:
    def verify(view: memoryview) -> None:
        stat = os.stat(path)
        signature = (stat.st_size, stat.st_mtime_ns)
        if storage.verified == signature:
            return  # another view of this storage already checked these exact file bytes
        if len(view) == storage.nbytes:
            crc = 0
            for start in range(0, len(view), _CRC_CHUNK):
                crc = zlib.crc32(view[start : start + _CRC_CHUNK], crc)
        else:
            crc = _crc_of_file_range(path, storage.data_offset, storage.nbytes)  # a view of part of it
        if crc != storage.crc:
            raise FormatError(
                f"CRC-32 mismatch in zip member '{storage.member}' (expected {storage.crc:08x}, got {crc:08x}); "
                "the file is corrupted",
                file=path,
                tensor=name,
                hint="re-download or re-save the checkpoint",
            )
        storage.verified = signature

    return verify


def _crc_of_file_range(path: Path, offset: int, size: int) -> int:
    crc = 0
    with open(path, "rb") as fh:
        fh.seek(offset)
        while size:
            chunk = fh.read(min(size, _CRC_CHUNK))
            if not chunk:
                raise FormatError("file ended inside a storage member", file=path, offset=fh.tell())
            crc = zlib.crc32(chunk, crc)
            size -= len(chunk)
    return crc


# --------------------------------------------------------------------------------------------------
# Writing: the same pickle structure and zip layout torch.save produces, without torch.


class _PickleWriter:
    """Emits the protocol-2 opcodes torch.save uses for a flat state dict."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")  # PROTO 2
        self._memo: dict[object, int] = {}

    def _memoized(self, key: object, emit: Callable[[], None]) -> None:
        # Repeated globals/strings are stored once and fetched with BINGET, as pickle itself does.
        if key in self._memo:
            self._get(self._memo[key])
            return
        emit()
        index = len(self._memo)
        self._memo[key] = index
        self.out += b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)

    def _get(self, index: int) -> None:
        self.out += b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)

    def global_(self, module: str, name: str) -> None:
        self._memoized(("global", module, name), lambda: self.out.extend(f"c{module}\n{name}\n".encode("ascii")))

    def string(self, text: str, memo: bool = False) -> None:
        def emit() -> None:
            data = text.encode("utf-8")
            self.out += b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE

        if memo:
            self._memoized(("str", text), emit)
        else:
            emit()

    def int_(self, value: int) -> None:
        if 0 <= value < 0x100:
            self.out += b"K" + bytes([value])  # BININT1
        elif 0 <= value < 0x10000:
            self.out += b"M" + struct.pack("<H", value)  # BININT2
        elif -(2**31) <= value < 2**31:
            self.out += b"J" + struct.pack("<i", value)  # BININT
        else:
            data = value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)
            self.out += b"\x8a" + bytes([len(data)]) + data  # LONG1

    def int_tuple(self, values: tuple[int, ...]) -> None:
        if not values:
            self.out += b")"  # EMPTY_TUPLE
            return
        if len(values) > 3:
            self.out += b"("  # MARK
        for v in values:
            self.int_(v)
        self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(values), b"t")

    def tensor(self, key: str, dtype: DType, shape: tuple[int, ...]) -> None:
        # Legacy dtypes: _rebuild_tensor_v2(persistent_load(('storage', torch.FloatStorage, key, 'cpu',
        #     numel)), 0, size, stride, False, OrderedDict()); newer ones, as torch does:
        # _rebuild_tensor_v3(<UntypedStorage of nbytes>, 0, size, stride, False, OrderedDict(), dtype)
        legacy = _STORAGE_CLASS_FOR.get(dtype.name)
        self.global_("torch._utils", "_rebuild_tensor_v2" if legacy else "_rebuild_tensor_v3")
        self.out += b"(("
        self.string("storage", memo=True)
        if legacy:
            self.global_("torch", legacy)
        else:
            self.global_("torch.storage", "UntypedStorage")
        self.string(key)
        self.string("cpu", memo=True)
        self.int_(math.prod(shape) * (1 if legacy else dtype.itemsize))
        self.out += b"tQ"  # TUPLE, BINPERSID
        self.int_(0)
        self.int_tuple(shape)
        self.int_tuple(_contiguous_strides(shape))
        self.out += b"\x89"  # NEWFALSE: requires_grad
        self.global_("collections", "OrderedDict")
        self.out += b")R"  # EMPTY_TUPLE, REDUCE: empty backward hooks
        if not legacy:
            self.global_("torch", dtype.name)
        self.out += b"tR"  # TUPLE, REDUCE


def write_torch_checkpoint(path: Path, tensors: Iterable[tuple[str, LazyTensor]]) -> None:
    """Write ``tensors`` as a zip checkpoint that ``torch.load(path, weights_only=True)`` reads.

    Bytes are streamed one tensor at a time; the file appears at ``path`` only once complete.
    """
    path = Path(path)
    items = list(tensors)  # lazy handles only: the pickle needs every shape before any bytes
    seen: set[str] = set()
    for name, tensor in items:
        if not isinstance(name, str):
            raise OutputError(f"tensor name {name!r} is not a string", file=path)
        if name in seen:
            raise OutputError(f"tensor name '{name}' appears twice", file=path, tensor=name)
        if tensor.dtype.name not in BY_NAME:
            raise OutputError(
                f"dtype {tensor.dtype.name} cannot be written to a torch checkpoint", file=path, tensor=name
            )
        seen.add(name)

    pickler = _PickleWriter()
    pickler.out += b"}"  # EMPTY_DICT
    for batch_start in range(0, len(items), 1000):  # pickle's own SETITEMS batch size
        pickler.out += b"("
        for index in range(batch_start, min(batch_start + 1000, len(items))):
            name, tensor = items[index]
            pickler.string(name)
            pickler.tensor(str(index), tensor.dtype, tensor.shape)
        pickler.out += b"u"  # SETITEMS
    pickler.out += b"."  # STOP

    # torch names the archive folder after the file stem; anything unusual falls back to its default.
    prefix = path.stem if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", path.stem) else "archive"
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            _write_record(zf, raw, f"{prefix}/data.pkl", [bytes(pickler.out)])
            _write_record(zf, raw, f"{prefix}/.format_version", [b"1"])
            _write_record(zf, raw, f"{prefix}/.storage_alignment", [str(_ALIGNMENT).encode()])
            _write_record(zf, raw, f"{prefix}/byteorder", [b"little"])
            for index, (name, tensor) in enumerate(items):
                _write_record(zf, raw, f"{prefix}/data/{index}", _tensor_chunks(name, tensor), tensor.nbytes)
            _write_record(zf, raw, f"{prefix}/version", [b"3\n"])
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _tensor_chunks(name: str, tensor: LazyTensor) -> Iterable[memoryview]:
    array = tensor.load()
    if tuple(array.shape) != tensor.shape or array.dtype != tensor.dtype.numpy:
        raise OutputError(
            f"loaded as {array.shape} {array.dtype}, declared {tensor.shape} {tensor.dtype.name}", tensor=name
        )
    data = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    for start in range(0, len(data), _WRITE_CHUNK):
        yield data[start : start + _WRITE_CHUNK]


def _write_record(
    zf: zipfile.ZipFile, raw: Any, name: str, chunks: Iterable[bytes | memoryview], size: int | None = None
) -> None:
    chunks = list(chunks) if size is None else chunks
    if size is None:
        size = sum(len(c) for c in chunks)  # type: ignore[arg-type]
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed date: reproducible output
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = size
    zip64 = size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule; adds a 20-byte local extra
    header_offset = raw.tell()
    header_end = header_offset + _LOCAL_HEADER.size + len(name.encode("ascii")) + (20 if zip64 else 0)
    # Pad with an extra field (id 'FB', filler 'Z', like torch) so the data starts 64-aligned.
    pad = -(header_end + 4) % _ALIGNMENT
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
    written = 0
    with zf.open(info, "w", force_zip64=zip64) as out:
        if info.header_offset != header_offset:
            raise AssertionError("zipfile placed a record somewhere unexpected; alignment would be wrong")
        for chunk in chunks:
            out.write(chunk)
            written += len(chunk)
    if written != size:
        raise OutputError(f"record '{name}' produced {written} bytes, expected {size}")
