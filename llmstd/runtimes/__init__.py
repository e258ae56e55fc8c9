"""Runtimes: llmstd's own implementations that *run* canonical checkpoints to produce logits.

Each takes canonical tensors plus a :class:`~llmstd.config.CanonicalConfig` (nothing else), so any
format llmstd reads can be run, and the equivalence checker can compare frameworks layer by layer.
Frameworks are imported only inside the runtime module that needs them.

- :mod:`llmstd.runtimes.tf_model`: TensorFlow, plain TF ops (no Keras layers, no transformers).
"""
