# Figures: every table and figure of the paper is a notebook run headless by papermill (included by the Makefile).
#   make figures                            all notebooks at mini scale (offline, CPU; builds the zoos if missing;
#                                           notebook 02 runs on the mini-text zoo, all-MiniLM-L6-v2 + LoRA)
#   make fig-01_multitask_table             one notebook
#   make figures SCALE=paper DEVICE=cuda    the same at paper scale (Hub models; run `make download` first)
#   make figures SMOKE=True                 tiny zoo and 2 steps (what CI runs), outputs under figures/mini-smoke/
#   make figures PRECISION=bf16             bf16 autocast in the test-time methods (default: the notebooks' fp32)
#   make figures SCALE=paper DEVICE=cuda CHECKPOINTS=/path/to/task_vectors   the paper's open_clip checkpoints
#                                           (vision notebooks; the walkthrough and Flan-T5 notebooks ignore it)
# Executed copies (with outputs) go to notebooks/executed/; tables, figures and results JSON to figures/<scale>/.
# Runs are cached (~/.cache/concrete_subspace/results), so notebooks share runs and a re-run only redraws.

SCALE  ?= mini
DEVICE ?= cpu
SEED   ?= 0
SMOKE  ?= False
CHECKPOINTS ?=
PRECISION ?=
VENV   ?= .venv
STAMP  ?= $(VENV)/.installed
OFFLINE ?= HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

NOTEBOOKS := 00_walkthrough 01_multitask_table 02_flan_t5_glue 03_generalization 04_robustness 05_curves \
             06_mask_analysis 07_ablations
FIG_TARGETS := $(addprefix fig-,$(NOTEBOOKS))
EXECUTED := notebooks/executed
PAPERMILL := $(VENV)/bin/papermill
# The mini scale never touches the network; the paper scale may read the Hugging Face cache / Hub.
FIG_ENV := $(if $(filter mini,$(SCALE)),$(OFFLINE),)
SMOKE_FLAG := $(if $(filter True true 1,$(SMOKE)),--smoke,)
SMOKE_SUFFIX := $(if $(SMOKE_FLAG),-smoke,)
CHECKPOINTS_FLAG := $(if $(CHECKPOINTS),-p checkpoints $(CHECKPOINTS),)
PRECISION_FLAG := $(if $(PRECISION),-p precision $(PRECISION),)

.PHONY: figures figures-zoo notebooks $(FIG_TARGETS)

figures: $(FIG_TARGETS) ## run every notebook (SCALE=mini|paper DEVICE=cpu|cuda SMOKE=False|True) -> figures/
	@echo "figures: done; outputs in figures/$(SCALE)$(SMOKE_SUFFIX)/, executed notebooks in $(EXECUTED)/"

figures-zoo: $(STAMP) ## build the mini zoos the notebooks need: image (seed SEED) and text (seed 0, notebook 02)
ifeq ($(SCALE),mini)
	$(OFFLINE) $(VENV)/bin/concrete-subspace zoo build --seed $(SEED) $(SMOKE_FLAG)
	$(OFFLINE) $(VENV)/bin/concrete-subspace zoo build --scale mini-text --seed 0 $(SMOKE_FLAG)
endif

notebooks: $(STAMP) ## write each notebooks/NAME.ipynb from its source notebooks/NAME.py (jupytext percent format, no outputs)
	$(VENV)/bin/python tests/notebook_pairs.py

fig-%: ## run one notebook through papermill, e.g. make fig-05_curves (names: ls notebooks/*.ipynb)

$(FIG_TARGETS): fig-%: figures-zoo
	@mkdir -p $(EXECUTED)
	@echo "papermill $*: scale=$(SCALE) device=$(DEVICE) seed=$(SEED) smoke=$(SMOKE)"
	@start=$$(date +%s); \
	$(FIG_ENV) $(PAPERMILL) -k python3 --log-level WARNING notebooks/$*.ipynb $(EXECUTED)/$*-$(SCALE)$(SMOKE_SUFFIX).ipynb \
		-p scale $(SCALE) -p device $(DEVICE) -p seed $(SEED) -p smoke $(SMOKE) $(CHECKPOINTS_FLAG) $(PRECISION_FLAG) && \
	echo "papermill $*: $$(( $$(date +%s) - start )) s"
