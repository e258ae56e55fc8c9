"""``check --decode-steps N``: generation with the key/value cache, step by step, on both sides.

Each side runs the prompt once (left-padded, so every row's last position is a real token), then
N single-token steps feeding its own cache back, in its own runtime: transformers with its cache
object, onnxruntime with the graph's ``past_key_values``/``present`` (:mod:`llmstd.onnx_graph.cache`),
llmstd's torch and TF runtimes with the model definition's cache. Both sides are fed side A's greedy
token at every step (so one near-tie cannot make the sides compare different texts from then on);
each step's next-token logits are compared with check's tolerances and its greedy tokens counted.
Positions follow ``generate``: ``cumsum(attention_mask) - 1``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmstd.checking.inputs import Inputs
from llmstd.checking.metrics import OutputReport, compare_output
from llmstd.checking.runtimes import Side, _hf_class, _quiet_transformers, _transformers
from llmstd.checking.tolerances import Tolerance
from llmstd.errors import LlmstdError, require
from llmstd.runtimes import torch_model as tm


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
    """One side's cached generation: ``prompt`` then ``step``, each giving next-token logits [B, V]."""

    def prompt(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def step(self, token: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _LlmstdDecoder(_Decoder):
    def __init__(self, model: Any) -> None:
        self.model, self.past = model, None

    def prompt(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        logits, self.past = self.model.decode(ids, mask, positions(mask), None)
        return logits

    def step(self, token: np.ndarray, mask: np.ndarray) -> np.ndarray:
        logits, self.past = self.model.decode(token, mask, positions(mask)[:, -1:], self.past)
        return logits


class _TransformersDecoder(_Decoder):
    def __init__(self, side: Side) -> None:
        self.torch = require("torch", "torch")
        transformers, _ = _transformers()
        assert transformers is not None
        self.device = tm.resolve_device(side.device)
        with _quiet_transformers(transformers):
            self.model = getattr(transformers, _hf_class(side.ckpt)).from_pretrained(
                str(side.path), attn_implementation="eager", dtype="auto").to(self.device).eval()
        self.cache = None

    def _run(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        torch = self.torch
        as_long = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64), device=self.device)  # noqa: E731
        with torch.no_grad():
            out = self.model(input_ids=as_long(ids), attention_mask=as_long(mask), position_ids=as_long(pos),
                             past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1].detach().float().cpu().numpy()

    def prompt(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run(ids, mask, positions(mask))

    def step(self, token: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run(token, mask, positions(mask)[:, -1:])


class _OnnxDecoder(_Decoder):
    def __init__(self, side: Side) -> None:
        from llmstd.checking.runtimes import onnx_file
        from llmstd.onnx_graph import cache

        self.cache = cache
        ort = importlib.import_module("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_file(side.path)), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        names = {i.name for i in self.session.get_inputs()}
        if not {"position_ids", "past_key_values.0.key"} <= names:
            raise LlmstdError("this ONNX graph has no key/value cache inputs, so it cannot decode step by step",
                              file=side.path, hint="write it with llmstd convert --to onnx, or drop --decode-steps")
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.past: dict[str, np.ndarray] = {}

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        values = dict(zip(self.outputs, self.session.run(None, feeds), strict=True))
        self.past = self.cache.next_past(values)
        return np.asarray(values["logits"][:, -1], dtype=np.float32)

    def prompt(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run({"input_ids": ids, "attention_mask": mask, "position_ids": positions(mask),
                          **self.cache.empty_past(self.session.get_inputs(), ids.shape[0])})

    def step(self, token: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run({"input_ids": token, "attention_mask": mask, "position_ids": positions(mask)[:, -1:],
                          **self.past})


def _decoder(side: Side) -> _Decoder:
    if side.runtime == "transformers":
        return _TransformersDecoder(side)
    if side.runtime == "onnxruntime":
        return _OnnxDecoder(side)
    if side.runtime == "llmstd-torch":
        return _LlmstdDecoder(tm.TorchModel(side.ckpt.tensors, side.ckpt.config, device=side.device))
    if side.runtime == "llmstd-tf":
        module = importlib.import_module("llmstd.runtimes.tf_model")
        return _LlmstdDecoder(module.TFModel(side.ckpt.tensors, side.ckpt.config))
    raise LlmstdError(f"--decode-steps is not available for runtime {side.runtime} ({side.path})",
                      hint="run that side with --runtime-a/-b llmstd-tf, or drop --decode-steps")


def decode(side_a: Side, side_b: Side, inputs: Inputs, steps: int, tol: Tolerance) -> DecodeReport:
    """The prompt and ``steps`` cached single-token steps on both sides, compared step by step."""
    for side in (side_a, side_b):
        if not side.ckpt.config.causal or side.ckpt.config.head != "causal_lm":
            raise LlmstdError(f"--decode-steps needs causal language models; {side.path} is not one")
    ids, mask = left_padded(inputs)
    a, b = _decoder(side_a), _decoder(side_b)
    report = DecodeReport()
    logits_a, logits_b = a.prompt(ids, mask), b.prompt(ids, mask)
    rows = np.ones((ids.shape[0], 1), dtype=np.int64)
    for step in range(steps + 1):
        tokens_a, tokens_b = logits_a.argmax(-1), logits_b.argmax(-1)
        report.steps.append(DecodeStep(step, compare_output("logits", logits_a[:, None], logits_b[:, None], rows, tol),
                                       [int(t) for t in tokens_a], [int(t) for t in tokens_b]))
        if step == steps:
            break
        token = tokens_a[:, None].astype(np.int64)  # both sides continue side A's text
        mask = np.concatenate([mask, rows], axis=1)
        logits_a, logits_b = a.step(token, mask), b.step(token, mask)
    return report
