"""plot.py as a specification: which runs it finds and how it labels them, the mean +- SE band,
steps to 99% counted only over seeds that reached it, the files and tables it writes, its options,
and partial or unusual runs (broken folders, NaN, one seed, different step grids) not crashing it.

Real runs come from experiment.py's command line with tiny budgets (a few seconds in all);
hand-made runs cover what tiny real runs cannot (grokking, NaN, odd step grids)."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT, PLOT = ROOT / "experiment.py", ROOT / "plot.py"
sys.path.insert(0, str(ROOT))

import plot  # noqa: E402

TINY = ["--total_steps=20", "--eval_every=10", "--prime=11", "--dim_model=32", "--num_heads=2", "--jobs=1"]
METRIC_FILES = ("train_loss", "val_loss", "train_acc", "val_acc")


# ---------------------------------------------------------------------------------------------
# Fixtures: a project folder with two real tiny runs and a broken one; hand-made runs.
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """run_0: x_plus_y + permutation x 2 seeds; run_1: x_plus_y x 1 seed; run_2: garbage.
    plot.py has been run once in it: (folder, completed process)."""
    tmp = tmp_path_factory.mktemp("project")
    for out, extra in (("run_0", ["--datasets=x_plus_y,permutation", "--num_seeds=2"]),
                       ("run_1", ["--datasets=x_plus_y", "--num_seeds=1"])):
        subprocess.run([sys.executable, str(EXPERIMENT), f"--out_dir={out}", *extra, *TINY],
                       cwd=tmp, check=True, capture_output=True)
    (tmp / "run_2").mkdir()
    (tmp / "run_2" / "final_info.json").write_text("{not json")
    done = subprocess.run([sys.executable, str(PLOT)], cwd=tmp, capture_output=True, text=True)
    return tmp, done


def unit(steps, grok_step=None, nan_from=None, weight_norm=True):
    """(train_info, val_info) of one hand-made seed: val accuracy > 0.99 from grok_step on."""
    train, val = [], []
    for step in steps:
        acc = 1.0 if grok_step is not None and step >= grok_step else 0.5
        if nan_from is not None and step >= nan_from:
            loss = acc = math.nan
        else:
            loss = 2.0 / step
        train.append({"step": step, "train_loss": loss / 2, "train_accuracy": 1.0})
        diagnostics = {"weight_norm": 30.0 - step / 100, "softmax_collapse": 0.0} if weight_norm else {}
        val.append({"step": step, "val_loss": loss, "val_accuracy": acc, **diagnostics})
    return train, val


def write_run(folder, units):
    """A finished run folder from {(dataset, seed): (train_info, val_info)}; step_val_acc_99 is
    total_steps when not reached, exactly as experiment.py writes it."""
    folder.mkdir(parents=True)
    results, final = {}, {}
    for (dataset, seed), (train, val) in units.items():
        reached = [r["step"] for r in val if r["val_accuracy"] > 0.99]
        results[f"{dataset}_{seed}_final_info"] = {
            "final_train_loss": train[-1]["train_loss"], "final_val_loss": val[-1]["val_loss"],
            "final_train_acc": train[-1]["train_accuracy"], "final_val_acc": val[-1]["val_accuracy"],
            "step_val_acc_99": reached[0] if reached else val[-1]["step"]}
        results[f"{dataset}_{seed}_train_info"], results[f"{dataset}_{seed}_val_info"] = train, val
        final[dataset] = {"means": {}, "stderrs": {}, "final_info_dict": {}}
    np.save(folder / "all_results.npy", results, allow_pickle=True)
    (folder / "final_info.json").write_text(json.dumps(final))
    return plot.load_run(folder)


def outputs(folder, datasets, ext="png"):
    names = [f"{m}_{d}.{ext}" for d in datasets for m in (*METRIC_FILES, "weight_norm")]
    return names + [f"summary_plot.{ext}", "results.md", "results.tex"]


# ---------------------------------------------------------------------------------------------
# The whole command on real runs
# ---------------------------------------------------------------------------------------------
def test_plot_writes_every_file_and_skips_the_broken_run_with_a_warning(project):
    tmp, done = project
    assert done.returncode == 0, done.stderr
    for name in outputs(tmp, ["x_plus_y", "permutation"]):
        assert (tmp / name).stat().st_size > 0, name
    warnings = [line for line in done.stderr.splitlines() if "run_2" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipping run_2: final_info.json")
    assert "runs: run_0, run_1" in done.stdout


def test_results_tables_give_runs_values_and_seed_counts(project):
    tmp, _ = project
    md = (tmp / "results.md").read_text()
    assert "## x_plus_y" in md and "## permutation" in md
    assert "| Run 0: Baseline |" in md and "| Run 1 |" in md
    assert "0/2" in md and "0/1" in md and "not reached" in md  # 20 updates never grok
    tex = (tmp / "results.tex").read_text()
    assert "\\begin{table}" in tex and "\\begin{tabular}" in tex and "\\end{table}" in tex
    assert "x\\_plus\\_y" in tex and "x_plus_y" not in tex.replace("x\\_plus\\_y", "")
    assert "booktabs" not in tex and "\\toprule" not in tex and "$\\pm$" in tex


def test_table_cells_escape_latex_and_keep_small_losses_readable():
    assert plot.tex_cell("lr_2 & 50% > 1 | x") == "lr\\_2 \\& 50\\% $>$ 1 $|$ x"
    assert plot.fmt(0.00422, 0.00022) == "0.00422 ± 0.00022"  # 3 significant digits, SE alike
    assert plot.fmt(6.67e-4, 1e-5) == "(6.67 ± 0.10)e-04"
    assert plot.tex_cell(plot.fmt(6.67e-4, 1e-5)) == "(6.67 $\\pm$ 0.10)$\\times10^{-4}$"
    assert plot.fmt(math.nan, 0.0) == "nan"


@pytest.mark.skipif(not shutil.which("pdflatex"), reason="needs pdflatex")
def test_results_tex_compiles_in_a_plain_article(project, tmp_path):
    (tmp_path / "results.tex").write_text((project[0] / "results.tex").read_text())
    (tmp_path / "paper.tex").write_text("\\documentclass{article}\\begin{document}\n"
                                        "\\input{results.tex}\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
                          cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "Overfull" not in (tmp_path / "paper.log").read_text()


def test_import_has_no_side_effects(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import plot"], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0 and done.stdout == "" and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------
def test_runs_out_dir_and_pdf_format_take_effect(project, monkeypatch):
    tmp, _ = project
    monkeypatch.chdir(tmp)
    plot.main(["--runs=run_1", "--out_dir=figures/pdf", "--format=pdf"])
    written = sorted(p.name for p in (tmp / "figures" / "pdf").iterdir())
    assert written == sorted(outputs(tmp, ["x_plus_y"], "pdf") + ["softmax_collapse_x_plus_y.pdf"])
    assert (tmp / "figures" / "pdf" / "val_acc_x_plus_y.pdf").read_bytes().startswith(b"%PDF")
    md = (tmp / "figures" / "pdf" / "results.md").read_text()
    assert "Run 1" in md and "Run 0" not in md and "permutation" not in md


@pytest.mark.parametrize("argv, named", [(["--format=svg"], "svg"), (["--runs=run_9"], "run_9"),
                                         (["--runs=,"], "--runs"), (["--colour=red"], "colour")])
def test_bad_option_is_one_line_on_stderr_and_exit_2(project, monkeypatch, capsys, argv, named):
    monkeypatch.chdir(project[0])
    with pytest.raises(SystemExit) as exit_:
        plot.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error:") and named in err
    assert len(err.strip().splitlines()) == 1


def test_bad_format_from_the_command_line(project):
    done = subprocess.run([sys.executable, str(PLOT), "--format=jpg"], cwd=project[0],
                          capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# Which runs, in which order, with which labels and colours
# ---------------------------------------------------------------------------------------------
def test_runs_are_sorted_by_number_and_odd_folders_reported(tmp_path, capsys):
    for name in ("run_10", "run_2", "run_1", "run_old"):
        (tmp_path / name).mkdir()
    assert [p.name for p in plot.discover_runs(tmp_path)] == ["run_1", "run_2", "run_10"]
    assert "run_old" in capsys.readouterr().err


def test_labels_dict_selects_and_orders_runs(project):
    runs = plot.load_runs(plot.discover_runs(project[0]))
    chosen = plot.select_runs(runs, {"run_1": "One seed", "run_0": "Baseline"})
    assert [(r.name, r.label) for r in chosen] == [("run_1", "One seed"), ("run_0", "Baseline")]
    assert [r.name for r in plot.select_runs(runs, {"run_1": "One seed"})] == ["run_1"]


def test_empty_labels_come_from_notes_headings_else_folder_names(project, tmp_path):
    runs = plot.load_runs(plot.discover_runs(project[0]))
    chosen = plot.select_runs(runs, {}, notes=project[0] / "notes.txt")
    assert [r.label for r in chosen] == ["Run 0: Baseline", "Run 1"]
    chosen = plot.select_runs(runs, {}, notes=tmp_path / "missing.txt")
    assert [r.label for r in chosen] == ["run_0", "run_1"]


def test_main_uses_the_labels_dict(project, monkeypatch):
    tmp, _ = project
    monkeypatch.chdir(tmp)
    monkeypatch.setattr(plot, "labels", {"run_1": "Tiny | one seed"})
    plot.main(["--out_dir=figures/labelled"])
    md = (tmp / "figures" / "labelled" / "results.md").read_text()
    assert "Tiny \\| one seed" in md and "Baseline" not in md
    assert not (tmp / "figures" / "labelled" / "val_acc_permutation.png").exists()  # run_0 only


def test_colour_depends_only_on_the_run_number():
    run_3 = plot.Run("run_3", 3, {}, [])
    assert plot.run_style(run_3) == (plot.PALETTE[3], "-")
    styles = [plot.run_style(plot.Run(f"run_{n}", n, {}, [])) for n in range(40)]
    assert len(set(styles)) == 40  # run_0 ... run_39 all differ
    assert len({colour for colour, _ in styles[:20]}) == 20  # and by colour alone up to run_19
    # issue 13: run_2 and run_10 were two near-identical greens; now neither shares a colour
    # nor a line style with run_2: run_12 is light green and dashed
    assert plot.run_style(plot.Run("run_10", 10, {}, []))[0] not in plot.PALETTE
    assert plot.run_style(plot.Run("run_12", 12, {}, [])) == (plot.LIGHT[2], "--")


# ---------------------------------------------------------------------------------------------
# Numbers: the band, steps to 99%
# ---------------------------------------------------------------------------------------------
def test_band_is_mean_and_documented_standard_error(tmp_path):
    values = {0: [1.0, 2.0], 1: [2.0, 4.0], 2: [6.0, 9.0]}
    results = {f"d_{s}_train_info": [{"step": 10 * (i + 1), "train_loss": v} for i, v in enumerate(vs)]
               for s, vs in values.items()}
    run = plot.Run("run_0", 0, results, ["d"])
    steps, mean, se = plot.mean_se_curve(plot.seed_curves(run, "d", "train_info", "train_loss"))
    table = np.array(list(values.values()))  # (seeds, steps)
    assert steps.tolist() == [10, 20]
    np.testing.assert_allclose(mean, table.mean(axis=0))
    np.testing.assert_allclose(se, table.std(axis=0, ddof=1) / np.sqrt(3))
    one = plot.Run("run_0", 0, {"d_0_train_info": results["d_0_train_info"]}, ["d"])
    _, mean, se = plot.mean_se_curve(plot.seed_curves(one, "d", "train_info", "train_loss"))
    assert mean.tolist() == [1.0, 2.0] and se.tolist() == [0.0, 0.0]


def test_seeds_with_different_step_grids_align_on_common_steps():
    results = {"d_0_val_info": [{"step": s, "val_loss": s} for s in (10, 20, 30, 40)],
               "d_1_val_info": [{"step": s, "val_loss": s + 1.0} for s in (20, 40, 60)]}
    run = plot.Run("run_0", 0, results, ["d"])
    steps, mean, _ = plot.mean_se_curve(plot.seed_curves(run, "d", "val_info", "val_loss"))
    assert steps.tolist() == [20, 40] and mean.tolist() == [20.5, 40.5]
    results["d_1_val_info"] = [{"step": 5, "val_loss": 1.0}]  # nothing in common: no line, no crash
    assert plot.mean_se_curve(plot.seed_curves(run, "d", "val_info", "val_loss"))[0].size == 0


def test_steps_to_99_are_censoring_aware(tmp_path):
    """Issue 14: a seed that never reached 99% is censored at the horizon, never averaged in."""
    steps = range(100, 1001, 100)
    run = write_run(tmp_path / "run_0", {("d", 0): unit(steps, 300), ("d", 1): unit(steps, 500),
                                         ("d", 2): unit(steps, None)})
    grok = plot.grok_summary(run, "d")
    # Kaplan-Meier: S = 2/3 after 300, 1/3 after 500 (the third seed censored at 1000): median 500
    assert (grok["k"], grok["n"], grok["median"], grok["steps"]) == (2, 3, 500, [300, 500])
    assert grok["text"] == "2/3 grokked, KM median 500"
    row = plot.table_rows([run], ["d"])[0]
    assert plot.cells(row)[4:7] == ["500", "2/3", "0/3"]


def test_summary_shows_runs_that_did_not_all_reach_99_as_such(tmp_path):
    steps = range(100, 1001, 100)
    runs = [write_run(tmp_path / f"run_{i}", {("d", s): unit(steps, g) for s, g in enumerate(groks)})
            for i, groks in enumerate([(300, 500), (300, None), (None, None)])]
    fig = plot.Figure()
    ax = fig.add_subplot()
    plot.summary_steps(ax, runs, "d")
    assert [t.get_text() for t in ax.texts] == ["2/2", "1/2", "not reached (0/2)"]
    assert [b.get_height() for b in ax.patches] == [300, 300]  # KM medians: S(300) = 1/2 in both


def test_diverged_seeds_are_shown_as_such(tmp_path):
    steps = range(100, 1001, 100)
    run = write_run(tmp_path / "run_0", {("d", 0): unit(steps, 300), ("d", 1): unit(steps, None)})
    results = np.load(tmp_path / "run_0" / "all_results.npy", allow_pickle=True).item()
    results["d_1_final_info"]["diverged"] = 1
    results["d_1_val_info"] = results["d_1_val_info"][:3]
    np.save(tmp_path / "run_0" / "all_results.npy", results, allow_pickle=True)
    run = plot.load_run(tmp_path / "run_0")
    assert plot.grok_summary(run, "d")["diverged"] == 1
    assert plot.cells(plot.table_rows([run], ["d"])[0])[6] == "1/2"
    fig = plot.Figure()
    ax = fig.add_subplot()
    plot.summary_accuracy(ax, [run], "d")
    assert [t.get_text() for t in ax.texts] == ["diverged 1/2"]


def test_effect_and_interval_stand_beside_the_p_value(tmp_path):
    """Issue 26: run_1 groks at 200, 300, 400 against run_0's 500, 600, 700: KM medians 300 and 600,
    so -300; each resampled median is one of its arm's times, and the extremes 200 - 700 and
    400 - 500 each come up with probability (7/27)^2 = 6.7% > 2.5%: the interval is [-500, -100].
    run_2 groks on one seed of three: its median is not reached, so the estimate is undefined and
    the interval open above, from 300 - 700."""
    steps = range(100, 1001, 100)
    runs = [write_run(tmp_path / f"run_{i}", {("d", s): unit(steps, g) for s, g in enumerate(groks)})
            for i, groks in enumerate([(500, 600, 700), (200, 300, 400), (300, None, None)])]
    for run in runs:
        run.label = run.name
    rows = plot.table_rows(runs, ["d"], runs[0])
    assert [plot.cells(r)[7:] for r in rows] == [["-", "-"], ["earlier, p = 0.02", "-300 [-500, -100]"],
                                                 ["n.s., p = 0.28", "undefined [-400, ∞)"]]
    md = plot.markdown_table(rows)
    assert "| earlier, p = 0.02 | -300 [-500, -100] |" in md
    assert "- run_1: vs run_0: groks earlier, p = 0.02, KM median diff -300, 95% CI [-500, -100]; " in md
    tex = plot.latex_table(rows)
    assert "n.s., p = 0.28 \\\\ undefined [-400, $\\infty$)" in tex and "∞" not in tex
    fig = plot.Figure()
    ax = fig.add_subplot()
    plot.summary_effect(ax, runs, "d", runs[0], "steps")
    assert [t.get_text() for t in ax.texts] == ["p = 0.02", "p = 0.28", "baseline"]
    assert [line.get_marker() for line in ax.lines].count("^") == 1  # run_2's open upper end
    interval = [list(line.get_ydata()) for line in ax.lines if len(line.get_ydata()) == 2]
    assert [-500, -100] in interval  # run_1: from -500 to -100 (the other two: zero line, run_2)
    ax = fig.add_subplot()
    plot.summary_effect(ax, runs, "d", runs[0], "final")  # 3 vs 3: the interval is 90%, marked
    assert [t.get_text() for t in ax.texts] == ["not testable", "p = 0.19\n90% CI", "baseline"]


# ---------------------------------------------------------------------------------------------
# Partial and unusual runs
# ---------------------------------------------------------------------------------------------
def test_nan_one_seed_odd_grids_and_missing_diagnostics_do_not_crash(tmp_path, monkeypatch, capsys):
    steps = list(range(50, 501, 50))
    write_run(tmp_path / "run_0", {("x_plus_y", 0): unit(steps, 200, nan_from=300)})  # one seed, NaN
    write_run(tmp_path / "run_3", {("x_plus_y", 0): unit(steps, 250),
                                   ("x_plus_y", 1): unit(steps[::2], 300),     # another step grid
                                   ("permutation", 0): unit(steps, None, weight_norm=False)})
    write_run(tmp_path / "run_4", {("x_div_y", 0): unit([10], None, nan_from=0, weight_norm=False)})
    (tmp_path / "run_5").mkdir()                                                  # unfinished
    monkeypatch.chdir(tmp_path)
    plot.main([])
    err = capsys.readouterr().err
    assert "skipping run_5: no final_info.json" in err
    assert "no finite val_loss values for x_div_y" in err  # run_4 has nothing but NaN
    expected = outputs(tmp_path, ["x_plus_y"]) + [f"{m}_{d}.png" for m in METRIC_FILES
                                                  for d in ("permutation", "x_div_y")]
    for name in expected:
        assert (tmp_path / name).exists(), name
    assert not (tmp_path / "weight_norm_permutation.png").exists()  # not recorded there
    md = (tmp_path / "results.md").read_text()
    assert "| run_0 |" in md and "| run_3 |" in md and "| run_4 |" in md and "| nan |" in md
    assert md.index("| run_0 |") < md.index("| run_3 |")


def test_no_readable_run_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        plot.main([])
    assert exit_.value.code == 1 and len(capsys.readouterr().err.strip().splitlines()) == 1
