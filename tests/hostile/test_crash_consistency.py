"""Kill conversions with SIGKILL at random points; the destination must be absent, the complete
previous version, or the complete new version — never partial — and the input untouched.
Also: a full disk leaves nothing behind and says so."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import llmstd
from llmstd import errors, vocab
from llmstd.checkpoint import Checkpoint
from llmstd.config import ADDED_IN_1_2, ADDED_IN_1_3, CanonicalConfig
from llmstd.formats import WriteOptions, hf
from llmstd.tensors import ArrayTensor

CHILD = textwrap.dedent(
    """
    import sys, time
    import llmstd
    from llmstd import formats
    # The API loads on first use: load it before "ready", so that kills land in the conversion.
    convert = llmstd.convert
    formats.names()
    src, dst, to, shard, overwrite = sys.argv[1:6]
    print("ready", flush=True)
    started = time.perf_counter()
    convert(src, dst, to=to, shard_size=shard or None, overwrite=overwrite == "1")
    print(f"done {time.perf_counter() - started:.4f}", flush=True)
    """
)


def _source(root: Path) -> Path:
    """A ~16 MB random Llama in Hugging Face layout (big enough that writing takes a while)."""
    config = CanonicalConfig(
        architecture="llama", head="causal_lm", causal=True, vocab_size=4096, hidden_size=256, num_layers=4, num_heads=8,
        num_kv_heads=4, head_dim=32, intermediate_size=512, max_positions=512, norm_kind="rmsnorm", norm_eps=1e-5,
        norm_position="pre", norm_bias=False, final_norm=True, embedding_norm=False, mlp_norm=True,
        activation="silu", gated_mlp=True, positional="rope", rope_theta=10000.0, rotary_dim=32, rope_scaling=None,
        attn_qkv_bias=False, attn_out_bias=False, mlp_bias=False, lm_head_bias=False, tie_word_embeddings=False,
        parallel_residual=False, type_vocab_size=0, pooler=False, sliding_window=None, bos_token_id=1,
        eos_token_id=2, pad_token_id=None, dtype="float32", **ADDED_IN_1_2, **ADDED_IN_1_3,
    )
    rng = np.random.default_rng(0)
    tensors = {n: ArrayTensor(rng.standard_normal(s, dtype=np.float32)) for n, s in vocab.expected_tensors(config).items()}
    src = root / "src"
    src.mkdir()
    hf.write(Checkpoint(path=src, format="canonical", container="memory", dialect="canonical", config=config,
                        tensors=tensors, files=[]), src, WriteOptions())
    return src


def _snapshot(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def _run(src: Path, dst: Path, to: str, shard: str, overwrite: bool) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(dst), to, shard, "1" if overwrite else "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


SCENARIOS = [
    # (target format, shard size, destination pre-exists)
    ("canonical", "", False),
    ("hf", "3MB", False),
    ("hf", "3MB", True),
]


@pytest.mark.slow
def test_sigkill_at_random_points_never_leaves_partial_output(tmp_path: Path) -> None:
    src = _source(tmp_path)
    before_src = _snapshot(src)
    rng = random.Random(1234)
    trials = 0
    outcomes: dict[str, int] = {"absent": 0, "previous": 0, "new": 0, "staging-left": 0}
    for to, shard, pre_exists in SCENARIOS:
        complete = tmp_path / f"complete-{to}-{shard}-{pre_exists}"
        proc = _run(src, complete, to, shard, False)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        duration = float(out.split()[-1])
        new_version = _snapshot(complete)
        previous = None
        for trial in range(20):
            dst = tmp_path / f"dst-{to}-{shard}-{pre_exists}"
            if pre_exists:
                # The previous version: a different, complete output (another target format).
                if not dst.exists():
                    llmstd.convert(src, dst, to="canonical" if to == "hf" else "hf")
                previous = _snapshot(dst)
            proc = _run(src, dst, to, shard, pre_exists)
            # Kill points spread over twice the calibrated time. A conversion takes ~0.07 s, so a trial
            # only slightly slower than the calibration run shifts the outcomes: with 1.3x, 3 to 22
            # of the 60 trials completed from one run to the next (the spread check below needs 5).
            time.sleep(rng.uniform(0, duration * 2))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            state = _snapshot(dst)
            outcomes["staging-left"] += any(p.name.startswith(".llmstd-staging") for p in tmp_path.iterdir())
            outcomes["new" if state == new_version else "absent" if state is None else "previous"] += 1
            allowed = [new_version] + ([previous] if pre_exists else [None])
            assert state in allowed, f"trial {trial} ({to}, {shard}, pre-exists={pre_exists}): partial output {state}"
            if not pre_exists and state is not None:
                shutil.rmtree(dst)
            trials += 1
    assert trials >= 50
    # The kill points really spread over the write: some runs died mid-write (staging left behind,
    # no destination), some completed.
    assert outcomes["staging-left"] >= 5 and outcomes["new"] >= 5 and outcomes["absent"] >= 5, outcomes
    assert _snapshot(src) == before_src
    # Staging directories of killed runs are removed by the next conversion to the same place.
    llmstd.convert(src, tmp_path / "dst-canonical--False", to="canonical", overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".llmstd-staging-dst-canonical--False")]


def test_disk_full_leaves_nothing_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source(tmp_path)
    before_src = _snapshot(src)
    written = {"bytes": 0}
    real_write = os.write

    def write_until_full(fd: int, data: bytes) -> int:
        # only the conversion's own files fill up (pytest writes through os.write too)
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            written["bytes"] += len(data)
            if written["bytes"] > 4_000_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write_until_full)  # how tensor bytes are copied (tensors.copy_to)
    with pytest.raises(errors.OutputError, match="disk is full"):
        llmstd.convert(src, tmp_path / "out", to="canonical")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".llmstd-staging")]
    assert _snapshot(src) == before_src
