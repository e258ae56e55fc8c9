"""HF -> canonical -> HF on a random ~500M-parameter Llama, side by side with `cp -r` of the same
files: medians of N runs of wall time and peak RSS (warm page cache for every command).

    python benchmarks/roundtrip_500m.py WORKDIR [--runs 3] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_checkpoint import make  # noqa: E402
from measure import median_of, remove  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    src = args.workdir / f"llama-500m-{args.dtype}"
    if not src.exists():
        make("llama-500m", src, args.dtype)
    llmstd = str(Path(sys.executable).parent / "llmstd")
    canonical, back, copy = args.workdir / "canonical", args.workdir / "hf-back", args.workdir / "cp"
    rows = {}
    rows["cp -r"], _ = median_of(args.runs, ["cp", "-r", str(src), str(copy)], before=remove(copy))
    rows["HF -> canonical"], _ = median_of(args.runs, [llmstd, "convert", str(src), str(canonical), "--to", "canonical"],
                                           before=remove(canonical))
    rows["canonical -> HF"], _ = median_of(args.runs, [llmstd, "convert", str(canonical), str(back), "--to", "hf"],
                                           before=remove(back))
    size = sum(f.stat().st_size for f in src.iterdir())
    print(json.dumps({"bytes": size, "runs": args.runs,
                      "results": {k: {"seconds": round(v.seconds, 2), "peak_rss_mb": round(v.peak_rss_mb)}
                                  for k, v in rows.items()}}, indent=2))


if __name__ == "__main__":
    main()
