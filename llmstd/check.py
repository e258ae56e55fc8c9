"""Proof of sameness: run two checkpoints, each in its own runtime, on the same inputs and compare.

``check(a, b)`` opens each side, picks a runtime for it, feeds both the same token batch, and
compares every output (logits, or last hidden state and pooler output for base models) and, when
both runtimes expose them, the hidden state after every layer. Side A is the reference.

Runtimes (``runtime_a`` / ``runtime_b``; ``auto`` picks by format):

=================  ======================================================================================
``transformers``   Hugging Face PyTorch classes (the map's class for the head), for ``hf`` directories.
                   auto uses it when transformers 4.x is importable; at 5.x or absent, llmstd-torch.
``llmstd-torch``   llmstd's own PyTorch implementation (:mod:`llmstd.runtimes.torch_model`) over the
                   canonical tensors of *any* format, read with :func:`llmstd.load`. auto: canonical.
``transformers-tf`` Hugging Face TF classes (``TF_USE_LEGACY_KERAS=1``), for ``tf-h5`` directories.
``llmstd-tf``      :mod:`llmstd.runtimes.tf_model`, when that module exists; auto for ``tf-ckpt`` and
                   for ``tf-h5`` architectures without a Hugging Face TF class.
``onnxruntime``    the ``.onnx`` graph (CPUExecutionProvider; CUDA provider when installed and
                   ``--device cuda``). auto for ``onnx``.
=================  ======================================================================================

When auto's first choice is not installed, the side falls back to llmstd-torch over the same
weights and the report says so; naming a runtime explicitly that is not installed is an error.

Inputs: by default a deterministic batch of 2 sequences of 128 tokens (capped by the models'
``max_positions`` and vocabulary), the second right-padded to 96 real tokens, with attention masks
(and two token-type segments for models with token types). Rotary mistakes only show after ~20
tokens, padding mistakes only with padding, so both are always present. Or token ids given by the
user (JSON: a list of lists, or ``{"input_ids": ..., "attention_mask": ...}``), or text encoded by a
tokenizer found next to either checkpoint. Every metric is computed on non-padded positions only.

Metrics per output: max abs error; max relative error (``|a-b| / max(|a|, 1e-3·max|a|)``, the floor
keeping near-zero reference values from dominating); NMSE (``Σ(a-b)² / Σa²``); cosine similarity;
and for logits top-1 agreement (fraction of positions with the same argmax), top-5 agreement (mean
overlap of the two top-5 sets) and the KL divergence ``KL(softmax(a) ‖ softmax(b))`` of the
next-token distributions (mean and max over positions).

Tolerances, chosen by the less precise compute dtype of the two sides (float16 and bfloat16 mixed
judge as bfloat16), each overridable (``tolerance=`` here, ``--atol`` etc. on the CLI):

==========  =============================  ============================  ==========================
dtype       logits                         other outputs                 a layer diverges when
==========  =============================  ============================  ==========================
float32/64  max abs ≤ 1e-4                 max abs ≤ 1e-4                hidden NMSE > 1e-8
float16     top-1 ≥ 0.90, mean KL ≤ 1e-3   NMSE ≤ 1e-3                   hidden NMSE > 1e-3
bfloat16    top-1 ≥ 0.80, mean KL ≤ 1e-2   NMSE ≤ 1e-2                   hidden NMSE > 1e-2
==========  =============================  ============================  ==========================

Half precision is judged on what a user sees (the predicted token and the distribution) rather
than on absolute error, which grows with logit magnitude. Any inf or NaN in an output fails.

Localisation: the stages are the embeddings, each layer (the last one together with the final
norm, as runtimes report it) and the head. The first stage whose hidden-state NMSE exceeds the
threshold is named with the canonical parameters feeding it; when every hidden state agrees but an
output does not, the head is named. A side whose runtime exposes no hidden states (ONNX graphs) is
re-run with llmstd-torch over its own weights to localise: if those weights reproduce side A, the
difference lies in that side's runtime or graph, not in its weights, and the report says so.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmstd import maps, vocab
from llmstd.checkpoint import Checkpoint
from llmstd.config import CanonicalConfig
from llmstd.convert import load
from llmstd.errors import LlmstdError, MissingDependencyError
from llmstd.runtimes import torch_model as tm
from llmstd.runtimes.torch_model import RunOutput

RUNTIMES = ("auto", "transformers", "llmstd-torch", "transformers-tf", "llmstd-tf", "onnxruntime")
DEVICES = ("cpu", "cuda")
DEFAULT_BATCH = 2
DEFAULT_SEQ_LEN = 128

# ------------------------------------------------------------------------------------------------
# tolerances


@dataclass(frozen=True)
class Tolerance:
    """Pass/fail limits for one comparison; ``None`` disables a criterion."""

    logits_max_abs: float | None = None  # max |a-b| over logits
    output_max_abs: float | None = None  # max |a-b| over other outputs (hidden state, pooler)
    min_top1: float | None = None  # minimum top-1 agreement of logits
    max_kl: float | None = None  # maximum mean KL(a ‖ b) of the token distributions, nats
    max_nmse: float | None = None  # maximum NMSE of any output
    hidden_nmse: float = 1e-8  # a stage whose hidden-state NMSE exceeds this diverges (localisation)

    def to_dict(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)


#: Default tolerances by compute dtype (see the module docstring for the reasoning).
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(logits_max_abs=1e-4, output_max_abs=1e-4, hidden_nmse=1e-8),
    "float32": Tolerance(logits_max_abs=1e-4, output_max_abs=1e-4, hidden_nmse=1e-8),
    "float16": Tolerance(min_top1=0.90, max_kl=1e-3, max_nmse=1e-3, hidden_nmse=1e-3),
    "bfloat16": Tolerance(min_top1=0.80, max_kl=1e-2, max_nmse=1e-2, hidden_nmse=1e-2),
}
_PRECISION_ORDER = ("float64", "float32", "float16", "bfloat16")  # later = looser


def judged_dtype(a: str, b: str) -> str:
    """The dtype whose tolerances judge a comparison: the less precise of the two compute dtypes."""
    ranks = [_PRECISION_ORDER.index(d) if d in _PRECISION_ORDER else 1 for d in (a, b)]
    return _PRECISION_ORDER[max(ranks)]


def tolerance_for(dtype: str, overrides: Tolerance | Mapping[str, float | None] | None = None) -> Tolerance:
    """The default tolerance for ``dtype``, with ``overrides`` (a Tolerance or some of its fields) applied."""
    if isinstance(overrides, Tolerance):
        return overrides
    base = TOLERANCES.get(dtype, TOLERANCES["float32"])
    if not overrides:
        return base
    fields = {f.name for f in dataclasses.fields(Tolerance)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise LlmstdError(f"unknown tolerance field(s) {', '.join(unknown)}", hint=f"fields: {', '.join(sorted(fields))}")
    return dataclasses.replace(base, **dict(overrides))


# ------------------------------------------------------------------------------------------------
# inputs


@dataclass
class Inputs:
    """One token batch, right-padded: ``attention_mask`` is 1 on real tokens, 0 on padding."""

    input_ids: np.ndarray  # int64 [batch, seq]
    attention_mask: np.ndarray  # int64 [batch, seq]
    token_type_ids: np.ndarray | None  # int64 [batch, seq] for models with token types
    source: str  # default | input-ids | text

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "batch": int(self.input_ids.shape[0]), "seq_len": int(self.input_ids.shape[1]),
                "real_tokens": [int(n) for n in self.attention_mask.sum(axis=1)]}


def _limits(configs: Sequence[CanonicalConfig]) -> tuple[int, int]:
    return min(c.vocab_size for c in configs), min(c.max_positions for c in configs)


def _pad_id(config: CanonicalConfig, vocab_size: int) -> int:
    pad = config.pad_token_id
    return pad if isinstance(pad, int) and 0 <= pad < vocab_size else 0


def _token_types(mask: np.ndarray, configs: Sequence[CanonicalConfig]) -> np.ndarray | None:
    types = min(c.type_vocab_size for c in configs)
    if types <= 0:
        return None
    out = np.zeros_like(mask)
    if types > 1:  # two segments, so every token-type row the inputs can reach is exercised
        for row, length in enumerate(mask.sum(axis=1)):
            out[row, length // 2:length] = 1
    return out


def default_inputs(configs: Sequence[CanonicalConfig], *, batch: int = DEFAULT_BATCH, seq_len: int = DEFAULT_SEQ_LEN,
                   seed: int = 0) -> Inputs:
    """The deterministic default batch: ``batch`` rows of ``seq_len`` tokens (capped by the models),
    row 0 full, later rows right-padded progressively (row 1 of 2 keeps 3/4 of its tokens)."""
    if batch < 1 or seq_len < 1:
        raise LlmstdError("batch and sequence length must be positive")
    vocab_size, max_positions = _limits(configs)
    seq = min(seq_len, max_positions)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for row in range(1, batch):
        mask[row, max(1, seq - (row * seq) // (2 * batch)):] = 0
    ids[mask == 0] = _pad_id(configs[0], vocab_size)
    return Inputs(ids, mask, _token_types(mask, configs), "default")


def _ragged(rows: Sequence[Sequence[int]], configs: Sequence[CanonicalConfig], source: str) -> Inputs:
    vocab_size, max_positions = _limits(configs)
    if not rows or not all(len(r) for r in rows):
        raise LlmstdError("token ids must be a non-empty list of non-empty sequences")
    seq = max(len(r) for r in rows)
    if seq > max_positions:
        raise LlmstdError(f"a sequence of {seq} tokens exceeds max_positions = {max_positions}",
                          hint="shorten the input")
    ids = np.full((len(rows), seq), _pad_id(configs[0], vocab_size), dtype=np.int64)
    mask = np.zeros((len(rows), seq), dtype=np.int64)
    for row, tokens in enumerate(rows):
        ids[row, :len(tokens)] = np.asarray(tokens, dtype=np.int64)
        mask[row, :len(tokens)] = 1
    _check_ids(ids, vocab_size)
    return Inputs(ids, mask, _token_types(mask, configs), source)


def _check_ids(ids: np.ndarray, vocab_size: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise LlmstdError(f"token ids must lie in [0, {vocab_size}), got [{ids.min()}, {ids.max()}]")


def inputs_from_ids(spec: str | Path | Sequence[Sequence[int]] | Mapping[str, Any],
                    configs: Sequence[CanonicalConfig]) -> Inputs:
    """User token ids: a list of lists (ragged rows are right-padded), a mapping with ``input_ids``
    and optionally ``attention_mask``/``token_type_ids``, or a JSON file / JSON text holding either."""
    data: Any = spec
    if isinstance(spec, (str, Path)):
        text = str(spec)
        path = Path(text)
        if not text.lstrip().startswith(("[", "{")) and path.is_file():
            from llmstd.jsonfile import loads

            data = loads(path.read_bytes(), source=path)
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                raise LlmstdError(f"--input-ids {text!r} is neither a file nor JSON",
                                  hint='give a JSON file or text such as "[[1, 2, 3], [4, 5]]"') from None
    if isinstance(data, Mapping):
        if "input_ids" not in data:
            raise LlmstdError("token-id JSON objects need an 'input_ids' key")
        rows = data["input_ids"]
        if "attention_mask" in data:
            ids = np.asarray(rows, dtype=np.int64)
            mask = np.asarray(data["attention_mask"], dtype=np.int64)
            if ids.ndim != 2 or mask.shape != ids.shape:
                raise LlmstdError("input_ids and attention_mask must be equal-shaped [batch, seq] lists")
            if (np.diff(mask, axis=1) > 0).any() or (mask[:, 0] == 0).any():
                raise LlmstdError("only right padding is supported: each attention_mask row must be 1…1 0…0",
                                  hint="runtimes disagree on positions under left padding")
            vocab_size, max_positions = _limits(configs)
            if ids.shape[1] > max_positions:
                raise LlmstdError(f"a sequence of {ids.shape[1]} tokens exceeds max_positions = {max_positions}")
            _check_ids(ids, vocab_size)
            types = (np.asarray(data["token_type_ids"], dtype=np.int64) if "token_type_ids" in data
                     else _token_types(mask, configs))
            return Inputs(ids, mask, types, "input-ids")
        data = rows
    if not isinstance(data, Sequence) or not all(isinstance(r, Sequence) and not isinstance(r, str) for r in data):
        raise LlmstdError("token ids must be a list of lists of integers")
    if not all(isinstance(t, int) and not isinstance(t, bool) for r in data for t in r):
        raise LlmstdError("token ids must be integers")
    return _ragged(data, configs, "input-ids")


TOKENIZER_FILE = "tokenizer.json"


def find_tokenizer(paths: Sequence[Path]) -> Path | None:
    """The first directory among ``paths`` (or their parents for files) holding a tokenizer."""
    for path in paths:
        directory = path if path.is_dir() else path.parent
        if (directory / TOKENIZER_FILE).is_file():
            return directory
    return None


def inputs_from_text(texts: Sequence[str], paths: Sequence[Path], configs: Sequence[CanonicalConfig]) -> Inputs:
    """Encode ``texts`` with the tokenizer next to either checkpoint (``tokenizer.json``)."""
    directory = find_tokenizer(paths)
    if directory is None:
        raise LlmstdError("--text needs a tokenizer, and neither checkpoint has a tokenizer.json",
                          hint="pass token ids with --input-ids instead, or copy tokenizer.json next to the weights")
    tokenizers = importlib.import_module("tokenizers") if importlib.util.find_spec("tokenizers") else None
    if tokenizers is None:
        raise MissingDependencyError("--text needs the 'tokenizers' package", hint="pip install tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    rows = [tokenizer.encode(t).ids for t in texts]
    return _ragged(rows, configs, "text")


# ------------------------------------------------------------------------------------------------
# runtimes


@dataclass
class _Side:
    label: str
    path: Path
    ckpt: Checkpoint
    runtime: str
    device: str
    notes: list[str] = field(default_factory=list)


def _import(name: str) -> Any | None:
    """Import an optional framework, or None when it is absent (or blocked)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _transformers() -> tuple[Any | None, str]:
    """transformers when it is a 4.x release llmstd's checker supports, else (None, why not)."""
    module = _import("transformers")
    if module is None:
        return None, "transformers is not installed"
    major = int(str(getattr(module, "__version__", "0")).split(".")[0] or 0)
    if major != 4:
        return None, f"transformers {module.__version__} is not a 4.x release"
    return module, ""


def _hf_class(ckpt: Checkpoint) -> str | None:
    """The Hugging Face PyTorch class name for this checkpoint's architecture and head (from its map)."""
    try:
        heads = maps.load(ckpt.architecture).dialect("hf").heads
    except LlmstdError:
        return None
    head = heads.get(ckpt.config.head)
    return head.cls if head else None


def _hf_tf_class(ckpt: Checkpoint) -> str | None:
    try:
        nmap = maps.load(ckpt.architecture)
    except LlmstdError:
        return None
    if "hf_tf" in nmap.dialects and ckpt.config.head in nmap.dialects["hf_tf"].heads:
        return nmap.dialects["hf_tf"].heads[ckpt.config.head].cls
    torch_cls = _hf_class(ckpt)
    return f"TF{torch_cls}" if torch_cls else None


def _tf_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _llmstd_tf_available() -> bool:
    return importlib.util.find_spec("llmstd.runtimes.tf_model") is not None and _tf_available()


def _available(runtime: str, ckpt: Checkpoint) -> str:
    """'' when ``runtime`` can run ``ckpt`` here, else the reason it cannot."""
    if runtime == "llmstd-torch":
        return "" if _import("torch") is not None else "torch is not installed"
    if runtime == "transformers":
        if ckpt.format != "hf":
            return f"transformers runs Hugging Face PyTorch directories, not '{ckpt.format}'"
        if _import("torch") is None:
            return "torch is not installed"
        module, why = _transformers()
        if module is None:
            return why
        cls = _hf_class(ckpt)
        return "" if cls and hasattr(module, cls) else f"transformers has no class {cls} for '{ckpt.architecture}'"
    if runtime == "transformers-tf":
        if ckpt.format != "tf-h5":
            return f"Hugging Face TF classes load tf-h5 directories, not '{ckpt.format}'"
        if not _tf_available():
            return "tensorflow is not installed"
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # transformers' TF classes need Keras 2
        module, why = _transformers()
        if module is None:
            return why
        cls = _hf_tf_class(ckpt)
        return "" if cls and hasattr(module, cls) else f"transformers has no TF class for '{ckpt.architecture}'"
    if runtime == "llmstd-tf":
        if not _tf_available():
            return "tensorflow is not installed"
        return "" if _llmstd_tf_available() else "llmstd.runtimes.tf_model is not available"
    if runtime == "onnxruntime":
        if ckpt.format != "onnx":
            return f"onnxruntime runs ONNX graphs, not '{ckpt.format}'"
        return "" if importlib.util.find_spec("onnxruntime") is not None else "onnxruntime is not installed"
    raise LlmstdError(f"unknown runtime {runtime!r}", hint=f"choose one of {', '.join(RUNTIMES)}")


_AUTO: dict[str, tuple[str, ...]] = {
    "hf": ("transformers",),
    "canonical": (),
    "tf-h5": ("transformers-tf", "llmstd-tf"),
    "tf-ckpt": ("llmstd-tf",),
    "onnx": ("onnxruntime",),
}


def choose_runtime(ckpt: Checkpoint, requested: str = "auto") -> tuple[str, list[str]]:
    """(runtime, notes) for a checkpoint: ``requested`` if it can run here, or auto's choice."""
    if requested != "auto":
        why = _available(requested, ckpt)
        if why:
            extra = {"llmstd-torch": "torch", "transformers": "transformers", "transformers-tf": "tf",
                     "llmstd-tf": "tf", "onnxruntime": "onnx"}.get(requested, "all")
            error = MissingDependencyError if "not installed" in why else LlmstdError
            raise error(f"runtime '{requested}' cannot run {ckpt.path}: {why}",
                        hint=f"install it (pip install 'llmstd[{extra}]') or choose --runtime auto")
        return requested, []
    notes = []
    for candidate in _AUTO.get(ckpt.format, ()):
        why = _available(candidate, ckpt)
        if not why:
            return candidate, notes
        notes.append(f"{candidate} unavailable ({why})")
    why = _available("llmstd-torch", ckpt)
    if why:
        raise MissingDependencyError(f"no runtime can run {ckpt.path}: {'; '.join([*notes, why])}",
                                     hint="install torch: pip install 'llmstd[torch]'")
    if notes:
        notes.append("ran its canonical weights with llmstd-torch instead")
    return "llmstd-torch", notes


def _open_side(label: str, path: str | Path, arch: str | None, runtime: str, device: str) -> _Side:
    if runtime not in RUNTIMES:
        raise LlmstdError(f"unknown runtime {runtime!r}", hint=f"choose one of {', '.join(RUNTIMES)}")
    if device.split(":")[0] not in DEVICES:
        raise LlmstdError(f"unknown device {device!r}", hint="use cpu or cuda")
    ckpt = load(path, arch=arch)
    chosen, notes = choose_runtime(ckpt, runtime)
    return _Side(label, Path(path), ckpt, chosen, device, notes)


def _run(side: _Side, inputs: Inputs, hidden: bool) -> tuple[RunOutput, float]:
    """Load the side in its runtime and run it once; returns (output, load seconds)."""
    runner = {"llmstd-torch": _run_llmstd_torch, "transformers": _run_transformers,
              "transformers-tf": _run_transformers_tf, "llmstd-tf": _run_llmstd_tf, "onnxruntime": _run_onnx}
    return runner[side.runtime](side, inputs, hidden)


def _run_llmstd_torch(side: _Side, inputs: Inputs, hidden: bool) -> tuple[RunOutput, float]:
    started = time.perf_counter()
    model = tm.TorchModel(side.ckpt.tensors, side.ckpt.config, device=side.device)
    loaded = time.perf_counter() - started
    out = model(inputs.input_ids, inputs.attention_mask, inputs.token_type_ids, output_hidden_states=hidden)
    out.notes.append("llmstd-torch")
    return out, loaded


def _feeds_torch(torch: Any, inputs: Inputs, config: CanonicalConfig, device: str) -> dict[str, Any]:
    feeds = {"input_ids": torch.as_tensor(inputs.input_ids, device=device),
             "attention_mask": torch.as_tensor(inputs.attention_mask, device=device)}
    if config.type_vocab_size > 0 and inputs.token_type_ids is not None:
        feeds["token_type_ids"] = torch.as_tensor(inputs.token_type_ids, device=device)
    return feeds


def _run_transformers(side: _Side, inputs: Inputs, hidden: bool) -> tuple[RunOutput, float]:
    torch = tm._torch()
    transformers, _ = _transformers()
    assert transformers is not None
    device = tm.resolve_device(side.device)
    cls_name = _hf_class(side.ckpt)
    started = time.perf_counter()
    major_minor = tuple(int(p) for p in transformers.__version__.split(".")[:2])
    dtype_key = "dtype" if major_minor >= (4, 56) else "torch_dtype"
    # Eager attention on both sides: the fused kernels differ between devices and versions.
    model = getattr(transformers, cls_name).from_pretrained(
        str(side.path), attn_implementation="eager", **{dtype_key: "auto"})
    model = model.to(device).eval()
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    with torch.no_grad():
        out = model(**_feeds_torch(torch, inputs, side.ckpt.config, device), output_hidden_states=hidden)
    outputs = {n: getattr(out, n).detach().float().cpu().numpy() for n in tm.output_names(side.ckpt.config)}
    states = [h.detach().float().cpu().numpy() for h in out.hidden_states] if hidden and out.hidden_states else None
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return RunOutput(outputs, states, tm.device_description(device), dtype, time.perf_counter() - started,
                     [f"transformers {transformers.__version__} {cls_name}"]), loaded


def _run_transformers_tf(side: _Side, inputs: Inputs, hidden: bool) -> tuple[RunOutput, float]:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    tf = importlib.import_module("tensorflow")
    transformers, _ = _transformers()
    assert transformers is not None
    cls_name = _hf_tf_class(side.ckpt)
    device, notes = _tf_device(tf, side.device)
    started = time.perf_counter()
    with tf.device(device):
        model = getattr(transformers, cls_name).from_pretrained(str(side.path))
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        feeds = {"input_ids": tf.constant(inputs.input_ids), "attention_mask": tf.constant(inputs.attention_mask)}
        if side.ckpt.config.type_vocab_size > 0 and inputs.token_type_ids is not None:
            feeds["token_type_ids"] = tf.constant(inputs.token_type_ids)
        out = model(**feeds, output_hidden_states=hidden, training=False)
    outputs = {n: np.asarray(out[n], dtype=np.float32) for n in tm.output_names(side.ckpt.config)}
    states = [np.asarray(h, dtype=np.float32) for h in out["hidden_states"]] if hidden else None
    dtype = str(model.dtype) if isinstance(getattr(model, "dtype", None), str) else side.ckpt.config.dtype
    return RunOutput(outputs, states, device, dtype, time.perf_counter() - started,
                     [f"transformers {transformers.__version__} {cls_name}", *notes]), loaded


def _tf_device(tf: Any, requested: str) -> tuple[str, list[str]]:
    if requested.startswith("cuda"):
        if tf.config.list_physical_devices("GPU"):
            return "/GPU:0", []
        return "/CPU:0", ["tensorflow sees no GPU; ran on CPU"]
    return "/CPU:0", []


def _run_llmstd_tf(side: _Side, inputs: Inputs, hidden: bool) -> tuple[RunOutput, float]:
    tf = importlib.import_module("tensorflow")
    module = importlib.import_module("llmstd.runtimes.tf_model")
    device, notes = _tf_device(tf, side.device)
    started = time.perf_counter()
    with tf.device(device):
        result = module.run(side.ckpt.tensors, side.ckpt.config, inputs.input_ids, inputs.attention_mask,
                            inputs.token_type_ids, output_hidden_states=hidden)
    seconds = time.perf_counter() - started
    outputs, states = _normalise_result(result, side.ckpt.config)
    return RunOutput(outputs, states if hidden else None, device, side.ckpt.config.dtype, seconds,
                     ["llmstd-tf", *notes]), 0.0


def _normalise_result(result: Any, config: CanonicalConfig) -> tuple[dict[str, np.ndarray], list[np.ndarray] | None]:
    """Outputs and hidden states from another runtime's result object or mapping."""
    def get(key: str) -> Any:
        if isinstance(result, Mapping):
            return result.get(key)
        return getattr(result, key, None)

    nested = get("outputs")
    outputs = {}
    for name in tm.output_names(config):
        value = nested.get(name) if isinstance(nested, Mapping) else get(name)
        if value is None:
            raise LlmstdError(f"the runtime returned no '{name}' output")
        outputs[name] = np.asarray(value, dtype=np.float32)
    states = get("hidden_states")
    return outputs, [np.asarray(h, dtype=np.float32) for h in states] if states is not None else None


def onnx_file(path: Path) -> Path:
    """The .onnx graph of an ONNX checkpoint (a file, or the one graph in a directory)."""
    if path.is_file():
        return path
    preferred = path / "model.onnx"
    if preferred.is_file():
        return preferred
    graphs = sorted(path.glob("*.onnx"))
    if len(graphs) != 1:
        raise LlmstdError(f"expected one .onnx file in the directory, found {len(graphs)}", file=path)
    return graphs[0]


def _run_onnx(side: _Side, inputs: Inputs, hidden: bool) -> tuple[RunOutput, float]:
    ort = importlib.import_module("onnxruntime")
    notes: list[str] = [f"onnxruntime {ort.__version__}"]
    providers = ["CPUExecutionProvider"]
    if side.device.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            notes.append("onnxruntime has no CUDA provider installed; ran on CPU")
    started = time.perf_counter()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_file(side.path)), sess_options=options, providers=providers)
    loaded = time.perf_counter() - started
    available = {"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask,
                 "position_ids": np.broadcast_to(np.arange(inputs.input_ids.shape[1]), inputs.input_ids.shape)}
    if inputs.token_type_ids is not None:
        available["token_type_ids"] = inputs.token_type_ids
    elif side.ckpt.config.type_vocab_size > 0:
        available["token_type_ids"] = np.zeros_like(inputs.input_ids)
    feeds = {}
    for graph_input in session.get_inputs():
        if graph_input.name not in available:
            raise LlmstdError(f"the ONNX graph needs input '{graph_input.name}', which the checker cannot provide",
                              file=onnx_file(side.path), hint="export the graph without KV-cache inputs")
        np_type = np.int32 if graph_input.type == "tensor(int32)" else np.int64
        feeds[graph_input.name] = np.ascontiguousarray(available[graph_input.name], dtype=np_type)
    started = time.perf_counter()
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, feeds)))
    seconds = time.perf_counter() - started
    outputs = {}
    for name in tm.output_names(side.ckpt.config):
        if name not in values:
            raise LlmstdError(f"the ONNX graph has no output '{name}' (outputs: {', '.join(names)})",
                              file=onnx_file(side.path))
        outputs[name] = np.asarray(values[name], dtype=np.float32)
    states = None
    count = side.ckpt.config.num_layers + 1
    for pattern in ("hidden_states.{}", "hidden_states_{}"):
        if hidden and all(pattern.format(i) in values for i in range(count)):
            states = [np.asarray(values[pattern.format(i)], dtype=np.float32) for i in range(count)]
    dtype = side.ckpt.config.dtype
    return RunOutput(outputs, states, session.get_providers()[0], dtype, seconds, notes), loaded


# ------------------------------------------------------------------------------------------------
# metrics


def _sanitise(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


@dataclass
class OutputReport:
    """How one output of side B compares with side A on the non-padded positions."""

    name: str
    shape: list[int]
    positions: int
    max_abs: float
    max_rel: float
    nmse: float
    cosine: float
    top1: float | None = None
    top5: float | None = None
    kl_mean: float | None = None
    kl_max: float | None = None
    nonfinite_a: int = 0
    nonfinite_b: int = 0
    passed: bool = True
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("max_abs", "max_rel", "nmse", "cosine", "top1", "top5", "kl_mean", "kl_max"):
            out[key] = _sanitise(out[key])  # JSON has no inf/NaN; non-finite counts say why
        return out


@dataclass
class LayerReport:
    """Hidden state after one stage (embeddings, a layer) compared on the non-padded positions."""

    stage: str
    layer: int | None
    max_abs: float
    nmse: float
    cosine: float
    diverged: bool
    parameters: list[str]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("max_abs", "nmse", "cosine"):
            out[key] = _sanitise(out[key])
        return out


def _select(array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rows of the non-padded positions: [batch, seq, ...] -> [n, ...]; others unchanged."""
    if array.ndim >= 2 and array.shape[:2] == mask.shape:
        return array[mask.astype(bool)]
    return array


def _basic(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float, int, int]:
    a64, b64 = a.astype(np.float64).reshape(-1), b.astype(np.float64).reshape(-1)
    bad_a, bad_b = int((~np.isfinite(a64)).sum()), int((~np.isfinite(b64)).sum())
    with np.errstate(all="ignore"):
        diff = np.abs(a64 - b64)
        max_abs = float(diff.max()) if diff.size else 0.0
        if bad_a or bad_b:
            max_abs = math.inf if not math.isnan(max_abs) else math.nan
        scale = float(np.abs(a64).max()) if a64.size else 0.0
        floor = max(1e-3 * scale, np.finfo(np.float64).tiny)
        max_rel = float((diff / np.maximum(np.abs(a64), floor)).max()) if diff.size else 0.0
        ref = float((a64 * a64).sum())
        nmse = float((diff * diff).sum() / ref) if ref > 0 else (0.0 if not diff.any() else math.inf)
        norm = float(np.linalg.norm(a64) * np.linalg.norm(b64))
        cosine = float(a64 @ b64 / norm) if norm > 0 else (1.0 if not diff.any() else 0.0)
    return max_abs, max_rel, nmse, cosine, bad_a, bad_b


def _distribution(a: np.ndarray, b: np.ndarray, chunk: int = 64) -> tuple[float, float, float, float]:
    """(top-1 agreement, top-5 agreement, mean KL, max KL) of logits rows [n, vocab]."""
    n, vocab_size = a.shape
    k = min(5, vocab_size)
    top1 = top5 = kl_sum = 0.0
    kl_max = 0.0
    with np.errstate(all="ignore"):
        for start in range(0, n, chunk):  # chunks keep float64 copies of huge vocabularies small
            x = a[start:start + chunk].astype(np.float64)
            y = b[start:start + chunk].astype(np.float64)
            top1 += float((x.argmax(-1) == y.argmax(-1)).sum())
            tx = np.argpartition(-x, k - 1, axis=-1)[:, :k]
            ty = np.argpartition(-y, k - 1, axis=-1)[:, :k]
            top5 += sum(len(set(p) & set(q)) / k for p, q in zip(tx.tolist(), ty.tolist()))
            lx = x - _logsumexp(x)
            ly = y - _logsumexp(y)
            kl = (np.exp(lx) * (lx - ly)).sum(-1)
            kl_sum += float(kl.sum())
            kl_max = max(kl_max, float(kl.max())) if not math.isnan(float(kl.max())) else math.nan
    return top1 / n, top5 / n, kl_sum / n, kl_max


def _logsumexp(x: np.ndarray) -> np.ndarray:
    peak = x.max(-1, keepdims=True)
    return peak + np.log(np.exp(x - peak).sum(-1, keepdims=True))


def compare_output(name: str, a: np.ndarray, b: np.ndarray, mask: np.ndarray, tol: Tolerance) -> OutputReport:
    """Metrics and verdict for one output (A is the reference)."""
    if a.shape != b.shape:
        return OutputReport(name, list(a.shape), 0, math.inf, math.inf, math.inf, 0.0, passed=False,
                            failures=[f"{name}: shapes differ, A {list(a.shape)} vs B {list(b.shape)}"])
    sa, sb = _select(a, mask), _select(b, mask)
    max_abs, max_rel, nmse, cosine, bad_a, bad_b = _basic(sa, sb)
    report = OutputReport(name, list(a.shape), int(sa.shape[0]) if sa.ndim > 1 else 1, max_abs, max_rel, nmse, cosine,
                          nonfinite_a=bad_a, nonfinite_b=bad_b)
    is_logits = name == "logits"
    if is_logits:
        rows = sa.reshape(-1, sa.shape[-1]), sb.reshape(-1, sb.shape[-1])
        report.top1, report.top5, report.kl_mean, report.kl_max = _distribution(*rows)
    failures = report.failures
    if bad_a or bad_b:
        failures.append(f"{name}: non-finite values (inf/NaN): {bad_a} on side A, {bad_b} on side B")
    limit = tol.logits_max_abs if is_logits else tol.output_max_abs
    if limit is not None and not max_abs <= limit:
        failures.append(f"{name}: max abs error {max_abs:.3g} > {limit:.3g}")
    if tol.max_nmse is not None and not nmse <= tol.max_nmse:
        failures.append(f"{name}: NMSE {nmse:.3g} > {tol.max_nmse:.3g}")
    if is_logits and tol.min_top1 is not None and not (report.top1 or 0.0) >= tol.min_top1:
        failures.append(f"{name}: top-1 agreement {report.top1:.3f} < {tol.min_top1:.3f}")
    if is_logits and tol.max_kl is not None and not (report.kl_mean if report.kl_mean is not None else math.inf) <= tol.max_kl:
        failures.append(f"{name}: mean KL {report.kl_mean:.3g} > {tol.max_kl:.3g}")
    report.passed = not failures
    return report


# ------------------------------------------------------------------------------------------------
# localisation

_EMBEDDING = {tm.EMBED_TOKENS, tm.EMBED_POSITIONS, tm.EMBED_TOKEN_TYPES, *tm.EMBED_NORM}
_FINAL = set(tm.FINAL_NORM)


def stages(config: CanonicalConfig) -> list[tuple[str, int | None, list[str]]]:
    """(stage name, layer, canonical parameters feeding it) for each hidden state, then the head."""
    expected = list(vocab.expected_tensors(config))
    out: list[tuple[str, int | None, list[str]]] = [("embeddings", None, [n for n in expected if n in _EMBEDDING])]
    for layer in range(config.num_layers):
        params = [n for n in expected if vocab.layer_of(n) == layer]
        stage = f"layer {layer}"
        if layer == config.num_layers - 1 and config.final_norm:
            params += [n for n in expected if n in _FINAL]
            stage += " + final norm"
        out.append((stage, layer, params))
    head = [n for n in expected if vocab.layer_of(n) is None and n not in _EMBEDDING and n not in _FINAL]
    head += [target for target in vocab.tied_tensors(config).values() if target not in head]
    out.append(("head", None, head))
    return out


def _merge(*lists: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for names in lists:
        seen.update(dict.fromkeys(names))
    return list(seen)


def compare_hidden(a: list[np.ndarray], b: list[np.ndarray], mask: np.ndarray, tol: Tolerance,
                   config_a: CanonicalConfig, config_b: CanonicalConfig) -> list[LayerReport]:
    """One LayerReport per hidden state (embeddings, then each layer)."""
    stages_a, stages_b = stages(config_a), stages(config_b)
    reports = []
    for index, (ha, hb) in enumerate(zip(a, b)):
        name, layer, params = stages_a[index]
        params = _merge(params, stages_b[index][2]) if index < len(stages_b) else params
        if ha.shape != hb.shape:
            reports.append(LayerReport(name, layer, math.inf, math.inf, 0.0, True, params))
            continue
        max_abs, _, nmse, cosine, bad_a, bad_b = _basic(_select(ha, mask), _select(hb, mask))
        diverged = bool(bad_a or bad_b or not nmse <= tol.hidden_nmse)
        reports.append(LayerReport(name, layer, max_abs, nmse, cosine, diverged, params))
    return reports


# ------------------------------------------------------------------------------------------------
# the report


@dataclass
class SideReport:
    """Where and how one side ran."""

    path: str
    format: str
    container: str
    architecture: str
    runtime: str
    runtime_detail: str
    device: str
    dtype: str
    load_seconds: float
    run_seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CheckReport:
    """The verdict of ``check``: passed, per-output metrics, per-layer comparison, localisation."""

    a: SideReport
    b: SideReport
    inputs: dict[str, Any]
    dtype: str  # the dtype whose tolerances judged the comparison
    tolerance: Tolerance
    outputs: list[OutputReport]
    layers: list[LayerReport]
    localisation: str  # how layers were compared, or why they were not
    first_divergence: dict[str, Any] | None
    config_differences: dict[str, list[Any]]
    passed: bool
    failures: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "failures": self.failures, "a": self.a.to_dict(), "b": self.b.to_dict(),
            "inputs": self.inputs, "dtype": self.dtype, "tolerance": self.tolerance.to_dict(),
            "outputs": [o.to_dict() for o in self.outputs], "layers": [layer.to_dict() for layer in self.layers],
            "localisation": self.localisation, "first_divergence": self.first_divergence,
            "config_differences": self.config_differences,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)

    def summary(self) -> str:
        """One line: PASS, or FAIL with the first diverging stage and its parameters."""
        if self.passed:
            worst = max((o.max_abs for o in self.outputs), default=0.0)
            return f"PASS: {self.a.path} and {self.b.path} agree (max abs {worst:.3g}, judged as {self.dtype})"
        text = f"FAIL: {'; '.join(self.failures)}"
        if self.first_divergence:
            params = self.first_divergence.get("parameters") or []
            shown = ", ".join(params[:6]) + (f", … ({len(params)} in all)" if len(params) > 6 else "")
            text += f" — first divergence: {self.first_divergence['stage']}"
            text += f" (parameters: {shown})" if shown else ""
        return text


def _config_differences(a: CanonicalConfig, b: CanonicalConfig) -> dict[str, list[Any]]:
    da, db = a.to_dict(), b.to_dict()
    return {k: [da[k], db[k]] for k in da if k not in ("dtype", "extras") and da[k] != db[k]}


def _side_report(side: _Side, out: RunOutput, loaded: float) -> SideReport:
    detail = out.notes[0] if out.notes else side.runtime
    return SideReport(str(side.path), side.ckpt.format, side.ckpt.container, side.ckpt.architecture, side.runtime,
                      detail, out.device, out.dtype, round(loaded, 4), round(out.seconds, 4),
                      [*side.notes, *out.notes[1:]])


def _localise(layers: list[LayerReport], outputs_failed: bool, head: list[str]) -> dict[str, Any] | None:
    for layer in layers:
        if layer.diverged:
            return {"stage": layer.stage, "layer": layer.layer, "parameters": layer.parameters,
                    "nmse": _sanitise(layer.nmse), "max_abs": _sanitise(layer.max_abs)}
    if outputs_failed and layers:
        return {"stage": "head", "layer": None, "parameters": head}
    return None


def check(
    a: str | Path,
    b: str | Path,
    *,
    arch: str | None = None,
    input_ids: str | Path | Sequence[Sequence[int]] | Mapping[str, Any] | None = None,
    text: str | Sequence[str] | None = None,
    batch: int = DEFAULT_BATCH,
    seq_len: int = DEFAULT_SEQ_LEN,
    seed: int = 0,
    device: str = "cpu",
    device_a: str | None = None,
    device_b: str | None = None,
    runtime_a: str = "auto",
    runtime_b: str = "auto",
    tolerance: Tolerance | Mapping[str, float | None] | None = None,
    hidden_states: bool = True,
) -> CheckReport:
    """Run checkpoints ``a`` (the reference) and ``b`` on the same inputs and compare them.

    Returns a :class:`CheckReport`; ``report.passed`` is False when any output is out of
    tolerance. Raises :class:`~llmstd.errors.LlmstdError` subclasses when a side cannot be loaded
    or run (e.g. :class:`~llmstd.errors.MissingDependencyError` for an explicitly requested runtime).
    """
    if input_ids is not None and text is not None:
        raise LlmstdError("give token ids or text, not both")
    side_a = _open_side("a", a, arch, runtime_a, device_a or device)
    side_b = _open_side("b", b, arch, runtime_b, device_b or device)
    configs = [side_a.ckpt.config, side_b.ckpt.config]
    if input_ids is not None:
        inputs = inputs_from_ids(input_ids, configs)
    elif text is not None:
        inputs = inputs_from_text([text] if isinstance(text, str) else list(text), [side_a.path, side_b.path], configs)
    else:
        inputs = default_inputs(configs, batch=batch, seq_len=seq_len, seed=seed)

    run_a, load_a = _run(side_a, inputs, hidden_states)
    run_b, load_b = _run(side_b, inputs, hidden_states)
    dtype = judged_dtype(run_a.dtype, run_b.dtype)
    tol = tolerance_for(dtype, tolerance)
    mask = inputs.attention_mask

    outputs = [compare_output(name, run_a.outputs[name], run_b.outputs.get(name, np.zeros(0)), mask, tol)
               for name in run_a.outputs]
    failures = [f for o in outputs for f in o.failures]
    missing = [n for n in run_b.outputs if n not in run_a.outputs]
    failures += [f"side A produced no '{n}' output" for n in missing]
    head = _merge(stages(configs[0])[-1][2], stages(configs[1])[-1][2])

    layers: list[LayerReport] = []
    localisation = "hidden states not requested"
    states_a, states_b = run_a.hidden_states, run_b.hidden_states
    rerun_agrees: bool | None = None
    if hidden_states:
        if failures and (states_a is None or states_b is None):
            # A runtime without hidden states (an ONNX graph): localise with llmstd-torch over that
            # side's own weights, which also tells weight faults from runtime/graph faults.
            fallback = _fallback(side_a, side_b, run_a, run_b, inputs)
            if fallback is None:
                localisation = "not available: a runtime exposes no hidden states and torch is not installed"
            else:
                rerun_a, rerun_b, localisation = fallback
                states_a, states_b = rerun_a.hidden_states, rerun_b.hidden_states
                rerun_agrees = all(compare_output(n, rerun_a.outputs[n], rerun_b.outputs[n], mask, tol).passed
                                   for n in rerun_a.outputs if n in rerun_b.outputs)
        elif states_a is None or states_b is None:
            localisation = "not compared: a runtime exposes no hidden states (outputs agree, so none needed)"
        else:
            localisation = "hidden states of both runtimes compared"
        if states_a is not None and states_b is not None:
            if len(states_a) != len(states_b):
                localisation = f"not compared: {len(states_a)} hidden states on side A, {len(states_b)} on side B"
            else:
                layers = compare_hidden(states_a, states_b, mask, tol, *configs)
    first = _localise(layers, bool(failures) and rerun_agrees is not True, head)
    if first is None and failures and rerun_agrees:
        first = {"stage": "runtime", "layer": None, "parameters": [],
                 "detail": "run by llmstd-torch, the two sides' weights agree in every layer and output: "
                           "the difference lies in a runtime or graph, not in the weights"}
    return CheckReport(
        a=_side_report(side_a, run_a, load_a), b=_side_report(side_b, run_b, load_b), inputs=inputs.to_dict(),
        dtype=dtype, tolerance=tol, outputs=outputs, layers=layers, localisation=localisation,
        first_divergence=first, config_differences=_config_differences(*configs), passed=not failures,
        failures=failures,
    )


def _fallback(side_a: _Side, side_b: _Side, run_a: RunOutput, run_b: RunOutput,
              inputs: Inputs) -> tuple[RunOutput, RunOutput, str] | None:
    """Both sides with hidden states: a side whose runtime exposes none is re-run with llmstd-torch."""
    if _import("torch") is None:
        return None
    runs, rerun = [], []
    for side, run in ((side_a, run_a), (side_b, run_b)):
        if run.hidden_states is not None:
            runs.append(run)
            continue
        model = tm.TorchModel(side.ckpt.tensors, side.ckpt.config, device=side.device)
        runs.append(model(inputs.input_ids, inputs.attention_mask, inputs.token_type_ids))
        rerun.append(side.label.upper())
    return runs[0], runs[1], (f"weights of side {' and '.join(rerun)} re-run with llmstd-torch to compare hidden "
                              "states (its runtime exposes none)")
