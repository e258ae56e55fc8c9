"""``keras-hub``: a KerasHub preset directory, what ``keras_hub.models.<Task>.from_preset(dir)`` loads.

A preset holds ``config.json`` (the serialised backbone: ``class_name``, ``config``,
``registered_name`` = ``keras_hub>{class}``), ``metadata.json`` (versions, parameter count),
``model.weights.h5`` (Keras 3 layout, :mod:`llmstd.converters.keras3_h5`; sharded as
``model.weights.json`` + ``model_NNNNN.weights.h5`` past 10 GB, KerasHub's default), optionally
``task.json`` (the task class wrapping the backbone) and ``task.weights.h5`` (weights the task adds,
e.g. BERT's masked-LM head), and tokenizer files.

Weights use the ``keras_hub`` dialect of the naming map: dataset paths such as
``layers/llama_transformer_decoder{_i}/_self_attention_layer/_query_dense/vars/0``, with einsum kernels
(``[hidden, heads, head_dim]``) reached from canonical ``[out, in]`` by declared reshape/transpose
transforms. Variables of ``task.weights.h5`` are named ``task/<dataset path>``.

The backbone config translates through the map's ``[keras_hub]`` table: each KerasHub key is the
Hugging Face key of the same meaning (so the Hugging Face rules of the map give the canonical
config, with KerasHub's own defaults for absent keys) or has the one value llmstd can express;
every other key is harmless with a reason or an error naming it. Writing translates back and then
reads its own result: a model the backbone cannot express (a bias, a head size, a window it has no
key for) is refused by field name instead of written as a different model.

Hugging Face side files (tokenizer, generation config, ...) travel under ``huggingface/`` in the
preset, where KerasHub never looks, and come back out of it when the preset is converted again.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmstd import expr, maps, vocab
from llmstd.checkpoint import Checkpoint, SideFiles
from llmstd.config import CanonicalConfig
from llmstd.configmap import ConfigKeys, config_to_framework, read_config
from llmstd.converters import keras3_h5
from llmstd.errors import ConfigError, FormatError, MapError
from llmstd.findings import Findings
from llmstd.formats import Format, WriteOptions, common, hf, keras_tokenizer, register
from llmstd.formats.keras_objects import REGISTERED, layer, serialised, snake_case
from llmstd.jsonfile import dumps, read_json_object
from llmstd.mapping import DialectMatcher, from_canonical, to_canonical
from llmstd.maps import Head, KerasHubSpec, KerasKey, NamingMap
from llmstd.tensors import LazyTensor

DIALECT = "keras_hub"
CONFIG = "config.json"
TASK = "task.json"
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"
SHARDED_WEIGHTS = "model.weights.json"
TASK_WEIGHTS = "task.weights.h5"
PREPROCESSOR = "preprocessor.json"
TASK_PREFIX = "task/"  # names of task.weights.h5 variables in the keras_hub dialect
DEFAULT_SHARD_SIZE = 10 * 1024**3  # KerasHub's save_to_preset max_shard_size (10 GB)
#: Where the Hugging Face side files of a converted model live inside a preset.
HF_SIDE_DIR = "huggingface/"
#: Keys every Keras layer config carries: identity and the dtype policy (the weights' dtype is read
#: from the tensors; writing sets the policy to it, so KerasHub computes in the stored dtype).
LAYER_KEYS = ("name", "trainable", "dtype")
#: Hugging Face tokenizer files: their presence means the source had a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json", "spiece.model")
#: KerasHub's own files besides weights and configs: its tokenizer and preprocessor, rebuilt by
#: KerasHub from them and never turned into a Hugging Face tokenizer by llmstd.
KERAS_TOKENIZER_FILES = ("tokenizer.json", "preprocessor.json", "image_converter.json", "audio_converter.json")


def _is_preset_config(path: Path) -> bool:
    try:
        raw = read_json_object(path, max_bytes=1 << 20)
    except FormatError:
        return False
    return str(raw.get("registered_name", "")).startswith(REGISTERED)


def detect(path: Path) -> bool:
    return (path.is_dir() and (path / CONFIG).is_file()
            and ((path / WEIGHTS).is_file() or (path / SHARDED_WEIGHTS).is_file())
            and _is_preset_config(path / CONFIG))


# ------------------------------------------------------------------------------------------------
# which map, which head


def _class_of(raw: Mapping[str, Any], source: Path) -> str:
    cls = raw.get("class_name")
    registered = raw.get("registered_name")
    if not isinstance(cls, str) or not isinstance(registered, str) or not registered.startswith(REGISTERED):
        raise FormatError("is not a serialised KerasHub object (class_name and registered_name 'keras_hub>...')",
                          file=source)
    return cls


def task_class(path: Path) -> str | None:
    """The KerasHub task class of the preset at ``path`` (its task.json), None for a backbone alone."""
    return _class_of(read_json_object(path / TASK), path / TASK) if (path / TASK).is_file() else None


def spec_of(nmap: NamingMap) -> KerasHubSpec:
    if nmap.keras_hub is None or DIALECT not in nmap.dialects:
        raise MapError(f"'{nmap.architecture}' has no KerasHub backbone in its naming map", file=nmap.path,
                       hint="architectures with one: " + ", ".join(a for a in maps.available()
                                                                   if maps.load(a).keras_hub is not None))
    return nmap.keras_hub


def map_for_class(cls: str, arch: str | None, source: Path, body: Mapping[str, Any] | None = None) -> NamingMap:
    """The map whose ``[keras_hub]`` names this backbone class (``--arch`` if given, checked). One
    class may be several architectures (KerasHub's GemmaBackbone is Gemma and Gemma 2): then the
    map with the fewest fixed keys that the backbone config ``body`` contradicts (whose read then
    names them)."""
    candidates = [maps.load(arch)] if arch else [maps.load(a) for a in maps.available()]
    claiming = [nmap for nmap in candidates if nmap.keras_hub is not None
                and (cls == nmap.keras_hub.backbone or cls in nmap.keras_hub.also)]
    if len(claiming) > 1 and body is not None:
        claiming.sort(key=lambda m: _fixed_keys_contradicted(m.keras_hub, body))
    if claiming:
        return claiming[0]
    known = sorted(m.keras_hub.backbone for m in (maps.load(a) for a in maps.available()) if m.keras_hub)
    raise MapError(f"no naming map reads KerasHub backbone '{cls}'" + (f" as '{arch}'" if arch else ""),
                   file=source, hint=f"backbones llmstd reads: {', '.join(known)}")


def _fixed_keys_contradicted(spec: KerasHubSpec | None, body: Mapping[str, Any]) -> int:
    assert spec is not None
    return sum(not _same(body[key] if key in body else _default(rule), rule.fixed) for key, rule in spec.keys.items()
               if rule.has_fixed and (key in body or rule.has_default))


def _head_for_task(nmap: NamingMap, spec: KerasHubSpec, task_cls: str | None, source: Path) -> Head:
    heads = nmap.dialect(DIALECT).heads
    if task_cls is None:
        # A backbone alone: a decoder backbone still holds its output embedding (KerasHub's
        # ReversibleEmbedding), so it reads as the map's first head, the language model.
        return next(iter(heads.values()))
    for head_name, cls in spec.tasks.items():
        # A class in ``also`` is an older name of the task (LlamaCausalLM for Llama3CausalLM).
        if head_name in heads and (task_cls == cls or task_cls in spec.also):
            return heads[head_name]
    raise MapError(f"KerasHub task '{task_cls}' is not one llmstd reads for '{nmap.architecture}'", file=source,
                   hint=f"tasks: {', '.join(spec.tasks.values()) or 'none'}")


# ------------------------------------------------------------------------------------------------
# config translation


def keras_to_hf(nmap: NamingMap, body: Mapping[str, Any], source: Path,
                base: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The Hugging Face config a KerasHub backbone config stands for, and the harmless keys (with
    reasons). ``base``: the Hugging Face config the preset carries (huggingface/config.json), for
    the keys KerasHub has no place for; without it the map's ``hf_defaults``. KerasHub's keys win:
    they are what KerasHub computes. An unknown key, or a fixed key holding another value, is a
    ConfigError."""
    spec = spec_of(nmap)
    hf_config: dict[str, Any] = dict(base) if base is not None else dict(spec.hf_defaults)
    harmless: dict[str, str] = {}
    unknown = sorted(k for k in body if k not in spec.keys and k not in spec.harmless and k not in spec.unset
                     and k not in LAYER_KEYS)
    if unknown:
        raise ConfigError(f"KerasHub {spec.backbone} config key(s) {', '.join(map(repr, unknown))} are unknown to "
                          f"llmstd's '{nmap.architecture}' map", file=source,
                          hint="they may change the computation; add them to the map's [keras_hub.keys] once understood")
    for key, rule in spec.keys.items():
        if key in body:
            value = body[key]
        elif rule.has_default:
            value = _default(rule)
        else:
            raise ConfigError(f"KerasHub config lacks '{key}'", file=source, hint=f"add '{key}' to config.json")
        if rule.has_fixed:
            if not _same(value, rule.fixed):
                raise ConfigError(f"KerasHub config has '{key}' = {value!r}; llmstd expresses this backbone only with "
                                  f"{rule.fixed!r}", file=source, hint="this model cannot be converted faithfully")
            continue
        if rule.hf is None:
            continue  # written only: hf_derived reads it together with its sibling keys
        if rule.read is not None:
            value = _evaluate(rule.read, {**body, key: value}, f"keras_hub.keys.{key}.read", source)
        if value is not None:
            hf_config[rule.hf] = value
    for hf_key, value in spec.hf_derived.items():
        hf_config[hf_key] = (_evaluate(value, _with_defaults(spec, body), f"keras_hub.hf_derived.{hf_key}", source)
                             if expr.is_expression(value) else value)
    used = sorted(k for k in spec.unset if body.get(k) is not None)
    if used:
        raise ConfigError(f"KerasHub config sets {', '.join(f'{k!r} = {body[k]!r}' for k in used)}, a feature llmstd "
                          f"does not convert for {spec.backbone}", file=source,
                          hint="this model cannot be converted faithfully; nothing was written")
    for key in body:
        if key in spec.harmless:
            harmless[key] = spec.harmless[key]
    return hf_config, harmless


def deviations(spec: KerasHubSpec, body: Mapping[str, Any], source: Path | str) -> dict[str, str]:
    """Canonical fields KerasHub computes otherwise than this backbone config says (the map's
    ``[keras_hub.deviations]`` whose condition holds), with the reason."""
    return {name: reason for name, (when, reason) in spec.deviations.items()
            if _evaluate(when, _with_defaults(spec, body), f"keras_hub.deviations.{name}", source)}


def _default(rule: KerasKey) -> Any:
    """KerasHub's default for a key: a literal, or '= None' (TOML has no null)."""
    return expr.evaluate(rule.default, {}) if expr.is_expression(rule.default) else rule.default


def _with_defaults(spec: KerasHubSpec, body: Mapping[str, Any]) -> dict[str, Any]:
    return {**{k: _default(r) for k, r in spec.keys.items() if r.has_default}, **body}


def _evaluate(text: str, framework: Mapping[str, Any], where: str, source: Path | str) -> Any:
    try:
        return expr.evaluate(text, {}, framework)
    except (expr.ExpressionError, TypeError, ZeroDivisionError) as exc:
        raise ConfigError(f"cannot evaluate [{where}] over this config: {exc}", file=source,
                          hint="fix the config value the expression reads") from None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def hf_to_keras(nmap: NamingMap, config: CanonicalConfig, tensors: Mapping[str, LazyTensor],
                accept: tuple[str, ...] = ()) -> dict[str, Any]:
    """The KerasHub backbone config keys for ``config`` (whose canonical ``tensors`` decide the
    map's 'present' rules); refuses (naming the fields) a model the backbone would compute
    differently, found by reading the translation back -- except for the canonical fields in
    ``accept``, differences the user accepted by name (``--accept-difference``)."""
    spec = spec_of(nmap)
    framework = config_to_framework(nmap, config)
    body: dict[str, Any] = dict.fromkeys(spec.unset)
    for key, rule in spec.keys.items():
        if rule.has_fixed:
            body[key] = rule.fixed
        elif rule.write is not None:
            body[key] = _evaluate(rule.write, framework, f"keras_hub.keys.{key}.write", nmap.path)
        elif rule.hf in framework:
            body[key] = framework[rule.hf]
        elif rule.has_default:
            body[key] = _default(rule)
        else:
            raise MapError(f"[keras_hub.keys.{key}] reads Hugging Face key '{rule.hf}', which the map's config "
                           "rules never write", file=nmap.path)
    hf_config, _ = keras_to_hf(nmap, body, nmap.path, carried_keys(nmap, framework))
    back, _ = read_config(nmap, hf_config, head=config.head, dtype=config.dtype,
                          present=_present(tensors), source=f"{spec.backbone} config")
    differ = {f: repr(getattr(back, f)) for f in CanonicalConfig.__dataclass_fields__ if f != "extras"
              and f not in accept and getattr(back, f) != getattr(config, f)}
    differ.update({f: reason for f, reason in deviations(spec, body, nmap.path).items() if f not in accept})
    if differ:
        detail = "; ".join(f"{f} = {getattr(config, f)!r} (as {spec.backbone}: {how})" for f, how in differ.items())
        raise ConfigError(f"KerasHub's {spec.backbone} cannot express this model: {detail}", file=nmap.path,
                          hint="nothing was written; convert to another format (hf, canonical, onnx, tf-h5), or -- "
                               "when the difference is one you accept -- pass --accept-difference "
                               + " --accept-difference ".join(differ))
    return body


def _present(tensors: Mapping[str, LazyTensor]) -> set[str]:
    """Canonical names and their patterns, as 'present' config rules look them up."""
    return set(tensors) | {p for p in map(vocab.pattern_of, tensors) if p is not None}


# ------------------------------------------------------------------------------------------------
# reading


def _weights(path: Path) -> tuple[dict[str, LazyTensor], list[Path]]:
    if (path / WEIGHTS).is_file():
        tensors, files = keras3_h5.read_weights(path / WEIGHTS), [path / WEIGHTS]
    else:
        index = path / SHARDED_WEIGHTS
        tensors = keras3_h5.read_sharded(index)
        files = [index, *sorted(p for p in path.glob("model_*.weights.h5"))]
    if (path / TASK_WEIGHTS).is_file():
        tensors.update({TASK_PREFIX + n: t for n, t in keras3_h5.read_weights(path / TASK_WEIGHTS).items()})
        files.append(path / TASK_WEIGHTS)
    return tensors, files


def read(path: Path, arch: str | None = None, *, findings: Findings | None = None) -> Checkpoint:
    # With ``findings`` (validate), tensor-mapping problems are collected; a problem with the preset's
    # files or configs raises, and validate reports that one, as for the other TF and ONNX formats.
    config_path = path / CONFIG
    raw = read_json_object(config_path)
    cls = _class_of(raw, config_path)
    body = raw.get("config")
    if not isinstance(body, dict):
        raise FormatError("has no 'config' object", file=config_path)
    nmap = map_for_class(cls, arch, config_path, body)
    spec = spec_of(nmap)
    task_cls = task_class(path)
    read_files = [config_path]
    if task_cls is not None:
        task = read_json_object(path / TASK)
        read_files.append(path / TASK)
        # KerasHub's task.from_preset builds the backbone from task.json's own copy, the backbone
        # class from config.json: two different models if the copies disagree.
        copy = task.get("config", {}).get("backbone") if isinstance(task.get("config"), dict) else None
        if copy is not None and copy != raw:
            raise FormatError("the backbone inside task.json differs from config.json; KerasHub builds the task "
                              "from task.json's and the backbone from config.json's", file=path / TASK,
                              hint="make the two copies equal (or remove task.json for a backbone preset)")
    head = _head_for_task(nmap, spec, task_cls, path / TASK)
    tensors, files = _weights(path)
    names = list(tensors)
    hf_config, harmless = keras_to_hf(nmap, body, config_path, _carried_hf_config(path, nmap))
    present = DialectMatcher(nmap, DIALECT, head.prefix).canonical_names_present(names)
    config, keys = read_config(nmap, hf_config, head=head.name, dtype=common.dominant_dtype(tensors), present=present,
                               source=str(config_path))
    keys = ConfigKeys({**keys.harmless, **harmless}, keys.unreviewed)
    canonical, report = to_canonical(nmap, DIALECT, head.prefix, tensors, config, source=str(path), findings=findings)
    keys.record(report)
    # What KerasHub computes otherwise than the canonical config can say: reported, never hidden.
    report.deviations = deviations(spec, body, config_path)
    if (path / METADATA).is_file():
        read_files.append(path / METADATA)
    return Checkpoint(path=path, format="keras-hub", container="keras3-h5", dialect=DIALECT, config=config,
                      tensors=canonical, files=[*read_files, *files], source_names=tensors, report=report,
                      sidecars=_side_files(path, [*read_files, *files]))


def _carried_hf_config(path: Path, nmap: NamingMap) -> dict[str, Any] | None:
    """What the Hugging Face config.json llmstd stored in the preset may add (:func:`carried_keys`),
    when it describes this architecture."""
    carried = path / HF_SIDE_DIR / CONFIG
    if not carried.is_file():
        return None
    raw = read_json_object(carried)
    if raw.get("model_type") not in nmap.model_types:
        raise ConfigError(f"carries a Hugging Face config of model_type {raw.get('model_type')!r}, not "
                          f"'{nmap.architecture}'", file=carried, hint="remove the stale huggingface/ folder")
    return carried_keys(nmap, raw)


#: Canonical fields that change nothing KerasHub computes when its config has no key for them.
_NON_COMPUTING_FIELDS = ("max_positions", "bos_token_id", "eos_token_id", "pad_token_id")


def carried_keys(nmap: NamingMap, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a Hugging Face config that a preset may take from its carried copy: those of
    fields that do not change the computation, and keys the map lists as harmless or refuses only
    for values other than theirs. Everything that
    changes the computation comes from KerasHub's own config -- what KerasHub runs."""
    allowed = {k for rule in nmap.fields.values() if rule.field in _NON_COMPUTING_FIELDS and rule.key
               for k in (rule.key, *rule.aliases)}
    allowed |= {key for key, rule in nmap.keys.items() if key in raw and rule.accepts(raw[key])}
    return {k: v for k, v in raw.items() if k in allowed}


def _side_files(path: Path, read_files: list[Path]) -> SideFiles:
    """Hugging Face side files stored under huggingface/ come back to the top level; KerasHub's
    own tokenizer files stay behind (KerasHub rebuilds its tokenizer from them)."""
    found = common.side_files(path, read_files)
    out = SideFiles(skipped=dict(found.skipped))
    for rel, src in found.files.items():
        if rel == HF_SIDE_DIR + CONFIG:
            continue  # read with the preset's config (the keys KerasHub has no place for)
        if rel.startswith(HF_SIDE_DIR):
            out.files[rel[len(HF_SIDE_DIR):]] = src
        elif rel in KERAS_TOKENIZER_FILES or rel.startswith("assets/"):
            out.skipped[rel] = "KerasHub's own tokenizer/preprocessor file, meaningful to KerasHub only"
        else:
            out.files[rel] = src
    return out


# ------------------------------------------------------------------------------------------------
# writing


def _version(dist: str, fallback: str) -> str:
    # importlib.metadata pulls in the email package (~15 ms): only a preset being written needs it.
    from importlib import metadata as pkg_metadata

    try:
        return pkg_metadata.version(dist)
    except pkg_metadata.PackageNotFoundError:
        return fallback


def backbone_json(nmap: NamingMap, config: CanonicalConfig, tensors: Mapping[str, LazyTensor],
                  accept: tuple[str, ...] = ()) -> dict[str, Any]:
    spec = spec_of(nmap)
    return layer(spec.backbone, config.dtype, **hf_to_keras(nmap, config, tensors, accept))


def write(ckpt: Checkpoint, staging: Path, options: WriteOptions) -> list[Path]:
    nmap = maps.load(ckpt.architecture)
    spec = spec_of(nmap)
    heads = nmap.dialect(DIALECT).heads
    if ckpt.config.head not in heads:
        raise MapError(f"KerasHub has no '{ckpt.config.head}' model for '{nmap.architecture}' in llmstd's map",
                       file=nmap.path, hint=f"heads: {', '.join(heads)}")
    head = heads[ckpt.config.head]
    # Refuses a model the backbone cannot express before any weight is written.
    backbone = backbone_json(nmap, ckpt.config, ckpt.tensors, options.accept)
    named = from_canonical(nmap, DIALECT, head.prefix, ckpt.tensors, ckpt.config)
    task_named = {n[len(TASK_PREFIX):]: t for n, t in named.items() if n.startswith(TASK_PREFIX)}
    model_named = {n: t for n, t in named.items() if not n.startswith(TASK_PREFIX)}
    written = keras3_h5.write_weights(staging / WEIGHTS, model_named,
                                      shard_size=options.shard_size or DEFAULT_SHARD_SIZE, progress=options.progress)
    if task_named:
        written += keras3_h5.write_weights(staging / TASK_WEIGHTS, task_named, progress=options.progress)
    side = SideFiles({HF_SIDE_DIR + rel: src for rel, src in ckpt.sidecars.files.items()}, ckpt.sidecars.skipped)
    tokenizer = _tokenizer(nmap, spec, ckpt, side)
    files: dict[str, Any] = {CONFIG: backbone}
    task_cls = spec.tasks.get(head.name)
    if tokenizer is not None:
        files[keras_tokenizer.CONFIG] = tokenizer.config
    if task_cls is not None:
        preprocessor = None
        if tokenizer is not None:  # the task's default preprocessor around it, as KerasHub saves it
            preprocessor = layer(f"{task_cls}Preprocessor", "float32", tokenizer=tokenizer.config,
                                 config_file=PREPROCESSOR, sequence_length=min(ckpt.config.max_positions, 1024),
                                 add_start_token=True, add_end_token=True)
            files[PREPROCESSOR] = preprocessor
        files[TASK] = serialised(task_cls, {"backbone": backbone, "preprocessor": preprocessor,
                                            "name": snake_case(task_cls)})
    files[METADATA] = {"keras_version": _version("keras", "3"), "keras_hub_version": _version("keras-hub", "0"),
                       "parameter_count": sum(math.prod(t.shape) for t in named.values()),
                       "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
                       "tasks": [_task_kind(task_cls)] if task_cls else []}
    # The Hugging Face config travels too: KerasHub's has no place for some keys (max positions,
    # token ids, harmless extras), and converting back should give the same config.json.
    files[HF_SIDE_DIR + CONFIG] = hf.framework_config(nmap, ckpt, hf.resolve_head(nmap, hf.DIALECT, ckpt.config.head))
    contents = {rel: dumps(data).encode("utf-8") for rel, data in files.items()}
    contents.update(tokenizer.assets if tokenizer is not None else {})
    for rel, data in contents.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
        written.append(staging / rel)
    return [*written, *common.copy_side_files(side, staging, written)]


def _tokenizer(nmap: NamingMap, spec: KerasHubSpec, ckpt: Checkpoint,
               side: SideFiles) -> keras_tokenizer.Tokenizer | None:
    """KerasHub's tokenizer for the source's, when it has one KerasHub can use; else None, and the
    report says why (as a file left behind: from_preset then needs preprocessor=None)."""
    if not any(Path(rel).name in TOKENIZER_FILES for rel in ckpt.sidecars.files):
        return None
    tokenizer, why = ((None, f"KerasHub has no tokenizer llmstd writes for '{nmap.architecture}'")
                      if spec.tokenizer is None else keras_tokenizer.build(spec.tokenizer, ckpt.sidecars))
    if why:
        side.skipped["KerasHub tokenizer"] = (f"not written: {why}; the preset is weights-only (load it with "
                                              "preprocessor=None); the Hugging Face tokenizer travels in huggingface/")
    return tokenizer


def _task_kind(task_cls: str) -> str:
    """metadata.json's task list uses KerasHub's base task names (CausalLM, MaskedLM, ...)."""
    for kind in ("CausalLM", "MaskedLM", "TextClassifier"):
        if task_cls.endswith(kind):
            return kind
    return task_cls


register(Format("keras-hub", "KerasHub preset directory (config.json + model.weights.h5)", detect, read, write))
