"""ONNX container: read and write the tensors of a ModelProto, with strict checks on every byte range.

What this module owns: turning ONNX ``TensorProto`` payloads (``raw_data``, the typed ``*_data``
fields, and external data files) into lazy tensors, and writing named tensors back as initializers,
either inside the protobuf or in one ``<model>.data`` file next to it. It knows nothing about
parameter names or graphs: graph building lives in :mod:`llmstd.onnx_graph`, weight recovery in
:mod:`llmstd.onnx_recover`.

Safety: an ONNX file names its external data files itself, so a hostile file could point at
``/etc/shadow``, ``../../secret`` or a symlink leading out of the model directory, or claim byte
ranges past the end of a file. Every external-data reference is validated here *before* anything is
read and before onnx's own loaders ever see the model (we always parse with
``load_external_data=False``): locations must be relative, free of ``..`` and symlinks, and stay
inside the model's directory; offsets and lengths must lie inside the data file and match the
tensor's shape and dtype. ``raw_data`` whose size disagrees with ``dims x itemsize`` is refused.

The ``onnx`` package is imported lazily, on first use.
"""

from __future__ import annotations

import math
import os
import posixpath
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmstd import dtypes, timing
from llmstd.dtypes import DType
from llmstd.errors import FormatError, UnsafeInputError, require
from llmstd.lazy_numpy import np
from llmstd.tensors import (ArrayTensor, FileSliceTensor, LazyTensor, is_plain_slice, require_declared, stream,
                            write_streamed)

Progress = Callable[[str, int], None]

#: protobuf refuses to serialize or parse messages of 2 GiB and more.
PROTOBUF_LIMIT = 2**31 - 1
#: Default size of the weights above which a writer moves them to external data. Below the protobuf
#: limit with room for the graph itself.
DEFAULT_EXTERNAL_THRESHOLD = 1_800_000_000
#: External data: tensors of at least this size start at a multiple of ``LARGE_ALIGNMENT`` so that
#: runtimes (onnxruntime) can memory-map them; smaller ones are packed at ``SMALL_ALIGNMENT``.
LARGE_TENSOR = 1 << 20
LARGE_ALIGNMENT = 1 << 16
SMALL_ALIGNMENT = 64

# ONNX TensorProto.DataType codes (stable across onnx releases) <-> llmstd dtype names.
ONNX_TO_DTYPE: dict[int, str] = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
    10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16", 17: "float8_e4m3fn",
    19: "float8_e5m2",
}
DTYPE_TO_ONNX: dict[str, int] = {name: code for code, name in ONNX_TO_DTYPE.items()}
_EXTERNAL = 1  # TensorProto.EXTERNAL
_EXTERNAL_KEYS = {"location", "offset", "length", "checksum"}

# Which typed repeated field holds a tensor's values when raw_data is absent (ONNX spec, onnx.proto3).
_TYPED_FIELD: dict[str, str] = {
    "float32": "float_data", "float64": "double_data", "int64": "int64_data",
    "uint32": "uint64_data", "uint64": "uint64_data",
    "int32": "int32_data", "int16": "int32_data", "int8": "int32_data", "uint16": "int32_data",
    "uint8": "int32_data", "bool": "int32_data",
    # 16- and 8-bit floats travel as their bit patterns in int32_data.
    "float16": "int32_data", "bfloat16": "int32_data", "float8_e4m3fn": "int32_data", "float8_e5m2": "int32_data",
}
_BITS_VIEW = {"float16": "uint16", "bfloat16": "uint16", "float8_e4m3fn": "uint8", "float8_e5m2": "uint8"}


def onnx_module() -> Any:
    """The onnx package, imported on first use (or a MissingDependencyError naming the extra)."""
    return require("onnx", "onnx")


def dtype_of(code: int, *, file: Path, tensor: str) -> DType:
    if code not in ONNX_TO_DTYPE:
        raise FormatError(f"ONNX data type {code} is not supported by llmstd", file=file, tensor=tensor,
                          hint=f"supported: {', '.join(sorted(set(ONNX_TO_DTYPE.values())))}")
    return dtypes.dtype(ONNX_TO_DTYPE[code])


def onnx_code(dtype: DType) -> int:
    if dtype.name not in DTYPE_TO_ONNX:
        raise FormatError(f"dtype {dtype.name} has no ONNX equivalent")
    return DTYPE_TO_ONNX[dtype.name]


# --------------------------------------------------------------------------------------------
# reading


class ProtoTensor(LazyTensor):
    """A tensor stored inside the protobuf (``raw_data`` or a typed field), decoded on load.

    The size was validated when the file was opened; decoding copies the bytes once.
    """

    def __init__(self, proto: Any, shape: tuple[int, ...], dtype: DType, source: Path) -> None:
        self._proto = proto
        self.shape = shape
        self.dtype = dtype
        self._source = source

    def load(self) -> np.ndarray:
        tp = self._proto
        if tp.raw_data:
            # raw_data is always little-endian (ONNX spec), like numpy's native order here.
            return np.frombuffer(tp.raw_data, dtype=self.dtype.numpy).reshape(self.shape)
        values = getattr(tp, _TYPED_FIELD[self.dtype.name])
        if self.dtype.name in _BITS_VIEW:
            bits = np.asarray(values, dtype=np.int64).astype(_BITS_VIEW[self.dtype.name])
            return bits.view(self.dtype.numpy).reshape(self.shape)
        return np.asarray(values).astype(self.dtype.numpy).reshape(self.shape)


@dataclass
class OnnxFile:
    """A parsed ONNX model whose tensors are lazy and whose external data was validated."""

    path: Path
    model: Any  # onnx.ModelProto; initializer payloads stay in the protobuf (or external files)
    tensors: dict[str, LazyTensor]  # initializers and Constant-node tensors of all (sub)graphs, by name
    initializers: list[str]  # names of the main graph's initializers, in file order
    metadata: dict[str, str]
    data_files: list[Path] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)  # tensor -> why it is not available

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def container(self) -> str:
        return "onnx-external-data" if self.data_files else "onnx"


def _check_dims(dims: Sequence[int], file: Path, name: str) -> tuple[int, ...]:
    shape = tuple(int(d) for d in dims)
    if any(d < 0 for d in shape):
        raise FormatError(f"negative dimension in {list(shape)}", file=file, tensor=name)
    # Dimensions of size 0 are skipped: numpy refuses even an empty array whose other dimensions
    # multiply past its index range.
    if math.prod(max(d, 1) for d in shape) > 2**59:
        raise FormatError(f"dimensions {list(shape)} describe an impossibly large tensor", file=file, tensor=name)
    return shape


def safe_data_path(directory: Path, location: str, *, model: Path, tensor: str) -> Path:
    """Resolve an external-data ``location`` inside ``directory`` or refuse it.

    Refused: empty or absolute locations (also Windows drive and UNC forms), any ``..`` component
    (even ``a/../x``, which stays inside, since nothing legitimate needs it), NUL bytes, symlinks
    anywhere on the path, anything that is not a regular file, and anything that resolves outside
    ``directory``.
    """
    hint = "external data must be a plain file inside the model's directory; re-save the model with onnx"
    if not location or "\0" in location:
        raise UnsafeInputError("external data location is empty or contains a NUL byte", file=model,
                               tensor=tensor, hint=hint)
    text = location.replace("\\", "/")
    if text.startswith("/") or posixpath.isabs(text) or (len(text) > 1 and text[1] == ":"):
        raise UnsafeInputError(f"external data location {location!r} is an absolute path", file=model,
                               tensor=tensor, hint=hint)
    parts = text.split("/")
    if ".." in parts:
        raise UnsafeInputError(f"external data location {location!r} climbs out with '..'", file=model,
                               tensor=tensor, hint=hint)
    current = directory
    for part in parts:
        if part in ("", "."):
            continue
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            raise FormatError(f"external data file {location!r} does not exist", file=model, tensor=tensor,
                              hint="copy the data file next to the model") from None
        if stat.S_ISLNK(mode):
            raise UnsafeInputError(f"external data location {location!r} goes through a symlink ({current})",
                                   file=model, tensor=tensor, hint=hint)
    if not stat.S_ISREG(os.lstat(current).st_mode):
        raise UnsafeInputError(f"external data location {location!r} is not a regular file", file=model,
                               tensor=tensor, hint=hint)
    if not current.resolve().is_relative_to(directory.resolve()):
        raise UnsafeInputError(f"external data location {location!r} resolves outside {directory}",
                               file=model, tensor=tensor, hint=hint)
    return current


def _int_field(value: str, key: str, file: Path, name: str) -> int:
    # ASCII digits only ('²'.isdigit() is true), and few enough for int() (it refuses > 4300 digits).
    if not (value.isascii() and value.isdigit()) or len(value) > 30:
        raise FormatError(f"external data {key} {value[:40]!r} is not a non-negative integer", file=file,
                          tensor=name)
    return int(value)


def tensor_from_proto(tp: Any, *, model_path: Path, name: str | None = None,
                      data_files: list[Path] | None = None) -> LazyTensor:
    """A lazy tensor for one ``TensorProto``; validates every size and byte range first."""
    name = name if name is not None else tp.name
    dtype = dtype_of(tp.data_type, file=model_path, tensor=name)
    shape = _check_dims(tp.dims, model_path, name)
    nbytes = math.prod(shape) * dtype.itemsize
    if tp.HasField("segment"):
        raise FormatError("segmented tensors are not supported", file=model_path, tensor=name)
    if tp.data_location == _EXTERNAL:
        entries: dict[str, str] = {}
        for kv in tp.external_data:
            if kv.key not in _EXTERNAL_KEYS:
                raise FormatError(f"unknown external data key {kv.key!r}", file=model_path, tensor=name,
                                  hint=f"known keys: {', '.join(sorted(_EXTERNAL_KEYS))}")
            entries[kv.key] = kv.value
        if tp.raw_data:
            raise FormatError("tensor has both raw_data and external data", file=model_path, tensor=name)
        path = safe_data_path(model_path.parent, entries.get("location", ""), model=model_path, tensor=name)
        offset = _int_field(entries.get("offset", "0"), "offset", model_path, name)
        size = path.stat().st_size
        if offset > size:
            raise FormatError(f"external data offset {offset} lies past the end of {path.name} ({size} bytes)",
                              file=model_path, tensor=name, offset=offset,
                              hint="the data file is truncated or does not belong to this model")
        length = _int_field(entries["length"], "length", model_path, name) if "length" in entries else size - offset
        if length != nbytes:
            raise FormatError(f"external data length {length} differs from {nbytes} bytes implied by "
                              f"{dtype.name}{list(shape)}", file=model_path, tensor=name, offset=offset)
        if offset + length > size:
            raise FormatError(f"external data bytes [{offset}, {offset + length}) run past the end of "
                              f"{path.name} ({size} bytes)", file=model_path, tensor=name, offset=offset,
                              hint="the data file is truncated or does not belong to this model")
        if data_files is not None and path not in data_files:
            data_files.append(path)
        return FileSliceTensor(path, offset, shape, dtype)
    if tp.raw_data:
        if len(tp.raw_data) != nbytes:
            raise FormatError(f"raw_data holds {len(tp.raw_data)} bytes, but {dtype.name}{list(shape)} needs "
                              f"{nbytes}", file=model_path, tensor=name,
                              hint="the file is corrupt; re-export the model")
        return ProtoTensor(tp, shape, dtype, model_path)
    count = len(getattr(tp, _TYPED_FIELD[dtype.name]))
    if count != math.prod(shape):
        raise FormatError(f"{_TYPED_FIELD[dtype.name]} holds {count} values, but shape {list(shape)} needs "
                          f"{math.prod(shape)}", file=model_path, tensor=name,
                          hint="the file is corrupt; re-export the model")
    return ProtoTensor(tp, shape, dtype, model_path)


def iter_nodes(graph: Any) -> Iterator[Any]:
    """Every node of ``graph`` and of its subgraphs (If/Loop/Scan bodies), depth first."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == 5:  # GRAPH
                yield from iter_nodes(attr.g)
            elif attr.type == 10:  # GRAPHS
                for sub in attr.graphs:
                    yield from iter_nodes(sub)


def _iter_graphs(graph: Any) -> Iterator[Any]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == 5:
                yield from _iter_graphs(attr.g)
            elif attr.type == 10:
                for sub in attr.graphs:
                    yield from _iter_graphs(sub)


def _constant_tensor(node: Any, model_path: Path, data_files: list[Path]) -> LazyTensor | str | None:
    """The value of a Constant node, when it is a tensor (scalars and lists become small arrays), or
    why it is not available (a data type llmstd does not read, such as strings)."""
    for attr in node.attribute:
        if attr.name == "value" and attr.type == 4:  # TENSOR
            if attr.t.data_type not in ONNX_TO_DTYPE:
                return f"ONNX data type {attr.t.data_type} is not supported"
            return tensor_from_proto(attr.t, model_path=model_path, name=node.output[0], data_files=data_files)
        if attr.name == "value_float":
            return ArrayTensor(np.array(attr.f, dtype=np.float32))
        if attr.name == "value_floats":
            return ArrayTensor(np.array(list(attr.floats), dtype=np.float32))
        if attr.name == "value_int":
            return ArrayTensor(np.array(attr.i, dtype=np.int64))
        if attr.name == "value_ints":
            return ArrayTensor(np.array(list(attr.ints), dtype=np.int64))
    return None


def _check_text(model: Any, path: Path) -> None:
    """protobuf hands out a string field that is not valid UTF-8 as ``bytes``; refuse such files
    before any name, key or location is used as text."""
    fields: list[Any] = []
    for prop in model.metadata_props:
        fields += [prop.key, prop.value]
    for graph in _iter_graphs(model.graph):
        for tp in graph.initializer:
            fields.append(tp.name)
            fields += [v for kv in tp.external_data for v in (kv.key, kv.value)]
        fields += [sp.values.name for sp in graph.sparse_initializer]
        for node in graph.node:
            fields += [node.name, node.op_type, node.domain, *node.input, *node.output]
            fields += [v for prop in node.metadata_props for v in (prop.key, prop.value)]
            fields += [attr.name for attr in node.attribute]
            fields += [v for attr in node.attribute if attr.type == 4 for kv in attr.t.external_data
                       for v in (kv.key, kv.value)]
    if any(not isinstance(v, str) for v in fields):
        raise FormatError("a name or key in the model is not valid UTF-8 text", file=path,
                          hint="the file is corrupt; re-export the model")


def read(path: Path) -> OnnxFile:
    """Parse ``path`` (without letting onnx load external data) and validate every tensor's bytes."""
    onnx = onnx_module()
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FormatError(f"cannot read: {exc.strerror}", file=path) from None
    if size > PROTOBUF_LIMIT:
        raise FormatError(f"{size} bytes exceeds the 2 GiB protobuf limit; not a valid ONNX file", file=path)
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise FormatError(f"not a valid ONNX protobuf ({type(exc).__name__}: {exc})", file=path,
                          hint="check that the file is a complete .onnx model") from None
    if not model.HasField("graph"):
        raise FormatError("ONNX model has no graph", file=path)
    _check_text(model, path)
    tensors: dict[str, LazyTensor] = {}
    unsupported: dict[str, str] = {}
    data_files: list[Path] = []
    for graph in _iter_graphs(model.graph):
        for tp in graph.initializer:
            if tp.name in tensors or tp.name in unsupported:
                raise FormatError("two initializers share one name", file=path, tensor=tp.name)
            if tp.data_type not in ONNX_TO_DTYPE:
                unsupported[tp.name] = f"ONNX data type {tp.data_type} is not supported"
                continue
            tensors[tp.name] = tensor_from_proto(tp, model_path=path, data_files=data_files)
        for sp in graph.sparse_initializer:
            unsupported[sp.values.name] = "sparse initializers are not supported"
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
                value = _constant_tensor(node, path, data_files)
                if isinstance(value, str):
                    if node.output[0] not in tensors:
                        unsupported.setdefault(node.output[0], value)
                elif value is not None and node.output[0] not in tensors:
                    tensors[node.output[0]] = value
    return OnnxFile(path=path, model=model, tensors=tensors,
                    initializers=[tp.name for tp in model.graph.initializer],
                    metadata={p.key: p.value for p in model.metadata_props}, data_files=data_files,
                    unsupported=unsupported)


# --------------------------------------------------------------------------------------------
# writing


def data_file_name(model_file: str) -> str:
    return f"{model_file}.data"


def _set_external(tp: Any, location: str, offset: int, length: int) -> None:
    tp.data_location = _EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tp.external_data.add()
        entry.key, entry.value = key, value


def write(
    path: Path,
    model: Any,
    entries: Sequence[tuple[str, LazyTensor]],
    *,
    external: bool,
    metadata: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Write ``model`` plus ``entries`` as initializers to ``path``; returns the files written.

    ``model`` is not modified: a copy receives the initializers. With ``external`` every entry goes
    to one ``<path>.data`` file beside the model, streamed one tensor at a time (plain file slices
    are copied file to file); otherwise the entries are embedded as ``raw_data``. ``metadata``
    becomes the model's ``metadata_props``; a callable is evaluated after the tensors are written
    (so a caller can record values computed meanwhile, such as source hashes).
    """
    onnx = onnx_module()
    names = [n for n, _ in entries]
    if len(set(names)) != len(names):
        raise FormatError("duplicate initializer names", file=path)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    written = [path]
    protos = []
    if external:
        data_path = path.with_name(data_file_name(path.name))
        with open(data_path, "wb") as fh:
            for name, tensor, array in stream(list(entries), copyable=is_plain_slice):
                offset = fh.tell()
                align = LARGE_ALIGNMENT if tensor.nbytes >= LARGE_TENSOR else SMALL_ALIGNMENT
                if offset % align:
                    fh.write(b"\0" * (align - offset % align))
                    offset = fh.tell()
                write_streamed(fh, data_path, name, tensor, array)
                del array
                tp = onnx.TensorProto(name=name, data_type=onnx_code(tensor.dtype), dims=list(tensor.shape))
                _set_external(tp, data_path.name, offset, tensor.nbytes)
                protos.append(tp)
                if progress:
                    progress(name, tensor.nbytes)
            fh.flush()
            timing.fsync(fh.fileno())
        written.append(data_path)
    else:
        for name, tensor, array in stream(list(entries)):
            assert array is not None
            require_declared(array, tensor, path, name)
            tp = onnx.TensorProto(name=name, data_type=onnx_code(tensor.dtype), dims=list(tensor.shape))
            tp.raw_data = np.ascontiguousarray(array).tobytes()
            protos.append(tp)
            del array
            if progress:
                progress(name, tensor.nbytes)
    out.graph.initializer.extend(protos)
    props = metadata() if callable(metadata) else (metadata or {})
    for key, value in props.items():
        entry = out.metadata_props.add()
        entry.key, entry.value = key, value
    size = out.ByteSize()
    if size > PROTOBUF_LIMIT:
        raise FormatError(f"the model would be {size} bytes, over the 2 GiB protobuf limit", file=path,
                          hint="write the weights as external data (a smaller size threshold)")
    with timing.phase("write graph"), open(path, "wb") as fh:
        fh.write(out.SerializeToString())
        fh.flush()
        timing.fsync(fh.fileno())
    return written
