"""
plot.py: figures and tables for every finished run_* folder in the current (project) folder.

    python plot.py                                          # all runs, outputs here
    python plot.py --runs=run_0,run_3 --out_dir=figures --format=pdf

Per dataset: train_loss_{d}, val_loss_{d}, train_acc_{d}, val_acc_{d} (+ weight_norm_{d},
softmax_collapse_{d} when val_info records them, with the last layer's weight norm (the slingshot
signal) in a panel under the weight norm, and any other numeric key): one line per run = mean over seeds, band = +-1 standard error (grokstats.standard_error per
step), a diamond at the run's mean step to 99% val accuracy when every seed reached it.
summary_plot: final val accuracy and steps to 99% per run and dataset, and below them each run's
effect against run_0 on both, with its interval and p-value. results.md / results.tex: the same
numbers as tables (\\input{results.tex} in a paper), with the log-rank verdict on the steps and the
difference of KM medians with its interval; results.md also lists every verdict against run_0 in
full. Runs with Fourier progress measures (experiment.py --progress_every) also get, per dataset,
for their first seed that has them: fourier_norms_{d}_{run} (the embedding's and the logits' norm
per frequency over training, heat strips) and progress_measures_{d}_{run} (restricted and excluded
loss beside train and test loss, as in Nanda et al. 2023's Figure 7).

Fill `labels` below to choose the runs (in its order) and their legend labels; empty = every run,
labelled from notes.txt's "## Run N: Title" headings.
"""

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogFormatter, MaxNLocator

import grokstats

# Run folder -> legend label, e.g. {"run_0": "Baseline", "run_3": "Grokfast EMA"}.
# Non-empty: only these runs are plotted, in this order. Empty: every run, labels from notes.txt.
labels = {}

# ---------------------------------------------------------------------------------------------
# STYLE: one colour (and, past 18 runs, line style) per run NUMBER, so a run looks the same in
# every figure whatever subset is plotted.
# ---------------------------------------------------------------------------------------------
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",  # matplotlib tab10: run 0-9
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
LIGHT = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",    # tab20's light partners: 10-19
         "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
LINESTYLES = ("-", "--", ":", "-.")
RC = {"font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 11,
      "xtick.labelsize": 11, "ytick.labelsize": 11, "savefig.dpi": 200}
FIGSIZE = (5, 3.5)      # inches; half a 6.5 in page width keeps the 11-12 pt text at ~7 pt
GROK_THRESHOLD = 0.99   # "reached 99%": some val_info entry has val_accuracy > 0.99 (as experiment.py)

# metric -> (all_results part, record key, title, y label, log scale)
METRICS = {
    "train_loss": ("train_info", "train_loss", "Training loss", "Training loss", True),
    "val_loss": ("val_info", "val_loss", "Validation loss", "Validation loss", True),
    "train_acc": ("train_info", "train_accuracy", "Training accuracy", "Training accuracy", False),
    "val_acc": ("val_info", "val_accuracy", "Validation accuracy", "Validation accuracy", False),
}
DIAGNOSTICS = {  # drawn only when some run records them
    "weight_norm": ("val_info", "weight_norm", "Weight norm", "L2 norm of all parameters", False),
    "softmax_collapse": ("val_info", "softmax_collapse", "Softmax collapse",
                         "Fraction of val. examples\nwith max softmax = 1", False),
}
BELOW = {  # metric -> (part, record key, y label) of a quantity drawn in a panel under it
    "weight_norm": ("val_info", "last_layer_norm", "L2 norm of the last\nlayer's (head's) weights"),
}


def run_style(run):
    """run N: tab10 colour N mod 10, light for odd decades, a new line style each decade; so
    run_2 (green, solid) and run_12 (light green, dashed) never look alike."""
    decade, index = divmod(run.number, len(PALETTE))
    return (LIGHT if decade % 2 else PALETTE)[index], LINESTYLES[decade % len(LINESTYLES)]


def warn(message):
    print(f"warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# LOADING: run folders, their results, their labels.
# ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    name: str        # folder name, e.g. "run_3"
    number: int      # 3
    results: dict    # all_results.npy: {dataset}_{seed}_final_info / _train_info / _val_info
    datasets: list   # in final_info.json's order, then any others found in results
    label: str = ""
    total_steps: int = 0  # config.json's (censoring horizon); 0 = the last record's step


def discover_runs(root="."):
    """run_N folders sorted by N (run_10 after run_2); other run_* folders are reported."""
    found = []
    for path in Path(root).glob("run_*"):
        match = re.fullmatch(r"run_(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
        elif path.is_dir():
            warn(f"skipping {path.name}: not named run_<number>")
    return [path for _, path in sorted(found)]


RESULT_KEY, read_file = grokstats.RESULT_KEY, grokstats.read_file  # {dataset}_{seed}_{part}; one-line errors


def load_run(folder):
    """A Run, or ValueError saying in one line why the folder cannot be used."""
    folder = Path(folder)
    final_info = read_file(folder / "final_info.json", lambda p: json.loads(p.read_text()))
    results = read_file(folder / "all_results.npy", lambda p: np.load(p, allow_pickle=True).item())
    if not isinstance(final_info, dict) or not isinstance(results, dict):
        raise ValueError("final_info.json or all_results.npy does not hold a dict")
    in_results = [m["dataset"] for m in map(RESULT_KEY.fullmatch, map(str, results)) if m]
    datasets = [d for d in final_info if d in in_results]
    datasets += [d for d in dict.fromkeys(in_results) if d not in datasets]
    if not datasets:
        raise ValueError("all_results.npy has no {dataset}_{seed}_train_info/val_info keys")
    try:
        total_steps = int(json.loads((folder / "config.json").read_text())["total_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        total_steps = 0
    return Run(folder.name, int(folder.name.split("_")[1]), results, datasets, total_steps=total_steps)


def load_runs(folders):
    runs = []
    for folder in folders:
        try:
            runs.append(load_run(folder))
        except ValueError as e:
            warn(f"skipping {Path(folder).name}: {e}")
    return runs


def notes_labels(path="notes.txt"):
    """{"run_N": "Run N: Title"} from notes.txt's "## Run N: Title" headings (first one wins)."""
    path = Path(path)
    text = path.read_text(errors="replace") if path.is_file() else ""
    found = {}
    for number, title in re.findall(r"^## Run (\d+)\b:?[ \t]*(.*?)[ \t]*$", text, flags=re.M):
        label = f"Run {int(number)}"
        found.setdefault(f"run_{int(number)}", f"{label}: {title}" if title else label)
    return found


def select_runs(runs, labels, only=None, notes="notes.txt"):
    """The runs to plot, labelled: those in `labels` in its order when it is non-empty, else all
    (labels from notes.txt, else the folder name); `only` (--runs) narrows either choice."""
    by_name = {r.name: r for r in runs}
    if labels:
        for name in labels:
            if name not in by_name and (only is None or name in only):
                warn(f"labels names {name}, which is not a readable run folder; left out")
        chosen = [(by_name[n], text) for n, text in labels.items() if n in by_name]
    else:
        from_notes = notes_labels(notes)
        chosen = [(r, from_notes.get(r.name, r.name)) for r in runs]
    selected = []
    for run, text in chosen:
        if only is None or run.name in only:
            run.label = str(text)
            selected.append(run)
    return selected


# ---------------------------------------------------------------------------------------------
# NUMBERS: per-seed curves, their mean +- SE, steps to 99% and final values.
# ---------------------------------------------------------------------------------------------
def as_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def seeds_of(run, dataset):
    """Seeds with curves (train_info or val_info) for this dataset."""
    keys = (RESULT_KEY.fullmatch(str(k)) for k in run.results)
    return sorted({int(m["seed"]) for m in keys
                   if m and m["dataset"] == dataset and m["part"] != "final_info"})


def records(run, dataset, seed, part):
    rows = run.results.get(f"{dataset}_{seed}_{part}")
    return [r for r in rows if isinstance(r, dict) and "step" in r] if isinstance(rows, list) else []


def seed_curves(run, dataset, part, key):
    """[(steps, values)] per seed that has records carrying the key (a key recorded only every
    few records, such as the progress measures, is drawn through the records that carry it); a
    None value is NaN."""
    curves = []
    for seed in seeds_of(run, dataset):
        rows = [r for r in records(run, dataset, seed, part) if key in r]
        if rows:
            curves.append((np.array([as_float(r["step"]) for r in rows]),
                           np.array([as_float(r.get(key)) for r in rows])))
    return curves


def standard_error(values):
    """grokstats.standard_error, with NaN where it has none (a NaN or missing value)."""
    se = grokstats.standard_error(values)
    return math.nan if se is None else se


def mean_se_curve(curves):
    """(steps, mean, se) over seeds at the steps every seed recorded; se is experiment.py's
    standard_error per step (0 for one seed, NaN propagates). Empty arrays if no common step."""
    if not curves:
        return np.array([]), np.array([]), np.array([])
    by_step = [{k: x for k, x in zip(s.tolist(), v.tolist()) if math.isfinite(k)} for s, v in curves]
    common = sorted(set.intersection(*map(set, by_step)))
    table = np.array([[seed[step] for step in common] for seed in by_step])
    table = table.reshape(len(curves), len(common))  # (seeds, steps), also when common is empty
    se = np.array([standard_error(table[:, j]) for j in range(len(common))])
    return np.array(common), table.mean(axis=0), se


def units(run, dataset):
    """Per seed, grokstats' view of the unit: "time"/"observed" (steps to 99% val accuracy,
    censored at the horizon or where it diverged), "grokked", "final_val_acc_tail", "diverged"."""
    found = []
    for seed in seeds_of(run, dataset):
        val, train = records(run, dataset, seed, "val_info"), records(run, dataset, seed, "train_info")
        info = run.results.get(f"{dataset}_{seed}_final_info")
        diverged = bool(isinstance(info, dict) and info.get("diverged"))
        horizon = run.total_steps or (int(as_float(val[-1]["step"])) if val else 0)
        found.append({**grokstats.comparison_unit(train, val, horizon, diverged), "diverged": diverged})
    return found


def grok_summary(run, dataset):
    """grokstats.grok_steps_summary of the run's seeds ("n", "k", KM "median" or None, "text"),
    plus the observed steps and the number of diverged seeds."""
    found = units(run, dataset)
    summary = grokstats.grok_steps_summary([(u["time"], u["observed"]) for u in found])
    return {**summary, "steps": [u["time"] for u in found if u["observed"]],
            "diverged": sum(u["diverged"] for u in found)}


def tail_accuracies(run, dataset):
    """Per seed: mean val accuracy over the last 10% of records (NaN for a diverged seed)."""
    return [as_float(u["final_val_acc_tail"]) for u in units(run, dataset)]


def verdict(run, dataset, baseline):
    """grokstats.compare_to_baseline against run_0, or None (run_0 itself, or no run_0)."""
    if baseline is None or run is baseline or dataset not in baseline.datasets:
        return None
    return grokstats.compare_to_baseline(units(baseline, dataset), units(run, dataset))


FINAL_KEYS = {  # final_info key -> (part, record key) of the last record, used when it is missing
    "final_train_acc": ("train_info", "train_accuracy"),
    "final_val_acc": ("val_info", "val_accuracy"),
    "final_val_loss": ("val_info", "val_loss"),
}


def final_values(run, dataset, key):
    """Per seed: final_info[key], else the last record's value, else NaN."""
    values = []
    for seed in seeds_of(run, dataset):
        info = run.results.get(f"{dataset}_{seed}_final_info")
        value = info.get(key) if isinstance(info, dict) else None
        if value is None:
            rows = records(run, dataset, seed, FINAL_KEYS[key][0])
            value = rows[-1].get(FINAL_KEYS[key][1]) if rows else None
        values.append(as_float(value))
    return values


def mean_se(values):
    return (float(np.mean(values)), standard_error(values)) if values else (math.nan, math.nan)


# ---------------------------------------------------------------------------------------------
# FIGURES: one function per kind of figure; Agg canvases, no pyplot state.
# ---------------------------------------------------------------------------------------------
def save(fig, path):
    FigureCanvasAgg(fig)  # the format (png or pdf) follows the file name
    fig.savefig(path, bbox_inches="tight")


def legend_columns(names, width_in, most):
    """As many columns as fit the figure's width at ~11 characters an inch (11 pt)."""
    return max(1, min(len(names), most, int(width_in * 11 // (max(map(len, names)) + 6))))


def legend_below(ax, handles, run_labels):
    """Below the axes, so it never hides a curve."""
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.17), frameon=False,
              ncol=legend_columns(run_labels, FIGSIZE[0], 2))


def recorded_metrics(runs, dataset):
    """{metric: (part, key, title, y label, log)}: METRICS, DIAGNOSTICS, then every other numeric
    key of the train_info / val_info records (a diagnostic an edited evaluate() returns)."""
    found = {**METRICS, **DIAGNOSTICS}  # a diagnostic with no finite value is left out when drawn
    known = {(part, key) for part, key, *_ in (*METRICS.values(), *DIAGNOSTICS.values(), *BELOW.values())}
    for run in runs:
        for seed in seeds_of(run, dataset):
            for part in ("train_info", "val_info"):
                for row in records(run, dataset, seed, part)[:1] + records(run, dataset, seed, part)[-1:]:
                    for key, value in row.items():
                        numeric = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
                        if key == "step" or not (numeric or value is None) or (part, key) in known:
                            continue
                        known.add((part, key))
                        found[key if key not in found else f"{part}_{key}"] = (
                            part, key, key.replace("_", " ").capitalize(), key, False)
    return found


def draw_runs(ax, runs, dataset, part, key):
    """Each run's mean +- 1 SE of one record key on ax, its median step to 99% marked:
    (legend handles, whether a step was marked, whether some mean is positive)."""
    handles, marked, positive = [], False, False
    for run in runs:
        steps, mean, se = mean_se_curve(seed_curves(run, dataset, part, key))
        if not np.isfinite(mean).any():
            continue
        color, style = run_style(run)
        line, = ax.plot(steps, mean, color=color, linestyle=style, lw=1.6, label=run.label)
        ax.fill_between(steps, mean - se, mean + se, color=color, alpha=0.2, lw=0)
        handles.append(line)
        positive |= bool((mean[np.isfinite(mean)] > 0).any())
        marked |= mark_grok_step(ax, run, dataset, color, style)
    return handles, marked, positive


def plot_curves(runs, dataset, metric, path, always=False, spec=None):
    """One metric against update step: mean over seeds +- 1 SE per run, diamonds at the mean
    step to 99% val accuracy of runs whose seeds all reached it; BELOW's quantity in a second
    panel when some run records it. With nothing finite to draw: False, after writing a figure
    that says so when `always` (the four promised files)."""
    part, key, title, ylabel, log = spec or {**METRICS, **DIAGNOSTICS}[metric]
    below = BELOW.get(metric)
    with rc_context(RC):
        lower = below is not None and any(np.isfinite(mean_se_curve(seed_curves(r, dataset, *below[:2]))[1]).any()
                                          for r in runs)
        fig = Figure(figsize=(FIGSIZE[0], FIGSIZE[1] * 1.7) if lower else FIGSIZE)
        axes = fig.subplots(2 if lower else 1, 1, sharex=True, squeeze=False)[:, 0]
        ax = axes[0]
        handles, marked, positive = draw_runs(ax, runs, dataset, part, key)
        if not handles and always:
            ax.text(0.5, 0.5, "no finite values recorded", transform=ax.transAxes, ha="center")
        if marked:
            handles.append(Line2D([], [], color="k", lw=1.0, label="median step to 99% val. acc. "
                                                                   "(Kaplan-Meier, over seeds)"))
        if log and positive:
            ax.set_yscale("log")  # losses span decades: memorisation, then the grokking drop
            plain_log_labels(ax)
        ax.set(title=f"{title}: {dataset}", xlabel="" if lower else "Update step", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator("auto", steps=[1, 2, 2.5, 5, 10], integer=True))
        ax.grid(alpha=0.3)
        if lower:
            draw_runs(axes[1], runs, dataset, below[0], below[1])
            axes[1].set(xlabel="Update step", ylabel=below[2])
            axes[1].grid(alpha=0.3)
        if handles:
            legend_below(axes[-1], handles, [r.label for r in runs])
        if handles or always:
            save(fig, path)
    return bool(handles)


class PlainLogFormatter(LogFormatter):
    """matplotlib's choice of which log ticks to label, written "0.04" rather than "4x10^-2"."""

    def __call__(self, x, pos=None):
        return f"{x:.3g}" if super().__call__(x, pos) else ""


def plain_log_labels(ax):
    """Over a decade or two the default log labels read "4x10^-2"; plain "0.04" reads better.
    The same tick choice as matplotlib's default, only the text differs."""
    low, high = ax.get_ylim()
    if high / low < 100:
        ax.yaxis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def mark_grok_step(ax, run, dataset, color, style):
    """A vertical line at the run's Kaplan-Meier median step to 99% val accuracy, when at least
    half its seeds reached it (grokstats.grok_steps_summary)."""
    median = grok_summary(run, dataset)["median"]
    if median is None:
        return False
    ax.axvline(median, color=color, linestyle=style, lw=1.0, alpha=0.8, zorder=1)
    return True


def progress_rows(run, dataset):
    """(seed, val_info records carrying the Fourier progress measures) of the run's first seed
    that has them, or (None, [])."""
    for seed in seeds_of(run, dataset):
        rows = [r for r in records(run, dataset, seed, "val_info")
                if isinstance(r.get("fourier_norms"), list) and r["fourier_norms"]]
        if rows:
            return seed, rows
    return None, []


def frequency_strip(fig, ax, steps, norms, keys, title):
    """A heat strip: each frequency's share of the squared norms (rows k = 1 .. K) per record."""
    share = norms ** 2 / (norms ** 2).sum(axis=0, keepdims=True)
    edges = np.concatenate([[0.0], (steps[1:] + steps[:-1]) / 2, [steps[-1]]]) if len(steps) > 1 \
        else np.array([0.0, steps[0]])
    mesh = ax.pcolormesh(edges, np.arange(len(share) + 1) + 0.5, share, cmap="viridis", shading="flat")
    fig.colorbar(mesh, ax=ax, label="share", pad=0.08)
    right = ax.secondary_yaxis("right")
    right.set_yticks(keys, [str(k) for k in keys], fontsize=7)
    ax.set(title=title, ylabel="Frequency k")


def plot_progress_measures(run, dataset, out, ext):
    """For a run with --progress_every, its first seed that has them: fourier_norms_{dataset}_{run}:
    heat strips over training of each frequency k's share of the token embedding's squared norm
    (top) and of the logits' (bottom), the last record's key frequencies ticked on the right;
    progress_measures_{dataset}_{run}: train, test (val), restricted and excluded loss, log scale,
    with the first step above 99% val accuracy, as Nanda et al. (2023)'s Figure 7. [] without."""
    seed, rows = progress_rows(run, dataset)
    if not rows:
        return []
    steps = np.array([as_float(r["step"]) for r in rows])
    keys = [int(k) for k in rows[-1].get("key_frequencies") or []]
    who = f"{run.label}, seed index {seed}"
    paths = [out / f"fourier_norms_{dataset}_{run.name}.{ext}", out / f"progress_measures_{dataset}_{run.name}.{ext}"]
    with rc_context(RC):
        strips = [("fourier_norms", "Token embedding W_E"), ("logit_fourier_norms", "Logits along cos/sin(w_k(a±b))")]
        strips = [(key, title) for key, title in strips if all(isinstance(r.get(key), list) for r in rows)]
        fig = Figure(figsize=(FIGSIZE[0] * 1.4, FIGSIZE[1] * (0.2 + 0.8 * len(strips))))
        axes = fig.subplots(len(strips), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (key, title) in zip(axes, strips):
            norms = np.array([[as_float(v) for v in r[key]] for r in rows]).T  # (K, records)
            frequency_strip(fig, ax, steps, norms, keys, f"{title}: share of the squared norm per frequency")
        axes[-1].set_xlabel("Update step")
        fig.suptitle(f"Fourier spectrum over training: {dataset}, {who}")
        fig.tight_layout()
        save(fig, paths[0])
        fig = Figure(figsize=(FIGSIZE[0] * 1.4, FIGSIZE[1]))
        ax = fig.add_subplot()
        train = records(run, dataset, seed, "train_info")
        val = records(run, dataset, seed, "val_info")
        curves = (("train loss", train, "train_loss", "C0"), ("test (val.) loss", val, "val_loss", "C1"),
                  ("restricted loss", rows, "restricted_loss", "C2"),
                  ("excluded loss", rows, "excluded_loss", "C3"))
        for label, part, key, color in curves:
            x = np.array([as_float(r["step"]) for r in part])
            y = np.array([as_float(r.get(key)) for r in part])
            ax.plot(x, y, color=color, lw=1.4, label=label)
        grok = next((r["step"] for r in val if as_float(r.get("val_accuracy")) > GROK_THRESHOLD), None)
        if grok is not None:
            ax.axvline(grok, color="k", lw=1.0, ls=":", label="first val. acc. > 99%")
        ax.set_yscale("log")
        ax.set(title=f"Progress measures: {dataset}\n{who}", xlabel="Update step", ylabel="Loss")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), frameon=False, ncol=3)
        save(fig, paths[1])
    return paths


EFFECT_ROWS = (("final", "Δ val. acc. vs run_0\n(Hodges-Lehmann)"),
               ("steps", "Δ updates to 99% vs run_0\n(KM median)"))


def plot_summary(runs, datasets, path, baseline=None):
    """Per dataset (columns): val accuracy over the last 10% of records (top, mean +- SE over the
    seeds that did not diverge) and steps to 99% (second: the Kaplan-Meier median as a bar, each
    seed that reached it as a dot, k/n above; "not reached" when the median is not). A "*" marks a
    difference from run_0 at p < 0.05 (Mann-Whitney on the accuracy, log-rank on the steps). With
    run_0 and another run: two more rows, each run's effect against run_0 on those two measures
    with its interval and p-value (`summary_effect`)."""
    effects = baseline is not None and any(r is not baseline for r in runs)
    rows = 2 + (len(EFFECT_ROWS) if effects else 0)
    with rc_context(RC):  # ~2.3 in a column: four datasets still fit a page width at >= 7 pt
        fig = Figure(figsize=(max(FIGSIZE[0], 0.8 + 2.3 * len(datasets)), 2.7 * rows))
        axes = fig.subplots(rows, len(datasets), squeeze=False)
        for col, dataset in enumerate(datasets):
            present = [r for r in runs if dataset in r.datasets]
            summary_accuracy(axes[0, col], present, dataset, baseline)
            summary_steps(axes[1, col], present, dataset, baseline)
            for row, (key, _) in enumerate(EFFECT_ROWS[:rows - 2], start=2):
                summary_effect(axes[row, col], present, dataset, baseline, key)
            axes[0, col].set_title(dataset)
        axes[0, 0].set_ylabel("Val. acc.\n(last 10% of records)")
        axes[1, 0].set_ylabel("Updates to 99% val. acc.\n(KM median)")
        for row, (_, label) in enumerate(EFFECT_ROWS[:rows - 2], start=2):
            axes[row, 0].set_ylabel(label)
        fig.tight_layout()
        handles = [Patch(color=run_style(r)[0], label=r.label) for r in runs]
        if effects:
            handles.append(Line2D([], [], ls="none", marker="$*$", color="k", ms=9,
                                  label="differs from run_0, p < 0.05"))
            handles.append(Line2D([], [], color="k", lw=2.5, marker="o", ms=5,
                                  label="effect, 95% CI unless marked lower (arrow: open-ended)"))
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False,
                   ncol=legend_columns([h.get_label() for h in handles], fig.get_figwidth(), len(handles)))
        save(fig, path)


def summary_effect(ax, runs, dataset, baseline, key):
    """Each run but run_0: its effect against run_0 on one measure of grokstats.compare_to_baseline
    (estimate as a dot, interval as a bar in the run's colour, an open end as an arrow to the
    data's edge), its p-value written above (with the interval's level when it is below 95%);
    "not testable" and nothing drawn when the test was not possible."""
    entries = {x: found[key] for x, found in
               ((x, verdict(run, dataset, baseline)) for x, run in enumerate(runs)) if found}
    tested = {x: e for x, e in entries.items() if e["p"] is not None}
    values = [v for e in tested.values() for v in [e["estimate"], *(e["ci"] or [])] if v is not None]
    low, high = min(values + [0.0]), max(values + [0.0])
    pad = 0.08 * (high - low or 1.0)
    bottom, top = low - pad, high + pad
    ax.axhline(0, color="k", lw=0.8, alpha=0.6)
    for x, entry in tested.items():
        color, ci = run_style(runs[x])[0], entry["ci"]
        if ci:
            ax.plot([x, x], [bottom if ci[0] is None else ci[0], top if ci[1] is None else ci[1]],
                    color=color, lw=2.5, solid_capstyle="butt")
            for end, marker, is_open in ((bottom, "v", ci[0] is None), (top, "^", ci[1] is None)):
                if is_open:
                    ax.plot(x, end, marker=marker, color=color, ms=7)
        if entry["estimate"] is not None:
            ax.plot(x, entry["estimate"], "o", color="k", ms=5, zorder=4)
    for x, entry in entries.items():
        label = "not testable" if entry["p"] is None else grokstats.format_p(entry["p"])
        if entry["p"] is not None and entry["ci"] and grokstats.below_nominal(entry["ci_level"]):
            label += f"\n{grokstats.format_level(entry['ci_level'])} CI"
        ax.text(x, 0.97, label, transform=ax.get_xaxis_transform(), rotation=90, ha="center",
                va="top", fontsize=8)
    for x, run in enumerate(runs):
        if run is baseline:
            ax.text(x, 0.5, "baseline", transform=ax.get_xaxis_transform(), rotation=90,
                    ha="center", va="center", fontsize=9, color="0.4")
    summary_axis(ax, runs)
    ax.set_ylim(bottom, bottom + (top - bottom) / 0.6)  # the top 40% holds the p-values


def summary_axis(ax, runs):
    ax.set_xticks(range(len(runs)), [r.name for r in runs], rotation=45 if len(runs) > 3 else 0)
    half = max(len(runs), 2) / 2  # a lone bar stays bar-sized rather than filling the panel
    ax.set_xlim((len(runs) - 1) / 2 - half, (len(runs) - 1) / 2 + half)
    ax.grid(axis="y", alpha=0.3)


def significant(run, dataset, baseline, test):
    found = verdict(run, dataset, baseline)
    p = found[test]["p"] if found else None
    return p is not None and p < grokstats.ALPHA


def summary_accuracy(ax, runs, dataset, baseline=None):
    for x, run in enumerate(runs):
        values = tail_accuracies(run, dataset)
        finite = [v for v in values if math.isfinite(v)]
        mean, se = mean_se(finite)
        if finite:
            ax.bar(x, mean, yerr=se, color=run_style(run)[0], capsize=4)
        diverged = len(values) - len(finite)
        if diverged:
            ax.text(x, 0.03, f"diverged {diverged}/{len(values)}", transform=ax.get_xaxis_transform(),
                    rotation=90, ha="center", va="bottom", fontsize=10)
        if significant(run, dataset, baseline, "final"):
            ax.text(x, min(mean + se, 1.0) + 0.01, "*", ha="center", va="bottom", fontsize=14)
    summary_axis(ax, runs)
    ax.set_ylim(0, 1.12)


def summary_steps(ax, runs, dataset, baseline=None):
    top = 0.0
    for x, run in enumerate(runs):
        grok, color = grok_summary(run, dataset), run_style(run)[0]
        label = f"{grok['k']}/{grok['n']}" + (f", diverged {grok['diverged']}" if grok["diverged"] else "")
        star = "*" if significant(run, dataset, baseline, "steps") else ""
        if grok["median"] is None:  # fewer than half reached it: no median to draw
            ax.text(x, 0.03, f"not reached ({label}){star}", transform=ax.get_xaxis_transform(),
                    rotation=90, ha="center", va="bottom", fontsize=10)
        else:
            ax.bar(x, grok["median"], color=color, alpha=0.8, edgecolor=color, lw=1.5)
        if grok["steps"]:
            ax.plot([x] * len(grok["steps"]), grok["steps"], "o", color="k", ms=3.5, zorder=4)
        height = max([grok["median"] or 0, *grok["steps"]])
        if grok["median"] is not None:
            ax.annotate(label + star, (x, height), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=10)
        top = max(top, height)
    summary_axis(ax, runs)
    ax.set_ylim(0, top * 1.2 if top > 0 else 1)
    if top == 0:
        ax.set_yticks([])


# ---------------------------------------------------------------------------------------------
# TABLES: results.md and results.tex, one row per (dataset, run).
# ---------------------------------------------------------------------------------------------
def table_rows(runs, datasets, baseline=None):
    """[(dataset, label, {column: (mean, se)}, grok, verdict)] in dataset, then run order."""
    rows = []
    for dataset in datasets:
        for run in runs:
            if dataset in run.datasets:
                values = {k: mean_se([v for v in final_values(run, dataset, k) if math.isfinite(v)])
                          for k in FINAL_KEYS}
                values["tail"] = mean_se([v for v in tail_accuracies(run, dataset) if math.isfinite(v)])
                rows.append((dataset, run.label, values, grok_summary(run, dataset),
                             verdict(run, dataset, baseline)))
    return rows


def fmt(mean, se, digits=None):
    """"mean ± se" with `digits` decimals; None = 3 significant digits of the mean and the same
    decimals for se (losses span decades), scientific notation outside [0.001, 10000)."""
    if not math.isfinite(mean):
        return "nan"  # SE of NaN values means nothing
    if digits is None:
        if not mean:
            digits = 3
        elif not 1e-3 <= abs(mean) < 1e4:  # one shared exponent: "(6.67 ± 0.12)e-04"
            power = math.floor(math.log10(abs(mean)))
            return f"({mean / 10**power:.2f} ± {se / 10**power:.2f})e{power:+03d}"
        else:
            digits = max(0, 2 - math.floor(math.log10(abs(mean))))
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def step_cell(grok):
    return "not reached" if grok["median"] is None else f"{grok['median']:.0f}"


def verdict_cell(found):
    """Short form of the log-rank verdict on steps to 99%: "earlier, p = 0.03", "n.s., p = 0.40"."""
    if not found:
        return "-"
    test = found["steps"]
    if test["p"] is None:
        return "not testable"
    if test["p"] >= grokstats.ALPHA:
        return f"n.s., {grokstats.format_p(test['p'])}"
    return f"{'earlier' if 'earlier' in test['verdict'] else 'later'}, {grokstats.format_p(test['p'])}"


def effect_cell(found):
    """The difference in KM median steps to 99%, run - run_0, with its bootstrap interval:
    "-340 [-910, +120]", an open end ∞; "-" for run_0 or when not testable."""
    if not found or found["steps"]["p"] is None:
        return "-"
    return grokstats.format_effect("steps", found["steps"], compact=True)


COLUMNS = ("Final train acc.", "Final val. acc.", "Val. acc. (last 10%)", "Final val. loss",
           "Steps to 99% (KM median)", "Grokked (k/n)", "Diverged (k/n)", "Steps vs run_0",
           "Δ steps [95% CI]")
TABLE_NOTE = ("Mean ± standard error over the seeds that did not diverge (sample std, ddof=1, / "
              "sqrt(n)). Val. acc. (last 10%): mean over the last 10% of records, robust to a loss "
              "spike at the last one. Steps to 99%: the Kaplan-Meier median of the first update with "
              "val. accuracy > 0.99, seeds that never reached it censored at the horizon; \"not "
              "reached\" when fewer than half did. Steps vs run_0: log-rank test, p < 0.05 needed "
              "to call a difference. Δ steps: KM median of the run - KM median of run_0 with a "
              "percentile bootstrap interval over seeds; ∞: open-ended, a resample's median was not "
              "reached; \"undefined\": a median was not reached. Below each table: every verdict "
              "with its effect and interval (docs/campaigns.md defines them).")


def cells(row):
    _, _, values, grok, found = row
    return [fmt(*values["final_train_acc"], 3), fmt(*values["final_val_acc"], 3), fmt(*values["tail"], 3),
            fmt(*values["final_val_loss"]), step_cell(grok), f"{grok['k']}/{grok['n']}",
            f"{grok['diverged']}/{grok['n']}", verdict_cell(found), effect_cell(found)]


def markdown_table(rows):
    lines = ["# Results", "", TABLE_NOTE]
    for dataset in dict.fromkeys(r[0] for r in rows):
        lines += ["", f"## {dataset}", "", "| Run | " + " | ".join(COLUMNS) + " |",
                  "|" + "---|" * (len(COLUMNS) + 1)]
        mine = [r for r in rows if r[0] == dataset]
        for row in mine:
            lines.append("| " + " | ".join([row[1].replace("|", "\\|")] + cells(row)) + " |")
        verdicts = [f"- {row[1]}: {row[4]['text']}" for row in mine if row[4]]
        lines += ["", *verdicts] if verdicts else []
    return "\n".join(lines) + "\n"


def tex_escape(text):
    specials = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "<": r"$<$", ">": r"$>$", "|": r"$|$",  # OT1 text fonts lack < > |
                "∞": r"$\infty$", "Δ": r"$\Delta$", "−": "-"}
    return "".join(specials.get(c, c) for c in text)


def tex_cell(text):
    """Escape, then typeset ± and the exponent of 1.2e-05 or (1.2 ± 0.1)e-05 as math (plain
    LaTeX, no packages)."""
    text = tex_escape(text).replace("±", r"$\pm$")
    return re.sub(r"(?<=[\d)])e([+-])0*(\d+)",
                  lambda m: f"$\\times10^{{{'-' if m[1] == '-' else ''}{m[2]}}}$", text)


def tex_stack(*lines):
    """Lines stacked in one cell as wide as the widest (a nested tabular: no package needed)."""
    return "\\begin{tabular}[t]{@{}c@{}}" + " \\\\ ".join(lines) + "\\end{tabular}"


TEX_COLUMNS = ("Val. acc.", "Val. loss", "Steps to 99\\%", "$k/n$", "Div.",
               tex_stack("vs run\\_0", "$\\Delta$ [95\\% CI]"))
TEX_CAPTION = ("Validation accuracy (mean over the last 10\\% of records) and final validation loss: "
               "mean $\\pm$ standard error over the seeds that did not diverge ($s/\\sqrt{n}$, $s$ the "
               "sample standard deviation). Steps to 99\\%: Kaplan-Meier median of the first update "
               "with validation accuracy $>0.99$ (seeds that never reached it censored at the horizon); "
               "$k/n$ seeds reached it; Div.: seeds whose loss became non-finite; vs run\\_0: log-rank "
               "test against the baseline (n.s.: $p \\geq 0.05$), and under it $\\Delta$: the run's "
               "Kaplan-Meier median minus the baseline's, with a 95\\% percentile bootstrap interval over "
               "seeds ($\\infty$: open-ended, a resampled median was not reached; undefined: a median "
               "was not reached).")


def tex_cells(row):
    _, _, values, grok, found = row
    return [fmt(*values["tail"], 3), fmt(*values["final_val_loss"]), step_cell(grok),
            f"{grok['k']}/{grok['n']}", f"{grok['diverged']}/{grok['n']}", verdict_cell(found)]


def latex_table(rows):
    """A table float for \\input{results.tex} in a plain article: tabular and \\hline only (no
    booktabs, no array package), a row per dataset as a sub-heading, run labels wrapped in a
    ragged p column (\\tabularnewline, because \\raggedright redefines \\\\)."""
    end = " \\tabularnewline"
    lines = ["% Written by plot.py. Use: \\input{results.tex} (no packages needed).",
             "\\begin{table}[t]", "\\centering", "\\footnotesize", "\\setlength{\\tabcolsep}{3pt}",
             "\\caption{" + TEX_CAPTION + "}", "\\label{tab:results}", "\\vspace{4pt}",
             "\\begin{tabular}{p{2.6cm}" + "c" * len(TEX_COLUMNS) + "}", "\\hline",
             " & ".join(["Run"] + list(TEX_COLUMNS)) + end]
    for dataset in dict.fromkeys(r[0] for r in rows):
        heading = f"\\multicolumn{{{len(TEX_COLUMNS) + 1}}}{{l}}{{\\textit{{{tex_cell(dataset)}}}}}"
        lines += ["\\hline", heading + end]
        for row in (r for r in rows if r[0] == dataset):
            values = ["\\raggedright " + tex_cell(row[1])] + [tex_cell(c) for c in tex_cells(row)]
            if row[4]:  # the effect under the verdict: a column of its own overfills the page
                values[-1] = tex_stack(values[-1], tex_cell(effect_cell(row[4])))
            lines.append(" & ".join(values) + end)
    lines += ["\\hline", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# MAIN
# ---------------------------------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv, found):
    parser = OneLineParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False)
    parser.add_argument("--runs", default="", help="comma-separated run folders, e.g. run_0,run_3; "
                                                   "empty = all (or those in labels)")
    parser.add_argument("--out_dir", default=".", help="folder for the figures and tables")
    parser.add_argument("--format", default="png", choices=("png", "pdf"), help="figure format")
    args = parser.parse_args(argv)
    args.only = [r for r in args.runs.split(",") if r] or None
    if args.runs and not args.only:
        parser.error(f"--runs={args.runs!r} names no run; expected e.g. run_0,run_3")
    for name in args.only or []:
        if name not in found and Path(name).is_dir():
            parser.error(f"--runs: {name!r} is not named run_<number>, so plot.py does not read it; "
                         f"rename it (found: {','.join(found) or 'none'})")
        if name not in found:
            parser.error(f"--runs: no folder {name!r}; found: {','.join(found) or 'none'}")
    if Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        parser.error(f"--out_dir={args.out_dir!r} is a file, not a folder")
    return args


def write_figures(runs, datasets, out, ext):
    written = []
    for dataset in datasets:
        present = [r for r in runs if dataset in r.datasets]
        for run in present:
            written += plot_progress_measures(run, dataset, out, ext)
        for metric, spec in recorded_metrics(present, dataset).items():
            path = out / f"{metric}_{dataset}.{ext}"
            drawn = plot_curves(present, dataset, metric, path, always=metric in METRICS, spec=spec)
            if not drawn and metric in METRICS:
                warn(f"no finite {metric} values for {dataset}; {path.name} is empty")
            if drawn or metric in METRICS:
                written.append(path)
    baseline = next((r for r in runs if r.number == 0), None)
    plot_summary(runs, datasets, out / f"summary_plot.{ext}", baseline)
    return written + [out / f"summary_plot.{ext}"]


def main(argv=None):
    folders = discover_runs(".")
    args = parse_args(sys.argv[1:] if argv is None else argv, [f.name for f in folders])
    if args.only:
        folders = [f for f in folders if f.name in args.only]
    runs = select_runs(load_runs(folders), labels, args.only)
    if not runs:
        among = " among plot.py's labels" if labels else ""
        print(f"error: no readable run to plot in {Path.cwd()}{among} (a run_N folder needs "
              "final_info.json and all_results.npy)", file=sys.stderr)
        sys.exit(1)
    datasets = list(dict.fromkeys(d for r in runs for d in r.datasets))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print("runs: " + ", ".join(r.name for r in runs))
    written = write_figures(runs, datasets, out, args.format)
    rows = table_rows(runs, datasets, next((r for r in runs if r.number == 0), None))
    (out / "results.md").write_text(markdown_table(rows))
    (out / "results.tex").write_text(latex_table(rows))
    for path in written + [out / "results.md", out / "results.tex"]:
        print(f"wrote: {path}")


if __name__ == "__main__":
    main()
