"""The ONNX writer's graph side: a complete, runnable ONNX graph built from a canonical config.

:func:`build_graph` traces the one model definition (:mod:`llmstd.model`) into an ONNX
``ModelProto`` whose nodes read the weights by their canonical names; the ``onnx`` format module adds
those weights as initializers (in the protobuf or as external data). Every architecture the model
definition runs gets a runnable graph, with no per-architecture code.

Built with ``onnx.helper`` only (no torch); ``onnx`` is imported when a graph is built.
"""

from __future__ import annotations

from llmstd.onnx_graph.build import OPSET, OWN_PREFIX, BuiltGraph, build_graph

__all__ = ["OPSET", "OWN_PREFIX", "BuiltGraph", "build_graph"]
