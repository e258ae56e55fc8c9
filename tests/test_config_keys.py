"""Every Hugging Face config key is accounted for: read into the canonical config, harmless (with the
map's reason), refused by name, or carried and reported as unreviewed -- and both transformers
generations' spellings are read as the model the writer meant, and written so both read it alike."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

import llmstd
from helpers import assert_cli_error, run_cli
from llmstd import hfconfig, maps
from llmstd.configmap import read_config, rope_spelling
from llmstd.errors import ConfigError

# Hugging Face config class of each map's model_type.
CONFIG_CLASSES = {"gpt2": "GPT2Config", "bert": "BertConfig", "llama": "LlamaConfig", "mistral": "MistralConfig",
                  "qwen2": "Qwen2Config", "qwen3": "Qwen3Config", "gemma": "GemmaConfig", "gemma2": "Gemma2Config",
                  "gemma3_text": "Gemma3TextConfig", "phi3": "Phi3Config", "gpt_neox": "GPTNeoXConfig"}
DUMP = """
import json, sys, transformers
out = {}
for arch, name in json.loads(sys.argv[1]).items():
    out[arch] = getattr(transformers, name)().to_dict()
print(json.dumps({"version": transformers.__version__, "configs": out}, default=str))
"""


def _default_configs(python: str | None = None) -> tuple[str, dict[str, dict[str, Any]]]:
    """Each architecture's default config as transformers (this process's, or ``python``'s) writes it."""
    if python is None:
        import transformers

        return transformers.__version__, {a: getattr(transformers, c)().to_dict() for a, c in CONFIG_CLASSES.items()}
    env = {**os.environ, "USE_TORCH": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([python, "-c", DUMP, json.dumps(CONFIG_CLASSES)], capture_output=True, text=True,
                          env=env, timeout=300, check=True)
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return data["version"], data["configs"]


def _generations() -> list[tuple[str, dict[str, dict[str, Any]]]]:
    found = [_default_configs()]
    legacy = os.environ.get("LLMSTD_LEGACY_PYTHON")
    if legacy:
        found.append(_default_configs(legacy))
    return found


@pytest.fixture(scope="module")
def generations() -> list[tuple[str, dict[str, dict[str, Any]]]]:
    pytest.importorskip("transformers")
    return _generations()


def _head(nmap: maps.NamingMap) -> str:
    return next(iter(nmap.dialects["hf"].heads))


def _read(arch: str, raw: dict[str, Any]):
    nmap = maps.load(arch)
    present = {"pooler.weight"} if arch == "bert" else set()
    return read_config(nmap, raw, head=_head(nmap), dtype="float32", present=present, source="config.json")


@pytest.mark.parametrize("arch", sorted(CONFIG_CLASSES))
def test_every_key_transformers_writes_is_reviewed(generations, arch: str) -> None:
    """No key of a default config, in either transformers generation, is left unreviewed."""
    for version, configs in generations:
        config, keys = _read(arch, configs[arch])
        assert keys.unreviewed == [], (version, arch, keys.unreviewed)
        assert config.architecture == arch


@pytest.mark.parametrize("arch", sorted(CONFIG_CLASSES))
def test_map_defaults_are_the_framework_defaults(generations, arch: str) -> None:
    """A key missing from config.json gets the value transformers itself would use: each literal
    map default equals the config class default in every generation."""
    nmap = maps.load(arch)
    checked = 0
    for version, configs in generations:
        defaults = configs[arch]
        for rule in nmap.fields.values():
            if rule.key is None or not rule.has_default or isinstance(rule.default, str) or rule.key not in defaults:
                continue
            if rule.key == "rope_theta":
                continue  # 5.x writes it inside rope_parameters: compared below
            framework = defaults[rule.key]
            if framework is None:
                continue  # a class that derives the value (head_dim, num_key_value_heads)
            canonical = dict(rule.values).get(framework, framework) if rule.values else framework
            assert canonical == rule.default, (version, arch, rule.key, framework, rule.default)
            checked += 1
        if "rope_theta" in nmap.fields and nmap.fields["rope_theta"].key:
            params = defaults.get("rope_parameters") or {}
            params = params.get("full_attention", params)  # nested per layer type (Gemma 3)
            theta = defaults.get("rope_theta", params.get("rope_theta"))
            assert theta == nmap.fields["rope_theta"].default, (version, arch, theta)
    assert checked > 0


def test_a_v5_only_config_is_read_with_its_rope_parameters() -> None:
    raw = {"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64,
           "max_position_embeddings": 128,
           "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}}
    config, _ = _read("llama", raw)
    assert config.rope_theta == 500000.0
    assert config.rope_scaling == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    # What each generation reads differs: transformers 4.x ignores rope_parameters.
    problem = hfconfig.portability_problem(raw, hfconfig.Spelling(10000.0), "config.json")
    assert "4.x reads rope_theta 10000.0" in problem and "5.x reads rope_theta 500000.0" in problem


def _llama(**keys: Any) -> dict[str, Any]:
    return {"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 128, **keys}


def test_written_config_is_read_alike_by_both_generations() -> None:
    config, _ = _read("llama", _llama(rope_theta=250000.0, rope_scaling={"type": "linear", "factor": 2.0}))
    assert config.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    from llmstd.configmap import config_to_framework

    body = config_to_framework(maps.load("llama"), config)
    assert body["rope_theta"] == 250000.0 and body["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
    assert body["rope_parameters"] == {"rope_type": "linear", "rope_theta": 250000.0, "factor": 2.0}
    assert hfconfig.portability_problem(body, hfconfig.Spelling(10000.0), "config.json") == ""
    again, _ = _read("llama", body)
    assert again.rope_theta == 250000.0 and again.rope_scaling == config.rope_scaling


REFUSED = {
    "quantized weights": ("llama", _llama(quantization_config={"quant_method": "gptq", "bits": 4}),
                          ["quantization_config", "quantised"]),
    "unknown rope type": ("llama", _llama(rope_parameters={"rope_type": "proportional", "rope_theta": 1e4}),
                          ["rope_parameters.rope_type", "proportional"]),
    "unknown rope parameter": ("llama", _llama(rope_scaling={"rope_type": "linear", "factor": 2.0, "skew": 1}),
                               ["rope_scaling", "skew"]),
    "two spellings disagree": ("llama", _llama(rope_theta=10000.0, rope_parameters={"rope_type": "default",
                                                                                 "rope_theta": 500000.0}),
                               ["rope_theta", "rope_parameters", "10000.0", "500000.0"]),
    "gpt2 without attention scaling": ("gpt2", {"model_type": "gpt2", "vocab_size": 64, "n_embd": 32, "n_layer": 2,
                                                "n_head": 4, "n_positions": 64, "scale_attn_weights": False},
                                       ["scale_attn_weights", "sqrt(head_dim)"]),
    "bert as a decoder": ("bert", {"model_type": "bert", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
                                   "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64,
                                   "is_decoder": True}, ["is_decoder"]),
    "qwen2 sliding layers": ("qwen2", {**_llama(), "model_type": "qwen2", "use_sliding_window": True,
                                       "sliding_window": 16, "max_window_layers": 1}, ["use_sliding_window"]),
    "mixed layer types": ("qwen2", {**_llama(), "model_type": "qwen2",
                                    "layer_types": ["full_attention", "sliding_attention"]}, ["layer_types"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_keys_that_change_the_computation_are_refused_by_name(case: str) -> None:
    arch, raw, needles = REFUSED[case]
    with pytest.raises(ConfigError) as info:
        _read(arch, raw)
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)


def test_unknown_keys_are_carried_and_reported(tiny, tmp_path: Path) -> None:
    src = tmp_path / "src"
    import shutil

    shutil.copytree(tiny.hf_dir("llama"), src)
    raw = json.loads((src / "config.json").read_text())
    raw["my_attention_tweak"] = 3
    (src / "config.json").write_text(json.dumps(raw))
    report = llmstd.convert(src, tmp_path / "canonical", to="canonical")
    assert report.config_keys_unreviewed == ["my_attention_tweak"]
    assert "use_cache" in report.config_keys_harmless
    back = llmstd.convert(tmp_path / "canonical", tmp_path / "hf", to="hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["my_attention_tweak"] == 3
    assert back.config_keys_unreviewed == []  # canonical configs carry it as an extra, reviewed once
    shown = run_cli("convert", src, tmp_path / "again", "--to", "canonical")
    assert shown.returncode == 0, shown.stderr
    assert "my_attention_tweak" in shown.stdout and "carried unchanged" in shown.stdout


def test_refused_key_is_one_cli_error_and_nothing_is_written(tiny, tmp_path: Path) -> None:
    import shutil

    src = tmp_path / "src"
    shutil.copytree(tiny.hf_dir("llama"), src)
    raw = json.loads((src / "config.json").read_text())
    raw["quantization_config"] = {"quant_method": "awq"}
    (src / "config.json").write_text(json.dumps(raw))
    assert_cli_error(run_cli("convert", src, tmp_path / "out", "--to", "canonical"), "quantization_config",
                     "config.json")
    assert not (tmp_path / "out").exists()


def test_a_spec_1_0_canonical_file_is_read_with_its_rope_scaling_upgraded(tiny, tmp_path: Path) -> None:
    """Spec 1.0 stored rope_scaling as the source spelled it ({"type": ...}); 1.1 reads it as canonical."""
    from llmstd.converters import safetensors_io
    from llmstd.formats import canonical

    out = tmp_path / "canonical"
    llmstd.convert(tiny.hf_dir("llama"), out, to="canonical")
    path = out / canonical.SINGLE
    meta = dict(safetensors_io.open_file(path).metadata)
    config = json.loads(meta[canonical.KEY_CONFIG])
    config["rope_scaling"] = {"type": "linear", "factor": 2.0}
    meta[canonical.KEY_CONFIG], meta[canonical.KEY_SPEC] = json.dumps(config), "1.0"
    safetensors_io.rewrite_metadata(path, meta)
    assert llmstd.load(out).config.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    meta[canonical.KEY_SPEC] = "1.1"  # the same spelling claimed as 1.1 is invalid
    safetensors_io.rewrite_metadata(path, meta)
    with pytest.raises(ConfigError, match="rope_scaling"):
        llmstd.load(out)


def test_older_canonical_files_are_read_without_the_fields_added_since(tiny, tmp_path: Path) -> None:
    """Spec 1.2 added fields (Gemma's norm offset, QK-norm, soft-caps, ...), 1.3 the mixture-of-experts
    ones; an older file has none of them and describes a model without those features. Claimed as
    the current spec, the same file is invalid."""
    from llmstd.config import ADDED_IN_1_2, ADDED_IN_1_3
    from llmstd.converters import safetensors_io
    from llmstd.formats import canonical

    out = tmp_path / "canonical"
    llmstd.convert(tiny.hf_dir("llama"), out, to="canonical")
    want = llmstd.load(out).config
    path = out / canonical.SINGLE
    meta = dict(safetensors_io.open_file(path).metadata)
    assert meta[canonical.KEY_SPEC] == llmstd.SPEC_VERSION == "1.3"
    full = json.loads(meta[canonical.KEY_CONFIG])
    for version, dropped in (("1.1", {**ADDED_IN_1_2, **ADDED_IN_1_3}), ("1.2", ADDED_IN_1_3)):
        config = {k: v for k, v in full.items() if k not in dropped}
        meta[canonical.KEY_CONFIG], meta[canonical.KEY_SPEC] = json.dumps(config), version
        safetensors_io.rewrite_metadata(path, meta)
        assert llmstd.load(out).config == want, version
    meta[canonical.KEY_SPEC] = "1.3"
    safetensors_io.rewrite_metadata(path, meta)
    with pytest.raises(ConfigError, match="num_experts"):
        llmstd.load(out)


def test_null_is_none_only_for_nullable_keys() -> None:
    """Mistral: an absent sliding_window is transformers' 4096-token default, a null one means no
    window (Mistral v0.2 on) -- reading null as absent would run a different model."""
    base = _llama(model_type="mistral")
    assert _read("mistral", base)[0].sliding_window == 4096
    assert _read("mistral", {**base, "sliding_window": None})[0].sliding_window is None
    assert _read("mistral", {**base, "sliding_window": 32})[0].sliding_window == 32
    # Not nullable: a null head_dim takes the derived default, as transformers does.
    assert _read("llama", _llama(head_dim=None))[0].head_dim == 8


def test_gemma_legacy_gelu_means_the_tanh_approximation_and_is_written_unambiguously() -> None:
    from llmstd.configmap import config_to_framework

    raw = _llama(model_type="gemma", head_dim=8, hidden_act="gelu")
    config, _ = _read("gemma", raw)
    assert config.activation == "gelu_tanh"
    assert config_to_framework(maps.load("gemma"), config)["hidden_act"] == "gelu_pytorch_tanh"


@pytest.mark.parametrize("spelling", ["4.x", "5.x", "pythia"])
def test_gpt_neox_rotary_keys_in_every_spelling(spelling: str) -> None:
    """GPT-NeoX: 4.x reads rotary_emb_base/rotary_pct, 5.x rope_parameters; old configs have only
    the former. Each is read as its writer meant, and llmstd writes both."""
    from llmstd.configmap import config_to_framework

    raw = _llama(model_type="gpt_neox")
    if spelling == "pythia":
        raw.update(rotary_emb_base=500.0, rotary_pct=0.5)
    elif spelling == "4.x":
        raw.update(rotary_emb_base=500.0, rotary_pct=0.5, rope_theta=500.0, partial_rotary_factor=0.5)
    else:
        raw["rope_parameters"] = {"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.5}
    config, keys = _read("gpt_neox", raw)
    assert (config.rope_theta, config.rotary_dim) == (500.0, 4) and keys.unreviewed == []
    written = config_to_framework(maps.load("gpt_neox"), config)
    assert (written["rotary_emb_base"], written["rotary_pct"]) == (500.0, 0.5)
    assert written["rope_parameters"] == {"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.5}
    assert hfconfig.portability_problem(written, rope_spelling(maps.load("gpt_neox")), "config.json") == ""
    if spelling == "5.x":  # 4.57 would read rotary_pct 0.25 and base 10000 from this config
        assert "4.x reads rope_theta 10000.0, partial_rotary_factor 0.25" in hfconfig.portability_problem(
            raw, rope_spelling(maps.load("gpt_neox")), "config.json")
