# mellama_jax: `make demo` runs the Me-LLaMA pipeline in miniature; `make test` runs the test suite.
# Both create .venv and install the project on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test
DEMO_OUT ?= runs/demo
# pytest workers: CI machines have 2 cores; each worker runs JAX on an 8-device fake CPU mesh.
TEST_WORKERS ?= 2

.PHONY: demo test test-tpu test-beam test-fast venv clean bench lint

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m mellama_jax.recipe --config configs/demo.py --workdir $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15 tests

# Ahead-of-time compilation for TPU topologies needs libtpu (about 700 MB); kept out of `make test`.
test-tpu: $(STAMP)
	$(PY) -m pip install -q -e ".[tpu]"
	$(PY) -m pytest -q -m tpu tests

# Corpus preparation as an Apache Beam pipeline (DirectRunner) against the local runner. apache-beam pins
# protobuf < 7 and pyarrow < 26, so it gets a virtual environment of its own.
test-beam:
	test -x .venv-beam/bin/python || $(PYTHON) -m venv .venv-beam
	.venv-beam/bin/python -m pip install -q -e ".[test,beam]"
	.venv-beam/bin/python -m pytest -q tests/test_data_inputs.py -k beam

bench: $(STAMP)
	$(PY) bench/train_step.py
	$(PY) bench/decode.py
	$(PY) bench/input_pipeline.py

clean:
	rm -rf runs .pytest_cache
