"""Property tests for the layout-transform registry: every transform has an exact inverse.

For each registered kind, hypothesis draws shapes, parameters and raw bytes (so NaN payloads and
signed zeros are included) and checks, bit for bit:

    inverse(forward(x)) == x        forward(inverse(y)) == y
    forward_shapes / inverse_shapes == the shapes the arrays really have

A transform added to the registry without a strategy here fails ``test_every_transform_has_a_property_test``.
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmstd import transforms
from llmstd.transforms import REGISTRY, Step, TransformError

DTYPES = [np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16), np.dtype(np.int64),
          np.dtype(np.uint8), np.dtype(np.float64)]

dims = st.integers(min_value=1, max_value=5)


def _array(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Random raw bytes viewed as ``dtype``: any bit pattern, NaNs with payloads included."""
    n = math.prod(shape)
    return np.frombuffer(rng.bytes(n * dtype.itemsize), dtype=dtype).reshape(shape).copy()


# Each strategy draws (input shapes on the dialect side, params) for one transform kind.


@st.composite
def _transpose(draw: Any) -> tuple[list[tuple[int, ...]], dict[str, Any]]:
    return [(draw(dims), draw(dims))], {}


@st.composite
def _split(draw: Any) -> tuple[list[tuple[int, ...]], dict[str, Any]]:
    ndim = draw(st.integers(1, 3))
    shape = [draw(dims) for _ in range(ndim)]
    axis = draw(st.integers(-ndim, ndim - 1))
    if draw(st.booleans()):
        parts = draw(st.integers(1, 4))
        shape[axis] = parts * draw(dims)
        return [tuple(shape)], {"axis": axis, "parts": parts}
    sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    shape[axis] = sum(sizes)
    return [tuple(shape)], {"axis": axis, "sizes": sizes}


@st.composite
def _split_grouped(draw: Any) -> tuple[list[tuple[int, ...]], dict[str, Any]]:
    groups = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    head_dim = draw(st.integers(1, 4))
    trailing = tuple(draw(st.lists(dims, max_size=1)))  # weights [rows, in] and biases [rows]
    return [(groups * sum(sizes) * head_dim, *trailing)], {"groups": groups, "sizes": sizes, "head_dim": head_dim}


@st.composite
def _rotary_permute(draw: Any) -> tuple[list[tuple[int, ...]], dict[str, Any]]:
    # q uses the query head count, k the kv head count (fewer under GQA): both are just "heads" here,
    # drawn independently of the input width so kv_heads != heads cases are common.
    kv_heads = draw(st.integers(1, 4))
    heads = kv_heads * draw(st.integers(1, 4))
    use_kv = draw(st.booleans())
    n = kv_heads if use_kv else heads
    head_dim = 2 * draw(st.integers(1, 4))
    trailing = tuple(draw(st.lists(st.integers(1, 4 * heads), max_size=1)))
    return [(n * head_dim, *trailing)], {"heads": n}


@st.composite
def _squeeze(draw: Any) -> tuple[list[tuple[int, ...]], dict[str, Any]]:
    shape = [draw(dims) for _ in range(draw(st.integers(0, 3)))]
    pos = draw(st.integers(0, len(shape)))
    shape.insert(pos, 1)
    axis = draw(st.sampled_from([pos, pos - len(shape)]))
    return [tuple(shape)], {"axis": axis}


@st.composite
def _unsqueeze(draw: Any) -> tuple[list[tuple[int, ...]], dict[str, Any]]:
    shape = tuple(draw(dims) for _ in range(draw(st.integers(0, 3))))
    axis = draw(st.integers(-(len(shape) + 1), len(shape)))
    return [shape], {"axis": axis}


@st.composite
def _reshape(draw: Any) -> tuple[list[tuple[int, ...]], dict[str, Any]]:
    factors = draw(st.lists(st.integers(1, 4), min_size=1, max_size=5))

    def group(fs: list[int]) -> list[int]:
        # Partition the factor list into consecutive runs, multiplying each run into one dim.
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(fs) - 1)), max_size=len(fs)))))
        bounds = [0, *[c for c in cuts if c < len(fs)], len(fs)]
        return [math.prod(fs[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]

    src = group(factors)
    dst = group(draw(st.permutations(factors)))
    return [tuple(src)], {"from_shape": src, "to_shape": dst}


@st.composite
def _row_offset(draw: Any) -> tuple[list[tuple[int, ...]], dict[str, Any]]:
    rows = draw(dims)
    trailing = tuple(draw(st.lists(dims, max_size=2)))
    return [(rows, *trailing)], {"rows": draw(st.integers(0, rows))}


@st.composite
def _unstack(draw: Any) -> tuple[list[tuple[int, ...]], dict[str, Any]]:
    count = draw(dims)
    return [(count, *draw(st.lists(dims, max_size=2)))], {"count": count}


@st.composite
def _permute(draw: Any) -> tuple[list[tuple[int, ...]], dict[str, Any]]:
    shape = tuple(draw(dims) for _ in range(draw(st.integers(1, 4))))
    return [shape], {"axes": draw(st.permutations(range(len(shape))))}


STRATEGIES = {
    "transpose": _transpose(),
    "split": _split(),
    "split_grouped": _split_grouped(),
    "rotary_permute": _rotary_permute(),
    "squeeze": _squeeze(),
    "unsqueeze": _unsqueeze(),
    "reshape": _reshape(),
    "row_offset": _row_offset(),
    "unstack": _unstack(),
    "permute": _permute(),
}


def test_every_transform_has_a_property_test() -> None:
    missing = sorted(set(REGISTRY) - set(STRATEGIES))
    stale = sorted(set(STRATEGIES) - set(REGISTRY))
    assert not missing, f"transforms without a property test: {missing}"
    assert not stale, f"property tests for transforms that no longer exist: {stale}"


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes()


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
def test_transform_is_exactly_invertible(kind: str) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=STRATEGIES[kind], dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
    def check(case: tuple[list[tuple[int, ...]], dict[str, Any]], dtype: np.dtype, seed: int) -> None:
        shapes, params = case
        tk = REGISTRY[kind]
        step = Step.parse({"op": kind, **params})  # the declared form parses and resolves to the same params
        (resolved,) = transforms.resolve([step], {})
        assert resolved.params == {k: v for k, v in params.items()}
        n_in, n_out = resolved.arity()
        assert n_in == len(shapes)

        rng = np.random.default_rng(seed)
        xs = [_array(rng, s, dtype) for s in shapes]
        originals = [x.copy() for x in xs]

        ys = tk.forward(xs, params)
        assert len(ys) == n_out
        _same(xs, originals)  # forward does not mutate its input
        assert tk.forward_shapes(shapes, params) == [y.shape for y in ys]
        assert tk.inverse_shapes([y.shape for y in ys], params) == list(shapes)
        _same(tk.inverse(ys, params), originals)

        # And the other way round, from independent canonical-side data.
        ys2 = [_array(rng, y.shape, dtype) for y in ys]
        ys2_copy = [y.copy() for y in ys2]
        back = tk.inverse(ys2, params)
        _same(ys2, ys2_copy)
        assert [b.shape for b in back] == list(shapes)
        _same(tk.forward(back, params), ys2_copy)

        # The chain helpers agree with the kind functions.
        chain = [resolved]
        assert transforms.forward_shapes(chain, list(shapes)) == [y.shape for y in ys]
        _same(transforms.apply_inverse(chain, transforms.apply_forward(chain, xs)), originals)

    check()


def test_chained_transforms_invert_in_reverse_order() -> None:
    # GPT-2's c_attn: [in, 3*out] --transpose--> [3*out, in] --split--> q, k, v.
    steps = transforms.resolve([Step.parse({"op": "transpose"}), Step.parse({"op": "split", "axis": 0, "parts": 3})], {})
    assert transforms.chain_arity(steps) == (1, 3)
    x = np.arange(4 * 12, dtype=np.float32).reshape(4, 12)
    q, k, v = transforms.apply_forward(steps, [x])
    np.testing.assert_array_equal(q, x[:, 0:4].T)
    np.testing.assert_array_equal(k, x[:, 4:8].T)
    np.testing.assert_array_equal(v, x[:, 8:12].T)
    assert transforms.forward_shapes(steps, [(4, 12)]) == [(4, 4)] * 3
    assert transforms.inverse_shapes(steps, [(4, 4)] * 3) == [(4, 12)]
    (back,) = transforms.apply_inverse(steps, [q, k, v])
    assert back.tobytes() == x.tobytes()


def test_expression_parameters_resolve_against_the_config() -> None:
    step = Step.parse({"op": "rotary_permute", "heads": "= num_kv_heads"})
    assert step.referenced_names() == {"num_kv_heads"}
    (resolved,) = transforms.resolve([step], {"num_kv_heads": 2, "num_heads": 8})
    assert resolved.params == {"heads": 2}


@pytest.mark.parametrize("spec", [
    {"op": "no_such_op"},
    {"op": "split", "axis": 0},  # neither parts nor sizes
    {"op": "split", "axis": 0, "parts": 2, "sizes": [1, 1]},  # both
    {"op": "rotary_permute"},  # missing heads
    {"op": "rotary_permute", "heads": "four"},  # not an int
    {"op": "rotary_permute", "heads": True},  # a bool is not an int
    {"op": "transpose", "axis": 1},  # unknown parameter
    {"op": "reshape", "from_shape": [2, 3], "to_shape": 6},  # not a list
])
def test_bad_declarations_are_rejected(spec: dict[str, Any]) -> None:
    with pytest.raises(TransformError):
        Step.parse(spec)


@pytest.mark.parametrize(("kind", "shape", "params"), [
    ("transpose", (2, 3, 4), {}),
    ("split", (7, 2), {"axis": 0, "parts": 2}),
    ("split", (7, 2), {"axis": 0, "sizes": [3, 3]}),
    ("split_grouped", (10, 2), {"groups": 2, "sizes": [1, 1], "head_dim": 2}),
    ("rotary_permute", (12, 4), {"heads": 4}),  # head size 3 is odd
    ("squeeze", (2, 3), {"axis": 0}),
    ("reshape", (2, 3), {"from_shape": [3, 2], "to_shape": [6]}),
    ("row_offset", (3, 2), {"rows": 4}),
    ("permute", (2, 3, 4), {"axes": [0, 2, 2]}),
    ("permute", (2, 3), {"axes": [0, 2, 1]}),
])
def test_shapes_that_do_not_fit_are_rejected(kind: str, shape: tuple[int, ...], params: dict[str, Any]) -> None:
    with pytest.raises(TransformError):
        REGISTRY[kind].forward_shapes([shape], params)


# ------------------------------------------------------------------------------------------------
# rotary_permute against the reference formula and against the rotary math


def _hf_permute(w: Any, n_heads: int, dim1: int, dim2: int) -> Any:
    """transformers' convert_llama_weights_to_hf.permute (Meta interleaved -> HF rotate-half), verbatim."""
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def _meta_qk(n_heads: int, head_dim: int, dim2: int) -> np.ndarray:
    """A Meta-style weight whose row for (head h, pair j, component c) is at h*head_dim + 2j + c; the
    first column encodes (h, j, c) so the expected permutation can be read off the values."""
    rows = n_heads * head_dim
    w = np.random.default_rng(0).standard_normal((rows, dim2)).astype(np.float32)
    for h in range(n_heads):
        for j in range(head_dim // 2):
            for c in range(2):
                w[h * head_dim + 2 * j + c, 0] = 1000 * h + 10 * j + c
    return w


@pytest.mark.parametrize(("n_heads", "n_kv_heads", "head_dim"), [(4, 4, 8), (4, 2, 8), (8, 2, 4), (6, 1, 6)])
def test_rotary_permute_matches_transformers_formula(n_heads: int, n_kv_heads: int, head_dim: int) -> None:
    torch = pytest.importorskip("torch")
    dim = n_heads * head_dim
    kv_dim = n_kv_heads * head_dim
    rotary = REGISTRY["rotary_permute"]
    wq, wk = _meta_qk(n_heads, head_dim, dim), _meta_qk(n_kv_heads, head_dim, dim)

    (q_hf,) = rotary.forward([wq], {"heads": n_heads})
    (k_hf,) = rotary.forward([wk], {"heads": n_kv_heads})
    assert q_hf.tobytes() == _hf_permute(torch.from_numpy(wq), n_heads, dim, dim).numpy().tobytes()
    # transformers permutes k with the kv head count: permute(wk, n_heads=num_key_value_heads, dim1=kv_dim)
    assert k_hf.tobytes() == _hf_permute(torch.from_numpy(wk), n_kv_heads, kv_dim, dim).numpy().tobytes()

    # Read the layout off the tags: HF row h*hd + c*hd/2 + j holds Meta's (h, j, c).
    for h in range(n_heads):
        for j in range(head_dim // 2):
            for c in range(2):
                assert q_hf[h * head_dim + c * head_dim // 2 + j, 0] == 1000 * h + 10 * j + c

    # The GQA trap: permuting k with the *query* head count gives a different (wrong) layout.
    if n_kv_heads != n_heads and (kv_dim // n_heads) % 2 == 0 and kv_dim % n_heads == 0:
        (k_wrong,) = rotary.forward([wk], {"heads": n_heads})
        assert k_wrong.tobytes() != k_hf.tobytes()


def test_rotary_permute_preserves_attention_scores() -> None:
    """Meta's interleaved rotary on Meta weights == HF's rotate-half rotary on permuted weights."""
    n_heads, head_dim, dim, positions = 2, 8, 16, 24
    rotary = REGISTRY["rotary_permute"]
    rng = np.random.default_rng(1)
    wq = rng.standard_normal((n_heads * head_dim, dim))
    wk = rng.standard_normal((n_heads * head_dim, dim))
    x = rng.standard_normal((positions, dim))
    inv_freq = 1.0 / (10000 ** (np.arange(0, head_dim, 2) / head_dim))
    angles = np.arange(positions)[:, None] * inv_freq[None, :]  # [pos, hd/2]
    cos, sin = np.cos(angles), np.sin(angles)

    def meta_rope(v: np.ndarray) -> np.ndarray:  # v: [pos, heads, hd], pairs (2j, 2j+1)
        a, b = v[..., 0::2], v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2] = a * cos[:, None] - b * sin[:, None]
        out[..., 1::2] = a * sin[:, None] + b * cos[:, None]
        return out

    def hf_rope(v: np.ndarray) -> np.ndarray:  # pairs (j, j + hd/2): rotate_half
        half = head_dim // 2
        c2, s2 = np.concatenate([cos, cos], -1)[:, None], np.concatenate([sin, sin], -1)[:, None]
        rotated = np.concatenate([-v[..., half:], v[..., :half]], -1)
        return v * c2 + rotated * s2

    def scores(wq_: np.ndarray, wk_: np.ndarray, rope: Any) -> np.ndarray:
        q = rope((x @ wq_.T).reshape(positions, n_heads, head_dim))
        k = rope((x @ wk_.T).reshape(positions, n_heads, head_dim))
        return np.einsum("phd,qhd->hpq", q, k)

    meta = scores(wq, wk, meta_rope)
    (q_hf,) = rotary.forward([wq], {"heads": n_heads})
    (k_hf,) = rotary.forward([wk], {"heads": n_heads})
    np.testing.assert_allclose(scores(q_hf, k_hf, hf_rope), meta, rtol=1e-9, atol=1e-9)
    # Without the permutation the scores diverge: the test can tell.
    assert not np.allclose(scores(wq, wk, hf_rope), meta, atol=1e-3)


def test_packed_experts_unstack_then_split_each_and_are_byte_ranges() -> None:
    """transformers 5's gate_up_proj [E, 2I, H]: unstack, then split every expert into gate and up;
    every output is a contiguous run of the input, and the inverse packs them back bit for bit."""
    steps = transforms.resolve([Step.parse({"op": "unstack", "count": "= num_experts"}),
                                Step.parse({"op": "split", "axis": 0, "parts": 2})], {"num_experts": 3})
    assert transforms.chain_arity(steps) == (1, 6)
    x = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    outs = transforms.apply_forward(steps, [x])
    for e in range(3):
        np.testing.assert_array_equal(outs[2 * e], x[e, :2])  # gate rows first
        np.testing.assert_array_equal(outs[2 * e + 1], x[e, 2:])
    assert transforms.forward_shapes(steps, [(3, 4, 5)]) == [(2, 5)] * 6
    assert transforms.inverse_shapes(steps, [(2, 5)] * 6) == [(3, 4, 5)]
    assert transforms.apply_inverse(steps, outs)[0].tobytes() == x.tobytes()
    ranges = transforms.flat_ranges(steps, (3, 4, 5))
    assert ranges is not None
    for (start, shape), out in zip(ranges, outs):
        np.testing.assert_array_equal(x.reshape(-1)[start:start + out.size].reshape(shape), out)
    # A transpose reorders elements: no byte ranges.
    assert transforms.flat_ranges(transforms.resolve([Step.parse({"op": "transpose"})], {}), (3, 4)) is None
