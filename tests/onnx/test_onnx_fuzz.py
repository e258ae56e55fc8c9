"""Property-based fuzzing of the ONNX reader (as tests/hostile/test_fuzz.py does for the others): mutate
the bytes of an llmstd-written model.onnx and of its model.onnx.data, then read every tensor; anything
but success or a typed llmstd error is a failure. LLMSTD_FUZZ_EXAMPLES sets the example count."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmstd

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt2"
EXAMPLES = int(os.environ.get("LLMSTD_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)


@st.composite
def mutations(draw: st.DrawFn, size: int) -> list[tuple[str, int, int]]:
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


@pytest.fixture(scope="module")
def onnx_files() -> dict[str, bytes]:
    pytest.importorskip("onnx")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        llmstd.convert(EXAMPLE, out, to="onnx", shard_size="1KB")  # weights go to external data
        return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


@pytest.mark.parametrize("target", ["model.onnx", "model.onnx.data"])
def test_fuzz_onnx_reader(onnx_files: dict[str, bytes], target: str) -> None:
    assert target in onnx_files, sorted(onnx_files)

    @FUZZ
    @given(edits=mutations(len(onnx_files[target])))
    def run(edits: list[tuple[str, int, int]]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "ckpt"
            d.mkdir()
            for name, data in onnx_files.items():
                (d / name).write_bytes(_apply(data, edits) if name == target else data)
            try:
                ckpt = llmstd.load(d)
                for tensor in ckpt.values():
                    tensor.load()
            except llmstd.LlmstdError:
                pass

    run()
