"""Each run keeps its code, and confirm.py retrains a run and its baseline from that code on fresh
seeds (issue 26), as a specification: the copy in out_dir/code reruns the run exactly from a folder
without the project; run_0 keeps the code that made it; bad input is one line and exit 2 with
nothing written; the fresh seeds start past every seed found; the verdict's rule on hand-made runs;
and a synthetic campaign of tiny real runs, one real effect among null ideas, comes out right
before and after correction and on fresh seeds (test_a_synthetic_campaign_comes_out_right says
how often it would fail by chance)."""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import confirm
import grokstats
import outputs
from helpers import ROOT, TINY, run_experiment
from options import ConfigError

HARNESS = ROOT / "harness.py"
ONE_UNIT = ["--datasets=x_plus_y", "--num_seeds=1", *TINY]


def isolated():
    """The environment of a command that must not find the project's modules."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONDONTWRITEBYTECODE": "1"}


def curves(folder):
    """{unit: (train_info, val_info, final_info)} of a run folder's unit files."""
    return {p.stem: tuple(json.loads(p.read_text())[k] for k in ("train_info", "val_info", "final_info"))
            for p in sorted((Path(folder) / "units").glob("*.json"))}


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sums(folder):
    """{file name: sha256} from a SHA256SUMS file (sha256sum's format)."""
    lines = (Path(folder) / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines)}


# ---------------------------------------------------------------------------------------------
# Each run keeps its code
# ---------------------------------------------------------------------------------------------
def test_a_run_keeps_its_code_and_the_copy_reruns_it_exactly(tmp_path):
    (tmp_path / "a").mkdir()
    run_experiment(tmp_path / "a", "--out_dir=r", *ONE_UNIT)
    code = tmp_path / "a" / "r" / "code"
    identity = json.loads((tmp_path / "a" / "r" / "run_info.json").read_text())["code_sha256"]
    assert set(identity) == {"experiment.py", *(m for m in outputs.CODE_MODULES if (ROOT / m).is_file())}
    assert {n: sha256(code / n) for n in identity} == identity  # what the units record
    kept = sums(code)
    assert set(identity) <= set(kept) and kept == {p.name: sha256(p) for p in code.glob("*.py")}
    assert all(sha256(ROOT / n) == d for n, d in kept.items())  # the project's files, byte for byte
    # The copy alone: from a folder without the project, with no PYTHONPATH, the same numbers.
    (tmp_path / "b").mkdir()
    done = subprocess.run([sys.executable, str(code / "experiment.py"), "--out_dir=r", *ONE_UNIT],
                          cwd=tmp_path / "b", capture_output=True, text=True, timeout=300, env=isolated())
    assert done.returncode == 0, done.stderr
    assert curves(tmp_path / "b" / "r") == curves(tmp_path / "a" / "r")
    assert sums(tmp_path / "b" / "r" / "code") == kept  # a copy's run keeps the same copy
    assert not (code / "__pycache__").exists()


@pytest.mark.slow
def test_resume_keeps_the_copy_and_overwrite_replaces_it(tmp_path):
    run_experiment(tmp_path, "--out_dir=r", "--datasets=x_plus_y", "--num_seeds=2", *TINY)
    code = tmp_path / "r" / "code"
    kept = sums(code)
    (tmp_path / "r" / "final_info.json").unlink()
    (tmp_path / "r" / "units" / "x_plus_y_1.json").unlink()
    run_experiment(tmp_path, "--out_dir=r", "--resume")
    assert sums(code) == kept and {p.name for p in code.iterdir()} == {*kept, "SHA256SUMS"}
    (code / "stale.py").write_text("# another version's module\n")
    (code / "experiment.py").write_text("# overwritten\n")
    run_experiment(tmp_path, "--out_dir=r", "--overwrite", "--datasets=x_plus_y", "--num_seeds=1", *TINY)
    assert sums(code) == kept and not (code / "stale.py").exists()


def test_run_0_keeps_the_code_that_made_it():
    """run_0/code holds the commit's files whose sha256 run_0/run_info.json records."""
    code = ROOT / "run_0" / "code"
    recorded = json.loads((ROOT / "run_0" / "run_info.json").read_text())["code_sha256"]
    assert {name: sha256(code / name) for name in recorded} == recorded
    assert sums(code) == {p.name: sha256(p) for p in code.glob("*.py")}
    assert re.fullmatch(r"[0-9a-f]{40}", (code / "COMMIT").read_text().splitlines()[0])
    assert json.loads((ROOT / "run_0" / "config.json").read_text())["seed"] == 1337


@pytest.mark.slow
def test_run_0s_code_still_runs_on_its_own(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "run_0" / "code" / "experiment.py"), "--out_dir=r",
                           *ONE_UNIT], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=isolated())
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "final_info.json").is_file()


# ---------------------------------------------------------------------------------------------
# Hand-made run folders, as experiment.py writes them (no training)
# ---------------------------------------------------------------------------------------------
TOTAL = 4000  # updates; a record every 100
CONFIG_SOURCE = "class Config:\n    datasets: str = 'x_plus_y'\n    lr: float = 1e-3\n    seed: int = 1337\n"


def write_run(folder, datasets, seed=1337, code=True):
    """A finished run folder: {dataset: [(grok_step or None, tail val accuracy) per seed]} ->
    all_results.npy, final_info.json, config.json, run_info.json and (code=True) code/."""
    folder.mkdir(parents=True)
    results, steps = {}, range(100, TOTAL + 1, 100)
    for dataset, units in datasets.items():
        for s, (grok, tail) in enumerate(units):
            results[f"{dataset}_{s}_train_info"] = [{"step": t, "train_loss": 0.01, "train_accuracy": 1.0} for t in steps]
            results[f"{dataset}_{s}_val_info"] = [{"step": t, "val_loss": 0.1, "val_accuracy":
                                                   tail if grok is not None and t >= grok else 0.5} for t in steps]
            results[f"{dataset}_{s}_final_info"] = {"diverged": 0}
    np.save(folder / "all_results.npy", results, allow_pickle=True)
    n = len(next(iter(datasets.values())))
    (folder / "final_info.json").write_text(json.dumps({d: {"means": {}} for d in datasets}))
    (folder / "config.json").write_text(json.dumps({"datasets": ",".join(datasets), "seed": seed, "num_seeds": n,
                                                    "lr": 1e-3, "total_steps": TOTAL, "jobs": 0}))
    recorded = {}
    if code:
        (folder / "code").mkdir()
        (folder / "code" / "experiment.py").write_text(CONFIG_SOURCE)
        recorded = {"experiment.py": sha256(folder / "code" / "experiment.py")}
    (folder / "run_info.json").write_text(json.dumps({"code_sha256": recorded}))
    return folder


BASE = [(2600 + 100 * i, 0.995) for i in range(6)]
FAST = [(1000 + 100 * i, 0.995) for i in range(6)]    # groks earlier: log-rank p < 0.001
SLOW = [(3800, 0.995)] + [(None, 0.5)] * 5             # groks later and less often
NULL = [(2650 + 100 * i, 0.995) for i in range(6)]    # interleaved with BASE


@pytest.fixture
def idea(tmp_path):
    """tmp/idea with run_0 (x_plus_y, x_div_y), run_1 (earlier on x_plus_y), run_2 (x_plus_y only),
    run_3 (no code/), and run_4 (unfinished)."""
    folder = tmp_path / "idea"
    write_run(folder / "run_0", {"x_plus_y": BASE, "x_div_y": BASE})
    write_run(folder / "run_1", {"x_plus_y": FAST, "x_div_y": NULL})
    write_run(folder / "run_2", {"x_plus_y": FAST})
    write_run(folder / "run_3", {"x_plus_y": FAST, "x_div_y": NULL}, code=False)
    write_run(folder / "run_4", {"x_plus_y": FAST, "x_div_y": NULL})
    (folder / "run_4" / "final_info.json").unlink()
    return folder


def refused(folder, *args):
    """The ConfigError confirm.plan raises for these arguments (it reads only)."""
    with pytest.raises(ConfigError) as e:
        confirm.plan(confirm.parse_args(list(args)))
    return str(e.value)


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("args, needle", [
    (["idea/run_9"], "RUN=idea/run_9 is not a folder"),
    (["idea/run_3"], "has no copy of its code"),
    (["idea/run_4"], "only a finished run can be confirmed"),
    (["idea/run_2"], "the arms must train the same datasets"),
    (["idea/run_1", "--baseline=idea/run_9"], "--baseline=idea/run_9 is not a folder"),
    (["idea/run_0"], "is its own baseline"),
    (["idea/run_1", "--num_seeds=1"], "at least 2 seeds"),
    (["idea/run_1", "--num_seeds=ten"], "invalid int value"),
    (["idea/run_1", "--bogus=1"], "unrecognized arguments: --bogus=1"),
    (["idea/run_1", "--jobs=-1"], "--jobs=-1 must be in [0, inf)"),
    (["idea/run_1", "--launcher=cloud"], "--launcher=cloud is unknown"),
    (["idea/run_1", "--resume", "--overwrite"], "choose one"),
    (["idea/run_1", "--out_dir=idea/run_0/config.json"], "is a file")])
def test_bad_input_is_refused_before_anything_is_written(idea, monkeypatch, args, needle):
    monkeypatch.chdir(idea.parent)
    before = listing(idea)
    assert needle in refused(idea, *args)
    assert listing(idea) == before


def test_a_copy_that_is_not_the_runs_code_is_refused(idea, monkeypatch):
    monkeypatch.chdir(idea.parent)
    (idea / "run_1" / "code" / "experiment.py").write_text(CONFIG_SOURCE + "# edited afterwards\n")
    assert "code/experiment.py is not the code that made the run" in refused(idea, "idea/run_1")


def test_a_finished_confirmation_is_kept_and_an_unfinished_one_needs_resume(idea, monkeypatch):
    monkeypatch.chdir(idea.parent)
    (idea / "confirm_run_1").mkdir()
    (idea / "confirm_run_1" / "confirm.json").write_text(json.dumps(
        {"run": "idea/run_1", "baseline": "idea/run_0", "seeds": [1_000_000, 4], "seed_rule": {}}))
    assert "pass --resume to continue it or --overwrite" in refused(idea, "idea/run_1")
    assert "differs from idea/confirm_run_1/confirm.json's 4" in refused(idea, "idea/run_1", "--resume",
                                                                          "--num_seeds=5")
    resumed = confirm.plan(confirm.parse_args(["idea/run_1", "--resume"]))
    assert (resumed.first, resumed.n) == (1_000_000, 4)  # a resumed confirmation keeps its seeds
    (idea / "confirm_run_1" / "verdict.json").write_text("{}")
    assert "already holds a finished confirmation" in refused(idea, "idea/run_1", "--resume")


def test_bad_input_through_the_real_command_line(idea):
    for args in (["idea/run_3"], ["idea/run_1", "--num_seeds=1"]):
        done = subprocess.run([sys.executable, str(HARNESS), "confirm", *args], cwd=idea.parent,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stdout == "", done.stderr
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: ")
    assert not (idea / "confirm_run_1").exists() and not (idea / "confirm_run_3").exists()


def test_the_arms_run_their_own_code_with_their_own_settings(idea, monkeypatch):
    monkeypatch.chdir(idea.parent)
    (idea / "run_1" / "config.json").write_text(json.dumps({
        **json.loads((idea / "run_1" / "config.json").read_text()), "lr": 3e-3, "not_a_field": 1}))
    p = confirm.plan(confirm.parse_args(["idea/run_1", "--num_seeds=4", "--jobs=2", "--threads=1"]))
    assert list(p.arms) == ["run_0", "run_1"] and p.out == Path("idea/confirm_run_1")
    command = confirm.arm_command(p, "run_1")
    assert command[1:] == [str(Path("idea/run_1/code/experiment.py")), f"--out_dir={Path('idea/confirm_run_1/run_1')}",
                           "--seed=1000000", "--num_seeds=4", "--datasets=x_plus_y,x_div_y", "--lr=0.003",
                           "--jobs=2", "--threads=1",
                           "--description=Confirmation of idea/run_1 on fresh seeds 1000000-1000003"]
    assert "--lr=0.001" in confirm.arm_command(p, "run_0")  # the baseline's own settings


# ---------------------------------------------------------------------------------------------
# Fresh seeds
# ---------------------------------------------------------------------------------------------
def test_fresh_seeds_start_past_every_seed_used_and_at_one_million(tmp_path):
    results = tmp_path / "results"
    write_run(results / "idea_a" / "run_0", {"x_plus_y": BASE})
    write_run(results / "idea_a" / "run_1", {"x_plus_y": FAST})
    first, record = confirm.fresh_seed([results / "idea_a", results])  # 6 seeds a side from 1337
    assert first == 1_000_000 and record["largest_seed_found"] == 1342 and record["files_read"] == 2
    assert confirm.fresh_seed([tmp_path / "nothing_here"])[1]["largest_seed_found"] is None
    write_run(results / "idea_b" / "run_1", {"x_plus_y": FAST}, seed=5_000_000)  # 5_000_000 .. 5_000_005
    (results / "idea_a" / "confirm_run_1").mkdir()
    (results / "idea_a" / "confirm_run_1" / "confirm.json").write_text(json.dumps({"seeds": [2_000_000, 10]}))
    deep = results / "idea_a" / "a" / "b" / "c" / "d"  # four folders below idea_a: not read
    deep.mkdir(parents=True)
    (deep / "config.json").write_text(json.dumps({"seed": 9_000_000, "num_seeds": 3}))
    (results / "idea_a" / "run_1" / "units").mkdir()  # a unit's config is its run's: never read
    (results / "idea_a" / "run_1" / "units" / "config.json").write_text(json.dumps({"seed": 8_000_000, "num_seeds": 1}))
    first, record = confirm.fresh_seed([results / "idea_a", results])
    assert first == 5_000_006 and record["found_in"] == str(results / "idea_b" / "run_1" / "config.json")
    assert record["searched"] == [str(results / "idea_a"), str(results)] and "1000000" in record["rule"]
    assert confirm.fresh_seed([results / "idea_a"])[0] == 2_000_010  # the earlier confirmation's seeds


# ---------------------------------------------------------------------------------------------
# The verdict
# ---------------------------------------------------------------------------------------------
def test_the_verdict_replicates_a_significant_row_only_in_its_direction(tmp_path):
    base = write_run(tmp_path / "run_0", {"x_plus_y": BASE})
    run = write_run(tmp_path / "run_1", {"x_plus_y": FAST})
    fresh_base = write_run(tmp_path / "fresh_0", {"x_plus_y": NULL})
    again = write_run(tmp_path / "again", {"x_plus_y": FAST})
    found = confirm.verdict(run, base, again, fresh_base, [1_000_000, 6])
    steps, grokked, final = found["rows"]
    assert (steps["measure"], grokked["measure"], final["measure"]) == ("steps", "grokked", "final")
    assert steps["exploratory"]["significant"] and steps["exploratory"]["direction"] == -1  # earlier
    assert steps["fresh"]["p"] < 0.05 and steps["same_direction"] and steps["replicated"] is True
    assert steps["exploratory"]["estimate"] == 1200 - 2800 and steps["exploratory"]["seeds"] == [6, 6]
    assert grokked["replicated"] is None and final["replicated"] is None  # nothing to replicate there
    assert found["replicated"] is True and found["reason"].startswith("1 of 1 ")
    assert json.loads(json.dumps(found, allow_nan=False)) == found  # strict JSON
    slower = write_run(tmp_path / "slower", {"x_plus_y": SLOW})
    opposite = confirm.verdict(run, base, slower, fresh_base, [1_000_000, 6])
    assert opposite["rows"][0]["fresh"]["p"] < 0.05 and opposite["rows"][0]["same_direction"] is False
    assert opposite["replicated"] is False and opposite["reason"].startswith("0 of 1 ")
    null = write_run(tmp_path / "null", {"x_plus_y": BASE})
    assert confirm.verdict(run, base, null, fresh_base, [1_000_000, 6])["replicated"] is False
    nothing = confirm.verdict(write_run(tmp_path / "run_2", {"x_plus_y": NULL}), base, again, fresh_base,
                              [1_000_000, 6])
    assert nothing["replicated"] is False and "nothing to replicate" in nothing["reason"]
    assert nothing["significant_in_exploration"] == 0 and found["significant_in_exploration"] == 1
    tested = [r["fresh"] for r in nothing["rows"] if r["fresh"]["p"] is not None]  # the fresh side alone,
    assert [t["q"] for t in tested] == pytest.approx(  # corrected over its testable comparisons
        list(stats.false_discovery_control([t["p"] for t in tested], method="bh")))
    assert all(r["fresh"]["q"] is None for r in nothing["rows"] if r["fresh"]["p"] is None)
    k, n = sum(t["q"] <= 0.05 for t in tested), len(tested)
    assert k >= 1 and nothing["reason"].endswith(
        f"{k} of {n} comparisons have Benjamini-Hochberg q <= 0.05 over those {n} (a result of the "
        "fresh seeds, not a replication)")
    assert "| x_plus_y | steps to 99% (log-rank) | " in confirm.verdict_markdown(found)
    fresh_steps = confirm.verdict_markdown(nothing).splitlines()[-3]  # the steps row: the fresh q beside p
    assert f"q{grokstats.format_p(nothing['rows'][0]['fresh']['q'])[1:]} |" in fresh_steps


@pytest.mark.slow
def test_a_stopped_confirmation_writes_no_verdict_and_resume_finishes_it(tmp_path):
    slower = ["--datasets=x_plus_y", "--num_seeds=2", "--prime=11", "--dim_model=32", "--num_heads=2",
              "--total_steps=300", "--eval_every=10", "--jobs=1"]
    tmp_path = tmp_path / "idea"  # the seed rule searches the run's folder and its parent: only ours
    tmp_path.mkdir()
    run_experiment(tmp_path, "--out_dir=run_0", *slower)
    run_experiment(tmp_path, "--out_dir=run_1", *slower, "--lr=3e-3")
    command = [sys.executable, str(HARNESS), "confirm", "run_1", "--num_seeds=3", "--jobs=1"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    units = tmp_path / "confirm_run_1" / "run_0" / "units"
    deadline = time.monotonic() + 300
    while not (units.is_dir() and any(units.glob("*.json"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # `kill PID`: passed on to the arm, which keeps its finished units
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "rerun with --resume" in err.splitlines()[-1], err
    assert not (tmp_path / "confirm_run_1" / "verdict.json").exists()
    kept = len(list(units.glob("*.json")))
    assert 1 <= kept < 3 and not (tmp_path / "confirm_run_1" / "run_0" / "final_info.json").exists()
    done = subprocess.run([*command[:-2], "--resume", "--jobs=1"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"units: {3 - kept} to run, {kept} resumed" in done.stdout
    assert json.loads((tmp_path / "confirm_run_1" / "verdict.json").read_text())["seeds"] == [1_000_000, 3]


# ---------------------------------------------------------------------------------------------
# A synthetic campaign of tiny real runs: one real effect among null ideas
# ---------------------------------------------------------------------------------------------
SMALL = ["--datasets=x_plus_y", "--num_seeds=6", "--prime=31", "--num_layers=1", "--dim_model=64",
         "--num_heads=2", "--total_steps=400", "--batch_size=256", "--lr=3e-3", "--weight_decay=1.0",
         "--eval_every=10", "--jobs=2"]
RUNS = {"run_0": ["--train_frac=0.3"],
        "run_1": ["--train_frac=0.8", "--description=More training data (train_frac 0.8)"],
        "run_2": ["--train_frac=0.3", "--seed=2000", "--description=Idea B, the baseline under another name"],
        "run_3": ["--train_frac=0.3", "--seed=3000", "--description=Idea C, the baseline again"]}


def report(tmp):
    done = subprocess.run([sys.executable, str(ROOT / "campaign.py"), "report", "results", "--out=report"],
                          cwd=tmp, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {(r["run"], r["measure"]): r for r in json.loads((tmp / "report" / "campaign.json").read_text())["rows"]}


@pytest.mark.slow
def test_a_synthetic_campaign_comes_out_right(tmp_path):
    """x_plus_y mod 31, a 1-layer width-64 model, 400 AdamW updates (lr 3e-3, weight decay 1, batch
    256), 6 seeds a run. The real idea, run_1, trains on 80% of the pairs instead of 30%: with more
    training data the model generalises far sooner (Power et al. 2022), so after 400 updates its
    tail val accuracy is 0.87-0.97 against 0.00-0.22. No unit reaches 99% within 400 updates (a
    99% crossing is seed-fragile at this size: 6 of 12 seeds crossed by 800 updates in one block
    of seeds, 6 of 6 in another), so the steps comparisons are not testable and the grokked ones
    are 0/6 against 0/6 (p = 1): the effect shows on the tail val accuracy, Mann-Whitney, complete
    separation, p = 0.0022. run_2 and run_3 are the baseline again on other seeds. The family is
    6 tests (3 runs x grokked and tail); Benjamini-Hochberg gives the real one q = 6 x 0.0022 =
    0.013, the nulls' tail p-values were 0.82 and 0.94. Confirmation on fresh seeds 1000000-1000005:
    0.70-0.97 against 0.01-0.20, p = 0.0022 again, replicated.

    The runs are deterministic (seeded, one thread per unit), so this test passes or fails the same
    way every time; "by chance" means over other seeds, or an arithmetic change that reshuffles
    them. It fails (1) when a null's Mann-Whitney p reaches BH's second rank, p <= 0.05 x 2/6 =
    0.0167, i.e. U <= 3 of 36 in either tail: 14/924 = 1.5% per null, about 3% for the two nulls
    together (they share run_0, which makes them less likely to fail together than separately);
    (2) when the real effect's separation breaks (U >= 2 inverted pairs of 36 gives q >= 0.052):
    of the 16 treatment seeds measured at 400 updates (tails 0.46-0.97) and 26 baseline seeds
    (0.00-0.22), no pair of the 416 inverted, so well under 1% (at 300 updates the margin was
    0.31 against 0.20: hence 400); (3) on fresh seeds, with p >= 0.05 (U >= 6): negligible. About
    3-4% of seed draws would fail, nearly all by a null's false positive, which is what
    Benjamini-Hochberg at 5% allows. It took 3 minutes on a 2-core CPU that another study kept busy."""
    idea = tmp_path / "results" / "idea_data"
    idea.mkdir(parents=True)
    for name, args in RUNS.items():
        run_experiment(idea, f"--out_dir={name}", *SMALL, *args, timeout=600)
    rows = report(tmp_path)
    assert len(rows) == 9 and all(rows[(r, "steps")]["p"] is None for r in ("run_1", "run_2", "run_3"))
    real = rows[("run_1", "final")]
    assert real["significant"] is True and real["q"] < 0.05 and real["ci"][0] > 0.5  # +0.87 [+0.74, +0.95]
    assert real["title"] == "More training data (train_frac 0.8)"
    nulls = [r for (run, _), r in rows.items() if run in ("run_2", "run_3")]
    assert [r["significant"] for r in nulls if r["p"] is not None] == [False] * 4
    assert sum(bool(r["significant"]) for r in rows.values()) == 1
    claims = (tmp_path / "report" / "claims.tex").read_text()
    assert claims.count(r" \\" + "\n") == 2 and "run\\_1: More training data" in claims  # header + one claim
    # Confirmation: both arms from their own code, on fresh seeds, through the local workers
    done = subprocess.run([sys.executable, str(HARNESS), "confirm", "results/idea_data/run_1", "--num_seeds=6",
                           "--jobs=2"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    out = idea / "confirm_run_1"
    found = json.loads((out / "verdict.json").read_text())
    assert found["seeds"] == [1_000_000, 6] and found["replicated"] is True
    tail = next(r for r in found["rows"] if r["measure"] == "final")
    assert tail["replicated"] is True and tail["fresh"]["p"] < 0.05 and tail["fresh"]["direction"] == 1
    record = json.loads((out / "confirm.json").read_text())
    assert record["seeds"] == [1_000_000, 6] and record["seed_rule"]["largest_seed_found"] == 3005  # run_3's last
    for arm, source in (("run_0", "run_0"), ("run_1", "run_1")):
        config = json.loads((out / arm / "config.json").read_text())
        assert (config["seed"], config["num_seeds"]) == (1_000_000, 6)
        assert config["train_frac"] == json.loads((idea / source / "config.json").read_text())["train_frac"]
        assert sums(out / arm / "code") == sums(idea / source / "code")
    assert "## Run 1: Confirmation of results/idea_data/run_1" in (out / "notes.txt").read_text()
    # The campaign report sees the confirmation, and the claim stands on both grounds
    rows = report(tmp_path)
    assert rows[("run_1", "final")]["confirmed"] == "replicated" and len(rows) == 9  # confirm_run_1 not a group
    assert "BH q $\\le$ 0.05 and replicated on fresh seeds" in (tmp_path / "report" / "claims.tex").read_text()
    again = subprocess.run([sys.executable, str(HARNESS), "confirm", "results/idea_data/run_1", "--resume"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already holds a finished confirmation" in again.stderr
    shutil.rmtree(tmp_path / "report")
