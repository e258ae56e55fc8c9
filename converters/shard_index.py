"""Sharded checkpoints: the ``*.index.json`` that maps tensor names to shard files, for any
container (safetensors or torch pickle), and the plan that splits tensors into shards.

An index is checked against its shards in both directions — every indexed tensor is in the shard
the index names, every tensor of every shard is indexed there — and shard paths must be plain file
names next to the index, since ``../`` or absolute paths would let a checkpoint make a reader open
arbitrary host files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from llmstd.errors import FormatError, UnsafeInputError
from llmstd.jsonfile import dumps, read_json_object
from llmstd.tensors import LazyTensor

Entries = Sequence[tuple[str, LazyTensor]]


def plan_shards(entries: Entries, max_bytes: int | None) -> list[list[tuple[str, LazyTensor]]]:
    """Group tensors in order into shards of at most ``max_bytes`` (a larger tensor gets its own)."""
    if not max_bytes:
        return [list(entries)]
    shards: list[list[tuple[str, LazyTensor]]] = [[]]
    size = 0
    for name, tensor in entries:
        if shards[-1] and size + tensor.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, tensor))
        size += tensor.nbytes
    return shards


def shard_file_name(stem: str, suffix: str, index: int, count: int) -> str:
    """Hugging Face's shard naming: ``model-00001-of-00003.safetensors``."""
    return f"{stem}-{index:05d}-of-{count:05d}{suffix}"


def write_index(path: Path, weight_map: Mapping[str, str], total_size: int) -> None:
    body = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(dumps(body))
        fh.flush()
        os.fsync(fh.fileno())


def read_index(index_path: Path) -> tuple[dict[str, Path], int | None]:
    """Validate an index file; return (tensor name -> shard path, declared total_size)."""
    data = read_json_object(index_path)
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise FormatError("index has no 'weight_map' object", file=index_path)
    meta = data.get("metadata", {})
    total = meta.get("total_size") if isinstance(meta, dict) else None
    if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
        raise FormatError(f"total_size {total!r} is not a non-negative integer", file=index_path)
    shards: dict[str, Path] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or shard != os.path.basename(shard) or shard in (".", ".."):
            raise UnsafeInputError(f"shard path {shard!r} is not a plain file name in the checkpoint directory",
                                   file=index_path, tensor=name, hint="an index may only name files next to it")
        shards[name] = index_path.parent / shard
    missing = sorted({p.name for p in shards.values() if not p.is_file()})
    if missing:
        raise FormatError(f"index names shard file(s) that do not exist: {', '.join(missing)}", file=index_path,
                          hint="the download is incomplete; fetch the missing shards")
    return shards, total


def open_sharded(index_path: Path, open_shard: Callable[[Path], Mapping[str, LazyTensor]]) -> tuple[dict[str, LazyTensor], list[Path]]:
    """Open every shard named by an index and return (name -> tensor, shard paths)."""
    shard_of, total = read_index(index_path)
    contents = {p: open_shard(p) for p in sorted(set(shard_of.values()))}
    tensors: dict[str, LazyTensor] = {}
    for name, shard in shard_of.items():
        if name not in contents[shard]:
            raise FormatError(f"index places this tensor in {shard.name}, which does not contain it",
                              file=index_path, tensor=name)
        tensors[name] = contents[shard][name]
    for shard, shard_tensors in contents.items():
        for name in shard_tensors:
            if shard_of.get(name) != shard:
                where = f"the index places it in {shard_of[name].name}" if name in shard_of else "the index omits it"
                raise FormatError(f"shard {shard.name} also contains this tensor, but {where}",
                                  file=index_path, tensor=name)
    actual = sum(t.nbytes for t in tensors.values())
    if total is not None and total != actual:
        raise FormatError(f"index total_size {total} does not match the {actual} bytes of its tensors",
                          file=index_path, hint="the index is stale or the shards were replaced; regenerate it")
    return tensors, sorted(contents)
