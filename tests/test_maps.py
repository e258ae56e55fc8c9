"""Naming maps: every built-in map loads, invalid maps are rejected with the file and key named, and a
new architecture is a new map file (on LLMSTD_MAPS_PATH) with no Python change."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import llmstd
from helpers import assert_cli_error, run_cli, tree
from llmstd import maps, vocab
from llmstd.errors import MapError

BUILTIN = ("bert", "gpt2", "llama", "mistral", "qwen2")
MAPS_DIR = Path(maps.__file__).resolve().parents[1] / "naming_maps"


@pytest.fixture(autouse=True)
def _no_user_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(maps.MAPS_PATH_ENV, raising=False)
    maps._load_cached.cache_clear()
    yield
    maps._load_cached.cache_clear()


def _builtin_text(arch: str) -> str:
    return (MAPS_DIR / f"{arch}.toml").read_text(encoding="utf-8")


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, f"{old!r} not found in the map: the test needs updating"
    return text.replace(old, new, 1)


# ------------------------------------------------------------------------------------------------
# built-in maps


def test_builtin_maps_are_listed() -> None:
    assert set(BUILTIN) <= set(maps.available())


@pytest.mark.parametrize("arch", BUILTIN)
def test_builtin_map_loads(arch: str) -> None:
    nmap = maps.load(arch)
    assert nmap.architecture == arch
    assert nmap.path.name == f"{arch}.toml"
    assert arch in nmap.model_types or arch == "bert" and "bert" in nmap.model_types
    assert "hf" in nmap.dialects
    assert nmap.entries, "a map without tensors"
    # The same file parses identically when loaded directly.
    assert maps.load_map_file(nmap.path).entries == nmap.entries


@pytest.mark.parametrize("arch", BUILTIN)
def test_builtin_maps_are_invertible(arch: str) -> None:
    """Each dialect name (and alias) belongs to one entry only, and each canonical name to one entry per
    dialect: the map runs both ways."""
    nmap = maps.load(arch)
    for dialect in nmap.dialects:
        seen: dict[str, int] = {}
        for k, (entry, dname) in enumerate(nmap.entries_for(dialect)):
            for name in (dname.name, *dname.aliases):
                assert name not in seen, f"{arch}/{dialect}: '{name}' in entries {seen[name]} and {k}"
                seen[name] = k
            for cname in entry.canonical:
                assert vocab.pattern_of(cname.replace("{i}", "0")) is not None, cname


# ------------------------------------------------------------------------------------------------
# strict validation: each broken copy raises MapError naming the file and the key

LLAMA = "llama"
BROKEN = {
    "unknown top-level key": (
        lambda t: _replace_once(t, 'architecture = "llama"', 'architecture = "llama"\ncolour = "blue"'),
        ["colour"],
    ),
    "unknown key in a tensor entry": (
        lambda t: _replace_once(t, 'hf = "{prefix}embed_tokens.weight"',
                                'hf = "{prefix}embed_tokens.weight"\nshape = [128, 32]'),
        ["tensors[0]", "shape"],
    ),
    "unknown key in a dialect name table": (
        lambda t: _replace_once(t, 'hf = "{prefix}norm.weight"', 'hf = { name = "{prefix}norm.weight", dtype = "f32" }'),
        ["dtype"],
    ),
    "unknown canonical name": (
        lambda t: _replace_once(t, 'canonical = "final_norm.weight"', 'canonical = "final_nrom.weight"'),
        ["final_nrom.weight"],
    ),
    "unknown transform": (
        lambda t: _replace_once(t, 'hf = "{prefix}layers.{i}.self_attn.q_proj.weight"',
                                'hf = { name = "{prefix}layers.{i}.self_attn.q_proj.weight", '
                                'transforms = [{ op = "rotate" }] }'),
        ["transforms[0]", "rotate"],
    ),
    "bad transform parameter value": (
        lambda t: _replace_once(t, 'hf = "{prefix}layers.{i}.self_attn.k_proj.weight"',
                                'hf = { name = "{prefix}layers.{i}.self_attn.k_proj.weight", '
                                'transforms = [{ op = "rotary_permute", heads = "two" }] }'),
        ["transforms[0]", "heads"],
    ),
    "unknown transform parameter": (
        lambda t: _replace_once(t, 'hf = "{prefix}layers.{i}.self_attn.k_proj.weight"',
                                'hf = { name = "{prefix}layers.{i}.self_attn.k_proj.weight", '
                                'transforms = [{ op = "rotary_permute", heads = 2, groups = 1 }] }'),
        ["transforms[0]", "groups"],
    ),
    "transform expression naming an unknown field": (
        lambda t: _replace_once(t, 'hf = "{prefix}layers.{i}.self_attn.k_proj.weight"',
                                'hf = { name = "{prefix}layers.{i}.self_attn.k_proj.weight", '
                                'transforms = [{ op = "rotary_permute", heads = "= num_kv_head" }] }'),
        ["transforms[0]", "num_kv_head"],
    ),
    "missing config field": (
        lambda t: _replace_once(t, 'rope_theta = { key = "rope_theta", default = 10000.0 }\n', ""),
        ["config.fields", "rope_theta"],
    ),
    "unknown config field": (
        lambda t: _replace_once(t, 'vocab_size = { key = "vocab_size" }',
                                'vocab_size = { key = "vocab_size" }\nvocab_sise = { key = "vocab_sise" }'),
        ["config.fields.vocab_sise"],
    ),
    "unknown key in a config field rule": (
        lambda t: _replace_once(t, 'vocab_size = { key = "vocab_size" }', 'vocab_size = { key = "vocab_size", typo = 1 }'),
        ["config.fields.vocab_size", "typo"],
    ),
    "unknown dialect": (
        lambda t: _replace_once(t, "[dialects.hf]", "[dialects.hf_pt]"),
        ["dialects.hf_pt"],
    ),
    "unknown placeholder": (
        lambda t: _replace_once(t, 'hf = "{prefix}norm.weight"', 'hf = "{prefix}norm.{layer}.weight"'),
        ["{layer}"],
    ),
    "per-layer name without {i}": (
        lambda t: _replace_once(t, 'hf = "{prefix}layers.{i}.input_layernorm.weight"',
                                'hf = "{prefix}layers.input_layernorm.weight"'),
        ["tensors[1]"],
    ),
    "canonical name mapped twice": (
        lambda t: t + '\n[[tensors]]\ncanonical = "final_norm.weight"\nhf = "{prefix}final_norm.weight"\n',
        ["final_norm.weight", "already mapped"],
    ),
    "fan-out that does not match the canonical names": (
        lambda t: _replace_once(t, 'hf = "{prefix}layers.{i}.mlp.up_proj.weight"',
                                'hf = { name = "{prefix}layers.{i}.mlp.up_proj.weight", '
                                'transforms = [{ op = "split", axis = 0, parts = 2 }] }'),
        ["transforms turn 1 tensor(s) into 2"],
    ),
    "unsupported map format": (
        lambda t: _replace_once(t, "format = 1", "format = 2"),
        ["format"],
    ),
    "not TOML": (
        lambda t: t + "\n[[tensors]\n",
        ["TOML"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_invalid_map_is_rejected(tmp_path: Path, case: str) -> None:
    mutate, needles = BROKEN[case]
    path = tmp_path / "llama.toml"
    path.write_text(mutate(_builtin_text(LLAMA)), encoding="utf-8")
    with pytest.raises(MapError) as info:
        maps.load_map_file(path)
    message = str(info.value)
    assert str(path) in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_unchanged_copy_is_accepted(tmp_path: Path) -> None:
    # The control for the cases above: a verbatim copy loads, so each failure is due to its mutation.
    path = tmp_path / "llama.toml"
    path.write_text(_builtin_text(LLAMA), encoding="utf-8")
    assert maps.load_map_file(path).architecture == "llama"


def test_invalid_map_on_the_search_path_fails_loading_and_cli(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "maps"
    user.mkdir()
    mutate, _ = BROKEN["unknown top-level key"]
    (user / "llama.toml").write_text(mutate(_builtin_text(LLAMA)), encoding="utf-8")
    monkeypatch.setenv(maps.MAPS_PATH_ENV, str(user))
    with pytest.raises(MapError, match="colour"):
        maps.load("llama")
    assert_cli_error(run_cli("maps", "show", "llama"), "colour", str(user / "llama.toml"))


def test_file_name_must_match_architecture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "maps"
    user.mkdir()
    (user / "llama2.toml").write_text(_builtin_text(LLAMA), encoding="utf-8")  # still says architecture = "llama"
    monkeypatch.setenv(maps.MAPS_PATH_ENV, str(user))
    with pytest.raises(MapError, match="llama2"):
        maps.load("llama2")


def test_unknown_architecture_is_a_map_error() -> None:
    with pytest.raises(MapError, match="no naming map for architecture 'gpt5'"):
        maps.load("gpt5")


# ------------------------------------------------------------------------------------------------
# a new architecture is a new file


def _tinyllama_maps(tmp_path: Path) -> Path:
    user = tmp_path / "user-maps"
    user.mkdir()
    text = _builtin_text(LLAMA)
    text = _replace_once(text, 'architecture = "llama"', 'architecture = "tinyllama"')
    text = _replace_once(text, 'model_types = ["llama"]', 'model_types = ["tinyllama"]')
    (user / "tinyllama.toml").write_text(text, encoding="utf-8")
    return user


def test_new_architecture_from_a_map_file(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from helpers import assert_tensors_bit_identical

    src = tmp_path / "src"
    shutil.copytree(tiny.hf_dir("llama"), src)
    config = json.loads((src / "config.json").read_text())
    config["model_type"] = "tinyllama"
    (src / "config.json").write_text(json.dumps(config))

    # Without the map file, the model type is unknown.
    assert "tinyllama" not in maps.available()
    with pytest.raises(MapError, match="tinyllama"):
        llmstd.convert(src, tmp_path / "refused", to="canonical")
    assert not (tmp_path / "refused").exists()

    monkeypatch.setenv(maps.MAPS_PATH_ENV, str(_tinyllama_maps(tmp_path)))
    maps._load_cached.cache_clear()
    assert "tinyllama" in maps.available()
    assert set(BUILTIN) <= set(maps.available())

    report = llmstd.convert(src, tmp_path / "canonical", to="canonical")
    assert report.architecture == "tinyllama"
    ckpt = llmstd.load(tmp_path / "canonical")
    assert ckpt.config.architecture == "tinyllama"
    reference = llmstd.load(tiny.canonical_dir("llama"))
    assert set(ckpt) == set(reference)
    for name in reference:
        assert ckpt[name].load().tobytes() == reference[name].load().tobytes(), name

    llmstd.convert(tmp_path / "canonical", tmp_path / "hf", to="hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "tinyllama"
    assert_tensors_bit_identical(tiny.expected("llama"), tmp_path / "hf")

    # The CLI sees it too.
    listed = run_cli("maps", "list", "--json", env={maps.MAPS_PATH_ENV: str(tmp_path / "user-maps")})
    assert listed.returncode == 0, listed.stderr
    rows = {row["architecture"]: row for row in json.loads(listed.stdout)}
    assert rows["tinyllama"]["model_types"] == ["tinyllama"]
    assert Path(rows["tinyllama"]["file"]) == tmp_path / "user-maps" / "tinyllama.toml"


def test_map_on_search_path_overrides_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "maps"
    user.mkdir()
    text = _replace_once(_builtin_text("gpt2"), 'description = "', 'description = "OVERRIDDEN ')
    (user / "gpt2.toml").write_text(text, encoding="utf-8")
    monkeypatch.setenv(maps.MAPS_PATH_ENV, str(user))
    nmap = maps.load("gpt2")
    assert nmap.path == user / "gpt2.toml"
    assert nmap.description.startswith("OVERRIDDEN")
    assert tree(user) == ["gpt2.toml"]


# ------------------------------------------------------------------------------------------------
# composition: extends, abstract bases, config key rules


def test_mistral_and_qwen2_are_deltas_of_llama() -> None:
    llama, mistral, qwen2 = maps.load("llama"), maps.load("mistral"), maps.load("qwen2")
    assert mistral.extends == ("llama", "_hf_config") and qwen2.extends == ("llama", "_hf_config")
    # Same hf names as llama, plus mistral's own hf_tf dialect; fields overridden where they differ.
    assert [e.dialects["hf"].name for e in llama.entries if "hf" in e.dialects] == \
        [e.dialects["hf"].name for e in mistral.entries if "hf" in e.dialects]
    assert "hf_tf" in mistral.dialects and "hf_tf" not in llama.dialects
    assert mistral.fields["sliding_window"].key == "sliding_window" and llama.fields["sliding_window"].has_fixed
    assert qwen2.fields["attn_qkv_bias"].fixed is True and qwen2.model_types == ("qwen2",)
    assert qwen2.dialects["hf"].heads["causal_lm"].cls == "Qwen2ForCausalLM"
    # The shared Hugging Face keys come from the abstract base, overridable per map.
    assert llama.keys["use_cache"].harmless and not qwen2.keys["use_sliding_window"].harmless
    assert not maps.load("bert").keys["is_decoder"].harmless and llama.keys["is_decoder"].harmless


def test_abstract_maps_are_bases_only() -> None:
    assert "_hf_config" not in maps.available()
    with pytest.raises(MapError, match="no naming map for architecture '_hf_config'"):
        maps.load("_hf_config")


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_child_map_overrides_merges_and_drops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "llama2x", 'format = 1\narchitecture = "llama2x"\nextends = "llama"\n'
           '[config]\nmodel_types = ["llama2x"]\n[config.fields]\nrope_theta = { key = "rope_theta", default = 5e5 }\n'
           '[config.refuse]\nuse_cache = { allow = [true], reason = "test" }\n'
           '[[tensors]]\ncanonical = "final_norm.weight"\nhf = "{prefix}final_ln.weight"\ntf_llmstd = false\n')
    monkeypatch.setenv(maps.MAPS_PATH_ENV, str(tmp_path))
    child = maps.load("llama2x")
    assert child.fields["rope_theta"].default == 5e5 and child.model_types == ("llama2x",)
    assert not child.keys["use_cache"].harmless and child.keys["use_cache"].allow == (True,)
    final = next(e for e in child.entries if e.canonical == ("final_norm.weight",))
    assert final.dialects["hf"].name == "{prefix}final_ln.weight" and "tf_llmstd" not in final.dialects
    assert len(child.entries) == len(maps.load("llama").entries)


def test_extends_cycles_and_unknown_bases_are_refused(tmp_path: Path) -> None:
    a = _write(tmp_path, "a", 'format = 1\narchitecture = "a"\nextends = "b"\n')
    _write(tmp_path, "b", 'format = 1\narchitecture = "b"\nextends = "a"\n')
    with pytest.raises(MapError, match="a cycle"):
        maps.load_map_file(a)
    c = _write(tmp_path, "c", 'format = 1\narchitecture = "c"\nextends = "nowhere"\n')
    with pytest.raises(MapError, match="'nowhere', which is no naming map"):
        maps.load_map_file(c)


def test_config_key_rules_are_validated(tmp_path: Path) -> None:
    text = _builtin_text(LLAMA)
    cases = {
        "harmless without a reason": ("[config.harmless]\nattention_dropout", "[config.harmless]\nfoo = \"\"\nattention_dropout",
                                      "must give the reason"),
        "key both read and harmless": ("[config.harmless]\n", '[config.harmless]\nvocab_size = "x"\n',
                                       "already read by the rule for canonical field 'vocab_size'"),
        "refusal without a reason": ("[config.harmless]\n", "[config.refuse]\nfoo = { allow = [1] }\n[config.harmless]\n",
                                     "missing key(s) reason"),
    }
    for case, (old, new, needle) in cases.items():
        path = tmp_path / "llama.toml"
        path.write_text(_replace_once(text, old, new), encoding="utf-8")
        with pytest.raises(MapError, match=re.escape(needle)):
            maps.load_map_file(path)


def test_expressions_read_framework_keys_safely() -> None:
    from llmstd import expr

    pattern = ("= ['sliding_attention' if (i + 1) % key(['sliding_window_pattern', '_sliding_window_pattern'], 6) "
               "else 'full_attention' for i in range(num_layers)]")
    assert expr.names_in(pattern) == {"num_layers"}
    assert expr.keys_read(pattern) == {"sliding_window_pattern", "_sliding_window_pattern"}
    assert expr.evaluate(pattern, {"num_layers": 4}, {"_sliding_window_pattern": 2}) == [
        "sliding_attention", "full_attention", "sliding_attention", "full_attention"]
    assert expr.evaluate("= int(head_dim * key('rotary_pct', 0.25))", {"head_dim": 64}, {}) == 16
    # tables: built with quoted names, read with get() (a missing name or a non-table gives the default)
    rope = "= {'rope_type': 'llama3', 'factor': key('f')} if key('f') != None else None"
    assert expr.evaluate(rope, {}, {"f": 8.0}) == {"rope_type": "llama3", "factor": 8.0}
    assert expr.evaluate(rope, {}, {}) is None
    assert expr.evaluate("= get(key('r'), 'factor', 1.0)", {}, {"r": {"factor": 4.0}}) == 4.0
    assert expr.evaluate("= get(key('r'), 'factor', 1.0)", {}, {"r": 3}) == 1.0
    for hostile, needle in (("= [i for i in range(n)]", "range of"), ("= 2 ** n", "exponent"),
                            ("= open('x')", "calls something other than"), ("= x.__class__", "Attribute"),
                            ("= {x: 1}", "quoted names"), ("= {**x}", "quoted names")):
        with pytest.raises(expr.ExpressionError, match=needle):
            expr.evaluate(hostile, {"n": 10**9, "x": 1}, {})


def test_each_model_type_is_claimed_by_one_map() -> None:
    """for_model_type takes the map named like the model type first: a second claimant would make
    the answer depend on that shortcut."""
    claims: dict[str, list[str]] = {}
    for arch in maps.available():
        for model_type in maps.load(arch).model_types:
            claims.setdefault(model_type, []).append(arch)
    assert {t: a for t, a in claims.items() if len(a) > 1} == {}
    assert all(maps.for_model_type(t).architecture == a[0] for t, a in claims.items())
