"""Tiny randomized Hugging Face models for the ONNX tests, and the helpers that run them with torch
and with onnxruntime.

Every parameter is random (matrices ~N(0, 0.1²), vectors — biases and norm weights — ~N(0, 0.5²)):
transformers' init leaves biases at 0 and norm weights at 1, and exporters drop or merge such
constant tensors, which would hide a swapped bias or a lost tensor. torch and transformers are
imported lazily so that collecting the tests stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import helpers

VOCAB = 128
SEQ = 72  # tokens per test sequence (>= 64, and > sliding_window so the window matters)

_DECODER_COMMON = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
                   "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}

# kind -> (config class, model class, config kwargs)
KINDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             {"vocab_size": VOCAB, "n_positions": 128, "n_embd": 32, "n_layer": 2, "n_head": 4, "bos_token_id": 1,
              "eos_token_id": 2, "pad_token_id": 0}),
    "bert-mlm": ("BertConfig", "BertForMaskedLM",
                 {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "intermediate_size": 64, "max_position_embeddings": 128, "type_vocab_size": 2}),
    "bert": ("BertConfig", "BertModel",
             {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 64, "max_position_embeddings": 128, "type_vocab_size": 2, "hidden_act": "gelu_new"}),
    "llama": ("LlamaConfig", "LlamaForCausalLM", {**_DECODER_COMMON, "tie_word_embeddings": False}),
    "llama-tied": ("LlamaConfig", "LlamaForCausalLM",
                   {**_DECODER_COMMON, "tie_word_embeddings": True, "rope_theta": 500000.0,
                    "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    "mistral": ("MistralConfig", "MistralForCausalLM",
                {**_DECODER_COMMON, "sliding_window": 16, "tie_word_embeddings": False}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {**_DECODER_COMMON, "tie_word_embeddings": True}),
}
DECODERS = ("gpt2", "llama", "llama-tied", "mistral", "qwen2")
ENCODERS = ("bert-mlm", "bert")


def randomize_(model: Any, seed: int) -> Any:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters(remove_duplicate=True)):
            scale = 0.5 if param.dim() == 1 else 0.1
            param.copy_(torch.randn(param.shape, generator=gen) * scale)
    model.tie_weights()
    return model


def build(kind: str, seed: int = 0, attn_implementation: str = "eager") -> Any:
    import torch
    import transformers

    config_cls, model_cls, kwargs = KINDS[kind]
    config = getattr(transformers, config_cls)(**kwargs)
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config)
    randomize_(model, seed)
    model.eval()
    return model


def save(model: Any, directory: Path) -> Path:
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def batch(kind: str, seq: int = SEQ, seed: int = 1) -> dict[str, np.ndarray]:
    """Three sequences: full, right-padded (last 9 masked) and left-padded (first 13 masked)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, size=(3, seq), dtype=np.int64)
    mask = np.ones((3, seq), dtype=np.int64)
    mask[1, seq - 9:] = 0
    mask[2, :13] = 0
    ids[mask == 0] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if kind in ENCODERS:
        types = np.zeros((3, seq), dtype=np.int64)
        types[:, seq // 2:] = 1
        out["token_type_ids"] = types
    return out


def torch_outputs(model: Any, kind: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference outputs, named as llmstd's ONNX graphs name them."""
    import torch

    feeds = {k: torch.from_numpy(v) for k, v in inputs.items()}
    if kind in DECODERS:
        feeds["position_ids"] = torch.from_numpy(helpers.decoder_positions(inputs["attention_mask"]))
    with torch.no_grad():
        out = model(**feeds, output_hidden_states=kind == "bert-mlm")
    if kind == "bert-mlm":
        return {"logits": out.logits.numpy(), "last_hidden_state": out.hidden_states[-1].numpy()}
    if kind == "bert":
        return {"last_hidden_state": out.last_hidden_state.numpy(), "pooler_output": out.pooler_output.numpy()}
    return {"logits": out.logits.numpy()}


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def ort_outputs(session: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a whole sequence: decoder graphs get generate's positions (as :func:`torch_outputs` gives
    the reference) and an empty key/value cache."""
    from llmstd.onnx_graph.cache import empty_past

    names = [o.name for o in session.get_outputs()]
    ids = inputs["input_ids"]
    available = {"position_ids": helpers.decoder_positions(inputs["attention_mask"]),
                 **empty_past(session.get_inputs(), ids.shape[0]), **inputs}
    wanted = {i.name for i in session.get_inputs()}
    return dict(zip(names, session.run(None, {k: v for k, v in available.items() if k in wanted})))


def max_abs_on_tokens(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Largest difference over real (unpadded) tokens; padded positions carry no meaning."""
    if a.ndim == 2:  # pooler output: one row per sequence
        return float(np.abs(a - b).max())
    return float(np.abs(a - b)[mask.astype(bool)].max())


def left_padded(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A generation batch: rows 0 and 2 of ``inputs`` (row 2 is left-padded)."""
    return {k: v[[0, 2]] for k, v in inputs.items() if k in ("input_ids", "attention_mask")}


# ------------------------------------------------------------------------------------------------
# exports by torch.onnx


def _register_traceable_attention() -> str:
    """An attention implementation the TorchScript exporter can trace.

    transformers 4.57 builds attention masks with torch.vmap, which the TorchScript exporter cannot
    trace ("RuntimeError: unordered_map::at", with eager attention as well). The same mask functions
    evaluated by plain broadcasting trace fine; this registers them, with SDPA attention, under a new
    implementation name (transformers' own implementations stay untouched). transformers 5 passes the
    query span as ``q_length``/``q_offset`` instead of 4.57's ``cache_position``; both are accepted.
    """
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import (
        AttentionMaskInterface,
        and_masks,
        padding_mask_function,
    )

    def mask(batch_size: int, cache_position: Any = None, kv_length: int = 0, kv_offset: int = 0,
             mask_function: Any = None, attention_mask: Any = None, q_length: Any = None, q_offset: int = 0,
             **_: Any) -> Any:
        if cache_position is None:  # transformers 5
            cache_position = torch.arange(q_length) + q_offset
        kv = torch.arange(kv_length) + kv_offset
        if attention_mask is not None:
            mask_function = and_masks(mask_function, padding_mask_function(attention_mask.bool()))
        return mask_function(torch.arange(batch_size)[:, None, None, None], torch.arange(1)[None, :, None, None],
                             cache_position[None, None, :, None], kv[None, None, None, :])

    AttentionInterface.register("llmstd_traceable", sdpa_attention_forward)
    AttentionMaskInterface.register("llmstd_traceable", mask)
    return "llmstd_traceable"


def export(model: Any, kind: str, path: Path, exporter: str) -> Path:
    """Export ``model`` with torch.onnx: 'dynamo' (dynamic batch/sequence), 'torchscript' (dynamic
    axes; decoders wrapped in a module, so every name gains an 'm.' prefix, except llama, exported
    directly with position_ids the way Optimum does), or 'static' (dynamo, fixed shapes)."""
    import torch

    model.config.use_cache = False
    inputs = batch(kind, seq=16)
    names = list(inputs)
    tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
    if exporter in ("dynamo", "static"):
        dims = None
        if exporter == "dynamo":
            b, s = torch.export.Dim("batch"), torch.export.Dim("sequence")
            dims = {k: {0: b, 1: s} for k in names}
        # external_data=True (the default) writes model.onnx.data, so foreign external data is read too.
        torch.onnx.export(model, (), str(path), kwargs=tensors, dynamo=True, dynamic_shapes=dims)
        return path
    assert exporter == "torchscript", exporter
    if kind in DECODERS:
        model.config._attn_implementation = _register_traceable_attention()
    if kind == "llama":  # Optimum-style: the model itself, input_ids/attention_mask/position_ids
        names = ["input_ids", "attention_mask", "position_ids"]
        tensors["position_ids"] = torch.from_numpy(helpers.decoder_positions(inputs["attention_mask"]))
        target, args = model, tuple(tensors[n] for n in names)
    elif kind in DECODERS:
        class Wrapper(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.m = inner

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return self.m(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]

        target, args = Wrapper(model), (tensors["input_ids"], tensors["attention_mask"])
        names = ["input_ids", "attention_mask"]
    else:  # BERT's forward takes (input_ids, attention_mask, token_type_ids) positionally
        names = ["input_ids", "attention_mask", "token_type_ids"]
        target, args = model, tuple(tensors[n] for n in names)
    torch.onnx.export(target, args, str(path), dynamo=False, input_names=names, opset_version=17,
                      dynamic_axes={n: {0: "batch_size", 1: "sequence_length"} for n in names})
    return path


def hf_name(arch: str, canonical: str, prefix: str) -> str:
    """The Hugging Face name of a canonical tensor, read from the naming map (``canonical`` with a
    concrete layer index, e.g. ``layers.0.attn.o.bias``)."""
    from llmstd import maps, vocab

    pattern = vocab.pattern_of(canonical)
    layer = vocab.layer_of(canonical)
    for entry in maps.load(arch).entries:
        if pattern in entry.canonical and "hf" in entry.dialects:
            name = entry.dialects["hf"].name.replace("{prefix}", prefix)
            return name.replace("{i}", str(layer)) if layer is not None else name
    raise KeyError(canonical)
