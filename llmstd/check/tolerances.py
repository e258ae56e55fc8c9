"""Pass/fail limits of ``llmstd check`` by compute dtype, and how they are overridden.

See the table in :mod:`llmstd.check`. Half precision is judged on what a user sees (the predicted
token and the distribution) rather than on absolute error, which grows with logit magnitude.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from llmstd.errors import LlmstdError


@dataclass(frozen=True)
class Tolerance:
    """Pass/fail limits for one comparison; ``None`` disables a criterion."""

    logits_max_abs: float | None = None  # max |a-b| over logits
    output_max_abs: float | None = None  # max |a-b| over other outputs (hidden state, pooler)
    min_top1: float | None = None  # minimum top-1 agreement of logits
    max_kl: float | None = None  # maximum mean KL(a ‖ b) of the token distributions, nats
    max_nmse: float | None = None  # maximum NMSE of any output
    hidden_nmse: float = 1e-8  # a stage whose hidden-state NMSE exceeds this diverges (localisation)

    def to_dict(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)


#: Default tolerances by compute dtype (see the module docstring for the reasoning).
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(logits_max_abs=1e-4, output_max_abs=1e-4, hidden_nmse=1e-8),
    "float32": Tolerance(logits_max_abs=1e-4, output_max_abs=1e-4, hidden_nmse=1e-8),
    "float16": Tolerance(min_top1=0.90, max_kl=1e-3, max_nmse=1e-3, hidden_nmse=1e-3),
    "bfloat16": Tolerance(min_top1=0.80, max_kl=1e-2, max_nmse=1e-2, hidden_nmse=1e-2),
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
