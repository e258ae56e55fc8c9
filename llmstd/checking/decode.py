"""``check --decode-steps N``: generation with the key/value cache, step by step, on both sides.

Each side runs the prompt once (left-padded, so every row's last position is a real token), then
N single-token steps feeding its own cache back, in its own runtime: transformers with its cache
object, onnxruntime with the graph's ``past_key_values``/``present`` (:mod:`llmstd.onnx_graph.cache`),
llmstd's torch and TF runtimes with the model definition's cache. Side A runs first, choosing its
greedy tokens; side B is then fed the same tokens (so one near-tie cannot make the sides compare
different texts from then on, and only one model is in memory at a time). Each step's next-token
logits are compared with check's tolerances and its greedy tokens counted.
Positions follow ``generate``: ``cumsum(attention_mask) - 1``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmstd.checking.inputs import Inputs
from llmstd.checking.metrics import OutputReport, compare_output
from llmstd.checking.runtimes import Side, load_transformers, onnx_session, torch_model
from llmstd.checking.tolerances import Tolerance
from llmstd.errors import LlmstdError, require


@dataclass
class DecodeStep:
    step: int  # 0: the prompt's next token; k: after k generated tokens
    logits: OutputReport
    tokens_a: list[int]
    tokens_b: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "logits": self.logits.to_dict(), "tokens_a": self.tokens_a,
                "tokens_b": self.tokens_b, "greedy_agree": self.tokens_a == self.tokens_b}


@dataclass
class DecodeReport:
    steps: list[DecodeStep] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(s.logits.passed for s in self.steps)

    @property
    def first_failing_step(self) -> int | None:
        return next((s.step for s in self.steps if not s.logits.passed), None)

    @property
    def greedy_agreement(self) -> float:
        pairs = [(a, b) for s in self.steps for a, b in zip(s.tokens_a, s.tokens_b, strict=True)]
        return sum(a == b for a, b in pairs) / len(pairs) if pairs else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "first_failing_step": self.first_failing_step,
                "greedy_agreement": self.greedy_agreement, "steps": [s.to_dict() for s in self.steps]}


def left_padded(inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """The batch with each row's padding moved to the left (its tokens in order, last one real)."""
    ids, mask = inputs.input_ids.copy(), inputs.attention_mask.copy()
    for row in range(ids.shape[0]):
        pad = int((mask[row] == 0).sum())
        ids[row], mask[row] = np.roll(ids[row], pad), np.roll(mask[row], pad)
    return ids, mask


def positions(mask: np.ndarray) -> np.ndarray:
    return np.where(mask == 0, 1, mask.cumsum(-1) - 1)


class _Decoder:
    """One side's cached generation: each call runs new tokens ``ids`` at ``positions`` (``mask``
    covers the cached and the new ones), keeps the cache for the next call, and returns the
    next-token logits [B, V] (float32)."""

    def __call__(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _LlmstdDecoder(_Decoder):
    def __init__(self, model: Any) -> None:
        self.model, self.past = model, None

    def __call__(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        logits, self.past = self.model.decode(ids, mask, pos, self.past)
        return logits


class _TransformersDecoder(_Decoder):
    def __init__(self, side: Side) -> None:
        self.torch = require("torch", "torch")
        self.model, _, _, self.device = load_transformers(side)
        self.cache = None

    def __call__(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        torch = self.torch
        as_long = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64), device=self.device)  # noqa: E731
        with torch.no_grad():
            out = self.model(input_ids=as_long(ids), attention_mask=as_long(mask), position_ids=as_long(pos),
                             past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1].detach().float().cpu().numpy()


class _OnnxDecoder(_Decoder):
    def __init__(self, side: Side) -> None:
        from llmstd.onnx_graph import cache

        self.cache = cache
        self.session, graph, _ = onnx_session(side)
        names = {i.name for i in self.session.get_inputs()}
        if not {"position_ids", "past_key_values.0.key"} <= names:
            raise LlmstdError("this ONNX graph has no key/value cache inputs, so it cannot decode step by step",
                              file=graph, hint="write it with llmstd convert --to onnx, or drop --decode-steps")
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.past: dict[str, np.ndarray] | None = None

    def __call__(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        past = self.past if self.past is not None else self.cache.empty_past(self.session.get_inputs(), ids.shape[0])
        values = dict(zip(self.outputs, self.session.run(
            None, {"input_ids": ids, "attention_mask": mask, "position_ids": pos, **past}), strict=True))
        self.past = self.cache.next_past(values)
        return np.asarray(values["logits"][:, -1], dtype=np.float32)


def _decoder(side: Side) -> _Decoder:
    if side.runtime == "transformers":
        return _TransformersDecoder(side)
    if side.runtime == "onnxruntime":
        return _OnnxDecoder(side)
    if side.runtime == "llmstd-torch":
        return _LlmstdDecoder(torch_model(side))
    if side.runtime == "llmstd-tf":
        module = importlib.import_module("llmstd.runtimes.tf_model")
        return _LlmstdDecoder(module.TFModel(side.ckpt.tensors, side.ckpt.config))
    raise LlmstdError(f"--decode-steps is not available for runtime {side.runtime} ({side.path})",
                      hint="run that side with --runtime-a/-b llmstd-tf, or drop --decode-steps")


def _generate(side: Side, ids: np.ndarray, mask: np.ndarray, steps: int,
              feed: list[np.ndarray] | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The next-token logits of the prompt and of ``steps`` cached steps on one side, and the tokens
    it was fed: ``feed`` (side A's), or its own greedy tokens when None. One side's model is loaded
    at a time."""
    decoder = _decoder(side)
    logits = [decoder(ids, mask, positions(mask))]
    fed = []
    for step in range(steps):
        token = (logits[-1].argmax(-1) if feed is None else feed[step])[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones_like(token)], axis=1)
        logits.append(decoder(token, mask, positions(mask)[:, -1:]))
        fed.append(token[:, 0])
    return logits, fed


def decode(side_a: Side, side_b: Side, inputs: Inputs, steps: int, tol: Tolerance) -> DecodeReport:
    """The prompt and ``steps`` cached single-token steps on both sides, compared step by step."""
    for side in (side_a, side_b):
        if not side.ckpt.config.causal or side.ckpt.config.head != "causal_lm":
            raise LlmstdError(f"--decode-steps needs causal language models; {side.path} is not one")
    ids, mask = left_padded(inputs)
    logits_a, tokens = _generate(side_a, ids, mask, steps, None)  # both sides continue side A's text
    logits_b, _ = _generate(side_b, ids, mask, steps, tokens)
    rows = np.ones((ids.shape[0], 1), dtype=np.int64)
    report = DecodeReport()
    for step, (a, b) in enumerate(zip(logits_a, logits_b, strict=True)):
        report.steps.append(DecodeStep(step, compare_output("logits", a[:, None], b[:, None], rows, tol),
                                       [int(t) for t in a.argmax(-1)], [int(t) for t in b.argmax(-1)]))
    return report
