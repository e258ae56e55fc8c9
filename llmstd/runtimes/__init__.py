"""Runtimes llmstd implements itself: code that runs a canonical checkpoint to produce logits.

Each module implements every canonical architecture from canonical tensors plus a
:class:`~llmstd.config.CanonicalConfig` in one framework (``torch_model`` for PyTorch, ``tf_model``
for TensorFlow). The equivalence checker (``llmstd.check``) uses them when no third-party runtime
can run a side, e.g. a canonical checkpoint, or transformers is absent. Frameworks are imported
lazily by each module, so importing this package costs nothing.
"""
