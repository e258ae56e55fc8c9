"""``llmstd validate``: passes on clean outputs, reports each kind of damage (all of them in one
run), agrees with ``llmstd convert`` (both read through the same readers), flags Hugging Face configs
that transformers 4.x and 5.x read as different models, and manifests verify a checkpoint or name
exactly the tensor that changed.

Damage is planted by rewriting files with llmstd's own safetensors writer; tensors are chosen
through the canonical vocabulary and located in the files by identity, never by framework names.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import helpers
import llmstd
from hostile.catalogue import CASES as DAMAGED
from llmstd import formats, maps, vocab
from llmstd.converters import safetensors_io
from llmstd.errors import LlmstdError, MappingError
from llmstd.findings import Findings
from llmstd.tensors import ArrayTensor, FileSliceTensor
from llmstd.validation import MANIFEST_NAME, validate, write_manifest
from sharp_models import SharpModels, sharp  # noqa: F401  (sharp is a fixture)
from test_bad_inputs import CASES as BAD_INPUTS

Arrays = dict[str, np.ndarray]


def copy(src: Path, tmp_path: Path, name: str = "ckpt") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def stored(directory: Path, canonical: str) -> tuple[str, Path]:
    """(name in the files, file) of a canonical tensor stored without a layout transform."""
    ckpt = llmstd.load(directory)
    tensor = ckpt.tensors[canonical]
    assert isinstance(tensor, FileSliceTensor), f"{canonical} is derived by a transform"
    (name,) = [n for n, t in ckpt.source_names.items() if t is tensor]
    return name, tensor.path


def rewrite(path: Path, edit: Callable[[Arrays], None]) -> None:
    """Rewrite a safetensors file after ``edit`` changed its arrays (metadata kept)."""
    sf = safetensors_io.open_file(path)
    arrays = {n: np.array(t.load()) for n, t in sf.tensors.items()}
    edit(arrays)
    tmp = path.with_suffix(".tmp")
    safetensors_io.write_file(tmp, [(n, ArrayTensor(a)) for n, a in arrays.items()], sf.metadata)
    tmp.replace(path)


def _findings(report, code: str) -> list:
    return [f for f in report.findings if f.code == code]


L1_MLP_NORM = vocab.MLP_NORM[0].format(i=1)
L0_UP = vocab.UP[0].format(i=0)


# ------------------------------------------------------------------------------------------------
# clean outputs pass


@pytest.mark.parametrize("kind", helpers.ALL_KINDS)
@pytest.mark.parametrize("form", helpers.FORMS)
def test_clean_hf_directories_pass(tiny, kind: str, form: str) -> None:
    report = validate(tiny.hf_dir(kind, form))
    assert report.passed and not report.findings, [str(f) for f in report.findings]
    assert report.tensors == len(llmstd.load(tiny.hf_dir(kind, form)).tensors)


@pytest.mark.parametrize("kind", ["gpt2", "bert-mlm", "llama-tied"])
@pytest.mark.parametrize("fmt", formats.names())
def test_clean_conversions_pass(sharp: SharpModels, kind: str, fmt: str) -> None:
    if fmt == "keras-hub" and kind.startswith("bert"):
        pytest.skip("KerasHub cannot express this BERT (exact gelu, masked-LM head): tests/test_check.py "
                    "proves the refusal")
    report = validate(sharp.converted(kind, fmt))
    assert report.passed and not report.errors, [str(f) for f in report.findings]
    assert report.format == fmt


def test_clean_sharded_canonical_and_bf16_pass(tiny, tmp_path: Path) -> None:
    llmstd.convert(tiny.hf_dir("qwen2"), tmp_path / "sharded", to="canonical", shard_size="20KB")
    llmstd.convert(tiny.hf_dir("qwen2"), tmp_path / "bf16", to="canonical", dtype="bfloat16")
    for path in (tmp_path / "sharded", tmp_path / "bf16"):
        report = validate(path)
        assert report.passed and not report.findings, [str(f) for f in report.findings]


# ------------------------------------------------------------------------------------------------
# each kind of damage


def test_missing_tensor(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("llama"), tmp_path)
    name, file = stored(path, L1_MLP_NORM)
    rewrite(file, lambda arrays: arrays.pop(name))
    report = validate(path)
    assert not report.passed
    assert [f.tensor for f in _findings(report, "missing_tensor")] == [L1_MLP_NORM]


def test_unexpected_tensors(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("llama"), tmp_path)
    name, file = stored(path, L1_MLP_NORM)
    beyond = name.replace(".1.", ".5.")  # the same tensor for a layer the config does not have
    unmapped = name + "_copy"  # a name the naming map does not know

    def add(arrays: Arrays) -> None:
        arrays[beyond] = arrays[name]
        arrays[unmapped] = arrays[name]

    rewrite(file, add)
    report = validate(path)
    found = {f.tensor: f.message for f in _findings(report, "unexpected_tensor")}
    assert set(found) == {beyond, unmapped}
    assert "no canonical name" in found[unmapped] and "does not have" in found[beyond]


def test_nan_and_inf(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("gpt2"), tmp_path)
    up_name, file = stored(path, vocab.EMBED_POSITIONS)

    def poison(arrays: Arrays) -> None:
        arrays[up_name][3, 4] = np.nan
        arrays[up_name][5, 6] = np.inf

    rewrite(file, poison)
    report = validate(path)
    assert [(f.tensor, f.message[:12]) for f in _findings(report, "nan")] == [(vocab.EMBED_POSITIONS, "1 NaN value(")]
    assert [f.tensor for f in _findings(report, "inf")] == [vocab.EMBED_POSITIONS]


def _fused_qkv(ckpt) -> str:
    """GPT-2's fused q|k|v, found by its shape [hidden, 3 * hidden] (Conv1D stores [in, out])."""
    hidden = ckpt.config.hidden_size
    names = sorted(n for n, t in ckpt.source_names.items() if t.shape == (hidden, 3 * hidden))
    return names[0]  # layer 0


def test_nan_inside_a_fused_tensor_is_named_canonically(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("gpt2"), tmp_path)
    ckpt = llmstd.load(path)
    fused, hidden = _fused_qkv(ckpt), ckpt.config.hidden_size

    def poison(arrays: Arrays) -> None:
        arrays[fused][0, hidden + 1] = np.nan  # columns hidden .. 2*hidden are k

    rewrite(path / "model.safetensors", poison)
    (finding,) = _findings(validate(path), "nan")
    assert finding.tensor == vocab.K[0].format(i=0) and fused in finding.message


def test_missing_shard(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("llama", "sharded"), tmp_path)
    shard = sorted(path.glob("model-*.safetensors"))[0]
    held = set(safetensors_io.open_file(shard).tensors)
    shard.unlink()
    report = validate(path)
    (missing,) = _findings(report, "missing_shard")
    assert shard.name in missing.file
    # ...and every canonical tensor it held is listed as missing.
    assert len(_findings(report, "missing_tensor")) == len(held)


def test_index_naming_tensors_absent_from_their_shard(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("llama", "sharded"), tmp_path)
    index_path = path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    weight_map = index["weight_map"]
    shards = sorted(set(weight_map.values()))
    moved = next(n for n, s in weight_map.items() if s == shards[0])
    weight_map[moved] = shards[1]  # listed in the wrong shard
    ghost = moved.replace(".0.", ".7.") if ".0." in moved else moved + "_ghost"
    weight_map[ghost] = shards[0]  # listed, stored nowhere
    index_path.write_text(json.dumps(index))
    report = validate(path)
    assert [f.tensor for f in _findings(report, "index_names_absent_tensor")] == [ghost]
    assert [f.tensor for f in _findings(report, "index_wrong_shard")] == [moved]


def test_index_total_size_and_stray_shard(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("gpt2", "sharded"), tmp_path)
    shutil.copyfile(sorted(path.glob("model-*.safetensors"))[0], path / "model-00009-of-00009.safetensors")
    report = validate(path)
    assert report.passed and [f.code for f in report.warnings] == ["stray_shard"]  # a warning never fails
    index_path = path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["metadata"]["total_size"] += 4
    index_path.write_text(json.dumps(index))
    assert _findings(validate(path), "total_size")[0].severity == "error"


def test_tie_config_mismatch_hf(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("llama-tied"), tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["tie_word_embeddings"] = False  # but no lm_head is stored
    (path / "config.json").write_text(json.dumps(config))
    report = validate(path)
    (finding,) = _findings(report, "tie_mismatch")
    assert finding.tensor == vocab.LM_HEAD[0] and "untied" in finding.message
    assert not _findings(report, "missing_tensor")


def test_tie_config_mismatch_canonical(tiny, tmp_path: Path) -> None:
    path = copy(tiny.canonical_dir("llama-tied"), tmp_path)

    def store_head(arrays: Arrays) -> None:
        arrays[vocab.LM_HEAD[0]] = arrays[vocab.EMBED_TOKENS] * 2  # stored although the config ties it

    rewrite(path / "canonical.safetensors", store_head)
    report = validate(path)
    assert [f.tensor for f in _findings(report, "tie_mismatch")] == [vocab.LM_HEAD[0]]


def test_tied_duplicate_that_differs(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("gpt2"), tmp_path)
    ckpt = llmstd.load(path)
    embedding_name = stored(path, vocab.EMBED_TOKENS)[0]
    # The head's Hugging Face name, from the naming map (safetensors saves drop the tied copy).
    (entry,) = [e for e in maps.load("gpt2").entries if e.canonical == (vocab.LM_HEAD[0],)]
    head_name = entry.dialects["hf"].name
    assert head_name not in ckpt.source_names
    rewrite(path / "model.safetensors", lambda a: a.__setitem__(head_name, a[embedding_name] + 1))
    report = validate(path)
    assert [f.tensor for f in _findings(report, "tie_mismatch")] == [head_name]


def test_untied_head_equal_to_embeddings_is_a_warning(tiny, tmp_path: Path) -> None:
    path = copy(tiny.canonical_dir("llama"), tmp_path)
    rewrite(path / "canonical.safetensors",
            lambda arrays: arrays.__setitem__(vocab.LM_HEAD[0], arrays[vocab.EMBED_TOKENS].copy()))
    report = validate(path)
    assert report.passed and [(f.code, f.tensor) for f in report.warnings] == [("tie_redundant", vocab.LM_HEAD[0])]


def test_mixed_dtypes(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("llama"), tmp_path)
    name, file = stored(path, L1_MLP_NORM)
    rewrite(file, lambda arrays: arrays.__setitem__(name, arrays[name].astype(np.float16)))
    report = validate(path)
    (finding,) = _findings(report, "mixed_dtypes")
    assert L1_MLP_NORM in finding.message and "float16" in finding.message


def test_config_dtype_mismatch(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("llama"), tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (path / "config.json").write_text(json.dumps(config))
    assert "float32" in _findings(validate(path), "dtype_mismatch")[0].message


def test_zero_and_constant_weights(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("llama"), tmp_path)
    up_name, file = stored(path, L0_UP)
    norm_name, _ = stored(path, L1_MLP_NORM)

    def flatten(arrays: Arrays) -> None:
        arrays[up_name][...] = 0
        arrays[norm_name][...] = 1  # an untrained norm: worth a warning, not an error

    rewrite(file, flatten)
    report = validate(path)
    assert [f.tensor for f in _findings(report, "all_zero")] == [L0_UP]
    (constant,) = _findings(report, "constant_vector")
    assert constant.severity == "warning" and constant.tensor == L1_MLP_NORM


def test_strict_header(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("gpt2"), tmp_path)
    file = path / "model.safetensors"
    raw = bytearray(file.read_bytes())
    raw[8:9] = b"["  # the header must be a JSON object
    file.write_bytes(bytes(raw))
    report = validate(path)
    assert not report.passed and [f.code for f in report.errors] == ["bad_header"]


def test_hf_safetensors_metadata_without_format(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("gpt2"), tmp_path)
    file = path / "model.safetensors"
    safetensors_io.rewrite_metadata(file, {"formt": "pt"})
    assert [f.code for f in validate(path).errors] == ["hf_metadata"]


def test_canonical_provenance_and_transforms_must_be_recorded(tiny, tmp_path: Path) -> None:
    path = copy(tiny.canonical_dir("gpt2"), tmp_path)
    file = path / "canonical.safetensors"
    meta = safetensors_io.open_file(file).metadata
    assert json.loads(meta["llmstd.transforms"]), "gpt2's Conv1D transposes are recorded"
    meta = {k: v for k, v in meta.items() if k not in ("llmstd.provenance", "llmstd.transforms")}
    safetensors_io.rewrite_metadata(file, meta)
    assert {f.code for f in validate(path).errors} == {"provenance", "transforms"}


def test_every_finding_is_collected(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("llama"), tmp_path)
    norm_name, file = stored(path, L1_MLP_NORM)
    up_name, _ = stored(path, L0_UP)

    def damage(arrays: Arrays) -> None:
        arrays.pop(norm_name)  # missing
        arrays[up_name] = arrays[up_name].astype(np.float16)  # mixed dtypes
        arrays[up_name][0, 0] = np.nan  # NaN
        arrays[norm_name.replace(".1.", ".6.")] = np.ones(4, np.float32)  # unexpected

    rewrite(file, damage)
    report = validate(path)
    assert {"missing_tensor", "mixed_dtypes", "nan", "unexpected_tensor"} <= report.codes()
    json.loads(report.to_json())


# ------------------------------------------------------------------------------------------------
# one reading: validate and convert agree, because both read through the format's own reader


def _converts(src: Path, out: Path) -> bool:
    try:
        llmstd.convert(src, out, to="canonical")
    except LlmstdError:
        return False
    return True


@pytest.mark.parametrize("case", DAMAGED, ids=[c.name for c in DAMAGED])
def test_validate_reports_an_error_for_every_checkpoint_convert_refuses(case, tmp_path: Path) -> None:
    src = case.build(tmp_path)
    report = validate(src)
    assert not _converts(src, tmp_path / "out")
    assert not report.passed, [str(f) for f in report.findings]


# The bad-input cases that fail on their own; 'lossy cast' fails only under --dtype float16.
_BAD_AS_IS = sorted(name for name, case in BAD_INPUTS.items() if not case.options)


@pytest.mark.parametrize("name", _BAD_AS_IS)
def test_validate_and_convert_agree_on_bad_inputs(tiny, tmp_path: Path, name: str) -> None:
    src = BAD_INPUTS[name].build(tiny, tmp_path)
    report = validate(src)
    assert not _converts(src, tmp_path / "out")
    assert not report.passed, [str(f) for f in report.findings]


def _stray_shard(tiny, tmp_path: Path) -> Path:
    path = copy(tiny.hf_dir("gpt2", "sharded"), tmp_path)
    shutil.copyfile(sorted(path.glob("model-*.safetensors"))[0], path / "model-00009-of-00009.safetensors")
    return path


def _index_without_total_size(tiny, tmp_path: Path) -> Path:
    path = copy(tiny.hf_dir("llama", "sharded"), tmp_path)
    index_path = path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["metadata"]
    index_path.write_text(json.dumps(index))
    return path


SOUND: dict[str, Callable[..., Path]] = {
    "hf": lambda tiny, tmp_path: copy(tiny.hf_dir("llama"), tmp_path),
    "hf bin": lambda tiny, tmp_path: copy(tiny.hf_dir("gpt2", "bin"), tmp_path),
    "canonical": lambda tiny, tmp_path: copy(tiny.canonical_dir("qwen2"), tmp_path),
    "stray shard (a warning)": _stray_shard,
    "index without total_size (a warning)": _index_without_total_size,
}


@pytest.mark.parametrize("name", sorted(SOUND))
def test_validate_and_convert_agree_on_sound_checkpoints(tiny, tmp_path: Path, name: str) -> None:
    src = SOUND[name](tiny, tmp_path)
    report = validate(src)
    assert _converts(src, tmp_path / "out")
    assert report.passed, [str(f) for f in report.findings]


def test_lenient_read_returns_what_it_recovered(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("llama"), tmp_path)
    name, file = stored(path, L1_MLP_NORM)
    complete = set(llmstd.load(path).tensors)
    rewrite(file, lambda arrays: arrays.pop(name))
    reader = formats.detect(path).read
    with pytest.raises(MappingError, match="missing"):
        reader(path, None)
    found = Findings()
    ckpt = reader(path, None, findings=found)
    assert ckpt is not None and set(ckpt.tensors) == complete - {L1_MLP_NORM}
    assert [(f.code, f.tensor) for f in found] == [("missing_tensor", L1_MLP_NORM)]


# ------------------------------------------------------------------------------------------------
# a config.json transformers 4.x and 5.x read as different models


def _v5_only(tiny, tmp_path: Path, rope_parameters: dict) -> Path:
    """The tiny llama with its rotary parameters spelled only the transformers 5 way."""
    path = copy(tiny.hf_dir("llama"), tmp_path)
    config = json.loads((path / "config.json").read_text())
    for key in ("rope_theta", "rope_scaling", "partial_rotary_factor"):
        config.pop(key, None)
    config["rope_parameters"] = rope_parameters
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_v5_only_rope_theta_is_not_portable(tiny, tmp_path: Path) -> None:
    path = _v5_only(tiny, tmp_path, {"rope_type": "default", "rope_theta": 500000.0})
    report = validate(path)
    assert [f.code for f in report.errors] == ["config_not_portable"], [str(f) for f in report.findings]
    (finding,) = report.errors
    assert finding.file == str(path / "config.json")
    assert "rope_theta 10000.0" in finding.message and "rope_theta 500000.0" in finding.message
    assert "`llmstd convert --to hf` rewrites it portable" in finding.message
    # The fix the finding names: what llmstd writes is read alike by both generations.
    llmstd.convert(path, tmp_path / "fixed", to="hf")
    fixed = validate(tmp_path / "fixed")
    assert fixed.passed and not fixed.findings, [str(f) for f in fixed.findings]
    assert llmstd.load(tmp_path / "fixed").config.rope_theta == 500000.0


def test_llama3_scaling_only_in_rope_parameters_is_not_portable(tiny, tmp_path: Path) -> None:
    path = _v5_only(tiny, tmp_path, {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 32})
    report = validate(path)
    assert [f.code for f in report.errors] == ["config_not_portable"], [str(f) for f in report.findings]
    assert "llama3 scaling" in report.errors[0].message  # what 5.x reads; 4.x reads no scaling at all
    assert _converts(path, tmp_path / "out")  # conversion reads it as 5.x means it (and writes it portable)


def test_tf_h5_config_is_checked_too(tiny, tmp_path: Path) -> None:
    path = _v5_only(tiny, tmp_path, {"rope_type": "default", "rope_theta": 500000.0})
    llmstd.convert(path, tmp_path / "h5", to="tf-h5")
    assert validate(tmp_path / "h5").passed
    shutil.copyfile(path / "config.json", tmp_path / "h5" / "config.json")
    (finding,) = validate(tmp_path / "h5").errors
    assert finding.code == "config_not_portable" and "`llmstd convert --to tf-h5`" in finding.message


# ------------------------------------------------------------------------------------------------
# manifests


def _flip_byte(tensor: FileSliceTensor, element: int) -> None:
    with open(tensor.path, "r+b") as fh:
        fh.seek(tensor.offset + element * tensor.dtype.itemsize)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x01]))


def test_manifest_verifies_and_names_the_changed_tensor(tiny, tmp_path: Path) -> None:
    path = copy(tiny.canonical_dir("llama"), tmp_path)
    manifest = write_manifest(path)
    assert manifest == path / MANIFEST_NAME
    body = json.loads(manifest.read_text())
    assert body["architecture"] == "llama" and body["config"]["num_kv_heads"] == 2
    assert len(body["tensors"]) == len(llmstd.load(path).tensors) and body["provenance"]["source"]
    assert validate(path, manifest=manifest).passed
    tensor = llmstd.load(path).tensors[L0_UP]
    assert isinstance(tensor, FileSliceTensor)
    _flip_byte(tensor, 17)
    report = validate(path, manifest=manifest)
    assert not report.passed
    assert [f.tensor for f in _findings(report, "manifest_tensor_mismatch")] == [L0_UP]


def test_manifest_names_one_part_of_a_fused_tensor(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("gpt2"), tmp_path)
    manifest = write_manifest(path)
    ckpt = llmstd.load(path)
    fused = ckpt.source_names[_fused_qkv(ckpt)]
    assert isinstance(fused, FileSliceTensor)
    _flip_byte(fused, ckpt.config.hidden_size + 2)  # row 0, a column of the k block
    changed = [f.tensor for f in _findings(validate(path, manifest=manifest), "manifest_tensor_mismatch")]
    assert changed == [vocab.K[0].format(i=0)]


def test_manifest_of_canonical_release_verifies_its_hf_export(tiny) -> None:
    """Tensor hashes are canonical, so an export is checked against the release it came from."""
    manifest_dir = tiny.canonical_dir("qwen2")
    report = validate(tiny.hf_dir("qwen2"), manifest=_manifest_copy(manifest_dir))
    assert report.passed and [f.code for f in report.warnings] == ["manifest_format"]


def _manifest_copy(path: Path) -> Path:
    out = path.parent / f"{path.name}-{MANIFEST_NAME}"
    if not out.exists():
        write_manifest(path, out=out)
    return out


def test_manifest_is_refused_for_an_invalid_checkpoint(tiny, tmp_path: Path) -> None:
    path = copy(tiny.hf_dir("llama"), tmp_path)
    name, file = stored(path, L1_MLP_NORM)
    rewrite(file, lambda arrays: arrays.pop(name))
    with pytest.raises(LlmstdError, match="not writing a manifest"):
        write_manifest(path)
    assert not (path / MANIFEST_NAME).exists()


def test_against_runs_check(sharp: SharpModels, tmp_path: Path) -> None:
    path = copy(sharp.canonical_dir("gpt2"), tmp_path)
    manifest = write_manifest(path, against=sharp.hf_dir("gpt2"))
    assert json.loads(manifest.read_text())["check"]["passed"] is True
    report = validate(path, against=sharp.hf_dir("gpt2"))
    assert report.passed and report.check is not None and report.check.passed
    norm = vocab.ATTN_NORM[0].format(i=1)
    rewrite(path / "canonical.safetensors", lambda arrays: arrays.__setitem__(norm, arrays[norm] + 1))
    report = validate(path, against=sharp.hf_dir("gpt2"))
    (failed,) = _findings(report, "check_failed")
    assert "layer 1" in failed.message


# ------------------------------------------------------------------------------------------------
# CLI


def test_cli_validate(tiny, tmp_path: Path) -> None:
    path = copy(tiny.canonical_dir("gpt2"), tmp_path)
    clean = helpers.run_cli("validate", path, "--write-manifest")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "valid" in clean.stdout and "manifest written" in clean.stdout
    verified = helpers.run_cli("validate", path, "--manifest", path / MANIFEST_NAME, "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["passed"] is True
    tensor = llmstd.load(path).tensors[L0_UP]
    _flip_byte(tensor, 3)
    with np.errstate(all="ignore"):
        rewrite(path / "canonical.safetensors",
                lambda arrays: arrays[vocab.EMBED_POSITIONS].__setitem__((0, 0), np.nan))
    broken = helpers.run_cli("validate", path, "--manifest", path / MANIFEST_NAME)
    assert broken.returncode == 1
    assert "invalid" in broken.stdout and "manifest_tensor_mismatch" in broken.stdout and L0_UP in broken.stdout
    assert "nan" in broken.stdout


def test_malformed_manifest_files_and_config_are_findings(tiny, tmp_path: Path) -> None:
    path = copy(tiny.canonical_dir("llama"), tmp_path)
    manifest = write_manifest(path)
    body = json.loads(manifest.read_text())
    body["files"], body["config"] = "model.safetensors", ["not", "an", "object"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(body))
    report = validate(path, manifest=broken)
    assert {"manifest_error", "manifest_config_mismatch"} <= report.codes()
