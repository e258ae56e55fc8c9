"""Greedy generation speed on this CPU, for the benchmark's generation rows.

    python benchmarks/generate_speed.py genai PACKAGE_DIR [OUT.json]     # onnxruntime-genai on an llmstd package
    python benchmarks/generate_speed.py transformers HF_DIR [OUT.json]   # transformers generate (float32, eager)

Both generate NEW_TOKENS tokens greedily after the same PROMPT_TOKENS-token prompt (eos ignored:
transformers is told to go on; genai's package has no eos in reach of random weights' argmax at
these lengths, and the script asserts it produced every token). One warm-up generation, then
ROUNDS timed ones; prints one JSON line (and writes it to OUT.json): load seconds, median seconds of
a whole generation and of the prompt alone, and decode tokens per second (the tokens after the first
over the generation time less the prompt's).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT_TOKENS = 32
NEW_TOKENS = 64
ROUNDS = 3


def _prompt(vocab: int) -> list[int]:
    return [(17 * k + 5) % (vocab - 3) + 3 for k in range(PROMPT_TOKENS)]


def _genai(package: Path) -> dict[str, float]:
    import numpy as np
    import onnxruntime_genai as og

    vocab = json.loads((package / "genai_config.json").read_text())["model"]["vocab_size"]
    started = time.perf_counter()
    model = og.Model(str(package))
    loaded = time.perf_counter() - started

    def generate(new: int) -> float:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=PROMPT_TOKENS + new, min_length=PROMPT_TOKENS + new, do_sample=False)
        generator = og.Generator(model, params)
        begin = time.perf_counter()
        generator.append_tokens(np.asarray(_prompt(vocab), dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
        took = time.perf_counter() - begin
        assert len(generator.get_sequence(0)) == PROMPT_TOKENS + new
        return took

    return _timed(generate, loaded)


def _transformers(directory: Path) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager").eval()
    loaded = time.perf_counter() - started
    ids = torch.tensor([_prompt(model.config.vocab_size)])

    def generate(new: int) -> float:
        begin = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=new, min_new_tokens=new, pad_token_id=0)
        took = time.perf_counter() - begin
        assert out.shape[1] == PROMPT_TOKENS + new
        return took

    return _timed(generate, loaded)


def _timed(generate, loaded: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
    generate(NEW_TOKENS)  # warm-up: kernels chosen, memory touched
    prompt = statistics.median(generate(1) for _ in range(ROUNDS))
    full = statistics.median(generate(NEW_TOKENS) for _ in range(ROUNDS))
    return {"load_seconds": round(loaded, 2), "prompt_seconds": round(prompt, 3), "generate_seconds": round(full, 3),
            "decode_tokens_per_second": round((NEW_TOKENS - 1) / (full - prompt), 2)}


def main() -> int:
    runtime, path = sys.argv[1], Path(sys.argv[2])
    result = _genai(path) if runtime == "genai" else _transformers(path)
    line = json.dumps({"runtime": runtime, "new_tokens": NEW_TOKENS, "prompt_tokens": PROMPT_TOKENS, **result})
    print(line)
    if len(sys.argv) > 3:
        Path(sys.argv[3]).write_text(line + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
