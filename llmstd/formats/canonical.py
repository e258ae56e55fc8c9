"""llmstd's canonical checkpoint: canonical names and layouts in safetensors.

A directory holding ``canonical.safetensors`` (or shards ``canonical-0000i-of-0000n.safetensors``
with ``canonical.safetensors.index.json``) and any sidecar files; a single ``.safetensors`` file
whose metadata says it is canonical is accepted too. Each file's ``__metadata__`` carries the spec
version, architecture, canonical config, provenance and the transforms that produced it (see
docs/SPEC.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmstd import __version__, vocab
from llmstd.checkpoint import Checkpoint, SideFiles
from llmstd.config import ADDED_IN_1_2, ADDED_IN_1_3, CanonicalConfig
from llmstd.converters import safetensors_io, shard_index
from llmstd.errors import FormatError, LlmstdError, MappingError, SpecVersionError
from llmstd.findings import Findings, attempt, refuse
from llmstd.formats import Format, WriteOptions, common, register
from llmstd.mapping import MappingReport, require_canonical_set
from llmstd.tensors import LazyTensor

STEM = "canonical"
SINGLE = f"{STEM}.safetensors"
INDEX = f"{STEM}.safetensors.index.json"

KEY_FORMAT = "llmstd.format"
KEY_SPEC = "llmstd.spec_version"
KEY_ARCH = "llmstd.architecture"
KEY_CONFIG = "llmstd.config"
KEY_PROVENANCE = "llmstd.provenance"
KEY_TRANSFORMS = "llmstd.transforms"
KEY_TIED = "llmstd.tied"
FORMAT_VALUE = "canonical"
_HASH_PLACEHOLDER = "0" * 64


def _metadata_of(path: Path) -> dict[str, str]:
    header, _ = safetensors_io.read_header(path)
    meta = header.get("__metadata__", {})
    return meta if isinstance(meta, dict) else {}


def detect(path: Path) -> bool:
    if path.is_dir():
        return (path / SINGLE).is_file() or (path / INDEX).is_file()
    if path.is_file() and path.suffix == ".safetensors":
        try:
            return _metadata_of(path).get(KEY_FORMAT) == FORMAT_VALUE
        except FormatError:
            return False
    return False


def check_spec_version(version: str, source: Path) -> None:
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise FormatError(f"spec version {version!r} is not a version number", file=source) from None
    ours = int(vocab.SPEC_VERSION.split(".")[0])
    if major > ours:
        raise SpecVersionError(
            f"written with canonical spec {version}, newer than the spec {vocab.SPEC_VERSION} this llmstd reads",
            file=source, hint="upgrade llmstd (pip install -U llmstd)",
        )


def config_from_metadata(data: Any, version: str, source: Path) -> CanonicalConfig:
    """The canonical config stored with spec ``version`` (checked), upgraded to the current spec.

    Spec 1.1 fixed the form of ``rope_scaling`` (``rope_type`` plus the parameters that type takes,
    the original context length included); 1.0 files stored it as their source spelled it, so a
    1.0 ``{"type": "linear", ...}`` is read as ``{"rope_type": "linear", ...}``. The fields 1.2 added
    take their feature-absent values in 1.0 and 1.1 files (:data:`llmstd.config.ADDED_IN_1_2`), and
    the mixture-of-experts fields of 1.3 theirs in every older file (:data:`llmstd.config.ADDED_IN_1_3`)."""
    check_spec_version(version, source)
    if isinstance(data, dict) and version in ("1.0", "1.1"):
        data = {**ADDED_IN_1_2, **data}
    if isinstance(data, dict) and version in ("1.0", "1.1", "1.2"):
        data = {**ADDED_IN_1_3, **data}
    if isinstance(data, dict) and version == "1.0":
        if isinstance(data.get("rope_scaling"), dict):
            from llmstd.hfconfig import canonical_scaling

            raw = {"max_position_embeddings": data.get("max_positions")}
            data["rope_scaling"] = canonical_scaling(data["rope_scaling"], raw, "rope_scaling", str(source))
    return CanonicalConfig.from_dict(data, source=str(source))


def json_field(meta: dict[str, str], key: str, source: Path) -> Any:
    if key not in meta:
        raise FormatError(f"canonical metadata lacks '{key}'", file=source)
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise FormatError(f"metadata '{key}' is not valid JSON ({exc.msg})", file=source) from None


def read(path: Path, arch: str | None = None, *, findings: Findings | None = None) -> Checkpoint | None:
    """Strict, or lenient with ``findings`` (see :class:`llmstd.formats.Reader`): codes ``bad_header``,
    the shard-index codes, ``metadata``, ``config_error``, the canonical-set codes, ``transforms``,
    ``provenance`` and ``side_file``."""
    metas: list[tuple[Path, dict[str, str]]] = []

    def open_file(p: Path) -> dict[str, LazyTensor]:
        sf = safetensors_io.open_file(p)
        metas.append((p, sf.metadata))
        return dict(sf.tensors)

    if path.is_file() or (path / SINGLE).is_file():
        single = path if path.is_file() else path / SINGLE
        opened = attempt(findings, "bad_header", lambda: open_file(single))
        if opened is None:
            return None
        tensors, files, container = opened, [single], "safetensors"
    else:
        tensors, shard_files = shard_index.open_sharded(path / INDEX, open_file, findings)
        files, container = [*shard_files, path / INDEX], "safetensors-sharded"
    if not metas:
        return None  # lenient, and no shard could be read

    first_path, meta = metas[0]
    if meta.get(KEY_FORMAT) != FORMAT_VALUE:
        refuse(findings, "metadata", FormatError(
            "not an llmstd canonical file (metadata lacks llmstd.format = canonical)", file=first_path))
    for other_path, other in metas[1:]:
        if other.get(KEY_CONFIG) != meta.get(KEY_CONFIG) or other.get(KEY_SPEC) != meta.get(KEY_SPEC):
            refuse(findings, "metadata", FormatError("shards disagree on the canonical config or spec version",
                                                     file=other_path))
    try:
        config = config_from_metadata(json_field(meta, KEY_CONFIG, first_path), meta.get(KEY_SPEC, ""), first_path)
    except LlmstdError as exc:
        # A newer spec is no fault of the config: this llmstd is too old to read the metadata.
        refuse(findings, "metadata" if isinstance(exc, SpecVersionError) else "config_error", exc)
        return None
    if arch and arch != config.architecture:
        refuse(findings, "config_error", MappingError(f"checkpoint is '{config.architecture}', not '{arch}'",
                                                      file=first_path))
    canonical = require_canonical_set(tensors, config, source=str(first_path), findings=findings)
    if findings is not None:  # lint only: reading takes the tying from the config, never from this key
        declared = attempt(findings, "metadata", lambda: json_field(meta, KEY_TIED, first_path))
        if declared is not None and declared != vocab.tied_tensors(config):
            findings.error("tie_mismatch", f"metadata {KEY_TIED} = {declared} but the config implies "
                           f"{vocab.tied_tensors(config)}", file=first_path)
    applied = attempt(findings, "transforms", lambda: json_field(meta, KEY_TRANSFORMS, first_path))
    sidecars = attempt(findings, "side_file", lambda: common.side_files(path, files)) or SideFiles()
    provenance = attempt(findings, "provenance", lambda: json_field(meta, KEY_PROVENANCE, first_path))
    return Checkpoint(path=path, format="canonical", container=container, dialect="canonical", config=config,
                      tensors=canonical, files=files, source_names=tensors,
                      report=MappingReport(transforms=applied if applied is not None else []), sidecars=sidecars,
                      provenance=provenance if provenance is not None else {})


def provenance_for(ckpt: Checkpoint, hashes: dict[Path, str] | None) -> dict[str, Any]:
    """What produced these canonical tensors; earlier canonical history is kept, not replaced."""
    source_root = ckpt.path if ckpt.path.is_dir() else ckpt.path.parent
    files = [
        {"name": str(p.relative_to(source_root)) if p.is_relative_to(source_root) else p.name,
         "bytes": p.stat().st_size,
         "sha256": (hashes or {}).get(p, _HASH_PLACEHOLDER)}
        for p in ckpt.files
    ]
    record: dict[str, Any] = {
        "llmstd_version": __version__,
        "source": {"format": ckpt.format, "container": ckpt.container, "dialect": ckpt.dialect, "files": files},
    }
    if ckpt.provenance:
        record["history"] = [ckpt.provenance]
    return record


def metadata(ckpt: Checkpoint, hashes: dict[Path, str] | None, format_value: str = FORMAT_VALUE) -> dict[str, str]:
    """The canonical metadata (spec, architecture, config, provenance, transforms, ties) as strings;
    other formats that store canonical tensors (llmstd's ONNX) write it with their own format value."""
    return {
        KEY_FORMAT: format_value,
        KEY_SPEC: vocab.SPEC_VERSION,
        KEY_ARCH: ckpt.architecture,
        KEY_CONFIG: ckpt.config.to_json(),
        KEY_PROVENANCE: json.dumps(provenance_for(ckpt, hashes), sort_keys=True),
        KEY_TRANSFORMS: json.dumps(ckpt.report.transforms, sort_keys=True),
        KEY_TIED: json.dumps(vocab.tied_tensors(ckpt.config), sort_keys=True),
    }


def write(ckpt: Checkpoint, staging: Path, options: WriteOptions) -> list[Path]:
    # Source hashes are computed on another core while the tensors stream out; the header is
    # written with same-length placeholders and patched in place at the end.
    with common.hashing_in_background(ckpt.files) as hashes:
        files = common.write_safetensors_set(staging, STEM, list(ckpt.tensors.items()), metadata(ckpt, None),
                                             shard_size=options.shard_size, progress=options.progress,
                                             metadata_reserve=256)
        final = metadata(ckpt, hashes())
    for f in files:
        if f.suffix == ".safetensors":
            safetensors_io.rewrite_metadata(f, final)
    return [*files, *common.copy_side_files(ckpt.sidecars, staging, files)]


register(Format("canonical", "llmstd canonical checkpoint (canonical names and layouts in safetensors)",
                detect, read, write))
