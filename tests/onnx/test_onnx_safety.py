"""Hostile and corrupt ONNX files: external data that escapes the model directory, byte ranges past
the end of a file, and payloads whose size disagrees with the tensor's shape are refused before any
byte is read; valid payloads in every storage form decode exactly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from llmstd.converters import onnx_io

from llmstd.errors import FormatError, UnsafeInputError

VALUES = np.arange(4, dtype=np.float32) + 0.5


def _write(directory: Path, tensor) -> Path:  # type: ignore[no-untyped-def]
    """A one-node model (Identity of the initializer) written without onnx's external-data helpers."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", [tensor.name], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(tensor.dims))],
                              initializer=[tensor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _external(location: str, offset: int = 0, length: int | None = 16, dims: tuple[int, ...] = (4,)):  # type: ignore[no-untyped-def]
    from onnx import TensorProto

    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=list(dims))
    tensor.data_location = TensorProto.EXTERNAL
    entries = [("location", location), ("offset", str(offset))] + ([("length", str(length))] if length is not None else [])
    for key, value in entries:
        item = tensor.external_data.add()
        item.key, item.value = key, value
    return tensor


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(VALUES.tobytes())
    return secret


@pytest.mark.parametrize("location", ["../secret.bin", "a/../../secret.bin", "./../secret.bin", "..\\secret.bin"])
def test_parent_references_are_refused(tmp_path: Path, outside: Path, location: str) -> None:
    (tmp_path / "model" / "a").mkdir(parents=True)
    path = _write(tmp_path / "model", _external(location))
    with pytest.raises(UnsafeInputError, match="climbs out"):
        onnx_io.read(path)


def test_absolute_locations_are_refused(tmp_path: Path, outside: Path) -> None:
    for location in (str(outside), "C:\\secret.bin", "\\\\server\\share\\secret.bin"):
        path = _write(tmp_path / "model", _external(location))
        with pytest.raises(UnsafeInputError, match="absolute"):
            onnx_io.read(path)


def test_symlinks_are_refused(tmp_path: Path, outside: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    os.symlink(outside, model_dir / "weights.bin")
    path = _write(model_dir, _external("weights.bin"))
    with pytest.raises(UnsafeInputError, match="symlink"):
        onnx_io.read(path)
    # A symlinked directory on the way is refused too.
    os.symlink(tmp_path, model_dir / "up")
    path = _write(model_dir, _external("up/secret.bin"))
    with pytest.raises(UnsafeInputError, match="symlink"):
        onnx_io.read(path)


def test_ranges_past_the_end_are_refused(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "w.bin").write_bytes(VALUES.tobytes())  # 16 bytes
    cases = [
        (_external("w.bin", offset=64), "past the end"),
        (_external("w.bin", offset=8, length=16), "run past the end"),
        (_external("w.bin", offset=0, length=12), "differs from 16 bytes"),
        (_external("w.bin", offset=4, length=None), "differs from 16 bytes"),  # to end of file: 12 bytes
        (_external("w.bin", dims=(8,), length=32), "run past the end"),
        (_external("missing.bin"), "does not exist"),
    ]
    for tensor, message in cases:
        path = _write(model_dir, tensor)
        with pytest.raises(FormatError, match=message) as info:
            onnx_io.read(path)
        assert info.value.tensor == "w"


def test_bad_offset_values_are_refused(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "w.bin").write_bytes(VALUES.tobytes())
    tensor = _external("w.bin")
    tensor.external_data[1].value = "-8"
    with pytest.raises(FormatError, match="not a non-negative integer"):
        onnx_io.read(_write(model_dir, tensor))


def test_valid_external_data_is_memory_mapped(tmp_path: Path) -> None:
    from llmstd.tensors import FileSliceTensor

    model_dir = tmp_path / "model"
    (model_dir / "sub").mkdir(parents=True)
    (model_dir / "sub" / "w.bin").write_bytes(b"\0" * 8 + VALUES.tobytes())
    f = onnx_io.read(_write(model_dir, _external("sub/w.bin", offset=8)))
    tensor = f.tensors["w"]
    assert isinstance(tensor, FileSliceTensor)
    np.testing.assert_array_equal(tensor.load(), VALUES)
    assert f.data_files == [model_dir / "sub" / "w.bin"]


def test_raw_data_size_must_match_the_shape(tmp_path: Path) -> None:
    from onnx import TensorProto

    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], raw_data=VALUES.tobytes()[:12])
    with pytest.raises(FormatError, match="raw_data holds 12 bytes, but float32\\[4\\] needs 16"):
        onnx_io.read(_write(tmp_path, tensor))
    short = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], float_data=[1.0, 2.0])
    with pytest.raises(FormatError, match="float_data holds 2 values"):
        onnx_io.read(_write(tmp_path, short))


def test_every_storage_form_decodes(tmp_path: Path) -> None:
    import ml_dtypes
    from onnx import TensorProto, numpy_helper

    halves = np.array([1.5, -2.25, 65504.0, 6e-8], dtype=np.float16)
    brains = np.array([1.5, -3.0, 1e30, -1e-30], dtype=ml_dtypes.bfloat16)
    cases = {
        "raw": numpy_helper.from_array(VALUES, "w"),
        "typed": TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], float_data=VALUES.tolist()),
        "f16": TensorProto(name="w", data_type=TensorProto.FLOAT16, dims=[4],
                           int32_data=halves.view(np.uint16).astype(np.int32).tolist()),
        "bf16": TensorProto(name="w", data_type=TensorProto.BFLOAT16, dims=[4],
                            int32_data=brains.view(np.uint16).astype(np.int32).tolist()),
        "i64": TensorProto(name="w", data_type=TensorProto.INT64, dims=[2, 2], int64_data=[1, -2, 3, 2**40]),
    }
    expected = {"raw": VALUES, "typed": VALUES, "f16": halves, "bf16": brains,
                "i64": np.array([[1, -2], [3, 2**40]], dtype=np.int64)}
    for label, tensor in cases.items():
        got = onnx_io.read(_write(tmp_path / label, tensor)).tensors["w"].load()
        assert got.dtype == expected[label].dtype and got.tobytes() == expected[label].tobytes(), label


def test_cli_reports_unsafe_location_as_one_line(tmp_path: Path, outside: Path) -> None:
    import subprocess
    import sys

    model_dir = tmp_path / "model"
    _write(model_dir, _external("../secret.bin"))
    (model_dir / "config.json").write_text('{"model_type": "gpt2"}')
    exe = Path(sys.executable).parent / "llmstd"
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "300"}
    result = subprocess.run([str(exe), "convert", str(model_dir), str(tmp_path / "out"), "--to", "hf"],
                            capture_output=True, text=True, env=env, check=False, timeout=120)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "climbs out with '..'" in lines[0], lines
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
