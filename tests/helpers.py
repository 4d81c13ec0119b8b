"""Shared by the tests: run experiment.py through its command line, as users and agents do."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_FILES = tuple(sorted(p.name for p in ROOT.glob("*.py")))  # the modules a copy of the project needs
EXPERIMENT = ROOT / "experiment.py"
PLOT = ROOT / "plot.py"
# The baseline made before issue 16's token tables: real curves that never change (run_0 is
# regenerated whenever the code's arithmetic changes).
PREVIOUS_RUN_0 = ROOT / "studies" / "run_0_before_token_tables"

# A tiny but real configuration: every code path, a few seconds per unit on a CPU.
TINY = ["--prime=11", "--dim_model=32", "--num_heads=2", "--total_steps=30", "--eval_every=10",
        "--jobs=1"]


def run_experiment(cwd, *args, check=True, timeout=300):
    proc = subprocess.run([sys.executable, str(EXPERIMENT), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"experiment.py {' '.join(args)} failed:\n{proc.stderr}")
    return proc
