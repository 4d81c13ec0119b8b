"""
options.py: the command line of experiment.py, generated from the fields of RunOptions (below)
and of experiment's Config: bool, int, float, str, Literal[...], X | None and tuple[X, ...] fields
(other types are refused with one line naming the field). Every value is validated before
anything is touched: floats finite, the `ok` intervals and `check` functions of option(), Literal
choices, then Config.check(), then what needs the machine (out_dir writable, the device present,
sbatch for --launcher=slurm, the package of --tensorboard or --wandb). Bad input is a ConfigError:
one line on stderr, exit 2.
warn() prints a warning line, held back while a command is checked (held_warnings).
"""
import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch


class ConfigError(ValueError):
    """Bad input: reported as one line on stderr, exit code 2, before anything is touched."""


def require(ok, message):
    """For Config.check(): raise ConfigError(message) unless ok."""
    if not ok:
        raise ConfigError(message)


def option(default, help, ok=None, check=None):
    """A Config field: its default (the baseline), help text and allowed values. ok: an interval
    such as "(0, 1)" or "[1, inf)" (each element of a tuple field is checked); check: a function
    value -> None, or a message saying what is allowed."""
    return field(default=default, metadata={"help": help, "ok": ok, "check": check})


def _device_check(name):
    return None if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name) else "allowed: auto|cpu|cuda|cuda:N|mps"


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out; never what it computes (apart from device and threads)."""
    out_dir: str = option("run_0", "folder for this run's outputs")
    device: str = option("auto", "auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps",
                         check=_device_check)
    jobs: int = option(0, "units run at once in worker processes; 0 = auto (one per CPU core)",
                       ok="[0, inf)")
    threads: int = option(1, "torch CPU threads per unit; fixed, because float results depend on "
                             "it: any --jobs then gives identical numbers", ok="[1, inf)")
    overwrite: bool = option(False, "discard what out_dir holds (a finished run, finished units, checkpoints)")
    resume: bool = option(False, "continue the run in out_dir with its own config.json: only "
                                 "missing units run")
    description: str = option("", "what this run changed; its notes.txt section's title and text")
    # where units run: this machine's worker pool, or a Slurm job array (launch_slurm.py)
    launcher: typing.Literal["local", "slurm"] = option("local", "local worker pool | slurm (one "
                                                        "array task per unit, through submitit)")
    slurm_partition: str = option("", "Slurm partition; empty = the cluster's default")
    slurm_time: int = option(60, "Slurm time limit per array task, in minutes", ok="[1, inf)")
    slurm_cpus_per_task: int = option(1, "CPUs per array task", ok="[1, inf)")
    slurm_gpus_per_task: int = option(0, "GPUs per array task", ok="[0, inf)")
    slurm_mem: str = option("", "memory per array task, e.g. 4G; empty = the cluster's default")
    slurm_array_parallelism: int = option(0, "array tasks running at once; 0 = no limit", ok="[0, inf)")
    slurm_extra: str = option("", "extra sbatch flags as KEY=VALUE,KEY=VALUE (e.g. account=lab,qos=low)")
    slurm_units_per_task: int = option(1, "units trained one after another in one array task",
                                       ok="[1, inf)")
    slurm_wait: bool = option(True, "wait for the array, with progress, and write the results; "
                                    "false = submit and return (collect later with --resume)")
    retries: int = option(1, "times a failed, timed-out or preempted Slurm unit is resubmitted",
                          ok="[0, inf)")
    deterministic: bool = option(False, "torch.use_deterministic_algorithms(True) and "
                                        "CUBLAS_WORKSPACE_CONFIG=:4096:8 in every process that trains: "
                                        "bit-identical results on CUDA for the same command (docs/gpu.md)")
    # live curves (live.py, docs/live-curves.md): they only read the records, never change one
    tensorboard: bool = option(False, "write each unit's records as TensorBoard scalars in "
                                      "out_dir/tensorboard/ as they are taken (needs tensorboard)")
    wandb: bool = option(False, "log each unit's records to Weights & Biases, offline in out_dir/wandb/ "
                                "unless WANDB_MODE or WANDB_API_KEY is set (needs wandb)")


RUN_CONTROL_KEYS = ("out_dir", "jobs", "overwrite", "resume", "description", "launcher",
                    "slurm_partition", "slurm_time", "slurm_cpus_per_task", "slurm_gpus_per_task",
                    "slurm_mem", "slurm_array_parallelism", "slurm_extra", "slurm_units_per_task",
                    "slurm_wait", "retries", "tensorboard", "wandb")  # may differ between a run and its --resume


def parse_bool(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def converter(name, tp):
    """text -> value for a field of type tp, or ConfigError naming an unsupported type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in (int, float, str):
        return tp
    if tp is bool:
        return parse_bool
    if origin is typing.Literal and all(type(a) in (str, int) for a in args):
        kinds = {type(a) for a in args}
        return str if kinds == {str} else int if kinds == {int} else str
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = converter(name, next(a for a in args if a is not type(None)))
        return lambda text: None if text.lower() in ("none", "null") else inner(text)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        inner = converter(name, args[0])
        return lambda text: tuple(inner(t.strip()) for t in text.split(",")) if text.strip() else ()
    raise ConfigError(f"Config field {name!r} has type {tp}, which the command line cannot read; "
                      "use bool, int, float, str, Literal[...], X | None or tuple[X, ...]")


def show(value):
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def one_line(text):
    return " ".join(str(text).split())


def in_interval(value, interval):
    lo_kind, lo, hi, hi_kind = re.fullmatch(r"([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])", interval).groups()
    lo, hi = float(lo), float(hi)
    return (value >= lo if lo_kind == "[" else value > lo) and (value <= hi if hi_kind == "]" else value < hi)


def check_field(f, tp, value):
    """ConfigError naming --field=value and what is allowed, unless value is allowed."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    items = value if origin is tuple else (value,)
    name = f"--{f.name}={show(value)}"
    for item in items:
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{name} must be a finite number")
        if origin is typing.Literal and item not in args:
            raise ConfigError(f"{name} is unknown; allowed: {'|'.join(map(str, args))}")
        interval = f.metadata.get("ok")
        if interval and not in_interval(item, interval):
            raise ConfigError(f"{name} must be in {interval}")
    check = f.metadata.get("check")
    problem = check(value) if check else None
    if problem:
        raise ConfigError(f"{name}: {problem}")


def field_types(cls):
    hints = typing.get_type_hints(cls, include_extras=False)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def validate(obj):
    for name, (f, tp) in field_types(type(obj)).items():
        check_field(f, tp, getattr(obj, name))
    if hasattr(obj, "check"):
        obj.check()  # cross-field rules, beside the fields they check (Config.check)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(message)


def make_parser(Config):
    parser = OneLineParser(description="grokking-harness: train on algorithmic datasets and watch "
                                       "them grok.", allow_abbrev=False)
    seen = set()
    for cls, title in ((RunOptions, "run (harness.py)"), (Config, "experiment (experiment.py)")):
        group = parser.add_argument_group(title)
        for name, (f, tp) in field_types(cls).items():
            if name in seen:
                raise ConfigError(f"Config field {name!r} clashes with the harness option --{name}")
            seen.add(name)
            kind = converter(name, tp)
            extra = {"nargs": "?", "const": True} if kind is parse_bool else {}
            wrapped = _argparse_type(kind, tp)
            help_text = f"{f.metadata.get('help', '')} (default: {show(f.default)})"
            group.add_argument(f"--{name}", type=wrapped, default=argparse.SUPPRESS,
                               help=help_text.replace("%", "%%"), **extra)
    return parser


def _argparse_type(kind, tp):
    def read(text):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r} (expected {tp})") from None
    read.__name__ = getattr(kind, "__name__", "value")
    return read


def from_stored(cls, stored):
    """Field values of cls from a config.json dict (JSON lists back to tuples)."""
    types_ = field_types(cls)

    def value(k, v):
        if isinstance(v, list):
            return tuple(v)
        if isinstance(v, bool) and typing.get_origin(types_[k][1]) is typing.Literal:
            return str(v).lower()  # an option that was a bool (--compile) and became true/false/auto
        return v
    return {k: value(k, v) for k, v in stored.items() if k in types_}


def parse(Config, argv):
    """(RunOptions, Config) from the command line; with --resume, from out_dir's config.json,
    refusing explicit settings that differ from it. Raises ConfigError; touches nothing."""
    given = vars(make_parser(Config).parse_args(argv))
    run_names, cfg_names = set(field_types(RunOptions)), set(field_types(Config))
    opts = RunOptions(**{k: v for k, v in given.items() if k in run_names})
    validate(opts)
    base, stored = {}, None
    config_path = Path(opts.out_dir) / "config.json"
    if opts.resume and opts.out_dir and config_path.is_file():
        try:
            stored = json.loads(config_path.read_text())
            assert isinstance(stored, dict)
        except (ValueError, AssertionError, UnicodeDecodeError):
            raise ConfigError(f"--resume: {config_path} is not a readable config; "
                              "pass --overwrite to start this run again")
        unknown = sorted(set(stored) - run_names - cfg_names)
        require(not unknown, f"--resume: {config_path} has settings this experiment.py does not "
                             f"know ({', '.join(unknown)}); pass --overwrite to start again")
        base = from_stored(Config, stored)
        kept = from_stored(RunOptions, {k: v for k, v in stored.items() if k not in RUN_CONTROL_KEYS})
        differ = sorted(k for k, v in given.items() if k not in RUN_CONTROL_KEYS
                        and k in stored and from_stored(type(opts) if k in run_names else Config,
                                                        {k: stored[k]}).get(k) != v)
        require(not differ, f"--resume: {', '.join('--' + k for k in differ)} "
                            f"{'differs' if len(differ) == 1 else 'differ'} from "
                            f"{config_path}; a resumed run keeps its settings (drop them, or "
                            "start a new out_dir)")
        opts = dataclasses.replace(opts, **{k: v for k, v in kept.items() if k not in given})
    cfg = Config(**{**base, **{k: v for k, v in given.items() if k in cfg_names}})
    validate(cfg)
    check_run(opts, cfg)
    return opts, cfg


def check_run(opts, cfg):
    """What RunOptions alone cannot check: out_dir, the device, the seeds, the packages of
    --tensorboard and --wandb."""
    out = opts.out_dir
    require(out.strip(), "--out_dir is empty; name a folder, e.g. --out_dir=run_1")
    path = Path(out)
    require(not path.exists() or path.is_dir(), f"--out_dir={out} is a file; name a folder")
    existing = next(p for p in [path, *path.absolute().parents] if p.exists())
    require(existing.is_dir() and os.access(existing, os.W_OK | os.X_OK),
            f"--out_dir={out}: cannot write in {existing} (permission denied); choose a folder you can write")
    device = opts.device
    if opts.launcher == "slurm":  # the device is the compute node's, not this machine's
        check_slurm(opts)  # sbatch here, --slurm_extra, --slurm_partition
    elif device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        require(torch.cuda.is_available() and index < torch.cuda.device_count(),
                f"--device={device}: no such CUDA device here ({torch.cuda.device_count()} found); "
                "use --device=cpu or --device=auto")
    elif device == "mps":
        require(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available(),
                "--device=mps: no MPS device here; use --device=cpu or --device=auto")
    require(0 <= cfg.seed and cfg.seed + cfg.num_seeds - 1 < 2 ** 64,
            f"--seed={cfg.seed} with --num_seeds={cfg.num_seeds} needs seeds in [0, 2**64)")
    check_live(opts)


def importable(name):
    """Whether `import name` would find the module; imports nothing (a blocked one: False)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_live(opts):
    """ConfigError naming the package to install when --tensorboard or --wandb cannot import it
    (torch.utils.tensorboard needs the tensorboard package)."""
    for on, package in ((opts.tensorboard, "tensorboard"), (opts.wandb, "wandb")):
        require(not on or importable(package), f"--{package} needs the {package} package: pip install {package}")


def parse_extra(text):
    """--slurm_extra "KEY=VALUE,KEY=VALUE" -> {key: value} for sbatch (--key=value). A comma-separated
    piece without "=" continues the value before it (mail-type=BEGIN,END). ConfigError otherwise."""
    extra, key = {}, None
    for piece in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, value = piece.partition("=")
        if sep and re.fullmatch(r"[A-Za-z][\w-]*", name.strip()):
            key = name.strip()
            extra[key] = value.strip()
        elif key and not sep:
            extra[key] += "," + piece
        else:
            raise ConfigError(f"--slurm_extra={text}: {piece!r} is not KEY=VALUE (e.g. account=lab,qos=low)")
    return extra


def check_slurm(opts):
    """ConfigError unless this machine can submit (sbatch found), --slurm_extra reads and sinfo knows
    the partitions of --slurm_partition (not checked when sinfo does not answer). Reads only."""
    if not shutil.which("sbatch"):
        raise ConfigError("--launcher=slurm: sbatch not found here; submit from a Slurm login node, or "
                          "use --launcher=local")
    parse_extra(opts.slurm_extra)
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return
    known = set(proc.stdout.split())
    unknown = [p for p in opts.slurm_partition.split(",") if p and known and p not in known]
    if unknown and not proc.returncode:
        raise ConfigError(f"--slurm_partition={opts.slurm_partition}: no partition {unknown[0]} here; "
                          f"allowed: {'|'.join(sorted(known))}")


def resolve_device(name):
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


_deferred = None  # warnings held back while the command is checked (refused: only the error)


def warn(message):
    if _deferred is not None:
        _deferred.append(message)
    else:
        print(f"warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def held_warnings():
    """Hold warn()'s messages while a command is checked; shown once each (in order) only if the
    block ends without an error: a refused command prints its one error line and nothing else."""
    global _deferred
    _deferred = []
    try:
        yield
        held, _deferred = _deferred, None
        for message in dict.fromkeys(held):
            warn(message)
    finally:
        _deferred = None
