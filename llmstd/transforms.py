"""The layout-transform registry: every way a dialect's tensor layout differs from canonical.

Each transform maps dialect tensors to canonical tensors (``forward``) and has an exact inverse
(``inverse``), so one naming map converts in both directions. Transforms only move, split, join or
reshape elements; none does arithmetic on values, which is what makes round trips bit-exact.
Parameters may be integers or map expressions over the canonical config (``= num_kv_heads``).

Shapes are computed without touching data so writers can lay out headers before loading anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmstd import expr
from llmstd.lazy_numpy import np
from llmstd.transpose import transpose2d

Shape = tuple[int, ...]


class TransformError(ValueError):
    """A transform was declared or applied with parameters that do not fit the tensor."""


@dataclass(frozen=True)
class TransformKind:
    name: str
    params: dict[str, str]  # parameter name -> "int" | "int_list" | "int?" (optional)
    doc: str
    arity: Callable[[dict[str, Any]], tuple[int, int]]  # (dialect tensors, canonical tensors)
    forward: Callable[[list[np.ndarray], dict[str, Any]], list[np.ndarray]]
    inverse: Callable[[list[np.ndarray], dict[str, Any]], list[np.ndarray]]
    forward_shapes: Callable[[list[Shape], dict[str, Any]], list[Shape]]
    inverse_shapes: Callable[[list[Shape], dict[str, Any]], list[Shape]]


REGISTRY: dict[str, TransformKind] = {}


def _register(kind: TransformKind) -> None:
    REGISTRY[kind.name] = kind


def _one_to_one(_: dict[str, Any]) -> tuple[int, int]:
    return (1, 1)


# --- transpose -------------------------------------------------------------------------------
# GPT-2's Conv1D and Keras Dense store linear weights [in, out]; canonical is [out, in]. A
# forgotten transpose of a *square* matrix passes every shape check, so it is always declared.


def _transpose_shape(shapes: list[Shape], _: dict[str, Any]) -> list[Shape]:
    (s,) = shapes
    if len(s) != 2:
        raise TransformError(f"transpose needs a 2-D tensor, got shape {s}")
    return [(s[1], s[0])]


_register(TransformKind(
    "transpose", {}, "swap the two axes of a matrix ([in, out] <-> [out, in])", _one_to_one,
    lambda xs, p: [transpose2d(xs[0])],
    lambda xs, p: [transpose2d(xs[0])],
    _transpose_shape, _transpose_shape,
))


# --- split / concat of contiguous fused projections ------------------------------------------
# GPT-2 fuses q|k|v as three contiguous blocks along the output axis. ``sizes`` gives the block
# sizes (for GQA fusions); ``parts`` splits evenly.


def _split_sizes(total: int, p: dict[str, Any]) -> list[int]:
    if p.get("sizes") is not None:
        sizes = list(p["sizes"])
        if sum(sizes) != total:
            raise TransformError(f"split sizes {sizes} do not add up to axis length {total}")
        return sizes
    parts = p["parts"]
    if parts <= 0 or total % parts:
        raise TransformError(f"axis length {total} does not split into {parts} equal parts")
    return [total // parts] * parts


def _split_count(p: dict[str, Any]) -> int:
    return len(p["sizes"]) if p.get("sizes") is not None else p["parts"]


def _split_fwd(xs: list[np.ndarray], p: dict[str, Any]) -> list[np.ndarray]:
    (x,) = xs
    bounds = np.cumsum(_split_sizes(x.shape[p["axis"]], p))[:-1]
    return [np.ascontiguousarray(part) for part in np.split(x, bounds, axis=p["axis"])]


def _split_fwd_shapes(shapes: list[Shape], p: dict[str, Any]) -> list[Shape]:
    (s,) = shapes
    axis = p["axis"]
    if not -len(s) <= axis < len(s):
        raise TransformError(f"split axis {axis} out of range for shape {s}")
    axis %= len(s)
    return [s[:axis] + (n,) + s[axis + 1:] for n in _split_sizes(s[axis], p)]


def _concat_shapes(shapes: list[Shape], p: dict[str, Any]) -> list[Shape]:
    axis = p["axis"] % len(shapes[0])
    rest = {s[:axis] + s[axis + 1:] for s in shapes}
    if len(rest) != 1:
        raise TransformError(f"cannot concatenate shapes {shapes} along axis {axis}")
    total = sum(s[axis] for s in shapes)
    expected = _split_fwd_shapes([shapes[0][:axis] + (total,) + shapes[0][axis + 1:]], p)
    if expected != list(shapes):
        raise TransformError(f"parts {shapes} do not match the declared split {p}")
    return [shapes[0][:axis] + (total,) + shapes[0][axis + 1:]]


_register(TransformKind(
    "split", {"axis": "int", "parts": "int?", "sizes": "int_list?"},
    "split one fused tensor into contiguous blocks along an axis (inverse: concatenate)",
    lambda p: (1, _split_count(p)),
    _split_fwd,
    lambda xs, p: [np.concatenate(xs, axis=p["axis"])],
    _split_fwd_shapes, _concat_shapes,
))


# --- unstack / stack of expert tensors ---------------------------------------------------------
# transformers 5 packs a mixture-of-experts layer's experts into one tensor ([experts, out, in]);
# canonical stores each expert on its own. Unstacking along axis 0 keeps every expert a contiguous
# run of the packed tensor's bytes, so it is a byte range, never a copy (see :func:`flat_ranges`).


def _unstack_shapes(shapes: list[Shape], p: dict[str, Any]) -> list[Shape]:
    (s,) = shapes
    if not s or s[0] != p["count"]:
        raise TransformError(f"unstack expects {p['count']} stacked tensors along axis 0, got shape {s}")
    return [s[1:]] * p["count"]


def _stack_shapes(shapes: list[Shape], p: dict[str, Any]) -> list[Shape]:
    if len(shapes) != p["count"] or len(set(shapes)) != 1:
        raise TransformError(f"stack needs {p['count']} tensors of one shape, got {shapes}")
    return [(p["count"],) + shapes[0]]


_register(TransformKind(
    "unstack", {"count": "int"},
    "split axis 0 of a stacked tensor into `count` tensors, dropping the axis (inverse: stack them)",
    lambda p: (1, p["count"]),
    lambda xs, p: list(xs[0]),
    lambda xs, p: [np.stack(xs)],
    _unstack_shapes, _stack_shapes,
))


# --- grouped (per-head interleaved) fusions ---------------------------------------------------
# GPT-NeoX interleaves q,k,v per head ([heads, 3, head_dim] along the output axis); Falcon and
# other GQA fusions interleave per kv group ([kv_heads, q_per_kv + 2, head_dim]). ``sizes`` counts
# heads of each part inside one group, ``groups`` is the number of groups.


def _grouped_fwd_shapes(shapes: list[Shape], p: dict[str, Any]) -> list[Shape]:
    (s,) = shapes
    groups, sizes, hd = p["groups"], list(p["sizes"]), p["head_dim"]
    if s[0] != groups * sum(sizes) * hd:
        raise TransformError(f"axis 0 of {s} is not groups*sum(sizes)*head_dim = {groups}*{sum(sizes)}*{hd}")
    return [(groups * n * hd,) + s[1:] for n in sizes]


def _grouped_inv_shapes(shapes: list[Shape], p: dict[str, Any]) -> list[Shape]:
    total = (p["groups"] * sum(p["sizes"]) * p["head_dim"],) + shapes[0][1:]
    if _grouped_fwd_shapes([total], p) != list(shapes):
        raise TransformError(f"parts {shapes} do not match the declared grouped split {p}")
    return [total]


def _grouped_fwd(xs: list[np.ndarray], p: dict[str, Any]) -> list[np.ndarray]:
    (x,) = xs
    groups, sizes, hd = p["groups"], list(p["sizes"]), p["head_dim"]
    grouped = x.reshape((groups, sum(sizes) * hd) + x.shape[1:])
    bounds = np.cumsum([n * hd for n in sizes])[:-1]
    return [np.ascontiguousarray(part).reshape((-1,) + x.shape[1:]) for part in np.split(grouped, bounds, axis=1)]


def _grouped_inv(xs: list[np.ndarray], p: dict[str, Any]) -> list[np.ndarray]:
    groups = p["groups"]
    parts = [x.reshape((groups, -1) + x.shape[1:]) for x in xs]
    fused = np.concatenate(parts, axis=1)
    return [np.ascontiguousarray(fused).reshape((-1,) + xs[0].shape[1:])]


_register(TransformKind(
    "split_grouped", {"groups": "int", "sizes": "int_list", "head_dim": "int"},
    "split a fusion interleaved per head or per kv group along axis 0 (inverse: re-interleave)",
    lambda p: (1, len(p["sizes"])),
    _grouped_fwd, _grouped_inv, _grouped_fwd_shapes, _grouped_inv_shapes,
))


# --- rotary permutation -----------------------------------------------------------------------
# Meta's checkpoints rotate interleaved pairs (2j, 2j+1); canonical (= Hugging Face) rotates halves
# (j, j + d/2). The permutation regroups the rows of q and k within each head. It must use the
# kv-head count for k under GQA: with the q head count the rows of k are shuffled across heads and
# the model still runs, but attention degrades and generations diverge after ~20 tokens.


def _rotary_shapes(shapes: list[Shape], p: dict[str, Any]) -> list[Shape]:
    (s,) = shapes
    heads = p["heads"]
    if heads <= 0 or s[0] % heads or (s[0] // heads) % 2:
        raise TransformError(f"rows {s[0]} do not split into {heads} heads of even size")
    return [s]


def _rotary_fwd(xs: list[np.ndarray], p: dict[str, Any]) -> list[np.ndarray]:
    (x,) = xs
    heads = p["heads"]
    hd = x.shape[0] // heads
    y = x.reshape((heads, hd // 2, 2) + x.shape[1:]).swapaxes(1, 2)
    return [np.ascontiguousarray(y).reshape(x.shape)]


def _rotary_inv(xs: list[np.ndarray], p: dict[str, Any]) -> list[np.ndarray]:
    (x,) = xs
    heads = p["heads"]
    hd = x.shape[0] // heads
    y = x.reshape((heads, 2, hd // 2) + x.shape[1:]).swapaxes(1, 2)
    return [np.ascontiguousarray(y).reshape(x.shape)]


_register(TransformKind(
    "rotary_permute", {"heads": "int"},
    "reorder q/k rows from interleaved-pair rotary to rotate-half, per head (use kv heads for k)",
    _one_to_one, _rotary_fwd, _rotary_inv, _rotary_shapes, _rotary_shapes,
))


# --- squeeze / unsqueeze ----------------------------------------------------------------------
# OpenAI's GPT-2 TF release stores Conv1D weights as [1, in, out].


def _squeeze_shape(shapes: list[Shape], p: dict[str, Any]) -> list[Shape]:
    (s,) = shapes
    axis = p["axis"] % max(len(s), 1)
    if not s or s[axis] != 1:
        raise TransformError(f"cannot squeeze axis {p['axis']} of shape {s}: its length is not 1")
    return [s[:axis] + s[axis + 1:]]


def _unsqueeze_shape(shapes: list[Shape], p: dict[str, Any]) -> list[Shape]:
    (s,) = shapes
    axis = p["axis"] % (len(s) + 1)
    return [s[:axis] + (1,) + s[axis:]]


_register(TransformKind(
    "squeeze", {"axis": "int"}, "drop a length-1 axis (inverse: insert it)", _one_to_one,
    lambda xs, p: [np.squeeze(xs[0], axis=p["axis"])],
    lambda xs, p: [np.expand_dims(xs[0], axis=p["axis"] % (xs[0].ndim + 1))],
    _squeeze_shape, _unsqueeze_shape,
))
_register(TransformKind(
    "unsqueeze", {"axis": "int"}, "insert a length-1 axis (inverse: drop it)", _one_to_one,
    lambda xs, p: [np.expand_dims(xs[0], axis=p["axis"] % (xs[0].ndim + 1))],
    lambda xs, p: [np.squeeze(xs[0], axis=p["axis"])],
    _unsqueeze_shape, _squeeze_shape,
))


# --- reshape ----------------------------------------------------------------------------------
# Keras einsum layers store attention kernels as [hidden, heads, head_dim].


def _reshape_shapes(src: str, dst: str) -> Callable[[list[Shape], dict[str, Any]], list[Shape]]:
    def shapes(ss: list[Shape], p: dict[str, Any]) -> list[Shape]:
        (s,) = ss
        if tuple(s) != tuple(p[src]):
            raise TransformError(f"reshape expects shape {tuple(p[src])}, got {s}")
        if math.prod(p[src]) != math.prod(p[dst]):
            raise TransformError(f"cannot reshape {tuple(p[src])} to {tuple(p[dst])}")
        return [tuple(p[dst])]

    return shapes


_register(TransformKind(
    "reshape", {"from_shape": "int_list", "to_shape": "int_list"},
    "reshape between two declared shapes of equal size (inverse: reshape back)", _one_to_one,
    lambda xs, p: [xs[0].reshape(p["to_shape"])],
    lambda xs, p: [xs[0].reshape(p["from_shape"])],
    _reshape_shapes("from_shape", "to_shape"), _reshape_shapes("to_shape", "from_shape"),
))


# --- permute --------------------------------------------------------------------------------
# KerasHub's Gemma einsum kernels are [heads, hidden, head_dim]: per head the transpose of canonical
# rows, which no chain of reshapes and 2-D transposes reaches (those only rotate the axis order).


def _permutation(p: dict[str, Any], ndim: int) -> list[int]:
    axes = list(p["axes"])
    if sorted(axes) != list(range(ndim)):
        raise TransformError(f"permute axes {axes} are not a permutation of the {ndim} axes")
    return axes


def _permute_shapes(shapes: list[Shape], p: dict[str, Any]) -> list[Shape]:
    (s,) = shapes
    return [tuple(s[a] for a in _permutation(p, len(s)))]


def _unpermute_shapes(shapes: list[Shape], p: dict[str, Any]) -> list[Shape]:
    (s,) = shapes
    return [tuple(s[a] for a in np.argsort(_permutation(p, len(s))))]


_register(TransformKind(
    "permute", {"axes": "int_list"},
    "reorder the axes: output axis k is input axis axes[k] (inverse: the inverse permutation)", _one_to_one,
    lambda xs, p: [np.ascontiguousarray(np.transpose(xs[0], p["axes"]))],
    lambda xs, p: [np.ascontiguousarray(np.transpose(xs[0], np.argsort(p["axes"])))],
    _permute_shapes, _unpermute_shapes,
))


# --- row offset -------------------------------------------------------------------------------
# Some position tables (OPT) reserve their first rows: position p lives in row p + offset.
# Canonical row p is position p; the reserved rows are rotated to the end rather than dropped,
# so the inverse restores them exactly.


def _same_shape(shapes: list[Shape], p: dict[str, Any]) -> list[Shape]:
    (s,) = shapes
    if not s or not 0 <= p["rows"] <= s[0]:
        raise TransformError(f"row offset {p['rows']} does not fit shape {s}")
    return [s]


_register(TransformKind(
    "row_offset", {"rows": "int"},
    "move the first `rows` rows to the end so row p is position p (inverse: move them back)", _one_to_one,
    lambda xs, p: [np.roll(xs[0], -p["rows"], axis=0)],
    lambda xs, p: [np.roll(xs[0], p["rows"], axis=0)],
    _same_shape, _same_shape,
))


# --- declared steps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One transform as declared in a map: a kind and raw (possibly expression) parameters."""

    kind: str
    raw_params: tuple[tuple[str, Any], ...]

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> Step:
        if not isinstance(spec, Mapping) or "op" not in spec:
            raise TransformError(f"a transform is a table with an 'op' key, got {spec!r}")
        kind = REGISTRY.get(spec["op"])
        if kind is None:
            raise TransformError(f"unknown transform '{spec['op']}'; known: {', '.join(sorted(REGISTRY))}")
        params = {k: v for k, v in spec.items() if k != "op"}
        unknown = set(params) - set(kind.params)
        if unknown:
            raise TransformError(f"transform '{kind.name}' has no parameter(s) {', '.join(sorted(unknown))}")
        for pname, ptype in kind.params.items():
            if not ptype.endswith("?") and pname not in params:
                raise TransformError(f"transform '{kind.name}' needs parameter '{pname}'")
            if pname in params and not _param_ok(params[pname], ptype.rstrip("?")):
                raise TransformError(f"transform '{kind.name}' parameter '{pname}' must be {ptype.rstrip('?')} "
                                     f"or an '= expression', got {params[pname]!r}")
        if kind.name == "split" and ("parts" in params) == ("sizes" in params):
            raise TransformError("transform 'split' needs exactly one of 'parts' or 'sizes'")
        return cls(kind.name, tuple(sorted((k, _freeze(v)) for k, v in params.items())))

    def resolve(self, scope: Mapping[str, Any]) -> dict[str, Any]:
        """Parameters with expressions evaluated against the canonical config."""

        def value(v: Any) -> Any:
            if expr.is_expression(v):
                return expr.evaluate(v, scope)
            if isinstance(v, tuple):
                return [value(x) for x in v]
            return v

        return {k: value(v) for k, v in self.raw_params}

    def referenced_names(self) -> set[str]:
        names: set[str] = set()
        for _, v in self.raw_params:
            for item in v if isinstance(v, tuple) else (v,):
                if expr.is_expression(item):
                    names |= expr.names_in(item)
        return names

    def describe(self) -> dict[str, Any]:
        return {"op": self.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.raw_params}}


def _freeze(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _param_ok(v: Any, ptype: str) -> bool:
    if expr.is_expression(v):
        return True
    if ptype == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if ptype == "int_list":
        return isinstance(v, list) and all(_param_ok(x, "int") for x in v)
    return False


@dataclass(frozen=True)
class ResolvedStep:
    kind: TransformKind
    params: dict[str, Any]

    def arity(self) -> tuple[int, int]:
        return self.kind.arity(self.params)


def resolve(steps: Sequence[Step], scope: Mapping[str, Any]) -> list[ResolvedStep]:
    return [ResolvedStep(REGISTRY[s.kind], s.resolve(scope)) for s in steps]


def _groups(step: ResolvedStep, count: int) -> int:
    """How many times ``step`` runs on ``count`` tensors: once on all of them, or -- for a step that
    takes one tensor -- once on each (unstacked experts are each split into gate and up)."""
    a_in, _ = step.arity()
    if a_in == count:
        return 1
    if a_in == 1:
        return count
    raise TransformError(f"transform '{step.kind.name}' takes {a_in} tensor(s) but receives {count}")


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[k:k + size] for k in range(0, len(items), size)]


def chain_arity(steps: Sequence[ResolvedStep]) -> tuple[int, int]:
    """(dialect tensor count, canonical tensor count) of a chain. A step taking one tensor that
    receives several runs on each in turn, its outputs in order."""
    n_in = steps[0].arity()[0] if steps else 1
    count = n_in
    for step in steps:
        count = _groups(step, count) * step.arity()[1]
    return n_in, count


def forward_shapes(steps: Sequence[ResolvedStep], shapes: list[Shape]) -> list[Shape]:
    for step in steps:
        groups = _groups(step, len(shapes))
        shapes = [out for part in _chunks(shapes, len(shapes) // groups)
                  for out in step.kind.forward_shapes(part, step.params)]
    return shapes


def inverse_shapes(steps: Sequence[ResolvedStep], shapes: list[Shape]) -> list[Shape]:
    for step in reversed(steps):
        a_in, a_out = step.arity()
        if len(shapes) % a_out:
            raise TransformError(f"transform '{step.kind.name}' cannot invert {len(shapes)} tensor(s)")
        shapes = [out for part in _chunks(shapes, a_out) for out in step.kind.inverse_shapes(part, step.params)]
    return shapes


def apply_forward(steps: Sequence[ResolvedStep], arrays: list[np.ndarray]) -> list[np.ndarray]:
    for step in steps:
        groups = _groups(step, len(arrays))
        arrays = [out for part in _chunks(arrays, len(arrays) // groups) for out in step.kind.forward(part, step.params)]
    return arrays


def apply_inverse(steps: Sequence[ResolvedStep], arrays: list[np.ndarray]) -> list[np.ndarray]:
    for step in reversed(steps):
        arrays = [out for part in _chunks(arrays, step.arity()[1]) for out in step.kind.inverse(part, step.params)]
    return arrays


def _flat_parts(step: ResolvedStep, shape: Shape) -> list[tuple[int, Shape]] | None:
    """(element offset, shape) of each output of ``step`` within its one C-order input, when every
    output is a contiguous run of the input's elements; None when the step reorders elements."""
    name, p = step.kind.name, step.params
    if name in ("reshape", "squeeze", "unsqueeze"):
        return [(0, step.kind.forward_shapes([shape], p)[0])]
    if name == "unstack" or (name == "split" and p["axis"] % len(shape) == 0):
        outs = step.kind.forward_shapes([shape], p)
        offsets = np.cumsum([0] + [math.prod(s) for s in outs])[:-1]
        return [(int(o), s) for o, s in zip(offsets, outs)]
    return None


def flat_ranges(steps: Sequence[ResolvedStep], shape: Shape) -> list[tuple[int, Shape]] | None:
    """Where each output of the chain lies in its one input, as (element offset, shape), when the
    chain only partitions the input into contiguous runs (leading-axis splits and unstacks,
    reshapes): then outputs are byte ranges of the input and the inverse is a concatenation of
    bytes, and neither direction needs to copy or hold more than one output. None otherwise."""
    parts: list[tuple[int, Shape]] = [(0, tuple(shape))]
    for step in steps:
        if step.arity()[0] != 1:
            return None
        nxt = []
        for offset, part_shape in parts:
            sub = _flat_parts(step, part_shape)
            if sub is None:
                return None
            nxt.extend((offset + o, s) for o, s in sub)
        parts = nxt
    return parts
