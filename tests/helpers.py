"""Shared test utilities: tiny randomized Hugging Face models, saving them in each container, running
them, and comparing tensors bit for bit.

Everything here that needs torch/transformers imports them lazily, so test modules that only need the
file helpers (and the lazy-import tests) stay framework-free.

Models are tiny (hidden 32, 2 layers, vocab 128, 128 positions) and *every* parameter is random:
transformers' init leaves biases at 0 and norm weights at 1, which would hide a swapped bias or norm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CLI = VENV_BIN / "llmstd"

VOCAB = 128
SEQ = 20  # tokens per sequence in the test batch (> 16 so rotary mistakes show)

# kind -> (transformers config class, model class, Auto class used to reload, config kwargs)
KINDS: dict[str, dict[str, Any]] = {
    "gpt2": {
        "config": "GPT2Config", "model": "GPT2LMHeadModel", "auto": "AutoModelForCausalLM",
        "kwargs": dict(vocab_size=VOCAB, n_positions=128, n_embd=32, n_layer=2, n_head=4,
                       bos_token_id=0, eos_token_id=0),
    },
    "bert": {
        "config": "BertConfig", "model": "BertModel", "auto": "AutoModel",
        "kwargs": dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=128, type_vocab_size=2),
    },
    "bert-mlm": {
        "config": "BertConfig", "model": "BertForMaskedLM", "auto": "AutoModelForMaskedLM",
        "kwargs": dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=128, type_vocab_size=2),
    },
    "llama": {
        "config": "LlamaConfig", "model": "LlamaForCausalLM", "auto": "AutoModelForCausalLM",
        "kwargs": dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       tie_word_embeddings=False, rope_theta=10000.0),
    },
    "llama-tied": {
        "config": "LlamaConfig", "model": "LlamaForCausalLM", "auto": "AutoModelForCausalLM",
        "kwargs": dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       tie_word_embeddings=True),
    },
    "mistral": {
        "config": "MistralConfig", "model": "MistralForCausalLM", "auto": "AutoModelForCausalLM",
        "kwargs": dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       sliding_window=64, tie_word_embeddings=False),
    },
    "qwen2": {
        "config": "Qwen2Config", "model": "Qwen2ForCausalLM", "auto": "AutoModelForCausalLM",
        "kwargs": dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       tie_word_embeddings=True),
    },
}
ALL_KINDS = tuple(KINDS)
FORMS = ("safetensors", "sharded", "bin")
SHARD_SIZE = "20KB"  # gives several shards for every tiny model


# ------------------------------------------------------------------------------------------------
# building and running models (torch + transformers)


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if isinstance(dtype, str):
        return getattr(torch, dtype)
    return dtype if dtype is not None else torch.float32


def randomize_(model: Any, seed: int = 0) -> Any:
    """Set EVERY parameter (weights, biases, norm weights) to normal*0.05, then re-tie tied weights."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters(remove_duplicate=True)):
            values = torch.randn(param.shape, generator=gen, dtype=torch.float32) * 0.05
            param.copy_(values.to(param.dtype))
    model.tie_weights()
    return model


MATRIX_SCALE = 5.0  # std 0.05 -> 0.25
VECTOR_SCALE = 20.0  # std 0.05 -> 1.0


def sharpen_(model: Any) -> Any:
    """Rescale every randomized parameter by its rank: matrices to std 0.25, vectors to std 1.

    With randomize_'s std 0.05, queries and keys after a norm are ~0.01, softmax is uniform and a
    swapped q/k, a wrong rotary permutation or a masking mistake moves logits by ~1e-7. At these
    scales attention is peaked and such faults show. No names are involved; tied parameters are
    listed once by ``parameters()``, so they are scaled once.
    """
    import torch

    with torch.no_grad():
        for param in model.parameters():
            param.mul_(MATRIX_SCALE if param.ndim >= 2 else VECTOR_SCALE)
    model.tie_weights()
    return model


def build_model(kind: str, dtype: Any = None, seed: int = 0, attn_implementation: str = "eager") -> Any:
    """A tiny randomized transformers model of ``kind`` (see KINDS), in eval mode."""
    import torch
    import transformers

    spec = KINDS[kind]
    config = getattr(transformers, spec["config"])(**spec["kwargs"])
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = getattr(transformers, spec["model"])(config)
    randomize_(model, seed)
    model = model.to(_torch_dtype(dtype))
    model.eval()
    return model


def auto_class(kind: str) -> Any:
    import transformers

    return getattr(transformers, KINDS[kind]["auto"])


def load_hf(kind: str, path: str | Path, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Load a directory with transformers' Auto class for ``kind``; returns (model, loading info)."""
    kwargs.setdefault("attn_implementation", "eager")
    kwargs.setdefault("dtype", "auto")
    model, info = auto_class(kind).from_pretrained(str(path), output_loading_info=True, **kwargs)
    model.eval()
    return model, info


def assert_clean_loading_info(info: Mapping[str, Any]) -> None:
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not list(info.get(key, [])), f"{key}: {info.get(key)}"


def transformers_major() -> int:
    """The installed transformers' major version (read from its metadata: no import)."""
    from importlib import metadata

    return int(metadata.version("transformers").split(".")[0])


def save(model: Any, directory: str | Path, form: str) -> Path:
    """Save with transformers' own save_pretrained: 'safetensors', 'sharded' (several safetensors
    shards + index) or 'bin' (pytorch_model.bin).

    transformers 5 writes safetensors only (it ignores ``safe_serialization=False``), so under 5.x the
    'bin' form is written the way 4.x's save_pretrained writes it: the config files by save_pretrained,
    then ``torch.save`` of the state dict, tied duplicates included (they share storage, so the pickle
    stores the tensor once), every tensor made contiguous.
    """
    directory = Path(directory)
    if form == "safetensors":
        model.save_pretrained(directory, safe_serialization=True)
    elif form == "sharded":
        model.save_pretrained(directory, safe_serialization=True, max_shard_size=SHARD_SIZE)
        assert len(list(directory.glob("model-*.safetensors"))) >= 2, "sharded form should give several shards"
    elif form == "bin" and transformers_major() < 5:
        model.save_pretrained(directory, safe_serialization=False)
    elif form == "bin":
        import torch

        model.save_pretrained(directory)
        for weights in directory.glob("model*.safetensors*"):
            weights.unlink()
        state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
        for name in getattr(model, "_keys_to_ignore_on_save", None) or ():
            state.pop(name, None)
        torch.save(state, directory / "pytorch_model.bin")
    else:
        raise ValueError(f"unknown form {form!r}")
    if form == "bin":
        assert (directory / "pytorch_model.bin").is_file() and not list(directory.glob("*.safetensors"))
    return directory


def padded_batch(seq: int = SEQ, vocab: int = VOCAB, seed: int = 1) -> tuple[Any, Any]:
    """Two sequences of ``seq`` tokens; the second is right-padded (last 6 positions masked)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab, (2, seq), generator=gen)
    attention_mask = torch.ones(2, seq, dtype=torch.long)
    attention_mask[1, seq - 6:] = 0
    input_ids[1, seq - 6:] = 0
    return input_ids, attention_mask


def logits(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """The model's output on a batch: logits for LM heads; hidden states (+ pooler) for base models."""
    import torch

    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask)
    if getattr(out, "logits", None) is not None:
        return out.logits
    parts = [out.last_hidden_state.reshape(-1)]
    if getattr(out, "pooler_output", None) is not None:
        parts.append(out.pooler_output.reshape(-1))
    return torch.cat(parts)


def decoder_positions(mask: np.ndarray) -> np.ndarray:
    """transformers' generate(): cumsum(mask) - 1, padding positions set to 1."""
    return np.where(mask == 0, 1, mask.cumsum(-1) - 1)


class BuiltOnce:
    """A fixture store whose artefacts (models, saves, conversions) are each built on first use."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, ...], Any] = {}

    def _once(self, key: tuple[str, ...], build: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]


# ------------------------------------------------------------------------------------------------
# greedy generation: onnxruntime driving a graph's key/value cache, and transformers' generate

NEW_TOKENS = 32


def greedy_ort(session: Any, inputs: dict[str, np.ndarray], new_tokens: int = NEW_TOKENS
               ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy generation driving the key/value cache by hand, as generation runtimes do: the prompt
    with an empty cache, then one token per call with the previous call's ``present`` as its past;
    positions as transformers' ``generate`` computes them. Returns (ids, each step's next-token
    logits [steps, batch, vocab])."""
    from llmstd.onnx_graph.cache import empty_past, next_past

    names = [o.name for o in session.get_outputs()]
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": decoder_positions(mask),
             **empty_past(session.get_inputs(), ids.shape[0])}
    steps = []
    for _ in range(new_tokens):
        outputs = dict(zip(names, session.run(None, feeds)))
        steps.append(outputs["logits"][:, -1, :])
        nxt = steps[-1].argmax(-1)[:, None]
        ids = np.concatenate([ids, nxt], axis=1)
        mask = np.concatenate([mask, np.ones_like(nxt)], axis=1)
        feeds = {"input_ids": nxt, "attention_mask": mask, "position_ids": mask.sum(-1, keepdims=True) - 1,
                 **next_past(outputs)}
        assert feeds["past_key_values.0.key"].shape[2] == ids.shape[1] - 1  # the cache grows by one per step
    return ids, np.stack(steps)


def greedy_torch(model: Any, inputs: dict[str, np.ndarray], new_tokens: int = NEW_TOKENS
                 ) -> tuple[np.ndarray, np.ndarray]:
    """transformers' own ``generate`` (greedy, with its cache): (ids, each step's logits)."""
    import torch

    model.generation_config.eos_token_id = None  # generate exactly new_tokens, as the loop above
    with torch.no_grad():
        out = model.generate(input_ids=torch.from_numpy(inputs["input_ids"]),
                             attention_mask=torch.from_numpy(inputs["attention_mask"]),
                             do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    return out.sequences.numpy(), torch.stack(out.logits).numpy()


def step_nmse(a: np.ndarray, b: np.ndarray) -> float:
    """Largest normalised mean squared error of one step's logits (check's float32 measure)."""
    return max(float(((x - y) ** 2).mean() / (y ** 2).mean()) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------------------------
# reading and comparing tensors


def torch_bytes(t: Any) -> bytes:
    import torch

    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def np_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).tobytes()


def read_safetensors_dir(directory: str | Path, stem: str = "model") -> dict[str, Any]:
    """All tensors of ``<stem>.safetensors`` or its sharded set, as torch tensors (read by safetensors)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    single = directory / f"{stem}.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = json.loads((directory / f"{stem}.safetensors.index.json").read_text())
    out: dict[str, Any] = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors = load_file(str(directory / shard))
        assert not set(tensors) & set(out), f"tensor in two shards: {set(tensors) & set(out)}"
        out.update(tensors)
    assert set(out) == set(index["weight_map"]), "index weight_map disagrees with the shards"
    return out


def expected_state(model: Any, tmp_dir: str | Path) -> dict[str, Any]:
    """The tensors a safetensors save_pretrained stores (tied duplicates dropped), as torch tensors."""
    tmp_dir = Path(tmp_dir)
    if not (tmp_dir / "model.safetensors").is_file():
        model.save_pretrained(tmp_dir, safe_serialization=True)
    return read_safetensors_dir(tmp_dir)


def assert_tensors_bit_identical(expected: Mapping[str, Any], got: str | Path | Mapping[str, Any]) -> None:
    """Same names, dtypes, shapes and raw bytes. ``got`` is a directory (read with safetensors) or a dict."""
    if not isinstance(got, Mapping):
        got = read_safetensors_dir(got)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing and not extra, f"missing {missing}, unexpected {extra}"
    for name, want in expected.items():
        have = got[name]
        assert have.dtype == want.dtype, f"{name}: dtype {have.dtype} != {want.dtype}"
        assert tuple(have.shape) == tuple(want.shape), f"{name}: shape {tuple(have.shape)} != {tuple(want.shape)}"
        assert torch_bytes(have) == torch_bytes(want), f"{name}: bytes differ"


# ------------------------------------------------------------------------------------------------
# files and the CLI


def tree(directory: str | Path) -> list[str]:
    """Relative paths of everything under ``directory`` (sorted); [] if it does not exist."""
    directory = Path(directory)
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def leftovers(parent: str | Path) -> list[str]:
    """Staging directories llmstd might have left next to a destination."""
    return sorted(p.name for p in Path(parent).iterdir() if p.name.startswith(".llmstd-staging-"))


def run_cli(*args: str, cwd: str | Path | None = None, env: Mapping[str, str] | None = None,
            exe: str | Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the ``llmstd`` console script in a subprocess (no terminal, so no progress bars)."""
    full_env = dict(os.environ)
    full_env.update({"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"})
    full_env.pop("LLMSTD_DEBUG", None)
    if env:
        full_env.update(env)
    return subprocess.run([str(exe or CLI), *map(str, args)], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def assert_cli_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit code 1, stderr is exactly one line starting with 'error:' and no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def greedy_genai(package: str | Path, prompt: np.ndarray, new_tokens: int = NEW_TOKENS) -> np.ndarray:
    """onnxruntime-genai's greedy generation of up to ``new_tokens`` tokens after one prompt (1-D
    ids), stopping at the package's eos token as :func:`greedy_with_eos` does."""
    import onnxruntime_genai as og

    model = og.Model(str(package))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(prompt, dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    return np.asarray(generator.get_sequence(0), dtype=np.int64)


def greedy_with_eos(model: Any, prompt: np.ndarray, new_tokens: int = NEW_TOKENS) -> np.ndarray:
    """transformers' greedy ``generate`` of up to ``new_tokens`` tokens after one prompt, stopping at
    the model's eos token (genai cannot be told to ignore it; a minimum length would suppress it),
    returned as genai returns a sequence: without the eos it stopped at."""
    import torch

    eos = model.config.eos_token_id
    with torch.no_grad():
        out = model.generate(input_ids=torch.from_numpy(np.asarray(prompt, dtype=np.int64))[None], do_sample=False,
                             max_new_tokens=new_tokens, pad_token_id=0, eos_token_id=eos)
    ids = out[0].numpy()
    return ids[:-1] if ids[-1] == eos else ids


LEGACY_LOGITS_SCRIPT = """
import json, sys
import numpy as np, torch
from transformers import AutoModelForCausalLM
jobs, inputs = json.loads(sys.argv[1]), np.load(sys.argv[2])
ids, mask = torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"])
for job in jobs:
    model, info = AutoModelForCausalLM.from_pretrained(job["dir"], dtype=torch.float32, attn_implementation="eager",
                                                       output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), (job, info)
    with torch.no_grad():
        np.save(job["out"], model.eval()(input_ids=ids, attention_mask=mask).logits.numpy())
"""


def assert_transformers_4_computes(legacy_python: str, work: Path, models: Mapping[str, tuple[Path, Any]],
                                   seq: int = 100) -> None:
    """Each HF directory of ``models`` (name -> (directory, the transformers 5 model it should be)) loads
    in transformers 4.57 -- one subprocess of the legacy environment for all -- without a missing or
    unexpected key, and computes logits within check's float32 limit of the transformers 5 model's on a
    padded batch (the two generations' kernels may round differently)."""
    import torch

    ids, mask = padded_batch(seq=seq, vocab=VOCAB)
    np.savez(work / "inputs.npz", input_ids=ids.numpy(), attention_mask=mask.numpy())
    jobs = [{"name": name, "dir": str(directory), "out": str(work / f"{name}.npy")}
            for name, (directory, _) in models.items()]
    env = {**os.environ, "USE_TORCH": "1", "USE_TF": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([legacy_python, "-c", LEGACY_LOGITS_SCRIPT, json.dumps(jobs), str(work / "inputs.npz")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    real = mask.numpy().astype(bool)
    for job in jobs:
        with torch.no_grad():
            want = models[job["name"]][1](input_ids=ids, attention_mask=mask).logits.numpy()[real]
        got = np.load(job["out"])[real]
        nmse = float(((got - want) ** 2).mean() / (want ** 2).mean())
        assert nmse <= 1e-10, f"{job['name']}: transformers 4.57 computes another model (NMSE {nmse:.2e})"


def sharp_random_model(config_cls: str, model_cls: str, kwargs: Mapping[str, Any], seed: int) -> Any:
    """transformers' ``model_cls`` for ``config_cls(**kwargs)`` (eager attention) with every parameter
    random and sharpened, in eval mode."""
    import torch
    import transformers

    config = getattr(transformers, config_cls)(**kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config)
    return sharpen_(randomize_(model, seed=seed)).eval()


class ConvertedStore:
    """Checkpoints built once per test module: subclasses say how ``hf(arch)`` is saved; ``converted``
    caches llmstd's conversion of it to each format."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs: dict[tuple[str, str], Path] = {}

    def hf(self, arch: str) -> Path:
        raise NotImplementedError

    def converted(self, arch: str, fmt: str) -> Path:
        if (arch, fmt) not in self.dirs:
            import llmstd

            llmstd.convert(self.hf(arch), self.root / f"{arch}-{fmt}", to=fmt)
            self.dirs[arch, fmt] = self.root / f"{arch}-{fmt}"
        return self.dirs[arch, fmt]


def assert_cached_onnx_generation_matches(onnx_dir: Path, model: Any) -> None:
    """Greedy generation of NEW_TOKENS tokens from a left-padded batch of two prompts: onnxruntime
    driving the graph's key/value cache by hand gives ``model``'s (transformers) ``generate`` tokens,
    every step's logits within check's float32 limit."""
    import onnxruntime as ort

    ids, mask = padded_batch(seq=40, vocab=VOCAB)
    prompt = {"input_ids": ids[:2].numpy(), "attention_mask": mask[:2].numpy()[:, ::-1].copy()}  # pad on the left
    prompt["input_ids"] = np.where(prompt["attention_mask"] == 0, 0, prompt["input_ids"])
    session = ort.InferenceSession(str(Path(onnx_dir) / "model.onnx"), providers=["CPUExecutionProvider"])
    ours, our_logits = greedy_ort(session, prompt)
    theirs, their_logits = greedy_torch(model, prompt)
    np.testing.assert_array_equal(ours, theirs)
    assert step_nmse(our_logits, their_logits) <= 1e-10
