# plm: `make demo` runs the whole job on the bundled defaults, `make test` runs the tests.
# Each installs what it needs into .venv first. TORCH is the torch requirement: on a machine
# without a GPU, point it at a CPU build, e.g. `make test TORCH=torch==2.13.0` where that
# wheel is on local disk, or a CPU wheel index of your own.
PYTHON ?= python3
TORCH ?= torch>=2.6
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The oldest releases pyproject.toml allows, pinned: `make test-oldest` runs the tests against them
# in a venv of their own. Keep in step with the lower bounds in pyproject.toml.
OLDEST := transformers==5.6.0 datasets==3.0.0 evaluate==0.4.3 accelerate==1.3.0
VENV_OLDEST := .venv-oldest
BIN_OLDEST := $(VENV_OLDEST)/bin
STAMP_OLDEST := $(VENV_OLDEST)/.installed

.PHONY: install test test-slow test-oldest demo bench lint clean

install: $(STAMP)

# A torch wheel already on local disk (pip's find-links) is preferred over a download.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	-$(BIN)/python -m pip install -q --no-index --no-deps "$(TORCH)" 2>/dev/null
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The same tests on the oldest allowed transformers, datasets, evaluate and accelerate (OLDEST).
$(STAMP_OLDEST): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV_OLDEST)
	-$(BIN_OLDEST)/python -m pip install -q --no-index --no-deps "$(TORCH)" 2>/dev/null
	$(BIN_OLDEST)/python -m pip install -q "$(TORCH)"
	$(BIN_OLDEST)/python -m pip install -q -e ".[dev]" $(OLDEST)
	touch $(STAMP_OLDEST)

test-oldest: $(STAMP_OLDEST)
	HF_HUB_OFFLINE=1 $(BIN_OLDEST)/python -m pytest -q

test-slow: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

# The whole story: pretrain on review text, check it with fill-mask, fine-tune from it, predict.
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/plm pretrain demo/corpus.txt --output runs/demo-pretrain --overwrite \
		--epochs 16 --batch-size 8 --lr 5e-4
	HF_HUB_OFFLINE=1 $(BIN)/plm fill-mask --model runs/demo-pretrain "the acting was [MASK] ."
	HF_HUB_OFFLINE=1 $(BIN)/plm finetune demo/sentiment.csv --model runs/demo-pretrain --output runs/demo \
		--overwrite --epochs 5
	HF_HUB_OFFLINE=1 $(BIN)/plm predict --model runs/demo "This is a great movie!"

# plm against plain Hugging Face, side by side: bench/results.json and the table in README.md (~25 min on 2 cores).
bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python bench/run.py

lint: install
	$(BIN)/ruff check plmcli tests bench
	$(BIN)/ruff format --check plmcli tests bench

clean:
	rm -rf $(VENV) $(VENV_OLDEST) runs .pytest_cache .ruff_cache
