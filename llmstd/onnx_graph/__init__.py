"""The ONNX writer's graph side: a complete, runnable ONNX graph built from a canonical config.

:func:`build_graph` turns a :class:`~llmstd.config.CanonicalConfig` into an ONNX ``ModelProto``
whose nodes read the weights by their canonical names; the ``onnx`` format module adds those
weights as initializers (in the protobuf or as external data). The graph is derived from the
canonical config's fields (norm kind and position, activation, gating, positional encoding, head
counts, biases, tying), never from parameter names or per-architecture code, so every architecture
with a naming map that the canonical config can describe gets a runnable graph.

Built with ``onnx.helper`` only (no torch); ``onnx`` is imported when a graph is built.
"""

from __future__ import annotations

from llmstd.onnx_graph.build import (
    OPSET,
    BuiltGraph,
    build_graph,
    inv_freq,
)

__all__ = ["OPSET", "BuiltGraph", "build_graph", "inv_freq"]
