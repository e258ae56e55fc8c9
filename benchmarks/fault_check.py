"""Damage one layer of a canonical checkpoint in place, run ``llmstd check`` against the original,
restore the bytes -- for the benchmark's "a fault is localised there" row on models too large to copy.

    python benchmarks/fault_check.py SRC_HF_DIR CANONICAL_DIR --layer 17 --json REPORT [check options ...]

The fault is the classic silent one: the layer's attention output projection transposed (a square
matrix, so every shape check passes). The original bytes are put back (and fsynced) whatever happens.
Exits 0 only when check fails with its first divergence at that layer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import llmstd
from llmstd.tensors import FileSliceTensor

LLMSTD = str(Path(sys.executable).parent / "llmstd")


def main() -> int:
    src, canonical = sys.argv[1], Path(sys.argv[2])
    rest = sys.argv[3:]
    layer = int(rest[rest.index("--layer") + 1])
    del rest[rest.index("--layer"):rest.index("--layer") + 2]
    report = Path(rest[rest.index("--json") + 1])
    tensor = llmstd.load(canonical).tensors[f"layers.{layer}.attn.o.weight"]
    assert isinstance(tensor, FileSliceTensor) and tensor.shape[0] == tensor.shape[1], "needs a square stored tensor"
    original = np.array(tensor.load())  # a copy: the file is about to change under the map
    with open(tensor.path, "r+b") as fh:
        try:
            fh.seek(tensor.offset)
            fh.write(np.ascontiguousarray(original.T).tobytes())
            fh.flush()
            os.fsync(fh.fileno())
            subprocess.run([LLMSTD, "check", src, str(canonical), *rest], check=False)
        finally:
            fh.seek(tensor.offset)
            fh.write(original.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
    result = json.loads(report.read_text())
    first = result.get("first_divergence") or {}
    print(f"passed={result['passed']} first divergence: {first.get('stage')}")
    return 0 if not result["passed"] and first.get("layer") == layer else 1


if __name__ == "__main__":
    sys.exit(main())
