#!/usr/bin/env bash
# One probe of lab-notes/zoo_entropy/probe.py, offline, one thread, on the materialised shipped zoo (validation split).
#   bash lab-notes/zoo_entropy/run.sh method NAME k=v ... --k K [--seed S]
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
zoo=${ZOO:-$HOME/.cache/concrete_subspace/zoo/mini-v5-seed0}
cmd=$1; shift
.venv/bin/python lab-notes/zoo_entropy/probe.py "$cmd" "$zoo" "$@" 2>&1 | grep -v -i warn | tail -n 3
