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

# Every name is imported on first use, so that ``import llmstd`` (and ``llmstd --version``) loads
# nothing: numpy alone costs more than the rest of the start-up. Module names differ from the
# function names (llmstd.conversion.convert, llmstd.checking.check, ...): importing a submodule
# called like a function would replace that function on the package.
_LAZY = {
    "Checkpoint": "llmstd.checkpoint", "CanonicalConfig": "llmstd.config",
    "ConversionReport": "llmstd.conversion", "convert": "llmstd.conversion", "load": "llmstd.conversion",
    "LlmstdError": "llmstd.errors", "InspectReport": "llmstd.inspection", "inspect": "llmstd.inspection",
    "SPEC_VERSION": "llmstd.vocab",
    "check": "llmstd.checking", "CheckReport": "llmstd.checking", "Tolerance": "llmstd.checking",
    "validate": "llmstd.validation", "write_manifest": "llmstd.validation", "Finding": "llmstd.validation",
    "ValidationReport": "llmstd.validation",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # bound once: later lookups do not come here
        return value
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
