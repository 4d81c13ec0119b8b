"""The first look at Power et al.'s task set: steps to 99% validation accuracy per task and seed,
from the unit files of studies/tasks_first_look/seed_*/ (finished units only: n counts them), the
k/n grokked and Kaplan-Meier median of each task (grokstats), beside the default run's tasks in
run_0, and one figure.

    python studies/tasks_first_look/summarise.py     # writes summary.md and steps_to_grok.png here
"""
import json
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
import grokstats  # noqa: E402
import tasks  # noqa: E402

HORIZON = 7500
# Power et al. (2022), Figure 4, as we read it (not checked against the paper in this project):
# every one of these operations generalised within their budget (10^5 updates) at some training
# fraction, except the two non-symmetric polynomials x^2 + xy + y^2 + x and x^3 + xy^2 + y.
NEVER_IN_POWER = {"x2_plus_xy_plus_y2_plus_x", "x3_plus_xy2_plus_y"}
POWER = {name: "did not generalise" if name in NEVER_IN_POWER else "generalised" for name in tasks.names()}


def units(folders):
    """{task: [unit file dicts]} of every finished unit under folders."""
    found = {}
    for folder in folders:
        for path in sorted((folder / "units").glob("*.json")):
            unit = json.loads(path.read_text())
            found.setdefault(unit["dataset"], []).append(unit)
    return found


def grok(unit):
    return grokstats.grok_time(unit["val_info"], unit["config"]["total_steps"],
                               unit["final_info"].get("diverged", False))


def table(found):
    rows = ["| task | definition | seeds: steps to 99% val acc | k/n grokked, KM median | final val acc (mean) "
            "| unit wall time (min) | Power et al. (our reading) |", "|---|---|---|---|---|---|---|"]
    for name in [t for t in tasks.names() if t in found]:
        us = sorted(found[name], key=lambda u: u["seed"])
        times = [grok(u) for u in us]
        seeds = ", ".join(f"{u['seed']}: {t}" if o else f"{u['seed']}: never ({t})" for u, (t, o) in zip(us, times))
        finals = [u["final_info"]["final_val_acc"] for u in us]
        mean_final = sum(f for f in finals if f is not None) / max(1, sum(f is not None for f in finals))
        walls = ", ".join(f"{u['wall_time_s'] / 60:.1f}" for u in us)
        rows.append(f"| `{name}` | {tasks.describe(name)} | {seeds} | {grokstats.grok_steps_summary(times)['text']} "
                    f"| {mean_final:.3f} | {walls} | {POWER.get(name, '-')} |")
    return "\n".join(rows)


def figure(found, path):
    names = [t for t in tasks.names() if t in found]
    fig = Figure(figsize=(9, 0.45 * len(names) + 1.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, name in enumerate(names):
        times = [grok(u) for u in found[name]]
        grokked = [t for t, o in times if o]
        never = [t for t, o in times if not o]
        ax.scatter(grokked, [i] * len(grokked), color="tab:blue", zorder=3,
                   label="a seed's step to 99% val acc" if i == 0 else None)
        ax.scatter(never, [i] * len(never), marker=">", facecolors="none", edgecolors="tab:red", zorder=3,
                   label="never within 7500 updates" if i == 0 else None)
        median = grokstats.grok_steps_summary(times)["median"]
        if median is not None:
            ax.plot([median, median], [i - 0.3, i + 0.3], color="black", lw=2,
                    label="Kaplan-Meier median" if i == 0 else None)
        k = sum(o for _, o in times)
        ax.text(HORIZON * 1.03, i, f"{k}/{len(times)}   Power et al.: {POWER.get(name, '-')}", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), labels=names, fontsize=8)
    ax.set_xlim(0, HORIZON * 1.02)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.axvline(HORIZON, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("updates to 99% validation accuracy (default model, batch 512, 50% split)")
    ax.set_title("Steps to grok per task: 3 seeds, 7500 updates", fontsize=10)
    ax.legend(loc="lower left", fontsize=7, bbox_to_anchor=(0, 1.06), ncol=3, frameon=False)
    fig.subplots_adjust(left=0.3, right=0.62, top=0.82, bottom=0.12)
    fig.savefig(path, dpi=120)


def main():
    folders = sorted(HERE.glob("seed_*")) + [ROOT / "run_0"]
    found = units(folders)
    walls = {f.name: json.loads((f / "run_info.json").read_text())["wall_time_s"]
             for f in folders[:-1] if (f / "run_info.json").exists()}
    figure(found, HERE / "steps_to_grok.png")
    text = ["# First look at the task set", "",
            "Every task at the default model and budget (7500 updates, batch 512, 50% split, AdamW "
            "lr 1e-3, weight decay 0.5), seeds 1337-1339, with the default run's four tasks from "
            "run_0 beside them. n counts finished units. Made by `bash run.sh` (one run folder per "
            "seed) and `python summarise.py`.", "",
            "Power et al. trained 10^5 updates and varied the training fraction; here every task gets "
            "the baseline's 7500 updates at a 50% split, so a task that never reaches 99% here may "
            "still grok later or with more data: 'never' is censored at 7500 updates, not a verdict "
            "on the task. Their column is our reading of their Figure 4, not checked against the "
            "paper in this project.", "", table(found), "",
            "Run wall times (2 workers on the 2-core CPU, compiled): " +
            (", ".join(f"{k} {v / 60:.0f} min" for k, v in walls.items()) or "none finished yet") + ".", "",
            "![steps to grok](steps_to_grok.png)", ""]
    (HERE / "summary.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
