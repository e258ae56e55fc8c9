"""Pre-publish lint of a checkpoint (``llmstd validate PATH``), and its tamper-evident manifest.

``validate`` collects every finding rather than stopping at the first, so one run lists all that
needs fixing. It reads every format through the same reader ``llmstd convert`` uses, handed a
findings collector (lenient: each problem is recorded and reading carries on; see
:class:`llmstd.formats.Reader`), so lint and conversion cannot disagree about what a checkpoint is.
Formats whose reader has no lenient mode yet (tf-h5, tf-ckpt, onnx) are read strictly: their first
problem becomes an ``unreadable`` finding. Then validate lints what was read. Findings are errors
(the checkpoint should not be published; exit 1) or warnings (worth a look; exit 0).

Checks, by finding code, and where each is found:

- files (readers: ``llmstd.formats.hf``/``canonical``, ``llmstd.converters.shard_index``):
  ``unreadable`` (not a checkpoint llmstd recognises, or a strict read failed), ``bad_header``
  (strict safetensors header or torch-pickle structure; one per file), ``hf_metadata`` (safetensors
  metadata without ``format = pt``, which transformers refuses), ``bad_index``, ``missing_shard``,
  ``index_names_absent_tensor`` (index places a tensor in a shard that lacks it),
  ``index_wrong_shard``, ``unindexed_tensor`` (a shard holds a tensor the index does not list),
  ``duplicate_tensor`` (in two shards), ``total_size`` (index total vs tensor bytes; a warning when
  the index has none), ``stray_shard`` (warning: a shard-named file the index does not use),
  ``side_file`` (a side file conversion refuses to carry: a link leaving the checkpoint directory).
- mapping (readers, ``llmstd.mapping``): ``config_error``, ``unexpected_tensor`` (no canonical name
  in the map, or not part of the model its config describes), ``missing_tensor``,
  ``shape_mismatch``, ``tie_mismatch`` (an ``lm_head`` stored although the config ties it, or
  missing although it does not; a stored tied duplicate that differs; canonical ``llmstd.tied``
  metadata disagreeing with the config), ``alias_mismatch``.
- config (here): ``config_not_portable`` (a Hugging Face ``config.json`` -- of an hf, tf-h5 or onnx
  directory -- that transformers 4.x and 5.x read as different models; ``llmstd convert`` rewrites it
  with both spellings), ``tie_redundant`` (warning: untied but bit-identical to the embeddings).
- dtypes (here): ``mixed_dtypes`` (floating tensors in more than one dtype), ``dtype_mismatch`` (the
  config's ``dtype``/``torch_dtype`` differs from the tensors').
- values (here): ``nan``, ``inf``, ``all_zero`` and ``constant`` weight matrices (errors), constant
  vectors (warning ``constant_vector``: untrained norms and biases look like this).
- canonical metadata: ``metadata`` (reader: format key, spec version, shards disagreeing on config or
  spec version, unreadable ``llmstd.tied``), ``provenance`` and ``transforms`` (reader: recorded;
  here: well-formed, so nothing is ever applied twice), ``provenance_hash`` (here, warning: a source
  file hash was never filled in).
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
import datetime
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmstd import __version__, formats, hfconfig, transforms, vocab
from llmstd.checkpoint import Checkpoint
from llmstd.config import CanonicalConfig
from llmstd.configmap import reads_hf_rope, rope_spelling
from llmstd.errors import LlmstdError
from llmstd.findings import ERROR, WARNING, Finding, Findings, attempt
from llmstd.formats import common
from llmstd.jsonfile import read_json_object
from llmstd.tensors import LazyTensor, same_bytes

__all__ = ["MANIFEST_NAME", "Finding", "ValidationReport", "validate", "write_manifest"]

MANIFEST_NAME = "llmstd-manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 22  # elements scanned per step, so value checks hold at most a few MB extra
HF_CONFIG = "config.json"
_HF_CONFIG_FORMATS = ("hf", "tf-h5", "onnx")  # formats whose directory carries a Hugging Face config.json


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


@dataclass
class _Opened:
    """What the format's reader recovered (canonical tensors: those that mapped cleanly), and context."""

    format: str | None = None
    ckpt: Checkpoint | None = None
    hf_config: dict[str, Any] | None = None  # the raw Hugging Face config.json, for formats that carry one
    hf_config_path: Path | None = None
    source_of: dict[str, str] = field(default_factory=dict)  # canonical name -> name in the files

    @property
    def container(self) -> str | None:
        return self.ckpt.container if self.ckpt else None

    @property
    def config(self) -> CanonicalConfig | None:
        return self.ckpt.config if self.ckpt else None

    @property
    def canonical(self) -> dict[str, LazyTensor]:
        return self.ckpt.tensors if self.ckpt else {}

    @property
    def files(self) -> list[Path]:
        return list(self.ckpt.files) if self.ckpt else []

    @property
    def provenance(self) -> dict[str, Any] | None:
        return self.ckpt.provenance if self.ckpt else None

    @property
    def declared_dtype(self) -> str | None:
        """The dtype the checkpoint says it has: config.json's for a Hugging Face directory (its reader
        takes the tensors' own), else the canonical config's."""
        if self.format == "hf":
            declared = (self.hf_config or {}).get("torch_dtype", (self.hf_config or {}).get("dtype"))
            return declared if isinstance(declared, str) else None
        return self.config.dtype if self.config else None


def _open(path: Path, arch: str | None, found: Findings) -> _Opened:
    """Read ``path`` with its format's own reader, collecting its findings."""
    fmt = attempt(found, "unreadable", lambda: formats.detect(path))
    if fmt is None:
        return _Opened()
    opened = _Opened(format=fmt.name)
    if fmt.name in _HF_CONFIG_FORMATS:
        opened.hf_config_path = _root(path) / HF_CONFIG
        try:
            opened.hf_config = read_json_object(opened.hf_config_path)
        except LlmstdError:
            pass  # absent (an onnx file alone) or unreadable: reading it is the reader's, which reports it
    # A strict reader's first problem, or one a lenient reader could not foresee, is the last finding.
    opened.ckpt = attempt(found, "unreadable", lambda: fmt.read(path, arch, findings=found))
    if opened.ckpt is not None:
        opened.source_of = _stored_as(opened.ckpt)
    return opened


def _stored_as(ckpt: Checkpoint) -> dict[str, str]:
    """Canonical name -> the name it is stored under, for messages. A plain rename hands out the
    stored tensor itself; a transformed one is recorded in the mapping report."""
    out: dict[str, str] = {}
    if ckpt.dialect != "canonical":  # a canonical file's report holds the history of its source
        for record in ckpt.report.transforms:
            out.update({str(c): str(record["source"]) for c in record["canonical"]})  # type: ignore[attr-defined]
    stored = {id(t): n for n, t in ckpt.source_names.items()}
    out.update({c: stored[id(t)] for c, t in ckpt.tensors.items() if id(t) in stored})
    return out


# ------------------------------------------------------------------------------------------------
# lint of what the readers do not judge


def _check_portable(opened: _Opened, arch: str | None, found: Findings) -> None:
    """A Hugging Face config.json that transformers 4.x and 5.x read as different models: e.g. a
    5.x-only ``rope_parameters`` runs under 4.57 with ``rope_theta`` 10000, silently."""
    # Format modules register on import, in detection order: import on use.
    from llmstd.formats import hf

    if opened.hf_config is None or opened.hf_config_path is None:
        return
    known = arch or (opened.config.architecture if opened.config else None)
    try:
        nmap = hf.map_for_config(opened.hf_config, known, opened.hf_config_path, [])
        if not reads_hf_rope(nmap):
            return
        problem = hfconfig.portability_problem(opened.hf_config, rope_spelling(nmap), str(opened.hf_config_path))
    except LlmstdError:
        return  # a config that cannot be interpreted is a finding of the reader (config_error)
    if problem:
        found.error("config_not_portable", f"transformers 4.x and 5.x read this config as different models: "
                    f"{problem} — `llmstd convert --to {opened.format}` rewrites it portable (it writes both "
                    "spellings, which both generations read alike)", file=opened.hf_config_path)


def _check_record(opened: _Opened, found: Findings) -> None:
    """A canonical checkpoint's provenance and transforms, well-formed, so nothing is ever applied
    twice (their absence is the reader's finding)."""
    if opened.format != "canonical" or opened.ckpt is None:
        return
    first = opened.files[0]
    provenance = opened.ckpt.provenance
    if not found.has("provenance"):
        if not isinstance(provenance, dict) or not isinstance(provenance.get("source"), dict):
            found.error("provenance", "provenance must be an object with a 'source' record", file=first)
        else:
            history = provenance.get("history")
            for record in [provenance, *(history if isinstance(history, list) else [])]:
                source = record.get("source") if isinstance(record, dict) else None
                for item in source.get("files", []) if isinstance(source, dict) else []:
                    if isinstance(item, dict) and set(str(item.get("sha256", ""))) == {"0"}:
                        found.warning("provenance_hash", f"source file {item.get('name')} has no recorded sha256",
                                      file=first)
    applied = opened.ckpt.report.transforms
    if not found.has("transforms"):
        if not isinstance(applied, list):
            found.error("transforms", "transforms must be a list", file=first)
            return
        for item in applied:
            ops = [t.get("op") for t in item.get("transforms", [])] if isinstance(item, dict) else [None]
            unknown = [op for op in ops if op not in transforms.REGISTRY]
            if not isinstance(item, dict) or "source" not in item or "canonical" not in item or unknown:
                found.error("transforms", f"transform record {item!r} is malformed or names unknown transforms",
                            file=first)


# ------------------------------------------------------------------------------------------------
# tensor-level checks


def _check_tying(opened: _Opened, found: Findings) -> None:
    """An untied head identical to the embeddings is stored twice for nothing (a lint, not an error)."""
    if opened.config is None or vocab.tied_tensors(opened.config):
        return
    for tied, target in vocab.TIED.items():
        a, b = opened.canonical.get(tied), opened.canonical.get(target)
        if a is not None and b is not None and same_bytes(a, b):
            found.warning("tie_redundant", f"equals '{target}' bit for bit, but the config says untied; set "
                          "tie_word_embeddings = true to store it once", tensor=tied)


def _check_dtypes(opened: _Opened, found: Findings) -> None:
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


def _check_values(opened: _Opened, found: Findings) -> None:
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


def _verify_manifest(path: Path, manifest: Path, opened: _Opened, found: Findings) -> None:
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
    errors (it then includes the check results). ``check_options`` go to :func:`llmstd.checking.check`.
    """
    path = Path(path)
    found = Findings()
    opened = _open(path, arch, found)
    _check_portable(opened, arch, found)
    _check_record(opened, found)
    if opened.canonical:
        _check_tying(opened, found)
        _check_dtypes(opened, found)
        _check_values(opened, found)
    check_report = None
    if against is not None:
        from llmstd.checking import check

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
