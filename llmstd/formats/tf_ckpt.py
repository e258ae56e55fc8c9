"""``tf-ckpt``: a directory holding a tf.train checkpoint (``<stem>.index`` + ``<stem>.data-*`` + the
``checkpoint`` state file) and its config.

Which naming and config file a directory uses:

| architecture | dialect | checkpoint stem | config file(s) |
|---|---|---|---|
| bert | ``tf_original`` (Google's release names) | ``bert_model.ckpt`` | ``bert_config.json`` + ``llmstd_config.json`` |
| gpt2 | ``tf_original`` (OpenAI's release names) | ``model.ckpt`` | ``hparams.json`` + ``llmstd_config.json`` |
| others | ``tf_llmstd`` (llmstd's TF naming) | ``model.ckpt`` | ``llmstd_config.json`` |

``llmstd_config.json`` is llmstd's own: ``{"llmstd.format": "tf-ckpt", "llmstd.spec_version",
"dialect", "checkpoint" (the stem), "config" (the canonical config, extras included)}``. When present
it is authoritative, so a round trip through tf-ckpt restores the exact config; a release config next
to it must agree with it on every field it can express. Without it (a real Google or OpenAI
download) the release config is read: ``bert_config.json`` uses Hugging Face's BERT keys (transformers'
BertConfig was built from it); ``hparams.json`` is translated by :data:`RELEASE_CONFIGS` and
completed with the defaults OpenAI's code hard-wires (the gpt2 map's Hugging Face defaults).

Writing the release naming refuses a model the release code could not rebuild from its config file
(e.g. a GPT-2 with another LayerNorm epsilon: ``hparams.json`` cannot say so).

Optimizer slots and counters in original checkpoints (``adam_m``, ``adam_v``, ``global_step``, ...)
are skipped through the dialect's ``ignore`` list and listed in the conversion report; string
entries (a TF2 object graph) must be ignored the same way or the read fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmstd import maps, vocab
from llmstd.checkpoint import Checkpoint
from llmstd.config import CanonicalConfig
from llmstd.configmap import config_to_framework, read_config
from llmstd.converters import tf_checkpoint
from llmstd.errors import ConfigError, DetectionError, FormatError, MappingError
from llmstd.findings import Findings
from llmstd.formats import Format, WriteOptions, common, register, tf_common
from llmstd.jsonfile import dumps, read_json_object
from llmstd.mapping import DialectMatcher, from_canonical
from llmstd.tensors import LazyTensor

LLMSTD_CONFIG = "llmstd_config.json"
FORMAT_VALUE = "tf-ckpt"
DEFAULT_STEM = "model.ckpt"
DIALECTS = ("tf_original", "tf_llmstd")  # in order of preference when writing
# Canonical fields a release config need not carry (they do not change the computation).
_NOT_COMPUTATIONAL = {"extras", "dtype", "bos_token_id", "eos_token_id", "pad_token_id"}


@dataclass(frozen=True)
class ReleaseConfig:
    """The config file an original release ships next to its checkpoint."""

    architecture: str
    file: str
    stem: str
    # release key -> Hugging Face config key; None: the file already uses Hugging Face's keys
    keys: Mapping[str, str] | None


RELEASE_CONFIGS = (
    ReleaseConfig("bert", "bert_config.json", "bert_model.ckpt", None),
    ReleaseConfig("gpt2", "hparams.json", "model.ckpt",
                  {"n_vocab": "vocab_size", "n_ctx": "n_positions", "n_embd": "n_embd", "n_head": "n_head",
                   "n_layer": "n_layer"}),
)
_RELEASE_BY_ARCH = {r.architecture: r for r in RELEASE_CONFIGS}
# Hugging Face keys that never go into a release config file
_HF_STRUCTURAL = ("model_type", "architectures", "dtype", "torch_dtype")


def _prefix_of(path: Path) -> tuple[Path, Path] | None:
    """(directory, checkpoint prefix) for a directory, a prefix path or a ``.index`` file."""
    if path.is_dir():
        prefix = tf_checkpoint.find_prefix(path)
        return (path, prefix) if prefix is not None else None
    if path.suffix == tf_checkpoint.INDEX_SUFFIX and path.is_file():
        return path.parent, path.with_name(path.name[: -len(tf_checkpoint.INDEX_SUFFIX)])
    if Path(str(path) + tf_checkpoint.INDEX_SUFFIX).is_file():
        return path.parent, path
    return None


def detect(path: Path) -> bool:
    found = _prefix_of(path)
    if found is None:
        return False
    directory = found[0]
    return (directory / LLMSTD_CONFIG).is_file() or any((directory / r.file).is_file() for r in RELEASE_CONFIGS)


def _hf_raw_from_release(release: ReleaseConfig, raw: dict[str, Any]) -> dict[str, Any]:
    if release.keys is None:
        return dict(raw)
    unknown = sorted(set(raw) - set(release.keys))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {release.file}",
                          hint=f"{release.file} holds exactly: {', '.join(release.keys)}")
    return {release.keys[k]: v for k, v in raw.items()}


def _release_to_file(release: ReleaseConfig, hf_raw: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in hf_raw.items() if k not in _HF_STRUCTURAL}
    if release.keys is None:
        return body
    return {rk: body[hk] for rk, hk in release.keys.items() if hk in body}


def _computational_diff(a: CanonicalConfig, b: CanonicalConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return sorted(k for k in da if k not in _NOT_COMPUTATIONAL and da[k] != db[k])


def _read_llmstd_config(path: Path) -> tuple[str, str, CanonicalConfig]:
    data = read_json_object(path)
    if data.get("llmstd.format") != FORMAT_VALUE:
        raise FormatError(f"'llmstd.format' is {data.get('llmstd.format')!r}, not '{FORMAT_VALUE}'", file=path)
    from llmstd.formats.canonical import config_from_metadata

    dialect, stem = data.get("dialect"), data.get("checkpoint")
    if dialect not in vocab.DIALECTS or not isinstance(stem, str):
        raise FormatError("needs 'dialect' (a known dialect) and 'checkpoint' (the checkpoint stem)", file=path)
    return dialect, stem, config_from_metadata(data.get("config"), str(data.get("llmstd.spec_version", "")), path)


def read(path: Path, arch: str | None = None, *, findings: Findings | None = None) -> Checkpoint:
    # No lenient mode yet: ``findings`` is accepted and unused, so a collecting caller gets the first
    # problem raised, exactly as a strict one does.
    found = _prefix_of(path)
    if found is None:
        raise DetectionError("no tf.train checkpoint (.index file) found", file=path,
                             hint="expected <stem>.index + <stem>.data-00000-of-00001 (and a 'checkpoint' file)")
    directory, prefix = found
    ckpt = tf_checkpoint.read_checkpoint(prefix)
    tensors: dict[str, LazyTensor] = dict(ckpt.tensors)
    config_files: list[Path] = []

    fixed: CanonicalConfig | None = None
    release_raw: dict[str, Any] | None = None
    release: ReleaseConfig | None = None
    if (directory / LLMSTD_CONFIG).is_file():
        dialect, _, fixed = _read_llmstd_config(directory / LLMSTD_CONFIG)
        config_files.append(directory / LLMSTD_CONFIG)
        if arch and arch != fixed.architecture:
            raise MappingError(f"checkpoint is '{fixed.architecture}', not '{arch}'", file=directory / LLMSTD_CONFIG)
        nmap = maps.load(fixed.architecture)
        release = _RELEASE_BY_ARCH.get(fixed.architecture)
        if release is not None and (directory / release.file).is_file():
            release_raw = read_json_object(directory / release.file)
            config_files.append(directory / release.file)
        candidates = [(dialect, nmap.dialect(dialect).heads[fixed.head])] if fixed.head in nmap.dialect(
            dialect).heads else []
    else:
        releases = [r for r in RELEASE_CONFIGS if (directory / r.file).is_file() and (arch in (None, r.architecture))]
        if len(releases) != 1:
            raise DetectionError(
                "cannot tell the architecture: " + ("several release configs found" if releases else
                                                    f"no {LLMSTD_CONFIG} or release config"), file=directory,
                hint=f"add {' or '.join(r.file for r in RELEASE_CONFIGS)} (or {LLMSTD_CONFIG}), or pass --arch")
        release = releases[0]
        release_raw = read_json_object(directory / release.file)
        config_files.append(directory / release.file)
        nmap = maps.load(release.architecture)
        candidates = tf_common.tf_candidates(nmap, ("tf_original",))
    if not candidates:
        raise MappingError(f"the '{nmap.architecture}' naming map cannot read this checkpoint's dialect",
                           file=nmap.path)

    hf_raw = _hf_raw_from_release(release, release_raw) if release and release_raw is not None else None

    def make_config(head: maps.Head, present: set[str], named: Mapping[str, LazyTensor]) -> CanonicalConfig:
        from_release = None
        if hf_raw is not None:
            from_release, _ = read_config(nmap, hf_raw, head=head.name, dtype=_dtype(nmap, head, named),
                                          present=present, source=str(directory / release.file))  # type: ignore[union-attr]
        if fixed is None:
            assert from_release is not None
            return from_release
        if from_release is not None:
            diff = _computational_diff(fixed, from_release)
            if diff:
                raise ConfigError(f"{release.file} disagrees with {LLMSTD_CONFIG} on {', '.join(diff)}",  # type: ignore[union-attr]
                                  file=directory, hint="one of them was edited; fix or remove the wrong one")
        return fixed

    resolved = tf_common.resolve(nmap, candidates, tensors, make_config, source=str(prefix), scoped=False)
    _ignore_non_numeric(nmap, resolved, ckpt.non_numeric, prefix)
    return Checkpoint(path=path, format="tf-ckpt", container="tf-checkpoint", dialect=resolved.dialect,
                      config=resolved.config, tensors=resolved.tensors, files=[*config_files, *ckpt.files],
                      source_names=resolved.source_names, report=resolved.report,
                      sidecars=common.side_files(path, [*config_files, *ckpt.files]))


def _dtype(nmap: maps.NamingMap, head: maps.Head, named: Mapping[str, LazyTensor]) -> str:
    # The model's dtype from its weights only: optimizer slots and counters (ignored names) do not count.
    matcher = DialectMatcher(nmap, "tf_original", head.prefix)
    return common.dominant_dtype({n: t for n, t in named.items() if matcher.match(n) is not None})


def _ignore_non_numeric(nmap: maps.NamingMap, resolved: tf_common.Resolved, non_numeric: Mapping[str, str],
                        prefix: Path) -> None:
    matcher = DialectMatcher(nmap, resolved.dialect, resolved.head.prefix)
    unexplained = []
    for name, kind in non_numeric.items():
        reason = matcher.ignore_reason(name)
        if reason is None:
            unexplained.append(f"{name} ({kind})")
        else:
            resolved.report.ignored.append((name, reason))
    if unexplained:
        raise MappingError(f"non-numeric checkpoint entries have no meaning in dialect '{resolved.dialect}': "
                           f"{', '.join(unexplained)}", file=prefix,
                           hint="list them under 'ignore' in the naming map with a reason")


def dialect_for(nmap: maps.NamingMap, head: str) -> str:
    """The release naming (tf_original) where the map has it for this head, else llmstd's TF naming."""
    return tf_common.first_dialect_with_head(nmap, DIALECTS, head, "tf.train checkpoint")


def write(ckpt: Checkpoint, staging: Path, options: WriteOptions) -> list[Path]:
    nmap = maps.load(ckpt.architecture)
    dialect = dialect_for(nmap, ckpt.config.head)
    head = nmap.dialect(dialect).heads[ckpt.config.head]
    release = _RELEASE_BY_ARCH.get(ckpt.architecture) if dialect == "tf_original" else None
    written: list[Path] = []
    if release is not None:
        hf_raw = config_to_framework(nmap, ckpt.config)
        body = _release_to_file(release, hf_raw)
        # The release code rebuilds the model from this file alone: refuse what it cannot express.
        rebuilt, _ = read_config(nmap, _hf_raw_from_release(release, body), head=ckpt.config.head,
                                 dtype=ckpt.config.dtype, present=set(vocab.expected_tensors(ckpt.config)),
                                 source=release.file)
        diff = _computational_diff(ckpt.config, rebuilt)
        if diff:
            raise ConfigError(
                f"{release.file} cannot express this {ckpt.architecture} model ({', '.join(diff)} differ from what "
                f"the original release code assumes), so the release naming would load as a different model",
                hint="convert with --to tf-h5 instead")
        (staging / release.file).write_text(dumps(body), encoding="utf-8")
        written.append(staging / release.file)
    stem = release.stem if release is not None else DEFAULT_STEM
    named = from_canonical(nmap, dialect, head.prefix, ckpt.tensors, ckpt.config)
    written += tf_checkpoint.write_checkpoint(staging / stem, list(named.items()), progress=options.progress)
    written.append(tf_checkpoint.write_state_file(staging, stem))
    meta = {"llmstd.format": FORMAT_VALUE, "llmstd.spec_version": vocab.SPEC_VERSION, "dialect": dialect,
            "checkpoint": stem, "config": ckpt.config.to_dict()}
    (staging / LLMSTD_CONFIG).write_text(dumps(meta), encoding="utf-8")
    written.append(staging / LLMSTD_CONFIG)
    return [*written, *common.copy_side_files(ckpt.sidecars, staging, written)]


register(Format("tf-ckpt", "tf.train checkpoint directory (Google BERT / OpenAI GPT-2 release naming, "
                "llmstd TF naming otherwise)", detect, read, write))
