"""The command line: ``llmstd convert SRC DST --to onnx`` and back to hf / canonical, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx_helpers as oh

CLI = Path(sys.executable).parent / "llmstd"


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200", "USE_TF": "0"}
    env.pop("LLMSTD_DEBUG", None)
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, env=env, check=False, timeout=300)


def _assert_same_tensors(a: Path, b: Path) -> None:
    from safetensors.numpy import load_file

    want, got = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert sorted(want) == sorted(got)
    assert all(want[k].dtype == got[k].dtype and want[k].tobytes() == got[k].tobytes() for k in want)


def test_convert_to_onnx_and_back(store, tmp_path: Path) -> None:
    src = store.hf_dir("llama")
    result = _run("convert", src, tmp_path / "onnx", "--to", "onnx")
    assert result.returncode == 0, result.stderr
    assert "(onnx)" in result.stdout and "model.onnx" in result.stdout
    inputs = oh.batch("llama")
    got = oh.ort_outputs(oh.ort_session(tmp_path / "onnx" / "model.onnx"), inputs)["logits"]
    assert oh.max_abs_on_tokens(store.reference("llama")["logits"], got, inputs["attention_mask"]) <= 1e-4

    result = _run("convert", tmp_path / "onnx", tmp_path / "hf", "--to", "hf")
    assert result.returncode == 0, result.stderr
    assert "(onnx, onnx, llama)" in result.stdout
    _assert_same_tensors(src, tmp_path / "hf")

    result = _run("convert", tmp_path / "onnx", tmp_path / "canonical", "--to", "canonical", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["source_format"] == "onnx" and report["files"] == ["canonical.safetensors", "generation_config.json"]


def test_external_data_from_the_cli(store, tmp_path: Path) -> None:
    result = _run("convert", store.hf_dir("gpt2"), tmp_path / "onnx", "--to", "onnx", "--shard-size", "20KB")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "onnx" / "model.onnx.data").is_file()
    result = _run("inspect", tmp_path / "onnx", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["format"] == "onnx" and info["container"] == "onnx-external-data"
    assert info["tied"] == {"lm_head.weight": "embed.tokens.weight"}


def test_foreign_export_to_hf(store, tmp_path: Path) -> None:
    result = _run("convert", store.export("bert-mlm", "dynamo"), tmp_path / "hf", "--to", "hf")
    assert result.returncode == 0, result.stderr
    assert "dropped duplicate" in result.stdout  # the transposed copy of the tied decoder
    _assert_same_tensors(store.hf_dir("bert-mlm"), tmp_path / "hf")


def test_static_export_error_is_one_line(store, tmp_path: Path) -> None:
    result = _run("convert", store.export("gpt2", "static"), tmp_path / "hf", "--to", "hf")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "embed.positions.weight" in lines[0], lines
