"""llmstd's own PyTorch runtime: every canonical architecture, run eagerly from its canonical tensors.

It executes the one model definition (:mod:`llmstd.model`: the plan of a config and the forward pass
written once) with PyTorch primitives (:mod:`llmstd.runtimes.torch_ops`) that follow transformers'
eager arithmetic, so that in float32 it reproduces transformers' logits and every layer's hidden
state (``tests/test_torch_runtime.py`` and the architecture tests hold it to that).

Why it exists: ``llmstd check`` must run a checkpoint without transformers (absent, or a release
line it does not support), a canonical checkpoint has no third-party runtime at all, and the checker
re-runs the weights of a side whose runtime exposes no hidden states (ONNX) to localise a fault.

Conventions shared with the checker:

- ``outputs``: ``logits`` for ``causal_lm``/``masked_lm`` heads; ``last_hidden_state`` (and
  ``pooler_output`` when the config has a pooler) for ``base`` models — the names transformers and
  llmstd's ONNX graphs use.
- ``hidden_states``: ``num_layers + 1`` arrays, Hugging Face's convention (see
  :class:`llmstd.model.Result`).
- Positions follow the model definition's convention (``position_ids`` when given, else derived
  from the attention mask; see :mod:`llmstd.model`).

torch is imported on first use, never at module import.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from llmstd import dtypes, vocab
from llmstd.config import CanonicalConfig
from llmstd.errors import LlmstdError, require
from llmstd.model import forward, plan
from llmstd.runtimes import canonical_arrays, require_canonical_set
from llmstd.runtimes.torch_ops import TorchOps
from llmstd.tensors import LazyTensor

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: dtypes the runtime computes in; float8 and integer checkpoints are computed in float32.
COMPUTE_DTYPES = ("float32", "float16", "bfloat16", "float64")

def output_names(config: CanonicalConfig) -> list[str]:
    """The outputs a model with this config produces (see the module docstring)."""
    return plan(config).outputs


# ------------------------------------------------------------------------------------------------
# results


@dataclass
class RunOutput:
    """What one forward pass produced, as float32 numpy arrays on the host."""

    outputs: dict[str, np.ndarray]
    hidden_states: list[np.ndarray] | None
    device: str
    dtype: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _torch() -> Any:
    return require("torch", "torch")


def device_description(device: str) -> str:
    """'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)': where a torch computation runs, for reports."""
    torch = _torch()
    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(dev)


def resolve_device(device: str) -> str:
    """Validate a --device value against what torch can see."""
    torch = _torch()
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LlmstdError("--device cuda was requested, but torch sees no CUDA device",
                              hint="run on a machine with a GPU and a CUDA build of torch, or use --device cpu")
    elif device != "cpu":
        raise LlmstdError(f"unknown device {device!r}", hint="use cpu or cuda (cuda:N for a specific GPU)")
    return device


def to_torch(array: np.ndarray) -> torch.Tensor:
    """A numpy array (including ml_dtypes bfloat16/float8) as a torch tensor with the same dtype and bytes."""
    torch = _torch()
    array = np.ascontiguousarray(array)
    name = dtypes.from_numpy(array.dtype).name
    # torch.from_numpy does not know ml_dtypes; move the raw bits and reinterpret them.
    if name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    if name.startswith("float8"):
        return torch.from_numpy(array.view(np.uint8).copy()).view(getattr(torch, name))
    return torch.from_numpy(array.copy())  # a copy: memory maps are read-only, torch wants writable


def _host(t: torch.Tensor) -> np.ndarray:
    torch = _torch()
    return t.detach().to(device="cpu", dtype=torch.float32).numpy()


# ------------------------------------------------------------------------------------------------
# the model


class TorchModel:
    """A canonical checkpoint loaded into torch on one device, ready to run.

    ``tensors`` maps canonical names to lazy tensors or numpy arrays (a Checkpoint works); tied
    tensors are looked up through ``vocab.tied_tensors``. ``dtype`` is the compute dtype (default:
    the config's dtype when it is float32/float16/bfloat16, else float32). ``stream``: hold one
    layer's weights at a time (:class:`StreamedWeights`), for models larger than memory.
    """

    def __init__(self, tensors: Mapping[str, LazyTensor | np.ndarray], config: CanonicalConfig, *,
                 device: str = "cpu", dtype: str | None = None, stream: bool = False) -> None:
        torch = _torch()
        self.plan = plan(config)  # refuses, by name, what the model definition cannot run
        self.config = config
        self.device = resolve_device(device)
        self.dtype = dtype or (config.dtype if config.dtype in COMPUTE_DTYPES else "float32")
        if self.dtype not in COMPUTE_DTYPES:
            raise LlmstdError(f"cannot compute in {self.dtype!r}", hint=f"choose one of {', '.join(COMPUTE_DTYPES)}")
        self._tdtype = getattr(torch, self.dtype)
        self.weights: Mapping[str, torch.Tensor]
        if stream:
            self.weights = StreamedWeights(tensors, config, self._to_device)
        else:
            weights = {name: self._to_device(array) for name, array in canonical_arrays(tensors, config)}
            for tied, target in vocab.tied_tensors(config).items():
                weights[tied] = weights[target]
            self.weights = weights
        self.ops = TorchOps(torch, self.weights, self._tdtype, self.device, config.max_positions)

    def _to_device(self, array: np.ndarray) -> Any:
        return to_torch(array).to(device=self.device, dtype=self._tdtype)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                 token_type_ids: np.ndarray | None = None, *, position_ids: np.ndarray | None = None,
                 output_hidden_states: bool = True) -> RunOutput:
        torch = _torch()
        started = time.perf_counter()
        c = self.config
        ids = torch.as_tensor(np.asarray(input_ids, dtype=np.int64), device=self.device)
        if ids.ndim != 2:
            raise LlmstdError(f"input_ids must be [batch, seq], got shape {list(ids.shape)}")
        batch, seq = ids.shape
        if int(ids.min()) < 0 or int(ids.max()) >= c.vocab_size:
            raise LlmstdError(f"token ids must lie in [0, {c.vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")
        if c.positional == "learned" and seq > c.max_positions:
            raise LlmstdError(f"{seq} tokens exceed the {c.max_positions} learned positions of this model")
        mask_np = np.ones((batch, seq), dtype=np.int64) if attention_mask is None else np.asarray(attention_mask)
        mask = torch.as_tensor(mask_np.astype(np.int64), device=self.device)
        types = None
        if self.plan.embed_token_types is not None:
            types = (torch.zeros_like(ids) if token_type_ids is None
                     else torch.as_tensor(np.asarray(token_type_ids, dtype=np.int64), device=self.device))
        positions = (None if position_ids is None
                     else torch.as_tensor(np.asarray(position_ids, dtype=np.int64), device=self.device))
        with torch.no_grad():
            result = forward(self.ops, self.plan, ids, mask, position_ids=positions, token_type_ids=types)
            outputs = {name: _host(result.outputs[name]) for name in self.plan.outputs}  # the reference's set
            states = [_host(h) for h in result.hidden_states] if output_hidden_states else None
        return RunOutput(outputs, states, device_description(self.device), self.dtype,
                         seconds=time.perf_counter() - started)


    def decode(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
               past: list[tuple[Any, Any]] | None) -> tuple[np.ndarray, list[tuple[Any, Any]]]:
        """One step of cached generation: the last position's logits [batch, vocab] (float32) and
        the key/value cache to pass to the next step (``past`` None: the prompt, with no cache)."""
        torch = _torch()
        as_long = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64), device=self.device)  # noqa: E731
        with torch.no_grad():
            result = forward(self.ops, self.plan, as_long(input_ids), as_long(attention_mask),
                             position_ids=as_long(position_ids), past=past)
        return _host(result.outputs["logits"][:, -1]), result.present


class StreamedWeights(Mapping[str, Any]):
    """Canonical weights loaded when the forward pass first asks for them, and dropped when it moves
    on to another layer: resident are the current layer's weights and the model-wide ones
    (embeddings, final norm, head), never the whole model. The forward pass visits layers in order,
    so each layer is read from the checkpoint once per pass. ``peak_bytes`` is the most weight bytes
    held at once (for tests and reports)."""

    def __init__(self, tensors: Mapping[str, LazyTensor | np.ndarray], config: CanonicalConfig,
                 convert: Callable[[np.ndarray], Any]) -> None:
        require_canonical_set(tensors, config, hint="validate the checkpoint with `llmstd validate`")
        self._sources = {name: tensors[name] for name in vocab.expected_tensors(config)}
        self._tied = dict(vocab.tied_tensors(config))
        self._convert = convert
        self._held: dict[str, Any] = {}
        self._layer: int | None = None
        self.peak_bytes = 0

    def __getitem__(self, name: str) -> Any:
        name = self._tied.get(name, name)
        if name not in self._held:
            source = self._sources[name]  # KeyError for a name the model does not have, as a dict would
            layer = vocab.layer_of(name)
            if layer is not None and layer != self._layer:
                for held in [n for n in self._held if vocab.layer_of(n) is not None]:
                    del self._held[held]
                self._layer = layer
            array = source.load() if isinstance(source, LazyTensor) else np.asarray(source)
            self._held[name] = self._convert(array)
            del array
            self.peak_bytes = max(self.peak_bytes, sum(t.numel() * t.element_size() for t in self._held.values()))
        return self._held[name]

    def __iter__(self) -> Iterator[str]:
        return iter([*self._sources, *self._tied])

    def __len__(self) -> int:
        return len(self._sources) + len(self._tied)


def run(tensors: Mapping[str, LazyTensor | np.ndarray], config: CanonicalConfig, input_ids: np.ndarray,
        attention_mask: np.ndarray | None = None, token_type_ids: np.ndarray | None = None, *,
        device: str = "cpu", dtype: str | None = None, output_hidden_states: bool = True) -> RunOutput:
    """Load canonical tensors into torch and run one forward pass (see :class:`TorchModel`)."""
    started = time.perf_counter()
    model = TorchModel(tensors, config, device=device, dtype=dtype)
    out = model(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states)
    out.seconds = time.perf_counter() - started
    return out
