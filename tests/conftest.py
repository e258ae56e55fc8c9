"""Session-wide test setup: offline, quiet frameworks, and tiny models built and saved once per session.

Fixtures (all session-scoped, built lazily on first use and cached):

- ``tiny``: a :class:`TinyModels` store with
  ``tiny.model(kind, dtype)``          the randomized transformers model (do not mutate it),
  ``tiny.hf_dir(kind, form, dtype)``   that model saved by transformers as safetensors | sharded | bin,
  ``tiny.expected(kind, dtype)``       its tensors as a safetensors save stores them (tied copies dropped),
  ``tiny.logits(kind, dtype)``         its output on ``helpers.padded_batch()``,
  ``tiny.canonical_dir(kind, dtype)``  the llmstd canonical conversion of its safetensors save.
- ``tiny_gpt2_dir``: the repo's examples/tiny-gpt2 (skips if absent).
- ``real_decoder`` / ``real_encoder``: Hugging Face directories of real trained checkpoints, fetched
  once into a cache outside the repo (tests/real_checkpoints.py).

Treat every returned directory as read-only; copy it (``shutil.copytree``) before damaging it.

Two transformers generations (no release has both the TF classes and the current PyTorch code):
every test runs in exactly one environment. Tests marked ``legacy`` need transformers 4.x (its TF
classes, ``load_tf_weights_in_*``, its ``.bin`` writer) and run in ``.venv-legacy``; every other test
is written against transformers 5.x and runs in ``.venv``. ``make test`` runs ``-m "not legacy"`` in
``.venv`` and ``-m legacy`` in ``.venv-legacy``, and sets LLMSTD_TRANSFORMERS_MAJOR so that a venv
holding the wrong line is a usage error, not a quiet run; a plain ``pytest`` in either venv skips the
other generation's tests with a reason naming the venv to use. LLMSTD_LEGACY_PYTHON (set by
``make test``) is the legacy interpreter, for main-environment tests that run a short script under
transformers 4.x in a subprocess (``legacy_python`` fixture).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# transformers 5 draws progress bars on stderr when it loads or saves weights (and the GGUF reader
# through plain tqdm); these switch both off, in this process and in the subprocesses tests start.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402

MAIN_VENV = ".venv"
LEGACY_VENV = ".venv-legacy"
#: Free space the main environment's suite needs where it writes: its measured peak was 5.4 GB of
#: temporary directories (sampled every 15 s through a fresh-clone `.ci/run`), most of it trained
#: checkpoints' conversions.
DISK_NEEDED_GB = 6


def _transformers_major() -> int | None:
    """The installed transformers' major version, from its metadata (importing 4.x would start TF)."""
    from importlib import metadata

    try:
        return helpers.transformers_major()
    except metadata.PackageNotFoundError:
        return None


def _warn_if_disk_is_short(config: pytest.Config) -> None:
    """The trained checkpoints' conversions need gigabytes where the tests write; without this note a
    full disk shows up only as conversions failing with 'the disk is full' halfway through the run."""
    import shutil
    import tempfile

    where = str(config.option.basetemp or tempfile.gettempdir())
    while not os.path.exists(where):
        where = os.path.dirname(where)
    free = shutil.disk_usage(where).free / 1e9
    if free < DISK_NEEDED_GB:
        config.issue_config_time_warning(pytest.PytestWarning(
            f"{free:.1f} GB free in {where}: the main environment's suite writes up to ~{DISK_NEEDED_GB} GB "
            "there (trained checkpoints' conversions); free space or pass --basetemp elsewhere"), stacklevel=2)


def pytest_configure(config: pytest.Config) -> None:
    _warn_if_disk_is_short(config)
    expected = os.environ.get("LLMSTD_TRANSFORMERS_MAJOR")
    found = _transformers_major()
    if expected and str(found) != expected:
        venv = LEGACY_VENV if expected == "4" else MAIN_VENV
        raise pytest.UsageError(
            f"this run expects transformers {expected}.x (LLMSTD_TRANSFORMERS_MAJOR={expected}) but "
            f"{sys.executable} has {'no transformers' if found is None else f'transformers {found}.x'}: "
            f"rebuild {venv} (make test does)")
    if found is not None and found < 5:
        # transformers 4.x's TF classes need Keras 2 (tf-keras); the main environment has no tf-keras.
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, loudly, what belongs to the other transformers generation (``make test`` deselects it)."""
    major = _transformers_major()
    legacy_env = major is not None and major < 5
    for item in items:
        legacy = item.get_closest_marker("legacy") is not None
        if legacy and not legacy_env:
            found = "no transformers" if major is None else f"transformers {major}.x"
            item.add_marker(pytest.mark.skip(
                reason=f"legacy test: needs transformers 4.x, this environment has {found}; run it in "
                       f"{LEGACY_VENV}: `{LEGACY_VENV}/bin/python -m pytest -m legacy` (make test does)"))
        elif not legacy and legacy_env:
            item.add_marker(pytest.mark.skip(
                reason=f"main-environment test, written against transformers 5.x; this environment has "
                       f"transformers {major}.x; run it in {MAIN_VENV}: "
                       f"`{MAIN_VENV}/bin/python -m pytest -m 'not legacy'` (make test does)"))


def _dtype_name(dtype: Any) -> str:
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


class TinyModels:
    """Builds each (kind, dtype) model and each saved form once; everything lives under one tmp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._models: dict[tuple[str, str], Any] = {}
        self._dirs: dict[tuple[str, str, str], Path] = {}
        self._expected: dict[tuple[str, str], dict[str, Any]] = {}
        self._logits: dict[tuple[str, str], Any] = {}
        self._canonical: dict[tuple[str, str], Path] = {}

    def model(self, kind: str, dtype: Any = "float32") -> Any:
        key = (kind, _dtype_name(dtype))
        if key not in self._models:
            self._models[key] = helpers.build_model(kind, dtype=key[1])
        return self._models[key]

    def hf_dir(self, kind: str, form: str = "safetensors", dtype: Any = "float32") -> Path:
        key = (kind, form, _dtype_name(dtype))
        if key not in self._dirs:
            path = self.root / "hf" / f"{kind}-{key[2]}-{form}"
            helpers.save(self.model(kind, dtype), path, form)
            self._dirs[key] = path
        return self._dirs[key]

    def expected(self, kind: str, dtype: Any = "float32") -> dict[str, Any]:
        key = (kind, _dtype_name(dtype))
        if key not in self._expected:
            self._expected[key] = helpers.read_safetensors_dir(self.hf_dir(kind, "safetensors", dtype))
        return self._expected[key]

    def logits(self, kind: str, dtype: Any = "float32") -> Any:
        key = (kind, _dtype_name(dtype))
        if key not in self._logits:
            self._logits[key] = helpers.logits(self.model(kind, dtype), *helpers.padded_batch())
        return self._logits[key]

    def canonical_dir(self, kind: str, dtype: Any = "float32") -> Path:
        key = (kind, _dtype_name(dtype))
        if key not in self._canonical:
            import llmstd

            path = self.root / "canonical" / f"{kind}-{key[1]}"
            llmstd.convert(self.hf_dir(kind, "safetensors", dtype), path, to="canonical")
            self._canonical[key] = path
        return self._canonical[key]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir() -> Path:
    path = helpers.REPO / "examples" / "tiny-gpt2"
    if not (path / "config.json").is_file():
        pytest.skip("examples/tiny-gpt2 is not in the repository yet")
    return path


@pytest.fixture(scope="session")
def legacy_python() -> str:
    """The interpreter of the legacy environment (transformers 4.x), from LLMSTD_LEGACY_PYTHON."""
    path = os.environ.get("LLMSTD_LEGACY_PYTHON")
    if not path:
        why = f"LLMSTD_LEGACY_PYTHON is not set: point it at {LEGACY_VENV}/bin/python (make test does)"
        if os.environ.get("LLMSTD_TRANSFORMERS_MAJOR"):  # a make test run: never skip quietly
            pytest.fail(why)
        pytest.skip(why)
    if not Path(path).is_file():
        pytest.fail(f"LLMSTD_LEGACY_PYTHON={path} does not exist: build {LEGACY_VENV} (make install-legacy)")
    return path


@pytest.fixture(scope="session")
def real_decoder() -> Path:
    """SmolLM2-135M-Instruct (llama, GQA 9/3, tied), dequantised to float32: a Hugging Face directory."""
    import real_checkpoints

    try:
        return real_checkpoints.decoder_dir()
    except real_checkpoints.CacheMissing as missing:
        why = (f"the real decoder is built only in {MAIN_VENV} (transformers 5 + gguf) and {missing}: run the "
               f"main environment first (make test does)")
        if os.environ.get("LLMSTD_TRANSFORMERS_MAJOR"):  # under make test the main run has built it
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="session")
def real_encoder() -> Path:
    """all-MiniLM-L6-v2 (BERT), a complete sentence-transformers checkpoint directory."""
    import real_checkpoints

    return real_checkpoints.encoder_dir()
