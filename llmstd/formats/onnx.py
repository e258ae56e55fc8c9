"""ONNX models: a directory holding ``model.onnx`` (plus ``model.onnx.data`` for external data) and
``config.json``, or a bare ``.onnx`` file.

Writing builds a complete, runnable graph from the canonical config (:mod:`llmstd.onnx_graph`) whose
initializers carry the canonical tensor names, and records in the model's ``metadata_props`` the
spec version, architecture, canonical config, provenance and transforms, the same keys the canonical
format keeps in its safetensors metadata. Reading such a file back is therefore exact: the config
comes from the metadata and each canonical tensor from the initializer of that name.

Reading an ONNX model written by another exporter (torch.onnx dynamo or TorchScript, Optimum) goes
through :mod:`llmstd.onnx_recover`, which recovers the parameters from initializer names and graph
analysis and needs the model's Hugging Face ``config.json`` beside the ``.onnx`` file (as Optimum
exports have it).

Weights above a size threshold go to one external data file, ``model.onnx.data``. The threshold is
``WriteOptions.shard_size`` (``--shard-size``: the most weight bytes ``model.onnx`` itself may hold),
by default just under protobuf's 2 GiB limit.
"""

from __future__ import annotations

from pathlib import Path

from llmstd import maps, vocab
from llmstd.checkpoint import Checkpoint
from llmstd.converters import onnx_io
from llmstd.errors import DetectionError, LlmstdError, MapError, MappingError
from llmstd.findings import Findings
from llmstd.formats import Format, WriteOptions, common, register
from llmstd.formats.canonical import (
    KEY_CONFIG,
    KEY_FORMAT,
    KEY_PROVENANCE,
    KEY_SPEC,
    KEY_TRANSFORMS,
    config_from_metadata,
    json_field,
)
from llmstd.formats.canonical import metadata as canonical_metadata
from llmstd.jsonfile import dumps, read_json_object
from llmstd.mapping import MappingReport, require_canonical_set
from llmstd.tensors import LazyTensor

MODEL = "model.onnx"
CONFIG = "config.json"
GENAI_CONFIG = "genai_config.json"  # written for --onnx-package genai; part of the package, not a side file
PACKAGES = ("plain", "genai")
FORMAT_VALUE = "onnx"


def model_file(path: Path) -> Path | None:
    """The .onnx file a path designates: the file itself, ``model.onnx`` in a directory, or the
    directory's only ``.onnx`` file."""
    if path.is_file():
        return path if path.suffix == ".onnx" else None
    if path.is_dir():
        if (path / MODEL).is_file():
            return path / MODEL
        found = sorted(p for p in path.glob("*.onnx") if p.is_file())
        if len(found) == 1:
            return found[0]
    return None


def detect(path: Path) -> bool:
    if path.is_dir() and model_file(path) is None:
        return any(path.glob("*.onnx"))  # several graphs: claimed here so read() can say which to pick
    return model_file(path) is not None


def is_llmstd_file(meta: dict[str, str]) -> bool:
    return meta.get(KEY_FORMAT) == FORMAT_VALUE


def read(path: Path, arch: str | None = None, *, findings: Findings | None = None) -> Checkpoint:
    # No lenient mode yet: ``findings`` is accepted and unused, so a collecting caller gets the first
    # problem raised, exactly as a strict one does.
    model_path = model_file(path)
    if model_path is None:
        found = sorted(p.name for p in path.glob("*.onnx")) if path.is_dir() else []
        raise DetectionError(f"cannot tell which ONNX graph to read (found {', '.join(found) or 'none'})", file=path,
                             hint="pass the .onnx file itself, or name the graph model.onnx")
    onnx_file = onnx_io.read(model_path)
    if is_llmstd_file(onnx_file.metadata):
        return _read_own(path, onnx_file, arch)
    from llmstd import onnx_recover

    return onnx_recover.recover(path, onnx_file, arch=arch)


def _read_own(path: Path, f: onnx_io.OnnxFile, arch: str | None) -> Checkpoint:
    """An ONNX model llmstd wrote: config from the metadata, tensors by canonical initializer name."""
    from llmstd.onnx_graph.build import OWN_PREFIX

    meta, source = f.metadata, f.path
    config = config_from_metadata(json_field(meta, KEY_CONFIG, source), meta.get(KEY_SPEC, ""), source)
    if arch and arch != config.architecture:
        raise MappingError(f"checkpoint is '{config.architecture}', not '{arch}'", file=source)
    # The graph's own constants carry OWN_PREFIX; every other initializer must be a canonical tensor.
    # An initializer of a dtype llmstd cannot read counts as unexpected, or as missing if it is expected.
    expected = vocab.expected_tensors(config)
    named = {n: f.tensors.get(n) for n in f.initializers if not n.startswith(OWN_PREFIX)}
    require_canonical_set({n: t for n, t in named.items() if t is not None or n not in expected}, config,
                          source=str(source),
                          hint="the graph was edited after llmstd wrote it; convert from the original checkpoint")
    tensors: dict[str, LazyTensor] = {n: named[n] for n in expected}  # type: ignore[misc]
    report = MappingReport(transforms=json_field(meta, KEY_TRANSFORMS, source)) if KEY_TRANSFORMS in meta else MappingReport()
    return Checkpoint(path=path, format="onnx", container=f.container, dialect="canonical", config=config,
                      tensors=tensors, files=[f.path, *f.data_files], source_names=dict(f.tensors), report=report,
                      # config.json beside the graph is the format's own (written anew from the canonical config)
                      sidecars=common.side_files(path, [f.path, *f.data_files, f.path.parent / CONFIG,
                                                          f.path.parent / GENAI_CONFIG]),
                      provenance=json_field(meta, KEY_PROVENANCE, source) if KEY_PROVENANCE in meta else {})


def _framework_config(ckpt: Checkpoint) -> dict[str, object] | None:
    """config.json for tools that expect one beside model.onnx (Optimum, transformers.js), when the
    architecture's map translates a Hugging Face config."""
    from llmstd.formats import hf

    try:
        nmap = maps.load(ckpt.architecture)
        if nmap.config_format != "hf" or "hf" not in nmap.dialects:
            return None
        return hf.framework_config(nmap, ckpt, hf.resolve_head(nmap, "hf", ckpt.config.head))
    except MapError:
        return None



def write_onnx(ckpt: Checkpoint, staging: Path, *, external_data_threshold: int | None = None,
               progress: common.Progress | None = None, package: str = "plain") -> list[Path]:
    """Write ``ckpt`` as a runnable ``model.onnx`` (+ ``model.onnx.data``) and ``config.json`` into
    ``staging``. Weights go to external data when they exceed ``external_data_threshold`` bytes.
    ``package="genai"`` adds ``genai_config.json`` for onnxruntime-genai."""
    from llmstd.onnx_graph import build_graph, genai

    if package not in PACKAGES:
        raise LlmstdError(f"unknown ONNX package {package!r}", hint=f"choose {' or '.join(PACKAGES)}")
    genai_body = None
    if package == "genai":  # refused before anything is written
        generation_path = ckpt.sidecars.files.get("generation_config.json")
        generation = read_json_object(generation_path) if generation_path is not None else None
        genai_body = genai.genai_config(ckpt.config, MODEL, generation)
    built = build_graph(ckpt.config, {n: t.dtype for n, t in ckpt.tensors.items()})
    threshold = onnx_io.DEFAULT_EXTERNAL_THRESHOLD if external_data_threshold is None else external_data_threshold
    external = ckpt.nbytes > threshold
    # Source hashes are computed on the second core while the tensors stream out.
    with common.hashing_in_background(ckpt.files) as hashes:
        files = onnx_io.write(staging / MODEL, built.model, list(ckpt.tensors.items()), external=external,
                              metadata=lambda: canonical_metadata(ckpt, hashes(), FORMAT_VALUE), progress=progress)
    body = _framework_config(ckpt)
    if body is not None:
        (staging / CONFIG).write_text(dumps(body), encoding="utf-8")
        files.append(staging / CONFIG)
    if genai_body is not None:
        (staging / GENAI_CONFIG).write_text(dumps(genai_body), encoding="utf-8")
        files.append(staging / GENAI_CONFIG)
    return [*files, *common.copy_side_files(ckpt.sidecars, staging, files)]


def write(ckpt: Checkpoint, staging: Path, options: WriteOptions) -> list[Path]:
    return write_onnx(ckpt, staging, external_data_threshold=options.shard_size, progress=options.progress,
                      package=options.onnx_package)


register(Format("onnx", "ONNX model (runnable graph; model.onnx + config.json, external data when large)",
                detect, read, write))
