"""Pre-publish lint of a checkpoint (``llmstd validate PATH``), and its tamper-evident manifest.

``validate`` collects every finding rather than stopping at the first, so one run lists all that
needs fixing. It reads Hugging Face and canonical directories itself, leniently (the strict
``llmstd.load`` raises at the first problem); other formats are read with ``llmstd.load`` and get
the tensor-level checks. Findings are errors (the checkpoint should not be published; exit 1) or
warnings (worth a look; exit 0).

Checks, by finding code:

- files: ``unreadable`` (not a checkpoint llmstd recognises, or a format read strictly failed),
  ``bad_header`` (strict safetensors header or torch-pickle structure; one per file),
  ``hf_metadata`` (safetensors metadata without ``format = pt``, which transformers refuses),
  ``bad_index``, ``missing_shard``, ``index_names_absent_tensor`` (index places a tensor in a shard
  that lacks it), ``index_wrong_shard``, ``unindexed_tensor`` (a shard holds a tensor the index does
  not list), ``duplicate_tensor`` (in two shards), ``total_size`` (index total vs tensor bytes),
  ``stray_shard`` (warning: a shard-named file the index does not use).
- mapping: ``config_error``, ``unexpected_tensor`` (no canonical name in the map, or not part of the
  model its config describes), ``missing_tensor``, ``shape_mismatch``, ``tie_mismatch`` (an
  ``lm_head`` stored although the config ties it, or missing although it does not; a stored tied
  duplicate that differs; canonical ``llmstd.tied`` metadata disagreeing with the config),
  ``alias_mismatch``, ``tie_redundant`` (warning: untied but bit-identical to the embeddings).
- dtypes: ``mixed_dtypes`` (floating tensors in more than one dtype), ``dtype_mismatch`` (the
  config's ``dtype``/``torch_dtype`` differs from the tensors').
- values: ``nan``, ``inf``, ``all_zero`` and ``constant`` weight matrices (errors), constant
  vectors (warning ``constant_vector``: untrained norms and biases look like this).
- canonical metadata: ``metadata`` (format key, spec version, shards disagreeing), ``provenance``
  and ``transforms`` (must be recorded, so nothing is ever applied twice), ``provenance_hash``
  (warning: a source file hash was never filled in).
- ``check_failed`` when ``against=`` is given and ``llmstd check`` fails.
- manifest: ``manifest_error``, ``manifest_tensor_mismatch`` (names each tensor whose sha256 differs),
  ``manifest_missing_tensor``, ``manifest_unexpected_tensor``, ``manifest_config_mismatch``,
  ``manifest_file_mismatch``; ``manifest_format`` (warning: written for another format, so only the
  tensors are compared).

The manifest (``llmstd-manifest.json``) records a sha256 per *canonical* tensor (canonical name and
layout), so the same model published as an HF directory or as a canonical checkpoint has the same
tensor hashes; plus architecture, canonical config, provenance, file hashes and check results.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmstd import __version__, formats, transforms, vocab
from llmstd.config import CanonicalConfig
from llmstd.configmap import config_from_framework
from llmstd.converters import safetensors_io, torch_pickle
from llmstd.errors import LlmstdError
from llmstd.formats import common
from llmstd.jsonfile import read_json_object
from llmstd.mapping import DialectMatcher
from llmstd.tensors import DerivedTensor, LazyTensor, same_bytes

MANIFEST_NAME = "llmstd-manifest.json"
MANIFEST_VERSION = 1
ERROR, WARNING = "error", "warning"
_CHUNK = 1 << 22  # elements scanned per step, so value checks hold at most a few MB extra
_HF_SAFETENSORS_FORMATS = ("pt", "tf", "flax", "mlx")  # what transformers' loader accepts


@dataclass
class Finding:
    severity: str  # error | warning
    code: str
    message: str
    tensor: str | None = None
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        where = ": ".join(w for w in (self.file, f"tensor '{self.tensor}'" if self.tensor else None) if w)
        return f"{self.severity} [{self.code}] {where + ': ' if where else ''}{self.message}"


@dataclass
class ValidationReport:
    """Every finding for one checkpoint; ``passed`` when there is no error."""

    path: str
    format: str | None
    container: str | None
    architecture: str | None
    tensors: int
    findings: list[Finding] = field(default_factory=list)
    check: Any = None  # a CheckReport when validate ran with against=
    manifest: str | None = None  # the manifest written or verified

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def passed(self) -> bool:
        return not self.errors

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "format": self.format, "container": self.container, "architecture": self.architecture,
            "tensors": self.tensors, "passed": self.passed, "errors": len(self.errors), "warnings": len(self.warnings),
            "findings": [f.to_dict() for f in self.findings],
            "check": self.check.to_dict() if self.check is not None else None, "manifest": self.manifest,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)


class _Findings(list):  # type: ignore[type-arg]
    def error(self, code: str, message: str, *, tensor: str | None = None, file: Path | str | None = None) -> None:
        self.append(Finding(ERROR, code, message, tensor, str(file) if file is not None else None))

    def warning(self, code: str, message: str, *, tensor: str | None = None, file: Path | str | None = None) -> None:
        self.append(Finding(WARNING, code, message, tensor, str(file) if file is not None else None))

    def from_exception(self, code: str, exc: LlmstdError) -> None:
        message = exc.message + (f" — {exc.hint}" if exc.hint else "")
        self.error(code, message, tensor=exc.tensor, file=exc.file)


@dataclass
class _Opened:
    """What a lenient read recovered: canonical tensors (as many as could be mapped) and context."""

    format: str | None = None
    container: str | None = None
    config: CanonicalConfig | None = None
    canonical: dict[str, LazyTensor] = field(default_factory=dict)
    source_of: dict[str, str] = field(default_factory=dict)  # canonical name -> name in the files
    files: list[Path] = field(default_factory=list)
    provenance: dict[str, Any] | None = None
    declared_dtype: str | None = None  # the dtype the framework config declares, if any


# ------------------------------------------------------------------------------------------------
# containers


def _open_safetensors(path: Path, found: _Findings, *, hf: bool) -> dict[str, LazyTensor] | None:
    try:
        sf = safetensors_io.open_file(path)
    except LlmstdError as exc:
        found.from_exception("bad_header", exc)
        return None
    if hf and sf.metadata and sf.metadata.get("format") not in _HF_SAFETENSORS_FORMATS:
        found.error("hf_metadata", f"safetensors metadata has format {sf.metadata.get('format')!r}; transformers "
                    f"refuses files whose metadata lacks format = pt", file=path)
    return dict(sf.tensors)


def _open_pickle(path: Path, found: _Findings) -> dict[str, LazyTensor] | None:
    try:
        return torch_pickle.read_torch_checkpoint(path)
    except LlmstdError as exc:
        found.from_exception("bad_header", exc)
        return None


_PLAIN_NAME = re.compile(r"^[^/\\]+$")


def _open_index(index: Path, open_shard: Callable[[Path], dict[str, LazyTensor] | None],
                found: _Findings) -> tuple[dict[str, LazyTensor], list[Path]]:
    """Every tensor of an index's shards, with the index checked against them in both directions."""
    try:
        data = read_json_object(index)
    except LlmstdError as exc:
        found.from_exception("bad_index", exc)
        return {}, []
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        found.error("bad_index", "index has no 'weight_map' object", file=index)
        return {}, []
    shard_of: dict[str, str] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not _PLAIN_NAME.match(shard) or shard in (".", ".."):
            found.error("bad_index", f"shard path {shard!r} is not a plain file name next to the index",
                        tensor=name, file=index)
            continue
        shard_of[name] = shard
    contents: dict[str, dict[str, LazyTensor]] = {}
    unreadable = False
    for shard in sorted(set(shard_of.values())):
        path = index.parent / shard
        if not path.is_file():
            count = sum(1 for s in shard_of.values() if s == shard)
            found.error("missing_shard", f"the index places {count} tensor(s) in {shard}, which does not exist",
                        file=path)
            unreadable = True
            continue
        opened = open_shard(path)
        if opened is None:
            unreadable = True
            continue
        contents[shard] = opened
    tensors: dict[str, LazyTensor] = {}
    stored_in: dict[str, str] = {}
    for shard, items in contents.items():
        for name, tensor in items.items():
            if name in stored_in:
                found.error("duplicate_tensor", f"stored in both {stored_in[name]} and {shard}", tensor=name,
                            file=index)
                continue
            stored_in[name], tensors[name] = shard, tensor
    for name, shard in shard_of.items():
        if shard in contents and name not in contents[shard]:
            if name in stored_in:
                found.error("index_wrong_shard", f"the index places it in {shard}, but it is stored in "
                            f"{stored_in[name]}", tensor=name, file=index)
            else:
                found.error("index_names_absent_tensor", f"the index places it in {shard}, which does not contain it",
                            tensor=name, file=index)
    for name, shard in stored_in.items():
        if name not in weight_map:
            found.error("unindexed_tensor", f"{shard} stores it, but the index does not list it", tensor=name,
                        file=index)
    meta = data.get("metadata")
    total = meta.get("total_size") if isinstance(meta, dict) else None
    if total is None:
        found.warning("total_size", "index has no metadata.total_size", file=index)
    elif not unreadable:
        actual = sum(t.nbytes for t in tensors.values())
        if total != actual:
            found.error("total_size", f"index total_size {total} differs from the {actual} bytes its shards hold",
                        file=index)
    stem = index.name.removesuffix(".index.json")
    base, suffix = os.path.splitext(stem)
    pattern = re.compile(re.escape(base) + r"-\d{5}-of-\d{5}" + re.escape(suffix) + r"\Z")
    for stray in sorted(index.parent.iterdir()):
        if pattern.match(stray.name) and stray.name not in set(shard_of.values()):
            found.warning("stray_shard", f"looks like a shard of {index.name} but the index does not use it",
                          file=stray)
    return tensors, [index.parent / s for s in contents] + [index]


# ------------------------------------------------------------------------------------------------
# Hugging Face directories


def _open_hf(path: Path, arch: str | None, found: _Findings) -> _Opened:
    from llmstd.formats import (
        hf as hf_format,  # format modules register on import: import on use only
    )

    opened = _Opened(format="hf")
    config_path = path / hf_format.CONFIG
    try:
        raw = read_json_object(config_path)
    except LlmstdError as exc:
        found.from_exception("config_error", exc)
        return opened
    declared = raw.get("torch_dtype", raw.get("dtype"))
    opened.declared_dtype = declared if isinstance(declared, str) else None
    tensors: dict[str, LazyTensor] | None
    if (path / hf_format.SAFETENSORS).is_file():
        opened.container, files = "safetensors", [path / hf_format.SAFETENSORS]
        tensors = _open_safetensors(files[0], found, hf=True)
    elif (path / hf_format.SAFETENSORS_INDEX).is_file():
        opened.container = "safetensors-sharded"
        tensors, files = _open_index(path / hf_format.SAFETENSORS_INDEX,
                                     lambda p: _open_safetensors(p, found, hf=True), found)
    elif (path / hf_format.BIN).is_file():
        opened.container, files = "torch-pickle", [path / hf_format.BIN]
        tensors = _open_pickle(files[0], found)
    else:
        opened.container = "torch-pickle-sharded"
        tensors, files = _open_index(path / hf_format.BIN_INDEX, lambda p: _open_pickle(p, found), found)
    opened.files = [config_path, *files]
    if tensors is None:
        return opened
    try:
        nmap = hf_format.map_for_config(raw, arch, config_path, list(tensors))
        head = hf_format.detect_head(nmap, hf_format.DIALECT, raw, list(tensors))
        matcher = DialectMatcher(nmap, hf_format.DIALECT, head.prefix)
        present = matcher.canonical_names_present(list(tensors))
        opened.config = config_from_framework(nmap, raw, head=head.name, dtype=common.dominant_dtype(tensors),
                                              present=present, source=str(config_path))
    except LlmstdError as exc:
        found.from_exception("config_error", exc)
        return opened
    _map_hf(matcher, tensors, opened, found)
    return opened


def _map_hf(matcher: DialectMatcher, tensors: dict[str, LazyTensor], opened: _Opened, found: _Findings) -> None:
    """The lenient twin of ``mapping.to_canonical``: map what maps, report everything else."""
    from llmstd.formats import hf as hf_format

    config = opened.config
    assert config is not None
    arch = matcher.nmap.architecture
    expected = vocab.expected_tensors(config)
    tied = vocab.tied_tensors(config)
    scope = config.to_dict()
    seen: set[str] = set()
    duplicates: list[tuple[str, str]] = []
    aliases: list[tuple[str, str]] = []
    for name, tensor in tensors.items():
        match = matcher.match(name)
        if match is None:
            if matcher.ignore_reason(name) is None:
                found.error("unexpected_tensor", f"has no canonical name in the '{hf_format.DIALECT}' dialect of "
                            f"the '{arch}' map", tensor=name)
            continue
        layer = match.layer
        if match.alias:
            primary = match.dname.name.replace("{prefix}", matcher.prefix)
            aliases.append((name, primary.replace("{i}", str(layer)) if layer is not None else primary))
            continue
        names = [p.replace("{i}", str(layer)) for p in match.entry.canonical]
        if names and all(n in tied for n in names):
            duplicates.append((name, tied[names[0]]))
            continue
        if not all(n in expected for n in names) or (layer is not None and layer >= config.num_layers):
            found.error("unexpected_tensor", f"maps to {', '.join(names)}, which a model with this config does not "
                        "have (check the layer count, bias and tying settings)", tensor=name)
            continue
        seen.update(names)
        steps = transforms.resolve(match.dname.steps, scope)
        try:
            shapes = transforms.forward_shapes(steps, [tensor.shape])
        except transforms.TransformError as exc:
            found.error("shape_mismatch", str(exc), tensor=name)
            continue
        wrong = [(n, s) for n, s in zip(names, shapes) if s != expected[n]]
        for cname, shape in wrong:
            found.error("shape_mismatch", f"maps to '{cname}' with shape {list(shape)}, but the config implies "
                        f"{list(expected[cname])}", tensor=name)
        if wrong:
            continue
        for k, (cname, shape) in enumerate(zip(names, shapes)):
            opened.canonical[cname] = (DerivedTensor([tensor], _part(steps, k), shape, tensor.dtype,
                                                     f"{name} -> {cname}") if steps else tensor)
            opened.source_of[cname] = name
    _missing(expected, seen, tied, found)
    for name, target in duplicates:
        if target in opened.canonical and not same_bytes(tensors[name], opened.canonical[target]):
            found.error("tie_mismatch", f"the config ties it to '{target}', but the stored values differ",
                        tensor=name)
    for name, primary in aliases:
        if primary not in tensors or not same_bytes(tensors[name], tensors[primary]):
            found.error("alias_mismatch", f"is declared an alias of '{primary}' but differs from it or it is missing",
                        tensor=name)


def _part(steps: list[transforms.ResolvedStep], index: int) -> Callable[[list[np.ndarray]], np.ndarray]:
    """Canonical tensor ``index`` of a dialect tensor's forward transform chain."""
    return lambda arrays: transforms.apply_forward(steps, arrays)[index]


def _missing(expected: Mapping[str, tuple[int, ...]], seen: set[str], tied: Mapping[str, str],
             found: _Findings) -> None:
    for name in expected:
        if name in seen:
            continue
        if name in vocab.TIED and not tied:
            found.error("tie_mismatch", f"the config says the head is untied (tie_word_embeddings = false) but no "
                        f"'{name}' is stored; set it true if the head shares '{vocab.TIED[name]}'", tensor=name)
        else:
            found.error("missing_tensor", "required by the config but not stored", tensor=name)


# ------------------------------------------------------------------------------------------------
# canonical checkpoints


def _open_canonical(path: Path, arch: str | None, found: _Findings) -> _Opened:
    from llmstd.formats import canonical as canonical_format

    opened = _Opened(format="canonical")
    metas: list[tuple[Path, dict[str, str]]] = []

    def open_shard(p: Path) -> dict[str, LazyTensor] | None:
        try:
            sf = safetensors_io.open_file(p)
        except LlmstdError as exc:
            found.from_exception("bad_header", exc)
            return None
        metas.append((p, sf.metadata))
        return dict(sf.tensors)

    single = path if path.is_file() else path / canonical_format.SINGLE
    if single.is_file():
        opened.container = "safetensors"
        tensors, opened.files = open_shard(single), [single]
    else:
        opened.container = "safetensors-sharded"
        tensors, opened.files = _open_index(path / canonical_format.INDEX, open_shard, found)
    if tensors is None or not metas:
        return opened
    first, meta = metas[0]
    for other, other_meta in metas[1:]:
        if other_meta != meta:
            found.error("metadata", "shards carry different metadata (config, provenance or spec version)", file=other)
    if meta.get(canonical_format.KEY_FORMAT) != canonical_format.FORMAT_VALUE:
        found.error("metadata", f"metadata lacks {canonical_format.KEY_FORMAT} = {canonical_format.FORMAT_VALUE}",
                    file=first)
    try:
        canonical_format.check_spec_version(meta.get(canonical_format.KEY_SPEC, ""), first)
    except LlmstdError as exc:
        found.from_exception("metadata", exc)
    try:
        opened.config = CanonicalConfig.from_dict(canonical_format.json_field(meta, canonical_format.KEY_CONFIG, first),
                                                  source=str(first))
    except LlmstdError as exc:
        found.from_exception("config_error", exc)
    if opened.config is not None and arch and arch != opened.config.architecture:
        found.error("config_error", f"checkpoint is '{opened.config.architecture}', not '{arch}'", file=first)
    _record(meta, first, opened, found)
    if opened.config is None:
        opened.canonical = dict(tensors)
        return opened
    opened.declared_dtype = opened.config.dtype
    config = opened.config
    expected = vocab.expected_tensors(config)
    tied = vocab.tied_tensors(config)
    try:
        declared_tied = canonical_format.json_field(meta, canonical_format.KEY_TIED, first)
    except LlmstdError as exc:
        found.from_exception("metadata", exc)
        declared_tied = tied
    if declared_tied != tied:
        found.error("tie_mismatch", f"metadata {canonical_format.KEY_TIED} = {declared_tied} but the config implies "
                    f"{tied}", file=first)
    seen = set()
    for name, tensor in tensors.items():
        if name in tied:
            found.error("tie_mismatch", f"stored, but the config ties it to '{tied[name]}' (stored once)", tensor=name)
        elif name not in expected:
            found.error("unexpected_tensor", "not part of the model its canonical config describes", tensor=name)
        elif tensor.shape != expected[name]:
            seen.add(name)
            found.error("shape_mismatch", f"shape {list(tensor.shape)} differs from {list(expected[name])} implied "
                        "by the config", tensor=name)
        else:
            seen.add(name)
            opened.canonical[name] = tensor
            opened.source_of[name] = name
    _missing(expected, seen, tied, found)
    return opened


def _record(meta: Mapping[str, str], first: Path, opened: _Opened, found: _Findings) -> None:
    """Provenance and transforms: recorded, well-formed, so nothing is ever applied twice."""
    from llmstd.formats import canonical as canonical_format

    try:
        provenance = canonical_format.json_field(meta, canonical_format.KEY_PROVENANCE, first)
        if not isinstance(provenance, dict) or not isinstance(provenance.get("source"), dict):
            raise LlmstdError("provenance must be an object with a 'source' record", file=first)
        opened.provenance = provenance
        for record in [provenance, *provenance.get("history", [])]:
            for item in (record.get("source") or {}).get("files", []) if isinstance(record, dict) else []:
                if isinstance(item, dict) and set(str(item.get("sha256", ""))) == {"0"}:
                    found.warning("provenance_hash", f"source file {item.get('name')} has no recorded sha256",
                                  file=first)
    except LlmstdError as exc:
        found.from_exception("provenance", exc)
    try:
        applied = canonical_format.json_field(meta, canonical_format.KEY_TRANSFORMS, first)
        if not isinstance(applied, list):
            raise LlmstdError("transforms must be a list", file=first)
        for item in applied:
            ops = [t.get("op") for t in item.get("transforms", [])] if isinstance(item, dict) else [None]
            unknown = [op for op in ops if op not in transforms.REGISTRY]
            if not isinstance(item, dict) or "source" not in item or "canonical" not in item or unknown:
                raise LlmstdError(f"transform record {item!r} is malformed or names unknown transforms", file=first)
    except LlmstdError as exc:
        found.from_exception("transforms", exc)


# ------------------------------------------------------------------------------------------------
# other formats: strict load, then the tensor-level checks


def _open_other(path: Path, arch: str | None, found: _Findings) -> _Opened:
    from llmstd.convert import load

    try:
        ckpt = load(path, arch=arch)
    except LlmstdError as exc:
        found.from_exception("unreadable", exc)
        return _Opened()
    return _Opened(format=ckpt.format, container=ckpt.container, config=ckpt.config, canonical=dict(ckpt.tensors),
                   source_of={n: n for n in ckpt.tensors}, files=list(ckpt.files), provenance=ckpt.provenance,
                   declared_dtype=ckpt.config.dtype)


def _open(path: Path, arch: str | None, found: _Findings) -> _Opened:
    try:
        fmt = formats.detect(path)
    except LlmstdError as exc:
        found.from_exception("unreadable", exc)
        return _Opened()
    if fmt.name == "hf":
        return _open_hf(path, arch, found)
    if fmt.name == "canonical":
        return _open_canonical(path, arch, found)
    return _open_other(path, arch, found)


# ------------------------------------------------------------------------------------------------
# tensor-level checks


def _check_tying(opened: _Opened, found: _Findings) -> None:
    """An untied head identical to the embeddings is stored twice for nothing (a lint, not an error)."""
    if opened.config is None or vocab.tied_tensors(opened.config):
        return
    for tied, target in vocab.TIED.items():
        a, b = opened.canonical.get(tied), opened.canonical.get(target)
        if a is not None and b is not None and same_bytes(a, b):
            found.warning("tie_redundant", f"equals '{target}' bit for bit, but the config says untied; set "
                          "tie_word_embeddings = true to store it once", tensor=tied)


def _check_dtypes(opened: _Opened, found: _Findings) -> None:
    floats = {n: t.dtype.name for n, t in opened.canonical.items() if t.dtype.is_float}
    counts = collections.Counter(floats.values())
    if len(counts) > 1:
        main = common.dominant_dtype({n: opened.canonical[n] for n in floats})
        odd = sorted(n for n, d in floats.items() if d != main)
        shown = ", ".join(f"{n} ({floats[n]})" for n in odd[:8]) + (", …" if len(odd) > 8 else "")
        found.error("mixed_dtypes", f"floating tensors mix dtypes {dict(counts)}; not {main}: {shown}")
    if opened.declared_dtype and counts:
        main = common.dominant_dtype({n: opened.canonical[n] for n in floats})
        if opened.declared_dtype != main:
            found.error("dtype_mismatch", f"the config declares dtype {opened.declared_dtype}, but the tensors are "
                        f"{main}")


def _scan(tensor: LazyTensor) -> tuple[int, int, float, float]:
    """(NaN count, inf count, min, max of finite values) in bounded extra memory."""
    flat = tensor.load().reshape(-1)
    wide = np.float64 if tensor.dtype.itemsize > 4 else np.float32
    nan = inf = 0
    low, high = np.inf, -np.inf
    for start in range(0, flat.size, _CHUNK):
        x = np.asarray(flat[start:start + _CHUNK]).astype(wide)
        finite = np.isfinite(x)
        nan += int(np.isnan(x).sum())
        inf += int(np.isinf(x).sum())
        if finite.any():
            values = x[finite]
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    return nan, inf, float(low), float(high)


def _check_values(opened: _Opened, found: _Findings) -> None:
    for name, tensor in opened.canonical.items():
        if not tensor.dtype.is_float or tensor.numel == 0:
            continue
        pattern = vocab.pattern_of(name)
        role = vocab.BY_PATTERN[pattern].role if pattern else None
        matrix = len(tensor.shape) >= 2
        stored = opened.source_of.get(name)
        where = f" (stored as '{stored}')" if stored and stored != name else ""
        try:
            nan, inf, low, high = _scan(tensor)
        except LlmstdError as exc:
            found.from_exception("bad_header", exc)
            continue
        if nan:
            found.error("nan", f"{nan} NaN value(s){where}", tensor=name)
        if inf:
            found.error("inf", f"{inf} infinite value(s){where}", tensor=name)
        if nan + inf == tensor.numel or low != high:
            continue
        if matrix and role in (None, "linear", "embedding"):
            if low == 0:
                found.error("all_zero", f"weight matrix is all zeros{where}", tensor=name)
            else:
                found.error("constant", f"weight matrix is constant ({low:g} everywhere){where}", tensor=name)
        elif tensor.numel > 1:
            found.warning("constant_vector", f"every value is {low:g}{where} (an untrained norm or bias?)",
                          tensor=name)


def _hash_tensors(opened: _Opened) -> dict[str, dict[str, Any]]:
    return {name: {"sha256": t.sha256(), "dtype": t.dtype.name, "shape": list(t.shape)}
            for name, t in opened.canonical.items()}


def _hash_files(root: Path, files: list[Path]) -> list[dict[str, Any]]:
    out = []
    for p in files:
        if p.is_file():
            name = str(p.relative_to(root)) if p.is_relative_to(root) else p.name
            out.append({"name": name, "bytes": p.stat().st_size, "sha256": common.sha256_file(p)})
    return out


def _root(path: Path) -> Path:
    return path if path.is_dir() else path.parent


# ------------------------------------------------------------------------------------------------
# manifest


def _manifest_body(path: Path, opened: _Opened, check_report: Any) -> dict[str, Any]:
    return {
        "llmstd_manifest": MANIFEST_VERSION,
        "llmstd_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "format": opened.format,
        "container": opened.container,
        "architecture": opened.config.architecture if opened.config else None,
        "config": opened.config.to_dict() if opened.config else None,
        "provenance": opened.provenance,
        "files": _hash_files(_root(path), opened.files),
        "tensors": _hash_tensors(opened),
        "check": check_report.to_dict() if check_report is not None else None,
    }


def _write_json(target: Path, body: dict[str, Any]) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, target)  # a reader never sees half a manifest


def write_manifest(path: str | Path, *, arch: str | None = None, against: str | Path | None = None,
                   out: str | Path | None = None, check_options: Mapping[str, Any] | None = None) -> Path:
    """Validate ``path`` and write ``llmstd-manifest.json`` (next to its weights unless ``out``).

    With ``against``, ``llmstd check`` runs first and its results go into the manifest. Raises
    LlmstdError when validation finds an error: a manifest vouches for a checkpoint, so it is only
    written for a clean one.
    """
    report = validate(path, arch=arch, against=against, write_manifest_to=out or True, check_options=check_options)
    if not report.passed:
        raise LlmstdError(f"not writing a manifest: validation found {len(report.errors)} error(s), first: "
                          f"{report.errors[0]}", file=path, hint="run `llmstd validate` and fix the errors")
    assert report.manifest is not None
    return Path(report.manifest)


def _verify_manifest(path: Path, manifest: Path, opened: _Opened, found: _Findings) -> None:
    try:
        data = read_json_object(manifest)
    except LlmstdError as exc:
        found.from_exception("manifest_error", exc)
        return
    if data.get("llmstd_manifest") != MANIFEST_VERSION or not isinstance(data.get("tensors"), dict):
        found.error("manifest_error", f"not an llmstd manifest (version {MANIFEST_VERSION})", file=manifest)
        return
    if opened.config is not None and data.get("config") != opened.config.to_dict():
        recorded_config = data.get("config") if isinstance(data.get("config"), dict) else {}
        differing = sorted(k for k, v in opened.config.to_dict().items() if recorded_config.get(k) != v)
        found.error("manifest_config_mismatch", f"canonical config differs from the manifest in: "
                    f"{', '.join(differing) or 'its fields'}", file=manifest)
    recorded: dict[str, Any] = data["tensors"]
    for name, tensor in opened.canonical.items():
        entry = recorded.get(name)
        if not isinstance(entry, dict):
            found.error("manifest_unexpected_tensor", "present in the checkpoint but not in the manifest", tensor=name)
            continue
        if entry.get("dtype") != tensor.dtype.name or entry.get("shape") != list(tensor.shape):
            found.error("manifest_tensor_mismatch", f"is {tensor.dtype.name}{list(tensor.shape)}, the manifest "
                        f"records {entry.get('dtype')}{entry.get('shape')}", tensor=name)
            continue
        digest = tensor.sha256()
        if digest != entry.get("sha256"):
            stored = opened.source_of.get(name)
            where = f" (stored as '{stored}')" if stored and stored != name else ""
            found.error("manifest_tensor_mismatch", f"sha256 {digest[:16]}… differs from the manifest's "
                        f"{str(entry.get('sha256'))[:16]}…{where}", tensor=name)
    for name in recorded:
        if name not in opened.canonical:
            found.error("manifest_missing_tensor", "recorded in the manifest but not readable in the checkpoint",
                        tensor=name)
    if data.get("format") != opened.format:
        # Canonical tensor hashes do not depend on the format, so an HF export can be verified
        # against the manifest of the canonical release; file bytes cannot be compared.
        found.warning("manifest_format", f"the manifest was written for a '{data.get('format')}' checkpoint; "
                      "compared tensors only", file=manifest)
        return
    current = {f["name"]: f for f in _hash_files(_root(path), opened.files)}
    files = data.get("files", [])
    if not isinstance(files, list) or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in files):
        found.error("manifest_error", "the manifest's 'files' is not a list of {name, sha256} records",
                    file=manifest)
        return
    for item in files:
        now = current.get(item.get("name"))
        if now is None:
            found.error("manifest_file_mismatch", "recorded in the manifest but missing", file=item.get("name"))
        elif now["sha256"] != item.get("sha256"):
            found.error("manifest_file_mismatch", f"file bytes differ from the manifest ({now['bytes']} bytes now, "
                        f"{item.get('bytes')} recorded)", file=item.get("name"))


# ------------------------------------------------------------------------------------------------
# entry point


def validate(
    path: str | Path,
    *,
    arch: str | None = None,
    against: str | Path | None = None,
    manifest: str | Path | None = None,
    write_manifest_to: str | Path | bool | None = None,
    check_options: Mapping[str, Any] | None = None,
) -> ValidationReport:
    """Lint the checkpoint at ``path``; return every finding.

    ``against``: also run ``llmstd check against path`` (its report is attached; failing is an
    error). ``manifest``: verify the checkpoint against a manifest written earlier.
    ``write_manifest_to``: True (next to the weights) or a path: write a manifest when there are no
    errors (it then includes the check results). ``check_options`` go to :func:`llmstd.check.check`.
    """
    path = Path(path)
    found = _Findings()
    opened = _open(path, arch, found)
    if opened.canonical:
        _check_tying(opened, found)
        _check_dtypes(opened, found)
        _check_values(opened, found)
    check_report = None
    if against is not None:
        from llmstd.check import check

        try:
            check_report = check(against, path, arch=arch, **dict(check_options or {}))
        except LlmstdError as exc:
            found.from_exception("check_failed", exc)
        else:
            if not check_report.passed:
                found.error("check_failed", f"llmstd check against {against} failed: {check_report.summary()}")
    if manifest is not None:
        _verify_manifest(path, Path(manifest), opened, found)
    report = ValidationReport(
        path=str(path), format=opened.format, container=opened.container,
        architecture=opened.config.architecture if opened.config else None, tensors=len(opened.canonical),
        findings=list(found), check=check_report, manifest=str(manifest) if manifest is not None else None,
    )
    if write_manifest_to and report.passed:
        target = _root(path) / MANIFEST_NAME if write_manifest_to is True else Path(write_manifest_to)
        _write_json(target, _manifest_body(path, opened, check_report))
        report.manifest = str(target)
    return report
