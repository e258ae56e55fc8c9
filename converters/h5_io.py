"""Keras 2 HDF5 weight files (Hugging Face's ``tf_model.h5``), read and written with h5py.

Layout (what ``tf_keras``' ``save_weights_to_hdf5_group`` writes and transformers' TF loader reads):

- root attributes ``layer_names`` (the model's top-level Keras layers, in model order),
  ``backend`` = ``b"tensorflow"`` and ``keras_version``;
- one group per layer, created in sorted order, with attribute ``weight_names``: the full variable
  names (``<model scope>/<layer>/.../<var>:0``), each also the path of its dataset inside the group;
- an empty ``top_level_model_weights`` group (weights owned by the model itself: none for transformers);
- attributes longer than HDF5's 64 KB object-header limit are split into ``name0``, ``name1``, ...
  exactly as tf_keras splits them.

bfloat16 has no HDF5 type: it is stored as 2-byte opaque data with the dataset attribute
``dtype = "bfloat16"``, Keras 3's convention.

Reading never imports TensorFlow. It refuses what could make a reader touch other files or allocate
unbounded memory: soft and external links, virtual datasets, datasets with external storage, and
datasets whose declared size exceeds what is stored (a "shape bomb"; checked before allocating).
Big-endian datasets are byteswapped on load. Contiguous datasets are memory-mapped lazily; chunked
ones are read through h5py on load.

This module moves bytes only: which weight belongs to which layer group is decided by the caller.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmstd import dtypes, timing
from llmstd.errors import FormatError, MissingDependencyError, UnsafeInputError
from llmstd.lazy_numpy import np
from llmstd.tensors import FileSliceTensor, LazyTensor, is_plain_slice, stream, write_streamed

HDF5_OBJECT_HEADER_LIMIT = 64512  # tf_keras' limit for one attribute
TOP_LEVEL_GROUP = "top_level_model_weights"
BF16_ATTR = "dtype"  # Keras 3 marks opaque 2-byte datasets holding bfloat16 this way
MAX_EXPANSION = 1000  # deflate cannot compress better than ~1032:1; a larger claim is a bomb
BOMB_FLOOR_BYTES = 1 << 20  # tiny compressed datasets are never worth refusing
_ALLOWED_FILTER_CODES = {1, 2, 3, 32000}  # deflate, shuffle, fletcher32, lzf

Progress = Callable[[str, int], None]


def h5py_module() -> Any:
    try:
        import h5py
    except ImportError:
        raise MissingDependencyError("reading and writing .h5 weights needs 'h5py'",
                                     hint="install it with: pip install 'llmstd[tf]'") from None
    return h5py


def keras_version() -> str:
    """The tf_keras version to record, as tf_keras itself would; no TensorFlow import needed."""
    from importlib import metadata

    for dist in ("tf_keras", "tf-keras"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "2.15.0"


# ------------------------------------------------------------------------------------------------
# reading


@contextlib.contextmanager
def h5_errors(path: Path, tensor: str | None = None) -> Iterator[None]:
    """HDF5 reports a damaged file as OSError, RuntimeError, KeyError or ValueError from deep inside
    the library; each becomes one FormatError naming the file."""
    try:
        yield
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise FormatError(f"damaged HDF5 file ({type(exc).__name__}: {exc})", file=path, tensor=tensor,
                          hint="re-download or re-save the weights") from None


class H5DatasetTensor(LazyTensor):
    """A chunked (possibly compressed) dataset, read through h5py when loaded."""

    def __init__(self, path: Path, dataset_path: str, shape: tuple[int, ...], dtype: dtypes.DType,
                 opaque_bf16: bool) -> None:
        self.path = path
        self.dataset_path = dataset_path
        self.shape = shape
        self.dtype = dtype
        self._opaque_bf16 = opaque_bf16

    def load(self) -> np.ndarray:
        h5py = h5py_module()
        with h5_errors(self.path, self.dataset_path), h5py.File(self.path, "r") as f:
            dset = f[self.dataset_path]
            if self._opaque_bf16:
                raw = np.empty(self.shape, dtype=np.dtype("V2"))
                dset.read_direct(raw)
                return raw.view(self.dtype.numpy)
            array = dset[()]
        array = np.asarray(array)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("="))
        return array.reshape(self.shape)


#: Keras lists a shared variable under every top-level layer that uses it (transformers' BERT MLM head
#: reuses the embedding layer, so layer 'mlm___cls' lists the embeddings again, as separate datasets
#: with the same weight name). Such a repeat is exposed, and written, as ``<weight name>@<layer>``.
REPEAT_SEP = "@"


@dataclass
class H5Weights:
    path: Path
    layer_names: list[str]
    weights: dict[str, LazyTensor]  # weight name (or '<name>@<layer>' for a repeat) -> tensor
    layer_of: dict[str, str]  # key of ``weights`` -> layer group it was read from
    attrs: dict[str, str] = field(default_factory=dict)


def _decode(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.bytes_):
        return bytes(value).decode("utf-8")
    return str(value)


MAX_ATTRIBUTE_BYTES = 64 * 1024 * 1024  # tf_keras splits attributes at 64 KB; this is far past any real one


def read_attribute(obj: Any, name: str, path: Path) -> Any:
    """An attribute's value, refused before reading when its header declares more than
    MAX_ATTRIBUTE_BYTES (a damaged dataspace would otherwise make HDF5 allocate and read that much)."""
    aid = obj.attrs.get_id(name)
    declared = aid.get_space().get_simple_extent_npoints() * aid.get_type().get_size()
    if declared > MAX_ATTRIBUTE_BYTES:
        raise FormatError(f"attribute '{name}' of {obj.name} declares {declared} bytes, more than the "
                          f"{MAX_ATTRIBUTE_BYTES}-byte limit; the file is damaged", file=path)
    return obj.attrs[name]


def read_string_list(group: Any, name: str, path: Path) -> list[str] | None:
    """A string-list attribute, re-joined from tf_keras' ``name0``, ``name1``, ... chunks."""
    if name in group.attrs:
        raw = read_attribute(group, name, path)
    else:
        chunks, k = [], 0
        while f"{name}{k}" in group.attrs:
            chunks.append(np.atleast_1d(read_attribute(group, f"{name}{k}", path)))
            k += 1
        if not chunks:
            return None
        raw = np.concatenate(chunks)
    array = np.atleast_1d(np.asarray(raw))
    if array.size and array.dtype.kind not in ("S", "U", "O"):
        raise FormatError(f"attribute '{name}' of {group.name} is not a list of strings", file=path)
    return [_decode(v) for v in array.tolist()]


def check_link(h5py: Any, group: Any, member: str, path: Path, where: str) -> None:
    link = group.get(member, getlink=True)
    if link is None:
        raise FormatError(f"{where} does not exist", file=path, hint="the weight list names a missing dataset")
    if isinstance(link, h5py.ExternalLink):
        raise UnsafeInputError(f"{where} is an external link to '{link.filename}:{link.path}'; refused",
                               file=path, hint="llmstd reads only data stored inside the .h5 file itself")
    if isinstance(link, h5py.SoftLink):
        raise UnsafeInputError(f"{where} is a soft link to '{link.path}'; refused", file=path,
                               hint="weights files written by Keras contain no links; re-save the model")


def _resolve(h5py: Any, root: Any, parts: Sequence[str], path: Path, where: str) -> Any:
    """Walk ``parts`` from ``root`` checking that every step is a hard link."""
    node = root
    for k, part in enumerate(parts):
        if not isinstance(node, h5py.Group):
            raise FormatError(f"{where}: '{'/'.join(parts[:k])}' is not a group", file=path)
        check_link(h5py, node, part, path, f"'{'/'.join(parts[:k + 1])}' (for {where})")
        node = node[part]
    return node


def dataset_tensor(h5py: Any, dset: Any, path: Path, name: str) -> LazyTensor:
    if dset.is_virtual:
        raise UnsafeInputError("is a virtual dataset (its data lives in other files); refused", file=path,
                               tensor=name, hint="re-save the weights as ordinary datasets")
    if dset.external:
        raise UnsafeInputError(f"stores its data in external file(s) {dset.external}; refused", file=path,
                               tensor=name, hint="re-save the weights as ordinary datasets")
    shape = tuple(int(d) for d in dset.shape) if dset.shape is not None else None
    if shape is None:
        raise FormatError("is an empty (null-dataspace) dataset", file=path, tensor=name)
    tid = dset.id.get_type()
    opaque_bf16 = False
    marked_bf16 = BF16_ATTR in dset.attrs and _decode(read_attribute(dset, BF16_ATTR, path)) == "bfloat16"
    if tid.get_class() == h5py.h5t.OPAQUE and tid.get_size() == 2 and marked_bf16:
        dtype = dtypes.dtype("bfloat16")
        opaque_bf16 = True
        big_endian = False
    else:
        np_dtype = dset.dtype
        if np_dtype.kind not in "fiub" or np_dtype.fields is not None or np_dtype.subdtype is not None:
            raise FormatError(f"has HDF5 type {np_dtype}, which is not a numeric weight dtype", file=path, tensor=name)
        try:
            dtype = dtypes.from_numpy(np_dtype)
        except FormatError:
            raise FormatError(f"has dtype {np_dtype}, which llmstd cannot represent", file=path, tensor=name) from None
        big_endian = np_dtype.byteorder == ">"
    declared = math.prod(shape) * dtype.itemsize
    stored = dset.id.get_storage_size()
    plist = dset.id.get_create_plist()
    layout = plist.get_layout()
    codes = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
    unknown = [c for c in codes if c not in _ALLOWED_FILTER_CODES]
    if unknown:
        raise FormatError(f"uses HDF5 filter(s) {unknown}, which llmstd does not read", file=path, tensor=name,
                          hint="re-save the weights without such compression")
    # Checked before anything is allocated: a contiguous dataset stores exactly its declared bytes; a
    # chunked one can be smaller only as far as compression can explain.
    if declared and stored == 0:
        raise FormatError(f"declares {declared} bytes but stores none", file=path, tensor=name,
                          hint="the file is truncated or was never filled")
    if layout == h5py.h5d.CONTIGUOUS:
        if stored != declared:
            raise FormatError(f"declares shape {list(shape)} ({declared} bytes) but stores {stored} bytes; "
                              "refusing a truncated dataset or shape bomb", file=path, tensor=name)
        offset = dset.id.get_offset()
        if offset is None and declared == 0:  # HDF5 allocates no storage for an empty dataset
            offset = 0
        if offset is None:
            raise FormatError("contiguous dataset has no data address", file=path, tensor=name)
        return FileSliceTensor(path, offset, shape, dtype, big_endian=big_endian)
    if layout == h5py.h5d.COMPACT:
        if declared > HDF5_OBJECT_HEADER_LIMIT:
            raise FormatError(f"compact dataset declares {declared} bytes", file=path, tensor=name)
    elif declared > BOMB_FLOOR_BYTES and declared > MAX_EXPANSION * stored:
        raise FormatError(f"declares shape {list(shape)} ({declared} bytes) but stores only {stored} bytes; "
                          "refusing a potential shape/decompression bomb", file=path, tensor=name)
    return H5DatasetTensor(path, dset.name, shape, dtype, opaque_bf16)


def open_h5(path: Path) -> Any:
    """An h5py File open for reading, or a FormatError naming the file."""
    try:
        return h5py_module().File(path, "r")
    except OSError as exc:
        raise FormatError(f"not a readable HDF5 file ({exc})", file=path) from None


def read_h5(path: Path) -> H5Weights:
    """Open a Keras 2 weights file; returns lazy tensors keyed by weight name."""
    h5py = h5py_module()
    path = Path(path)
    f = open_h5(path)
    with h5_errors(path), f:
        layer_names = read_string_list(f, "layer_names", path)
        if layer_names is None:
            raise FormatError("HDF5 file has no 'layer_names' attribute; not a Keras 2 / Hugging Face TF weights file",
                              file=path, hint="Keras 3 '.weights.h5' files (KerasHub presets) are read by the keras-hub format")
        attrs = {k: _decode(read_attribute(f, k, path)) for k in ("backend", "keras_version") if k in f.attrs}
        weights: dict[str, LazyTensor] = {}
        layer_of: dict[str, str] = {}
        for layer in layer_names:
            group = _resolve(h5py, f, [layer], path, f"layer '{layer}'")
            if not isinstance(group, h5py.Group):
                raise FormatError(f"layer '{layer}' is not a group", file=path)
            names = read_string_list(group, "weight_names", path)
            if names is None:
                raise FormatError(f"layer group '{layer}' has no 'weight_names' attribute", file=path)
            for name in names:
                parts = [p for p in name.split("/") if p]
                if not parts or any(p in (".", "..") for p in parts):
                    raise FormatError(f"weight name {name!r} is not a valid dataset path", file=path)
                node = _resolve(h5py, group, parts, path, f"weight '{name}' of layer '{layer}'")
                if not isinstance(node, h5py.Dataset):
                    raise FormatError(f"weight '{name}' of layer '{layer}' is not a dataset", file=path)
                if REPEAT_SEP in name:
                    raise FormatError(f"weight name {name!r} contains '{REPEAT_SEP}', which llmstd reserves", file=path)
                key = f"{name}{REPEAT_SEP}{layer}" if name in weights else name
                if key in weights:
                    raise FormatError(f"layer '{layer}' lists weight '{name}' twice", file=path)
                weights[key] = dataset_tensor(h5py, node, path, name)
                layer_of[key] = layer
    return H5Weights(path, layer_names, weights, layer_of, attrs)


# ------------------------------------------------------------------------------------------------
# writing


def write_string_list(group: Any, name: str, values: Sequence[str]) -> None:
    """Store a string list as tf_keras does: one attribute, or ``name0``, ``name1``, ... when large."""
    data = [v.encode("utf-8") for v in values]
    too_long = [v for v in data if len(v) > HDF5_OBJECT_HEADER_LIMIT]
    if too_long:
        raise FormatError(f"attribute value longer than {HDF5_OBJECT_HEADER_LIMIT} bytes: {too_long[0][:80]!r}...")
    data_npy = np.asarray(data)
    num_chunks = 1
    chunks = np.array_split(data_npy, num_chunks)
    while any(c.nbytes > HDF5_OBJECT_HEADER_LIMIT for c in chunks):
        num_chunks += 1
        chunks = np.array_split(data_npy, num_chunks)
    # Fixed-length byte strings, as tf_keras writes them: h5py stores a list of bytes as variable-length
    # strings, whose values live in a global heap that HDF5 walks when reading -- and a damaged heap
    # address made that walk spin forever (found by tests/hostile/test_fuzz.py).
    if num_chunks > 1:
        for k, chunk in enumerate(chunks):
            group.attrs[f"{name}{k}"] = chunk
    else:
        group.attrs[name] = data_npy


def preallocated(h5py: Any) -> Any:
    """Dataset-creation properties: contiguous storage, allocated when the dataset is created."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return dcpl


def allocate(group: Any, name: str, tensor: LazyTensor, dcpl: Any) -> int | None:
    """Create the dataset for ``tensor`` with its space allocated now (``dcpl``: :func:`preallocated`)
    and never filled; return the file offset its bytes go to (None for an empty dataset, which has
    no storage)."""
    bf16 = tensor.dtype.name == "bfloat16"
    stored = np.dtype("V2") if bf16 else tensor.dtype.numpy.newbyteorder("<")
    dset = group.create_dataset(name, tensor.shape, dtype=stored, dcpl=dcpl, fill_time="never")
    if bf16:
        dset.attrs[BF16_ATTR] = "bfloat16"
    return dset.id.get_offset() if tensor.nbytes else None


def write_h5(path: Path, layers: Sequence[tuple[str, Sequence[tuple[str, LazyTensor]]]], *,
             progress: Progress | None = None) -> Path:
    """Write a Keras 2 weights file: ``layers`` is (layer name, [(weight name, tensor), ...]) in model order.

    HDF5 writes the structure only: each dataset is created contiguous, with its space allocated at
    once and never filled, and its file offset noted. The tensor bytes then go straight to those
    offsets, plain file slices file to file and others one at a time while the next loads --
    h5py's own write path would load every tensor and copy it through the HDF5 library. The file is
    fsynced before returning.
    """
    h5py = h5py_module()
    path = Path(path)
    placed: list[tuple[str, LazyTensor, int]] = []
    dcpl = preallocated(h5py)
    with timing.phase("lay out"), h5py.File(path, "w") as f:
        write_string_list(f, "layer_names", [name for name, _ in layers])
        f.attrs["backend"] = np.bytes_(b"tensorflow")  # fixed-length, as tf_keras writes (see write_string_list)
        f.attrs["keras_version"] = np.bytes_(keras_version().encode("utf-8"))
        # tf_keras creates the groups sorted by name so no group name is a prefix-ordering surprise.
        for layer, weights in sorted(layers, key=lambda item: item[0]):
            group = f.create_group(layer)
            write_string_list(group, "weight_names", [n for n, _ in weights])
            for name, tensor in weights:
                offset = allocate(group, name, tensor, dcpl)
                if offset is not None:
                    placed.append((name, tensor, offset))
                elif progress:
                    progress(name, 0)
        top = f.create_group(TOP_LEVEL_GROUP)
        write_string_list(top, "weight_names", [])
    fill_placed(path, placed, progress)
    return path


def fill_placed(path: Path, placed: Sequence[tuple[str, LazyTensor, int]], progress: Progress | None) -> None:
    """Write each (name, tensor, offset) of a file whose datasets :func:`allocate` laid out, plain
    file slices file to file and others one at a time while the next loads; fsync the file."""
    with open(path, "r+b") as fh:
        streamed = stream([(name, tensor) for name, tensor, _ in placed], copyable=is_plain_slice)
        for (name, tensor, array), (_, _, offset) in zip(streamed, placed):
            write_streamed(fh, path, name, tensor, array, at=offset)
            del array
            if progress:
                progress(name, tensor.nbytes)
        fh.flush()
        timing.fsync(fh.fileno())
