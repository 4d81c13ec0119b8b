"""
run_dir.py: what out_dir holds, checked before anything is touched (a finished run is never
overwritten without --overwrite; finished units are never mixed with other settings or code), what
--overwrite clears, and each finished unit's file in out_dir/units (what --resume keeps).
"""
import json
import shutil
from pathlib import Path

from options import RUN_CONTROL_KEYS, ConfigError, require
from outputs import config_record, datasets_of, strict, unit_path, write_json


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


def prepare_out_dir(opts, cfg):
    """Clear what --overwrite discards and write config.json (not on --resume, which keeps it)."""
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


def save_unit(opts, cfg, code, result):
    """A finished unit's file in out_dir/units, with the code and settings that made it."""
    result["code"], result["config"] = code, config_record(opts, cfg)
    write_json(unit_path(opts.out_dir, result["dataset"], result["seed_index"]), result)
