"""Property-based fuzzing of every reader: mutate valid files and read them; anything but a typed
llmstd error (or success) is a failure. `make fuzz` raises the example count via LLMSTD_FUZZ_EXAMPLES."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmstd
from llmstd.converters import safetensors_io, torch_pickle

from .catalogue import EXAMPLE

EXAMPLES = int(os.environ.get("LLMSTD_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)


@st.composite
def mutations(draw: st.DrawFn, size: int) -> list[tuple[str, int, int]]:
    """A few edits: flip a byte, truncate, insert or overwrite a run, biased towards the header."""
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
        near_start = draw(st.booleans())
        position = draw(st.integers(0, min(size, 4096) if near_start else size))
        edits.append((kind, position, draw(st.integers(0, 255))))
    return edits


def _apply(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, position, value in edits:
        position = min(position, len(buf))
        if kind == "flip" and position < len(buf):
            buf[position] ^= value or 1
        elif kind == "truncate":
            del buf[position:]
        elif kind == "insert":
            buf[position:position] = bytes([value]) * (value % 17 + 1)
        elif kind == "overwrite":
            buf[position:position + 8] = value.to_bytes(1, "little") * 8
    return bytes(buf)


def _read_everything(path: Path) -> None:
    try:
        ckpt = llmstd.load(path)
        for tensor in ckpt.values():
            tensor.load()
    except llmstd.LlmstdError:
        pass


def _fuzz_dir(files: dict[str, bytes], target: str, edits: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "ckpt"
        d.mkdir()
        for name, data in files.items():
            (d / name).write_bytes(_apply(data, edits) if name == target else data)
        _read_everything(d)


def _base_files(build: Callable[[Path], None]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        build(d)
        return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def _hf_safetensors(d: Path) -> None:
    shutil.copy(EXAMPLE / "config.json", d / "config.json")
    shutil.copy(EXAMPLE / "model.safetensors", d / "model.safetensors")


def _hf_bin(d: Path) -> None:
    shutil.copy(EXAMPLE / "config.json", d / "config.json")
    sf = safetensors_io.open_file(EXAMPLE / "model.safetensors")
    torch_pickle.write_torch_checkpoint(d / "pytorch_model.bin", list(sf.tensors.items()))


def _hf_sharded(d: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        llmstd.convert(EXAMPLE, out, to="hf", shard_size="60KB")
        for p in out.iterdir():
            shutil.copy(p, d / p.name)


def _canonical(d: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        llmstd.convert(EXAMPLE, out, to="canonical")
        for p in out.iterdir():
            shutil.copy(p, d / p.name)


def _converted_to(to: str, **options: str) -> Callable[[Path], None]:
    def build(d: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            llmstd.convert(EXAMPLE, out, to=to, **options)  # type: ignore[arg-type]
            for p in out.iterdir():
                if p.is_file():  # (a keras-hub preset's huggingface/ folder is not read as weights)
                    shutil.copy(p, d / p.name)

    return build


TARGETS = {
    "safetensors": (_hf_safetensors, "model.safetensors"),
    "torch-pickle": (_hf_bin, "pytorch_model.bin"),
    "shard-index": (_hf_sharded, "model.safetensors.index.json"),
    "shard": (_hf_sharded, "model-00001-of-00003.safetensors"),
    "config-json": (_hf_safetensors, "config.json"),
    "canonical": (_canonical, "canonical.safetensors"),
    "tf-h5": (_converted_to("tf-h5"), "tf_model.h5"),
    "tf-ckpt-index": (_converted_to("tf-ckpt"), "model.ckpt.index"),
    "tf-ckpt-data": (_converted_to("tf-ckpt"), "model.ckpt.data-00000-of-00001"),
    # A tiny --shard-size puts every weight in model.onnx.data, so both files are exercised.
    "onnx-graph": (_converted_to("onnx", shard_size="1KB"), "model.onnx"),
    "onnx-external-data": (_converted_to("onnx", shard_size="1KB"), "model.onnx.data"),
    "keras-hub-weights": (_converted_to("keras-hub"), "model.weights.h5"),
    "keras-hub-config": (_converted_to("keras-hub"), "config.json"),
}


@pytest.mark.parametrize("reader", sorted(TARGETS))
def test_fuzz_reader(reader: str) -> None:
    build, target = TARGETS[reader]
    files = _base_files(build)
    assert target in files, sorted(files)

    @FUZZ
    @given(edits=mutations(len(files[target])))
    def run(edits: list[tuple[str, int, int]]) -> None:
        _fuzz_dir(files, target, edits)

    run()
