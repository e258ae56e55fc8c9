"""Pieces every format writer and reader shares: safetensors sets (single file or sharded with an
index), sidecar files (tokenizer, generation config) and dtype summaries."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import mmap
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llmstd.converters import safetensors_io, shard_index
from llmstd.oscalls import usable_cores
from llmstd.tensors import LazyTensor

# Files that travel with the weights unchanged; the tokenizer is needed to check a model on text.
SIDECAR_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
    "generation_config.json", "chat_template.jinja", "chat_template.json",
)

Progress = Callable[[str, int], None]


def sidecars_in(directory: Path) -> list[Path]:
    return [directory / n for n in SIDECAR_FILES if (directory / n).is_file() and not (directory / n).is_symlink()]


def copy_sidecars(sidecars: Sequence[Path], staging: Path) -> list[Path]:
    written = []
    for src in sidecars:
        dst = staging / src.name
        shutil.copyfile(src, dst)
        written.append(dst)
    return written


def dominant_dtype(tensors: Mapping[str, LazyTensor]) -> str:
    """The floating dtype holding most bytes (the model's dtype), or the most common dtype."""
    by_bytes: collections.Counter[str] = collections.Counter()
    for t in tensors.values():
        if t.dtype.is_float:
            by_bytes[t.dtype.name] += t.nbytes
    if not by_bytes:
        by_bytes.update(t.dtype.name for t in tensors.values())
    return by_bytes.most_common(1)[0][0] if by_bytes else "float32"


def write_safetensors_set(
    staging: Path,
    stem: str,
    entries: Sequence[tuple[str, LazyTensor]],
    metadata: Mapping[str, str],
    *,
    shard_size: int | None,
    progress: Progress | None = None,
    metadata_reserve: int = 0,
) -> list[Path]:
    """Write ``<stem>.safetensors`` or shards ``<stem>-0000i-of-0000n.safetensors`` plus
    ``<stem>.safetensors.index.json`` (written last, so a reader never sees an index without shards)."""
    shards = shard_index.plan_shards(entries, shard_size)
    if len(shards) == 1:
        path = staging / f"{stem}.safetensors"
        safetensors_io.write_file(path, shards[0], metadata, progress=progress, metadata_reserve=metadata_reserve)
        return [path]
    files, weight_map = [], {}
    for k, shard in enumerate(shards, start=1):
        name = shard_index.shard_file_name(stem, ".safetensors", k, len(shards))
        safetensors_io.write_file(staging / name, shard, metadata, progress=progress,
                                  metadata_reserve=metadata_reserve)
        files.append(staging / name)
        weight_map.update({tensor_name: name for tensor_name, _ in shard})
    index = staging / f"{stem}.safetensors.index.json"
    shard_index.write_index(index, weight_map, sum(t.nbytes for _, t in entries))
    return [*files, index]


@contextlib.contextmanager
def hashing_in_background(files: Sequence[Path], workers: int | None = None) -> Iterator[Callable[[], dict[Path, str]]]:
    """Compute the sha256 of ``files`` on background threads while the caller writes (hashlib
    releases the GIL); yields a function that waits for the result. One core is left to the writer:
    on two cores a second hashing thread slowed the copy it shares the machine with more than it
    sped up the hashing. Largest files start first, so the threads finish close together."""
    workers = workers or max(1, usable_cores() - 1)
    by_size = sorted(files, key=lambda p: p.stat().st_size, reverse=True)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llmstd-sha256") as pool:
        futures = {p: pool.submit(sha256_file, p) for p in by_size}
        yield lambda: {p: futures[p].result() for p in files}


_HASH_WINDOW = 64 * 1024 * 1024  # a multiple of mmap.ALLOCATIONGRANULARITY


def sha256_file(path: Path) -> str:
    """sha256 of a file, hashed straight from the page cache through memory maps: ~20% less CPU
    than read() copies. One window is mapped at a time so resident memory stays small."""
    digest = hashlib.sha256()
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # populate: no page fault per 4 KB
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        for offset in range(0, size, _HASH_WINDOW):
            length = min(_HASH_WINDOW, size - offset)
            with mmap.mmap(fh.fileno(), length, flags=flags, prot=mmap.PROT_READ, offset=offset) as window:
                digest.update(window)
    return digest.hexdigest()
