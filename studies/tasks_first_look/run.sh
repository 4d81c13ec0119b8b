#!/usr/bin/env bash
# The first look at Power et al.'s task set: every task the default run does not train, 3 seeds
# (1337, 1338, 1339), the default model and budget. One run folder per seed, so that every task has
# its first seed before any has its third; a 3-seed run gives the same units (seed index s trains
# with seed 1337 + s, and a unit depends only on its seed).
set -eu
cd "$(dirname "$0")/../.."
TASKS=x_div_y_if_y_odd_else_x_minus_y,x2_plus_y2,x2_plus_xy_plus_y2,x2_plus_xy_plus_y2_plus_x,x3_plus_xy,x3_plus_xy2_plus_y,s5_conjugation,s5_xyx
for s in 0 1 2; do
  python experiment.py --out_dir=studies/tasks_first_look/seed_$((1337 + s)) --datasets=$TASKS \
    --seed=$((1337 + s)) --num_seeds=1 --jobs=2 --resume \
    --description="First look at Power et al.'s task set, seed $((1337 + s)): the default model and budget"
done
