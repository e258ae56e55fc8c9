"""Comparison metrics of ``llmstd check`` (computed on non-padded positions only) and the stages
used to localise a divergence: embeddings, each layer, the head, with the canonical parameters
feeding each."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmstd import vocab
from llmstd.checking.tolerances import Tolerance
from llmstd.config import CanonicalConfig


def sanitise(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


@dataclass
class OutputReport:
    """How one output of side B compares with side A on the non-padded positions."""

    name: str
    shape: list[int]
    positions: int
    max_abs: float
    max_rel: float
    nmse: float
    cosine: float
    scale: float = 0.0  # max |a|: the reference output's scale
    rel_error: float = 0.0  # max |a-b| / scale
    top1: float | None = None
    top5: float | None = None
    kl_mean: float | None = None
    kl_max: float | None = None
    nonfinite_a: int = 0
    nonfinite_b: int = 0
    passed: bool = True
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("max_abs", "max_rel", "nmse", "cosine", "scale", "rel_error", "top1", "top5", "kl_mean", "kl_max"):
            out[key] = sanitise(out[key])  # JSON has no inf/NaN; non-finite counts say why
        return out


@dataclass
class LayerReport:
    """Hidden state after one stage (embeddings, a layer) compared on the non-padded positions."""

    stage: str
    layer: int | None
    max_abs: float
    nmse: float
    cosine: float
    diverged: bool
    parameters: list[str]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("max_abs", "nmse", "cosine"):
            out[key] = sanitise(out[key])
        return out


def _select(array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rows of the non-padded positions: [batch, seq, features...] -> [n, features...]; others
    (a pooler output [batch, hidden], even when hidden == seq) unchanged."""
    if array.ndim > mask.ndim and array.shape[:2] == mask.shape:
        return array[mask.astype(bool)]
    return array


def _basic(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float, int, int, float]:
    a64, b64 = a.astype(np.float64).reshape(-1), b.astype(np.float64).reshape(-1)
    bad_a, bad_b = int((~np.isfinite(a64)).sum()), int((~np.isfinite(b64)).sum())
    with np.errstate(all="ignore"):
        diff = np.abs(a64 - b64)
        max_abs = float(diff.max()) if diff.size else 0.0
        if bad_a or bad_b:
            max_abs = math.inf if not math.isnan(max_abs) else math.nan
        scale = float(np.abs(a64).max()) if a64.size else 0.0
        floor = max(1e-3 * scale, np.finfo(np.float64).tiny)
        max_rel = float((diff / np.maximum(np.abs(a64), floor)).max()) if diff.size else 0.0
        ref = float((a64 * a64).sum())
        nmse = float((diff * diff).sum() / ref) if ref > 0 else (0.0 if not diff.any() else math.inf)
        norm = float(np.linalg.norm(a64) * np.linalg.norm(b64))
        cosine = float(a64 @ b64 / norm) if norm > 0 else (1.0 if not diff.any() else 0.0)
    return max_abs, max_rel, nmse, cosine, bad_a, bad_b, scale


def _distribution(a: np.ndarray, b: np.ndarray, chunk: int = 64) -> tuple[float, float, float, float]:
    """(top-1 agreement, top-5 agreement, mean KL, max KL) of logits rows [n, vocab]."""
    n, vocab_size = a.shape
    k = min(5, vocab_size)
    top1 = top5 = kl_sum = 0.0
    kl_max = 0.0
    with np.errstate(all="ignore"):
        for start in range(0, n, chunk):  # chunks keep float64 copies of huge vocabularies small
            x = a[start:start + chunk].astype(np.float64)
            y = b[start:start + chunk].astype(np.float64)
            top1 += float((x.argmax(-1) == y.argmax(-1)).sum())
            tx = np.argpartition(-x, k - 1, axis=-1)[:, :k]
            ty = np.argpartition(-y, k - 1, axis=-1)[:, :k]
            top5 += sum(len(set(p) & set(q)) / k for p, q in zip(tx.tolist(), ty.tolist()))
            lx = x - _logsumexp(x)
            ly = y - _logsumexp(y)
            # KL is non-negative; float rounding can leave identical distributions at -1e-17.
            kl = np.maximum((np.exp(lx) * (lx - ly)).sum(-1), 0.0)
            kl_sum += float(kl.sum())
            kl_max = max(kl_max, float(kl.max())) if not math.isnan(float(kl.max())) else math.nan
    return top1 / n, top5 / n, kl_sum / n, kl_max


def _logsumexp(x: np.ndarray) -> np.ndarray:
    peak = x.max(-1, keepdims=True)
    return peak + np.log(np.exp(x - peak).sum(-1, keepdims=True))


def compare_output(name: str, a: np.ndarray, b: np.ndarray, mask: np.ndarray, tol: Tolerance) -> OutputReport:
    """Metrics and verdict for one output (A is the reference)."""
    if a.shape != b.shape:
        return OutputReport(name, list(a.shape), 0, math.inf, math.inf, math.inf, 0.0, passed=False,
                            failures=[f"{name}: shapes differ, A {list(a.shape)} vs B {list(b.shape)}"])
    sa, sb = _select(a, mask), _select(b, mask)
    max_abs, max_rel, nmse, cosine, bad_a, bad_b, scale = _basic(sa, sb)
    rel_error = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    report = OutputReport(name, list(a.shape), int(sa.shape[0]) if sa.ndim > 1 else 1, max_abs, max_rel, nmse, cosine,
                          scale=scale, rel_error=rel_error, nonfinite_a=bad_a, nonfinite_b=bad_b)
    is_logits = name == "logits"
    if is_logits:
        rows = sa.reshape(-1, sa.shape[-1]), sb.reshape(-1, sb.shape[-1])
        report.top1, report.top5, report.kl_mean, report.kl_max = _distribution(*rows)
    failures = report.failures
    if bad_a or bad_b:
        failures.append(f"{name}: non-finite values (inf/NaN): {bad_a} on side A, {bad_b} on side B")
    limit = tol.logits_max_abs if is_logits else tol.output_max_abs
    if limit is not None and not max_abs <= limit:
        failures.append(f"{name}: max abs error {max_abs:.3g} > {limit:.3g}")
    if tol.max_nmse is not None and not nmse <= tol.max_nmse:
        failures.append(f"{name}: NMSE {nmse:.3g} > {tol.max_nmse:.3g}")
    if tol.max_rel_error is not None and not rel_error <= tol.max_rel_error:
        failures.append(f"{name}: max abs error {max_abs:.3g} is {rel_error:.3g} of the output scale {scale:.3g} "
                        f"(limit {tol.max_rel_error:.3g})")
    if is_logits and tol.min_top1 is not None and not (report.top1 or 0.0) >= tol.min_top1:
        failures.append(f"{name}: top-1 agreement {report.top1:.3f} < {tol.min_top1:.3f}")
    kl = report.kl_mean if report.kl_mean is not None else math.inf
    if is_logits and tol.max_kl is not None and not kl <= tol.max_kl:
        failures.append(f"{name}: mean KL {report.kl_mean:.3g} > {tol.max_kl:.3g}")
    report.passed = not failures
    return report


# ------------------------------------------------------------------------------------------------
# localisation

_EMBEDDING = {vocab.EMBED_TOKENS, vocab.EMBED_POSITIONS, vocab.EMBED_TOKEN_TYPES, *vocab.EMBED_NORM}
_FINAL = set(vocab.FINAL_NORM)


def stages(config: CanonicalConfig) -> list[tuple[str, int | None, list[str]]]:
    """(stage name, layer, canonical parameters feeding it) for each hidden state, then the head."""
    expected = list(vocab.expected_tensors(config))
    out: list[tuple[str, int | None, list[str]]] = [("embeddings", None, [n for n in expected if n in _EMBEDDING])]
    for layer in range(config.num_layers):
        params = [n for n in expected if vocab.layer_of(n) == layer]
        stage = f"layer {layer}"
        if layer == config.num_layers - 1 and config.final_norm:
            params += [n for n in expected if n in _FINAL]
            stage += " + final norm"
        out.append((stage, layer, params))
    head = [n for n in expected if vocab.layer_of(n) is None and n not in _EMBEDDING and n not in _FINAL]
    head += [target for target in vocab.tied_tensors(config).values() if target not in head]
    out.append(("head", None, head))
    return out


def merge_names(*lists: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for names in lists:
        seen.update(dict.fromkeys(names))
    return list(seen)


def compare_hidden(a: list[np.ndarray], b: list[np.ndarray], mask: np.ndarray, tol: Tolerance,
                   config_a: CanonicalConfig, config_b: CanonicalConfig) -> list[LayerReport]:
    """One LayerReport per hidden state (embeddings, then each layer)."""
    stages_a, stages_b = stages(config_a), stages(config_b)
    reports = []
    for index, (ha, hb) in enumerate(zip(a, b)):
        name, layer, params = stages_a[index]
        params = merge_names(params, stages_b[index][2]) if index < len(stages_b) else params
        if ha.shape != hb.shape:
            reports.append(LayerReport(name, layer, math.inf, math.inf, 0.0, True, params))
            continue
        max_abs, _, nmse, cosine, bad_a, bad_b, _ = _basic(_select(ha, mask), _select(hb, mask))
        diverged = bool(bad_a or bad_b or not nmse <= tol.hidden_nmse)
        reports.append(LayerReport(name, layer, max_abs, nmse, cosine, diverged, params))
    return reports
