"""Compare two checkpoints tensor by tensor, in canonical names, and exit 1 on any difference.

    python examples/compare_tensors.py examples/tiny-gpt2 build/demo/hf
"""

from __future__ import annotations

import sys

import numpy as np

import llmstd


def main(a_path: str, b_path: str) -> int:
    a, b = llmstd.load(a_path), llmstd.load(b_path)
    if a.config.to_dict() != b.config.to_dict():
        print("canonical configs differ")
        return 1
    differing = [
        name for name in a
        if name not in b or a[name].dtype != b[name].dtype
        or not np.array_equal(a[name].load().view(np.uint8), b[name].load().view(np.uint8))
    ]
    for name in differing:
        print(f"differs: {name}")
    print(f"{len(a) - len(differing)}/{len(a)} tensors bit-identical ({a.architecture}, {a.config.dtype})")
    return 1 if differing else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        sys.exit(main(sys.argv[1], sys.argv[2]))
    except llmstd.LlmstdError as exc:
        sys.exit(f"error: {exc}")
