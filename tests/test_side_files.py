"""Side files travel: every non-weight file and folder of a checkpoint directory reaches the output
byte for byte and is reported; weights of other formats and links leaving the directory do not."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import llmstd
from helpers import assert_cli_error, run_cli
from llmstd.errors import UnsafeInputError

SIDE = {
    "README.md": b"# a model card\n",
    "LICENSE": b"Apache-2.0\n",
    "modules.json": b'[{"idx": 0, "path": ""}, {"idx": 1, "path": "1_Pooling"}]',
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "nested/deeper/notes.txt": b"kept with its folders\n",
}


@pytest.fixture()
def source(tiny, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(tiny.hf_dir("llama"), src)
    for rel, data in SIDE.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "tf_model.h5").write_bytes(b"stale weights of another format")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return src


@pytest.mark.parametrize("fmt", ["canonical", "onnx", "tf-h5", "tf-ckpt"])
def test_side_files_reach_every_format_and_come_back(source: Path, tmp_path: Path, fmt: str) -> None:
    there = llmstd.convert(source, tmp_path / fmt, to=fmt)
    back = llmstd.convert(tmp_path / fmt, tmp_path / "back", to="hf")
    for report, out in ((there, tmp_path / fmt), (back, tmp_path / "back")):
        for rel, data in SIDE.items():
            assert (out / rel).read_bytes() == data, (fmt, rel)
            assert rel in report.side_files and rel in report.files
        assert not (out / "tf_model.h5").exists() or fmt == "tf-h5"  # stale weights never travel
        assert not (out / ".git").exists()
    assert there.side_files_skipped["tf_model.h5"] == "weights of another format, not the converted model"
    assert there.side_files_skipped[".git/"] == "version-control history"


def test_a_link_leaving_the_checkpoint_is_refused(source: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for publishing")
    os.symlink(secret, source / "notes.txt")
    with pytest.raises(UnsafeInputError, match="notes.txt' is a link leaving the checkpoint directory"):
        llmstd.convert(source, tmp_path / "out", to="canonical")
    assert not (tmp_path / "out").exists()
    assert_cli_error(run_cli("convert", source, tmp_path / "out2", "--to", "canonical"), "notes.txt", "cp -L")


def test_links_inside_the_checkpoint_and_into_a_hub_cache_are_followed(tiny, tmp_path: Path) -> None:
    # The Hugging Face hub cache: snapshots/<rev>/<file> -> ../../blobs/<hash>.
    repo = tmp_path / "models--org--tiny"
    snapshot, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for item in tiny.hf_dir("llama").iterdir():
        blob = blobs / f"blob-{item.name}"
        shutil.copyfile(item, blob)
        os.symlink(Path("..") / ".." / "blobs" / blob.name, snapshot / item.name)
    (blobs / "blob-readme").write_text("card")
    os.symlink(Path("..") / ".." / "blobs" / "blob-readme", snapshot / "README.md")
    (snapshot / "docs").mkdir()
    os.symlink(Path("..") / "README.md", snapshot / "docs" / "card.md")  # inside the snapshot
    report = llmstd.convert(snapshot, tmp_path / "out", to="canonical")
    assert (tmp_path / "out" / "README.md").read_text() == "card"
    assert (tmp_path / "out" / "docs" / "card.md").read_text() == "card"
    assert not (tmp_path / "out" / "README.md").is_symlink()
    assert {"README.md", "docs/card.md"} <= set(report.side_files)
