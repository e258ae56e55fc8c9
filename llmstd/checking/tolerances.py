"""Pass/fail limits of ``llmstd check`` by compute dtype, and how they are overridden.

Every default limit is relative to the reference output's own scale, because trained models have a
few activation channels in the thousands: an absolute limit tuned on a tiny random model fails a
correct conversion of a real one (max abs 4e-4 on logits of a 135M-parameter model at NMSE 6e-13)
while staying blind to faults in models whose outputs are small. The limits, each checked on the
non-padded positions of every output:

- ``max_nmse``: ``Σ(a-b)² / Σa²``, the error energy relative to the output's energy.
- ``max_rel_error``: ``max|a-b| / max|a|``, the largest single error relative to the output's
  largest value -- catches a fault confined to a few positions, which NMSE averages away.
- logits only: ``min_top1`` (fraction of positions with the same predicted token) and ``max_kl``
  (mean KL divergence of the next-token distributions, nats).
- ``hidden_nmse``: a stage (embeddings, a layer) whose hidden-state NMSE exceeds it diverges; the
  first such stage is where the report localises a failure.

Absolute caps (``logits_max_abs``, ``output_max_abs``; ``--atol``) exist for users who want them and
are off by default. How the defaults were calibrated -- the worst correct conversion and the mildest
fault measured on trained checkpoints, with the margins -- is in ``benchmarks/CALIBRATION.md``,
written by ``benchmarks/calibrate_check.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from llmstd.errors import LlmstdError


@dataclass(frozen=True)
class Tolerance:
    """Pass/fail limits for one comparison; ``None`` disables a criterion."""

    max_nmse: float | None = None  # NMSE of any output
    max_rel_error: float | None = None  # max |a-b| / max |a| of any output
    min_top1: float | None = None  # minimum top-1 agreement of logits
    max_kl: float | None = None  # maximum mean KL(a ‖ b) of the token distributions, nats
    logits_max_abs: float | None = None  # absolute cap on max |a-b| over logits (off by default)
    output_max_abs: float | None = None  # absolute cap on other outputs (hidden state, pooler)
    hidden_nmse: float = 1e-10  # a stage whose hidden-state NMSE exceeds this diverges (localisation)

    def to_dict(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)


#: Default tolerances by compute dtype. Calibrated on trained checkpoints (see the module docstring):
#: float32 between runtimes differs by float rounding only (NMSE ~1e-12), while the mildest weight
#: fault measured -- one projection of one layer rounded to bfloat16 -- moves logits by NMSE ~8e-9.
#: Half precision is judged on what a user sees (predicted token, distribution) and on NMSE, with
#: limits above the rounding a correct cast causes.
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(max_nmse=1e-10, max_rel_error=2e-4, hidden_nmse=1e-10),
    "float32": Tolerance(max_nmse=1e-10, max_rel_error=2e-4, hidden_nmse=1e-10),
    "float16": Tolerance(max_nmse=1e-4, min_top1=0.90, max_kl=1e-3, hidden_nmse=1e-3),
    "bfloat16": Tolerance(max_nmse=2e-3, min_top1=0.80, max_kl=2e-2, hidden_nmse=1e-2),
}
_PRECISION_ORDER = ("float64", "float32", "float16", "bfloat16")  # later = looser


def judged_dtype(a: str, b: str) -> str:
    """The dtype whose tolerances judge a comparison: the less precise of the two compute dtypes."""
    ranks = [_PRECISION_ORDER.index(d) if d in _PRECISION_ORDER else 1 for d in (a, b)]
    return _PRECISION_ORDER[max(ranks)]


def tolerance_for(dtype: str, overrides: Tolerance | Mapping[str, float | None] | None = None) -> Tolerance:
    """The default tolerance for ``dtype``, with ``overrides`` (a Tolerance or some of its fields) applied."""
    if isinstance(overrides, Tolerance):
        return overrides
    base = TOLERANCES.get(dtype, TOLERANCES["float32"])
    if not overrides:
        return base
    fields = {f.name for f in dataclasses.fields(Tolerance)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise LlmstdError(f"unknown tolerance field(s) {', '.join(unknown)}",
                          hint=f"fields: {', '.join(sorted(fields))}")
    return dataclasses.replace(base, **dict(overrides))
