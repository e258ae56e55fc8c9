"""Keras 3 weight files (``model.weights.h5`` of a KerasHub preset, or the shards a
``model.weights.json`` lists), read and written with h5py.

Layout (what Keras 3's ``saving_lib`` H5IOStore writes and ``load_weights`` reads): a variable is the
dataset ``<object path>/vars/<k>``, where the object path walks the model's attributes from the top
(``layers/llama_transformer_decoder_1/_self_attention_layer/_query_dense``; the objects of one class
in a list are numbered ``<snake_case_class>``, ``_1``, ``_2``, ...) and ``k`` is the variable's
position in that layer. Variables are matched by position, never by name, so the names of the
datasets are the whole contract. Empty groups of layers without variables are optional: Keras reads
a missing group as a layer with no variables.

Sharded (Keras splits a model larger than ``max_shard_size``): ``<base>.weights.json`` holds
``{"metadata": {"total_size": bytes}, "weight_map": {"/<object path>/vars": "<base>_00000.weights.h5"}}``
(a list of files where one layer's variables span shards) and each shard is a weights file as above.

bfloat16 is stored as 2-byte opaque data with the attribute ``dtype = "bfloat16"`` (Keras 3's
convention, shared with :mod:`llmstd.converters.h5_io`). Reading never imports Keras or TensorFlow
and refuses what :mod:`h5_io` refuses (links, external storage, virtual datasets, shape bombs).
This module moves bytes only: it knows dataset paths, not what they mean.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmstd.converters.h5_io import (
    Progress,
    allocate,
    check_link,
    dataset_tensor,
    fill_placed,
    h5_errors,
    h5py_module,
    open_h5,
    preallocated,
)
from llmstd import timing
from llmstd.errors import FormatError, UnsafeInputError
from llmstd.jsonfile import read_json_object
from llmstd.tensors import LazyTensor

VARS = "vars"
MAX_DEPTH = 64  # Keras object paths are a handful of levels deep; a deeper file is damaged or hostile


def read_weights(path: Path) -> dict[str, LazyTensor]:
    """Every variable of one Keras 3 weights file, keyed by dataset path (``layers/.../vars/0``)."""
    h5py = h5py_module()
    path = Path(path)
    f = open_h5(path)
    out: dict[str, LazyTensor] = {}
    with h5_errors(path), f:
        if "layer_names" in f.attrs:
            raise FormatError("is a Keras 2 weights file (it has 'layer_names'), not a Keras 3 one", file=path,
                              hint="Hugging Face tf_model.h5 files are read by the tf-h5 format")
        _walk(h5py, f, "", path, out, 0)
    return out


def _walk(h5py: Any, group: Any, prefix: str, path: Path, out: dict[str, LazyTensor], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FormatError(f"groups nested deeper than {MAX_DEPTH} levels at '{prefix}'", file=path)
    for member in group:
        name = f"{prefix}{member}"
        check_link(h5py, group, member, path, f"'{name}'")
        node = group[member]
        if isinstance(node, h5py.Dataset):
            parts = name.split("/")
            if len(parts) < 2 or parts[-2] != VARS:
                raise FormatError(f"dataset '{name}' is not a Keras variable (<object path>/vars/<k>)", file=path)
            out[name] = dataset_tensor(h5py, node, path, name)
        elif isinstance(node, h5py.Group):
            _walk(h5py, node, name + "/", path, out, depth + 1)
        else:
            raise UnsafeInputError(f"'{name}' is neither a group nor a dataset; refused", file=path)


def read_sharded(index_path: Path) -> dict[str, LazyTensor]:
    """Every variable of a sharded weights set, from its ``.weights.json`` and the shards it lists."""
    index_path = Path(index_path)
    weight_map = read_json_object(index_path).get("weight_map")
    if not isinstance(weight_map, dict):
        raise FormatError("shard index has no 'weight_map' object", file=index_path)
    files: list[str] = []
    for group, names in weight_map.items():
        for name in names if isinstance(names, list) else [names]:
            if not isinstance(name, str) or Path(name).name != name or not name.endswith(".weights.h5"):
                raise UnsafeInputError(f"shard index names {name!r} for '{group}', which is not a weights file "
                                       "beside it; refused", file=index_path)
            if name not in files:
                files.append(name)
    out: dict[str, LazyTensor] = {}
    for name in files:
        shard = index_path.with_name(name)
        if not shard.is_file():
            raise FormatError(f"shard '{name}' listed in the index is missing", file=index_path)
        for key, tensor in read_weights(shard).items():
            if key in out:
                raise FormatError(f"variable '{key}' is stored in more than one shard", file=shard)
            out[key] = tensor
    return out


def write_weights(path: Path, named: Mapping[str, LazyTensor], *, shard_size: int | None = None,
                  progress: Progress | None = None) -> list[Path]:
    """Write ``named`` (dataset path -> tensor) as one Keras 3 weights file at ``path``
    (``<base>.weights.h5``), or -- when ``shard_size`` is given and the tensors exceed it -- as
    ``<base>.weights.json`` plus ``<base>_NNNNN.weights.h5`` shards, a layer's variables kept in one
    shard. HDF5 lays out the structure, the bytes are streamed to their offsets (:func:`h5_io.fill_placed`).
    Returns the files written."""
    path = Path(path)
    for name in named:
        parts = name.split("/")
        if len(parts) < 2 or parts[-2] != VARS or not parts[-1].isdigit():
            raise FormatError(f"'{name}' is not a Keras variable path (<object path>/vars/<k>)",
                              hint="every keras_hub name in a naming map must end in /vars/<k>")
    total = sum(t.nbytes for t in named.values())
    if shard_size is None or total <= shard_size:
        _write_file(path, list(named.items()), progress)
        return [path]
    base = path.name.removesuffix(".weights.h5")
    shards: list[list[tuple[str, LazyTensor]]] = [[]]
    size = 0
    for group, items in _by_group(named).items():
        group_bytes = sum(t.nbytes for _, t in items)
        if shards[-1] and size + group_bytes > shard_size:
            shards.append([])
            size = 0
        shards[-1].extend(items)
        size += group_bytes
    written, weight_map = [], {}
    for k, items in enumerate(shards):
        shard = path.with_name(f"{base}_{k:05d}.weights.h5")
        _write_file(shard, items, progress)
        written.append(shard)
        for name, _ in items:
            weight_map["/" + name.rsplit("/", 1)[0]] = shard.name
    index = path.with_name(f"{base}.weights.json")
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=4),
                     encoding="utf-8")
    return [index, *written]


def _by_group(named: Mapping[str, LazyTensor]) -> dict[str, list[tuple[str, LazyTensor]]]:
    groups: dict[str, list[tuple[str, LazyTensor]]] = {}
    for name, tensor in named.items():
        groups.setdefault(name.rsplit("/", 1)[0], []).append((name, tensor))
    return groups


def _write_file(path: Path, items: Sequence[tuple[str, LazyTensor]], progress: Progress | None) -> None:
    h5py = h5py_module()
    dcpl = preallocated(h5py)
    placed: list[tuple[str, LazyTensor, int]] = []
    with timing.phase("lay out"), h5py.File(path, "w") as f:
        for name, tensor in items:
            group_path, var = name.rsplit("/", 1)
            group = f.require_group(group_path)
            offset = allocate(group, var, tensor, dcpl)
            if offset is not None:
                placed.append((name, tensor, offset))
            elif progress:
                progress(name, 0)
    fill_placed(path, placed, progress)
