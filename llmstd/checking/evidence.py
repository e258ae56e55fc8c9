"""What a failed check blames: the parameters of the first diverging stage compared side by side.

Hidden states say *where* two models part ways; the parameters feeding that stage, read from both
checkpoints in canonical layout, say *why*. A parameter is blamed only when its values differ
between the sides beyond the cast the user asked for (a float32 tensor and its bfloat16 conversion
are the same parameter). When every parameter of the stage is the same, the blame goes to what
differs instead: the configs (a misread ``rope_theta``), or else the computation itself (a runtime
or graph fault), and no parameter is named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from llmstd import vocab
from llmstd.checkpoint import Checkpoint


def _array(ckpt: Checkpoint, name: str) -> np.ndarray | None:
    tensors = ckpt.tensors
    if name not in tensors:
        name = vocab.tied_tensors(ckpt.config).get(name, name)
    return tensors[name].load() if name in tensors else None


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def same_parameter(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit, or equal once the more precise of the two is cast to the other's dtype
    (what ``llmstd convert --dtype`` does)."""
    if a.shape != b.shape:
        return False
    if a.dtype == b.dtype:
        return bool(np.array_equal(_bits(a), _bits(b)))
    narrow, wide = (a, b) if a.dtype.itemsize < b.dtype.itemsize else (b, a)
    with np.errstate(all="ignore"):
        cast = wide.astype(narrow.dtype)
        # A cast that overflowed to inf is what the cast did, but not the same parameter.
        if not np.array_equal(np.isfinite(wide.astype(np.float64)), np.isfinite(narrow.astype(np.float64))):
            return False
    return bool(np.array_equal(_bits(cast), _bits(narrow)))


def _difference(a: np.ndarray | None, b: np.ndarray | None) -> str:
    if a is None or b is None:
        return f"absent on side {'A' if a is None else 'B'}"
    if a.shape != b.shape:
        return f"shape {list(a.shape)} vs {list(b.shape)}"
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(all="ignore"):
        scale = float(np.abs(a64).max()) if a64.size else 0.0
        worst = float(np.abs(a64 - b64).max()) if a64.size else 0.0
    return f"max abs difference {worst:.3g} ({worst / scale:.3g} of its largest value)" if scale else \
        f"max abs difference {worst:.3g}"


def evidence(parameters: Sequence[str], a: Checkpoint, b: Checkpoint,
             config_differences: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """``differing_parameters`` (name -> how it differs) and ``blame`` (one sentence) for a stage."""
    differing: dict[str, str] = {}
    for name in parameters:
        xa, xb = _array(a, name), _array(b, name)
        if xa is None or xb is None or not same_parameter(xa, xb):
            differing[name] = _difference(xa, xb)
    if differing:
        shown = "; ".join(f"{n} ({how})" for n, how in list(differing.items())[:6])
        more = f"; … ({len(differing)} in all)" if len(differing) > 6 else ""
        blame = f"parameters that differ between the sides: {shown}{more}"
    elif config_differences:
        diffs = ", ".join(f"{k} {va!r} vs {vb!r}" for k, (va, vb) in config_differences.items())
        blame = f"its parameters are the same on both sides; the configs differ: {diffs}"
    else:
        blame = ("its parameters are the same on both sides and so are the configs: the difference arises in "
                 "the computation (a runtime or graph), not in the weights")
    return {"differing_parameters": differing, "blame": blame}
