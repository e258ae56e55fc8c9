"""The key/value-cache interface of llmstd's decoder graphs, in the names generation runtimes use
(onnxruntime-genai, transformers.js, Optimum): inputs ``input_ids``, ``attention_mask`` (cached and
new positions), ``position_ids`` and ``past_key_values.{i}.key`` / ``.value``
``[batch, kv_heads, past_sequence, head_dim]``; outputs ``logits`` and ``present.{i}.key`` /
``.value`` holding the cached positions followed by the new ones. Keys and values keep the model's
kv-head count (grouped-query attention is never expanded on disk or in the cache).

An empty cache (``past_sequence`` 0) runs a prompt; later calls feed the new token(s) with the
previous call's ``present`` as ``past_key_values``. Kept free of onnx and onnxruntime imports: the
checker and tests drive sessions with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

PAST = "past_key_values.{}.{}"
PRESENT = "present.{}.{}"
KINDS = ("key", "value")


def past_names(num_layers: int) -> list[str]:
    return [PAST.format(i, kind) for i in range(num_layers) for kind in KINDS]


def present_names(num_layers: int) -> list[str]:
    return [PRESENT.format(i, kind) for i in range(num_layers) for kind in KINDS]


def empty_past(graph_inputs: Iterable[Any], batch: int) -> dict[str, np.ndarray]:
    """Zero-length caches for every ``past_key_values.*`` input of a session (onnxruntime NodeArgs,
    or anything with ``name`` and ``shape``): ``[batch, kv_heads, 0, head_dim]`` float32."""
    feeds = {}
    for arg in graph_inputs:
        if arg.name.startswith("past_key_values."):
            _, kv_heads, _, head_dim = arg.shape
            feeds[arg.name] = np.zeros((batch, int(kv_heads), 0, int(head_dim)), dtype=np.float32)
    return feeds


def next_past(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``past_key_values`` feeds of the next call, from this call's ``present`` outputs."""
    return {"past_key_values." + name.removeprefix("present."): value
            for name, value in outputs.items() if name.startswith("present.")}
