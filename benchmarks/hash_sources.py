"""The provenance hashing a canonical or ONNX write does, alone and on every core: sha256 of every
file in a directory, largest file first. A lower bound for any conversion that records source hashes.

    python benchmarks/hash_sources.py SRC_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from llmstd.formats.common import hashing_in_background
from llmstd.oscalls import usable_cores

if __name__ == "__main__":
    files = sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_file())
    with hashing_in_background(files, workers=usable_cores()) as wait:
        for path, digest in wait().items():
            print(digest, path.name)
