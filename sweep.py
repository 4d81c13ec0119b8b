"""
sweep.py: a grid of experiment.py runs, each grid point a normal run folder, trained here or on
Slurm; and the sweep's phase diagram.

    python sweep.py --out_dir=sweeps/wd_frac --grid train_frac=0.3,0.4,0.5 \\
        --grid weight_decay=0.1,0.3,1.0 --datasets=x_plus_y --num_seeds=3      # 9 points, 27 units
    python sweep.py ...the same... --launcher=slurm --slurm_partition=gpu     # the units on Slurm
    python sweep.py --out_dir=sweeps/wd_frac --plot       # phase_<dataset>.png of the finished points

Grid: one `--grid KEY=V1,V2,...` per knob, KEY a Config field of experiment.py, values separated by
commas, or by semicolons when a value holds commas (--grid "lr_groups=1e-3,1e-3,1e-3;8e-4,2e-3,3e-3").
The points are the Cartesian product, the last knob varying fastest. Point i (from 1) is the run
folder out_dir/run_i with the unchanged output contract, so plot.py run inside out_dir and the
AI-Scientist tools read it as any run; its "## Run i" section of out_dir/notes.txt is titled with
its overrides (after --description, if given). Every other option is experiment.py's (python
experiment.py --help) and applies to every point.

out_dir/sweep.json (strict JSON): {"grid": {knob: [values]}, "fixed": {option: value} (the other
options given, except those a --resume may change), "points": [{"name": "run_i", "folder": "run_i"
(relative to out_dir), "overrides": {knob: value}}]}.

Checked before anything is written (else one line on stderr, exit 2): the grid, every point's
configuration (options.parse), every unfinished point's folder (run_dir.check_out_dir), and that
out_dir holds this sweep or none. Rerunning the same command resumes: points with final_info.json
are skipped, the others train only their missing units. --overwrite starts every point again.

--launcher=slurm: every point's missing units go to Slurm as one job array (launch_slurm.launch),
then the points are collected one after another (waiting, resubmitting failed units up to
--retries) and written. With --slurm_wait=false the command returns once submitted; rerun the same
command to collect.

--plot (alone, or after the points ran): per dataset, out_dir/phase_<dataset>.png from the finished
points. Two knobs: heatmaps (first knob on x, second on y) of the fraction of seeds that grokked (val
accuracy > 0.99) and of the Kaplan-Meier median steps to grok (seeds that never crossed censored at
total_steps; grokstats.grok_steps_summary), k/n in every cell. One knob: steps to grok against the
knob (mean +- standard error when every seed grokked, else the KM median as an open marker; k/n above
each point) and the tail val accuracy (final_val_acc_tail), mean +- standard error.

Exit: 0 when every point has its final_info.json (or, with --slurm_wait=false, all is submitted);
1 when some point is unfinished (its failed units were reported); 2 for bad input; 130 / 143 when
interrupted (Ctrl-C / kill).
"""
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

import grokstats
import harness
import options
import outputs
import run_dir
from interrupts import Terminated, catch_stop_signals
from options import ConfigError, require

MANIFEST = "sweep.json"


# ---------------------------------------------------------------------------------------------
# THE GRID: command line, points, manifest; everything checked before anything is written.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Point:
    name: str        # "run_3"
    overrides: dict  # {knob: typed value}
    opts: options.RunOptions
    cfg: object      # experiment.Config
    todo: list | None  # units still missing; None for a finished point (final_info.json)
    code: dict | None = None  # outputs.code_identity its folder was checked against

    def label(self):
        return ", ".join(f"{k}={options.show(v)}" for k, v in self.overrides.items())


def parse_command(argv):
    """(out_dir, grid specs, plot, the other options), or ConfigError."""
    parser = options.OneLineParser(prog="sweep.py", allow_abbrev=False,
                                   description="A grid of experiment.py runs; see sweep.py's docstring.")
    parser.add_argument("--out_dir", required=True, help="the sweep's folder")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="one knob and its values; repeat for more knobs")
    parser.add_argument("--plot", action="store_true", help="draw out_dir/phase_<dataset>.png")
    args, rest = parser.parse_known_args(argv)
    require(args.out_dir.strip(), "--out_dir is empty; name the sweep's folder")
    require(args.grid or args.plot, "no --grid KEY=V1,V2,... given (or --plot to draw a finished sweep)")
    if rest and not args.grid:
        raise ConfigError(f"--plot without --grid takes only --out_dir, not {rest[0]}")
    return args.out_dir, args.grid, args.plot, rest


def parse_grid(Config, specs):
    """{knob: [(text, typed value)]} from --grid specs, in their order, or ConfigError."""
    fields, grid = options.field_types(Config), {}
    for spec in specs:
        key, sep, text = (part.strip() for part in spec.partition("="))
        require(sep and text, f"--grid {spec}: expected KEY=V1,V2,... (e.g. --grid train_frac=0.3,0.5)")
        require(key in fields, f"--grid {spec}: {key!r} is not a Config field of experiment.py "
                               "(python experiment.py --help lists them)")
        require(key not in grid, f"--grid {key}: given twice; put all its values in one --grid")
        texts = [v.strip() for v in text.split(";" if ";" in text else ",")]
        require(all(texts) and len(set(texts)) == len(texts), f"--grid {spec}: an empty or repeated value")
        read = options.converter(key, fields[key][1])
        try:
            grid[key] = [(t, read(t)) for t in texts]
        except ValueError:
            raise ConfigError(f"--grid {spec}: invalid value for {key} (expected {fields[key][1]})") from None
    return grid


def normal(obj):
    """obj as it reads back from strict JSON (tuples as lists), for comparing with sweep.json."""
    return json.loads(json.dumps(outputs.strict(obj)))


def check_manifest(out, manifest, names, overwrite):
    """ConfigError unless out holds this sweep (same grid and fixed options), or no sweep and none of
    its run folders. --overwrite allows anything; it warns about run_* folders it will not touch."""
    path = out / MANIFEST
    if overwrite:
        left = sorted(p.name for p in out.glob("run_*") if p.name not in names)
        if left:
            options.warn(f"--overwrite leaves {', '.join(left)} (not points of this sweep) in {out}; "
                         "plot.py run there reads them too")
        return
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            same = all(stored.get(k) == manifest[k] for k in ("grid", "fixed"))
        except (ValueError, AttributeError, UnicodeDecodeError):
            same = False
        require(same, f"--out_dir={out} holds another sweep ({path} has another grid or other options); "
                      "rerun its own command, choose another out_dir, or pass --overwrite")
    else:
        for taken in (n for n in names if (out / n).exists()):
            raise ConfigError(f"--out_dir={out} already holds {taken} but no {MANIFEST}; choose another "
                              "out_dir, or pass --overwrite to discard it")


def plan(out_dir, specs, base, Config, train_unit):
    """(manifest, [Point]): the grid expanded, every point's configuration parsed and its folder
    checked. Reads only."""
    grid = parse_grid(Config, specs)
    given = vars(options.make_parser(Config).parse_args(base))
    require("resume" not in given, "--resume: a sweep resumes by itself; rerun the same command")
    for key in (k for k in grid if k in given):
        raise ConfigError(f"--{key} is both a --grid knob and a fixed option; give it once")
    out, overwrite = Path(out_dir), bool(given.get("overwrite"))
    combos = list(itertools.product(*grid.values()))
    names = [f"run_{i}" for i in range(1, len(combos) + 1)]
    manifest = normal({"grid": {k: [v for _, v in values] for k, values in grid.items()},
                       "fixed": {k: v for k, v in given.items() if k not in options.RUN_CONTROL_KEYS},
                       "points": [{"name": n, "folder": n, "overrides": {k: v for k, (_, v) in zip(grid, c)}}
                                  for n, c in zip(names, combos)]})
    check_manifest(out, manifest, names, overwrite)
    code, points = outputs.code_identity(train_unit), []
    for name, combo in zip(names, combos):
        folder = out / name
        point = Point(name, {k: v for k, (_, v) in zip(grid, combo)}, None, None, None, code)
        description = point.label()
        if given.get("description"):
            description = f"{given['description']} ({description})"
        resume = not overwrite and (folder / "config.json").exists()
        argv = [*base, *(f"--{k}={t}" for k, (t, _) in zip(grid, combo)), f"--out_dir={folder}",
                f"--description={description}", *(["--resume"] if resume else [])]
        try:
            point.opts, point.cfg = options.parse(Config, argv)
            if overwrite or not (folder / "final_info.json").exists():
                finished = run_dir.check_out_dir(point.opts, point.cfg, code)
                point.todo = [(d, s) for d in outputs.datasets_of(point.cfg)
                              for s in range(point.cfg.num_seeds) if (d, s) not in finished]
        except ConfigError as e:
            raise ConfigError(f"{name} ({point.label()}): {e}") from None
        points.append(point)
    if points[0].opts.launcher == "slurm":
        options.check_slurm(points[0].opts)
    return manifest, points


# ---------------------------------------------------------------------------------------------
# RUNNING: every unfinished point through harness.run, after one Slurm array for all of them.
# ---------------------------------------------------------------------------------------------
def run_sweep(out_dir, specs, base):
    """Check everything, write sweep.json, then run (or submit) every unfinished point. True when
    every point is finished, or, with --slurm_wait=false, submitted."""
    import experiment  # the file beside this one: its Config and train_unit
    with options.held_warnings():  # Config.check's warnings: once, after every point passed
        manifest, points = plan(out_dir, specs, base, experiment.Config, experiment.train_unit)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outputs.write_json(out / MANIFEST, manifest)
    active = [p for p in points if p.todo is not None]
    for p in points:
        if p.todo is None:
            print(f"sweep: {p.name} ({p.label()}): finished, skipped", flush=True)
        else:
            run_dir.prepare_out_dir(p.opts, p.cfg, experiment.train_unit, p.code)  # refused if edited since
    opts = points[0].opts
    if opts.launcher == "slurm" and any(p.todo for p in active):
        import launch_slurm
        launch_slurm.launch(experiment.train_unit, [(p.opts, p.cfg, p.todo) for p in active if p.todo], out)
        if not opts.slurm_wait:
            print("sweep: submitted; rerun the same command to collect the points", flush=True)
            return True
    for p in active:
        print(f"sweep: {p.name} ({p.label()}): {len(p.todo)} units to run", flush=True)
        resumed = dataclasses.replace(p.opts, resume=True, overwrite=False)  # its folder is prepared
        harness.run(experiment.Config, experiment.train_unit, resumed, p.cfg)
    unfinished = [p.name for p in points if not (out / p.name / "final_info.json").exists()]
    print(f"sweep: {len(points) - len(unfinished)}/{len(points)} points finished" + (
        f"; unfinished: {', '.join(unfinished)} (rerun the same command)" if unfinished else ""), flush=True)
    return not unfinished


# ---------------------------------------------------------------------------------------------
# PHASE DIAGRAM: one figure per dataset; Agg canvases, no pyplot state.
# ---------------------------------------------------------------------------------------------
def point_cells(folder):
    """{dataset: cell} of a finished point (final_info.json present), else {}. A cell is
    grokstats.grok_steps_summary's {"n", "k", "median", "text"} with "steps": (mean, standard error)
    of the steps to grok when every seed grokked, else None, and "acc": (mean, standard error) of
    final_val_acc_tail."""
    if not (Path(folder) / "final_info.json").exists():
        return {}
    try:
        units = grokstats.run_units(folder)
    except ValueError:
        return {}
    cells = {}
    for dataset, us in units.items():
        cell = grokstats.grok_steps_summary([(u["time"], u["observed"]) for u in us])
        times, tails = [u["time"] for u in us], [u["final_val_acc_tail"] for u in us]
        cell["steps"] = ((grokstats.mean_or_none(times), grokstats.standard_error(times))
                         if cell["k"] == cell["n"] else None)
        cell["acc"] = (grokstats.mean_or_none(tails), grokstats.standard_error(tails))
        cells[dataset] = cell
    return cells


def text_colour(image, value):
    """Black on light cells, white on dark ones (and black on the grey of an empty cell)."""
    if not np.isfinite(value):
        return "k"
    r, g, b, _ = image.cmap(image.norm(value))
    return "k" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "w"


def heatmap(fig, ax, values, labels, xs, ys, title, cmap, limits):
    """values[iy, ix] as coloured cells (NaN grey), labels[(iy, ix)] written in them."""
    image = ax.imshow(np.ma.masked_invalid(values), origin="lower", cmap=cmap, vmin=limits[0],
                      vmax=limits[1], aspect="auto")
    ax.set_facecolor("0.85")
    if np.isfinite(values).any():
        fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(xs)), labels=[options.show(v) for v in xs])
    ax.set_yticks(range(len(ys)), labels=[options.show(v) for v in ys])
    for (iy, ix), text in labels.items():
        ax.text(ix, iy, text, ha="center", va="center", fontsize=9, color=text_colour(image, values[iy, ix]))
    ax.set_title(title)


def plot_heatmaps(manifest, cells, dataset):
    """Two knobs: grokked fraction and KM median steps to grok, one cell per point."""
    (kx, xs), (ky, ys) = manifest["grid"].items()
    frac, steps = np.full((len(ys), len(xs)), np.nan), np.full((len(ys), len(xs)), np.nan)
    frac_labels, step_labels = {}, {}
    for point in manifest["points"]:
        cell = cells[point["name"]].get(dataset)
        if cell:
            at = (ys.index(point["overrides"][ky]), xs.index(point["overrides"][kx]))
            kn = f"{cell['k']}/{cell['n']}"
            frac[at] = cell["k"] / cell["n"]
            steps[at] = np.nan if cell["median"] is None else cell["median"]
            frac_labels[at] = kn
            step_labels[at] = f"{'not reached' if cell['median'] is None else cell['median']}\n{kn}"
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    heatmap(fig, ax1, frac, frac_labels, xs, ys, "Fraction of seeds grokked (val acc > 0.99)", "viridis",
            (0, 1))
    finite = steps[np.isfinite(steps)]
    heatmap(fig, ax2, steps, step_labels, xs, ys, "KM median steps to 99% val acc", "viridis_r",
            (finite.min(), finite.max()) if finite.size else (0, 1))
    for ax in (ax1, ax2):
        ax.set_xlabel(kx)
        ax.set_ylabel(ky)
    fig.suptitle(f"{dataset}: k/n = seeds grokked / seeds")
    return fig


def plot_lines(manifest, cells, dataset):
    """One knob: steps to grok and tail val accuracy against the knob's values."""
    ((key, values),) = manifest["grid"].items()
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = values if numeric else list(range(len(values)))
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, sharex=True)  # the k/n labels need every point's x in range
    full, median, acc = [], [], []
    for point in manifest["points"]:
        cell = cells[point["name"]].get(dataset)
        if not cell:
            continue
        x = xs[values.index(point["overrides"][key])]
        if cell["steps"]:
            full.append((x, *cell["steps"]))
        elif cell["median"] is not None:
            median.append((x, cell["median"]))
        if cell["acc"][0] is not None:
            acc.append((x, *cell["acc"]))
        ax1.text(x, 1.01, f"{cell['k']}/{cell['n']}", transform=ax1.get_xaxis_transform(), ha="center",
                 va="bottom", fontsize=9)
    if full:
        ax1.errorbar(*zip(*full), fmt="o-", color="C0", capsize=3)
    if median:
        ax1.plot(*zip(*median), "o", mfc="none", color="C0")
    if acc:
        ax2.errorbar(*zip(*acc), fmt="o-", color="C1", capsize=3)
    ax1.legend(handles=[Line2D([], [], marker="o", color="C0", label="mean ± SE (every seed grokked)"),
                        Line2D([], [], marker="o", mfc="none", ls="", color="C0",
                               label="KM median (some censored)")], fontsize=8, loc="best")
    ax1.set_title("Steps to 99% val acc (k/n grokked above)", pad=18)
    ax1.set_ylabel("Steps")
    ax2.set_title("Val acc, last 10% of records: mean ± SE")
    ax2.set_ylabel("Validation accuracy")
    if numeric and min(values) > 0 and max(values) / min(values) >= 10:
        ax1.set_xscale("log")
    for ax in (ax1, ax2):
        ax.set_xlabel(key)
        ax.set_xticks(xs, labels=[options.show(v) for v in values])
        ax.minorticks_off()
    fig.suptitle(dataset)
    return fig


def plot_sweep(out_dir):
    """Write out_dir/phase_<dataset>.png for every dataset of the finished points; returns the paths."""
    out = Path(out_dir)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        knobs = list(manifest["grid"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"--plot: {out / MANIFEST} is missing or unreadable; run the sweep first") from None
    require(len(knobs) in (1, 2), f"--plot draws sweeps of 1 or 2 knobs; this one has {len(knobs)} "
                                  f"({', '.join(knobs)})")
    cells = {p["name"]: point_cells(out / p["folder"]) for p in manifest["points"]}
    unfinished = [name for name, c in cells.items() if not c]
    if unfinished:
        print(f"warning: not finished, left empty: {', '.join(unfinished)}", file=sys.stderr)
    datasets = list(dict.fromkeys(d for c in cells.values() for d in c))
    require(datasets, f"--plot: no point of {out} is finished yet")
    paths = []
    for dataset in datasets:
        path = out / f"phase_{dataset}.png"
        fig = (plot_heatmaps if len(knobs) == 2 else plot_lines)(manifest, cells, dataset)
        FigureCanvasAgg(fig)
        fig.savefig(path, dpi=150)
        print(f"phase: {path}", flush=True)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# MAIN
# ---------------------------------------------------------------------------------------------
def main(argv=None):
    catch_stop_signals()  # as for experiment.py: never lost while torch.compile compiles
    try:
        out_dir, specs, plot, base = parse_command(sys.argv[1:] if argv is None else argv)
        ok = run_sweep(out_dir, specs, base) if specs else True
        if plot:
            plot_sweep(out_dir)
    except ConfigError as e:
        print(f"error: {options.one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        print("error: interrupted; finished units are kept: rerun the same command to resume",
              file=sys.stderr)
        sys.exit(143 if isinstance(e, Terminated) else 130)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
