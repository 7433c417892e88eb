# Figures: every table and figure of the paper is a notebook run headless by papermill (included by the Makefile).
#   make figures                            all notebooks at mini scale (offline, CPU; builds the zoos if missing;
#                                           notebook 02 runs on the mini-text zoo, all-MiniLM-L6-v2 + LoRA)
#   make figures FIG_JOBS=1                 the same, one job at a time (default: 2 at mini, 1 at paper; logs per job)
#   make fig-01_multitask_table             one notebook
#   make figures SCALE=paper DEVICE=cuda    the same at paper scale (Hub models; run `make download` first)
#   make figures SMOKE=True                 tiny zoo and 2 steps (what CI runs), outputs under figures/mini-smoke/
#   make figures PRECISION=bf16             bf16 autocast in the test-time methods (default: the notebooks' fp32)
#   make figures ZOO_SEED=1 RUN_SEED=2      the zoos built with seed 1 (default 0: the shipped ones), run seed 2
#                                           (batch order, mask samples; notebooks 01 and 02 run their `seeds`)
#   make figures SCALE=paper DEVICE=cuda CHECKPOINTS=/path/to/task_vectors   the paper's open_clip checkpoints
#                                           (vision notebooks; the walkthrough and Flan-T5 notebooks ignore it)
# Executed copies (with outputs) go to notebooks/executed/; tables, figures and results JSON to figures/<scale>/.
# Runs are cached (~/.cache/concrete_subspace/results), so notebooks share runs and a re-run only redraws.

SCALE  ?= mini
DEVICE ?= cpu
ZOO_SEED ?= 0
RUN_SEED ?= 0
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

# Mini: two jobs, one per core of a 2-core machine; paper: one (two notebooks on one GPU can run out of memory).
FIG_JOBS ?= $(if $(filter mini,$(SCALE)),2,1)
FIG_LOGS := $(EXECUTED)/logs
# `make figures` runs FIG_JOBS jobs at a time (the two zoo builds, then the notebooks; 1 torch thread each), longest
# first: while the image zoo builds, the text zoo and notebook 02 use the other core; 05 and 06 wait for 01, whose
# runs they reuse. Each job's output goes to $(FIG_LOGS)/<job>.log (parallel progress bars would interleave).
FIG_ORDER := 01_multitask_table 02_flan_t5_glue 03_generalization 04_robustness 00_walkthrough 07_ablations \
             05_curves 06_mask_analysis
FIG_LOGGED := $(if $(FIG_SCHEDULE),1,)

# $(call logged,NAME,COMMAND): run COMMAND; in the scheduled `make figures` its output goes to a log file, and on
# failure the log's tail is printed. Either way the job's start and wall time are reported.
define logged
@mkdir -p $(FIG_LOGS); start=$$(date +%s); echo "$(1): started$(if $(FIG_LOGGED), (log: $(FIG_LOGS)/$(1).log),)"; \
if $(2) $(if $(FIG_LOGGED),> $(FIG_LOGS)/$(1).log 2>&1,); then echo "$(1): done in $$(( $$(date +%s) - start )) s"; \
else status=$$?; $(if $(FIG_LOGGED),tail -n 40 $(FIG_LOGS)/$(1).log;,) echo "$(1): FAILED (exit $$status)"; exit $$status; fi
endef

.PHONY: figures figures-all figures-zoo figures-zoo-image figures-zoo-text notebooks $(FIG_TARGETS)

figures: $(STAMP) ## run every notebook, FIG_JOBS at a time (mini 2, paper 1) (SCALE=mini|paper DEVICE=cpu|cuda SMOKE=False|True) -> figures/
	@start=$$(date +%s); $(MAKE) --no-print-directory -j$(FIG_JOBS) FIG_SCHEDULE=1 figures-all && \
	echo "figures: done in $$(( $$(date +%s) - start )) s; outputs in figures/$(SCALE)$(SMOKE_SUFFIX)/, executed notebooks in $(EXECUTED)/"

figures-all: $(addprefix fig-,$(FIG_ORDER))

figures-zoo: figures-zoo-image figures-zoo-text ## build the mini zoos the notebooks need: image and text (notebook 02), both seed ZOO_SEED

figures-zoo-image: $(STAMP)
ifeq ($(SCALE),mini)
	$(call logged,zoo-image,$(OFFLINE) $(VENV)/bin/concrete-subspace zoo build --seed $(ZOO_SEED) $(SMOKE_FLAG))
endif

figures-zoo-text: $(STAMP)
ifeq ($(SCALE),mini)
	$(call logged,zoo-text,$(OFFLINE) $(VENV)/bin/concrete-subspace zoo build --scale mini-text --seed $(ZOO_SEED) $(SMOKE_FLAG))
endif

notebooks: $(STAMP) ## write each notebooks/NAME.ipynb from its source notebooks/NAME.py (jupytext percent format, no outputs)
	$(VENV)/bin/python tests/notebook_pairs.py

fig-%: ## run one notebook through papermill, e.g. make fig-05_curves (names: ls notebooks/*.ipynb)

fig-02_flan_t5_glue: figures-zoo-text
$(filter-out fig-02_flan_t5_glue,$(FIG_TARGETS)): figures-zoo-image
ifdef FIG_SCHEDULE
fig-05_curves fig-06_mask_analysis: fig-01_multitask_table
endif

$(FIG_TARGETS): fig-%:
	@mkdir -p $(EXECUTED)
	@echo "papermill $*: scale=$(SCALE) device=$(DEVICE) zoo_seed=$(ZOO_SEED) run_seed=$(RUN_SEED) smoke=$(SMOKE)"
	$(call logged,$*,$(FIG_ENV) $(PAPERMILL) -k python3 --log-level WARNING $(if $(FIG_LOGGED),--no-progress-bar,) \
		notebooks/$*.ipynb $(EXECUTED)/$*-$(SCALE)$(SMOKE_SUFFIX).ipynb \
		-p scale $(SCALE) -p device $(DEVICE) -p zoo_seed $(ZOO_SEED) -p run_seed $(RUN_SEED) -p smoke $(SMOKE) $(CHECKPOINTS_FLAG) $(PRECISION_FLAG))
