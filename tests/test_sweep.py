"""sweep.py: the grid and its manifest, refusal before anything is written, resuming only the
missing units, run folders that plot.py reads as runs, and the phase diagram."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import experiment
import options
import outputs
import sweep

from helpers import PLOT, ROOT, TINY

pytestmark = pytest.mark.slow  # whole scripts, clusters and sweeps: the full suite only

SWEEP = ROOT / "sweep.py"
COMMAND = ["--grid", "train_frac=0.4,0.6", "--grid", "weight_decay=0.5", *TINY, "--datasets=x_plus_y",
           "--num_seeds=2"]  # 2 knobs (a one-value knob too), 2 points x 2 units


def run_sweep(cwd, *args, check=True):
    proc = subprocess.run([sys.executable, str(SWEEP), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"sweep.py {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def plan(out, *specs_and_options):
    specs = [a.split("=", 1)[1] for a in specs_and_options if a.startswith("--grid=")]
    base = [a for a in specs_and_options if not a.startswith("--grid=")]
    return sweep.plan(str(out), specs, base, experiment.Config, experiment.train_unit)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    proc = run_sweep(root, "--out_dir=s", *COMMAND)
    return root, root / "s", proc


def test_grid_is_the_product_last_knob_fastest(tmp_path):
    manifest, points = plan(tmp_path / "s", "--grid=train_frac=0.3,0.5", "--grid=weight_decay=0.1,1",
                            "--grid=lr_groups=1e-3,1e-3,1e-3;8e-4,2e-3,3e-3", *TINY)
    assert manifest["grid"] == {"train_frac": [0.3, 0.5], "weight_decay": [0.1, 1.0],
                                "lr_groups": ["1e-3,1e-3,1e-3", "8e-4,2e-3,3e-3"]}
    assert [p["name"] for p in manifest["points"]] == [f"run_{i}" for i in range(1, 9)]
    assert manifest["points"][1]["overrides"] == {"train_frac": 0.3, "weight_decay": 0.1,
                                                  "lr_groups": "8e-4,2e-3,3e-3"}
    assert manifest["fixed"]["dim_model"] == 32 and "jobs" not in manifest["fixed"]  # --jobs may change
    assert [(p.cfg.train_frac, p.cfg.weight_decay) for p in points][::2] == [
        (0.3, 0.1), (0.3, 1.0), (0.5, 0.1), (0.5, 1.0)]
    assert points[7].opts.out_dir == str(tmp_path / "s" / "run_8")
    assert points[7].opts.description == "train_frac=0.5, weight_decay=1.0, lr_groups=8e-4,2e-3,3e-3"
    assert not (tmp_path / "s").exists()  # planning writes nothing


@pytest.mark.parametrize("args, message", [
    (["--grid=nosuch=1,2"], "'nosuch' is not a Config field"),
    (["--grid=train_frac=0.3,1.5"], "run_2 (train_frac=1.5): --train_frac=1.5 must be in (0, 1)"),
    (["--grid=num_seeds=1,x"], "invalid value for num_seeds"),
    (["--grid=weight_decay=0.1,0.1"], "an empty or repeated value"),
    (["--grid=weight_decay=0.1", "--grid=weight_decay=1"], "given twice"),
    (["--grid=weight_decay=0.1,1", "--weight_decay=0.5"], "both a --grid knob and a fixed option"),
    (["--grid=weight_decay=0.1,1", "--bogus=1"], "unrecognized arguments: --bogus=1"),
    (["--grid=weight_decay=0.1,1", "--resume"], "a sweep resumes by itself"),
])
def test_bad_sweep_is_refused_before_anything_is_written(tmp_path, args, message):
    with pytest.raises(options.ConfigError) as refused:
        plan(tmp_path / "s", *args, *TINY)
    assert message in str(refused.value)
    assert not (tmp_path / "s").exists()


def test_refusal_is_one_line_and_exit_2(tmp_path):
    proc = run_sweep(tmp_path, "--out_dir=s", "--grid", "train_frac=0.3,1.5", *TINY, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: run_2 (train_frac=1.5): --train_frac=1.5")
    assert proc.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_manifest_names_every_point_its_overrides_and_folder(swept):
    _, out, proc = swept
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["grid"] == {"train_frac": [0.4, 0.6], "weight_decay": [0.5]}
    assert manifest["points"] == [
        {"name": "run_1", "folder": "run_1", "overrides": {"train_frac": 0.4, "weight_decay": 0.5}},
        {"name": "run_2", "folder": "run_2", "overrides": {"train_frac": 0.6, "weight_decay": 0.5}}]
    for point in manifest["points"]:
        folder = out / point["folder"]
        assert (folder / "final_info.json").exists() and (folder / "all_results.npy").exists()
        config = json.loads((folder / "config.json").read_text())
        assert {k: config[k] for k in point["overrides"]} == point["overrides"]
        assert config["num_seeds"] == 2 and config["total_steps"] == 30
    assert "sweep: 2/2 points finished" in proc.stdout
    assert "## Run 2: train_frac=0.6, weight_decay=0.5" in (out / "notes.txt").read_text()


def test_plot_py_reads_the_points_as_runs(swept):
    _, out, _ = swept
    proc = subprocess.run([sys.executable, str(PLOT)], cwd=out, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "skipping" not in proc.stderr
    assert (out / "val_acc_x_plus_y.png").exists()
    assert "Run 2: train_frac=0.6, weight_decay=0.5" in (out / "results.md").read_text()


def test_rerun_resumes_only_missing_units(swept, tmp_path):
    _, out, _ = swept
    copy = tmp_path / "s"
    shutil.copytree(out, copy)
    final = (copy / "run_1" / "final_info.json").read_text()
    kept = (copy / "run_1" / "units" / "x_plus_y_0.json").read_text()
    (copy / "run_1" / "final_info.json").unlink()  # run_1 interrupted with one unit missing
    (copy / "run_1" / "units" / "x_plus_y_1.json").unlink()
    proc = run_sweep(tmp_path, "--out_dir=s", *COMMAND)
    assert "sweep: run_1 (train_frac=0.4, weight_decay=0.5): 1 units to run" in proc.stdout
    assert "units: 1 to run, 1 resumed" in proc.stdout
    assert "x_plus_y_1: " in proc.stdout and "x_plus_y_0: " not in proc.stdout
    assert "sweep: run_2 (train_frac=0.6, weight_decay=0.5): finished, skipped" in proc.stdout
    assert (copy / "run_1" / "units" / "x_plus_y_0.json").read_text() == kept
    assert (copy / "run_1" / "final_info.json").read_text() == final  # same numbers again
    untouched = copy / "run_2" / "final_info.json"
    assert untouched.stat().st_mtime == (out / "run_2" / "final_info.json").stat().st_mtime


def test_another_sweep_in_the_same_folder_is_refused(swept):
    _, out, _ = swept
    same = ["--grid=train_frac=0.4,0.6", "--grid=weight_decay=0.5", *TINY, "--datasets=x_plus_y"]
    plan(out, *same, "--num_seeds=2")  # the same sweep: accepted
    for other in (["--grid=train_frac=0.4,0.5", *same[1:], "--num_seeds=2"], [*same, "--num_seeds=3"]):
        with pytest.raises(options.ConfigError, match="holds another sweep"):
            plan(out, *other)


def test_phase_diagram_two_knobs_heatmaps(swept):
    root, out, _ = swept
    proc = run_sweep(root, "--out_dir=s", "--plot")
    assert proc.stdout.strip() == f"phase: {out.relative_to(root) / 'phase_x_plus_y.png'}"
    assert (out / "phase_x_plus_y.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_phase_diagram_one_knob_lines_and_cells(swept, tmp_path):
    _, out, _ = swept
    copy = tmp_path / "s"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "sweep.json").read_text())
    manifest["grid"].pop("weight_decay")
    for point in manifest["points"]:
        point["overrides"].pop("weight_decay")
    outputs.write_json(copy / "sweep.json", manifest)
    assert sweep.plot_sweep(copy) == [copy / "phase_x_plus_y.png"]
    cell = sweep.point_cells(copy / "run_1")["x_plus_y"]
    finals = json.loads((copy / "run_1" / "final_info.json").read_text())["x_plus_y"]["final_info_dict"]
    assert (cell["k"], cell["n"]) == (sum(finals["grokked"]), 2)
    assert cell["acc"][0] == pytest.approx(np.mean(finals["final_val_acc_tail"]))
    assert cell["acc"][1] == pytest.approx(np.std(finals["final_val_acc_tail"], ddof=1) / np.sqrt(2))
