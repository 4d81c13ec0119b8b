"""--launcher=slurm on a real Slurm cluster (the single-node one of ../shared/slurm/start-local-slurm,
which .ci/run starts): a sweep's run folders equal a local sweep's, a unit killed mid-run (scancel)
is resubmitted, then reported by name with its log, and rerunning the sweep completes it. These skip
where sbatch is absent; the array task itself runs everywhere, through submitit's local executor."""
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import EXPERIMENT, ROOT, TINY, run_experiment

import experiment
import launch_slurm
import options
import outputs

pytestmark = pytest.mark.slow  # whole scripts, clusters and sweeps: the full suite only

SWEEP = ROOT / "sweep.py"


def cluster_problem():
    """Why the Slurm tests cannot run here, or None."""
    if shutil.which("sbatch") is None:
        return ("no Slurm here (sbatch not found); start the local cluster with "
                "../shared/slurm/start-local-slurm as root, as .ci/run does")
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                                timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError) as e:
        return f"Slurm does not answer (sinfo: {e})"
    if not any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states):
        return f"the Slurm cluster has no usable node (sinfo: {' '.join(states) or 'no answer'})"
    return None


PROBLEM = cluster_problem()
needs_slurm = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")


def run_sweep(cwd, *args):
    return subprocess.run([sys.executable, str(SWEEP), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def cancel_recorded(root):
    """scancel every job a jobs.json under root names (a failed test leaves nothing running)."""
    jobs = {e["job"] for path in Path(root).rglob("jobs.json")
            for e in json.loads(path.read_text())["units"].values()}
    if jobs:
        subprocess.run(["scancel", *sorted(jobs)], check=False, capture_output=True)


def test_extra_sbatch_flags():
    assert options.parse_extra("") == {}
    assert options.parse_extra("account=lab, qos=low,mail-type=BEGIN,END") == {
        "account": "lab", "qos": "low", "mail-type": "BEGIN,END"}
    with pytest.raises(options.ConfigError, match="'=x' is not KEY=VALUE"):
        options.parse_extra("=x")


def test_array_task_writes_the_unit_a_local_run_writes(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    args = [*TINY, "--datasets=x_plus_y", "--num_seeds=1"]
    run_experiment(tmp_path, "--out_dir=local", *args)
    opts, cfg = options.parse(experiment.Config, [*args, f"--out_dir={tmp_path / 'task'}"])
    (tmp_path / "task" / "units").mkdir(parents=True)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # what the array's sbatch script exports
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit" / "%j")
    task = launch_slurm.ArrayTask(str(EXPERIMENT), "train_unit", "Config")
    job = executor.submit(task, opts, dataclasses.asdict(cfg), [("x_plus_y", 0)])
    job.result()  # in a fresh process: unpickled, experiment.py imported by path
    mine = json.loads(outputs.unit_path(opts.out_dir, "x_plus_y", 0).read_text())
    local = json.loads((tmp_path / "local" / "units" / "x_plus_y_0.json").read_text())
    for key in ("final_info", "train_info", "val_info", "code", "seed"):
        assert mine[key] == local[key]
    assert mine["forward"]["path"] == local["forward"]["path"]
    assert "unit: x_plus_y_0 started" in job.stdout()


@needs_slurm
def test_slurm_sweep_equals_local_sweep(tmp_path):
    command = ["--grid", "weight_decay=0.5,1.0", *TINY, "--datasets=x_plus_y", "--num_seeds=2"]
    try:
        local = run_sweep(tmp_path, "--out_dir=local", *command)
        slurm = run_sweep(tmp_path, "--out_dir=slurm", *command, "--launcher=slurm",
                          "--slurm_units_per_task=2")
    finally:
        cancel_recorded(tmp_path)
    assert local.returncode == 0 and slurm.returncode == 0, slurm.stderr
    assert slurm.stdout.count("slurm: submitted job") == 1  # one array for both points
    assert "(array tasks: 2, units: 4)" in slurm.stdout
    for point in ("run_1", "run_2"):
        mine, theirs = tmp_path / "slurm" / point, tmp_path / "local" / point
        final_info = [json.loads((folder / "final_info.json").read_text()) for folder in (mine, theirs)]
        assert final_info[0] == final_info[1]
        assert (np.load(mine / "all_results.npy", allow_pickle=True).item()
                == np.load(theirs / "all_results.npy", allow_pickle=True).item())  # every curve
        record = json.loads((mine / "slurm" / "jobs.json").read_text())["units"]
        assert sorted(record) == ["x_plus_y_0", "x_plus_y_1"]
        assert record["x_plus_y_0"]["job"] == record["x_plus_y_1"]["job"]  # one task, two units
        assert all(Path(e["log"]).exists() and Path(e["log"]).is_relative_to(tmp_path / "slurm" / "slurm")
                   for e in record.values())


def kill_when_training(record, previous=None, timeout=180):
    """Wait until the job jobs.json names for x_plus_y_0 (other than previous) has started training,
    then scancel it. Returns its id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            entry = json.loads(record.read_text())["units"]["x_plus_y_0"]
            log = Path(entry["log"].removesuffix("_log.err") + "_log.out").read_text()
        except (OSError, ValueError, KeyError):
            log, entry = "", {}
        if entry.get("job") != previous and "unit: x_plus_y_0 started" in log:
            subprocess.run(["scancel", entry["job"]], check=True)
            return entry["job"]
        time.sleep(0.2)
    raise AssertionError(f"x_plus_y_0 did not start training within {timeout} s")


@needs_slurm
def test_killed_unit_is_retried_then_reported_and_rerun_completes(tmp_path):
    command = ["--out_dir=s", "--grid", "weight_decay=0.5", *TINY, "--total_steps=500", "--datasets=x_plus_y",
               "--num_seeds=1", "--launcher=slurm", "--retries=1"]
    proc = subprocess.Popen([sys.executable, str(SWEEP), *command], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = kill_when_training(tmp_path / "s" / "run_1" / "slurm" / "jobs.json")
        second = kill_when_training(tmp_path / "s" / "run_1" / "slurm" / "jobs.json", previous=first)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
        cancel_recorded(tmp_path)
    lines = err.splitlines()
    retried = next(line for line in lines if line.startswith("warning: x_plus_y_0 of s/run_1"))
    failed = next(line for line in lines if line.startswith("error: x_plus_y_0 of s/run_1"))
    assert f"(Slurm job {first}: CANCELLED); log: " in retried
    assert retried.endswith("resubmitting (retry 1 of 1)")
    assert f"(Slurm job {second}: CANCELLED); log: " in failed
    assert failed.endswith("not resubmitted (--retries=1 used)")
    for line in (retried, failed):
        assert Path(line.split("; log: ")[1].split(" (")[0]).exists()
    assert proc.returncode == 1 and "sweep: 0/1 points finished; unfinished: run_1" in out
    assert not (tmp_path / "s" / "run_1" / "final_info.json").exists()  # never looks complete
    try:
        rerun = run_sweep(tmp_path, *command)
    finally:
        cancel_recorded(tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert (tmp_path / "s" / "run_1" / "final_info.json").exists()
