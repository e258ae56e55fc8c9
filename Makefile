# Two entry points: `make demo` and `make test`. Both create the virtual environment they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# The test suite's real clients, pinned: torch's plain 2.13.0 resolves to the local CPU build (an
# unpinned torch would pull a multi-GB CUDA build); transformers 4.57 is the last line with TF classes.
TEST_PINS := torch==2.13.0 transformers==4.57.6 "tensorflow-cpu==2.21.*" "tf-keras==2.21.*" \
	"onnx==1.23.*" "onnxruntime>=1.18" "onnxscript>=0.5" "h5py>=3.8"
DEMO_OUT := build/demo

.PHONY: demo test install install-test bench fuzz clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml Makefile | $(PY)
	$(PIP) install -q -e ".[test]" $(TEST_PINS)
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	rm -rf $(DEMO_OUT)
	$(VENV)/bin/llmstd inspect examples/tiny-gpt2
	$(VENV)/bin/llmstd convert examples/tiny-gpt2 $(DEMO_OUT)/canonical --to canonical
	$(VENV)/bin/llmstd convert $(DEMO_OUT)/canonical $(DEMO_OUT)/hf --to hf
	$(PY) examples/compare_tensors.py examples/tiny-gpt2 $(DEMO_OUT)/hf

test: install-test
	$(PY) -m pytest -q

# Scale benchmark (several GB of generated checkpoints under BENCH_DIR); writes benchmarks/RESULTS.md.
BENCH_DIR ?= /tmp/llmstd-bench
bench: install-test
	$(PY) benchmarks/bench.py --workdir $(BENCH_DIR) --runs 5

# Longer fuzzing of every reader (the suite runs a bounded number of examples per reader).
fuzz: install-test
	LLMSTD_FUZZ_EXAMPLES=$${LLMSTD_FUZZ_EXAMPLES:-5000} $(PY) -m pytest -q tests/hostile/test_fuzz.py

clean:
	rm -rf build dist *.egg-info $(VENV)
