"""``tf-h5``: a Hugging Face TensorFlow model directory, ``config.json`` + ``tf_model.h5``.

Weights use the ``hf_tf`` dialect of the naming map (transformers' TF class names, loadable with
``TF<Class>.from_pretrained``) where the architecture has a transformers TF class (gpt2, bert,
mistral), and llmstd's ``tf_llmstd`` naming otherwise (llama, qwen2: run them with
``llmstd.runtimes.tf_model``). ``config.json`` is the same Hugging Face config the PyTorch classes
read; like transformers' own TF ``save_pretrained``, its ``architectures`` names the PyTorch class.

The h5 layout (layer groups, ``weight_names``, Keras attributes) is written by
:mod:`llmstd.converters.h5_io`; which top-level Keras layer holds a weight is the second component of
its variable name.
"""

from __future__ import annotations

from pathlib import Path

from llmstd import maps
from llmstd.checkpoint import Checkpoint
from llmstd.configmap import ConfigKeys, read_config
from llmstd.converters import h5_io
from llmstd.errors import MappingError
from llmstd.findings import Findings
from llmstd.formats import Format, WriteOptions, common, hf, register, tf_common
from llmstd.jsonfile import dumps, read_json_object
from llmstd.mapping import from_canonical
from llmstd.tensors import LazyTensor

CONFIG = "config.json"
WEIGHTS = "tf_model.h5"
DIALECTS = ("hf_tf", "tf_llmstd")  # in order of preference


def detect(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def _preferred_head(nmap: maps.NamingMap, raw: dict[str, object]) -> str | None:
    """The head named by config.json's ``architectures`` (a PyTorch class, as transformers writes it)."""
    archs = raw.get("architectures")
    if not isinstance(archs, list) or not archs:
        return None
    for dialect in ("hf", *DIALECTS):
        if dialect in nmap.dialects:
            for head in nmap.dialects[dialect].heads.values():
                if head.cls in (archs[0], f"TF{archs[0]}"):
                    return head.name
    return None


def read(path: Path, arch: str | None = None, *, findings: Findings | None = None) -> Checkpoint:
    # No lenient mode yet: ``findings`` is accepted and unused, so a collecting caller gets the first
    # problem raised, exactly as a strict one does.
    config_path = path / CONFIG
    raw = read_json_object(config_path)
    # Keras scopes the names, so a config without model_type needs --arch here.
    nmap = hf.map_for_config(raw, arch, config_path, [])
    h5 = h5_io.read_h5(path / WEIGHTS)

    keys = ConfigKeys()

    def make_config(head: maps.Head, present: set[str], tensors: dict[str, LazyTensor]):  # type: ignore[no-untyped-def]
        nonlocal keys
        config, keys = read_config(nmap, raw, head=head.name, dtype=common.dominant_dtype(tensors),
                                   present=present, source=str(config_path))
        return config

    candidates = tf_common.tf_candidates(nmap, DIALECTS, _preferred_head(nmap, raw))
    if not candidates:
        raise MappingError(f"the '{nmap.architecture}' naming map has no TensorFlow dialect ({', '.join(DIALECTS)})",
                           file=nmap.path, hint="add an hf_tf or tf_llmstd section to the map")
    resolved = tf_common.resolve(nmap, candidates, h5.weights, make_config, source=str(path / WEIGHTS), scoped=True)
    report = resolved.report
    keys.record(report)
    return Checkpoint(path=path, format="tf-h5", container="hdf5", dialect=resolved.dialect, config=resolved.config,
                      tensors=resolved.tensors, files=[config_path, path / WEIGHTS], source_names=resolved.source_names,
                      report=report, sidecars=common.side_files(path, [config_path, path / WEIGHTS]))


def _repeats(nmap: maps.NamingMap, dialect: str, prefix: str, named: dict[str, LazyTensor]) -> dict[str, LazyTensor]:
    """The map's ``<name>@<layer>`` aliases: weights Keras lists again under another layer."""
    from llmstd.converters.h5_io import REPEAT_SEP

    out: dict[str, LazyTensor] = {}
    for entry, dname in nmap.entries_for(dialect):
        for alias in dname.aliases:
            if REPEAT_SEP not in alias or entry.per_layer:
                continue
            primary = dname.name.replace("{prefix}", prefix)
            if primary in named:
                out[alias.replace("{prefix}", prefix)] = named[primary]
    return out


def dialect_for(nmap: maps.NamingMap, head: str) -> str:
    """hf_tf where transformers has a TF class for this head, else llmstd's TF naming."""
    return tf_common.first_dialect_with_head(nmap, DIALECTS, head, "TensorFlow")


def write(ckpt: Checkpoint, staging: Path, options: WriteOptions) -> list[Path]:
    nmap = maps.load(ckpt.architecture)
    dialect = dialect_for(nmap, ckpt.config.head)
    head = hf.resolve_head(nmap, dialect, ckpt.config.head)
    named = from_canonical(nmap, dialect, head.prefix, ckpt.tensors, ckpt.config)
    named.update(_repeats(nmap, dialect, head.prefix, named))
    weights = h5_io.write_h5(staging / WEIGHTS, tf_common.layer_groups(named), progress=options.progress)
    config_path = staging / CONFIG
    config_path.write_text(dumps(hf.framework_config(nmap, ckpt, hf.resolve_head(nmap, "hf", ckpt.config.head))),
                           encoding="utf-8")
    return [weights, config_path, *common.copy_side_files(ckpt.sidecars, staging, [weights, config_path])]


register(Format("tf-h5", "Hugging Face TensorFlow model directory (config.json + tf_model.h5)", detect, read, write))
