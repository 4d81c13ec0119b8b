"""
harness.py: the run machinery behind experiment.py, and its one entry point. No idea needs an edit
here or in the modules below it.

experiment.py holds the science (Config, data, model, optimisation, training) and ends with
`harness.main(Config, train_unit)`; it also uses option(), require() and warn() from here. This
module never imports experiment.py. main() parses and checks the command line (options.py) and
what out_dir holds (run_dir.py) before anything is touched, trains every unit not finished yet
(workers.py, or launch_slurm.py for --launcher=slurm; each unit gets a UnitRun, unit_run.py), and
writes the outputs (outputs.py): units/ as each unit finishes, then run_info.json,
all_results.npy, the run's notes.txt section (notes.py) and, last, final_info.json.
`python harness.py restat run_0` recomputes a finished run's statistics from its saved curves;
`python harness.py confirm run_3` trains run_3 and its baseline again on fresh seeds (confirm.py).

Units: (dataset, seed index s) for every dataset of cfg.datasets and s < cfg.num_seeds; seed index
s trains with seed cfg.seed + s.
"""
import json
import sys
import time
import types
from pathlib import Path

from interrupts import Terminated, catch_stop_signals
from notes import notes_lines, update_notes
from options import ConfigError, held_warnings, one_line, option, parse, require, resolve_device, warn
from outputs import (CONTRACT_KEYS, aggregate, code_identity, datasets_of, save_npy, strict,
                     unit_final_info, unit_line, unit_path, versions, write_atomic, write_json)
from run_dir import check_out_dir, load_unit, prepare_out_dir, save_unit
from workers import default_jobs, run_units

__all__ = ["main", "option", "require", "warn", "run", "restat"]  # what experiment.py and sweep.py use


def run(Config, train_unit, opts, cfg, checked=None):
    """Train every unit not finished yet and write the outputs. checked: (code_identity,
    check_out_dir's finished units) when the caller has just made them."""
    start = time.perf_counter()
    code = code_identity(train_unit) if checked is None else checked[0]
    results = check_out_dir(opts, cfg, code) if checked is None else checked[1]
    prepare_out_dir(opts, cfg, train_unit, code)
    todo = [(d, s) for d in datasets_of(cfg) for s in range(cfg.num_seeds) if (d, s) not in results]
    jobs = default_jobs(opts, max(len(todo), 1))
    device = resolve_device(opts.device)
    where = "launcher: slurm" if opts.launcher == "slurm" else f"device: {device}, jobs: {jobs}"
    print(f"{where}, threads_per_job: {opts.threads}, "
          f"units: {len(todo)} to run, {len(results)} resumed", flush=True)
    bar = None
    if sys.stderr.isatty() and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo) * cfg.total_steps, unit="update", file=sys.stderr)

    def on_result(result, written=False):
        """A finished unit: its file (unless a Slurm task wrote it), its stdout line, a warning
        if it diverged."""
        if not written:
            save_unit(opts, cfg, code, result)
        results[(result["dataset"], result["seed_index"])] = strict(result)
        print(unit_line(result), flush=True)
        if result["diverged_at"] is not None:
            warn(f"{result['dataset']}_{result['seed_index']} diverged: non-finite loss at update "
                 f"{result['diverged_at']}; its final values are null")

    def then():
        if bar:
            bar.close()
        return finish(opts, cfg, results, code, jobs, device, time.perf_counter() - start)

    if opts.launcher == "slurm" and todo:
        import launch_slurm
        if not launch_slurm.run_units(train_unit, opts, cfg, todo, on_result, bar):
            return None  # submitted (--slurm_wait=false) or units failed: no final_info.json
        return then()
    return run_units(train_unit, opts, cfg, todo, jobs, on_result, bar, then)  # then() overlaps the workers' exit


def finish(opts, cfg, results, code, jobs, device, elapsed):
    """Write run_info.json, all_results.npy, the notes section and, last, final_info.json."""
    final_infos, all_results = aggregate(cfg, results)
    out = Path(opts.out_dir)
    write_json(out / "run_info.json", {
        "wall_time_s": elapsed, "device": str(device), "jobs": jobs,
        "threads_per_job": opts.threads, "versions": versions(), "code_sha256": code,
        "unit_wall_time_s": {f"{d}_{s}": r["wall_time_s"] for (d, s), r in sorted(results.items())},
        "forward_path": {f"{d}_{s}": r.get("forward", {}).get("path") for (d, s), r in sorted(results.items())}})
    write_atomic(out / "all_results.npy", lambda tmp: save_npy(tmp, all_results))
    notes = None
    try:  # notes.txt is secondary: a problem there never costs the results
        notes = update_notes(opts.out_dir, opts.description, final_infos, notes_lines(opts.out_dir, cfg, results))
    except (OSError, UnicodeError, ValueError) as e:
        warn(f"notes.txt not updated ({type(e).__name__}: {one_line(e)[:160]}); the results are "
             "in final_info.json")
    write_json(out / "final_info.json", final_infos)  # last: its presence means success
    print(f"wall_s: {elapsed:.1f}" + (f", notes: {notes}" if notes else ""), flush=True)
    return final_infos


def restat(folder):
    """Recompute a finished run's statistics from its saved curves, without retraining: every
    unit's final_info (unit_final_info), final_info.json, all_results.npy and the run's notes
    section. The AI-Scientist keys must come out as they were (else ValueError); only the added
    keys change. `python harness.py restat run_0` runs it."""
    folder = Path(folder)
    stored = json.loads((folder / "config.json").read_text())
    cfg = types.SimpleNamespace(**stored)
    results = {}
    for dataset in datasets_of(cfg):
        for s in range(cfg.num_seeds):
            path = unit_path(folder, dataset, s)
            result = load_unit(path, dataset, s)
            final = unit_final_info(result["train_info"], result["val_info"], cfg.total_steps,
                                    result.get("diverged_at"))
            changed = [k for k in CONTRACT_KEYS if final[k] != result["final_info"][k]]
            if changed:
                raise ValueError(f"{path}: recomputed {', '.join(changed)} differ from the stored values")
            result["final_info"], result["diverged_at"] = final, result.get("diverged_at")
            write_json(path, result)
            results[(dataset, s)] = strict(result)
    final_infos, all_results = aggregate(cfg, results)
    write_atomic(folder / "all_results.npy", lambda tmp: save_npy(tmp, all_results))
    notes = update_notes(folder, stored.get("description", ""), final_infos,
                         notes_lines(folder, cfg, results))
    write_json(folder / "final_info.json", final_infos)
    return notes


def main(Config, train_unit, argv=None):
    """The command line of experiment.py: parse and check everything, then run."""
    catch_stop_signals()  # `kill PID` must not leave workers running; Ctrl-C must not be lost
    try:
        with held_warnings():  # a refused command prints its one error line and no warnings
            opts, cfg = parse(Config, sys.argv[1:] if argv is None else argv)
            code = code_identity(train_unit)
            checked = code, check_out_dir(opts, cfg, code)
        final_infos = run(Config, train_unit, opts, cfg, checked)
        if final_infos is None and opts.launcher == "slurm" and opts.slurm_wait:
            sys.exit(1)  # units failed after their retries, each named on stderr; no final_info.json
        return final_infos
    except ConfigError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        print("error: interrupted; finished units are in units/, rerun with --resume", file=sys.stderr)
        sys.exit(143 if isinstance(e, Terminated) else 130)


if __name__ == "__main__":  # python harness.py restat run_0 [run_1 ...] | confirm run_3 [--num_seeds=10 ...]
    if sys.argv[1:2] == ["confirm"]:
        import confirm
        sys.exit(confirm.main(sys.argv[2:]))
    if len(sys.argv) < 3 or sys.argv[1] != "restat":
        sys.exit("usage: python harness.py restat RUN_FOLDER [RUN_FOLDER ...] | python harness.py confirm "
                 "RUN_FOLDER [--num_seeds=10] [--baseline=RUN_0] [--resume] ... (confirm --help lists them)")
    for folder in sys.argv[2:]:
        restat(folder)
        print(f"restat: {folder}: final_info.json, all_results.npy, units/ and its notes section "
              "recomputed from the saved curves")
