"""
confirm.py: confirmation on fresh seeds. An exploratory run is confirmed by training it again, with
its own saved code and settings, on seeds no run of the campaign has used, beside its baseline
trained the same way, and asking whether its result comes out again.

    python harness.py confirm run_3 --num_seeds=10         # run_3 against the run_0 beside it
    python harness.py confirm ideas/a/run_2 --baseline=ideas/a/run_0 --jobs=2 --resume

Arms. Each arm runs its own copy of the code (ARM/code/experiment.py, written when ARM started) as
a subprocess, `python ARM/code/experiment.py --out_dir=OUT/NAME --seed=S0 --num_seeds=N` followed by
ARM's recorded Config settings (config.json, the fields of that code's Config; seed and num_seeds
replaced) and the launch options given here (--jobs, --device, --threads, --launcher, --slurm_*,
...). The baseline arm is OUT/run_0 and trains first; the run's arm is OUT/run_N (RUN's own name, or
run_1 for a folder not named run_N), so its notes.txt section in OUT carries its verdict against
the fresh run_0. Both arms train the same seeds S0 .. S0 + N - 1.

Fresh seeds (`fresh_seed`). S0 is one more than the largest seed any run or confirmation already
used, and at least SEED_FLOOR = 1_000_000 (far above any seed a run uses by default): every
config.json (seed + num_seeds - 1) and confirm.json (S0 + N - 1) found up to DEPTH folders below
RUN's folder, that folder's parent and the baseline's folder. confirm.json records S0, N, the
folders searched and the largest seed found; --resume keeps them.

Verdict (`verdict`). For each dataset and measure of grokstats.compare_to_baseline (steps to 99%
val accuracy by log-rank, the grokked fraction by Fisher, the tail val accuracy by Mann-Whitney),
the exploratory comparison (RUN against its baseline, as in RUN's notes) and the fresh one (the
run's arm against the baseline arm), each with its effect, interval and p. A row is replicated when
it was significant in exploration (p < ALPHA) and the fresh comparison is significant in the same
direction. The run is replicated when at least one row was significant in exploration and every
such row replicated; a run with no significant row has nothing to replicate and is not replicated
(its reason says so, and how many fresh comparisons are significant on their own: each fresh side
has its Benjamini-Hochberg "q" over the fresh comparisons, significant when q <= ALPHA).
OUT/verdict.md and, last, OUT/verdict.json (strict JSON: "run", "baseline", "seeds" [S0, N],
"alpha", "rows", "significant_in_exploration" (how many rows), "replicated", "reason"), written
only when both arms finished; campaign.py reads its "replicated" and "significant_in_exploration".

Bad input (no such folder, a run unfinished or without its code/ copy, a baseline with other
datasets, --num_seeds < 2, an unknown option, a finished confirmation without --overwrite): one
line on stderr, exit 2, before anything is written. --resume continues both arms (their own
--resume rules apply); --overwrite starts again on new fresh seeds. Ctrl-C or `kill` stops the arm
in progress, whose finished units stay for --resume.
"""
import argparse
import ast
import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import types
from pathlib import Path

from scipy import stats

import grokstats
from interrupts import Terminated, catch_stop_signals
from options import (ConfigError, RunOptions, check_field, check_run, converter, field_types, one_line,
                     require, show)
from outputs import datasets_of, write_atomic, write_json

SEED_FLOOR = 1_000_000
DEPTH = 3  # folders below each searched folder: idea/confirm_run_N/run_0/config.json is 3 below
SKIPPED = {"units", "code", "checkpoints", "__pycache__"}
LAUNCH = tuple(name for name in field_types(RunOptions)
               if name not in ("out_dir", "overwrite", "resume", "description"))
MEASURES = {"steps": "steps to 99% (log-rank)", "grokked": "grokked fraction (Fisher)",
            "final": "tail val. acc. (Mann-Whitney)"}
DIRECTIONS = {"groks earlier": -1, "groks later": 1, "groks more often": 1, "groks less often": -1,
              "higher final val acc": 1, "lower final val acc": -1}  # sign of run - baseline
DEFINITION = ("a row is replicated when it was significant in exploration (p < alpha) and the fresh "
              "comparison is significant (p < alpha) in the same direction; the run is replicated when "
              "at least one row was significant in exploration and every such row replicated")


# ---------------------------------------------------------------------------------------------
# CHECKING: everything before anything is written
# ---------------------------------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(message)


def parse_args(argv):
    parser = OneLineParser(prog="python harness.py confirm", allow_abbrev=False,
                           description="train a run's saved code and its baseline's on fresh seeds")
    parser.add_argument("run", metavar="RUN", help="the finished run folder to confirm, e.g. run_3")
    parser.add_argument("--num_seeds", type=int, default=None, help="fresh seeds per arm (default 10)")
    parser.add_argument("--baseline", help="the baseline run folder (default: the run_0 beside RUN)")
    parser.add_argument("--out_dir", help="the confirmation folder (default: confirm_RUN beside RUN)")
    parser.add_argument("--resume", action="store_true", help="continue an unfinished confirmation")
    parser.add_argument("--overwrite", action="store_true", help="start again, on new fresh seeds")
    types_ = field_types(RunOptions)
    for name in LAUNCH:
        extra = {"nargs": "?", "const": "true"} if types_[name][1] is bool else {}
        parser.add_argument(f"--{name}", default=argparse.SUPPRESS, help=f"passed to both arms: "
                            f"{types_[name][0].metadata['help']}".replace("%", "%%"), **extra)
    return parser.parse_args(argv)


def launch_options(args):
    """{name: value} of the launch options given, each checked as experiment.py checks it."""
    given, types_ = {}, field_types(RunOptions)
    for name in LAUNCH:
        if hasattr(args, name):
            f, tp = types_[name]
            try:
                given[name] = converter(name, tp)(getattr(args, name))
            except ValueError:
                raise ConfigError(f"--{name}={getattr(args, name)}: invalid value (expected {tp})") from None
            check_field(f, tp, given[name])
    return given


def read_json(path, what):
    try:
        found = json.loads(Path(path).read_text())
        assert isinstance(found, dict)
    except (OSError, ValueError, AssertionError):
        raise ConfigError(f"{what}: {path} is missing or unreadable") from None
    return found


def finished_run(folder, what):
    """(config.json's dict, code/experiment.py) of a finished run folder that kept its code, or
    ConfigError. The copy must be the code the run recorded (run_info.json's code_sha256)."""
    folder = Path(folder)
    require(folder.is_dir(), f"{what}={folder} is not a folder; give a finished run folder, e.g. run_3")
    require((folder / "final_info.json").is_file(),
            f"{what}={folder} has no final_info.json: only a finished run can be confirmed")
    config = read_json(folder / "config.json", what)
    code = folder / "code" / "experiment.py"
    require(code.is_file(), f"{what}={folder} has no copy of its code ({folder}/code/experiment.py; "
                            "runs keep one since issue 26): rerun it, or put the code that made it there")
    recorded = read_json(folder / "run_info.json", what).get("code_sha256") or {}
    for name, digest in recorded.items():
        copy = folder / "code" / name
        require(copy.is_file() and hashlib.sha256(copy.read_bytes()).hexdigest() == digest,
                f"{what}={folder}: code/{name} is not the code that made the run (run_info.json's sha256)")
    return config, code


def config_fields(experiment_file):
    """The field names of the Config dataclass in an experiment file, read with ast: the file is
    never imported here (it imports its own copy of the harness)."""
    tree = ast.parse(Path(experiment_file).read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Config":
            return [s.target.id for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    raise ConfigError(f"{experiment_file} defines no Config class")


def arm_settings(config, code):
    """The arm's recorded Config settings, seed and num_seeds left out."""
    return {k: config[k] for k in config_fields(code) if k in config and k not in ("seed", "num_seeds")}


def config_files(top, depth=DEPTH):
    """Every config.json and confirm.json at most `depth` folders below top (top included), not
    looking into units/, code/, checkpoints/ or hidden folders."""
    top = Path(top)
    for here, dirs, files in os.walk(top):
        level = len(Path(here).relative_to(top).parts)
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED and not d.startswith(".")) if level < depth else []
        yield from (Path(here) / f for f in sorted(files) if f in ("config.json", "confirm.json"))


def last_seed(path):
    """The largest seed a config.json (seed + num_seeds - 1) or confirm.json (S0 + N - 1) used."""
    try:
        found = json.loads(path.read_text())
        first, n = (found.get("seeds") or [None, None]) if path.name == "confirm.json" else (
            found.get("seed"), found.get("num_seeds"))
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (first, n))
    return first + n - 1 if ok and n >= 1 else None


def fresh_seed(tops):
    """(S0, record): S0 = max(SEED_FLOOR, 1 + the largest seed of every config_files of the tops);
    record says what was searched and found."""
    largest, where, files, seen = None, None, 0, set()
    for top in tops:
        for path in config_files(top):
            if path.resolve() in seen:  # a folder below two searched folders is read once
                continue
            seen.add(path.resolve())
            last = last_seed(path)
            files += last is not None
            if last is not None and (largest is None or last > largest):
                largest, where = last, str(path)
    first = SEED_FLOOR if largest is None else max(SEED_FLOOR, largest + 1)
    return first, {"rule": f"S0 = max({SEED_FLOOR}, 1 + the largest seed (seed + num_seeds - 1 in a "
                           f"config.json, S0 + N - 1 in a confirm.json) found up to {DEPTH} folders "
                           "below the searched folders)",
                   "searched": [str(t) for t in tops], "files_read": files,
                   "largest_seed_found": largest, "found_in": where}  # None: no seed found


def unique_folders(folders):
    seen, kept = set(), []
    for f in folders:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            kept.append(f)
    return kept


def plan(args):
    """Everything the confirmation will do, checked: ConfigError otherwise. Reads only."""
    run = Path(args.run)
    run_cfg, run_code = finished_run(run, "RUN")
    baseline = Path(args.baseline) if args.baseline else run.parent / "run_0"
    base_cfg, base_code = finished_run(baseline, "--baseline")
    require(run.resolve() != baseline.resolve(), f"RUN={run} is its own baseline; name another with --baseline")
    mine, theirs = (datasets_of(types.SimpleNamespace(datasets=c.get("datasets", ""))) for c in (run_cfg, base_cfg))
    require(set(mine) == set(theirs), f"--baseline={baseline} trains {','.join(theirs)} and RUN={run} trains "
                                      f"{','.join(mine)}: the arms must train the same datasets")
    require(not (args.resume and args.overwrite), "--resume and --overwrite: choose one")
    out = Path(args.out_dir) if args.out_dir else run.parent / f"confirm_{run.name}"
    require(not out.exists() or out.is_dir(), f"--out_dir={out} is a file; name a folder")
    if (out / "verdict.json").exists():
        require(args.overwrite, f"--out_dir={out} already holds a finished confirmation (verdict.json); "
                                "pass --overwrite to confirm again on new fresh seeds")
    elif out.is_dir() and any(out.iterdir()):
        require(args.resume or args.overwrite, f"--out_dir={out} holds an unfinished confirmation; pass "
                                               "--resume to continue it or --overwrite to start again")
    record = read_json(out / "confirm.json", "--resume") if args.resume and (out / "confirm.json").exists() else None
    if record:
        seeds = record.get("seeds")
        require(isinstance(record.get("run"), str) and isinstance(record.get("baseline"), str)
                and isinstance(seeds, list) and len(seeds) == 2 and all(isinstance(v, int) for v in seeds),
                f"--resume: {out}/confirm.json is not a confirmation's record; pass --overwrite to start again")
        require(Path(record["run"]).resolve() == run.resolve() and Path(record["baseline"]).resolve()
                == baseline.resolve(), f"--resume: {out} confirms {record['run']} against {record['baseline']}")
        first, n = seeds
        require(args.num_seeds in (None, n), f"--num_seeds={args.num_seeds} differs from {out}/confirm.json's "
                                             f"{n}; a resumed confirmation keeps its seeds")
        seeds = record.get("seed_rule")
    else:
        n = 10 if args.num_seeds is None else args.num_seeds
        here, there = run.resolve().parent, baseline.resolve().parent
        first, seeds = fresh_seed(unique_folders([here, here.parent, there]))
    require(n >= 2, f"--num_seeds={n}: each arm needs at least 2 seeds for a test")
    launch = launch_options(args)
    opts = dataclasses.replace(RunOptions(**launch), out_dir=str(out))
    check_run(opts, types.SimpleNamespace(seed=first, num_seeds=n))  # out_dir writable, device, sbatch
    number = re.fullmatch(r"run_(\d+)", run.name)
    name = run.name if number and int(number[1]) >= 1 else "run_1"
    arms = {"run_0": (baseline, base_code, arm_settings(base_cfg, base_code)),
            name: (run, run_code, arm_settings(run_cfg, run_code))}
    return types.SimpleNamespace(run=run, baseline=baseline, out=out, first=first, n=n, seeds=seeds, arms=arms,
                                 name=name, launch=launch, resume=args.resume, overwrite=args.overwrite)


# ---------------------------------------------------------------------------------------------
# TRAINING THE ARMS: each arm's own code, as a subprocess
# ---------------------------------------------------------------------------------------------
def as_argument(value):
    return show(tuple(value) if isinstance(value, list) else value)


def arm_command(p, name):
    """The command that trains one arm: its code, its settings, the fresh seeds, the launch options."""
    source, code, settings = p.arms[name]
    folder = p.out / name
    command = [sys.executable, str(code), f"--out_dir={folder}", f"--seed={p.first}", f"--num_seeds={p.n}",
               *(f"--{k}={as_argument(v)}" for k, v in settings.items()),
               *(f"--{k}={show(v)}" for k, v in p.launch.items()),
               f"--description=Confirmation of {source} on fresh seeds {p.first}-{p.first + p.n - 1}"]
    if p.overwrite:
        command.append("--overwrite")
    elif p.resume and (folder / "config.json").exists():
        command.append("--resume")
    return command


def run_arm(command):
    """The arm's exit status. Ctrl-C reaches the arm from the terminal; `kill` is passed on to it."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # no __pycache__ in a run's code/ copy
    proc = subprocess.Popen(command, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt as e:
        if isinstance(e, Terminated):
            proc.terminate()
        proc.wait()
        raise


def confirm(p):
    """Train both arms (the baseline's first), then write the verdict. Returns the exit status."""
    if p.overwrite:
        for stale in ("verdict.json", "verdict.md", "confirm.json"):
            (p.out / stale).unlink(missing_ok=True)
    p.out.mkdir(parents=True, exist_ok=True)
    write_json(p.out / "confirm.json", {
        "run": str(p.run), "baseline": str(p.baseline), "seeds": [p.first, p.n], "seed_rule": p.seeds,
        "arms": {name: {"of": str(src), "code": str(code), "settings": settings,
                        "command": arm_command(p, name)} for name, (src, code, settings) in p.arms.items()},
        "launch": p.launch})
    print(f"confirm: {p.run} against {p.baseline} on fresh seeds {p.first}-{p.first + p.n - 1} "
          f"({p.n} a side) in {p.out}", flush=True)
    for name in p.arms:
        if (p.out / name / "final_info.json").exists() and not p.overwrite:
            print(f"confirm: {name}: finished, kept", flush=True)
            continue
        command = arm_command(p, name)
        print(f"confirm: {name}: {' '.join(command[1:3])} ...", flush=True)
        status = run_arm(command)
        if status == 2:
            print(f"error: the {name} arm refused its command (its reason is above)", file=sys.stderr)
        elif status:
            print(f"error: the {name} arm stopped (exit {status}); its finished units are kept: "
                  "rerun with --resume", file=sys.stderr)
        if status:
            return status
    if not all((p.out / name / "final_info.json").exists() for name in p.arms):
        print("confirm: submitted; rerun with --resume to collect the arms and write the verdict", flush=True)
        return 0
    found = verdict(p.run, p.baseline, p.out / p.name, p.out / "run_0", [p.first, p.n])
    write_atomic(p.out / "verdict.md", lambda tmp: tmp.write_text(verdict_markdown(found), encoding="utf-8"))
    write_json(p.out / "verdict.json", found)  # last: its presence means the confirmation finished
    print(f"replicated: {str(found['replicated']).lower()} ({found['reason']})", flush=True)
    print(f"wrote: {p.out / 'verdict.json'}, {p.out / 'verdict.md'}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# THE VERDICT
# ---------------------------------------------------------------------------------------------
def direction(entry):
    """+1 / -1, the sign of run - baseline: the test's direction when significant, else the
    estimate's; None when neither says."""
    for words, sign in DIRECTIONS.items():
        if entry["verdict"].startswith(words):
            return sign
    estimate = entry["estimate"]
    return None if estimate is None or estimate == 0 else int(math.copysign(1, estimate))


def side(entry, n_run, n_base, alpha):
    """One comparison's part of a verdict row."""
    return {"p": entry["p"], "significant": entry["p"] is not None and entry["p"] < alpha,
            "direction": direction(entry), "estimate": entry["estimate"], "ci": entry["ci"],
            "ci_level": entry["ci_level"], "effect": grokstats.format_effect(entry["key"], entry, compact=True),
            "effect_text": entry["effect_text"], "verdict": entry["verdict"], "seeds": [n_run, n_base]}


def comparisons(run, baseline):
    """{dataset: (compare_to_baseline's dict, n_run, n_base)} for the datasets both hold."""
    mine, base = grokstats.run_units(run), grokstats.run_units(baseline)
    return {d: (grokstats.compare_to_baseline(base[d], mine[d]), len(mine[d]), len(base[d]))
            for d in sorted(mine) if d in base}


def verdict(run, baseline, fresh_run, fresh_baseline, seeds, alpha=grokstats.ALPHA):
    """The confirmation's verdict (module docstring) as a JSON-safe dict."""
    explored, fresh = comparisons(run, baseline), comparisons(fresh_run, fresh_baseline)
    rows = []
    for dataset in explored:
        for key, label in MEASURES.items():
            e, f = ({**found[0][key], "key": key} for found in (explored[dataset], fresh[dataset]))
            before, after = side(e, *explored[dataset][1:], alpha), side(f, *fresh[dataset][1:], alpha)
            same = None if before["direction"] is None or after["direction"] is None else (
                before["direction"] == after["direction"])
            rows.append({"dataset": dataset, "measure": key, "label": label, "test": e["test"],
                         "exploratory": before, "fresh": after, "same_direction": same,
                         "replicated": (bool(same) and after["significant"]) if before["significant"] else None})
    for r in rows:
        r["fresh"]["q"] = None  # untestable: no p, no q
    tested = [r["fresh"] for r in rows if r["fresh"]["p"] is not None]
    for part, q in zip(tested, stats.false_discovery_control([t["p"] for t in tested], method="bh")
                       if tested else []):
        part["q"] = float(q)  # Benjamini-Hochberg over the fresh comparisons alone
    claimed = [r for r in rows if r["exploratory"]["significant"]]
    held = [r for r in claimed if r["replicated"]]
    if not claimed:
        found = sum(t["q"] <= alpha for t in tested)
        reason = ("the exploratory run had no significant comparison with its baseline: nothing to "
                  f"replicate; on the fresh seeds alone, {found} of {len(tested)} comparisons have "
                  f"Benjamini-Hochberg q <= {alpha:g} over those {len(tested)}"
                  + (" (a result of the fresh seeds, not a replication)" if found else ""))
    else:
        reason = (f"{len(held)} of {len(claimed)} comparisons significant in exploration replicated "
                  f"(same direction, p < {alpha:g} on the fresh seeds)")
    return {"run": str(run), "baseline": str(baseline), "fresh_run": str(fresh_run),
            "fresh_baseline": str(fresh_baseline), "seeds": list(seeds), "alpha": alpha,
            "definition": DEFINITION, "rows": rows, "significant_in_exploration": len(claimed),
            "replicated": bool(claimed) and len(held) == len(claimed), "reason": reason}


def cell(part):
    if part["p"] is None:
        return "not testable"
    q = f", q{grokstats.format_p(part['q'])[1:]}" if part.get("q") is not None else ""  # 'q = 0.03'
    return f"{part['effect']}, {grokstats.format_p(part['p'])}{q}"


def verdict_markdown(found):
    first, n = found["seeds"]
    answer = "replicated" if found["replicated"] else "not replicated"
    lines = [f"# Confirmation of {found['run']} on fresh seeds", "",
             f"{found['run']} against {found['baseline']} (exploratory), and the same code and settings "
             f"on fresh seeds {first}-{first + n - 1} ({n} a side): **{answer}**: {found['reason']}.", "",
             f"Definition: {found['definition']} (alpha {found['alpha']:g}). Effects are run - baseline "
             "with their intervals (docs/campaigns.md).", "",
             "| Dataset | Measure | Exploratory: effect [95% CI], p | Fresh: effect [95% CI], p, q | Replicated |",
             "|---|---|---|---|---|"]
    for r in found["rows"]:
        mark = {True: "yes", False: "no", None: "-"}[r["replicated"]]
        lines.append(f"| {r['dataset']} | {r['label']} | {cell(r['exploratory'])} | {cell(r['fresh'])} | {mark} |")
    return "\n".join(lines) + "\n"


def main(argv):
    """`python harness.py confirm ...`; returns the exit status."""
    catch_stop_signals()
    try:
        return confirm(plan(parse_args(argv)))
    except ConfigError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("error: interrupted; the arms' finished units are kept: rerun with --resume", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
