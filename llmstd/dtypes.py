"""Dtype vocabulary: canonical dtype names and their numpy, safetensors and torch spellings,
plus the one guarded cast used everywhere a dtype changes.

numpy has no bfloat16 or float8; ml_dtypes supplies them, so bf16 tensors move as bf16 bytes and
never detour through float32 unless a cast is requested. A dtype's numpy type is looked up the first
time it is needed, and numpy (see llmstd.lazy_numpy) and ml_dtypes are imported then: ml_dtypes
costs more than the rest of llmstd's start-up (0.7 s for 0.7.0), numpy a third of it, and
``llmstd --help`` or a conversion made of kernel copies needs neither (sizes come from ``itemsize``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from llmstd.errors import CastError, FormatError
from llmstd.lazy_numpy import np

#: dtypes numpy lacks, supplied by ml_dtypes under the same attribute names.
_ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")


@functools.cache
def _numpy_dtype(name: str) -> np.dtype:
    if name in _ML_DTYPES:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


@dataclass(frozen=True)
class DType:
    name: str  # canonical spelling, also torch's and numpy's (ml_dtypes') attribute name
    safetensors: str
    #: bytes per element, known without numpy's type, so that sizes and byte ranges (every header
    #: read, every kernel copy) import neither numpy nor ml_dtypes
    itemsize: int

    @property
    def numpy(self) -> np.dtype:
        return _numpy_dtype(self.name)

    @property
    def is_float(self) -> bool:
        return self.name.startswith(("float", "bfloat"))


_ALL = [
    DType("float64", "F64", 8),
    DType("float32", "F32", 4),
    DType("float16", "F16", 2),
    DType("bfloat16", "BF16", 2),
    DType("float8_e4m3fn", "F8_E4M3", 1),
    DType("float8_e5m2", "F8_E5M2", 1),
    DType("int64", "I64", 8),
    DType("int32", "I32", 4),
    DType("int16", "I16", 2),
    DType("int8", "I8", 1),
    DType("uint64", "U64", 8),
    DType("uint32", "U32", 4),
    DType("uint16", "U16", 2),
    DType("uint8", "U8", 1),
    DType("bool", "BOOL", 1),
]
BY_NAME = {d.name: d for d in _ALL}
BY_SAFETENSORS = {d.safetensors: d for d in _ALL}

#: dtypes a user may ask a conversion to produce (``--dtype``).
CAST_TARGETS = ("float32", "float16", "bfloat16")


def dtype(name: str) -> DType:
    try:
        return BY_NAME[name]
    except KeyError:
        raise FormatError(f"unknown dtype '{name}'", hint=f"known dtypes: {', '.join(BY_NAME)}") from None


def from_numpy(np_dtype: np.dtype) -> DType:
    native = np.dtype(np_dtype).newbyteorder("=")
    # numpy and ml_dtypes name their types as llmstd does; the comparison refuses a foreign type
    # that merely shares a name. An array of an ml_dtypes type means ml_dtypes is loaded already.
    found = BY_NAME.get(native.name)
    if found is None or found.numpy != native:
        raise FormatError(f"numpy dtype {np_dtype} has no llmstd equivalent")
    return found


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
