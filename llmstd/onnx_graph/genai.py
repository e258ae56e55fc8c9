"""``genai_config.json``: what onnxruntime-genai needs beside llmstd's decoder graph to generate with
it (``onnxruntime_genai.Model(dir)``). The graph already has genai's input and output names
(:mod:`llmstd.onnx_graph.cache`); this file tells genai those names, the cache geometry and the
special tokens. Tokenizer files reach the package as side files of the source checkpoint.

Sliding windows, soft-caps, QK-norm and the like are computed inside the graph over the full cache,
so genai needs to know nothing about them and slides nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmstd.config import CanonicalConfig
from llmstd.errors import ConfigError

#: The model type genai is told. Every llmstd decoder graph computes its whole architecture itself
#: (windows, soft-caps, rotary scaling) behind the same interface, so genai gets one type for all:
#: its generic decoder, "llama". (genai 0.18's "gpt2" type expects other inputs, and it knows no
#: "gpt_neox"; the tests generate every architecture through this type, token-identical to
#: transformers.)
GENAI_TYPE = "llama"


def _token_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def genai_config(config: CanonicalConfig, model_file: str, generation: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The genai_config.json body for a decoder graph written as ``model_file``. ``generation`` is the
    source's generation_config.json, whose special tokens win over the model config's (as
    transformers' generate takes them)."""
    if not config.causal or config.head != "causal_lm":
        raise ConfigError(f"an onnxruntime-genai package needs a causal language model; '{config.architecture}' "
                          f"with head '{config.head}' is not one", hint="write a plain ONNX graph (--onnx-package plain)")
    generation = dict(generation or {})
    eos = _token_ids(generation.get("eos_token_id", config.eos_token_id))
    if not eos:
        raise ConfigError("onnxruntime-genai needs an eos_token_id, and neither config.json nor "
                          "generation_config.json has one", hint="add eos_token_id to config.json")
    bos = _token_ids(generation.get("bos_token_id", config.bos_token_id))
    pad = _token_ids(generation.get("pad_token_id", config.pad_token_id)) or eos
    decoder = {
        "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
        "filename": model_file,
        "head_size": config.head_dim,
        "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_heads,
        "num_hidden_layers": config.num_layers,
        "num_key_value_heads": config.num_kv_heads,
        "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                   "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
        "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value"},
    }
    model = {
        "type": GENAI_TYPE,
        "context_length": config.max_positions,
        "vocab_size": config.vocab_size,
        "bos_token_id": bos[0] if bos else None,
        "eos_token_id": eos if len(eos) > 1 else eos[0],
        "pad_token_id": pad[0],
        "decoder": decoder,
    }
    # Greedy by default; a sampling setup from generation_config.json is carried over.
    search = {
        "do_sample": bool(generation.get("do_sample", False)),
        "temperature": float(generation.get("temperature") or 1.0),
        "top_k": int(generation.get("top_k") or 50),
        "top_p": float(generation.get("top_p") or 1.0),
        "repetition_penalty": float(generation.get("repetition_penalty") or 1.0),
        "max_length": config.max_positions,
        "min_length": 0,
        "num_beams": 1,
        "num_return_sequences": 1,
        "past_present_share_buffer": False,  # the cache grows by concatenation in the graph
        "early_stopping": True,
        "length_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "diversity_penalty": 0.0,
    }
    return {"model": model, "search": search}
