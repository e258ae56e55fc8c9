"""Hugging Face (PyTorch) model directories: config.json plus model.safetensors, sharded
safetensors with model.safetensors.index.json, or pytorch_model.bin (optionally sharded).

The ``hf`` dialect of each naming map gives the parameter names; config.json is translated by the
map's ``[config]`` rules. .bin files are read by llmstd's own pickle reader, which never executes
code from the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from llmstd import maps
from llmstd.checkpoint import Checkpoint, SideFiles
from llmstd.config import CanonicalConfig
from llmstd.configmap import ConfigKeys, config_to_framework, read_config
from llmstd.converters import safetensors_io, shard_index, torch_pickle
from llmstd.errors import ConfigError, DetectionError, MapError
from llmstd.findings import Findings, attempt
from llmstd.formats import Format, WriteOptions, common, register
from llmstd.jsonfile import dumps, read_json_object
from llmstd.mapping import DialectMatcher, from_canonical, to_canonical
from llmstd.maps import Head, NamingMap
from llmstd.tensors import LazyTensor

DIALECT = "hf"
PACKED = "hf_packed"  # transformers 5's packed experts (save_original_format=False)
CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, BIN, BIN_INDEX)  # in Hugging Face's order of preference
DEFAULT_SHARD_SIZE = 5 * 10**9  # transformers' default max_shard_size ("5GB")
_LOADABLE_FORMATS = ("pt", "tf", "flax", "mlx")  # safetensors metadata formats transformers' loader accepts


def detect(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file() and any((path / f).is_file() for f in WEIGHT_FILES)


def _open_weights(path: Path, findings: Findings | None) -> tuple[dict[str, LazyTensor], list[Path], str] | None:
    """(tensors, files, container); lenient, None when the one weight file cannot be read."""
    if (path / SAFETENSORS).is_file():
        tensors = attempt(findings, "bad_header", lambda: _open_safetensors(path / SAFETENSORS, findings))
        return None if tensors is None else (tensors, [path / SAFETENSORS], "safetensors")
    if (path / SAFETENSORS_INDEX).is_file():
        tensors, files = shard_index.open_sharded(path / SAFETENSORS_INDEX,
                                                  lambda p: _open_safetensors(p, findings), findings)
        return tensors, [*files, path / SAFETENSORS_INDEX], "safetensors-sharded"
    if (path / BIN).is_file():
        tensors = attempt(findings, "bad_header", lambda: torch_pickle.read_torch_checkpoint(path / BIN))
        return None if tensors is None else (tensors, [path / BIN], "torch-pickle")
    if (path / BIN_INDEX).is_file():
        tensors, files = shard_index.open_sharded(path / BIN_INDEX, torch_pickle.read_torch_checkpoint, findings)
        return tensors, [*files, path / BIN_INDEX], "torch-pickle-sharded"
    raise DetectionError("no weights found", file=path, hint=f"expected one of {', '.join(WEIGHT_FILES)}")


def _open_safetensors(path: Path, findings: Findings | None) -> dict[str, LazyTensor]:
    sf = safetensors_io.open_file(path)
    # Lint only (llmstd reads it either way): transformers refuses a file whose metadata names
    # another framework, or names none although the file has metadata.
    if findings is not None and sf.metadata and sf.metadata.get("format") not in _LOADABLE_FORMATS:
        findings.error("hf_metadata", f"safetensors metadata has format {sf.metadata.get('format')!r}; transformers "
                       "refuses files whose metadata lacks format = pt", file=path)
    return dict(sf.tensors)


def map_for_config(raw: dict[str, object], arch: str | None, config_path: Path, names: list[str],
                   dialect: str = DIALECT) -> NamingMap:
    """The naming map: --arch if given, else config.json's model_type, else the one map whose
    names explain every tensor of the checkpoint."""
    if arch:
        return maps.load(arch)
    model_type = raw.get("model_type")
    if isinstance(model_type, str):
        nmap = maps.for_model_type(model_type)
        if nmap is None:
            raise MapError(f"no naming map handles model_type '{model_type}'", file=config_path,
                           hint=f"available architectures: {', '.join(maps.available())}; pass --arch if one fits")
        return nmap
    fitting = []
    for candidate in maps.available():
        nmap = maps.load(candidate)
        if dialect in nmap.dialects and any(
            not DialectMatcher(nmap, dialect, head.prefix).unmatched(names) for head in nmap.dialects[dialect].heads.values()
        ):
            fitting.append(nmap)
    if len(fitting) != 1:
        found = ", ".join(m.architecture for m in fitting) or "none"
        raise ConfigError(f"config has no 'model_type' and the tensor names fit {found}", file=config_path,
                          hint="pass --arch to name the architecture")
    return fitting[0]


def head_by_class(nmap: NamingMap, dialect: str, raw: Mapping[str, object]) -> Head | None:
    """The head whose model class config.json names in ``architectures``, if the map knows it."""
    archs = raw.get("architectures")
    if isinstance(archs, list) and archs:
        for head in nmap.dialect(dialect).heads.values():
            if head.cls == archs[0]:
                return head
    return None


def detect_head(nmap: NamingMap, dialect: str, raw: dict[str, object], names: list[str]) -> Head:
    """The model head, from the config's class name when it is known, else from the tensor names."""
    head = head_by_class(nmap, dialect, raw)
    if head is not None:
        return head
    # Unknown or absent class: the head whose names explain the most tensors (errors report the rest).
    heads = nmap.dialect(dialect).heads.values()
    return min(heads, key=lambda h: len(DialectMatcher(nmap, dialect, h.prefix).unmatched(names)))


def read(path: Path, arch: str | None = None, *, findings: Findings | None = None) -> Checkpoint | None:
    """Strict, or lenient with ``findings`` (see :class:`llmstd.formats.Reader`): codes ``config_error``,
    ``bad_header``, ``hf_metadata``, the shard-index codes, the mapping codes and ``side_file``."""
    config_path = path / CONFIG
    raw = attempt(findings, "config_error", lambda: read_json_object(config_path))
    weights = _open_weights(path, findings)
    if raw is None or weights is None:
        return None
    tensors, files, container = weights
    names = list(tensors)

    def canonical_config() -> tuple[NamingMap, Head, CanonicalConfig, ConfigKeys]:
        nmap = map_for_config(raw, arch, config_path, names)
        head = detect_head(nmap, DIALECT, raw, names)
        present = DialectMatcher(nmap, DIALECT, head.prefix).canonical_names_present(names)
        config, keys = read_config(nmap, raw, head=head.name, dtype=common.dominant_dtype(tensors),
                                   present=present, source=str(config_path))
        return nmap, head, config, keys

    read_as = attempt(findings, "config_error", canonical_config)
    if read_as is None:
        return None
    nmap, head, config, keys = read_as
    dialect = _dialect_of(nmap, head, names)
    canonical, report = to_canonical(nmap, dialect, head.prefix, tensors, config, source=str(path), findings=findings)
    keys.record(report)
    sidecars = attempt(findings, "side_file", lambda: common.side_files(path, [config_path, *files])) or SideFiles()
    return Checkpoint(path=path, format="hf", container=container, dialect=dialect, config=config,
                      tensors=canonical, files=[config_path, *files], source_names=tensors, report=report,
                      sidecars=sidecars)


def _dialect_of(nmap: NamingMap, head: Head, names: list[str]) -> str:
    """``hf``, or ``hf_packed`` when it explains more of the checkpoint's names (packed experts)."""
    if PACKED not in nmap.dialects:
        return DIALECT
    left = {d: len(DialectMatcher(nmap, d, head.prefix).unmatched(names)) for d in (DIALECT, PACKED)}
    return PACKED if left[PACKED] < left[DIALECT] else DIALECT


def framework_config(nmap: NamingMap, ckpt: Checkpoint, head: Head) -> dict[str, object]:
    """The config.json Hugging Face's classes (PyTorch and TF alike) load for this checkpoint."""
    body = config_to_framework(nmap, ckpt.config)
    # Both spellings of the dtype: transformers 5 reads 'dtype', 4.x 'torch_dtype'.
    body.update({"model_type": nmap.model_types[0], "architectures": [head.cls], "dtype": ckpt.config.dtype,
                 "torch_dtype": ckpt.config.dtype})
    return body


def resolve_head(nmap: NamingMap, dialect: str, head_name: str) -> Head:
    heads = nmap.dialect(dialect).heads
    if head_name not in heads:
        raise MapError(f"dialect '{dialect}' of '{nmap.architecture}' has no '{head_name}' model class",
                       file=nmap.path, hint=f"classes: {', '.join(h.cls for h in heads.values())}")
    return heads[head_name]


def write(ckpt: Checkpoint, staging: Path, options: WriteOptions) -> list[Path]:
    nmap = maps.load(ckpt.architecture)
    head = resolve_head(nmap, DIALECT, ckpt.config.head)
    dialect = DIALECT
    if options.experts == "packed" and ckpt.config.num_experts:
        if PACKED not in nmap.dialects:
            raise MapError(f"'{nmap.architecture}' has no packed-experts naming", file=nmap.path,
                           hint="write --experts per-expert, or add an hf_packed dialect to the map")
        dialect = PACKED
    named = from_canonical(nmap, dialect, head.prefix, ckpt.tensors, ckpt.config)
    entries = list(named.items())
    shard_size = options.shard_size or DEFAULT_SHARD_SIZE
    if options.weights == "bin":
        files = _write_bin(staging, entries, shard_size, options)
    else:
        files = common.write_safetensors_set(staging, "model", entries, {"format": "pt"},
                                             shard_size=shard_size, progress=options.progress)
    config_path = staging / CONFIG
    config_path.write_text(dumps(framework_config(nmap, ckpt, head)), encoding="utf-8")
    written = [*files, config_path]
    return [*written, *common.copy_side_files(ckpt.sidecars, staging, written)]


def _write_bin(staging: Path, entries: list[tuple[str, LazyTensor]], shard_size: int,
               options: WriteOptions) -> list[Path]:
    shards = shard_index.plan_shards(entries, shard_size)
    if len(shards) == 1:
        torch_pickle.write_torch_checkpoint(staging / BIN, shards[0])
        if options.progress:
            for name, tensor in shards[0]:
                options.progress(name, tensor.nbytes)
        return [staging / BIN]
    files, weight_map = [], {}
    for k, shard in enumerate(shards, start=1):
        name = shard_index.shard_file_name("pytorch_model", ".bin", k, len(shards))
        torch_pickle.write_torch_checkpoint(staging / name, shard)
        files.append(staging / name)
        weight_map.update({n: name for n, _ in shard})
        if options.progress:
            for tensor_name, tensor in shard:
                options.progress(tensor_name, tensor.nbytes)
    shard_index.write_index(staging / BIN_INDEX, weight_map, sum(t.nbytes for _, t in entries))
    return [*files, staging / BIN_INDEX]


register(Format("hf", "Hugging Face PyTorch model directory (config.json + safetensors or .bin)", detect, read, write))
