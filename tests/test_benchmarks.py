"""The benchmarks still run: side_by_side.py's rounds and table, on a tiny piece of work (its times
mean nothing here; the numbers are in benchmarks/README.md)."""
import re
import shutil
import subprocess
import sys

import pytest
from helpers import CODE_FILES, ROOT

pytestmark = pytest.mark.slow  # whole scripts, clusters and sweeps: the full suite only


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


def test_interleaved_loads_each_checkout_on_its_own_modules_and_times_them_step_by_step(tmp_path):
    other = tmp_path / "other"  # a checkout whose experiment.py trains with the plain forward
    other.mkdir()
    for name in CODE_FILES:
        shutil.copy(ROOT / name, other / name)
    source = (other / "experiment.py").read_text()
    assert "fast_forward: bool = option(True," in source
    (other / "experiment.py").write_text(source.replace("fast_forward: bool = option(True,",
                                                        "fast_forward: bool = option(False,"))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "interleaved.py"), "--also", str(other),
                           "--datasets=x_plus_y", "--updates=4", "--eval_every=2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "x_plus_y: forward ours fast, other (--also 1) plain" in proc.stdout, proc.stdout
    rows = re.findall(r"^\| x_plus_y \| ([^|]+) \| ([\d.]+) \(([\d.]+)\) \| ([\d.]+) \| (\d+) \((\d+)\) \| ([\d.]+) \|$",
                      proc.stdout, re.M)
    assert [r[0] for r in rows] == ["ours", "other (--also 1)"], proc.stdout
    assert rows[0][3] == rows[0][6] == "1.000"  # ours is the base
    assert all(float(r[1]) > 0 and int(r[4]) > 0 for r in rows)


def test_interleaved_refuses_a_folder_without_experiment_py(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "interleaved.py"), "--also", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"--also={tmp_path}: no experiment.py there" in proc.stderr
