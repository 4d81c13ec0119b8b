#!/usr/bin/env bash
# A real confirmation (issue 26): layer-wise learning rates (--lr_groups=8e-4,2e-3,3e-3: token and
# position embeddings / first block / the rest and the head) on permutation, against a
# permutation-only baseline with the default settings.
#   1. Exploration, as a campaign would run it: run_0 and run_1, 3 seeds each (1337-1339), one
#      worker each, side by side on the 2 cores.
#   2. Confirmation: both arms retrained from their saved code (run_*/code/) on 10 fresh seeds
#      (from 1,000,000; confirm_run_1/confirm.json), 2 workers, the baseline arm first.
#   3. The campaign report over this folder: the exploratory comparisons under Benjamini-Hochberg,
#      with the confirmation's verdict beside them.
set -eu
cd "$(dirname "$0")"
python ../../experiment.py --out_dir=run_0 --datasets=permutation --jobs=1 \
  --description="Baseline, permutation only" > run_0.log 2>&1 &
python ../../experiment.py --out_dir=run_1 --datasets=permutation --jobs=1 --lr_groups=8e-4,2e-3,3e-3 \
  --description="Layer-wise LR: embeddings 8e-4 / first block 2e-3 / rest + head 3e-3" > run_1.log 2>&1 &
wait
/usr/bin/time -v python ../../harness.py confirm run_1 --num_seeds=10 --jobs=2 > confirm.log 2>&1
python ../../campaign.py report . --out=report
