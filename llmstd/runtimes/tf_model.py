"""llmstd's own TensorFlow runtime: every canonical architecture, run eagerly from canonical tensors.

It executes the one model definition (:mod:`llmstd.model`) with plain TF primitives
(:mod:`llmstd.runtimes.tf_ops`; no Keras layers, no transformers), so that a checkpoint llmstd wrote
for TensorFlow can be run where transformers has no TF class (llama, qwen2, and every architecture
added since) and the equivalence checker can compare frameworks layer by layer.

    model = TFModel.from_checkpoint(llmstd.load("out/tf-ckpt"))
    out = model(input_ids, attention_mask)       # numpy or tf inputs, shape [batch, seq]
    out.logits, out.hidden_states                 # numpy arrays

Computation is float32 whatever the stored dtype (bfloat16 weights are widened once, exactly).
``hidden_states`` follows transformers: entry 0 is the embedding output and entry ``i`` the output of
layer ``i``; like transformers, the last entry has the final norm applied when the model has one.

Everything the math depends on comes from the canonical config (``causal`` selects decoder or
encoder attention).
TensorFlow is imported when a model is built, never when this module is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmstd import vocab
from llmstd.config import CanonicalConfig
from llmstd.errors import ConfigError, require
from llmstd.model import forward, plan
from llmstd.runtimes import canonical_arrays
from llmstd.runtimes.tf_ops import TFOps
from llmstd.tensors import LazyTensor


@dataclass
class TFOutput:
    logits: np.ndarray | None  # [batch, seq, vocab] for causal_lm / masked_lm heads
    last_hidden_state: np.ndarray  # [batch, seq, hidden], after the final norm if any
    hidden_states: list[np.ndarray]  # num_layers + 1 entries, see the module docstring
    pooled: np.ndarray | None = None  # [batch, hidden] when the model has a pooler


class TFModel:
    """A canonical model held as TF constants; call it on token ids."""

    def __init__(self, tensors: Mapping[str, LazyTensor | np.ndarray], config: CanonicalConfig) -> None:
        tf: Any = require("tensorflow", "tf")
        self.tf = tf
        self.config = config
        self.plan = plan(config)  # refuses, by name, what the model definition cannot run
        self.w: dict[str, Any] = {
            name: tf.constant(np.asarray(array, dtype=np.float32)) for name, array in canonical_arrays(tensors, config)
        }
        for tied, source in vocab.tied_tensors(config).items():
            self.w[tied] = self.w[source]
        self.ops = TFOps(tf, self.w)

    @classmethod
    def from_checkpoint(cls, ckpt: Any) -> TFModel:
        """From a :class:`llmstd.checkpoint.Checkpoint` (e.g. ``llmstd.load(path)``)."""
        return cls(ckpt.tensors, ckpt.config)

    @classmethod
    def load(cls, path: str | Path, arch: str | None = None) -> TFModel:
        """Any checkpoint llmstd reads (tf-ckpt, tf-h5, hf, canonical, ...)."""
        from llmstd.conversion import load

        return cls.from_checkpoint(load(path, arch=arch))

    # -- the model -----------------------------------------------------------------------------

    def __call__(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None,
                 position_ids: Any = None) -> TFOutput:
        tf, c = self.tf, self.config
        ids = tf.convert_to_tensor(np.asarray(input_ids), tf.int64)
        seq = int(ids.shape[1])
        if c.positional == "learned" and seq > c.max_positions:
            raise ConfigError(f"sequence of {seq} tokens exceeds max_positions ({c.max_positions})")
        mask = tf.ones_like(ids) if attention_mask is None else tf.convert_to_tensor(np.asarray(attention_mask),
                                                                                       tf.int64)
        types = None
        if self.plan.embed_token_types is not None:
            types = tf.zeros_like(ids) if token_type_ids is None else tf.convert_to_tensor(
                np.asarray(token_type_ids), tf.int64)
        positions = None if position_ids is None else tf.convert_to_tensor(np.asarray(position_ids), tf.int64)
        result = forward(self.ops, self.plan, ids, mask, position_ids=positions, token_type_ids=types)
        hidden = result.hidden_states
        return TFOutput(
            logits=result.outputs["logits"].numpy() if "logits" in result.outputs else None,
            last_hidden_state=hidden[-1].numpy(),
            hidden_states=[h.numpy() for h in hidden],
            pooled=result.outputs["pooler_output"].numpy() if "pooler_output" in result.outputs else None,
        )


    def decode(self, input_ids: Any, attention_mask: Any, position_ids: Any,
               past: list[tuple[Any, Any]] | None) -> tuple[np.ndarray, list[tuple[Any, Any]]]:
        """One step of cached generation: the last position's logits [batch, vocab] and the
        key/value cache to pass to the next step (``past`` None: the prompt, with no cache)."""
        tf = self.tf
        as_long = lambda a: tf.convert_to_tensor(np.asarray(a, dtype=np.int64))  # noqa: E731
        result = forward(self.ops, self.plan, as_long(input_ids), as_long(attention_mask),
                         position_ids=as_long(position_ids), past=past)
        return result.outputs["logits"][:, -1].numpy(), result.present


def run(tensors: Mapping[str, LazyTensor | np.ndarray], config: CanonicalConfig, input_ids: Any,
        attention_mask: Any = None, token_type_ids: Any = None) -> TFOutput:
    """Build a :class:`TFModel` and run it once."""
    return TFModel(tensors, config)(input_ids, attention_mask, token_type_ids)
