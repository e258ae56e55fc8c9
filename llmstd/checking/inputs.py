"""The token batch ``llmstd check`` feeds both sides: the deterministic default, user token ids, or
text encoded by a tokenizer found next to either checkpoint. Always right-padded, with masks."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmstd.config import CanonicalConfig
from llmstd.errors import LlmstdError, MissingDependencyError

DEFAULT_BATCH = 2
DEFAULT_SEQ_LEN = 128



@dataclass
class Inputs:
    """One token batch, right-padded: ``attention_mask`` is 1 on real tokens, 0 on padding."""

    input_ids: np.ndarray  # int64 [batch, seq]
    attention_mask: np.ndarray  # int64 [batch, seq]
    token_type_ids: np.ndarray | None  # int64 [batch, seq] for models with token types
    source: str  # default | input-ids | text

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "batch": int(self.input_ids.shape[0]), "seq_len": int(self.input_ids.shape[1]),
                "real_tokens": [int(n) for n in self.attention_mask.sum(axis=1)]}


def _limits(configs: Sequence[CanonicalConfig]) -> tuple[int, int]:
    return min(c.vocab_size for c in configs), min(c.max_positions for c in configs)


def _pad_id(config: CanonicalConfig, vocab_size: int) -> int:
    pad = config.pad_token_id
    return pad if isinstance(pad, int) and 0 <= pad < vocab_size else 0


def _token_types(mask: np.ndarray, configs: Sequence[CanonicalConfig]) -> np.ndarray | None:
    types = min(c.type_vocab_size for c in configs)
    if types <= 0:
        return None
    out = np.zeros_like(mask)
    if types > 1:  # two segments, so every token-type row the inputs can reach is exercised
        for row, length in enumerate(mask.sum(axis=1)):
            out[row, length // 2:length] = 1
    return out


def default_inputs(configs: Sequence[CanonicalConfig], *, batch: int = DEFAULT_BATCH, seq_len: int = DEFAULT_SEQ_LEN,
                   seed: int = 0) -> Inputs:
    """The deterministic default batch: ``batch`` rows of ``seq_len`` tokens (capped by the models),
    row 0 full, later rows right-padded progressively (row 1 of 2 keeps 3/4 of its tokens)."""
    if batch < 1 or seq_len < 1:
        raise LlmstdError("batch and sequence length must be positive")
    vocab_size, max_positions = _limits(configs)
    seq = min(seq_len, max_positions)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for row in range(1, batch):
        mask[row, max(1, seq - (row * seq) // (2 * batch)):] = 0
    ids[mask == 0] = _pad_id(configs[0], vocab_size)
    return Inputs(ids, mask, _token_types(mask, configs), "default")


def _ragged(rows: Sequence[Sequence[int]], configs: Sequence[CanonicalConfig], source: str) -> Inputs:
    vocab_size, max_positions = _limits(configs)
    if not rows or not all(len(r) for r in rows):
        raise LlmstdError("token ids must be a non-empty list of non-empty sequences")
    seq = max(len(r) for r in rows)
    if seq > max_positions:
        raise LlmstdError(f"a sequence of {seq} tokens exceeds max_positions = {max_positions}",
                          hint="shorten the input")
    ids = np.full((len(rows), seq), _pad_id(configs[0], vocab_size), dtype=np.int64)
    mask = np.zeros((len(rows), seq), dtype=np.int64)
    for row, tokens in enumerate(rows):
        ids[row, :len(tokens)] = np.asarray(tokens, dtype=np.int64)
        mask[row, :len(tokens)] = 1
    _check_ids(ids, vocab_size)
    return Inputs(ids, mask, _token_types(mask, configs), source)


def _check_ids(ids: np.ndarray, vocab_size: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise LlmstdError(f"token ids must lie in [0, {vocab_size}), got [{ids.min()}, {ids.max()}]")


def _int_matrix(value: Any, what: str) -> np.ndarray:
    """A JSON [batch, seq] list of integers as int64, or an LlmstdError (never a numpy/torch one)."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        array = None
    if array is None or array.ndim != 2 or not (array.size == 0 or array.dtype == np.bool_
                                                or np.issubdtype(array.dtype, np.integer)):
        raise LlmstdError(f"{what} must be a rectangular [batch, seq] list of integers")
    return array.astype(np.int64)


def inputs_from_ids(spec: str | Path | Sequence[Sequence[int]] | Mapping[str, Any],
                    configs: Sequence[CanonicalConfig]) -> Inputs:
    """User token ids: a list of lists (ragged rows are right-padded), a mapping with ``input_ids``
    and optionally ``attention_mask``/``token_type_ids``, or a JSON file / JSON text holding either."""
    data: Any = spec
    if isinstance(spec, (str, Path)):
        text = str(spec)
        path = Path(text)
        if not text.lstrip().startswith(("[", "{")) and path.is_file():
            from llmstd.jsonfile import loads

            data = loads(path.read_bytes(), source=path)
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                raise LlmstdError(f"--input-ids {text!r} is neither a file nor JSON",
                                  hint='give a JSON file or text such as "[[1, 2, 3], [4, 5]]"') from None
    if isinstance(data, Mapping):
        if "input_ids" not in data:
            raise LlmstdError("token-id JSON objects need an 'input_ids' key")
        rows = data["input_ids"]
        if "attention_mask" in data:
            ids = _int_matrix(rows, "input_ids")
            mask = _int_matrix(data["attention_mask"], "attention_mask")
            if ids.ndim != 2 or mask.shape != ids.shape or not ids.size:
                raise LlmstdError("input_ids and attention_mask must be equal-shaped [batch, seq] lists")
            if not np.isin(mask, (0, 1)).all():
                raise LlmstdError("attention_mask values must be 0 or 1")
            if (np.diff(mask, axis=1) > 0).any() or (mask[:, 0] == 0).any():
                raise LlmstdError("only right padding is supported: each attention_mask row must be 1…1 0…0",
                                  hint="runtimes disagree on positions under left padding")
            vocab_size, max_positions = _limits(configs)
            if ids.shape[1] > max_positions:
                raise LlmstdError(f"a sequence of {ids.shape[1]} tokens exceeds max_positions = {max_positions}")
            _check_ids(ids, vocab_size)
            types = (_int_matrix(data["token_type_ids"], "token_type_ids") if "token_type_ids" in data
                     else _token_types(mask, configs))
            if "token_type_ids" in data:
                assert types is not None
                if types.shape != ids.shape:
                    raise LlmstdError("token_type_ids must have the shape of input_ids")
                type_vocab = min(c.type_vocab_size for c in configs)
                if type_vocab > 0 and types.size and (types.min() < 0 or types.max() >= type_vocab):
                    raise LlmstdError(f"token_type_ids must lie in [0, {type_vocab}), "
                                      f"got [{types.min()}, {types.max()}]")
            return Inputs(ids, mask, types, "input-ids")
        data = rows
    if not isinstance(data, Sequence) or not all(isinstance(r, Sequence) and not isinstance(r, str) for r in data):
        raise LlmstdError("token ids must be a list of lists of integers")
    if not all(isinstance(t, int) and not isinstance(t, bool) for r in data for t in r):
        raise LlmstdError("token ids must be integers")
    return _ragged(data, configs, "input-ids")


TOKENIZER_FILE = "tokenizer.json"


def find_tokenizer(paths: Sequence[Path]) -> Path | None:
    """The first directory among ``paths`` (or their parents for files) holding a tokenizer."""
    for path in paths:
        directory = path if path.is_dir() else path.parent
        if (directory / TOKENIZER_FILE).is_file():
            return directory
    return None


def inputs_from_text(texts: Sequence[str], paths: Sequence[Path], configs: Sequence[CanonicalConfig]) -> Inputs:
    """Encode ``texts`` with the tokenizer next to either checkpoint (``tokenizer.json``)."""
    directory = find_tokenizer(paths)
    if directory is None:
        raise LlmstdError("--text needs a tokenizer, and neither checkpoint has a tokenizer.json",
                          hint="pass token ids with --input-ids instead, or copy tokenizer.json next to the weights")
    try:
        tokenizers = importlib.import_module("tokenizers")
    except ImportError:
        tokenizers = None
    if tokenizers is None:
        raise MissingDependencyError("--text needs the 'tokenizers' package", hint="pip install tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    rows = [tokenizer.encode(t).ids for t in texts]
    return _ragged(rows, configs, "text")
