"""A tiny real run through the command line: the exact output contract, reproducibility, bad
input, interruption, --resume, notes.txt, and a small problem that really learns."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import harness
import notes
import options

from helpers import EXPERIMENT, TINY, run_experiment

DATASETS = ["x_plus_y", "permutation"]
FINAL_KEYS = ["final_train_loss", "final_val_loss", "final_train_acc", "final_val_acc",
              "step_val_acc_99"]  # the AI-Scientist keys, first and in this order
ADDED_KEYS = ["diverged", "step_train_acc_99", "grokked", "grok_delay", "final_val_acc_tail",
              "sustained", "slingshots"]  # the statistics added after them (grokstats.unit_statistics)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    run_experiment(root, "--out_dir=run_0", f"--datasets={','.join(DATASETS)}", "--num_seeds=2", *TINY)
    return root


def test_final_info_json_contract(tiny_run):
    with open(tiny_run / "run_0" / "final_info.json") as f:
        means = {k: v["means"] for k, v in json.load(f).items()}  # as the AI-Scientist launcher reads it
    info = json.loads((tiny_run / "run_0" / "final_info.json").read_text())
    assert list(info) == DATASETS and list(means) == DATASETS
    for dataset, entry in info.items():
        assert list(entry) == ["means", "stderrs", "final_info_dict"]
        assert list(entry["means"]) == [f"{k}_mean" for k in FINAL_KEYS + ADDED_KEYS] + [
            "step_val_acc_99_km_median"]
        assert list(entry["stderrs"]) == [f"{k}_stderr" for k in FINAL_KEYS + ADDED_KEYS]
        assert list(entry["final_info_dict"]) == FINAL_KEYS + ADDED_KEYS
        for k in FINAL_KEYS:
            values = entry["final_info_dict"][k]
            assert len(values) == 2
            assert entry["means"][f"{k}_mean"] == pytest.approx(np.mean(values))
            se = np.std(values, ddof=1) / math.sqrt(2)  # the documented standard error
            assert entry["stderrs"][f"{k}_stderr"] == pytest.approx(se)


def test_all_results_npy_contract(tiny_run):
    results = np.load(tiny_run / "run_0" / "all_results.npy", allow_pickle=True).item()
    expected = {f"{d}_{s}_{part}" for d in DATASETS for s in range(2)
                for part in ("final_info", "train_info", "val_info")}
    assert set(results) == expected
    for d in DATASETS:
        for s in range(2):
            train, val = results[f"{d}_{s}_train_info"], results[f"{d}_{s}_val_info"]
            assert [r["step"] for r in train] == [10, 20, 30] == [r["step"] for r in val]
            assert all({"step", "train_loss", "train_accuracy"} <= set(r) for r in train)
            assert all({"step", "val_loss", "val_accuracy", "weight_norm", "softmax_collapse"} <= set(r)
                       for r in val)
            final = results[f"{d}_{s}_final_info"]
            assert list(final) == FINAL_KEYS + ADDED_KEYS
            assert final["final_val_acc"] == val[-1]["val_accuracy"]
            assert final["final_train_loss"] == train[-1]["train_loss"]
            reached = [r["step"] for r in val if r["val_accuracy"] > 0.99]
            assert final["step_val_acc_99"] == (reached[0] if reached else 30)


def test_run_folder_describes_itself(tiny_run):
    run = tiny_run / "run_0"
    config = json.loads((run / "config.json").read_text())
    assert config["total_steps"] == 30 and config["prime"] == 11 and config["seed"] == 1337
    info = json.loads((run / "run_info.json").read_text())
    assert info["device"] == "cpu" and info["wall_time_s"] > 0
    assert set(info["unit_wall_time_s"]) == {f"{d}_{s}" for d in DATASETS for s in range(2)}
    assert {"python", "torch", "numpy"} <= set(info["versions"])
    assert len(list((run / "units").glob("*.json"))) == 4


@pytest.mark.slow
def test_stdout_has_one_line_per_unit(tmp_path):
    out = run_experiment(tmp_path, "--out_dir=r", "--datasets=x_plus_y", "--num_seeds=2", *TINY).stdout
    lines = [l for l in out.splitlines() if l.startswith("x_plus_y_")]
    assert len(lines) == 2 and all("final_val_acc: " in l and "wall_s: " in l for l in lines)


@pytest.mark.slow
def test_same_command_twice_and_any_jobs_give_identical_results(tmp_path):
    args = ["--datasets=x_minus_y,x_div_y", "--num_seeds=1", *TINY[:-1]]
    for name, jobs in (("a", 1), ("b", 1), ("c", 2)):
        run_experiment(tmp_path, f"--out_dir={name}", f"--jobs={jobs}", *args)
    first = (tmp_path / "a" / "final_info.json").read_text()
    assert (tmp_path / "b" / "final_info.json").read_text() == first
    assert (tmp_path / "c" / "final_info.json").read_text() == first
    a = np.load(tmp_path / "a" / "all_results.npy", allow_pickle=True).item()
    c = np.load(tmp_path / "c" / "all_results.npy", allow_pickle=True).item()
    assert a == c


BAD_INPUT = [
    (["--bogus=1"], "--bogus"),
    (["--datasets=x_times_y"], "x_times_y"),
    (["--lr=fast"], "--lr"),
    (["--train_frac=1.5"], "--train_frac"),
    (["--train_frac=0"], "--train_frac"),
    (["--total_steps=0"], "--total_steps"),
    (["--batch_size=-4"], "--batch_size"),
    (["--dim_model=30", "--num_heads=4"], "--dim_model=30"),
    (["--num_seeds=0"], "--num_seeds"),
    (["--prime=96"], "--prime"),
    (["--init=zeros"], "--init"),
    (["--grokfast=adam"], "--grokfast"),
    (["--batch_schedule=cosine"], "--batch_schedule"),
    (["--lr_groups=1e-3,2e-3"], "--lr_groups"),
    (["--device=tpu"], "--device"),
    (["--overwrite=maybe"], "--overwrite"),
]


@pytest.mark.parametrize("args,needle", BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, needle):
    import experiment as E
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        harness.main(E.Config, E.train_unit, ["--out_dir=r", *args])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "r").exists()  # nothing is created for bad input


def test_bad_input_through_the_real_command_line(tmp_path):
    proc = run_experiment(tmp_path, "--out_dir=r", "--datasets=x_plus_y,bogus", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "bogus" in proc.stderr
    assert proc.stdout == ""


def test_finished_out_dir_is_refused_unless_overwrite(tiny_run):
    before = (tiny_run / "run_0" / "final_info.json").read_text()
    proc = run_experiment(tiny_run, "--out_dir=run_0", *TINY, check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert (tiny_run / "run_0" / "final_info.json").read_text() == before


def test_help_lists_every_field_with_default(capsys):
    import dataclasses

    import experiment as E
    with pytest.raises(SystemExit) as exit_:
        harness.main(E.Config, E.train_unit, ["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(E.Config) + dataclasses.fields(options.RunOptions):
        assert f"--{f.name}" in out
    assert "default: 7500" in out and "default: 0.001" in out


def proc_stat(pid):
    """(parent pid, state, start time) of a live process, from Linux /proc; None once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0], fields[19]


def pool_workers(pid):
    """The spawned pool workers of process pid, as (pid, start time) pairs."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        stat = proc_stat(entry.name)
        try:
            spawned = b"spawn_main" in (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if stat and stat[0] == pid and spawned:
            found.append((int(entry.name), stat[2]))
    return found


def alive(worker):
    stat = proc_stat(worker[0])
    return stat is not None and stat[1] != "Z" and stat[2] == worker[1]  # not a reused pid


@pytest.mark.parametrize("jobs,sig", [(1, signal.SIGINT), (2, signal.SIGINT), (2, signal.SIGTERM),
                                      (2, signal.SIGKILL)])
@pytest.mark.slow
def test_interrupted_run_leaves_no_final_info_and_no_workers(tmp_path, jobs, sig):
    if jobs > 1 and sys.platform != "linux":
        pytest.skip("finds worker processes through /proc")
    # Caught signals must stop the pool themselves: with no record due, the workers' own check for
    # a dead main process (what ends them after SIGKILL) cannot fire.
    records = "--eval_every=10" if sig == signal.SIGKILL else "--eval_every=100000"
    proc = subprocess.Popen([sys.executable, str(EXPERIMENT), "--out_dir=r", "--datasets=x_plus_y",
                             f"--num_seeds={jobs}", f"--jobs={jobs}", "--total_steps=100000", records],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (
                (tmp_path / "r" / "config.json").exists() and len(workers) == (jobs if jobs > 1 else 0)):
            time.sleep(0.2)
            assert proc.poll() is None, proc.communicate()[1]
            workers = pool_workers(proc.pid) if jobs > 1 else []
        assert (tmp_path / "r" / "config.json").exists() and len(workers) == (jobs if jobs > 1 else 0)
        time.sleep(1.0)
        proc.send_signal(sig)  # to the main process only, as `kill PID` does
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0
        assert not (tmp_path / "r" / "final_info.json").exists()
        assert not (tmp_path / "r" / "all_results.npy").exists()
        if sig != signal.SIGKILL:
            assert "--resume" in err and proc.returncode == 128 + sig
        deadline = time.time() + 60  # a worker notices a killed main at its next record
        while any(alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(alive(w) for w in workers), "worker processes outlived the run"
    finally:  # never leave a 100000-update run behind, whatever failed above
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for w in workers:
            if alive(w):
                os.kill(w[0], signal.SIGKILL)


@pytest.mark.slow
def test_resume_runs_only_missing_units_and_gives_the_same_result(tmp_path):
    args = ["--datasets=x_plus_y,x_minus_y", "--num_seeds=2", *TINY]
    run_experiment(tmp_path, "--out_dir=r", *args)
    full = (tmp_path / "r" / "final_info.json").read_text()
    (tmp_path / "r" / "final_info.json").unlink()          # as after an interruption
    (tmp_path / "r" / "units" / "x_minus_y_1.json").unlink()
    out = run_experiment(tmp_path, "--out_dir=r", "--resume", *args).stdout
    assert "units: 1 to run, 3 resumed" in out
    assert (tmp_path / "r" / "final_info.json").read_text() == full


@pytest.mark.slow
def test_resume_refuses_units_made_with_other_settings(tmp_path):
    run_experiment(tmp_path, "--out_dir=r", "--datasets=x_plus_y", "--num_seeds=1", *TINY)
    (tmp_path / "r" / "final_info.json").unlink()
    proc = run_experiment(tmp_path, "--out_dir=r", "--resume", "--datasets=x_plus_y", "--num_seeds=1",
                          "--lr=0.01", *TINY, check=False)
    assert proc.returncode == 2 and "lr" in proc.stderr


@pytest.mark.slow
def test_notes_are_created_then_appended_never_rewritten(tmp_path):
    args = ["--datasets=x_plus_y", "--num_seeds=1", *TINY]
    run_experiment(tmp_path, "--out_dir=run_0", *args)
    notes = (tmp_path / "notes.txt").read_text()
    assert notes.startswith("# Title: ") and "\n# Experiment description: " in notes
    assert "## Run 0: Baseline\nResults: {'x_plus_y': {'final_train_loss_mean': " in notes
    assert "Description: Baseline results." in notes
    (tmp_path / "notes.txt").write_text(notes + "Analysis: written by hand.\n")
    run_experiment(tmp_path, "--out_dir=run_1", "--description=Higher lr. Tried 3e-3.", "--lr=3e-3", *args)
    after = (tmp_path / "notes.txt").read_text()
    assert after.startswith(notes + "Analysis: written by hand.\n")
    assert "## Run 1: Higher lr\nResults: {'x_plus_y': " in after
    assert "Description: Higher lr. Tried 3e-3." in after
    run_experiment(tmp_path, "--out_dir=run_1", "--overwrite", "--description=Lower lr 1e-4.",
                   "--lr=1e-4", *args)  # the run's own section follows its new results
    redone = (tmp_path / "notes.txt").read_text()
    assert redone.startswith(notes + "Analysis: written by hand.\n")
    assert redone.count("## Run 1") == 1 and "## Run 1: Lower lr 1e-4\n" in redone
    assert "Higher lr" not in redone and "Description: Lower lr 1e-4." in redone


@pytest.mark.slow
def test_notes_written_by_an_agent_get_only_the_new_section(tmp_path):
    mine = "# Title: My idea\n# Experiment description: Something.\n## Run 0: Baseline\nResults: {}\n"
    (tmp_path / "notes.txt").write_text(mine)
    run_experiment(tmp_path, "--out_dir=run_2", "--datasets=x_plus_y", "--num_seeds=1", *TINY)
    text = (tmp_path / "notes.txt").read_text()
    assert text.startswith(mine) and text.count("## Run 2") == 1 and text.count("## Run 0") == 1


@pytest.mark.slow
def test_a_small_problem_really_learns(tmp_path):
    """x_plus_y mod 23 with a small model must generalise, not just run (like tinygrad's TARGET_ACC)."""
    run_experiment(tmp_path, "--out_dir=r", "--datasets=x_plus_y", "--num_seeds=1", "--prime=23",
                   "--dim_model=64", "--total_steps=1000", "--batch_size=128", "--lr=3e-3",
                   "--weight_decay=1.0", "--train_frac=0.8", "--eval_every=50", "--jobs=1")
    means = json.loads((tmp_path / "r" / "final_info.json").read_text())["x_plus_y"]["means"]
    assert means["final_val_acc_mean"] >= 0.9
    assert means["step_val_acc_99_mean"] < 1000


def test_notes_created_by_a_later_run_include_run_0(tmp_path):
    (tmp_path / "run_0").mkdir()
    (tmp_path / "run_0" / "final_info.json").write_text(json.dumps({"x_plus_y": {"means": {"m": 1.0}}}))
    notes.update_notes(str(tmp_path / "run_3"), "Grokfast EMA. Faster.", {"x_plus_y": {"means": {"m": 2.0}}})
    assert (tmp_path / "notes.txt").read_text() == (
        notes.NOTES_HEADER + "## Run 0: Baseline\nResults: {'x_plus_y': {'m': 1.0}}\n"
        "Description: Baseline results.\n\n## Run 3: Grokfast EMA\nResults: {'x_plus_y': {'m': 2.0}}\n"
        "Description: Grokfast EMA. Faster.\n")
