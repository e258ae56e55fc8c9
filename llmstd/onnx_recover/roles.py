"""What a parameter's consuming ONNX operator says about the parameter: the graph-analysis knowledge
of :mod:`llmstd.onnx_recover`, kept as data in this one module.

A parameter exported to ONNX ends up as an initializer read by one operator input; that input
determines the parameter's *role* (the ``role`` column of the canonical vocabulary, llmstd/vocab.py)
and its layout as the operator sees it. The module scope of the operator (from exporter metadata or
node names) then says *which* module's parameter of that role it is, and the naming map's ``hf``
dialect turns (module, role) into a parameter name. No parameter name is spelled here.

Operators between an initializer and its consumer that only move bytes (``PASS_THROUGH``) are
followed; a 2-D ``Transpose`` flips the layout (exporters fold ``x @ W.T`` into a transposed
constant, which the reader undoes).

onnxruntime-genai's model builder scopes most modules after a template of its own instead of the
source model's module paths; ``GENAI_SCOPES`` states that template in canonical handles.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmstd import vocab


@dataclass(frozen=True)
class OperandRole:
    role: str  # canonical vocabulary role: embedding | linear | bias | norm
    layout: str  # how the operator reads the tensor (see LAYOUTS)


#: How an operand's layout relates to the canonical layout of its role.
LAYOUTS = {
    "rows": "used as stored: a lookup table [rows, features] (Gather on axis 0)",
    "in_out": "a matrix multiplied from the right, [in, out]: canonical [out, in] is its transpose",
    "gemm_b": "Gemm's B: [in, out], or [out, in] when the node's transB attribute is 1",
    "vector": "a per-feature vector, broadcast over leading dimensions of size 1",
}

#: (operator, input index) -> the role of a parameter read there. Domain "" (ai.onnx) unless the
#: operator exists only in onnxruntime's com.microsoft domain (Optimum / onnxruntime-optimised graphs).
OPERAND_ROLES: dict[tuple[str, int], OperandRole] = {
    ("Gather", 0): OperandRole("embedding", "rows"),
    ("MatMul", 1): OperandRole("linear", "in_out"),
    ("Gemm", 1): OperandRole("linear", "gemm_b"),
    ("Gemm", 2): OperandRole("bias", "vector"),
    ("Add", 0): OperandRole("bias", "vector"),
    ("Add", 1): OperandRole("bias", "vector"),
    ("LayerNormalization", 1): OperandRole("norm", "vector"),
    ("LayerNormalization", 2): OperandRole("bias", "vector"),
    # RMSNorm decomposed by the exporter: x * rsqrt(mean(x^2) + eps) * weight.
    ("Mul", 0): OperandRole("norm", "vector"),
    ("Mul", 1): OperandRole("norm", "vector"),
    ("RMSNormalization", 1): OperandRole("norm", "vector"),  # opset 23
    # onnxruntime contrib ops produced by its transformer optimizer.
    ("SimplifiedLayerNormalization", 1): OperandRole("norm", "vector"),
    ("SkipLayerNormalization", 2): OperandRole("norm", "vector"),
    ("SkipLayerNormalization", 3): OperandRole("bias", "vector"),
    ("SkipSimplifiedLayerNormalization", 2): OperandRole("norm", "vector"),
}

#: Operator inputs that read a graph constant computed from the config, never a parameter: the
#: reason the reader reports for such an initializer.
CONSTANT_OPERANDS: dict[tuple[str, int], str] = {
    ("GroupQueryAttention", 7): "rotary cos table, computed from the rotary parameters in config.json",
    ("GroupQueryAttention", 8): "rotary sin table, computed from the rotary parameters in config.json",
    ("RotaryEmbedding", 2): "rotary cos table, computed from the rotary parameters in config.json",
    ("RotaryEmbedding", 3): "rotary sin table, computed from the rotary parameters in config.json",
}

#: Operators that read quantized weights (packed integers plus scales): the float parameters they
#: approximate cannot be recovered exactly, so a graph holding one is refused.
QUANTIZED = frozenset({"MatMulNBits", "GatherBlockQuantized", "DequantizeLinear", "MatMulInteger",
                       "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul", "QMoE"})

#: Operators that hand their input on unchanged in value (Transpose of a matrix flips the layout).
PASS_THROUGH = frozenset({"Identity", "Cast", "Transpose"})

#: Operators whose optional input at this index is a norm's bias; when absent, the bias is zero.
NORM_BIAS_INPUT = {"LayerNormalization": 2, "SkipLayerNormalization": 3}

#: Linear operators whose optional input at this index is the bias. When it is absent and no operator
#: reading the linear output reads a float constant besides (where a bias could be added or fused),
#: the layer computes ``x @ W.T`` without a bias: proof that the bias was zero.
LINEAR_BIAS_INPUT = {"Gemm": 2}

#: Where exporters record the module path of a node: the node metadata key written by
#: ``torch.onnx.export(dynamo=True)`` (a Python list of enclosing module paths, innermost last, then
#: the node's own name). The TorchScript exporter and Optimum encode the path in the node name
#: instead (``/model/layers.0/self_attn/q_proj/MatMul``).
SCOPES_METADATA_KEY = "pkg.torch.onnx.name_scopes"

# --------------------------------------------------------------------------------------------
# onnxruntime-genai's model builder (python -m onnxruntime_genai.models.builder)

#: ``ModelProto.producer_name`` of the graphs the builder writes.
GENAI_PRODUCER = "onnxruntime-genai"

#: Module scopes the builder names after a template of its own, whatever the source architecture
#: (onnxruntime_genai/models/builders/base.py names nodes ``/model/layers.{i}/attn/qkv_proj/MatMul``
#: and their initializers ``model.layers.{i}.attn.qkv_proj.MatMul.weight``), and the canonical
#: (weight, bias) handles an operand read there holds. A packed projection holds several, one after
#: the other along the rows of the canonical [out, in] matrix: the builder concatenates the q, k and
#: v weights before it transposes them. ``{n}``: the builder files the final norm under layer index
#: num_layers. Norms inside a layer are not listed: the builder names them after the Hugging Face
#: attribute it reads (``layer.input_layernorm`` -> ``input_layernorm``; Gemma-2's
#: ``post_attention_layernorm`` is not Llama's), so the hf dialect of the map names them, as it
#: names the modules of a torch export.
GENAI_SCOPES: dict[str, tuple[vocab.Pair, ...]] = {
    "model.embed_tokens": ((vocab.EMBED_TOKENS, ""),),
    "model.layers.{i}.attn.q_proj": (vocab.Q,),
    "model.layers.{i}.attn.k_proj": (vocab.K,),
    "model.layers.{i}.attn.v_proj": (vocab.V,),
    "model.layers.{i}.attn.qkv_proj": (vocab.Q, vocab.K, vocab.V),
    "model.layers.{i}.attn.o_proj": (vocab.O,),
    "model.layers.{i}.attn.q_norm": (vocab.Q_NORM,),
    "model.layers.{i}.attn.k_norm": (vocab.K_NORM,),
    "model.layers.{i}.mlp.gate_proj": (vocab.GATE,),
    "model.layers.{i}.mlp.up_proj": (vocab.UP,),
    "model.layers.{i}.mlp.down_proj": (vocab.DOWN,),
    "model.layers.{n}.final_norm_layernorm": (vocab.FINAL_NORM,),
    "lm_head": (vocab.LM_HEAD,),
}

#: Attention operators and the attribute saying their rotary embedding pairs interleaved features
#: (j, j+1) instead of the canonical rotate-half pairs (j, j + rotary_dim/2): q and k rows read
#: there are then not in the canonical order, and the builder graph is refused.
INTERLEAVED_ROTARY = {"GroupQueryAttention": "rotary_interleaved", "RotaryEmbedding": "interleaved"}
