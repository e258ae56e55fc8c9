# Two entry points: `make demo` and `make test`. Both create the virtual environments they need.
PYTHON ?= python3
VENV ?= .venv
LEGACY_VENV ?= .venv-legacy
PY := $(VENV)/bin/python
LEGACY_PY := $(LEGACY_VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
LEGACY_PIP := $(LEGACY_PY) -m pip --disable-pip-version-check
# The test suite's real clients, pinned. torch's plain 2.13.0 resolves to the local CPU build (an
# unpinned torch would pull a multi-GB CUDA build). Two environments, because no transformers release
# has both: the main one runs every PyTorch-side reference comparison against transformers 5 (gguf and
# accelerate let it dequantise the real decoder the tests fetch; TensorFlow is there for llmstd's own
# TF runtime and containers); the legacy one has transformers 4.57, the last line with the TF classes
# and load_tf_weights_in_*, which need Keras 2 (tf-keras, TF_USE_LEGACY_KERAS=1), and runs the tests
# marked `legacy`.
TORCH_PIN := torch==2.13.0
TF_PIN := "tensorflow-cpu==2.21.*" "h5py>=3.8"
ONNX_PINS := "onnx==1.23.*" "onnxruntime>=1.18"
# KerasHub presets are checked against KerasHub itself (Keras 3, TensorFlow backend). keras-hub pulls
# tensorflow-text, which requires the full tensorflow wheel of the same release as tensorflow-cpu.
KERAS_HUB_PINS := "keras-hub==0.32.*" "keras==3.15.*"
TEST_PINS := $(TORCH_PIN) transformers==5.24.0 $(TF_PIN) $(ONNX_PINS) "onnxscript>=0.5" "onnxruntime-genai==0.18.*" "gguf>=0.10" "accelerate>=1.0" $(KERAS_HUB_PINS)
LEGACY_PINS := $(TORCH_PIN) transformers==4.57.6 $(TF_PIN) "tf-keras==2.21.*" $(ONNX_PINS)
DEMO_OUT := build/demo

.PHONY: demo test install install-test install-legacy bench fuzz clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(LEGACY_PY):
	$(PYTHON) -m venv $(LEGACY_VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml Makefile | $(PY)
	$(PIP) install -q -e ".[test]" $(TEST_PINS)
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

$(LEGACY_VENV)/.installed-test: pyproject.toml Makefile | $(LEGACY_PY)
	$(LEGACY_PIP) install -q -e ".[test]" $(LEGACY_PINS)
	touch $@

install-test: $(VENV)/.installed-test

install-legacy: $(LEGACY_VENV)/.installed-test

demo: install
	rm -rf $(DEMO_OUT)
	$(VENV)/bin/llmstd inspect examples/tiny-gpt2
	$(VENV)/bin/llmstd convert examples/tiny-gpt2 $(DEMO_OUT)/canonical --to canonical
	$(VENV)/bin/llmstd convert $(DEMO_OUT)/canonical $(DEMO_OUT)/hf --to hf
	$(PY) examples/compare_tensors.py examples/tiny-gpt2 $(DEMO_OUT)/hf

# The main environment first: it builds the real-checkpoint cache (~/.cache/llmstd-tests, or
# LLMSTD_TEST_CACHE) that the legacy run reads. Both runs always happen; either failing fails `make test`.
# LLMSTD_TRANSFORMERS_MAJOR makes tests/conftest.py refuse a venv holding the wrong transformers line;
# LLMSTD_LEGACY_PYTHON lets main-environment tests run short scripts under transformers 4.57.
TEST_ENV := LLMSTD_LEGACY_PYTHON=$(abspath $(LEGACY_PY))
test: install-test install-legacy
	@status=0; \
	start=$$(date +%s); \
	$(TEST_ENV) LLMSTD_TRANSFORMERS_MAJOR=5 $(PY) -m pytest -q -m "not legacy" $(PYTEST_ARGS) || status=1; \
	echo "main environment ($(VENV), transformers 5): $$(( $$(date +%s) - start )) s"; \
	start=$$(date +%s); \
	$(TEST_ENV) LLMSTD_TRANSFORMERS_MAJOR=4 $(LEGACY_PY) -m pytest -q -m legacy $(PYTEST_ARGS) || status=1; \
	echo "legacy environment ($(LEGACY_VENV), transformers 4.57): $$(( $$(date +%s) - start )) s"; \
	exit $$status

# Scale benchmark (several GB of generated checkpoints under BENCH_DIR); writes benchmarks/RESULTS.md.
BENCH_DIR ?= /tmp/llmstd-bench
bench: install-test
	$(PY) benchmarks/bench.py --workdir $(BENCH_DIR) --runs 5

# Longer fuzzing of every reader (the suite runs a bounded number of examples per reader).
fuzz: install-test
	LLMSTD_FUZZ_EXAMPLES=$${LLMSTD_FUZZ_EXAMPLES:-5000} $(PY) -m pytest -q tests/hostile/test_fuzz.py

clean:
	rm -rf build dist *.egg-info $(VENV) $(LEGACY_VENV)
