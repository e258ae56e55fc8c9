"""The built wheel installs one import name (``llmstd``) with its maps, and works from a fresh venv.

Builds from a copy of the source tree (so no build/ or egg-info lands in the repo), then installs the
wheel into a new virtual environment; dependencies resolve from the package index pip is configured with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow

# Source folder -> where its files land in the wheel (pyproject's package-dir).
PACKAGE_DIRS = {"llmstd": "llmstd", "converters": "llmstd/converters", "cli": "llmstd/cli",
                "naming_maps": "llmstd/naming_maps"}
_IGNORE = shutil.ignore_patterns(".venv*", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                 ".hypothesis", "*.pyc", "tests", "benchmarks")


def _clean_env(venv_bin: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    if venv_bin is not None:
        env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env.update({"NO_COLOR": "1", "TERM": "dumb"})
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=_IGNORE)
    out = root / "dist"
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(out)],
                            cwd=src, capture_output=True, text=True, env=_clean_env(), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (whl,) = out.glob("llmstd-*.whl")
    return whl


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_wheel_has_one_top_level_package(wheel_names: list[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert len(dist_info) == 1
    assert tops - dist_info == {"llmstd"}, sorted(tops)
    assert not [n for n in wheel_names if n.startswith(("cli/", "converters/", "naming_maps/", "tests/"))]


def test_wheel_carries_maps_and_entry_point(wheel: Path, wheel_names: list[str]) -> None:
    maps = {Path(n).name for n in wheel_names if n.startswith("llmstd/naming_maps/") and n.endswith(".toml")}
    assert maps == {p.name for p in (REPO / "naming_maps").glob("*.toml")}
    assert {"gpt2.toml", "bert.toml", "llama.toml", "mistral.toml", "qwen2.toml", "qwen3.toml", "gemma2.toml"} <= maps
    assert "llmstd/py.typed" in wheel_names
    with zipfile.ZipFile(wheel) as zf:
        (ep,) = [n for n in wheel_names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = zf.read(ep).decode()
    assert "llmstd = llmstd.cli:run" in entry_points


def test_wheel_contains_every_source_module(wheel_names: list[str]) -> None:
    expected = set()
    for folder, target in PACKAGE_DIRS.items():
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".toml", ".typed"):
                expected.add(f"{target}/{path.relative_to(REPO / folder).as_posix()}")
    missing = sorted(expected - set(wheel_names))
    assert not missing, f"source files missing from the wheel: {missing}"


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_clean_env(), timeout=120)
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                             "-q", str(wheel)], capture_output=True, text=True, env=_clean_env(), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return venv / "bin"


def test_installed_wheel_converts_outside_the_repo(installed: Path, tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _clean_env(installed)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=300)

    # The installed package, not the repo checkout, is what runs; no generic top-level modules leak out.
    where = run(str(installed / "python"), "-c",
                "import llmstd, llmstd.naming_maps, importlib.util as u; print(llmstd.__file__); "
                "print([m for m in ('cli', 'converters', 'naming_maps') if u.find_spec(m)])")
    assert where.returncode == 0, where.stderr
    location, leaked = where.stdout.strip().splitlines()
    assert Path(location).is_relative_to(installed.parent) and not Path(location).is_relative_to(REPO)
    assert leaked == "[]"

    out = work / "OUT"
    converted = run(str(installed / "llmstd"), "convert", str(tiny_gpt2_dir), "OUT", "--to", "canonical")
    assert converted.returncode == 0, converted.stderr
    assert (out / "canonical.safetensors").is_file()

    inspected = run(str(installed / "llmstd"), "inspect", "OUT", "--json")
    assert inspected.returncode == 0, inspected.stderr
    info = json.loads(inspected.stdout)
    assert info["format"] == "canonical" and info["architecture"] == "gpt2"
    assert info["config"]["hidden_size"] == json.loads((tiny_gpt2_dir / "config.json").read_text())["n_embd"]

    back = run(str(installed / "llmstd"), "convert", "OUT", "HF", "--to", "hf")
    assert back.returncode == 0, back.stderr
    from safetensors.numpy import load_file

    original, roundtrip = load_file(tiny_gpt2_dir / "model.safetensors"), load_file(work / "HF" / "model.safetensors")
    assert set(roundtrip) == set(original)
    assert all(roundtrip[n].dtype == original[n].dtype and roundtrip[n].tobytes() == original[n].tobytes()
               for n in original)

    listed = run(str(installed / "llmstd"), "maps", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["architecture"] for r in rows} >= {"gpt2", "bert", "llama", "mistral", "qwen2"}
    assert all(Path(r["file"]).is_relative_to(installed.parent) for r in rows)
