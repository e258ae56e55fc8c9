"""Dtype vocabulary: canonical dtype names and their numpy, safetensors and torch spellings,
plus the one guarded cast used everywhere a dtype changes.

numpy has no bfloat16 or float8; ml_dtypes supplies them, so bf16 tensors move as bf16 bytes and
never detour through float32 unless a cast is requested. ml_dtypes is imported the first time one
of its types is needed: importing it costs more than the rest of llmstd's start-up (0.7 s for
ml_dtypes 0.7.0), and ``llmstd --help`` or a float32 conversion never needs it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from llmstd.errors import CastError, FormatError

#: dtypes numpy lacks, supplied by ml_dtypes under the same attribute names.
_ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")


@functools.cache
def _ml_dtype(name: str) -> np.dtype:
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, name))


@dataclass(frozen=True)
class DType:
    name: str  # canonical spelling, also torch's attribute name
    safetensors: str
    #: bytes per element, known without numpy's type, so that sizes and byte ranges (every header
    #: read, every kernel copy) never import ml_dtypes
    itemsize: int
    native: np.dtype | None = None  # numpy's own type; None for the ml_dtypes ones

    @property
    def numpy(self) -> np.dtype:
        return self.native if self.native is not None else _ml_dtype(self.name)

    @property
    def is_float(self) -> bool:
        return self.name.startswith(("float", "bfloat"))


_ALL = [
    DType("float64", "F64", 8, np.dtype(np.float64)),
    DType("float32", "F32", 4, np.dtype(np.float32)),
    DType("float16", "F16", 2, np.dtype(np.float16)),
    DType("bfloat16", "BF16", 2),
    DType("float8_e4m3fn", "F8_E4M3", 1),
    DType("float8_e5m2", "F8_E5M2", 1),
    DType("int64", "I64", 8, np.dtype(np.int64)),
    DType("int32", "I32", 4, np.dtype(np.int32)),
    DType("int16", "I16", 2, np.dtype(np.int16)),
    DType("int8", "I8", 1, np.dtype(np.int8)),
    DType("uint64", "U64", 8, np.dtype(np.uint64)),
    DType("uint32", "U32", 4, np.dtype(np.uint32)),
    DType("uint16", "U16", 2, np.dtype(np.uint16)),
    DType("uint8", "U8", 1, np.dtype(np.uint8)),
    DType("bool", "BOOL", 1, np.dtype(np.bool_)),
]
BY_NAME = {d.name: d for d in _ALL}
BY_SAFETENSORS = {d.safetensors: d for d in _ALL}
_BY_NATIVE = {d.native: d for d in _ALL if d.native is not None}

#: dtypes a user may ask a conversion to produce (``--dtype``).
CAST_TARGETS = ("float32", "float16", "bfloat16")


def dtype(name: str) -> DType:
    try:
        return BY_NAME[name]
    except KeyError:
        raise FormatError(f"unknown dtype '{name}'", hint=f"known dtypes: {', '.join(BY_NAME)}") from None


def from_numpy(np_dtype: np.dtype) -> DType:
    native = np.dtype(np_dtype).newbyteorder("=")
    if native in _BY_NATIVE:
        return _BY_NATIVE[native]
    # An array of an ml_dtypes type means ml_dtypes is loaded already: comparing costs nothing.
    for name in _ML_DTYPES:
        if native == _ml_dtype(name):
            return BY_NAME[name]
    raise FormatError(f"numpy dtype {np_dtype} has no llmstd equivalent")


@dataclass(frozen=True)
class CastDamage:
    overflowed: int  # finite values that became ±inf
    flushed: int  # non-zero values that became zero
    nan_created: int  # non-NaN values that became NaN

    @property
    def any(self) -> bool:
        return bool(self.overflowed or self.flushed or self.nan_created)

    def describe(self) -> str:
        parts = []
        if self.overflowed:
            parts.append(f"{self.overflowed} finite values overflow to inf")
        if self.flushed:
            parts.append(f"{self.flushed} non-zero values flush to zero")
        if self.nan_created:
            parts.append(f"{self.nan_created} values become NaN")
        return ", ".join(parts)


def cast_damage(source: np.ndarray, result: np.ndarray) -> CastDamage:
    """Count what a cast destroyed, comparing the source with its cast result element-wise."""
    if not (from_numpy(source.dtype).is_float and from_numpy(result.dtype).is_float):
        return CastDamage(0, 0, 0)
    src_finite = np.isfinite(source)
    with np.errstate(over="ignore", invalid="ignore"):
        res = result.astype(np.float32, copy=False)
    overflowed = int(np.count_nonzero(src_finite & np.isinf(res)))
    flushed = int(np.count_nonzero((source != 0) & (res == 0)))
    nan_created = int(np.count_nonzero(~np.isnan(source) & np.isnan(res)))
    return CastDamage(overflowed, flushed, nan_created)


def cast(array: np.ndarray, target: DType, *, tensor: str, force: bool = False) -> np.ndarray:
    """Cast ``array`` to ``target``; refuse (unless ``force``) a cast that loses values outright."""
    if array.dtype == target.numpy:
        return array
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # counted below, reported as an error
        result = array.astype(target.numpy)
    damage = cast_damage(array, result)
    if damage.any and not force:
        raise CastError(
            f"casting {from_numpy(array.dtype).name} to {target.name} is lossy: {damage.describe()}",
            tensor=tensor,
            hint="keep the source dtype (--dtype keep), choose a wider dtype, or pass --force to accept it",
        )
    return result
