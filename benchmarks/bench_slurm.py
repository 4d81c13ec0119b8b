"""The cost of --launcher=slurm against the local worker pool, on a Slurm cluster on this machine
(the single-node one of ../shared/slurm/start-local-slurm; this script starts nothing).

    python benchmarks/bench_slurm.py       # about 10 minutes on 2 busy cores; --repeats=N (default 3)

1. Overhead per unit: one tiny unit (the tests' tiny configuration, x_plus_y, one seed) as a whole
   experiment.py command, local and with --launcher=slurm, each --repeats times; the overhead is the
   difference of the median wall times (submission, scheduling, the array task's own Python start
   and imports, and the launcher's polling).
2. A 9-point sweep (train_frac 0.3,0.4,0.5 x weight_decay 0.1,0.3,1.0), x_plus_y, 3 seeds, the tiny
   budget: sweep.py's wall time with --launcher=local (--jobs per core), with --launcher=slurm (one
   array of 27 tasks, one CPU each) and with --slurm_units_per_task=3 (9 tasks of 3 units), and the
   difference per unit against local.

Prints grep-friendly key: value lines. Wall times move with machine load; compare within one run.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--prime=11", "--dim_model=32", "--num_heads=2", "--total_steps=30", "--eval_every=10",
        "--datasets=x_plus_y"]
GRID = ["--grid", "train_frac=0.3,0.4,0.5", "--grid", "weight_decay=0.1,0.3,1.0"]


def timed(cwd, script, *args):
    """Wall seconds of one command, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"error: {script} {' '.join(args)} failed:\n{proc.stderr}")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    if shutil.which("sbatch") is None:
        raise SystemExit("error: no Slurm here (sbatch not found); run ../shared/slurm/start-local-slurm "
                         "as root")
    with tempfile.TemporaryDirectory() as tmp:
        one = {launcher: [timed(tmp, "experiment.py", f"--out_dir={launcher}_{i}", *TINY, "--num_seeds=1",
                                f"--launcher={launcher}") for i in range(repeats)]
               for launcher in ("local", "slurm")}
        local, slurm = (statistics.median(one[k]) for k in ("local", "slurm"))
        print(f"cpu_count: {os.cpu_count()}, repeats: {repeats}")
        print("one_unit_wall_s: local " + " ".join(f"{t:.1f}" for t in one["local"])
              + ", slurm " + " ".join(f"{t:.1f}" for t in one["slurm"]))
        print(f"overhead_per_unit_s: {slurm - local:.1f} (median slurm {slurm:.1f} - median local "
              f"{local:.1f})")
        variants = {"local": ["--launcher=local"], "slurm": ["--launcher=slurm"],
                    "slurm_3_units_per_task": ["--launcher=slurm", "--slurm_units_per_task=3"]}
        sweep = {name: timed(tmp, "sweep.py", f"--out_dir=sweep_{name}", *GRID, *TINY, "--num_seeds=3", *args)
                 for name, args in variants.items()}
        for name, wall in sweep.items():
            print(f"sweep_9x3_wall_s: {name} {wall:.1f}, difference per unit vs local "
                  f"{(wall - sweep['local']) / 27:.2f}")


if __name__ == "__main__":
    main()
