"""Canonical config -> ONNX graph: the one model definition (:mod:`llmstd.model`) traced into nodes.

:func:`build_graph` runs the forward pass once with :class:`~llmstd.onnx_graph.ops.OnnxOps`, whose
primitives append nodes instead of computing, and wraps the result as a model. Decoders get the
generation interface of :mod:`llmstd.onnx_graph.cache` (``position_ids``, a key/value cache in and
out); encoders take ``input_ids``, ``attention_mask`` (+ ``token_type_ids``) and return
``last_hidden_state`` (+ ``pooler_output``, + ``logits`` for masked LMs). Batch and sequence axes are
dynamic. The graph reads every weight by its canonical name; the ``onnx`` format module adds the
weights as initializers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmstd import vocab
from llmstd.config import CanonicalConfig
from llmstd.dtypes import DType
from llmstd.errors import ConfigError
from llmstd.model import forward, plan
from llmstd.onnx_graph import cache
from llmstd.onnx_graph.ops import OWN_PREFIX, Graph, OnnxOps

OPSET = 17  # LayerNormalization is a standard op from 17 on
IR_VERSION = 8  # the IR version that introduced opset 17; readable by every runtime supporting it

__all__ = ["IR_VERSION", "OPSET", "OWN_PREFIX", "BuiltGraph", "build_graph"]


@dataclass
class BuiltGraph:
    """An ONNX model without weight initializers, plus the canonical weights its nodes read."""

    model: Any  # onnx.ModelProto
    weights: list[str]  # canonical names the graph reads (each must be added as an initializer)
    inputs: list[str]
    outputs: list[str]


def build_graph(config: CanonicalConfig, weight_dtypes: Mapping[str, DType], *, producer: str = "llmstd") -> BuiltGraph:
    """An ONNX model computing ``config``'s forward pass from canonical weights.

    ``weight_dtypes`` maps each canonical tensor the checkpoint stores to its dtype. Every stored
    tensor must be read by the graph; one that is not means the config describes math the graph does
    not implement, and is refused.
    """
    model_plan = plan(config)
    graph = Graph(weight_dtypes, vocab.expected_tensors(config))
    helper, tp = graph.helper, graph.onnx.TensorProto
    ops = OnnxOps(graph)
    # Decoders get the generation interface (llmstd.onnx_graph.cache); encoders read whole sequences.
    generating = model_plan.causal
    kv_dims = ["batch", config.num_kv_heads, "past_sequence", config.head_dim]
    token_dims = ["batch", "sequence"]
    inputs = [helper.make_tensor_value_info("input_ids", tp.INT64, token_dims)]
    if model_plan.embed_token_types:
        inputs.append(helper.make_tensor_value_info("token_type_ids", tp.INT64, token_dims))
    inputs.append(helper.make_tensor_value_info("attention_mask", tp.INT64,
                                                ["batch", "total_sequence" if generating else "sequence"]))
    past = None
    if generating:
        inputs.append(helper.make_tensor_value_info("position_ids", tp.INT64, token_dims))
        names = cache.past_names(config.num_layers)  # key, value of layer 0, then of layer 1, ...
        inputs += [helper.make_tensor_value_info(n, tp.FLOAT, kv_dims) for n in names]
        past = [(names[2 * i], names[2 * i + 1]) for i in range(config.num_layers)]
    result = forward(ops, model_plan, "input_ids", "attention_mask",
                     position_ids="position_ids" if generating else None,
                     token_type_ids="token_type_ids" if model_plan.embed_token_types else None, past=past)
    unused = [n for n in weight_dtypes if n not in graph.weights_used]
    if unused:
        raise ConfigError(f"the ONNX graph for this config does not use {', '.join(unused)}",
                          hint="the config and tensors disagree, or the writer lacks this feature")
    dims = {"logits": ["batch", "sequence", config.vocab_size],
            "last_hidden_state": ["batch", "sequence", config.hidden_size],
            "pooler_output": ["batch", config.hidden_size]}
    values = dict(result.outputs)
    if generating:
        present_dims = ["batch", config.num_kv_heads, "total_sequence", config.head_dim]
        for name, value in zip(cache.present_names(config.num_layers),
                               (v for pair in result.present for v in pair), strict=True):
            values[name], dims[name] = value, present_dims
    outputs = []
    for name, value in values.items():  # graph outputs must be named values: rename through Identity
        graph.nodes.append(helper.make_node("Identity", [value], [name], name=f"/output/{name}"))
        outputs.append(helper.make_tensor_value_info(name, tp.FLOAT, dims[name]))
    onnx_graph = helper.make_graph(graph.nodes, f"llmstd_{config.architecture}", inputs, outputs,
                                   initializer=graph.constants)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer,
                              ir_version=IR_VERSION)
    return BuiltGraph(model=model, weights=list(graph.weights_used), inputs=[i.name for i in inputs],
                      outputs=list(values))
