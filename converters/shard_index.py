"""Sharded checkpoints: the ``*.index.json`` that maps tensor names to shard files, for any
container (safetensors or torch pickle), and the plan that splits tensors into shards.

An index is checked against its shards in both directions — every indexed tensor is in the shard
the index names, every tensor of every shard is indexed there — and shard paths must be plain file
names next to the index, since ``../`` or absolute paths would let a checkpoint make a reader open
arbitrary host files. Reading is strict, or lenient with a :class:`~llmstd.findings.Findings`
collector (codes ``bad_index``, ``missing_shard``, ``bad_header``, ``index_names_absent_tensor``,
``index_wrong_shard``, ``unindexed_tensor``, ``duplicate_tensor``, ``total_size``, ``stray_shard``).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from llmstd import timing
from llmstd.errors import FormatError, UnsafeInputError
from llmstd.findings import Findings, attempt, refuse, refuse_each
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
        timing.fsync(fh.fileno())


def read_index(index_path: Path, findings: Findings | None = None) -> tuple[dict[str, Path], int | None]:
    """Validate an index file; return (tensor name -> shard path, declared total_size).

    With ``findings`` (lenient), an unreadable index yields no entries, an entry with an unsafe shard
    path is left out, and a missing shard file is recorded once per shard with its entries kept.
    """
    data = attempt(findings, "bad_index", lambda: read_json_object(index_path))
    if data is None:
        return {}, None
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        refuse(findings, "bad_index", FormatError("index has no 'weight_map' object", file=index_path))
        return {}, None
    meta = data.get("metadata", {})
    total = meta.get("total_size") if isinstance(meta, dict) else None
    if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
        refuse(findings, "bad_index", FormatError(f"total_size {total!r} is not a non-negative integer",
                                                  file=index_path))
        total = None
    elif total is None and findings is not None:  # lint only: readers do not need it
        findings.warning("total_size", "index has no metadata.total_size", file=index_path)
    shards: dict[str, Path] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or shard != os.path.basename(shard) or shard in (".", ".."):
            refuse(findings, "bad_index", UnsafeInputError(
                f"shard path {shard!r} is not a plain file name in the checkpoint directory",
                file=index_path, tensor=name, hint="an index may only name files next to it"))
            continue
        shards[name] = index_path.parent / shard
    missing = sorted({p for p in shards.values() if not p.is_file()})
    if missing:
        hint = "the download is incomplete; fetch the missing shards"
        refuse_each(findings, FormatError(
            f"index names shard file(s) that do not exist: {', '.join(p.name for p in missing)}", file=index_path,
            hint=hint), [("missing_shard", FormatError(
                f"the index places {sum(1 for s in shards.values() if s == p)} tensor(s) in {p.name}, which does "
                "not exist", file=p, hint=hint)) for p in missing])
    return shards, total


def open_sharded(index_path: Path, open_shard: Callable[[Path], Mapping[str, LazyTensor]],
                 findings: Findings | None = None) -> tuple[dict[str, LazyTensor], list[Path]]:
    """Open every shard named by an index and return (name -> tensor, shard paths opened).

    With ``findings`` (lenient), every problem is recorded and every tensor of every readable shard
    is returned (the copy in the shard the index names, where there are two).
    """
    shard_of, total = read_index(index_path, findings)
    contents: dict[Path, Mapping[str, LazyTensor]] = {}
    for shard in sorted(set(shard_of.values())):
        if shard.is_file():  # a missing one was reported by read_index
            opened = attempt(findings, "bad_header", functools.partial(open_shard, shard))
            if opened is not None:
                contents[shard] = opened
    stored_in: dict[str, Path] = {}
    for shard, shard_tensors in contents.items():
        for name in shard_tensors:
            stored_in.setdefault(name, shard)
    tensors: dict[str, LazyTensor] = {}
    for name, shard in shard_of.items():
        if shard not in contents:
            continue
        if name in contents[shard]:
            tensors[name] = contents[shard][name]
            continue
        elsewhere = f" (it is stored in {stored_in[name].name})" if name in stored_in else ""
        refuse(findings, "index_wrong_shard" if elsewhere else "index_names_absent_tensor", FormatError(
            f"index places this tensor in {shard.name}, which does not contain it{elsewhere}",
            file=index_path, tensor=name))
    for shard, shard_tensors in contents.items():
        for name, tensor in shard_tensors.items():
            indexed = shard_of.get(name)
            # A tensor stored away from the shard the index names was reported just above.
            if indexed != shard and (indexed is None or name in contents.get(indexed, {})):
                where = f"the index places it in {indexed.name}" if indexed else "the index omits it"
                refuse(findings, "unindexed_tensor" if indexed is None else "duplicate_tensor", FormatError(
                    f"shard {shard.name} also contains this tensor, but {where}", file=index_path, tensor=name))
            tensors.setdefault(name, tensor)
    # With a shard missing or unreadable, the bytes cannot be counted (its absence is the finding).
    if total is not None and len(contents) == len(set(shard_of.values())):
        actual = sum(t.nbytes for t in tensors.values())
        if total != actual:
            refuse(findings, "total_size", FormatError(
                f"index total_size {total} does not match the {actual} bytes of its tensors", file=index_path,
                hint="the index is stale or the shards were replaced; regenerate it"))
    if findings is not None and shard_of:  # an unreadable index uses no shard: none is stray for it
        _stray_shards(index_path, set(shard_of.values()), findings)
    return tensors, sorted(contents)


def _stray_shards(index_path: Path, used: set[Path], findings: Findings) -> None:
    """Lint only (readers never open them): files named like a shard of this index that it does not use,
    left over from an earlier save with another shard count."""
    base, suffix = os.path.splitext(index_path.name.removesuffix(".index.json"))
    pattern = re.compile(re.escape(base) + r"-\d{5}-of-\d{5}" + re.escape(suffix) + r"\Z")
    for path in sorted(index_path.parent.iterdir()):
        if pattern.match(path.name) and path not in used:
            findings.warning("stray_shard", f"looks like a shard of {index_path.name} but the index does not use it",
                             file=path)
