"""
plot.py: figures and tables for every finished run_* folder in the current (project) folder.

    python plot.py                                          # all runs, outputs here
    python plot.py --runs=run_0,run_3 --out_dir=figures --format=pdf

Per dataset: train_loss_{d}, val_loss_{d}, train_acc_{d}, val_acc_{d} (+ weight_norm_{d} and
softmax_collapse_{d} when val_info records them): one line per run = mean over seeds, band =
+-1 standard error (grokstats.standard_error per step), a diamond at the run's mean step to 99%
val accuracy when every seed reached it. summary_plot: final val accuracy and steps to 99% per run
and dataset. results.md / results.tex: the same numbers as tables (\\input{results.tex} in a paper).

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
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",  # matplotlib tab10 ...
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
           "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e",  # ... then ColorBrewer Dark2
           "#e6ab02", "#a6761d", "#666666")
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


def run_style(run):
    cycle, index = divmod(run.number, len(PALETTE))
    return PALETTE[index], LINESTYLES[cycle % len(LINESTYLES)]


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


RESULT_KEY = re.compile(r"(?P<dataset>.+)_(?P<seed>\d+)_(?P<part>final_info|train_info|val_info)")


def read_file(path, read):
    """read(path), or ValueError naming the file and why it cannot be read."""
    if not path.is_file():
        raise ValueError(f"no {path.name}")
    try:
        return read(path)
    except Exception as e:  # truncated, garbage or foreign files all mean "not a finished run"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{path.name} is unreadable ({type(e).__name__}: {reason[:120]})")


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
    return Run(folder.name, int(folder.name.split("_")[1]), results, datasets)


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
            if name not in by_name:
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
    """[(steps, values)] per seed that has records; a missing value is NaN."""
    curves = []
    for seed in seeds_of(run, dataset):
        rows = records(run, dataset, seed, part)
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


def grok_steps(run, dataset):
    """Per seed: the first step with val_accuracy > 0.99, or None when the seed never reached it.
    (final_info's step_val_acc_99 is total_steps when not reached, so it cannot tell.)"""
    steps = []
    for seed in seeds_of(run, dataset):
        hits = [as_float(r["step"]) for r in records(run, dataset, seed, "val_info")
                if as_float(r.get("val_accuracy")) > GROK_THRESHOLD]
        steps.append(hits[0] if hits else None)
    return steps


def grok_summary(run, dataset):
    """{"k", "n", "mean", "se"}: mean +- SE of the step to 99% over the k of n seeds that reached it."""
    steps = grok_steps(run, dataset)
    reached = [s for s in steps if s is not None]
    return {"k": len(reached), "n": len(steps), "mean": float(np.mean(reached)) if reached else math.nan,
            "se": standard_error(reached) if reached else math.nan}


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
    known = {(part, key) for part, key, *_ in (*METRICS.values(), *DIAGNOSTICS.values())}
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


def plot_curves(runs, dataset, metric, path, always=False, spec=None):
    """One metric against update step: mean over seeds +- 1 SE per run, diamonds at the mean
    step to 99% val accuracy of runs whose seeds all reached it. With nothing finite to draw:
    False, after writing a figure that says so when `always` (the four promised files)."""
    part, key, title, ylabel, log = spec or {**METRICS, **DIAGNOSTICS}[metric]
    with rc_context(RC):
        fig = Figure(figsize=FIGSIZE)
        ax = fig.add_subplot()
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
            marked |= mark_grok_step(ax, run, dataset, steps, mean, color)
        if not handles and always:
            ax.text(0.5, 0.5, "no finite values recorded", transform=ax.transAxes, ha="center")
        if marked:
            handles.append(Line2D([], [], marker="D", color="k", ls="none", mfc="w",
                                  label="mean step to 99% val. acc. (all seeds)"))
        if log and positive:
            ax.set_yscale("log")  # losses span decades: memorisation, then the grokking drop
            plain_log_labels(ax)
        ax.set(title=f"{title}: {dataset}", xlabel="Update step", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator("auto", steps=[1, 2, 2.5, 5, 10], integer=True))
        ax.grid(alpha=0.3)
        if handles:
            legend_below(ax, handles, [r.label for r in runs])
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


def mark_grok_step(ax, run, dataset, steps, mean, color):
    """Diamond on the run's curve at its mean step to 99%, only when every seed reached it."""
    grok = grok_summary(run, dataset)
    finite = np.isfinite(mean)
    if grok["n"] == 0 or grok["k"] < grok["n"] or not finite.any():
        return False
    y = np.interp(grok["mean"], steps[finite], mean[finite])
    ax.plot([grok["mean"]], [y], marker="D", ms=8, color=color, mec="k", mew=1.0, zorder=5)
    return True


def plot_summary(runs, datasets, path):
    """Per dataset (columns): final val accuracy (top) and steps to 99% (bottom), mean +- SE;
    a run whose seeds did not all reach 99% is hatched (some) or marked "not reached" (none)."""
    with rc_context(RC):  # ~2.3 in a column: four datasets still fit a page width at >= 7 pt
        fig = Figure(figsize=(max(FIGSIZE[0], 0.8 + 2.3 * len(datasets)), 5.2))
        axes = fig.subplots(2, len(datasets), squeeze=False)
        for col, dataset in enumerate(datasets):
            present = [r for r in runs if dataset in r.datasets]
            summary_accuracy(axes[0, col], present, dataset)
            summary_steps(axes[1, col], present, dataset)
            axes[0, col].set_title(dataset)
        axes[0, 0].set_ylabel("Final val. accuracy")
        axes[1, 0].set_ylabel("Updates to 99% val. acc.")
        fig.tight_layout()
        fig.legend(handles=[Patch(color=run_style(r)[0], label=r.label) for r in runs],
                   loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False,
                   ncol=legend_columns([r.label for r in runs], fig.get_figwidth(), len(runs)))
        save(fig, path)


def summary_axis(ax, runs):
    ax.set_xticks(range(len(runs)), [r.name for r in runs], rotation=45 if len(runs) > 3 else 0)
    half = max(len(runs), 2) / 2  # a lone bar stays bar-sized rather than filling the panel
    ax.set_xlim((len(runs) - 1) / 2 - half, (len(runs) - 1) / 2 + half)
    ax.grid(axis="y", alpha=0.3)


def summary_accuracy(ax, runs, dataset):
    for x, run in enumerate(runs):
        mean, se = mean_se(final_values(run, dataset, "final_val_acc"))
        ax.bar(x, mean, yerr=se, color=run_style(run)[0], capsize=4)
    summary_axis(ax, runs)
    ax.set_ylim(0, 1.05)


def summary_steps(ax, runs, dataset):
    top = 0.0
    for x, run in enumerate(runs):
        grok, color = grok_summary(run, dataset), run_style(run)[0]
        count = f"{grok['k']}/{grok['n']}"
        if grok["k"] == 0:  # nothing to average: say so instead of drawing the step budget
            ax.text(x, 0.03, f"not reached ({count})", transform=ax.get_xaxis_transform(),
                    rotation=90, ha="center", va="bottom", fontsize=11)
            continue
        full = grok["k"] == grok["n"]
        ax.bar(x, grok["mean"], yerr=grok["se"], capsize=4, color=color if full else "none",
               edgecolor=color, hatch=None if full else "//", lw=1.5)
        ax.annotate(count, (x, grok["mean"] + grok["se"]), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=11)
        top = max(top, grok["mean"] + grok["se"])
    summary_axis(ax, runs)
    ax.set_ylim(0, top * 1.18 if top > 0 else 1)
    if top == 0:
        ax.set_yticks([])


# ---------------------------------------------------------------------------------------------
# TABLES: results.md and results.tex, one row per (dataset, run).
# ---------------------------------------------------------------------------------------------
def table_rows(runs, datasets):
    """[(dataset, label, {column: (mean, se)}, grok)] in dataset, then run order."""
    rows = []
    for dataset in datasets:
        for run in runs:
            if dataset in run.datasets:
                values = {k: mean_se(final_values(run, dataset, k)) for k in FINAL_KEYS}
                rows.append((dataset, run.label, values, grok_summary(run, dataset)))
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
    if grok["k"] == 0:
        return "not reached"
    return fmt(grok["mean"], grok["se"], 0)


COLUMNS = ("Final train acc.", "Final val. acc.", "Final val. loss", "Steps to 99% val. acc.",
           "Reached (k/n)")
TABLE_NOTE = ("Mean ± standard error over seeds (sample std, ddof=1, / sqrt(n)). Steps to 99%: first "
              "update step with val. accuracy > 0.99, averaged over the k of n seeds that reached it.")


def cells(row):
    _, _, values, grok = row
    return [fmt(*values["final_train_acc"], 3), fmt(*values["final_val_acc"], 3),
            fmt(*values["final_val_loss"]), step_cell(grok), f"{grok['k']}/{grok['n']}"]


def markdown_table(rows):
    lines = ["# Results", "", TABLE_NOTE]
    for dataset in dict.fromkeys(r[0] for r in rows):
        lines += ["", f"## {dataset}", "", "| Run | " + " | ".join(COLUMNS) + " |",
                  "|" + "---|" * (len(COLUMNS) + 1)]
        for row in (r for r in rows if r[0] == dataset):
            lines.append("| " + " | ".join([row[1].replace("|", "\\|")] + cells(row)) + " |")
    return "\n".join(lines) + "\n"


def tex_escape(text):
    specials = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "<": r"$<$", ">": r"$>$", "|": r"$|$"}  # OT1 text fonts lack < > |
    return "".join(specials.get(c, c) for c in text)


def tex_cell(text):
    """Escape, then typeset ± and the exponent of 1.2e-05 or (1.2 ± 0.1)e-05 as math (plain
    LaTeX, no packages)."""
    text = tex_escape(text).replace("±", r"$\pm$")
    return re.sub(r"(?<=[\d)])e([+-])0*(\d+)",
                  lambda m: f"$\\times10^{{{'-' if m[1] == '-' else ''}{m[2]}}}$", text)


TEX_COLUMNS = ("Train acc.", "Val. acc.", "Val. loss", "Steps to 99\\%", "$k/n$")  # short: fits a column
TEX_CAPTION = ("Final training and validation accuracy, final validation loss and updates to 99\\% "
               "validation accuracy: mean $\\pm$ standard error over seeds ($s/\\sqrt{n}$, $s$ the sample "
               "standard deviation); steps to 99\\% are the first update with validation accuracy "
               "$>0.99$, averaged over the $k$ of $n$ seeds that reached it.")


def latex_table(rows):
    """A table float for \\input{results.tex} in a plain article: tabular and \\hline only (no
    booktabs, no array package), a row per dataset as a sub-heading, run labels wrapped in a
    ragged p column (\\tabularnewline, because \\raggedright redefines \\\\)."""
    end = " \\tabularnewline"
    lines = ["% Written by plot.py. Use: \\input{results.tex} (no packages needed).",
             "\\begin{table}[t]", "\\centering", "\\footnotesize", "\\setlength{\\tabcolsep}{4pt}",
             "\\caption{" + TEX_CAPTION + "}", "\\label{tab:results}", "\\vspace{4pt}",
             "\\begin{tabular}{p{2.6cm}" + "c" * len(TEX_COLUMNS) + "}", "\\hline",
             " & ".join(["Run"] + list(TEX_COLUMNS)) + end]
    for dataset in dict.fromkeys(r[0] for r in rows):
        heading = f"\\multicolumn{{{len(TEX_COLUMNS) + 1}}}{{l}}{{\\textit{{{tex_cell(dataset)}}}}}"
        lines += ["\\hline", heading + end]
        for row in (r for r in rows if r[0] == dataset):
            values = ["\\raggedright " + tex_cell(row[1])] + [tex_cell(c) for c in cells(row)]
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
        if name not in found:
            parser.error(f"--runs: no folder {name!r}; found: {','.join(found) or 'none'}")
    if Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        parser.error(f"--out_dir={args.out_dir!r} is a file, not a folder")
    return args


def write_figures(runs, datasets, out, ext):
    written = []
    for dataset in datasets:
        present = [r for r in runs if dataset in r.datasets]
        for metric, spec in recorded_metrics(present, dataset).items():
            path = out / f"{metric}_{dataset}.{ext}"
            drawn = plot_curves(present, dataset, metric, path, always=metric in METRICS, spec=spec)
            if not drawn and metric in METRICS:
                warn(f"no finite {metric} values for {dataset}; {path.name} is empty")
            if drawn or metric in METRICS:
                written.append(path)
    plot_summary(runs, datasets, out / f"summary_plot.{ext}")
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
    rows = table_rows(runs, datasets)
    (out / "results.md").write_text(markdown_table(rows))
    (out / "results.tex").write_text(latex_table(rows))
    for path in written + [out / "results.md", out / "results.tex"]:
        print(f"wrote: {path}")


if __name__ == "__main__":
    main()
