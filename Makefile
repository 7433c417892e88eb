# concrete_subspace: `make figures` regenerates every table and figure; `make test` runs the linter and the test suite.
# Both install what they need into .venv first (idempotent). `make help` lists the targets.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/concrete-subspace
STAMP  := $(VENV)/.installed
LOCK   := requirements-lock.txt
PIP    := $(PY) -m pip --disable-pip-version-check
SCALE  ?= mini
DEVICE ?= cpu
ZOO_SEED ?= 0
RUN_SEED ?= 0
ifeq ($(origin SEED),command line)
$(error SEED is now two variables: ZOO_SEED (which built zoo: the models) and RUN_SEED (test-batch order, mask samples))
endif
PRECISION ?=
THREADS ?= 1
BENCH_ARGS ?=
PYTEST_ARGS ?=

# The mini scale and the tests never touch the network (a hub call would hang before failing).
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.DEFAULT_GOAL := help
.PHONY: help install lock lint format test test-fast lab zoo zoo-ship zoo-smoke bench dist-example download clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-26s %s\n", $$1, $$2}'
	@echo "  variables: SCALE=$(SCALE) (mini|paper)  DEVICE=$(DEVICE)  ZOO_SEED=$(ZOO_SEED)  RUN_SEED=$(RUN_SEED)  PRECISION=$(PRECISION) (fp32|bf16; empty: defaults)"

install: $(STAMP) ## create .venv with exactly the versions in requirements-lock.txt, then the package (idempotent)

# Every dependency comes from the lock file at its exact version; the package itself is added without resolving
# anything, and `pip check` fails if pyproject.toml needs something the lock lacks (then run `make lock`).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r $(LOCK)
	$(PIP) install -q --no-deps -e '.[dev]'
	$(PIP) check
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

lock: ## regenerate requirements-lock.txt: install pyproject.toml's needs into .venv, then freeze every version
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -e '.[dev]'
	{ echo "# Exact versions of every installed dependency: \`make install\` installs these; regenerate with \`make lock\`."; \
	  echo "# Python $$($(PY) -c 'import platform; print(platform.python_version(), platform.machine())')"; \
	  $(PIP) freeze --exclude-editable; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

lint: install ## ruff lint + format check (config: pyproject.toml) and the notebook pairs (.py source vs .ipynb)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) tests/notebook_pairs.py --check

format: install ## apply ruff's fixes and formatting, then rewrite the .ipynb from the notebook sources
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	$(PY) tests/notebook_pairs.py

test: lint ## the linter, then the whole test suite (unit, adapters, zoo smoke build, notebooks via nbval), offline
	$(OFFLINE) $(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install ## the unit tests only (skips the zoo build and the notebooks)
	$(OFFLINE) $(PY) -m pytest -q -m "not slow and not notebooks" $(PYTEST_ARGS)

lab: install ## open the notebooks in JupyterLab (edit notebooks/*.py, the paired sources; `make notebooks` after)
	$(OFFLINE) $(VENV)/bin/jupyter lab notebooks/

zoo: install ## rebuild the mini image zoo from scratch (~25 min) and compare it with the shipped one (PRECISION=bf16: a bf16-trained zoo)
	$(OFFLINE) $(CLI) zoo build --from-scratch --seed $(ZOO_SEED) $(if $(PRECISION),--precision $(PRECISION),)

zoo-ship: install ## replace the shipped mini zoo: rebuild from scratch (--force), copy into the package, git-stage it
	$(OFFLINE) $(CLI) zoo build --from-scratch --force --seed 0 --quiet
	$(OFFLINE) $(CLI) zoo ship
	$(OFFLINE) $(PY) -m pytest -q tests/test_shipped_zoo.py
	git add concrete_subspace/shipped_zoos/mini
	@echo "zoo-ship: staged; say why in CHANGELOG.md (a new zoo format) before committing"

zoo-smoke: install ## build (or reuse) the tiny smoke zoo used by CI and notebook tests
	$(OFFLINE) $(CLI) zoo build --seed $(ZOO_SEED) --smoke

bench: install ## step time + peak memory, fp32 per-task / fp32 batched / bf16 batched beside fusion_bench (PRECISION=, THREADS=, BENCH_ARGS=)
	$(OFFLINE) OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) $(PY) -m benchmarks.harness --device $(DEVICE) --threads $(THREADS) \
		$(if $(PRECISION),--precision $(PRECISION),) $(BENCH_ARGS)

NPROC ?= 2
dist-example: install ## Concrete TA under torchrun: NPROC processes (gloo on CPU, NCCL with DEVICE=cuda), smoke zoo at mini scale
	$(OFFLINE) OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --nproc-per-node $(NPROC) -m concrete_subspace.run concrete_task_arithmetic \
		--scale $(SCALE) --device $(DEVICE) --zoo-seed $(ZOO_SEED) --seed $(RUN_SEED) $(if $(filter mini,$(SCALE)),--smoke,) --param steps=20 \
		--out runs/dist-example-$(NPROC)p

download: install ## prefetch every paper-scale model and dataset into the Hugging Face cache (needs network)
	$(CLI) download

clean: ## remove executed notebooks and Python caches (keeps .venv, the zoo cache and figures/)
	rm -rf notebooks/executed .pytest_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

# Figures: one target per notebook, plus `figures` for all of them (notebooks.mk).
-include notebooks.mk
