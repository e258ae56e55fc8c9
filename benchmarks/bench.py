"""Scale benchmark: llmstd's conversions on realistic checkpoint shapes, side by side with `cp -r`
(the physical floor) and Hugging Face's own route to the same result, in one run.

    python benchmarks/bench.py --workdir /tmp/llmstd-bench --runs 5          # full (make bench)
    python benchmarks/bench.py --workdir /tmp/x --runs 1 --shapes llama-tiny --smoke

Commands run in rounds: each round runs every command once, in the order listed, so slow drifts of
the machine (disk, host) reach every row alike; each command starts from a settled machine (see
measure.settle). Writes benchmarks/RESULTS.md (or --results PATH): machine, date, exact commands,
medians of the rounds, and each target checked: wall <= 1.3x cp (canonical, hf) / 2.0x cp (tf-h5,
tf-ckpt, onnx, keras-hub) against both floors, `cp -r` (data left in the page cache) and `cp -r && sync` (data on disk, as
llmstd's fsync leaves it); peak RSS <= 2 x largest tensor + 600 MB (for mixture-of-experts shapes the
largest tensor is a layer's packed experts); peak RSS >= 3x lower than Hugging Face's route.

Llama shapes also get generation rows (an onnxruntime-genai package written by llmstd beside
transformers generate, decode tokens/s from benchmarks/generate_speed.py) and, with
LLMSTD_OPTIMUM_PYTHON naming an interpreter that has optimum-onnx (it pins transformers < 4.58, so it
needs an environment of its own), Optimum's export beside torch.onnx.export and llmstd's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_checkpoint import make  # noqa: E402
from measure import Sample, balloon_reporting, meminfo, run_once, settle  # noqa: E402

HERE = Path(__file__).parent
PYTHON = sys.executable
LLMSTD = str(Path(sys.executable).parent / "llmstd")
HF_ROUTES = HERE / "hf_routes.py"
HASH_SOURCES = HERE / "hash_sources.py"
GENERATE_SPEED = HERE / "generate_speed.py"
#: An interpreter with optimum-onnx (which pins transformers < 4.58, so it lives in an environment of
#: its own), for the Optimum export row; the row is left out when unset.
OPTIMUM_PYTHON = os.environ.get("LLMSTD_OPTIMUM_PYTHON")

# shape -> (dtype, shard size) of the generated Hugging Face source checkpoint
SOURCES = {
    "llama-7b": ("bfloat16", "5GB"),
    "llama-1.1b": ("bfloat16", "1GB"),
    "gpt2-medium": ("float32", "1GB"),
    "llama-500m": ("bfloat16", "1GB"),
    "llama-tiny": ("bfloat16", None),
    "mixtral-2.3b": ("bfloat16", "1GB"),
    "mixtral-tiny": ("bfloat16", None),
}
#: Shapes whose check runs within a memory budget (a float32 copy of either side would not fit).
LARGER_THAN_MEMORY = {"llama-7b": "6GB"}
FAULT_LAYER = 17
# The scale issue's targets (sections written before 2026-12-02 17:00 UTC checked 1.5x and 2.5x).
WALL_TARGET = {"canonical": 1.3, "hf": 1.3, "tf-h5": 2.0, "tf-ckpt": 2.0, "onnx": 2.0, "keras-hub": 2.0}
FORMATS = ("canonical", "tf-h5", "tf-ckpt", "onnx", "keras-hub")
HF_ROUTE_LABELS = {"tf-h5": "Hugging Face route -> tf-h5",
                   "onnx": "torch.onnx.export (dynamo) of the transformers model",
                   "keras-hub": "KerasHub route: <Task>.from_preset(HF dir) + save_to_preset"}
CP = "cp -r"
CP_SYNC = "cp -r && sync (durable floor)"


@dataclass
class Row:
    label: str
    command: list[str]
    output: Path | None  # removed before each run
    target: str | None = None  # format, for the wall-time target
    hf_route_of: str | None = None
    speed_report: Path | None = None  # generate_speed.py's JSON, one per run
    speeds: list[float] = field(default_factory=list)
    runs: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: outputs removed once this row has run (the forward conversion's output goes after the
    #: conversion back has read it)
    frees: tuple[Path, ...] = ()
    #: `llmstd convert --json` reports' timings (llmstd.timing), one per run
    timings: list[dict[str, float]] = field(default_factory=list)
    #: run in the first round only: `llmstd check` rows, minutes each at 7B, whose verdict and peak RSS
    #: are what they measure (no wall-time target)
    first_round_only: bool = False

    @property
    def sample(self) -> Sample:
        return Sample(statistics.median(s.seconds for s in self.runs),
                      statistics.median(s.peak_rss_mb for s in self.runs))


def _available_formats() -> list[str]:
    from llmstd import formats

    return formats.names()


def _largest_tensor_mb(path: Path) -> float:
    """The largest tensor of the checkpoint in any layout llmstd writes: for mixture-of-experts
    models a layer's packed gate_up_proj ([experts, 2 * intermediate, hidden])."""
    import llmstd

    ckpt = llmstd.load(path)
    c = ckpt.config
    packed = c.num_experts * 2 * c.moe_intermediate_size * c.hidden_size * max(t.dtype.itemsize for t in
                                                                                ckpt.tensors.values())
    return max(packed, max(t.nbytes for t in ckpt.tensors.values())) / 1e6


GENERATED = 64  # generate_speed.NEW_TOKENS


def _rows_for(shape: str, src: Path, workdir: Path, with_hf: bool, with_check: bool, with_generation: bool,
              env: dict[str, str], wanted: tuple[str, ...] = FORMATS) -> list[Row]:
    rows = [
        Row(CP, ["cp", "-r", str(src), str(workdir / "cp")], workdir / "cp", frees=(workdir / "cp",)),
        Row(CP_SYNC, ["sh", "-c", f"cp -r '{src}' '{workdir / 'cp'}' && sync"], workdir / "cp",
            frees=(workdir / "cp",)),
        Row("sha256 of the source files, every core (provenance hashing alone)", [PYTHON, str(HASH_SOURCES), str(src)], None),
    ]
    formats = [f for f in wanted if f in _available_formats()]
    for fmt in formats:
        out, back = workdir / f"{shape}-{fmt}", workdir / f"{shape}-{fmt}-back"
        # ONNX: weights in one external data file whatever the size (--shard-size caps model.onnx).
        extra = ["--shard-size", "1MB"] if fmt == "onnx" else []
        rows.append(Row(f"llmstd HF -> {fmt}", [LLMSTD, "convert", str(src), str(out), "--to", fmt, *extra, "--json"],
                        out, target=fmt))
        # the canonical conversion stays for the check rows
        rows.append(Row(f"llmstd {fmt} -> HF", [LLMSTD, "convert", str(out), str(back), "--to", "hf", "--json"], back,
                        target=fmt, frees=(back,) if fmt == "canonical" else (back, out)))
    if shape.startswith("mixtral") and "canonical" in formats:  # transformers 5's packed experts, both ways
        packed, unpacked = workdir / f"{shape}-hf-packed", workdir / f"{shape}-packed-canonical"
        rows.append(Row("llmstd HF -> HF packed experts", [LLMSTD, "convert", str(src), str(packed), "--to", "hf",
                                                            "--experts", "packed", "--json"], packed, target="hf"))
        rows.append(Row("llmstd HF packed experts -> canonical", [LLMSTD, "convert", str(packed), str(unpacked),
                                                                   "--json"], unpacked, target="canonical",
                        frees=(unpacked, packed)))
    if with_hf:
        for fmt in (f for f in formats if f in HF_ROUTE_LABELS):
            out = workdir / f"{shape}-hf-route-{fmt}"
            argv = [PYTHON, str(HF_ROUTES), fmt, str(src), str(out)]
            probe = subprocess.run([*argv, "--supported"], capture_output=True, text=True, env=env)
            if probe.returncode != 0:
                print(f"  Hugging Face route to {fmt}: none for {shape} ({probe.stdout.strip()})")
                continue
            rows.append(Row(HF_ROUTE_LABELS[fmt], argv, out, hf_route_of=f"llmstd HF -> {fmt}"))
        if OPTIMUM_PYTHON and shape.startswith("llama") and "onnx" in formats:
            out = workdir / f"{shape}-optimum-onnx"
            rows.append(Row("Optimum export -> onnx (with cache)", [OPTIMUM_PYTHON, str(HF_ROUTES), "optimum", str(src),
                                                                   str(out)], out, hf_route_of="llmstd HF -> onnx"))
    if with_generation and shape.startswith("llama") and "onnx" in formats:
        # Generation speed, float32 on both sides: llmstd's onnxruntime-genai package beside transformers.
        package = workdir / f"{shape}-genai"
        rows.append(Row("llmstd HF -> onnx genai package (float32)",
                        [LLMSTD, "convert", str(src), str(package), "--to", "onnx", "--onnx-package", "genai",
                         "--dtype", "float32"], package))
        for runtime, model in (("genai", package), ("transformers", src)):
            rows.append(Row(f"generate {GENERATED} tokens: {'onnxruntime-genai' if runtime == 'genai' else 'transformers'}",
                            [PYTHON, str(GENERATE_SPEED), runtime, str(model), str(workdir / f"{shape}-{runtime}.json")],
                            None, speed_report=workdir / f"{shape}-{runtime}.json"))
    if with_check and "canonical" in formats:
        # runs after "llmstd HF -> canonical" in the same round, so its output is there
        report = workdir / f"{shape}-check.json"
        canonical = str(workdir / f"{shape}-canonical")
        if shape in LARGER_THAN_MEMORY:  # float32 would not fit: each side within --max-memory
            bounded = ["--max-memory", LARGER_THAN_MEMORY[shape], "--batch", "1", "--seq-len", "32"]
            rows.append(Row(f"llmstd check HF vs canonical --max-memory {LARGER_THAN_MEMORY[shape]}",
                            [LLMSTD, "check", str(src), canonical, *bounded, "--json", str(report)], None,
                            first_round_only=True))
            fault = workdir / f"{shape}-fault-check.json"
            rows.append(Row(f"the same with layer {FAULT_LAYER}'s o-projection transposed (must fail there)",
                            [PYTHON, str(HERE / "fault_check.py"), str(src), canonical, "--layer", str(FAULT_LAYER),
                             *bounded, "--json", str(fault)], None, first_round_only=True))
        else:
            rows.append(Row("llmstd check HF vs canonical",
                            [LLMSTD, "check", str(src), canonical, "--json", str(report)], None,
                            first_round_only=True))
    return rows


def bench_shape(shape: str, workdir: Path, runs: int, with_hf: bool, with_check: bool,
                with_generation: bool, wanted: tuple[str, ...] = FORMATS) -> tuple[list[Row], dict]:
    dtype, shard = SOURCES[shape]
    src = workdir / f"{shape}-hf"
    if not src.exists():
        make(shape, src, dtype, shard)
    size = sum(p.stat().st_size for p in src.iterdir())
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1", KERAS_BACKEND="tensorflow")
    prime = 2 * size + 2**30  # what a conversion writes to the page cache, plus its working memory
    print(f"{shape}: {size / 1e9:.2f} GB", flush=True)
    rows = _rows_for(shape, src, workdir, with_hf, with_check, with_generation, env, wanted)
    for path in src.iterdir():  # every row then reads its sources from the page cache
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    for round_no in range(1, runs + 1):
        for row in (r for r in rows if round_no == 1 or not r.first_round_only):
            settle(row.output, prime)
            row.runs.append(run_once(row.command, env))
            if "--json" in row.command and row.command[1] == "convert":
                row.timings.append(json.loads(row.runs[-1].stdout)["timings"])
            # Outputs go once read, so every round starts from the disk and page cache of the first (which
            # has no other outputs about; when they were kept, later rounds of the 1.1B llama had ~20 GB of
            # them about, and its HF -> canonical took 1.91 s in round 1 and 3.29 s in round 5), and a
            # model several times the free disk fits.
            for path in row.frees:
                shutil.rmtree(path, ignore_errors=True)
            if row.speed_report is not None:
                row.speeds.append(json.loads(row.speed_report.read_text())["decode_tokens_per_second"])
            print(f"  [{round_no}/{runs}] {row.label:55s} {row.runs[-1].seconds:8.2f} s "
                  f"{row.runs[-1].peak_rss_mb:8.0f} MB", flush=True)
    for row in rows:
        if row.label.startswith("llmstd check"):
            row.notes.append(_check_summary(workdir / f"{shape}-check.json"))
        if row.label.startswith("the same with layer"):
            row.notes.append(_check_summary(workdir / f"{shape}-fault-check.json"))
        if row.timings:
            row.notes.append(_time_breakdown(row))
        if row.speeds:
            row.notes.append(f"decode {statistics.median(row.speeds):.2f} tokens/s (median of the rounds; "
                             f"each round's: {', '.join(f'{v:.2f}' for v in row.speeds)}); wall and RSS include "
                             "loading the model and the script's warm-up and timed generations")
    for row in rows:  # the next shape needs the disk (only the generated source is kept, for reruns)
        if row.output is not None:
            shutil.rmtree(row.output, ignore_errors=True)
    # A run of some formats only gets a section of its own, beside the shape's full one.
    label = shape if wanted == FORMATS else f"{shape}/{'+'.join(wanted)}"
    info = {"shape": label, "dtype": dtype, "shard": shard, "bytes": size, "largest_tensor_mb": _largest_tensor_mb(src)}
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
    first = report.get("first_divergence")
    where = f", first divergence: {first['stage']}" if first else ""
    return "; ".join(sides) + f"; {verdict}" + (f", max abs {worst:.2e}" if worst is not None else "") + where


#: llmstd.timing phases run on other threads, overlapping the converting thread's
BACKGROUND_PHASES = ("compute", "hash")


def _time_breakdown(row: Row) -> str:
    """Where the row's wall time went, medians over the rounds: outside the conversion (interpreter
    start-up, imports, exit: the process's wall minus the conversion's), each phase of the converting
    thread (llmstd.timing), what they leave unaccounted, and the background threads' phases."""
    phases = sorted({name for t in row.timings for name in t if name != "wall"})

    def median(name: str) -> float:
        return statistics.median(t.get(name, 0.0) for t in row.timings)

    outside = statistics.median(s.seconds - t["wall"] for s, t in zip(row.runs, row.timings))
    inside = [name for name in phases if name not in BACKGROUND_PHASES]
    unaccounted = statistics.median(t["wall"] - sum(t.get(n, 0.0) for n in inside) for t in row.timings)
    parts = [f"start-up, imports and exit {outside:.2f}"] + [f"{name} {median(name):.2f}"
                                                              for name in sorted(inside, key=median, reverse=True)]
    parts.append(f"other {unaccounted:.2f}")
    background = [f"{name} {median(name):.2f}" for name in BACKGROUND_PHASES if name in phases]
    return ("where the time goes (s, medians): " + ", ".join(parts)
            + (f"; on other threads, overlapping: {', '.join(background)}" if background else ""))


def _verdicts(rows: list[Row], info: dict) -> list[str]:
    by_label = {r.label: r for r in rows}
    cp = by_label[CP].sample.seconds
    durable = by_label[CP_SYNC].sample.seconds
    rss_limit = 2 * info["largest_tensor_mb"] + 600
    lines = []
    for row in rows:
        checks = []
        if row.target:
            limit, wall = WALL_TARGET[row.target], row.sample.seconds
            for floor_name, floor in (("cp -r && sync", durable), ("cp -r", cp)):
                checks.append(f"wall {wall / floor:.2f}x {floor_name} (target <= {limit}x): "
                              f"{'PASS' if wall <= limit * floor else 'FAIL'}")
            checks.append(f"peak RSS {row.sample.peak_rss_mb:.0f} MB (target <= {rss_limit:.0f} MB): "
                          f"{'PASS' if row.sample.peak_rss_mb <= rss_limit else 'FAIL'}")
        if row.hf_route_of and row.hf_route_of in by_label:
            ours = by_label[row.hf_route_of].sample.peak_rss_mb
            ratio = row.sample.peak_rss_mb / ours
            checks.append(f"takes {row.sample.seconds / by_label[row.hf_route_of].sample.seconds:.1f}x the wall time of "
                          f"'{row.hf_route_of}'")
            checks.append(f"uses {ratio:.1f}x llmstd's peak RSS (target >= 3x): "
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
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {meminfo('MemTotal') / 1024**3:.0f} GiB RAM, {platform.platform()}, "
            f"Python {platform.python_version()}")


def _sections(text: str) -> dict[str, str]:
    """The shape sections (``## shape ...`` to the next one) of an earlier RESULTS.md, by shape."""
    out: dict[str, str] = {}
    for chunk in text.split("\n## ")[1:]:
        out[chunk.split(" ", 1)[0]] = "## " + chunk.rstrip("\n") + "\n"
    return out


def write_results(path: Path, results: list[tuple[list[Row], dict]], runs: int, argv: list[str]) -> None:
    """Rewrite the sections of the shapes benchmarked now; sections of other shapes are kept as an
    earlier run wrote them (each section records its own date and command)."""
    lines = [
        "# llmstd scale benchmark",
        "",
        "Written by `benchmarks/bench.py`; do not edit by hand. Rerun with `make bench` (or `--shapes` for some).",
        "",
        "- each section: its date, machine and exact command; its rounds run every command once in the order "
        "listed; a row's figures are the medians over the rounds; peak RSS is the command's own process's (GNU "
        "time %M)",
        "- before every command: its previous output removed, `sync`, sources in the page cache, and free memory "
        "primed (see benchmarks/measure.py)"
        + (" -- this VM's host reclaims freed guest memory (virtio-balloon free page reporting), which without "
           "priming makes the same `cp -r` vary ~8x" if balloon_reporting() else ""),
        "- llmstd's modules compiled to bytecode first, as installing a wheel does",
        "- `llmstd check` rows run in the first round only (minutes each at 7B): their verdict and peak RSS are "
        "what they show",
        "- `cp -r` leaves the copy in the page cache; `cp -r && sync` puts it on disk, as llmstd does (it fsyncs "
        "before the atomic rename), so each wall-time target is checked against both",
        "",
    ]
    kept = _sections(path.read_text(encoding="utf-8")) if path.exists() else {}
    fresh = {info["shape"] for _, info in results}
    for shape, text in kept.items():
        if shape not in fresh:
            lines += [text.rstrip("\n"), ""]
    for rows, info in results:
        lines += [
            f"## {info['shape']} ({info['dtype']}, {info['bytes'] / 1e9:.2f} GB, shards of {info['shard'] or 'one file'}, "
            f"largest tensor {info['largest_tensor_mb']:.0f} MB)",
            "",
            f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; {runs} round(s)",
            f"- machine: {_machine()}",
            f"- command: `{shlex.join(argv)}`",
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


def compile_bytecode() -> None:
    """Compile llmstd's modules to bytecode, as installing a wheel does: an editable install run with
    PYTHONDONTWRITEBYTECODE set (as on this machine) would otherwise compile every module it imports
    at every command's start, ~0.07 s a user never pays."""
    import compileall

    import llmstd
    import llmstd.cli
    import llmstd.converters

    for package in (llmstd, llmstd.cli, llmstd.converters):
        for directory in package.__path__:
            compileall.compile_dir(directory, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/llmstd-bench"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shapes", default="llama-1.1b,gpt2-medium")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--no-hf", action="store_true", help="skip Hugging Face's routes")
    parser.add_argument("--no-check", action="store_true", help="skip llmstd check")
    parser.add_argument("--no-generation", action="store_true", help="skip the generation-speed rows")
    parser.add_argument("--smoke", action="store_true", help="one run on tiny shapes without Hugging Face's routes")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help="formats to convert to and back (a subset gets a section of its own)")
    args = parser.parse_args()
    if args.smoke:
        args.shapes, args.runs, args.no_hf = "llama-tiny,mixtral-tiny", 1, True
    args.workdir.mkdir(parents=True, exist_ok=True)
    compile_bytecode()
    wanted = tuple(f for f in FORMATS if f in args.formats.split(","))
    results = [bench_shape(s, args.workdir, args.runs, not args.no_hf, not args.no_check, not args.no_generation,
                           wanted) for s in args.shapes.split(",")]
    write_results(args.results, results, args.runs, [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    print(f"wrote {args.results}")
    print(json.dumps({info["shape"]: {r.label: [round(r.sample.seconds, 2), round(r.sample.peak_rss_mb)]
                                      for r in rows} for rows, info in results}))


if __name__ == "__main__":
    main()
