"""llmstd: one canonical format for language-model checkpoints, and converters around it.

Python API (mirrors the CLI)::

    import llmstd
    report = llmstd.convert("gpt2-hf/", "gpt2-canonical/", to="canonical")
    ckpt = llmstd.load("gpt2-canonical/")       # lazy canonical tensors + canonical config
    info = llmstd.inspect("gpt2-hf/")
    result = llmstd.check("gpt2-hf/", "gpt2-canonical/")   # run both, compare logits layer by layer
    lint = llmstd.validate("gpt2-canonical/")               # every finding, before publishing

Heavy frameworks (torch, tensorflow, onnx) are imported only by the operations that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from llmstd.checkpoint import Checkpoint  # noqa: E402
from llmstd.config import CanonicalConfig  # noqa: E402
from llmstd.convert import ConversionReport, convert, load  # noqa: E402
from llmstd.errors import LlmstdError  # noqa: E402
from llmstd.inspection import InspectReport, inspect  # noqa: E402
from llmstd.vocab import SPEC_VERSION  # noqa: E402

# check and validate pull in the runtime machinery; they are imported on first use so that a plain
# conversion (and `llmstd --help`) starts faster.
_LAZY = {
    "check": "llmstd.check", "CheckReport": "llmstd.check", "Tolerance": "llmstd.check",
    "validate": "llmstd.validate", "write_manifest": "llmstd.validate", "Finding": "llmstd.validate",
    "ValidationReport": "llmstd.validate",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llmstd' has no attribute {name!r}")

__all__ = [
    "CanonicalConfig",
    "CheckReport",
    "Checkpoint",
    "ConversionReport",
    "Finding",
    "InspectReport",
    "LlmstdError",
    "SPEC_VERSION",
    "Tolerance",
    "ValidationReport",
    "check",
    "convert",
    "inspect",
    "load",
    "validate",
    "write_manifest",
    "__version__",
]
