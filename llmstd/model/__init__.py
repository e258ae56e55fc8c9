"""The one model definition, shared by every runtime llmstd has.

llmstd runs canonical checkpoints three ways: eagerly in PyTorch (:mod:`llmstd.runtimes.torch_model`),
eagerly in TensorFlow (:mod:`llmstd.runtimes.tf_model`), and as an ONNX graph it writes
(:mod:`llmstd.onnx_graph`). All three execute the same definition:

- :mod:`llmstd.model.plan` turns a :class:`~llmstd.config.CanonicalConfig` into a :class:`ModelPlan`:
  for every layer, which norm (kind, epsilon, weight offset, placement), which attention (heads,
  scale, soft-cap, window, rotary frequencies, QK-norm), which MLP, and for the model the
  embeddings and head -- with the canonical tensor names each step reads. It also holds the one
  supported-feature check (:func:`check_supported`): a config whose math llmstd cannot run is
  refused there, by name, for every runtime at once.
- :mod:`llmstd.model.forward` is the forward pass, written once against :class:`Ops`.
- :mod:`llmstd.model.ops` defines :class:`Ops`, the small set of tensor primitives (a matrix
  product, a norm, a softmax, ...) each runtime implements in its own framework. A new math feature
  is one change to the plan and the forward pass, plus a primitive in each runtime only if it
  needs one; a new architecture that uses existing features is a naming map, no Python.

Position convention (all runtimes, see docs/SPEC.md): ``position_ids`` when given; otherwise for
causal models ``cumsum(attention_mask) - 1`` with padding positions set to 1 (what transformers'
``generate`` uses, so left-padded batches work), for bidirectional models ``0 .. S-1``.
"""

from __future__ import annotations

from llmstd.model.forward import Result, forward
from llmstd.model.ops import Ops
from llmstd.model.plan import AttentionPlan, LayerPlan, ModelPlan, NormPlan, RopePlan, check_supported, plan

__all__ = ["AttentionPlan", "LayerPlan", "ModelPlan", "NormPlan", "Ops", "Result", "RopePlan", "check_supported",
           "forward", "plan"]
