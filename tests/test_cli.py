"""The ``llmstd`` console script, run as a user would: a subprocess, no terminal."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import llmstd
from helpers import assert_cli_error, run_cli, tree


@pytest.fixture(scope="module")
def canonical_gpt2(tiny_gpt2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "canonical"
    result = run_cli("convert", tiny_gpt2_dir, out, "--to", "canonical")
    assert result.returncode == 0, result.stderr
    return out


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"llmstd {llmstd.__version__}"


def test_help_lists_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("convert", "inspect", "maps"):
        assert command in result.stdout


def test_convert_json(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "canonical"
    result = run_cli("convert", tiny_gpt2_dir, out, "--to", "canonical", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout is nothing but the JSON document
    assert report["architecture"] == "gpt2"
    assert report["source_format"] == "hf" and report["target_format"] == "canonical"
    assert report["destination"] == str(out)
    assert "canonical.safetensors" in report["files"] and set(report["files"]) <= set(tree(out))
    ckpt = llmstd.load(out)
    assert report["tensors"] == len(ckpt) and report["bytes"] == ckpt.nbytes
    assert {d["name"] for d in report["duplicates_dropped"]} <= {"lm_head.weight"}
    # Same tensors as the Python API produces.
    api = llmstd.load(llmstd.convert(tiny_gpt2_dir, tmp_path / "api", to="canonical").destination)
    assert set(api) == set(ckpt)
    for name in ckpt:
        assert ckpt[name].load().tobytes() == api[name].load().tobytes(), name


def test_convert_human_output(canonical_gpt2: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    result = run_cli("convert", canonical_gpt2, out, "--to", "hf")
    assert result.returncode == 0, result.stderr
    assert "converted" in result.stdout and "model.safetensors" in result.stdout
    assert "Traceback" not in result.stderr
    assert {"config.json", "model.safetensors"} <= set(tree(out))


def test_convert_options(canonical_gpt2: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    result = run_cli("convert", canonical_gpt2, out, "--to", "hf", "--dtype", "bfloat16", "--shard-size", "20KB",
                     "--weights", "bin", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dtype"] == "bfloat16"
    shards = sorted(f for f in report["files"] if f.endswith(".bin"))
    assert len(shards) >= 3 and "pytorch_model.bin.index.json" in report["files"]
    ckpt = llmstd.load(out)
    assert {t.dtype.name for t in ckpt.values()} == {"bfloat16"}
    assert ckpt.container == "torch-pickle-sharded"

    # --overwrite replaces it; without it the same command fails.
    again = run_cli("convert", canonical_gpt2, out, "--to", "hf")
    assert_cli_error(again, "exists")
    replaced = run_cli("convert", canonical_gpt2, out, "--to", "hf", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert "model.safetensors" in tree(out) and not any(f.endswith(".bin") for f in tree(out))


def test_inspect_table(tiny_gpt2_dir: Path) -> None:
    result = run_cli("inspect", tiny_gpt2_dir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in ("gpt2", "safetensors", "canonical config", "embed.tokens.weight", "layers.1.mlp.down.weight",
                   "float32", "tied: lm_head.weight = embed.tokens.weight"):
        assert needle in out, needle


def test_inspect_json(tiny_gpt2_dir: Path, canonical_gpt2: Path) -> None:
    for path, fmt in ((tiny_gpt2_dir, "hf"), (canonical_gpt2, "canonical")):
        result = run_cli("inspect", path, "--json")
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert info["format"] == fmt and info["architecture"] == "gpt2"
        config = json.loads((tiny_gpt2_dir / "config.json").read_text())
        assert info["config"]["hidden_size"] == config["n_embd"]
        assert info["config"]["num_layers"] == config["n_layer"]
        assert info["config"]["vocab_size"] == config["vocab_size"]
        rows = {row["name"]: row for row in info["tensors"]}
        assert rows["embed.tokens.weight"]["shape"] == [config["vocab_size"], config["n_embd"]]
        assert rows["layers.0.attn.q.weight"]["shape"] == [config["n_embd"], config["n_embd"]]
        assert info["parameters"] == sum(math.prod(r["shape"]) for r in info["tensors"])
        assert info["total_bytes"] == 4 * info["parameters"] == sum(info["dtype_bytes"].values())
        assert info["tied"] == {"lm_head.weight": "embed.tokens.weight"}
        assert "lm_head.weight" not in rows


def test_maps_list() -> None:
    result = run_cli("maps", "list")
    assert result.returncode == 0, result.stderr
    for arch in ("gpt2", "bert", "llama", "mistral", "qwen2"):
        assert arch in result.stdout
    rows = json.loads(run_cli("maps", "list", "--json").stdout)
    assert {r["architecture"] for r in rows} >= {"gpt2", "bert", "llama", "mistral", "qwen2"}
    assert all("hf" in r["dialects"] for r in rows)


def test_maps_show_gpt2() -> None:
    result = run_cli("maps", "show", "gpt2")
    assert result.returncode == 0, result.stderr
    for needle in ("gpt2", "c_attn", "transpose", "split", "embed.tokens.weight"):
        assert needle in result.stdout, needle
    data = json.loads(run_cli("maps", "show", "gpt2", "--json").stdout)
    assert data["architecture"] == "gpt2"
    fused = ["layers.{i}.attn.q.weight", "layers.{i}.attn.k.weight", "layers.{i}.attn.v.weight"]
    (qkv,) = [e for e in data["tensors"] if e["canonical"] == fused]
    assert qkv["dialects"]["hf"]["name"] == "{prefix}h.{i}.attn.c_attn.weight"
    assert [s["op"] for s in qkv["dialects"]["hf"]["transforms"]] == ["transpose", "split"]
    assert any(i["pattern"] == "{prefix}h.{i}.attn.bias" for i in data["ignored"]["hf"])


def test_maps_show_unknown_architecture() -> None:
    assert_cli_error(run_cli("maps", "show", "gpt5"), "gpt5")


@pytest.mark.parametrize("args", [
    ["convert"],  # missing SRC and DST
    ["convert", "a"],  # missing DST
    ["convert", "a", "b", "--frobnicate"],
    ["inspect"],
    ["no-such-command"],
    ["maps", "show"],
    ["maps", "list", "extra-argument"],
])
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert "Usage" in result.stderr or "usage" in result.stderr


@pytest.mark.parametrize("args", [
    ["convert", "{src}", "{tmp}/out", "--to", "gguf-nonsense"],
    ["convert", "{src}", "{tmp}/out", "--dtype", "float8"],
    ["convert", "{src}", "{tmp}/out", "--weights", "npz"],
    ["convert", "{src}", "{tmp}/out", "--shard-size", "lots"],
    ["convert", "{tmp}/does-not-exist", "{tmp}/out"],
    ["inspect", "{tmp}/does-not-exist"],
    ["inspect", "{tmp}"],  # a directory that is no checkpoint
])
def test_bad_values_exit_1_with_one_line(tiny_gpt2_dir: Path, tmp_path: Path, args: list[str]) -> None:
    args = [a.format(src=tiny_gpt2_dir, tmp=tmp_path) for a in args]
    assert_cli_error(run_cli(*args))
    assert not (tmp_path / "out").exists()


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = run_cli("--debug", "inspect", tmp_path / "does-not-exist")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "DetectionError" in result.stderr


def test_check_help_names_every_runtime() -> None:
    """The CLI spells the runtimes without importing the checker, from the names the checker runs."""
    from llmstd.checking.runtimes import RUNTIMES

    result = run_cli("check", "--help")
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())  # argparse wraps lines
    for runtime in RUNTIMES:
        assert f"{runtime} |" in help_text or f"| {runtime}" in help_text
