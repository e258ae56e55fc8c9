"""Source detection: format from the files, architecture from config.json's model_type, or — when
the config does not say — from the tensor names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import llmstd
from llmstd.errors import ConfigError, DetectionError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny-gpt2"


def _without_model_type(tmp_path: Path) -> Path:
    d = tmp_path / "ckpt"
    shutil.copytree(EXAMPLE, d)
    config = json.loads((d / "config.json").read_text())
    del config["model_type"]
    (d / "config.json").write_text(json.dumps(config))
    return d


def test_architecture_detected_from_tensor_names(tmp_path: Path) -> None:
    report = llmstd.inspect(_without_model_type(tmp_path))
    assert (report.format, report.dialect, report.architecture) == ("hf", "hf", "gpt2")


def test_names_fitting_no_map_is_an_error(tmp_path: Path) -> None:
    d = _without_model_type(tmp_path)
    llmstd.convert(EXAMPLE, tmp_path / "canonical", to="canonical")
    # Canonical tensor names in an HF directory fit no map's hf dialect.
    shutil.copy(tmp_path / "canonical" / "canonical.safetensors", d / "model.safetensors")
    with pytest.raises(ConfigError, match="pass --arch"):
        llmstd.inspect(d)


def test_unrecognised_path(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DetectionError, match="not a checkpoint"):
        llmstd.load(tmp_path)
    with pytest.raises(DetectionError, match="no such file"):
        llmstd.load(tmp_path / "missing")


def test_canonical_single_file_is_detected(tmp_path: Path) -> None:
    llmstd.convert(EXAMPLE, tmp_path / "c", to="canonical")
    ckpt = llmstd.load(tmp_path / "c" / "canonical.safetensors")
    assert ckpt.format == "canonical" and ckpt.architecture == "gpt2"
