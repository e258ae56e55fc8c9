"""Proof of sameness: run two checkpoints, each in its own runtime, on the same inputs and compare.

``check(a, b)`` opens each side, picks a runtime for it, feeds both the same token batch, and
compares every output (logits, or last hidden state and pooler output for base models) and, when
both runtimes expose them, the hidden state after every layer. Side A is the reference.

Runtimes (``runtime_a`` / ``runtime_b``; ``auto`` picks the format's *reference runtime*, the
framework's own implementation, whenever it can run here):

=================  ======================================================================================
``transformers``   Hugging Face PyTorch classes (the map's class for the head), transformers 4.x or 5.x;
                   the reference runtime of ``hf`` directories.
``llmstd-torch``   llmstd's own PyTorch implementation (:mod:`llmstd.runtimes.torch_model`) over the
                   canonical tensors of *any* format, read with :func:`llmstd.load`. auto: canonical.
``transformers-tf`` Hugging Face TF classes (transformers 4.x, ``TF_USE_LEGACY_KERAS=1``): the reference
                   runtime of ``tf-h5`` directories in the ``hf_tf`` dialect.
``llmstd-tf``      :mod:`llmstd.runtimes.tf_model`; auto for ``tf-ckpt`` and for ``tf-h5`` architectures
                   without a Hugging Face TF class (no other runtime reads llmstd's TF naming).
``onnxruntime``    the ``.onnx`` graph (CPUExecutionProvider; CUDA provider when installed and
                   ``--device cuda``); the reference runtime of ``onnx``.
=================  ======================================================================================

When a side's reference runtime is not installed, the side falls back to llmstd's own runtime over
the same weights, and the verdict says so in its first words ("PASS against reference runtimes",
"NO reference runtime ran", ...), as does the JSON (``reference``, and per side
``reference_runtime``/``in_reference``). ``require_reference=True`` (``--require-reference``)
turns that into an error before anything runs. Naming a runtime explicitly that is not installed is
an error.

Inputs: by default a deterministic batch of 2 sequences of 128 tokens (capped by the models'
``max_positions`` and vocabulary), the second right-padded to 96 real tokens, with attention masks
(and two token-type segments for models with token types). Rotary mistakes only show after ~20
tokens, padding mistakes only with padding, so both are always present. Or token ids given by the
user (JSON: a list of lists, or ``{"input_ids": ..., "attention_mask": ...}``), or text encoded by a
tokenizer found next to either checkpoint. Every metric is computed on non-padded positions only.

Metrics per output: max abs error; max relative error (``|a-b| / max(|a|, 1e-3·max|a|)``); NMSE
(``Σ(a-b)² / Σa²``); the error relative to the output's scale (``max|a-b| / max|a|``); cosine
similarity; and for logits top-1 agreement, top-5 agreement (mean overlap of the two top-5 sets) and
the KL divergence ``KL(softmax(a) ‖ softmax(b))`` of the next-token distributions (mean and max).

Tolerances are chosen by the less precise compute dtype of the two sides (float16 and bfloat16 mixed
judge as bfloat16), relative to the outputs' own scale, and calibrated on trained checkpoints
(:mod:`llmstd.checking.tolerances`); each is overridable (``tolerance=`` here, ``--max-nmse`` etc. on
the CLI). Any inf or NaN in an output fails.

Localisation: the stages are the embeddings, each layer (the last one together with the final
norm, as runtimes report it) and the head. The first stage whose hidden-state NMSE exceeds the
threshold is named; then the evidence decides the blame (:mod:`llmstd.checking.evidence`): the
parameters feeding that stage are compared between the two checkpoints and only those that differ
beyond the requested cast are named; when none differ, the config differences or the computation
are blamed instead. When every hidden state agrees but an output does not, the head is the stage.
A side whose runtime exposes no hidden states (ONNX graphs) is re-run with llmstd-torch over its own
weights to localise: if those weights reproduce side A, the difference lies in that side's runtime
or graph, not in its weights, and the report says so.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmstd.checking.inputs import (
    DEFAULT_BATCH,
    DEFAULT_SEQ_LEN,
    Inputs,
    default_inputs,
    find_tokenizer,
    inputs_from_ids,
    inputs_from_text,
)
from llmstd.checking.metrics import (
    LayerReport,
    OutputReport,
    compare_hidden,
    compare_output,
    merge_names,
    sanitise,
    stages,
)
from llmstd.checking.decode import DecodeReport, decode
from llmstd.checking.evidence import evidence
from llmstd.checking.runtimes import (
    DEVICES,
    RUNTIMES,
    Side,
    choose_runtime,
    installed,
    open_side,
    run,
    torch_model,
)
from llmstd.checking.runtimes import require_reference as require_ref
from llmstd.checking.tolerances import TOLERANCES, Tolerance, judged_dtype, tolerance_for
from llmstd.config import CanonicalConfig
from llmstd.conversion import parse_size
from llmstd.errors import LlmstdError
from llmstd.runtimes.torch_model import RunOutput

__all__ = [
    "DEFAULT_BATCH", "DEFAULT_SEQ_LEN", "DEVICES", "RUNTIMES", "TOLERANCES", "CheckReport", "Inputs", "LayerReport",
    "OutputReport", "SideReport", "Tolerance", "check", "choose_runtime", "compare_hidden", "compare_output",
    "default_inputs", "find_tokenizer", "inputs_from_ids", "inputs_from_text", "judged_dtype", "stages",
    "tolerance_for",
]


@dataclass
class SideReport:
    """Where and how one side ran."""

    path: str
    format: str
    container: str
    architecture: str
    runtime: str
    runtime_detail: str
    device: str
    dtype: str
    load_seconds: float
    run_seconds: float
    notes: list[str] = field(default_factory=list)
    reference_runtime: str | None = None  # the format's reference runtime (None: only llmstd's runs it)
    in_reference: bool = False  # ran in that reference runtime
    reference_statement: str = ""  # the two facts above, in words

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CheckReport:
    """The verdict of ``check``: passed, per-output metrics, per-layer comparison, localisation."""

    a: SideReport
    b: SideReport
    inputs: dict[str, Any]
    dtype: str  # the dtype whose tolerances judged the comparison
    tolerance: Tolerance
    outputs: list[OutputReport]
    layers: list[LayerReport]
    localisation: str  # how layers were compared, or why they were not
    first_divergence: dict[str, Any] | None
    config_differences: dict[str, list[Any]]
    passed: bool
    failures: list[str]
    decode: DecodeReport | None = None  # --decode-steps: generation with the cache, step by step

    @property
    def reference(self) -> str:
        """Which runtimes the verdict rests on, in one clause (the first thing the verdict says)."""
        a, b = self.a, self.b
        if a.in_reference and b.in_reference:
            return f"against reference runtimes (A: {a.runtime}, B: {b.runtime})"
        if not a.in_reference and not b.in_reference:
            if a.reference_runtime is None and b.reference_runtime is None:
                return f"llmstd's own runtime on both sides ({a.runtime}, {b.runtime}): no reference runtime ran"
            return (f"NO reference runtime ran: A in {a.reference_statement}; B in {b.reference_statement}")
        ref, other, label = (a, b, "B") if a.in_reference else (b, a, "A")
        return f"{'A' if label == 'B' else 'B'} in its reference runtime {ref.runtime}; {label} in {other.reference_statement}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "failures": self.failures, "reference": self.reference,
            "a": self.a.to_dict(), "b": self.b.to_dict(),
            "inputs": self.inputs, "dtype": self.dtype,
            # JSON has no inf/NaN: an infinite limit (--atol inf) limits nothing, as None does.
            "tolerance": {k: sanitise(v) for k, v in self.tolerance.to_dict().items()},
            "outputs": [o.to_dict() for o in self.outputs], "layers": [layer.to_dict() for layer in self.layers],
            "localisation": self.localisation, "first_divergence": self.first_divergence,
            "config_differences": self.config_differences,
            "decode": self.decode.to_dict() if self.decode is not None else None,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)

    def summary(self) -> str:
        """The verdict: PASS or FAIL and which runtimes it rests on, then (on failure) the first
        diverging stage and what the evidence blames."""
        if self.passed:
            worst = max((o.nmse for o in self.outputs), default=0.0)
            decoded, tokens = "", ""
            if self.decode is not None:
                worst = max([worst, *(s.logits.nmse for s in self.decode.steps)])
                decoded = f" over the prompt and {len(self.decode.steps) - 1} cached decode steps"
                tokens = f"greedy tokens agreeing {self.decode.greedy_agreement:.0%}, "
            return (f"PASS {self.reference}: {self.a.path} and {self.b.path} agree{decoded} "
                    f"({tokens}NMSE {worst:.3g}, judged as {self.dtype})")
        text = f"FAIL {self.reference}: {'; '.join(self.failures)}"
        first = self.first_divergence
        if first:
            text += f" — first divergence: {first['stage']}"
            if first.get("blame"):
                text += f"; {first['blame']}"
        return text


def _config_differences(a: CanonicalConfig, b: CanonicalConfig) -> dict[str, list[Any]]:
    da, db = a.to_dict(), b.to_dict()
    return {k: [da[k], db[k]] for k in da if k not in ("dtype", "extras") and da[k] != db[k]}


def _side_report(side: Side, out: RunOutput, loaded: float) -> SideReport:
    detail = out.notes[0] if out.notes else side.runtime
    return SideReport(str(side.path), side.ckpt.format, side.ckpt.container, side.ckpt.architecture, side.runtime,
                      detail, out.device, out.dtype, round(loaded, 4), round(out.seconds, 4),
                      [*side.notes, *out.notes[1:]], side.reference, side.in_reference, side.reference_statement())


def _localise(layers: list[LayerReport], outputs_failed: bool, head: list[str]) -> dict[str, Any] | None:
    for layer in layers:
        if layer.diverged:
            return {"stage": layer.stage, "layer": layer.layer, "parameters": layer.parameters,
                    "nmse": sanitise(layer.nmse), "max_abs": sanitise(layer.max_abs)}
    if outputs_failed and layers:
        return {"stage": "head", "layer": None, "parameters": head}
    return None


def check(
    a: str | Path,
    b: str | Path,
    *,
    arch: str | None = None,
    input_ids: str | Path | Sequence[Sequence[int]] | Mapping[str, Any] | None = None,
    text: str | Sequence[str] | None = None,
    batch: int = DEFAULT_BATCH,
    seq_len: int = DEFAULT_SEQ_LEN,
    seed: int = 0,
    device: str = "cpu",
    device_a: str | None = None,
    device_b: str | None = None,
    runtime_a: str = "auto",
    runtime_b: str = "auto",
    tolerance: Tolerance | Mapping[str, float | None] | None = None,
    hidden_states: bool = True,
    require_reference: bool = False,
    decode_steps: int = 0,
    max_memory: int | str | None = None,
    device_map: str | None = None,
) -> CheckReport:
    """Run checkpoints ``a`` (the reference) and ``b`` on the same inputs and compare them.

    Returns a :class:`CheckReport`; ``report.passed`` is False when any output is out of
    tolerance. Raises :class:`~llmstd.errors.LlmstdError` subclasses when a side cannot be loaded
    or run (e.g. :class:`~llmstd.errors.MissingDependencyError` for an explicitly requested runtime).
    ``decode_steps`` > 0 also generates that many tokens with each side's key/value cache and
    compares every step (:mod:`llmstd.checking.decode`). ``max_memory`` (bytes, or "6GB") bounds
    what each side holds: llmstd-torch streams one layer's weights at a time and transformers runs
    through accelerate's offload, so models larger than memory can be checked; sides run one after
    the other. ``device_map`` (``auto``, ...) places a transformers side with accelerate, spread over
    every GPU with ``device="cuda"``.
    """
    if decode_steps < 0:
        raise LlmstdError(f"--decode-steps must be 0 or more, got {decode_steps}")
    if input_ids is not None and text is not None:
        raise LlmstdError("give token ids or text, not both")
    budget = parse_size(max_memory)
    side_a = open_side("a", a, arch, runtime_a, device_a or device, budget, device_map)
    side_b = open_side("b", b, arch, runtime_b, device_b or device, budget, device_map)
    if require_reference:
        require_ref([side_a, side_b])
    configs = [side_a.ckpt.config, side_b.ckpt.config]
    if input_ids is not None:
        inputs = inputs_from_ids(input_ids, configs)
    elif text is not None:
        inputs = inputs_from_text([text] if isinstance(text, str) else list(text), [side_a.path, side_b.path], configs)
    else:
        inputs = default_inputs(configs, batch=batch, seq_len=seq_len, seed=seed)

    run_a, load_a = run(side_a, inputs, hidden_states)
    run_b, load_b = run(side_b, inputs, hidden_states)
    # Stored dtypes count too: bfloat16 weights computed in float32 still carry bfloat16 rounding.
    dtype = judged_dtype(judged_dtype(run_a.dtype, run_b.dtype), judged_dtype(*(c.dtype for c in configs)))
    tol = tolerance_for(dtype, tolerance)
    mask = inputs.attention_mask

    outputs = [compare_output(name, run_a.outputs[name], run_b.outputs.get(name, np.zeros(0)), mask, tol)
               for name in run_a.outputs]
    failures = [f for o in outputs for f in o.failures]
    missing = [n for n in run_b.outputs if n not in run_a.outputs]
    failures += [f"side A produced no '{n}' output" for n in missing]
    head = merge_names(stages(configs[0])[-1][2], stages(configs[1])[-1][2])

    layers: list[LayerReport] = []
    localisation = "hidden states not requested"
    states_a, states_b = run_a.hidden_states, run_b.hidden_states
    rerun_agrees: bool | None = None
    if hidden_states:
        if failures and (states_a is None or states_b is None):
            # A runtime without hidden states (an ONNX graph): localise with llmstd-torch over that
            # side's own weights, which also tells weight faults from runtime/graph faults.
            fallback = _fallback(side_a, side_b, run_a, run_b, inputs)
            if fallback is None:
                localisation = "not available: a runtime exposes no hidden states and torch is not installed"
            else:
                rerun_a, rerun_b, localisation = fallback
                states_a, states_b = rerun_a.hidden_states, rerun_b.hidden_states
                rerun_agrees = all(compare_output(n, rerun_a.outputs[n], rerun_b.outputs[n], mask, tol).passed
                                   for n in rerun_a.outputs if n in rerun_b.outputs)
        elif states_a is None or states_b is None:
            localisation = "not compared: a runtime exposes no hidden states (outputs agree, so none needed)"
        else:
            localisation = "hidden states of both runtimes compared"
        if states_a is not None and states_b is not None:
            if len(states_a) != len(states_b):
                localisation = f"not compared: {len(states_a)} hidden states on side A, {len(states_b)} on side B"
            else:
                layers = compare_hidden(states_a, states_b, mask, tol, *configs)
    decoded = None
    if decode_steps > 0:
        decoded = decode(side_a, side_b, inputs, decode_steps, tol)
        failures += [f"decode step {s.step}: {f}" for s in decoded.steps for f in s.logits.failures]
    first = _localise(layers, bool(failures) and rerun_agrees is not True, head)
    differences = _config_differences(*configs)
    if first is None and failures and rerun_agrees:
        first = {"stage": "runtime", "layer": None, "parameters": [], "differing_parameters": {},
                 "blame": "run by llmstd-torch, the two sides' weights agree in every layer and output: "
                          "the difference lies in a runtime or graph, not in the weights"}
    elif first is not None:
        first.update(evidence(first["parameters"], side_a.ckpt, side_b.ckpt, differences))
    return CheckReport(
        a=_side_report(side_a, run_a, load_a), b=_side_report(side_b, run_b, load_b), inputs=inputs.to_dict(),
        dtype=dtype, tolerance=tol, outputs=outputs, layers=layers, localisation=localisation,
        first_divergence=first, config_differences=differences, passed=not failures,
        failures=failures, decode=decoded,
    )


def _fallback(side_a: Side, side_b: Side, run_a: RunOutput, run_b: RunOutput,
              inputs: Inputs) -> tuple[RunOutput, RunOutput, str] | None:
    """Both sides with hidden states: a side whose runtime exposes none is re-run with llmstd-torch."""
    if not installed("torch"):
        return None
    runs, rerun = [], []
    for side, out in ((side_a, run_a), (side_b, run_b)):
        if out.hidden_states is not None:
            runs.append(out)
            continue
        model = torch_model(side)
        runs.append(model(inputs.input_ids, inputs.attention_mask, inputs.token_type_ids))
        rerun.append(side.label.upper())
    return runs[0], runs[1], (f"weights of side {' and '.join(rerun)} re-run with llmstd-torch to compare hidden "
                              "states (its runtime exposes none)")
