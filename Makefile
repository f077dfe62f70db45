# mellama_jax: `make demo` runs the Me-LLaMA pipeline in miniature; `make test` runs the test suite.
# Both create .venv and install the project on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test
DEMO_OUT ?= runs/demo
# No .pyc files at install time: Python writes them for the modules a run imports, a small part of torch's or
# transformers' thousands.
PIP_FLAGS ?= -q --no-compile
# pytest workers: CI machines have 2 cores; each worker runs JAX on an 8-device fake CPU mesh.
TEST_WORKERS ?= 2

.PHONY: demo test test-tpu test-gpu test-beam lint venv clean bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e ".[test,lint]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m mellama_jax.recipe --config configs/demo.py --workdir $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15 tests

# ruff (pyflakes, bugbear, imports at module level) and the import-linter layering contract (pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/vulture mellama_jax launch bench
	$(VENV)/bin/lint-imports --no-cache

# The TPU and Beam suites run only the test files that hold their marker, in venvs with the test runner but
# not the main suite's references (torch, transformers, lm-eval): those files import none of them.
TPU_TESTS  = $(shell grep -l "pytest.mark.tpu" tests/test_*.py)
BEAM_TESTS = $(shell grep -l "pytest.mark.beam" tests/test_*.py)

# Ahead-of-time compilation for TPU topologies needs libtpu (about 700 MB). It gets a virtual environment of
# its own: libtpu installed beside a CPU-only jax makes every CPU run print its start-up complaints.
.venv-tpu/.installed: pyproject.toml
	test -x .venv-tpu/bin/python || $(PYTHON) -m venv .venv-tpu
	.venv-tpu/bin/python -m pip install $(PIP_FLAGS) -e ".[pytest,tpu]"
	touch $@

test-tpu: .venv-tpu/.installed
	.venv-tpu/bin/python -c "import libtpu"  # the tpu tests must run, not skip
	.venv-tpu/bin/python -m pytest -q -n $(TEST_WORKERS) --durations=15 -m tpu $(TPU_TESTS)

# On a machine with an NVIDIA GPU: the cuDNN attention kernel, the model and a training run on the GPU against
# their references (tests/test_gpu.py). CI has no GPU; this target is the device check. `GPU_EXTRA` picks the
# jax CUDA wheels (gpu = jax[cuda12]).
GPU_EXTRA ?= gpu
.venv-gpu/.installed: pyproject.toml
	test -x .venv-gpu/bin/python || $(PYTHON) -m venv .venv-gpu
	.venv-gpu/bin/python -m pip install $(PIP_FLAGS) -e ".[test,$(GPU_EXTRA)]"
	touch $@

test-gpu: .venv-gpu/.installed
	.venv-gpu/bin/python -c "import jax; assert jax.devices('gpu')"  # the gpu tests must run, not skip
	JAX_PLATFORMS=cuda,cpu .venv-gpu/bin/python -m pytest -q -p no:xdist -m gpu tests/test_gpu.py

# Corpus preparation as an Apache Beam pipeline (DirectRunner) against the local runner. apache-beam pins
# protobuf < 7 and pyarrow < 26, so it gets a virtual environment of its own (other test modules import
# packages built for a newer protobuf, another reason to collect only the beam files there).
.venv-beam/.installed: pyproject.toml
	test -x .venv-beam/bin/python || $(PYTHON) -m venv .venv-beam
	.venv-beam/bin/python -m pip install $(PIP_FLAGS) -e ".[pytest,beam]"
	touch $@

test-beam: .venv-beam/.installed
	.venv-beam/bin/python -c "import apache_beam"
	.venv-beam/bin/python -m pytest -q --durations=10 -m beam $(BEAM_TESTS)

bench: $(STAMP) .venv-beam/.installed
	$(PY) bench/train_step.py
	$(PY) bench/decode.py
	$(PY) bench/input_pipeline.py
	$(PY) bench/sft_pipeline.py
	$(PY) bench/eval_throughput.py
	$(PY) bench/checkpoint_io.py
	.venv-beam/bin/python bench/corpus.py  # its Beam parts need the [beam] extra

clean:
	rm -rf runs .pytest_cache
