"""Runtimes: llmstd's own implementations that *run* canonical checkpoints to produce logits.

Each takes canonical tensors plus a :class:`~llmstd.config.CanonicalConfig` (nothing else), so any
format llmstd reads can be run, and the equivalence checker can compare frameworks layer by layer.
Frameworks are imported only inside the runtime module that needs them.

- :mod:`llmstd.runtimes.torch_model`: PyTorch, config-driven (works without transformers).
- :mod:`llmstd.runtimes.tf_model`: TensorFlow, plain TF ops (no Keras layers, no transformers).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from llmstd import vocab
from llmstd.config import CanonicalConfig
from llmstd.mapping import require_canonical_set
from llmstd.tensors import LazyTensor


def canonical_arrays(tensors: Mapping[str, LazyTensor | np.ndarray],
                     config: CanonicalConfig) -> Iterator[tuple[str, np.ndarray]]:
    """Yield every stored canonical tensor of ``config`` as a numpy array, in canonical order,
    after checking that exactly the expected tensors are present with the expected shapes.
    Tied tensors are not yielded: see :func:`llmstd.vocab.tied_tensors`."""
    require_canonical_set(tensors, config, hint="validate the checkpoint with `llmstd validate`")
    for name in vocab.expected_tensors(config):
        source = tensors[name]
        yield name, source.load() if isinstance(source, LazyTensor) else np.asarray(source)
