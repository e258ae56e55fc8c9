"""The provenance a canonical checkpoint records: every source file's name, size and sha256, hashed
on background threads through memory-mapped windows while the tensors stream out."""

from __future__ import annotations

import hashlib
import json
import mmap
from pathlib import Path

import pytest

import llmstd
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
