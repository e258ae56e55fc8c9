"""KerasHub tokenizer assets built from a Hugging Face tokenizer, for ``keras-hub`` presets.

A preset's tokenizer is ``tokenizer.json`` (the serialised KerasHub tokenizer class) plus its
vocabulary under ``assets/tokenizer/``: ``vocabulary.txt`` for WordPiece (BERT), ``vocabulary.json``
and ``merges.txt`` for byte-level BPE (GPT-2 and the models that reuse its byte encoding). Which
class and kind an architecture uses, and the special tokens that class insists on finding in the
vocabulary, are declared in its map (``[keras_hub.tokenizer]``). When the source's tokenizer is not
of that kind, or lacks one of those tokens, no tokenizer is written and the reason is returned: the
preset is then weights-only (``from_preset(..., preprocessor=None)``).

Only the vocabulary travels: KerasHub's tokenizers apply their own fixed pre-tokenization (GPT-2's
split pattern; BERT's basic tokenizer), so a Hugging Face tokenizer that splits differently encodes
some texts differently in KerasHub -- WordPiece and GPT-2's own byte-level BPE are the cases that
agree (the tests compare ids on sample text).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmstd.checkpoint import SideFiles
from llmstd.errors import FormatError
from llmstd.formats.keras_objects import layer
from llmstd.jsonfile import read_json_object
from llmstd.maps import KerasTokenizer

ASSETS = "assets/tokenizer/"
CONFIG = "tokenizer.json"


@dataclass(frozen=True)
class Tokenizer:
    config: dict[str, Any]  # the serialised tokenizer: tokenizer.json, and inside the task's preprocessor
    assets: dict[str, bytes]  # path relative to the preset -> bytes


def _config(spec: KerasTokenizer, extra: Mapping[str, Any]) -> dict[str, Any]:
    return layer(spec.cls, "int32", config_file=CONFIG, sequence_length=None, **extra)


def build(spec: KerasTokenizer, side: SideFiles) -> tuple[Tokenizer | None, str | None]:
    """(the tokenizer, None), or (None, why no tokenizer is written)."""
    files = {rel: path for rel, path in side.files.items() if "/" not in rel}
    try:
        if spec.kind == "wordpiece":
            return _wordpiece(spec, files)
        return _byte_bpe(spec, files)
    except FormatError as exc:
        return None, f"the source's tokenizer files cannot be read ({exc.message})"


def _missing(spec: KerasTokenizer, vocab: Mapping[str, int] | list[str]) -> str | None:
    absent = [t for t in spec.special if t not in vocab]
    if absent:
        return (f"KerasHub's {spec.cls} needs {', '.join(absent)} in the vocabulary, which this tokenizer lacks")
    return None


def _wordpiece(spec: KerasTokenizer, files: Mapping[str, Path]) -> tuple[Tokenizer | None, str | None]:
    if "vocab.txt" not in files:
        return None, f"KerasHub's {spec.cls} is WordPiece, and the source has no vocab.txt"
    vocab = files["vocab.txt"].read_text(encoding="utf-8").splitlines()
    why = _missing(spec, vocab)
    if why:
        return None, why
    settings = read_json_object(files["tokenizer_config.json"]) if "tokenizer_config.json" in files else {}
    lowercase = bool(settings.get("do_lower_case", True))
    strip_accents = settings.get("strip_accents")
    extra = {"vocabulary": None, "lowercase": lowercase,
             "strip_accents": lowercase if strip_accents is None else bool(strip_accents), "split": True,
             "suffix_indicator": "##", "oov_token": "[UNK]", "special_tokens": None,
             "special_tokens_in_strings": False}
    return Tokenizer(_config(spec, extra), {ASSETS + "vocabulary.txt": ("\n".join(vocab) + "\n").encode("utf-8")}), None


def _byte_bpe(spec: KerasTokenizer, files: Mapping[str, Path]) -> tuple[Tokenizer | None, str | None]:
    if "tokenizer.json" in files:
        model = read_json_object(files["tokenizer.json"]).get("model", {})
        if not isinstance(model, dict) or model.get("type") != "BPE":
            return None, f"KerasHub's {spec.cls} is byte-level BPE, and the source's tokenizer.json is not BPE"
        vocab, merges = dict(model.get("vocab", {})), model.get("merges", [])
        for token in read_json_object(files["tokenizer.json"]).get("added_tokens", []):
            vocab[token["content"]] = token["id"]
    elif "vocab.json" in files and "merges.txt" in files:
        vocab = read_json_object(files["vocab.json"])
        merges = [m for m in files["merges.txt"].read_text(encoding="utf-8").splitlines()
                  if m and not m.startswith("#version")]
    else:
        return None, f"KerasHub's {spec.cls} is byte-level BPE, and the source has no tokenizer.json or vocab.json"
    merges = [" ".join(m) if isinstance(m, list) else m for m in merges]
    why = _missing(spec, vocab)
    if why:
        return None, why
    config = _config(spec, {"add_prefix_space": False, "unsplittable_tokens": list(spec.special)})
    return Tokenizer(config, {ASSETS + "vocabulary.json": json.dumps(vocab, ensure_ascii=False).encode("utf-8"),
                              ASSETS + "merges.txt": "\n".join(merges).encode("utf-8")}), None

