"""
run_dir.py: what out_dir holds, checked before anything is touched (a finished run is never
overwritten without --overwrite; finished units are never mixed with other settings or code), what
--overwrite clears, each finished unit's file in out_dir/units (what --resume keeps), and the
run's copy of its code in out_dir/code (what `python out_dir/code/experiment.py` reruns).
"""
import ast
import hashlib
import inspect
import json
import shutil
from pathlib import Path

import outputs
from options import RUN_CONTROL_KEYS, ConfigError, require
from outputs import config_record, datasets_of, strict, unit_path, write_atomic, write_json


def load_unit(path, dataset, seed_index):
    """A finished unit's result from its file, or ConfigError naming the file."""
    try:
        result = json.loads(path.read_text())
        assert isinstance(result, dict) and result.get("dataset") == dataset
        assert result.get("seed_index") == seed_index
        assert all(isinstance(result.get(k), list) for k in ("train_info", "val_info"))
        assert isinstance(result.get("final_info"), dict) and isinstance(result.get("config"), dict)
    except (ValueError, AssertionError, UnicodeDecodeError, OSError):
        raise ConfigError(f"--resume: {path} is truncated or not a unit of this run; delete it "
                          "to retrain that unit, or pass --overwrite to start again") from None
    return result


def check_out_dir(opts, cfg, code):
    """Finished units to keep (--resume), or ConfigError if out_dir holds work this command would
    lose or mix. Reads only."""
    out = Path(opts.out_dir)
    unit_files = sorted((out / "units").glob("*.json")) if (out / "units").is_dir() else []
    if opts.overwrite:
        return {}
    if (out / "final_info.json").exists():
        raise ConfigError(f"--out_dir={opts.out_dir} already holds a finished run (final_info.json); "
                          "pass --overwrite to replace it or choose another out_dir")
    if not opts.resume:
        require(not unit_files, f"--out_dir={opts.out_dir} holds {len(unit_files)} finished units and "
                                "no final_info.json: pass --resume to continue them or --overwrite "
                                "to discard them")
        return {}
    finished, mine = {}, {k: v for k, v in strict(config_record(opts, cfg)).items()
                          if k not in RUN_CONTROL_KEYS}
    for dataset in datasets_of(cfg):
        for s in range(cfg.num_seeds):
            path = unit_path(out, dataset, s)
            if not path.exists():
                continue
            result = load_unit(path, dataset, s)
            for name, digest in code.items():
                theirs = result.get("code", {}).get(name)
                require(theirs == digest, f"--resume: {path} was made by another {name} (sha256 "
                                          f"{str(theirs or 'not recorded')[:12]}, now {digest[:12]}); restore "
                                          "that version, or pass --overwrite to discard the finished units")
            theirs = {k: v for k, v in result["config"].items() if k not in RUN_CONTROL_KEYS}
            diff = sorted(k for k in set(mine) | set(theirs) if theirs.get(k) != mine.get(k))
            require(not diff, f"--resume: {path} was made with other settings ({', '.join(diff)})")
            finished[(dataset, s)] = result
    return finished


def imported_modules(path):
    """Top-level names a Python file imports anywhere in it (a module imported inside a function
    counts: launch_slurm, instruments, live)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module.split(".")[0] for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) and n.module and not n.level}


def code_files(train_unit, code):
    """{file name: path} of the code a run needs on its own: every file outputs.code_identity
    hashes (`code`'s names: the file defining train_unit, as experiment.py, and the CODE_MODULES
    beside outputs.py), and every module beside outputs.py that one of them imports, at any depth."""
    root = Path(outputs.__file__).parent
    paths = {name: root / name for name in code}
    paths["experiment.py"] = Path(inspect.getsourcefile(train_unit))
    todo = list(paths.values())
    while todo:
        for name in imported_modules(todo.pop()):
            if f"{name}.py" not in paths and (root / f"{name}.py").is_file():
                paths[f"{name}.py"] = root / f"{name}.py"
                todo.append(root / f"{name}.py")
    return paths


def read_code(train_unit, code):
    """{file name: bytes} of code_files, or ConfigError if a hashed file no longer has its sha256
    in `code` (edited since the command was checked)."""
    files = {name: path.read_bytes() for name, path in sorted(code_files(train_unit, code).items())}
    changed = [name for name in code if hashlib.sha256(files[name]).hexdigest() != code[name]]
    require(not changed, f"{', '.join(changed)} changed while this command was being checked; run it again")
    return files


def write_code(folder, files):
    """The run's code in folder (out_dir/code): each file atomically, files of other code removed,
    then SHA256SUMS (`sha256sum -c SHA256SUMS` checks the copy). Written at every start, --resume
    included: check_out_dir has made sure that the finished units were made by this same code."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_atomic(folder / name, lambda tmp, data=data: tmp.write_bytes(data))
    for stale in folder.glob("*.py"):
        if stale.name not in files:
            stale.unlink()
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items())
    write_atomic(folder / "SHA256SUMS", lambda tmp: tmp.write_text(sums))


def prepare_out_dir(opts, cfg, train_unit, code):
    """Clear what --overwrite discards, write config.json (not on --resume, which keeps it) and
    the copy of the code in out_dir/code. code: outputs.code_identity(train_unit), as the units
    record it."""
    files = read_code(train_unit, code)  # before anything is touched
    out = Path(opts.out_dir)
    if opts.overwrite:
        for name in ("final_info.json", "all_results.npy", "run_info.json"):
            (out / name).unlink(missing_ok=True)
        for f in (out / "units").glob("*.json") if (out / "units").is_dir() else []:
            f.unlink()
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the old run's: never mixed with ours
    (out / "units").mkdir(parents=True, exist_ok=True)
    if not (opts.resume and (out / "config.json").exists()):
        write_json(out / "config.json", config_record(opts, cfg))
    write_code(out / "code", files)


def save_unit(opts, cfg, code, result):
    """A finished unit's file in out_dir/units, with the code and settings that made it."""
    result["code"], result["config"] = code, config_record(opts, cfg)
    write_json(unit_path(opts.out_dir, result["dataset"], result["seed_index"]), result)
