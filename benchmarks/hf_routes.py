"""Hugging Face's own routes to the formats llmstd writes, for the benchmark's baseline rows.

    python benchmarks/hf_routes.py tf-h5 SRC_HF_DIR OUT_DIR     # TF*.from_pretrained(from_pt=True).save_pretrained
    python benchmarks/hf_routes.py onnx SRC_HF_DIR OUT_DIR      # torch.onnx.export of the loaded model
    python benchmarks/hf_routes.py optimum SRC_HF_DIR OUT_DIR   # Optimum's exporter (text-generation-with-past);
                                                                # run by an interpreter that has optimum-onnx
    python benchmarks/hf_routes.py keras-hub SRC_HF_DIR OUT_DIR # KerasHub: <Task>.from_preset(SRC) (its own
                                                                # Hugging Face converter), then save_to_preset
    python benchmarks/hf_routes.py tf-h5 SRC OUT --supported    # exit 0 if a route exists for this model
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# transformers' TensorFlow classes exist for these model types only (and only in transformers 4.x).
TF_CLASSES = {"gpt2": "TFGPT2LMHeadModel", "mistral": "TFMistralForCausalLM", "bert": "TFBertForMaskedLM"}
# KerasHub's task for a Hugging Face model_type, where its converter reads that model type.
KERAS_HUB_TASKS = {"llama": "Llama3CausalLM", "mistral": "MistralCausalLM", "qwen2": "QwenCausalLM",
                   "qwen3": "Qwen3CausalLM", "gemma": "GemmaCausalLM", "gemma2": "GemmaCausalLM",
                   "gemma3_text": "Gemma3CausalLM", "gpt2": "GPT2CausalLM", "mixtral": "MixtralCausalLM",
                   "qwen2_moe": "QwenMoeCausalLM", "qwen3_moe": "Qwen3MoeCausalLM"}


def main() -> int:
    fmt, src, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    model_type = json.loads((src / "config.json").read_text())["model_type"]
    if fmt == "tf-h5" and model_type not in TF_CLASSES:
        print(f"transformers has no TensorFlow class for {model_type}")
        return 1
    if fmt == "keras-hub" and model_type not in KERAS_HUB_TASKS:
        print(f"KerasHub has no converter for {model_type}")
        return 1
    if "--supported" in sys.argv:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "optimum":
        from optimum.exporters.onnx import main_export

        main_export(str(src), output=out, task="text-generation-with-past", no_post_process=False)
        return 0
    if fmt == "keras-hub":
        import keras_hub

        task = getattr(keras_hub.models, KERAS_HUB_TASKS[model_type]).from_preset(str(src), preprocessor=None)
        task.save_to_preset(str(out))
        return 0
    if fmt == "tf-h5":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before transformers imports TensorFlow: its TF classes are Keras 2
        import transformers

        model = getattr(transformers, TF_CLASSES[model_type]).from_pretrained(src, from_pt=True)
        model.save_pretrained(out)
        return 0
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, torch_dtype="auto")
    model.eval()
    ids = torch.ones((1, 16), dtype=torch.long)
    mask = torch.ones_like(ids)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    torch.onnx.export(model, (ids,), str(out / "model.onnx"), kwargs={"attention_mask": mask, "use_cache": False},
                      dynamo=True, external_data=True,
                      dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq},
                                      "use_cache": None})
    return 0


if __name__ == "__main__":
    sys.exit(main())
