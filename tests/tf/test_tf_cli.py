"""``llmstd convert SRC DST --to tf-h5|tf-ckpt`` and back (``--to hf|canonical``), as a user runs it:
the console script in a subprocess, the source format detected automatically (issue 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmstd
from helpers import assert_tensors_bit_identical, run_cli


@pytest.mark.parametrize("kind,fmt", [("gpt2", "tf-h5"), ("qwen2", "tf-ckpt")])
def test_cli_convert_to_tf_and_back(tiny, tmp_path: Path, kind: str, fmt: str) -> None:
    src = tiny.hf_dir(kind)
    out = tmp_path / "tf"
    result = run_cli("convert", src, out, "--to", fmt)
    assert result.returncode == 0, result.stderr
    assert f"-> {out} ({fmt})" in result.stdout
    assert llmstd.load(out).format == fmt

    back = tmp_path / "hf"
    result = run_cli("convert", out, back, "--to", "hf")  # source format detected from the directory
    assert result.returncode == 0, result.stderr
    assert f"({fmt}, " in result.stdout
    assert_tensors_bit_identical(tiny.expected(kind), back)

    canonical = tmp_path / "canonical"
    result = run_cli("convert", out, canonical, "--to", "canonical", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["source_format"] == fmt and report["target_format"] == "canonical"


def test_cli_lists_tf_targets() -> None:
    result = run_cli("convert", "--help")
    assert result.returncode == 0
    assert "tf-h5" in result.stdout and "tf-ckpt" in result.stdout


def test_cli_reports_skipped_optimizer_state(tfstore, tmp_path: Path) -> None:
    import numpy as np

    from llmstd.converters import tf_checkpoint
    from llmstd.tensors import ArrayTensor

    src = tfstore.converted("bert-mlm", "tf-ckpt", sharp=False)
    entries = list(tf_checkpoint.read_checkpoint(src / "bert_model.ckpt").tensors.items())
    entries += [(f"{n}/adam_m", ArrayTensor(np.zeros(t.shape, np.float32))) for n, t in entries[:2]]
    entries.append(("global_step", ArrayTensor(np.array(7, dtype=np.int64))))
    google = tmp_path / "google"
    google.mkdir()
    tf_checkpoint.write_checkpoint(google / "bert_model.ckpt", entries)
    (google / "bert_config.json").write_text((src / "bert_config.json").read_text())
    result = run_cli("convert", google / "bert_model.ckpt.index", tmp_path / "out", "--to", "tf-h5")  # the .index path works
    assert result.returncode == 0, result.stderr
    assert "ignored global_step: training step counter" in result.stdout
    assert result.stdout.count("/adam_m: optimizer slot") == 2


def test_cli_damaged_checkpoint_is_one_error_line(tfstore, tmp_path: Path) -> None:
    import shutil

    from helpers import assert_cli_error

    src = tmp_path / "src"
    shutil.copytree(tfstore.converted("llama", "tf-ckpt", sharp=False), src)
    data = src / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    assert_cli_error(run_cli("convert", src, tmp_path / "out", "--to", "hf"), "past the end of the data file")


def test_reading_tf_files_never_imports_tensorflow(tfstore, tmp_path: Path) -> None:
    """Both TF formats convert (read and write) without TensorFlow, Keras or torch entering sys.modules."""
    import subprocess
    import sys
    import textwrap

    h5 = tfstore.converted("bert-mlm", "tf-h5", sharp=False)
    ckpt = tfstore.converted("gpt2", "tf-ckpt", sharp=False)
    code = textwrap.dedent(f"""
        import sys, llmstd
        llmstd.convert({str(h5)!r}, {str(tmp_path / 'a')!r}, to="tf-ckpt")
        llmstd.convert({str(ckpt)!r}, {str(tmp_path / 'b')!r}, to="tf-h5")
        llmstd.convert({str(tmp_path / 'b')!r}, {str(tmp_path / 'c')!r}, to="hf")
        heavy = {{"tensorflow", "keras", "tf_keras", "torch", "transformers"}}
        print(sorted({{m.split(".")[0] for m in sys.modules}} & heavy))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
