"""
outputs.py: what a run writes, and how. Strict JSON (NaN and infinities as null) written
atomically (a temporary name, then rename); a unit's final_info (the AI-Scientist keys, then
grokstats' added keys); final_info.json's and all_results.npy's dicts from every unit's result; the
code identity (sha256 of each file whose code can change a recorded number).
"""
import dataclasses
import hashlib
import inspect
import json
import math
import os
import platform
from pathlib import Path

import numpy as np
import torch

import grokstats
from options import show


def strict(obj):
    """obj with NaN and infinities as None, tuples as lists and numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_atomic(path, write):
    """write(tmp_path) then rename: readers never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:  # interrupted or failed: no stray temporary file
        tmp.unlink(missing_ok=True)


def write_json(path, obj):
    text = json.dumps(strict(obj), indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text))


def save_npy(path, obj):
    with open(path, "wb") as f:  # a file object: np.save would append .npy to a temporary name
        np.save(f, obj, allow_pickle=True)


def datasets_of(cfg):
    names = cfg.datasets if isinstance(cfg.datasets, tuple) else cfg.datasets.split(",")
    return [d for d in names if d]


def config_record(opts, cfg):
    return {**dataclasses.asdict(opts), **dataclasses.asdict(cfg)}


CODE_MODULES = ("harness.py", "options.py", "unit_run.py", "fast_forward.py", "workers.py", "outputs.py",
                "run_dir.py", "notes.py", "interrupts.py", "launch_slurm.py", "grokstats.py",
                "instruments.py", "tasks.py")  # beside this file: the code a run's numbers can depend on


def code_identity(train_unit):
    """sha256 of the experiment file that defines train_unit and of each of CODE_MODULES present
    beside this file: {file name: hex digest}. --resume refuses units made by other code."""
    files = {"experiment.py": Path(inspect.getsourcefile(train_unit))}
    files |= {name: Path(__file__).with_name(name) for name in CODE_MODULES}
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()
            if path.is_file()}


def unit_path(out_dir, dataset, seed_index):
    return Path(out_dir) / "units" / f"{dataset}_{seed_index}.json"


CONTRACT_KEYS = ("final_train_loss", "final_val_loss", "final_train_acc", "final_val_acc",
                 "step_val_acc_99")


def unit_final_info(train_info, val_info, total_steps, diverged_at=None):
    """The AI-Scientist keys (null for a diverged unit, step_val_acc_99 = total_steps when never
    reached) followed by grokstats.unit_statistics' added keys."""
    reached = [r["step"] for r in val_info if (r.get("val_accuracy") or 0) > grokstats.THRESHOLD]
    diverged = diverged_at is not None
    final = {"final_train_loss": None if diverged else train_info[-1]["train_loss"],
             "final_val_loss": None if diverged else val_info[-1]["val_loss"],
             "final_train_acc": None if diverged else train_info[-1]["train_accuracy"],
             "final_val_acc": None if diverged else val_info[-1]["val_accuracy"],
             "step_val_acc_99": reached[0] if reached else (None if diverged else total_steps)}
    return {**final, **grokstats.unit_statistics(train_info, val_info, total_steps, diverged)}


def aggregate(cfg, results):
    """final_info.json's dict and all_results.npy's dict, from every unit's result."""
    final_infos, all_results = {}, {}
    for dataset in datasets_of(cfg):
        runs = [results[(dataset, s)] for s in range(cfg.num_seeds)]
        per_seed = {k: [r["final_info"][k] for r in runs] for k in runs[0]["final_info"]}
        means = {f"{k}_mean": grokstats.mean_or_none(v) for k, v in per_seed.items()}
        means["step_val_acc_99_km_median"] = grok_summary(runs)["median"]
        final_infos[dataset] = {
            "means": means,
            "stderrs": {f"{k}_stderr": grokstats.standard_error(v) for k, v in per_seed.items()},
            "final_info_dict": per_seed}
        for r in runs:
            for part in ("final_info", "train_info", "val_info"):
                all_results[f"{dataset}_{r['seed_index']}_{part}"] = r[part]
    return final_infos, all_results


def grok_summary(units):
    """grokstats' censoring-aware summary of steps to 99% val accuracy over unit results."""
    return grokstats.grok_steps_summary([grokstats.grok_time(u["val_info"], u["config"]["total_steps"],
                                                             u["final_info"]["diverged"]) for u in units])


def versions():
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count()}


def unit_line(r):
    """One grep-friendly stdout line per finished unit."""
    fi = {k: r["final_info"][k] for k in CONTRACT_KEYS}
    return (f"{r['dataset']}_{r['seed_index']}: " + ", ".join(
        f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {show(v)}" for k, v in fi.items())
        + f", wall_s: {r['wall_time_s']:.1f}")
