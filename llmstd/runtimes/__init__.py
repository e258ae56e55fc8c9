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
from llmstd.errors import MappingError, name_list
from llmstd.tensors import LazyTensor


def canonical_arrays(tensors: Mapping[str, LazyTensor | np.ndarray],
                     config: CanonicalConfig) -> Iterator[tuple[str, np.ndarray]]:
    """Yield every stored canonical tensor of ``config`` as a numpy array, in canonical order,
    after checking that exactly the expected tensors are present with the expected shapes.
    Tied tensors are not yielded: see :func:`llmstd.vocab.tied_tensors`."""
    expected = vocab.expected_tensors(config)
    missing = [n for n in expected if n not in tensors]
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise MappingError(f"tensors do not match the canonical config (missing {name_list(missing)}; "
                           f"unexpected {name_list(unexpected)})", names=missing + unexpected,
                           hint="validate the checkpoint with `llmstd validate`")
    for name, shape in expected.items():
        source = tensors[name]
        array = source.load() if isinstance(source, LazyTensor) else np.asarray(source)
        if tuple(array.shape) != shape:
            raise MappingError(f"shape {list(array.shape)} differs from {list(shape)} implied by the config",
                               tensor=name)
        yield name, array
