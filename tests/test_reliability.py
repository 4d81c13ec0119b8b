"""Every failure a user or an agent can cause ends in one clear line, loses nothing and never
looks like a result (issue 13): each case is reproduced as it was found, through the real
command line, on a tiny configuration."""
import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from helpers import EXPERIMENT, ROOT, TINY, run_experiment

ARGS = ["--datasets=x_plus_y", "--num_seeds=2", *TINY]


def one_error_line(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def strict_json(path):
    """json.loads that refuses NaN and Infinity, as strict parsers do."""
    def refuse(token):
        raise ValueError(f"{path.name} holds {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def interrupted(tmp_path, name="r", args=ARGS):
    """A run folder as an interruption leaves it: finished units, no final_info.json."""
    run_experiment(tmp_path, f"--out_dir={name}", *args)
    (tmp_path / name / "final_info.json").unlink()
    return tmp_path / name


# --- data loss and dead ends ----------------------------------------------------------------
@pytest.mark.slow
def test_finished_units_are_never_deleted_by_a_command_that_forgot_resume(tmp_path):
    folder = interrupted(tmp_path)
    units = sorted(p.read_bytes() for p in (folder / "units").glob("*.json"))
    one_error_line(run_experiment(tmp_path, "--out_dir=r", *ARGS, "--train_frac=0.0001", check=False),
                   "--train_frac")
    one_error_line(run_experiment(tmp_path, "--out_dir=r", *ARGS, check=False),
                   "holds 2 finished units", "--resume", "--overwrite")
    assert sorted(p.read_bytes() for p in (folder / "units").glob("*.json")) == units
    run_experiment(tmp_path, "--out_dir=r", "--overwrite", *ARGS)  # discarding them is explicit
    assert (folder / "final_info.json").exists()


@pytest.mark.parametrize("breakage", ["directory", "invalid utf-8", "read-only"])
@pytest.mark.slow
def test_a_notes_problem_is_one_warning_and_the_results_are_still_written(tmp_path, breakage):
    notes = tmp_path / "notes.txt"
    if breakage == "directory":
        notes.mkdir()
    elif breakage == "invalid utf-8":
        notes.write_bytes(b"# Title: caf\xe9\n")
    command = [sys.executable, str(EXPERIMENT), "--out_dir=run_1", *ARGS]
    if breakage == "read-only":  # root writes anywhere: drop the capability that lets it
        notes.write_text("# Title: mine\n")
        tmp_path.chmod(0o555)
        notes.chmod(0o444)
        command = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c",
                   " ".join(command)]
        (tmp_path / "run_1").mkdir()  # the run folder itself stays writable
        (tmp_path / "run_1").chmod(0o777)
    try:
        proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        tmp_path.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "notes.txt not updated" in line]
    assert len(warnings) == 1 and "final_info.json" in warnings[0]
    assert strict_json(tmp_path / "run_1" / "final_info.json")["x_plus_y"]["means"]


@pytest.mark.slow
def test_resume_takes_the_settings_from_the_runs_config_json(tmp_path):
    args = ["--datasets=x_plus_y,permutation", "--num_seeds=2", "--total_steps=20", "--eval_every=10",
            *TINY[:3]]
    run_experiment(tmp_path, "--out_dir=full", *args)
    folder = interrupted(tmp_path, "r", args)
    (folder / "units" / "permutation_1.json").unlink()
    config = (folder / "config.json").read_bytes()
    refused = run_experiment(tmp_path, "--out_dir=r", "--resume", "--lr=0.01", "--total_steps=30",
                             check=False)
    one_error_line(refused, "--lr, --total_steps differ from", "config.json")
    assert (folder / "config.json").read_bytes() == config  # a refused command rewrites nothing
    out = run_experiment(tmp_path, "--out_dir=r", "--resume").stdout  # the README's command, as is
    assert "units: 1 to run, 3 resumed" in out
    assert (folder / "config.json").read_bytes() == config
    assert (folder / "final_info.json").read_text() == (tmp_path / "full" / "final_info.json").read_text()


@pytest.mark.slow
def test_resume_refuses_a_truncated_or_foreign_unit_file_naming_it(tmp_path):
    folder = interrupted(tmp_path)
    unit = folder / "units" / "x_plus_y_1.json"
    unit.write_text(unit.read_text()[:100])
    one_error_line(run_experiment(tmp_path, "--out_dir=r", "--resume", check=False),
                   "x_plus_y_1.json is truncated")
    unit.write_text(json.dumps({"dataset": "permutation", "seed_index": 1}))
    one_error_line(run_experiment(tmp_path, "--out_dir=r", "--resume", check=False), "x_plus_y_1.json")


# --- divergence -----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_diverged_unit_stops_is_flagged_and_never_looks_like_a_result(tmp_path):
    proc = run_experiment(tmp_path, "--out_dir=r", *ARGS[:-3], "--total_steps=100", "--lr=10")
    warnings = [line for line in proc.stderr.splitlines() if "diverged" in line]
    assert len(warnings) == 2 and all("non-finite loss at update" in w for w in warnings)
    info = strict_json(tmp_path / "r" / "final_info.json")["x_plus_y"]
    assert info["means"]["diverged_mean"] == 1.0
    assert info["final_info_dict"]["final_val_acc"] == [None, None]  # not the argmax of NaN logits
    for s in range(2):
        unit = strict_json(tmp_path / "r" / "units" / f"x_plus_y_{s}.json")
        assert unit["diverged_at"] == unit["val_info"][-1]["step"] < 100  # stopped at that record
        assert None in (unit["train_info"][-1]["train_loss"], unit["val_info"][-1]["val_loss"])
        assert all(r["val_loss"] is not None for r in unit["val_info"][:-1])
    for name in ("config.json", "run_info.json"):
        strict_json(tmp_path / "r" / name)
    results = np.load(tmp_path / "r" / "all_results.npy", allow_pickle=True).item()
    assert results["x_plus_y_0_final_info"]["diverged"] == 1


@pytest.mark.slow
def test_one_diverged_seed_of_two_gives_a_fraction(tmp_path):
    """diverged_mean is the fraction of seeds that diverged, and means over seeds are null rather
    than quietly dropping the diverged seed."""
    run_experiment(tmp_path, "--out_dir=r", *ARGS, "--lr=0.3", "--total_steps=100")
    info = strict_json(tmp_path / "r" / "final_info.json")["x_plus_y"]
    flags = info["final_info_dict"]["diverged"]
    assert info["means"]["diverged_mean"] == pytest.approx(sum(flags) / len(flags))
    if 0 < sum(flags) < len(flags):
        assert info["means"]["final_val_acc_mean"] is None


NON_FINITE = [["--lr=inf"], ["--l1_weight=inf"], ["--weight_decay=inf"], ["--grokfast_lamb=nan"],
              ["--lr_groups=1e-3,nan,1e-3"], ["--lr=-inf"], ["--train_frac=nan"]]


@pytest.mark.parametrize("args", NON_FINITE, ids=lambda a: a[0])
@pytest.mark.slow
def test_non_finite_options_are_refused(tmp_path, args):
    one_error_line(run_experiment(tmp_path, "--out_dir=r", *args, check=False), args[0].split("=")[0])
    assert not (tmp_path / "r").exists()


# --- one line and exit 2 where a traceback used to be ---------------------------------------
def test_out_dir_that_is_a_file_or_empty(tmp_path):
    (tmp_path / "f").write_text("mine")
    one_error_line(run_experiment(tmp_path, "--out_dir=f", check=False), "--out_dir=f is a file")
    assert (tmp_path / "f").read_text() == "mine"
    one_error_line(run_experiment(tmp_path, "--out_dir=", check=False), "--out_dir is empty")
    assert list(tmp_path.iterdir()) == [tmp_path / "f"]  # nothing written into the project root


def test_out_dir_under_a_folder_you_cannot_write(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    proc = subprocess.run(["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c",
                           f"{sys.executable} {EXPERIMENT} --out_dir={locked}/r"],
                          capture_output=True, text=True, timeout=120)
    one_error_line(proc, f"cannot write in {locked}")


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps"])
def test_a_device_that_is_not_there(tmp_path, device):
    import torch
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that device")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has that device")
    one_error_line(run_experiment(tmp_path, "--out_dir=r", f"--device={device}", check=False),
                   f"--device={device}")


def test_a_seed_beyond_64_bits(tmp_path):
    one_error_line(run_experiment(tmp_path, "--out_dir=r", f"--seed={2 ** 64}", check=False), "--seed")
    one_error_line(run_experiment(tmp_path, "--out_dir=r", f"--seed={2 ** 64 - 2}", "--num_seeds=3",
                                  check=False), "2**64")


def test_a_batch_larger_than_the_train_split_is_one_warning_naming_its_size(tmp_path):
    proc = run_experiment(tmp_path, "--out_dir=r", "--datasets=x_plus_y", "--num_seeds=1",
                          "--prime=11", "--dim_model=32", "--num_heads=2", "--total_steps=10",
                          "--batch_size=1000")
    warnings = [line for line in proc.stderr.splitlines() if "--batch_size=1000" in line]
    assert len(warnings) == 1 and "x_plus_y's 60 examples" in warnings[0]


# --- notes text -----------------------------------------------------------------------------
@pytest.mark.slow
def test_titles_keep_decimals_and_descriptions_cannot_inject_headings(tmp_path):
    run_experiment(tmp_path, "--out_dir=run_4", "--description=Weight decay 0.1 instead of 0.5. More.",
                   *ARGS[:-1], "--num_seeds=1")
    run_experiment(tmp_path, "--out_dir=run_5", "--description=Fake.\n## Run 2: injected\nResults: {}",
                   *ARGS[:-1], "--num_seeds=1")
    run_experiment(tmp_path, "--out_dir=run_2", *ARGS[:-1], "--num_seeds=1")
    text = (tmp_path / "notes.txt").read_text()
    assert "## Run 4: Weight decay 0.1 instead of 0.5\n" in text
    assert "Description: Fake. ## Run 2: injected Results: {}\n" in text
    headings = [line for line in text.splitlines() if line.startswith("## Run")]
    assert headings == ["## Run 4: Weight decay 0.1 instead of 0.5", "## Run 5: Fake", "## Run 2"]


@pytest.mark.slow
def test_the_notes_section_carries_statistics_and_the_verdict_against_run_0(tmp_path):
    run_experiment(tmp_path, "--out_dir=run_0", *ARGS)
    run_experiment(tmp_path, "--out_dir=run_1", "--description=Same again.", *ARGS)
    text = (tmp_path / "notes.txt").read_text()
    section = text[text.index("## Run 1"):]
    assert "\nSteps to 99% val acc: x_plus_y 0/2 grokked, median not reached\n" in section
    assert "\nVerdict vs run_0: x_plus_y: " in section and "not testable" in section


# --- fault injection: SIGKILL at every write, then --resume ---------------------------------
DRIVER = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
import harness, experiment as E
import notes
import outputs
import unit_run
target = sys.argv[1]
real_write, real_record = outputs.write_atomic, unit_run.UnitRun.record

def write_atomic(path, write):
    if Path(path).name == target:  # leave a half-written temporary file, then die
        tmp = Path(path).with_name(f".{{Path(path).name}}.tmp{{os.getpid()}}")
        write(tmp)
        os.truncate(tmp, tmp.stat().st_size // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(path, write)

def record(self, train_row, val_row):
    if target == "training" and self.seed_index == 1 and train_row["step"] == 20:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_record(self, train_row, val_row)

for module in (outputs, notes, harness):  # each module that writes files atomically
    module.write_atomic = write_atomic
unit_run.UnitRun.record = record
harness.main(E.Config, E.train_unit, sys.argv[2:])
"""


@pytest.mark.slow
def test_sigkill_at_any_point_then_resume_gives_the_uninterrupted_result(tmp_path):
    args = ARGS
    (tmp_path / "reference").mkdir()
    run_experiment(tmp_path / "reference", "--out_dir=run_1", *args)
    expected = (tmp_path / "reference" / "run_1" / "final_info.json").read_text()
    expected_results = np.load(tmp_path / "reference" / "run_1" / "all_results.npy", allow_pickle=True).item()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(root=str(ROOT)))
    for target in ("training", "x_plus_y_1.json", "all_results.npy", "notes.txt", "final_info.json"):
        project = tmp_path / target
        project.mkdir()
        (project / "notes.txt").write_text("# Title: mine\n")
        proc = subprocess.run([sys.executable, str(driver), target, "--out_dir=run_1", *args],
                              cwd=project, capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, (target, proc.stderr)
        folder = project / "run_1"
        assert not (folder / "final_info.json").exists()  # never looks complete
        notes = (project / "notes.txt").read_text()
        if target != "final_info.json":  # notes.txt is written just before final_info.json
            assert notes == "# Title: mine\n"  # the half-written temporary file was never read
        run_experiment(project, "--out_dir=run_1", "--resume")
        assert (folder / "final_info.json").read_text() == expected, target
        results = np.load(folder / "all_results.npy", allow_pickle=True).item()
        assert results == expected_results, target
        notes = (project / "notes.txt").read_text()
        assert notes.startswith("# Title: mine\n") and notes.count("## Run 1") == 1
        assert not [p for p in folder.rglob("*") if ".tmp" in p.name and p.name.endswith(".json")]
