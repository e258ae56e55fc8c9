"""numpy, imported the first time one of its attributes is used.

Importing numpy costs ~0.08 s, a third of a conversion's start-up, and a conversion between
safetensors formats whose tensors are plain byte ranges never touches an array: headers are JSON,
sizes come from the dtype table, bytes move file to file. The modules on that path (tensors,
dtypes, transforms, the container readers) take ``np`` from here instead of importing numpy, so
only the conversions that load an array pay for it.

The stand-in forwards every attribute to the real module; Python's import lock makes the first use
safe from any thread. Type checkers see numpy itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:

    class _NumpyOnFirstUse:
        def __getattr__(self, name: str) -> Any:
            return getattr(importlib.import_module("numpy"), name)

        def __repr__(self) -> str:
            return "<numpy, imported on first use>"

    np = _NumpyOnFirstUse()

__all__ = ["np"]
