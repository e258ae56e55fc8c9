"""Hugging Face's own routes to the formats llmstd writes, for the benchmark's baseline rows.

    python benchmarks/hf_routes.py tf-h5 SRC_HF_DIR OUT_DIR     # TF*.from_pretrained(from_pt=True).save_pretrained
    python benchmarks/hf_routes.py onnx SRC_HF_DIR OUT_DIR      # torch.onnx.export of the loaded model
    python benchmarks/hf_routes.py optimum SRC_HF_DIR OUT_DIR   # Optimum's exporter (text-generation-with-past);
                                                                # run by an interpreter that has optimum-onnx
    python benchmarks/hf_routes.py tf-h5 SRC OUT --supported    # exit 0 if a route exists for this model
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# transformers' TensorFlow classes exist for these model types only (and only in transformers 4.x).
TF_CLASSES = {"gpt2": "TFGPT2LMHeadModel", "mistral": "TFMistralForCausalLM", "bert": "TFBertForMaskedLM"}


def main() -> int:
    fmt, src, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    model_type = json.loads((src / "config.json").read_text())["model_type"]
    if fmt == "tf-h5" and model_type not in TF_CLASSES:
        print(f"transformers has no TensorFlow class for {model_type}")
        return 1
    if "--supported" in sys.argv:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "optimum":
        from optimum.exporters.onnx import main_export

        main_export(str(src), output=out, task="text-generation-with-past", no_post_process=False)
        return 0
    if fmt == "tf-h5":
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
