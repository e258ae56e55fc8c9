"""How KerasHub serialises an object into a preset's JSON files (``config.json``, ``task.json``,
``tokenizer.json``, ``preprocessor.json``): its class, its config and its registered name
``keras_hub>{class}``; layer configs carry a name and a dtype policy."""

from __future__ import annotations

from typing import Any

REGISTERED = "keras_hub>"


def snake_case(name: str) -> str:
    """Keras' default object name for a class: ``GPT2CausalLM`` -> ``gpt2_causal_lm``."""
    out = []
    for k, ch in enumerate(name):
        if ch.isupper() and k and (not name[k - 1].isupper() or (k + 1 < len(name) and name[k + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def dtype_policy(dtype: str) -> dict[str, Any]:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": dtype}, "registered_name": None}


def serialised(cls: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"class_name": cls, "config": config, "registered_name": REGISTERED + cls}


def layer(cls: str, dtype: str, **config: Any) -> dict[str, Any]:
    """A serialised Keras layer (or model) of class ``cls`` computing in ``dtype``."""
    return serialised(cls, {"name": snake_case(cls), "trainable": True, "dtype": dtype_policy(dtype), **config})
