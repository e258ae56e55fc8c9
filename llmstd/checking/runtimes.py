"""Which runtime runs each side of ``llmstd check``, and the runners: transformers, llmstd-torch,
transformers' TF classes, llmstd-tf, onnxruntime and KerasHub, each returning a
:class:`~llmstd.runtimes.torch_model.RunOutput` (float32 outputs, hidden states when exposed).

Every framework is imported inside the runner that needs it.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import importlib.util
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmstd import maps
from llmstd.checking.inputs import Inputs
from llmstd.checkpoint import Checkpoint
from llmstd.config import CanonicalConfig
from llmstd.conversion import load
from llmstd.errors import LlmstdError, MissingDependencyError, require
from llmstd.runtime_names import RUNTIMES
from llmstd.runtimes import torch_model as tm
from llmstd.runtimes.torch_model import RunOutput

DEVICES = ("cpu", "cuda")


@dataclass
class Side:
    """One side of a check: its checkpoint (read lazily), the runtime chosen for it and why."""

    label: str
    path: Path
    ckpt: Checkpoint
    runtime: str
    device: str
    notes: list[str] = field(default_factory=list)
    #: bytes of memory the side may hold (``--max-memory``): llmstd-torch then streams one layer's
    #: weights at a time, transformers offloads through accelerate; None: load the whole model
    max_memory: int | None = None
    #: accelerate's placement of a transformers side over the devices there are (``--device-map``)
    device_map: str | None = None

    @property
    def reference(self) -> str | None:
        """The runtime that is this checkpoint's reference (None: only llmstd's own runs it)."""
        return reference_runtime(self.ckpt)

    @property
    def in_reference(self) -> bool:
        return self.reference is not None and self.runtime == self.reference

    def note(self, text: str) -> None:
        """Add a note to the report once: the side's model is loaded again for --decode-steps."""
        if text not in self.notes:
            self.notes.append(text)

    def reference_statement(self) -> str:
        """How this side ran, in words, for the verdict: in its reference runtime or not, and why."""
        if self.in_reference:
            return f"{self.runtime} (its reference runtime)"
        if self.reference is None:
            return f"{self.runtime} (llmstd's own runtime: {self.ckpt.format} checkpoints have no other)"
        why = "; ".join(n for n in self.notes if n.startswith(self.reference)) or "chosen explicitly"
        return f"{self.runtime}, NOT its reference runtime {self.reference} ({why})"


def reference_runtime(ckpt: Checkpoint) -> str | None:
    """The framework's own implementation for a checkpoint's format, the one a check is only as good
    as: transformers for Hugging Face directories, transformers' TF classes for their tf_model.h5,
    onnxruntime for ONNX graphs. Canonical and llmstd-TF-named checkpoints have none but llmstd's."""
    if ckpt.format == "hf":
        return "transformers"
    if ckpt.format == "tf-h5" and ckpt.dialect == "hf_tf":
        return "transformers-tf"
    if ckpt.format == "onnx":
        return "onnxruntime"
    if ckpt.format == "keras-hub":
        return "keras-hub"
    return None


def _import(name: str) -> Any | None:
    """Import an optional framework, or None when it is absent (or blocked)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


#: transformers release lines whose classes llmstd's checker drives (4.x: the last with TensorFlow).
TRANSFORMERS_MAJORS = (4, 5)


def _transformers() -> tuple[Any | None, str]:
    """transformers when it is a release line llmstd's checker supports, else (None, why not)."""
    module = _import("transformers")
    if module is None:
        return None, "transformers is not installed"
    major = int(str(getattr(module, "__version__", "0")).split(".")[0] or 0)
    if major not in TRANSFORMERS_MAJORS:
        return None, (f"transformers {module.__version__} is not a release line llmstd supports "
                      f"({', '.join(f'{m}.x' for m in TRANSFORMERS_MAJORS)})")
    return module, ""


def _transformers_lacks(cls: str | None, why_not: str) -> str:
    """'' when a supported transformers has class ``cls``; else why not (``why_not`` if it lacks it)."""
    module, why = _transformers()
    if module is None:
        return why
    return "" if cls and hasattr(module, cls) else why_not


def _hf_class(ckpt: Checkpoint) -> str | None:
    """The Hugging Face PyTorch class name for this checkpoint's architecture and head (from its map)."""
    try:
        heads = maps.load(ckpt.architecture).dialect("hf").heads
    except LlmstdError:
        return None
    head = heads.get(ckpt.config.head)
    return head.cls if head else None


def _hf_tf_class(ckpt: Checkpoint) -> str | None:
    """The Hugging Face TF class name, as the map's hf_tf dialect declares it (never guessed)."""
    try:
        nmap = maps.load(ckpt.architecture)
    except LlmstdError:
        return None
    head = nmap.dialects["hf_tf"].heads.get(ckpt.config.head) if "hf_tf" in nmap.dialects else None
    return head.cls if head else None


def installed(name: str) -> bool:
    """Whether ``name`` could be imported, without importing it (TensorFlow takes seconds)."""
    if name in sys.modules:
        return sys.modules[name] is not None  # None: import blocked on purpose (tests, sandboxes)
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _tf_available() -> bool:
    return installed("tensorflow")


def _llmstd_tf_available() -> bool:
    return installed("llmstd.runtimes.tf_model") and _tf_available()


def _use_keras_2() -> None:
    """Make TensorFlow's ``tf.keras`` Keras 2, which transformers' TF classes need -- only where
    tf-keras is installed: without it the switch breaks every later ``tf.keras`` use in the process
    (KerasHub's, through tensorflow-text) and transformers' TF classes could not run anyway."""
    if installed("tf_keras"):
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def _keras_2_forced() -> bool:
    return os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")


def _available(runtime: str, ckpt: Checkpoint) -> str:
    """'' when ``runtime`` can run ``ckpt`` here, else the reason it cannot."""
    if runtime == "llmstd-torch":
        return "" if _import("torch") is not None else "torch is not installed"
    if runtime == "transformers":
        if ckpt.format != "hf":
            return f"transformers runs Hugging Face PyTorch directories, not '{ckpt.format}'"
        if _import("torch") is None:
            return "torch is not installed"
        cls = _hf_class(ckpt)
        return _transformers_lacks(cls, f"transformers has no class {cls} for '{ckpt.architecture}'")
    if runtime == "transformers-tf":
        if ckpt.format != "tf-h5" or ckpt.dialect != "hf_tf":
            return (f"Hugging Face TF classes load tf-h5 directories in the hf_tf dialect, "
                    f"not {ckpt.format}/{ckpt.dialect}")
        if not _tf_available():
            return "tensorflow is not installed"
        _use_keras_2()
        return _transformers_lacks(_hf_tf_class(ckpt), f"transformers has no TF class for '{ckpt.architecture}'")
    if runtime == "llmstd-tf":
        if not _tf_available():
            return "tensorflow is not installed"
        return "" if _llmstd_tf_available() else "llmstd.runtimes.tf_model is not available"
    if runtime == "onnxruntime":
        if ckpt.format != "onnx":
            return f"onnxruntime runs ONNX graphs, not '{ckpt.format}'"
        return "" if installed("onnxruntime") else "onnxruntime is not installed"
    if runtime == "keras-hub":
        if ckpt.format != "keras-hub":
            return f"KerasHub runs KerasHub presets, not '{ckpt.format}'"
        if not installed("keras_hub"):
            return "keras-hub is not installed"
        backend = _keras_backend()
        if backend == "tensorflow" and _keras_2_forced():
            return ("TF_USE_LEGACY_KERAS is set, so TensorFlow runs Keras 2 and KerasHub needs Keras 3: unset it "
                    "(transformers' TF classes, which need it, run in another process)")
        return "" if installed(backend) else f"{backend} (the Keras backend, KERAS_BACKEND) is not installed"
    raise LlmstdError(f"unknown runtime {runtime!r}", hint=f"choose one of {', '.join(RUNTIMES)}")


_AUTO: dict[str, tuple[str, ...]] = {
    "hf": ("transformers",),
    "canonical": (),
    "tf-h5": ("transformers-tf", "llmstd-tf"),
    "tf-ckpt": ("llmstd-tf",),
    "onnx": ("onnxruntime",),
    "keras-hub": ("keras-hub",),
}


def _unfaithful(runtime: str, ckpt: Checkpoint) -> str:
    """'' unless ``runtime`` is known to compute this config differently from its reference model."""
    if runtime == "transformers-tf" and ckpt.config.sliding_window is not None:
        # transformers 4.x TFMistral* never apply sliding_window: beyond the window their logits
        # differ from MistralForCausalLM's (max abs ~5 on a tiny model at 128 tokens).
        return "transformers' TF classes ignore sliding_window"
    return ""


def choose_runtime(ckpt: Checkpoint, requested: str = "auto") -> tuple[str, list[str]]:
    """(runtime, notes) for a checkpoint: ``requested`` if it can run here, or auto's choice."""
    if requested != "auto":
        why = _available(requested, ckpt)
        if why:
            extra = {"llmstd-torch": "torch", "transformers": "transformers", "transformers-tf": "tf",
                     "llmstd-tf": "tf", "onnxruntime": "onnx", "keras-hub": "keras-hub"}.get(requested, "all")
            error = MissingDependencyError if "not installed" in why else LlmstdError
            raise error(f"runtime '{requested}' cannot run {ckpt.path}: {why}",
                        hint=f"install it (pip install 'llmstd[{extra}]') or choose --runtime auto")
        return requested, []
    notes = []
    for candidate in _AUTO.get(ckpt.format, ()):
        why = _available(candidate, ckpt) or _unfaithful(candidate, ckpt)
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


#: Runtimes that run within ``--max-memory``; the others load the whole model.
BOUNDED_RUNTIMES = ("llmstd-torch", "transformers")
#: What a transformers side keeps outside accelerate's budget: the interpreter, torch and the
#: activations of the check's batch.
RUNTIME_OVERHEAD = 1536 * 2**20


#: accelerate's placement strategies (``from_pretrained(device_map=...)``): "auto" and "balanced"
#: spread the layers evenly over every GPU, "balanced_low_0" leaves the first GPU room for the
#: activations, "sequential" fills GPUs in order.
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def open_side(label: str, path: str | Path, arch: str | None, runtime: str, device: str,
              max_memory: int | None = None, device_map: str | None = None) -> Side:
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise LlmstdError(f"unknown --device-map {device_map!r}", hint=f"choose one of {', '.join(DEVICE_MAPS)}")
    if runtime not in RUNTIMES:
        raise LlmstdError(f"unknown runtime {runtime!r}", hint=f"choose one of {', '.join(RUNTIMES)}")
    if device.split(":")[0] not in DEVICES:
        raise LlmstdError(f"unknown device {device!r}", hint="use cpu or cuda")
    ckpt = load(path, arch=arch)
    chosen, notes = choose_runtime(ckpt, runtime)
    if max_memory is not None and chosen not in BOUNDED_RUNTIMES:
        raise LlmstdError(f"--max-memory bounds {' and '.join(BOUNDED_RUNTIMES)}; side {label.upper()} ({path}) would "
                          f"run in {chosen}, which loads the whole model",
                          hint="compare against a Hugging Face or canonical checkpoint, or drop --max-memory")
    if device_map is not None and chosen != "transformers":
        notes.append(f"--device-map applies to transformers; {chosen} runs on {device}")
        device_map = None
    return Side(label, Path(path), ckpt, chosen, device, notes, max_memory, device_map)


def require_reference(sides: list[Side]) -> None:
    """Raise unless every side that has a reference runtime runs in it, and at least one side does:
    the ``--require-reference`` rule, checked before anything runs."""
    missing = [s for s in sides if s.reference is not None and not s.in_reference]
    if missing:
        raise LlmstdError(
            "; ".join(f"side {s.label.upper()} ({s.path}) would run in {s.reference_statement()}" for s in missing),
            hint="install the reference runtime (see the notes) or drop --require-reference")
    if not any(s.in_reference for s in sides):
        raise LlmstdError("neither side has a reference runtime: both would run in llmstd's own runtime",
                          hint="compare against the original checkpoint (e.g. the Hugging Face directory)")


def run(side: Side, inputs: Inputs, hidden: bool) -> tuple[RunOutput, float]:
    """Load the side in its runtime and run it once; returns (output, load seconds)."""
    runner = {"llmstd-torch": _run_llmstd_torch, "transformers": _run_transformers,
              "transformers-tf": _run_transformers_tf, "llmstd-tf": _run_llmstd_tf, "onnxruntime": _run_onnx,
              "keras-hub": _run_keras_hub}
    return runner[side.runtime](side, inputs, hidden)


def torch_model(side: Side) -> tm.TorchModel:
    """The side's canonical weights in llmstd-torch: streamed one layer at a time under --max-memory."""
    return tm.TorchModel(side.ckpt.tensors, side.ckpt.config, device=side.device, stream=side.max_memory is not None)


def _run_llmstd_torch(side: Side, inputs: Inputs, hidden: bool) -> tuple[RunOutput, float]:
    started = time.perf_counter()
    model = torch_model(side)
    loaded = time.perf_counter() - started
    out = model(inputs.input_ids, inputs.attention_mask, inputs.token_type_ids, output_hidden_states=hidden)
    out.notes.append("llmstd-torch")
    if isinstance(model.weights, tm.StreamedWeights):
        out.notes.append(f"weights streamed one layer at a time (at most {model.weights.peak_bytes / 2**20:.1f} MiB "
                         "held)")
    return out, loaded


def _feeds_torch(torch: Any, inputs: Inputs, config: CanonicalConfig, device: str) -> dict[str, Any]:
    feeds = {"input_ids": torch.as_tensor(inputs.input_ids, device=device),
             "attention_mask": torch.as_tensor(inputs.attention_mask, device=device)}
    if config.type_vocab_size > 0 and inputs.token_type_ids is not None:
        feeds["token_type_ids"] = torch.as_tensor(inputs.token_type_ids, device=device)
    return feeds


def load_transformers(side: Side) -> tuple[Any, Any, str, str]:
    """(model, transformers, class name, device): the side's Hugging Face directory in its
    transformers class, in eval mode on the side's device, with its stored dtype and eager attention
    (the fused kernels differ between devices and versions)."""
    transformers, _ = _transformers()
    assert transformers is not None
    device = tm.resolve_device(side.device)
    cls_name = _hf_class(side.ckpt)
    major_minor = tuple(int(p) for p in transformers.__version__.split(".")[:2])
    dtype_key = "dtype" if major_minor >= (4, 56) else "torch_dtype"
    options: dict[str, Any] = {"attn_implementation": "eager", dtype_key: "auto"}
    if side.max_memory is not None or side.device_map is not None:
        options.update(_placement_options(side, device))
    with _quiet_transformers(transformers):
        model = getattr(transformers, cls_name).from_pretrained(str(side.path), **options)
    if "device_map" not in options:
        model = model.to(device)
    else:
        # accelerate moves each module's inputs to its device; the report says where the modules
        # went (transformers records no map when they all went to one device)
        placed = getattr(model, "hf_device_map", None) or {"": str(next(model.parameters()).device)}
        counts = collections.Counter(str(d) for d in placed.values())
        side.note("accelerate placed the modules: " + ", ".join(f"{n} on {d}" for d, n in sorted(counts.items())))
    return model.eval(), transformers, cls_name, device


def _placement_options(side: Side, device: str) -> dict[str, Any]:
    """accelerate's big-model inference: ``--device-map`` spreads the layers over every GPU there is
    (``--device cuda``); ``--max-memory`` keeps within the side's budget, and what does not fit stays
    in the original safetensors files (disk offload reads them in place; nothing is copied) and is
    loaded module by module during the forward pass."""
    import atexit
    import shutil
    import tempfile

    if importlib.util.find_spec("accelerate") is None:
        raise MissingDependencyError("--max-memory and --device-map run transformers through accelerate, which is "
                                     "not installed", hint="pip install accelerate")
    strategy = side.device_map or "auto"
    if side.max_memory is None:
        return {"device_map": strategy if device.startswith("cuda") else "cpu"}
    budget = side.max_memory - RUNTIME_OVERHEAD
    if budget <= 0:
        raise LlmstdError(f"--max-memory {side.max_memory / 2**30:.2f} GiB leaves nothing for the weights after "
                          f"{RUNTIME_OVERHEAD / 2**30:.1f} GiB for the runtime itself", hint="give more memory")
    memory: dict[Any, int] = {"cpu": budget}
    if device.startswith("cuda"):
        torch = require("torch", "torch")
        memory.update({index: torch.cuda.get_device_properties(index).total_memory
                       for index in range(torch.cuda.device_count())})
    # Safetensors weights are read in place; the folder is for any that are not, and goes at exit.
    folder = tempfile.mkdtemp(prefix="llmstd-offload-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    side.note(f"transformers through accelerate: {budget / 2**20:.0f} MiB of weights in memory, the rest "
               "read from the checkpoint's files when used")
    return {"device_map": strategy, "max_memory": memory, "offload_folder": folder}


def _run_transformers(side: Side, inputs: Inputs, hidden: bool) -> tuple[RunOutput, float]:
    torch = require("torch", "torch")
    started = time.perf_counter()
    model, transformers, cls_name, device = load_transformers(side)
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    with torch.no_grad():
        out = model(**_feeds_torch(torch, inputs, side.ckpt.config, device), output_hidden_states=hidden)
    outputs = {n: getattr(out, n).detach().float().cpu().numpy() for n in tm.output_names(side.ckpt.config)}
    states = [h.detach().float().cpu().numpy() for h in out.hidden_states] if hidden and out.hidden_states else None
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return RunOutput(outputs, states, tm.device_description(device), dtype, time.perf_counter() - started,
                     [f"transformers {transformers.__version__} {cls_name}"]), loaded


def _run_transformers_tf(side: Side, inputs: Inputs, hidden: bool) -> tuple[RunOutput, float]:
    _use_keras_2()
    tf = importlib.import_module("tensorflow")
    transformers, _ = _transformers()
    assert transformers is not None
    cls_name = _hf_tf_class(side.ckpt)
    device, notes = _tf_device(tf, side.device)
    started = time.perf_counter()
    with tf.device(device), _quiet_transformers(transformers):
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


@contextlib.contextmanager
def _quiet_transformers(transformers: Any) -> Iterator[None]:
    """Silence transformers' load-time chatter (deprecations, 'all layers were used', 5.x's weight
    loading progress bar) in reports."""
    logging = transformers.logging
    previous = logging.get_verbosity()
    bars = getattr(logging, "is_progress_bar_enabled", lambda: False)()
    logging.set_verbosity_error()
    if bars:
        logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.set_verbosity(previous)
        if bars:
            logging.enable_progress_bar()


def _tf_device(tf: Any, requested: str) -> tuple[str, list[str]]:
    if requested.startswith("cuda"):
        if tf.config.list_physical_devices("GPU"):
            return "/GPU:0", []
        return "/CPU:0", ["tensorflow sees no GPU; ran on CPU"]
    return "/CPU:0", []


def _run_llmstd_tf(side: Side, inputs: Inputs, hidden: bool) -> tuple[RunOutput, float]:
    tf = importlib.import_module("tensorflow")
    module = importlib.import_module("llmstd.runtimes.tf_model")
    device, notes = _tf_device(tf, side.device)
    started = time.perf_counter()
    with tf.device(device):
        model = module.TFModel(side.ckpt.tensors, side.ckpt.config)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        result = model(inputs.input_ids, inputs.attention_mask, inputs.token_type_ids)
    seconds = time.perf_counter() - started
    # TFOutput: logits | last_hidden_state | pooled, plus hidden_states (Hugging Face's convention).
    by_name = {"logits": result.logits, "last_hidden_state": result.last_hidden_state,
               "pooler_output": getattr(result, "pooled", None)}
    outputs = {}
    for name in tm.output_names(side.ckpt.config):
        if by_name.get(name) is None:
            raise LlmstdError(f"llmstd's TF runtime returned no '{name}' output for {side.path}")
        outputs[name] = np.asarray(by_name[name], dtype=np.float32)
    states = [np.asarray(h, dtype=np.float32) for h in result.hidden_states] if hidden else None
    # It computes in float32 whatever the stored dtype (it widens half-precision weights once).
    detail = ["llmstd-tf (llmstd.runtimes.tf_model)", *notes]
    return RunOutput(outputs, states, device, "float32", seconds, detail), loaded


def onnx_file(path: Path) -> Path:
    """The .onnx graph of an ONNX checkpoint, as the onnx format locates it."""
    from llmstd.formats.onnx import model_file

    found = model_file(path)
    if found is None:
        raise LlmstdError("no single .onnx graph found", file=path)
    return found


def onnx_session(side: Side) -> tuple[Any, Path, list[str]]:
    """(session, graph file, notes): an onnxruntime session of the side's graph, on its CUDA
    provider when the side's device is cuda and the provider is installed."""
    ort = importlib.import_module("onnxruntime")
    notes: list[str] = [f"onnxruntime {ort.__version__}"]
    providers = ["CPUExecutionProvider"]
    if side.device.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            notes.append("onnxruntime has no CUDA provider installed; ran on CPU")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    graph = onnx_file(side.path)
    return ort.InferenceSession(str(graph), sess_options=options, providers=providers), graph, notes


def _run_onnx(side: Side, inputs: Inputs, hidden: bool) -> tuple[RunOutput, float]:
    from llmstd.onnx_graph.cache import empty_past

    started = time.perf_counter()
    session, graph, notes = onnx_session(side)
    loaded = time.perf_counter() - started
    available = {"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask,
                 "position_ids": np.broadcast_to(np.arange(inputs.input_ids.shape[1]), inputs.input_ids.shape)}
    # A decoder graph with a key/value cache runs the whole input as a prompt: empty caches.
    available.update(empty_past(session.get_inputs(), inputs.input_ids.shape[0]))
    if inputs.token_type_ids is not None:
        available["token_type_ids"] = inputs.token_type_ids
    elif side.ckpt.config.type_vocab_size > 0:
        available["token_type_ids"] = np.zeros_like(inputs.input_ids)
    feeds = {}
    for graph_input in session.get_inputs():
        if graph_input.name not in available:
            raise LlmstdError(f"the ONNX graph needs input '{graph_input.name}', which the checker cannot provide",
                              file=graph, hint="export the graph without KV-cache inputs")
        np_type = {"tensor(int32)": np.int32, "tensor(float)": np.float32}.get(graph_input.type, np.int64)
        feeds[graph_input.name] = np.ascontiguousarray(available[graph_input.name], dtype=np_type)
    started = time.perf_counter()
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, feeds)))
    seconds = time.perf_counter() - started
    outputs = {}
    for name in tm.output_names(side.ckpt.config):
        if name not in values:
            raise LlmstdError(f"the ONNX graph has no output '{name}' (outputs: {', '.join(names)})",
                              file=graph)
        outputs[name] = np.asarray(values[name], dtype=np.float32)
    states = None
    count = side.ckpt.config.num_layers + 1
    for pattern in ("hidden_states.{}", "hidden_states_{}"):
        if hidden and all(pattern.format(i) in values for i in range(count)):
            states = [np.asarray(values[pattern.format(i)], dtype=np.float32) for i in range(count)]
    dtype = side.ckpt.config.dtype
    return RunOutput(outputs, states, session.get_providers()[0], dtype, seconds, notes), loaded


def _keras_backend() -> str:
    """The Keras 3 backend KerasHub will run on: KERAS_BACKEND, TensorFlow unless told otherwise
    (Keras' own default), the one llmstd's tests use."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def _run_keras_hub(side: Side, inputs: Inputs, hidden: bool) -> tuple[RunOutput, float]:
    """The preset through ``keras_hub.models.<task>.from_preset`` (no preprocessor: token ids in).
    KerasHub exposes no per-layer hidden states, so a failing check localises with llmstd-torch."""
    from llmstd.formats.keras_hub import spec_of, task_class

    os.environ["KERAS_BACKEND"] = _keras_backend()  # before Keras is imported, which reads it once
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras_hub = importlib.import_module("keras_hub")
    keras = importlib.import_module("keras")
    spec = spec_of(maps.load(side.ckpt.architecture))
    cls_name = task_class(side.path) or spec.backbone
    device = "cpu"
    started = time.perf_counter()
    model = getattr(keras_hub.models, cls_name).from_preset(str(side.path), **(
        {"preprocessor": None} if cls_name != spec.backbone else {}))
    loaded = time.perf_counter() - started
    feeds: dict[str, Any] = {"token_ids": inputs.input_ids.astype(np.int32),
                             "padding_mask": inputs.attention_mask.astype(bool)}
    if side.ckpt.config.type_vocab_size > 0:
        types = inputs.token_type_ids if inputs.token_type_ids is not None else np.zeros_like(inputs.input_ids)
        feeds["segment_ids"] = types.astype(np.int32)
    if side.ckpt.config.head == "masked_lm":
        # The masked-LM task scores the positions it is given: all of them, as a full forward does.
        feeds["mask_positions"] = np.broadcast_to(np.arange(inputs.input_ids.shape[1], dtype=np.int32),
                                                  inputs.input_ids.shape).copy()
    started = time.perf_counter()
    result = model(feeds, training=False)
    seconds = time.perf_counter() - started
    if isinstance(result, dict):  # a backbone: sequence_output (and pooled_output)
        by_name = {"last_hidden_state": result.get("sequence_output"), "pooler_output": result.get("pooled_output")}
    else:
        by_name = {"logits": result, "last_hidden_state": result}
    outputs = {}
    for name in tm.output_names(side.ckpt.config):
        if by_name.get(name) is None:
            raise LlmstdError(f"KerasHub's {cls_name} returned no '{name}' output for {side.path}")
        outputs[name] = np.asarray(keras.ops.convert_to_numpy(by_name[name]), dtype=np.float32)
    policy = getattr(getattr(model, "dtype_policy", None), "name", side.ckpt.config.dtype)
    notes = [f"keras-hub {keras_hub.__version__} {cls_name}, Keras {keras.__version__} backend {keras.backend.backend()}"]
    return RunOutput(outputs, None, device, str(policy), seconds, notes), loaded

