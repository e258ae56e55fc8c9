"""Pieces every format writer and reader shares: safetensors sets (single file or sharded with an
index), side files (tokenizer, chat template, sentence-transformers modules, ...) and dtype summaries."""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llmstd import timing
from llmstd.checkpoint import SideFiles
from llmstd.converters import safetensors_io, shard_index
from llmstd.errors import UnsafeInputError
from llmstd.oscalls import usable_cores
from llmstd.tensors import LazyTensor, map_populated

# With a file (not a directory) as input, only these files beside it travel: its folder may hold
# anything. From a checkpoint directory, every file and folder travels except weights (below).
SIDECAR_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
    "generation_config.json", "chat_template.jinja", "chat_template.json",
)
# Top-level files holding weights of any format: never carried, since they are not the converted
# model (a stale tf_model.h5 next to a cast model.safetensors would be a different model).
WEIGHT_FILE_PATTERNS = (
    "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json", "*.pt", "*.pth",
    "*.h5", "*.keras", "*.msgpack", "*.msgpack.index.json", "*.onnx", "*.onnx.data", "*.onnx_data", "*.gguf",
    "*.ckpt", "*.ckpt.index", "*.ckpt.data-*", "*.index", "*.data-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]",
    "checkpoint", "*.tflite",
)
# Folders that describe a working copy or a download, not the model.
NOT_CARRIED_DIRS = {".git": "version-control history", ".cache": "download cache metadata",
                    "__pycache__": "Python bytecode cache"}

Progress = Callable[[str, int], None]


def _hub_blob(link: Path, target: Path) -> bool:
    """A link from a Hugging Face hub cache snapshot (<repo>/snapshots/<rev>/...) to the repository's
    content-addressed blobs (<repo>/blobs/<hash>), the one way that cache stores every file."""
    parts = link.parent.parts
    if "snapshots" not in parts:
        return False
    repo = Path(*parts[:len(parts) - 1 - parts[::-1].index("snapshots")])
    return target.parent == (repo / "blobs").resolve() and target.is_file()


def side_files(path: Path, read: Sequence[Path] = ()) -> SideFiles:
    """The side files of the checkpoint at ``path`` (a directory, or a file/prefix inside one).

    ``read`` are the files the format reader consumed (weights, index, config): those are written
    anew by the target format, as are top-level weight files of any format. Links may point only
    inside the checkpoint directory (or, from a Hugging Face hub cache snapshot, to its blobs): a
    link leaving it is refused, since converting must never copy an unrelated file (a key, a
    password store) into an output meant for publishing."""
    out = SideFiles()
    if not path.is_dir():
        directory = path.parent
        for name in SIDECAR_FILES:
            candidate = directory / name
            if candidate.is_file() and _link_allowed(candidate, directory):
                out.files[name] = candidate
        return out
    root = path.resolve()
    consumed = {p.name for p in read if p.parent.resolve() == root}
    seen: set[Path] = set()

    def walk(directory: Path, prefix: str) -> None:
        real = directory.resolve()
        if real in seen:
            return
        seen.add(real)
        for entry in sorted(directory.iterdir(), key=lambda p: p.name):
            rel = f"{prefix}{entry.name}"
            if entry.is_symlink() and not _link_allowed(entry, root):
                raise UnsafeInputError(
                    f"side file '{rel}' is a link leaving the checkpoint directory (to {os.readlink(entry)})",
                    file=path, hint="llmstd never copies files from outside a checkpoint; replace the link by "
                                    "the file itself (cp -L) or remove it")
            if entry.is_dir():
                if not prefix and entry.name in NOT_CARRIED_DIRS:
                    out.skipped[rel + "/"] = NOT_CARRIED_DIRS[entry.name]
                else:
                    walk(entry, rel + "/")
            elif not entry.is_file():
                out.skipped[rel] = "not a regular file"
            elif not prefix and entry.name in consumed:
                continue  # the format's own file, written anew by the target format
            elif not prefix and any(fnmatch.fnmatch(entry.name, p) for p in WEIGHT_FILE_PATTERNS):
                out.skipped[rel] = "weights of another format, not the converted model"
            else:
                out.files[rel] = entry

    walk(path, "")
    return out


def _link_allowed(entry: Path, root: Path) -> bool:
    if not entry.is_symlink():
        return True
    target = entry.resolve()
    return target.is_relative_to(root.resolve()) or _hub_blob(entry, target)


def copy_side_files(side: SideFiles, staging: Path, written: Sequence[Path]) -> list[Path]:
    """Copy ``side`` into ``staging`` (folders recreated); a side file the target format has just
    written itself (e.g. its own config.json) is left behind and recorded as skipped."""
    ours = {p.relative_to(staging).as_posix() for p in written if p.is_relative_to(staging)}
    copied = []
    for rel, src in side.files.items():
        if rel in ours:
            side.skipped[rel] = "the target format writes its own"
            continue
        dst = staging / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        copied.append(dst)
    return copied


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
    sped up the hashing. The threads take the largest files first; files none of them has started
    when the writer calls for the result are hashed by the writer itself, smallest first, since its
    core would otherwise idle (the 1.1B llama's 223 MB last shard, while the thread finished a 985 MB
    one)."""
    workers = workers or max(1, usable_cores() - 1)
    by_size = sorted(files, key=lambda p: p.stat().st_size, reverse=True)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llmstd-sha256") as pool:
        futures = {p: pool.submit(_timed_sha256, p) for p in by_size}

        def wait() -> dict[Path, str]:
            own: dict[Path, str] = {}
            for path in reversed(by_size):
                if not futures[path].cancel():  # started: so are all larger files, which the threads took first
                    break
                with timing.phase("hash after writing"):
                    own[path] = sha256_file(path)
            with timing.phase("wait for hashes"):
                return {p: own[p] if p in own else futures[p].result() for p in files}

        yield wait


def _timed_sha256(path: Path) -> str:
    with timing.phase("hash"):
        return sha256_file(path)


_HASH_WINDOW = 64 * 1024 * 1024  # a multiple of mmap.ALLOCATIONGRANULARITY


def sha256_file(path: Path) -> str:
    """sha256 of a file, hashed straight from the page cache through memory maps: ~20% less CPU
    than read() copies. One window is mapped at a time so resident memory stays small."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        for offset in range(0, size, _HASH_WINDOW):
            with map_populated(fh.fileno(), offset, min(_HASH_WINDOW, size - offset)) as window:
                digest.update(window)
    return digest.hexdigest()
