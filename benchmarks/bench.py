"""Scale benchmark: llmstd's conversions on realistic checkpoint shapes, side by side with `cp -r`
(the physical floor) and Hugging Face's own route to the same result, in one run.

    python benchmarks/bench.py --workdir /tmp/llmstd-bench --runs 3          # full (make bench)
    python benchmarks/bench.py --workdir /tmp/x --runs 1 --shapes llama-tiny --smoke

Writes benchmarks/RESULTS.md (or --results PATH): machine, date, exact commands, medians of the
runs, and each target checked: wall <= 1.5x cp (canonical) / 2.5x cp (tf-h5, onnx); peak RSS <=
2 x largest tensor + 600 MB; peak RSS >= 3x lower than Hugging Face's route.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_checkpoint import make  # noqa: E402
from measure import Sample, median_of, remove  # noqa: E402

HERE = Path(__file__).parent
PYTHON = sys.executable
LLMSTD = str(Path(sys.executable).parent / "llmstd")
HF_ROUTES = Path(__file__).parent / "hf_routes.py"

# shape -> (dtype, shard size) of the generated Hugging Face source checkpoint
SOURCES = {
    "llama-1.1b": ("bfloat16", "1GB"),
    "gpt2-medium": ("float32", "1GB"),
    "llama-500m": ("bfloat16", "1GB"),
    "llama-tiny": ("bfloat16", None),
}
WALL_TARGET = {"canonical": 1.5, "tf-h5": 2.5, "onnx": 2.5}


@dataclass
class Row:
    label: str
    command: list[str]
    sample: Sample
    runs: list[Sample]
    target: str | None = None  # format, for the wall-time target
    hf_route_of: str | None = None
    notes: list[str] = field(default_factory=list)


def _available_formats() -> list[str]:
    from llmstd import formats

    return formats.names()


def _largest_tensor_mb(path: Path) -> float:
    import llmstd

    return max(t.nbytes for t in llmstd.load(path).values()) / 1e6


def bench_shape(shape: str, workdir: Path, runs: int, with_hf: bool, with_check: bool) -> tuple[list[Row], dict]:
    dtype, shard = SOURCES[shape]
    src = workdir / f"{shape}-hf"
    if not src.exists():
        make(shape, src, dtype, shard)
    size = sum(p.stat().st_size for p in src.iterdir())
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1")
    rows: list[Row] = []

    def measure(label: str, argv: list[str], out: Path, **kw: object) -> Row:
        sample, samples = median_of(runs, argv, before=remove(out), env=env)
        row = Row(label, argv, sample, samples, **kw)  # type: ignore[arg-type]
        rows.append(row)
        print(f"  {label:40s} {sample.seconds:8.2f} s {sample.peak_rss_mb:8.0f} MB", flush=True)
        return row

    print(f"{shape}: {size / 1e9:.2f} GB", flush=True)
    measure("cp -r", ["cp", "-r", str(src), str(workdir / "cp")], workdir / "cp")
    # llmstd fsyncs what it writes before renaming it into place; cp leaves the data in the page cache.
    measure("cp -r && sync (durable floor)", ["sh", "-c", f"cp -r '{src}' '{workdir / 'cp'}' && sync"], workdir / "cp")
    formats = [f for f in ("canonical", "tf-h5", "onnx") if f in _available_formats()]
    for fmt in formats:
        out, back = workdir / f"{shape}-{fmt}", workdir / f"{shape}-{fmt}-back"
        # ONNX: weights in one external data file whatever the size (--shard-size caps model.onnx).
        extra = ["--shard-size", "1MB"] if fmt == "onnx" else []
        measure(f"llmstd HF -> {fmt}", [LLMSTD, "convert", str(src), str(out), "--to", fmt, *extra], out, target=fmt)
        measure(f"llmstd {fmt} -> HF", [LLMSTD, "convert", str(out), str(back), "--to", "hf"], back, target=fmt)
    if with_hf:
        for fmt in ("tf-h5", "onnx"):
            out = workdir / f"{shape}-hf-route-{fmt}"
            argv = [PYTHON, str(HF_ROUTES), fmt, str(src), str(out)]
            probe = subprocess.run([*argv, "--supported"], capture_output=True, text=True, env=env)
            if probe.returncode != 0:
                print(f"  Hugging Face route to {fmt}: none for {shape} ({probe.stdout.strip()})")
                continue
            measure(f"Hugging Face route -> {fmt}", argv, out, hf_route_of=f"llmstd HF -> {fmt}")
    if with_check and "canonical" in formats:
        out = workdir / f"{shape}-canonical"
        if not out.exists():
            subprocess.run([LLMSTD, "convert", str(src), str(out), "--to", "canonical"], check=True)
        report = workdir / f"{shape}-check.json"
        measure("llmstd check HF vs canonical", [LLMSTD, "check", str(src), str(out), "--json", str(report)],
                workdir / "none")
        rows[-1].notes.append(_check_summary(report))
    info = {"shape": shape, "dtype": dtype, "shard": shard, "bytes": size, "largest_tensor_mb": _largest_tensor_mb(src)}
    return rows, info


def _check_summary(report_path: Path) -> str:
    """Time per side and the verdict of an `llmstd check --json` report."""
    if not report_path.exists():
        return "no report written"
    report = json.loads(report_path.read_text())
    sides = [f"side {k.upper()} ({report[k]['runtime']}, {report[k]['dtype']}): load {report[k]['load_seconds']:.1f} s, "
             f"run {report[k]['run_seconds']:.1f} s" for k in ("a", "b")]
    worst = max((o.get("max_abs") or 0.0) for o in report.get("outputs", [])) if report.get("outputs") else None
    verdict = "passed" if report.get("passed") else "FAILED"
    return "; ".join(sides) + f"; {verdict}" + (f", max abs {worst:.2e}" if worst is not None else "")


def _verdicts(rows: list[Row], info: dict) -> list[str]:
    by_label = {r.label: r for r in rows}
    cp = by_label["cp -r"].sample.seconds
    durable = by_label["cp -r && sync (durable floor)"].sample.seconds
    rss_limit = 2 * info["largest_tensor_mb"] + 600
    lines = []
    for row in rows:
        checks = []
        if row.target:
            limit = WALL_TARGET[row.target] * cp
            checks.append(f"wall {row.sample.seconds / cp:.2f}x cp (target <= {WALL_TARGET[row.target]}x): "
                          f"{'PASS' if row.sample.seconds <= limit else 'FAIL'} "
                          f"({row.sample.seconds / durable:.2f}x cp && sync)")
            checks.append(f"peak RSS {row.sample.peak_rss_mb:.0f} MB (target <= {rss_limit:.0f} MB): "
                          f"{'PASS' if row.sample.peak_rss_mb <= rss_limit else 'FAIL'}")
        if row.hf_route_of and row.hf_route_of in by_label:
            ours = by_label[row.hf_route_of].sample.peak_rss_mb
            ratio = row.sample.peak_rss_mb / ours
            checks.append(f"Hugging Face's route uses {ratio:.1f}x llmstd's peak RSS (target >= 3x): "
                          f"{'PASS' if ratio >= 3 else 'FAIL'}")
        if checks:
            lines.append(f"- {row.label}: " + "; ".join(checks))
    return lines


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal")))
    except (OSError, StopIteration):
        mem_kb = 0
    return f"{cpu}, {os.cpu_count()} cores, {mem_kb / 1024**2:.0f} GiB RAM, {platform.platform()}, Python {platform.python_version()}"


def write_results(path: Path, results: list[tuple[list[Row], dict]], runs: int, argv: list[str]) -> None:
    lines = [
        "# llmstd scale benchmark",
        "",
        "Written by `benchmarks/bench.py`; do not edit by hand. Rerun with `make bench`.",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {_machine()}",
        f"- command: `{shlex.join(argv)}`",
        f"- medians of {runs} run(s) per row; warm page cache; peak RSS of the command's own process (GNU time %M)",
        "",
    ]
    for rows, info in results:
        lines += [
            f"## {info['shape']} ({info['dtype']}, {info['bytes'] / 1e9:.2f} GB, shards of {info['shard'] or 'one file'}, "
            f"largest tensor {info['largest_tensor_mb']:.0f} MB)",
            "",
            "| what | wall (s) | peak RSS (MB) | runs (s) | command |",
            "|---|---:|---:|---|---|",
        ]
        for row in rows:
            runs_text = ", ".join(f"{s.seconds:.2f}" for s in row.runs)
            lines.append(f"| {row.label} | {row.sample.seconds:.2f} | {row.sample.peak_rss_mb:.0f} | {runs_text} | "
                         f"`{shlex.join(row.command)}` |")
        lines += ["", "Targets:", "", *_verdicts(rows, info), ""]
        for row in rows:
            lines += [f"- {row.label}: {note}" for note in row.notes if note]
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/llmstd-bench"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shapes", default="llama-1.1b,gpt2-medium")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--no-hf", action="store_true", help="skip Hugging Face's routes")
    parser.add_argument("--no-check", action="store_true", help="skip llmstd check")
    parser.add_argument("--smoke", action="store_true", help="one run on a tiny shape without Hugging Face's routes")
    args = parser.parse_args()
    if args.smoke:
        args.shapes, args.runs, args.no_hf = "llama-tiny", 1, True
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = [bench_shape(s, args.workdir, args.runs, not args.no_hf, not args.no_check)
               for s in args.shapes.split(",")]
    write_results(args.results, results, args.runs, [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    print(f"wrote {args.results}")
    print(json.dumps({info["shape"]: {r.label: [round(r.sample.seconds, 2), round(r.sample.peak_rss_mb)]
                                      for r in rows} for rows, info in results}))


if __name__ == "__main__":
    main()
