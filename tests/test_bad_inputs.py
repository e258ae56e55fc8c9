"""Bad inputs fail with a typed error that says what and where, and leave nothing at the destination;
the CLI turns each into exit code 1 and one ``error:`` line without a traceback."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import llmstd  # noqa: E402
from helpers import (  # noqa: E402
    assert_cli_error,
    assert_tensors_bit_identical,
    leftovers,
    read_safetensors_dir,
    run_cli,
    tree,
)
from llmstd import maps  # noqa: E402
from llmstd.errors import (  # noqa: E402
    CastError,
    ConfigError,
    FormatError,
    LlmstdError,
    MappingError,
    OutputError,
    SpecVersionError,
    UnsafeInputError,
)




@dataclass
class Case:
    build: Callable[[Any, Path], Path]  # (tiny, tmp_path) -> source path
    error: type[LlmstdError]
    needles: Callable[[Path], list[str]]  # strings the message must contain, given the source path
    to: str = "canonical"
    options: tuple[tuple[str, Any], ...] = ()


def _copy(tiny: Any, tmp: Path, kind: str, form: str = "safetensors") -> Path:
    src = tmp / "src"
    shutil.copytree(tiny.hf_dir(kind, form), src)
    return src


def _edit_config(src: Path, **changes: Any) -> None:
    config = json.loads((src / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (src / "config.json").write_text(json.dumps(config))


# --- builders -----------------------------------------------------------------------------------


def unmapped_tensor(tiny: Any, tmp: Path) -> Path:
    from safetensors.torch import save_file

    src = _copy(tiny, tmp, "gpt2")
    tensors = dict(tiny.expected("gpt2"))
    tensors["transformer.h.0.attn.rotary_extra"] = torch.zeros(4)
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    return src


def truncated_single(tiny: Any, tmp: Path) -> Path:
    src = _copy(tiny, tmp, "gpt2")
    path = src / "model.safetensors"
    os.truncate(path, path.stat().st_size - 100)
    return src


def truncated_shard(tiny: Any, tmp: Path) -> Path:
    src = _copy(tiny, tmp, "llama", "sharded")
    path = sorted(src.glob("model-*.safetensors"))[1]
    os.truncate(path, path.stat().st_size - 64)
    return src


def missing_shard(tiny: Any, tmp: Path) -> Path:
    src = _copy(tiny, tmp, "llama", "sharded")
    sorted(src.glob("model-*.safetensors"))[2].unlink()
    return src


def truncated_bin(tiny: Any, tmp: Path) -> Path:
    src = _copy(tiny, tmp, "gpt2", "bin")
    path = src / "pytorch_model.bin"
    os.truncate(path, path.stat().st_size // 2)
    return src


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def code_running_pickle(tiny: Any, tmp: Path) -> Path:
    src = _copy(tiny, tmp, "gpt2", "bin")
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    state["transformer.h.0.attn.payload"] = _Evil(f"touch {tmp / 'CANARY'}")
    torch.save(state, src / "pytorch_model.bin")
    return src


def config_missing_field(tiny: Any, tmp: Path) -> Path:
    src = _copy(tiny, tmp, "gpt2")
    _edit_config(src, n_embd=None)
    return src


def llama_config_missing_field(tiny: Any, tmp: Path) -> Path:
    src = _copy(tiny, tmp, "llama")
    _edit_config(src, num_attention_heads=None)
    return src


def config_wrong_width(tiny: Any, tmp: Path) -> Path:
    src = _copy(tiny, tmp, "gpt2")
    _edit_config(src, n_embd=64)
    return src


def config_too_many_layers(tiny: Any, tmp: Path) -> Path:
    src = _copy(tiny, tmp, "gpt2")
    _edit_config(src, n_layer=3)
    return src


def config_too_few_layers(tiny: Any, tmp: Path) -> Path:
    src = _copy(tiny, tmp, "bert")
    _edit_config(src, num_hidden_layers=1)
    return src


def config_wrong_kv_heads(tiny: Any, tmp: Path) -> Path:
    src = _copy(tiny, tmp, "llama")
    _edit_config(src, num_key_value_heads=4)  # tensors were saved with 2 kv heads
    return src


def config_untied_but_tied_weights(tiny: Any, tmp: Path) -> Path:
    src = _copy(tiny, tmp, "qwen2")  # saved tied: no lm_head.weight in the file
    _edit_config(src, tie_word_embeddings=False)
    return src


def newer_spec_version(tiny: Any, tmp: Path) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = tmp / "src"
    shutil.copytree(tiny.canonical_dir("gpt2"), src)
    path = src / "canonical.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        metadata = dict(fh.metadata())
        tensors = {n: fh.get_tensor(n) for n in fh.keys()}
    assert metadata["llmstd.spec_version"].startswith("1.")
    metadata["llmstd.spec_version"] = "2.0"
    save_file(tensors, str(path), metadata=metadata)
    return src


def large_values(tiny: Any, tmp: Path) -> Path:
    from safetensors.torch import save_file

    src = _copy(tiny, tmp, "gpt2")
    tensors = {n: t.clone() for n, t in tiny.expected("gpt2").items()}
    tensors["transformer.wte.weight"][0, 0] = 1e6
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    return src


CASES: dict[str, Case] = {
    "unmapped tensor": Case(unmapped_tensor, MappingError,
                            lambda s: ["transformer.h.0.attn.rotary_extra", str(maps.load("gpt2").path)]),
    "truncated safetensors": Case(truncated_single, FormatError, lambda s: ["model.safetensors"]),
    "truncated shard": Case(truncated_shard, FormatError,
                            lambda s: [sorted(s.glob("model-*.safetensors"))[1].name]),
    "index names a missing shard": Case(missing_shard, FormatError, lambda s: ["model-00003-of-", "do not exist"]),
    "truncated bin": Case(truncated_bin, FormatError, lambda s: ["pytorch_model.bin"]),
    "pickle that runs code": Case(code_running_pickle, UnsafeInputError, lambda s: ["pytorch_model.bin"]),
    "config missing a field": Case(config_missing_field, ConfigError, lambda s: ["n_embd", "config.json"]),
    "llama config missing a field": Case(llama_config_missing_field, ConfigError,
                                         lambda s: ["num_attention_heads"]),
    "config width contradicts tensors": Case(config_wrong_width, MappingError, lambda s: ["64"]),
    "config layer count too high": Case(config_too_many_layers, MappingError, lambda s: ["layers.2."]),
    "config layer count too low": Case(config_too_few_layers, MappingError, lambda s: ["encoder.layer.1."]),
    "config kv heads contradict tensors": Case(config_wrong_kv_heads, MappingError, lambda s: ["k_proj"]),
    "config untied but head missing": Case(config_untied_but_tied_weights, MappingError, lambda s: ["lm_head.weight"]),
    "canonical spec 2.0": Case(newer_spec_version, SpecVersionError, lambda s: ["newer", "2.0"], to="hf"),
    "lossy cast": Case(large_values, CastError, lambda s: ["embed.tokens.weight", "1 finite values overflow"],
                       to="hf", options=(("dtype", "float16"),)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_raises_typed_error(tiny, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    src = case.build(tiny, tmp_path)
    before = tree(src)
    dst = tmp_path / "out" / "dst"
    with pytest.raises(case.error) as info:
        llmstd.convert(src, dst, to=case.to, **dict(case.options))
    message = str(info.value)
    for needle in case.needles(src):
        assert needle in message, f"{needle!r} not in {message!r}"
    assert not dst.exists()
    assert not dst.parent.exists() or leftovers(dst.parent) == []
    assert tree(src) == before  # the input is untouched
    assert not (tmp_path / "CANARY").exists()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_cli_one_line(tiny, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    src = case.build(tiny, tmp_path)
    dst = tmp_path / "out" / "dst"
    args = ["convert", str(src), str(dst), "--to", case.to]
    for key, value in case.options:
        args += [f"--{key.replace('_', '-')}", str(value)]
    result = run_cli(*args, cwd=tmp_path)
    assert_cli_error(result, *case.needles(src))
    assert not dst.exists()
    assert not (tmp_path / "CANARY").exists()


def test_code_running_pickle_inspect_refused(tiny, tmp_path: Path) -> None:
    src = code_running_pickle(tiny, tmp_path)
    with pytest.raises(UnsafeInputError):
        llmstd.inspect(src)
    with pytest.raises(UnsafeInputError):
        llmstd.load(src)
    assert_cli_error(run_cli("inspect", str(src), cwd=tmp_path))
    assert not (tmp_path / "CANARY").exists()
    # Control: the same payload *does* run under an unsafe unpickler, so the test can see a failure.
    torch.load(src / "pytorch_model.bin", weights_only=False)
    assert (tmp_path / "CANARY").exists()


def test_newer_spec_version_inspect_refused(tiny, tmp_path: Path) -> None:
    src = newer_spec_version(tiny, tmp_path)
    with pytest.raises(SpecVersionError, match="newer"):
        llmstd.load(src)
    assert_cli_error(run_cli("inspect", str(src)), "newer")


# ------------------------------------------------------------------------------------------------
# destinations


def test_refuses_to_write_onto_the_input(tiny, tmp_path: Path) -> None:
    src = _copy(tiny, tmp_path, "gpt2")
    before = tree(src)
    for dst, kwargs in [(src, {}), (src, {"overwrite": True}), (src / "out", {}), (src / "a" / "b", {}),
                        (tmp_path, {"overwrite": True})]:
        with pytest.raises(OutputError):
            llmstd.convert(src, dst, to="canonical", **kwargs)
        assert tree(src) == before, dst
    assert_tensors_bit_identical(tiny.expected("gpt2"), src)
    assert_cli_error(run_cli("convert", src, src / "out", "--to", "canonical"))
    assert_cli_error(run_cli("convert", src, tmp_path, "--to", "canonical", "--overwrite"))
    assert tree(src) == before


def test_refuses_to_write_into_canonical_input(tiny, tmp_path: Path) -> None:
    src = tmp_path / "canonical"
    shutil.copytree(tiny.canonical_dir("gpt2"), src)
    with pytest.raises(OutputError):
        llmstd.convert(src, src / "hf", to="hf")
    with pytest.raises(OutputError):
        llmstd.convert(src / "canonical.safetensors", src, to="hf", overwrite=True)
    assert not (src / "hf").exists() and (src / "canonical.safetensors").is_file()


def test_existing_destination_needs_overwrite(tiny, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="exists"):
        llmstd.convert(tiny.hf_dir("gpt2"), dst, to="canonical")
    assert tree(dst) == ["precious.txt"]
    assert_cli_error(run_cli("convert", tiny.hf_dir("gpt2"), dst, "--to", "canonical"), "--overwrite")
    assert tree(dst) == ["precious.txt"]

    llmstd.convert(tiny.hf_dir("gpt2"), dst, to="canonical", overwrite=True)
    assert "precious.txt" not in tree(dst)
    assert (dst / "canonical.safetensors").is_file()
    assert leftovers(tmp_path) == []

    # Replacing again from a different model swaps the whole directory.
    llmstd.convert(tiny.hf_dir("llama"), dst, to="hf", overwrite=True)
    assert llmstd.load(dst).architecture == "llama"
    assert not (dst / "canonical.safetensors").exists()
    assert_tensors_bit_identical(tiny.expected("llama"), read_safetensors_dir(dst))
    assert leftovers(tmp_path) == []


def test_failed_overwrite_keeps_the_previous_output(tiny, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    llmstd.convert(tiny.hf_dir("gpt2"), dst, to="hf")
    before = {p: (dst / p).read_bytes() for p in tree(dst)}
    src = large_values(tiny, tmp_path / "bad")
    with pytest.raises(CastError):
        llmstd.convert(src, dst, to="hf", dtype="float16", overwrite=True)
    assert {p: (dst / p).read_bytes() for p in tree(dst)} == before
    assert leftovers(tmp_path) == []


def test_empty_existing_directory_is_filled(tiny, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    llmstd.convert(tiny.hf_dir("gpt2"), dst, to="canonical")
    assert (dst / "canonical.safetensors").is_file()
