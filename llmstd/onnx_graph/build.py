"""Canonical config -> ONNX graph: the one model definition (:mod:`llmstd.model`) traced into nodes.

:func:`build_graph` runs the forward pass once with :class:`~llmstd.onnx_graph.ops.OnnxOps`, whose
primitives append nodes instead of computing, and wraps the result as a model: inputs
``input_ids`` and ``attention_mask`` (plus ``token_type_ids`` for models with token types), outputs
``logits`` or ``last_hidden_state`` (+ ``pooler_output``), batch and sequence dynamic. Positions
follow the model definition's convention (derived from the attention mask for causal models, so
left-padded batches get transformers' ``generate`` positions). The graph reads every weight by its
canonical name; the ``onnx`` format module adds the weights as initializers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmstd.config import CanonicalConfig
from llmstd.dtypes import DType
from llmstd.errors import ConfigError
from llmstd.model import forward, plan
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
    graph = Graph(weight_dtypes)
    ops = OnnxOps(graph)
    inputs = ["input_ids"] + (["token_type_ids"] if model_plan.embed_token_types else []) + ["attention_mask"]
    result = forward(ops, model_plan, "input_ids", "attention_mask",
                     token_type_ids="token_type_ids" if model_plan.embed_token_types else None)
    unused = [n for n in weight_dtypes if n not in graph.weights_used]
    if unused:
        raise ConfigError(f"the ONNX graph for this config does not use {', '.join(unused)}",
                          hint="the config and tensors disagree, or the writer lacks this feature")
    helper, tp = graph.helper, graph.onnx.TensorProto
    dims = {"logits": ["batch", "sequence", config.vocab_size],
            "last_hidden_state": ["batch", "sequence", config.hidden_size],
            "pooler_output": ["batch", config.hidden_size]}
    outputs = []
    for name, value in result.outputs.items():  # graph outputs must be named values: rename through Identity
        graph.nodes.append(helper.make_node("Identity", [value], [name], name=f"/output/{name}"))
        outputs.append(helper.make_tensor_value_info(name, tp.FLOAT, dims[name]))
    onnx_graph = helper.make_graph(
        graph.nodes, f"llmstd_{config.architecture}",
        [helper.make_tensor_value_info(n, tp.INT64, ["batch", "sequence"]) for n in inputs],
        outputs, initializer=graph.constants,
    )
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer,
                              ir_version=IR_VERSION)
    return BuiltGraph(model=model, weights=list(graph.weights_used), inputs=inputs, outputs=list(result.outputs))
