"""Our baseline next to the reference template's published ones, as a markdown table.

    python benchmarks/compare_baseline.py [run_0]

Published values (from ../shared/seeds/): baseline A = the per-seed steps to 99% val accuracy of
the layer-wise-LR study's Run 0 (seeds 000/002); baseline B = the batch-size study's Run 0 means
(seed 003). Permutation never reached 99% in either (final val accuracy 0.011, 0.089, 0.008 in A).
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grokstats import standard_error  # noqa: E402

PUBLISHED_A = {"x_div_y": [3910, 4220, 4470], "x_minus_y": [4910, 4350, 4900],
               "x_plus_y": [2960, 1620, 2510], "permutation": None}
PUBLISHED_A_PERM_VAL_ACC = [0.011, 0.089, 0.008]
PUBLISHED_B_MEANS = {"x_div_y": 4353.3, "x_minus_y": 4403.3, "x_plus_y": 2640.0, "permutation": None}
PUBLISHED_B_PERM_VAL_ACC = 0.009


def mean_se(values):
    return f"{np.mean(values):.0f} +- {standard_error(values):.0f}"


def main():
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "run_0")
    info = json.loads((run / "final_info.json").read_text())
    total = json.loads((run / "config.json").read_text())["total_steps"]
    print("| dataset | ours: steps to 99% per seed | ours: mean +- SE | published A per seed "
          "| A: mean +- SE | published B mean | ours: final val acc per seed |")
    print("|---|---|---|---|---|---|---|")
    for dataset, entry in info.items():
        steps, acc = entry["final_info_dict"]["step_val_acc_99"], entry["final_info_dict"]["final_val_acc"]
        reached = [s for s, a in zip(steps, acc) if s < total or a > 0.99]
        ours = ", ".join(str(s) if s in reached else f"never ({s})" for s in steps)
        a, b = PUBLISHED_A.get(dataset), PUBLISHED_B_MEANS.get(dataset)
        print(f"| {dataset} | {ours} | {mean_se(reached) if len(reached) == len(steps) else 'not reached'} "
              f"| {', '.join(map(str, a)) if a else 'never (val acc ' + ', '.join(map(str, PUBLISHED_A_PERM_VAL_ACC)) + ')'} "
              f"| {mean_se(a) if a else '-'} | {b if b else f'never (val acc {PUBLISHED_B_PERM_VAL_ACC})'} "
              f"| {', '.join(f'{x:.3f}' for x in acc)} |")


if __name__ == "__main__":
    main()
