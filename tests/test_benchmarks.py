"""The benchmarks still run: side_by_side.py's rounds and table, on a tiny piece of work (its times
mean nothing here; the numbers are in benchmarks/README.md)."""
import re
import subprocess
import sys

from helpers import ROOT


def test_side_by_side_runs_each_program_every_round_and_gives_medians_and_ranges():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "side_by_side.py"), "--skip_template",
                           "--datasets=x_plus_y", "--updates=10", "--rounds=2", "--variant", "eager=--compile=false"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "work: 1 units (x_plus_y, seed offset 0) x 10 updates" in proc.stdout
    rows = re.findall(r"^\| (ours[^|]*) \| ([\d.]+) \(([\d.]+)-([\d.]+)\) \| ([\d.]+)x \|$", proc.stdout, re.M)
    assert [r[0] for r in rows] == ["ours", "ours eager"], proc.stdout
    for name, median, low, high, ratio in rows:
        assert 0 < float(low) <= float(median) <= float(high)
    assert rows[0][4] == "1.00"  # the base, without the template


def test_side_by_side_refuses_a_round_count_below_one():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "side_by_side.py"), "--rounds=0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--rounds=0: must be at least 1" in proc.stderr
