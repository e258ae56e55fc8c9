"""Heavy frameworks are imported only by the operations that need them: the CLI's help and every
conversion between safetensors (and llmstd's own torch-free pickle reader/writer) run without torch,
tensorflow, transformers or onnx ever entering ``sys.modules``.

Each check runs in a fresh interpreter, since this pytest process has imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import llmstd

HEAVY = ("torch", "tensorflow", "transformers", "onnx", "onnxruntime", "jax", "keras", "tf_keras")

REPORT = textwrap.dedent("""
    import json as _json, sys as _sys
    _heavy = %r
    print("HEAVY=" + _json.dumps(sorted({m.split(".")[0] for m in _sys.modules} & set(_heavy))))
""") % (HEAVY,)


def _heavy_modules_after(code: str, cwd: Path | None = None) -> list[str]:
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + REPORT], capture_output=True, text=True,
                            env=env, cwd=cwd, timeout=120)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("HEAVY=")]
    return json.loads(line.removeprefix("HEAVY="))


def test_reporter_sees_an_import() -> None:
    # Control: the probe really detects a heavy import.
    pytest.importorskip("torch")
    assert "torch" in _heavy_modules_after("import torch")


def test_import_llmstd_is_light() -> None:
    assert _heavy_modules_after("import llmstd, llmstd.converters, llmstd.maps, llmstd.transforms") == []


@pytest.mark.parametrize("argv", [["--help"], ["convert", "--help"], ["check", "--help"], ["maps", "list"],
                                  ["maps", "show", "llama"], ["--version"]])
def test_cli_without_frameworks(argv: list[str]) -> None:
    code = f"""
        from llmstd.cli.main import main
        try:
            assert main({argv!r}) == 0
        except SystemExit as exc:  # --help and --version exit from argparse
            assert exc.code in (0, None), exc.code
    """
    assert _heavy_modules_after(code) == []


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert-mlm"])
def test_safetensors_conversions_without_frameworks(tiny, tmp_path: Path, kind: str) -> None:
    src = tiny.hf_dir(kind, "safetensors")
    sharded = tiny.hf_dir(kind, "sharded")
    code = f"""
        import llmstd
        r1 = llmstd.convert({str(src)!r}, {str(tmp_path / "c")!r}, to="canonical")
        r2 = llmstd.convert({str(tmp_path / "c")!r}, {str(tmp_path / "h")!r}, to="hf")
        r3 = llmstd.convert({str(sharded)!r}, {str(tmp_path / "h2")!r}, to="hf", shard_size="20KB")
        r4 = llmstd.convert({str(tmp_path / "c")!r}, {str(tmp_path / "c16")!r}, to="canonical", dtype="bfloat16")
        info = llmstd.inspect({str(tmp_path / "h")!r})
        ckpt = llmstd.load({str(tmp_path / "c")!r})
        arrays = [t.load() for t in ckpt.values()]
        assert len(arrays) == len(info.tensors) > 0
    """
    assert _heavy_modules_after(code) == []
    assert (tmp_path / "h" / "model.safetensors").is_file()
    assert (tmp_path / "h2" / "model.safetensors.index.json").is_file()


def test_cli_conversion_without_frameworks(tiny, tmp_path: Path) -> None:
    src = tiny.hf_dir("gpt2", "safetensors")
    code = f"""
        from llmstd.cli.main import main
        for argv in (["convert", {str(src)!r}, {str(tmp_path / "c")!r}, "--to", "canonical", "--json"],
                     ["convert", {str(tmp_path / "c")!r}, {str(tmp_path / "h")!r}, "--to", "hf"],
                     ["inspect", {str(tmp_path / "h")!r}, "--json"]):
            assert main(argv) == 0, argv
    """
    assert _heavy_modules_after(code) == []
    assert (tmp_path / "h" / "model.safetensors").is_file()


def test_bin_read_and_write_without_frameworks(tiny, tmp_path: Path) -> None:
    # llmstd reads and writes pytorch_model.bin with its own pickle code, not torch.
    src = tiny.hf_dir("llama", "bin")
    code = f"""
        import llmstd
        llmstd.convert({str(src)!r}, {str(tmp_path / "c")!r}, to="canonical")
        llmstd.convert({str(tmp_path / "c")!r}, {str(tmp_path / "b")!r}, to="hf", weights="bin")
    """
    assert _heavy_modules_after(code) == []
    assert (tmp_path / "b" / "pytorch_model.bin").is_file()


def test_api_functions_stay_functions_after_their_modules_are_imported() -> None:
    """``llmstd.check`` and ``llmstd.validate`` are the API functions however often they are looked up,
    also after their modules were imported (a subpackage named like the function would replace it
    with the module on the package)."""
    code = """
        import llmstd
        first = llmstd.check
        import llmstd.checking, llmstd.validation
        assert llmstd.check is first and callable(llmstd.check) and callable(llmstd.check)
        assert callable(llmstd.validate) and callable(llmstd.validate)
    """
    assert _heavy_modules_after(code) is not None


def test_numpy_and_ml_dtypes_are_imported_only_for_arrays(tiny, tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    """numpy costs ~0.08 s of start-up and ml_dtypes up to 0.7 s (0.7.0): ``--version``, ``--help``
    and a bfloat16 conversion made of kernel copies (headers, sizes and byte ranges need neither)
    run without both; a float32 conversion that transposes loads numpy but not ml_dtypes; a bfloat16
    cast loads both."""
    probe = textwrap.dedent('''
        import sys
        print("LOADED=" + ",".join(sorted({m.split(".")[0] for m in sys.modules} & {"numpy", "ml_dtypes"})))
    ''')

    def loaded(code: str) -> str:
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + probe], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        (line,) = [line for line in result.stdout.splitlines() if line.startswith("LOADED=")]
        return line.removeprefix("LOADED=")

    cli = """
        import contextlib, io
        from llmstd.cli.main import main
        with contextlib.redirect_stdout(io.StringIO()):
            for argv in {argvs!r}:
                try:
                    assert main(argv) == 0, argv
                except SystemExit as exc:  # --help and --version exit from argparse
                    assert exc.code in (0, None), exc.code
    """
    assert loaded(cli.format(argvs=[["--version"]])) == ""
    assert loaded(cli.format(argvs=[["--help"]])) == ""
    # A bfloat16 Llama moves HF <-> canonical by kernel copies, as `llmstd convert` runs it.
    bf16 = tmp_path / "llama-bf16"
    llmstd.convert(tiny.hf_dir("llama"), bf16, to="hf", dtype="bfloat16")
    copies = [["convert", str(bf16), str(tmp_path / "c"), "--to", "canonical", "--json"],
              ["convert", str(tmp_path / "c"), str(tmp_path / "d"), "--to", "hf", "--json"]]
    assert loaded(cli.format(argvs=copies)) == ""
    assert (tmp_path / "d" / "model.safetensors").read_bytes() == (bf16 / "model.safetensors").read_bytes()
    # GPT-2's Conv1D kernels are transposed on the way to canonical: arrays, but no bfloat16.
    assert loaded(f"import llmstd; llmstd.convert({str(tiny_gpt2_dir)!r}, {str(tmp_path / 'a')!r}, "
                  "to='canonical')") == "numpy"
    assert loaded(f"import llmstd; llmstd.convert({str(tiny_gpt2_dir)!r}, {str(tmp_path / 'b')!r}, to='canonical', "
                  "dtype='bfloat16')") == "ml_dtypes,numpy"


def test_version_loads_nothing_but_llmstd_itself() -> None:
    """``llmstd --version`` through the console-script entry point imports neither numpy nor the CLI
    framework (its start-up is then Python's own)."""
    code = """
        import sys
        sys.argv = ["llmstd", "--version"]
        from llmstd.cli import run
        run()
        loaded = sorted({m.split(".")[0] for m in sys.modules} & {"numpy", "typer", "rich", "click", "ml_dtypes"})
        print("LOADED=" + ",".join(loaded))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"llmstd {llmstd.__version__}", "LOADED="], result.stdout


def test_cli_json_commands_need_no_presentation_library(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    """A scripted conversion or validation (``--json``, as CI and the benchmark run them) imports
    neither rich nor a CLI framework: their imports were a third of every command's start-up."""
    code = f"""
        import contextlib, io, sys
        from llmstd.cli.main import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["convert", {str(tiny_gpt2_dir)!r}, {str(tmp_path / "c")!r}, "--to", "canonical", "--json"]) == 0
            assert main(["validate", {str(tmp_path / "c")!r}, "--json"]) == 0
        print("LOADED=" + ",".join(sorted({{m.split(".")[0] for m in sys.modules}} & {{"rich", "typer", "click", "pydantic"}})))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "LOADED=", result.stdout
    assert (tmp_path / "c" / "canonical.safetensors").is_file()
