"""benchmarks/gpu_check.sh, the prepared GPU check, cannot rot before a GPU is available: its dry
mode runs every step end to end on the CPU with tiny budgets."""
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run_script(*args, env=None, timeout=600):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.slow  # about a minute on 2 cores
def test_dry_mode_runs_every_step_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    monkeypatch.setenv("TEMPLATE", str(tmp_path / "absent" / "experiment.py"))  # the skip, and faster
    proc = run_script("--dry")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    lines = out.splitlines()
    assert "contract check_jobs1: ok" in lines and "contract check_jobs2: ok" in lines
    assert any(ln.startswith("jobs 1 vs 2: identical (") for ln in lines), out
    assert any(ln.startswith("forward_path check_jobs2: ") for ln in lines), out
    assert any(ln.startswith("side_by_side: reference template skipped, no file at ") for ln in lines), out
    assert any(ln.startswith("| ours | ") for ln in lines), out  # ours still timed, alone
    assert any(ln.startswith("baseline rc: 0, ") and ln.endswith("units finished: 2 of 2") for ln in lines), out
    assert any(ln.startswith("steps to 99% vs run_0: not comparable (") for ln in lines), out
    assert any(ln.startswith("| x_div_y | never (20) | ") for ln in lines), out
    assert "comparison: done" in lines
    assert lines[-1].startswith("gpu_check: pass")
    assert (tmp_path / "out" / "gpu_check.log").read_text() == out


def test_a_bad_flag_is_refused_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    proc = run_script("--dyr", timeout=30)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "--dyr" in proc.stderr and "--dry" in proc.stderr
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_help_is_the_header():
    proc = run_script("--help", timeout=30)
    assert proc.returncode == 0 and proc.stderr == ""
    assert "bash benchmarks/gpu_check.sh --dry" in proc.stdout and "commit" in proc.stdout
