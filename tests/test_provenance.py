"""The provenance a canonical checkpoint records: every source file's name, size and sha256, hashed
on background threads through memory-mapped windows while the tensors stream out."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import threading
from pathlib import Path

import pytest

import llmstd
from llmstd import timing
from llmstd.converters import safetensors_io
from llmstd.formats import common


def _recorded_files(canonical: Path) -> list[dict[str, object]]:
    header, _ = safetensors_io.read_header(canonical / "canonical.safetensors")
    provenance = json.loads(header["__metadata__"]["llmstd.provenance"])  # type: ignore[index]
    return provenance["source"]["files"]


@pytest.mark.parametrize("window", [mmap.ALLOCATIONGRANULARITY, common._HASH_WINDOW])
def test_source_hashes_match_hashlib(tiny_gpt2_dir: Path, tmp_path: Path, window: int,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A one-page window hashes the example over dozens of windows; the default one in a single window.
    monkeypatch.setattr(common, "_HASH_WINDOW", window)
    out = tmp_path / "canonical"
    llmstd.convert(tiny_gpt2_dir, out, to="canonical")
    recorded = {f["name"]: f for f in _recorded_files(out)}
    sources = {p.name: p for p in tiny_gpt2_dir.iterdir() if p.name in ("model.safetensors", "config.json")}
    assert set(recorded) == set(sources)
    for name, path in sources.items():
        data = path.read_bytes()
        assert recorded[name]["bytes"] == len(data)
        assert recorded[name]["sha256"] == hashlib.sha256(data).hexdigest(), name


def test_empty_and_odd_sized_files_hash_like_hashlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "_HASH_WINDOW", mmap.ALLOCATIONGRANULARITY)
    for size in (0, 1, mmap.ALLOCATIONGRANULARITY, 3 * mmap.ALLOCATIONGRANULARITY + 5):
        path = tmp_path / f"f{size}"
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        path.write_bytes(data)
        assert common.sha256_file(path) == hashlib.sha256(data).hexdigest()
    with common.hashing_in_background([tmp_path / "f0", tmp_path / "f1"]) as wait:
        assert list(wait()) == [tmp_path / "f0", tmp_path / "f1"]  # the caller's order, not the size order


def test_the_writer_hashes_the_files_no_thread_has_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the writer asks for the hashes, it hashes the files still queued itself, smallest first,
    rather than idle while the background thread works through them."""
    files = {name: tmp_path / name for name in ("small", "big", "mid")}
    for size, name in enumerate(("small", "mid", "big"), start=1):
        files[name].write_bytes(os.urandom(size * mmap.ALLOCATIONGRANULARITY + 7))
    big_started, writer_started = threading.Event(), threading.Event()
    hashed_by: dict[str, str] = {}
    real_sha256 = common.sha256_file

    def sha256_file(path: Path) -> str:
        hashed_by[path.name] = threading.current_thread().name
        if path.name == "big":  # the thread holds the largest file until the writer has taken another
            big_started.set()
            assert writer_started.wait(10)
        else:
            writer_started.set()
        return real_sha256(path)

    monkeypatch.setattr(common, "sha256_file", sha256_file)
    with timing.collect() as spent, common.hashing_in_background(list(files.values()), workers=1) as wait:
        assert big_started.wait(10)
        digests = wait()
    assert digests == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files.values()}
    assert list(digests) == list(files.values())
    assert hashed_by["big"].startswith("llmstd-sha256")
    assert hashed_by["small"] == hashed_by["mid"] == threading.current_thread().name
    assert "hash after writing" in spent  # the writer's own phase, beside the thread's "hash"
