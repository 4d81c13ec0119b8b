"""
harness.py: the run machinery behind experiment.py. No idea needs an edit here.

experiment.py holds the science (Config, data, model, optimisation, training) and ends with
`harness.main(Config, train_unit)`. This module never imports experiment.py; it provides:

- the command line, generated from the fields of RunOptions (below) and of experiment's Config:
  bool, int, float, str, Literal[...], X | None and tuple[X, ...] fields (other types are refused
  with one line naming the field); every value is validated before anything is touched: floats
  finite, `ok` intervals and `check` functions of option(), Literal choices, then Config.check();
- UnitRun, handed to train_unit: the records, divergence, the fast path's self-check, the unit's
  final_info and statistics (grokstats.py);
- worker processes (results identical for any --jobs), SIGINT/SIGTERM, --resume (settings from the
  run's config.json; units made by other code refused), strict-JSON outputs written atomically and
  final_info.json last, notes.txt (the run's own section kept in step with its final_info.json),
  and the verdict against run_0.

Units: (dataset, seed index s) for every dataset of cfg.datasets and s < cfg.num_seeds; seed index
s trains with seed cfg.seed + s.
"""
import argparse
import copy
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import grokstats

# ---------------------------------------------------------------------------------------------
# OPTIONS: fields with their allowed values, the command line generated from them, validation.
# ---------------------------------------------------------------------------------------------
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
    overwrite: bool = option(False, "discard what out_dir holds (a finished run or finished units)")
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


RUN_CONTROL_KEYS = ("out_dir", "jobs", "overwrite", "resume", "description", "launcher",
                    "slurm_partition", "slurm_time", "slurm_cpus_per_task", "slurm_gpus_per_task",
                    "slurm_mem", "slurm_array_parallelism", "slurm_extra", "slurm_units_per_task",
                    "slurm_wait", "retries")  # may differ between a run and its --resume


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
    """What RunOptions alone cannot check: out_dir, the device, the seeds."""
    out = opts.out_dir
    require(out.strip(), "--out_dir is empty; name a folder, e.g. --out_dir=run_1")
    path = Path(out)
    require(not path.exists() or path.is_dir(), f"--out_dir={out} is a file; name a folder")
    existing = next(p for p in [path, *path.absolute().parents] if p.exists())
    require(existing.is_dir() and os.access(existing, os.W_OK | os.X_OK),
            f"--out_dir={out}: cannot write in {existing} (permission denied); choose a folder you can write")
    device = opts.device
    if opts.launcher == "slurm":  # the device is the compute node's, not this machine's
        import launch_slurm
        launch_slurm.check(opts)  # sbatch here, --slurm_extra, --slurm_partition
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


def resolve_device(name):
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


COMPILE_MIN_STEPS = 5000  # --compile=auto compiles units this long: a cold compile (2-3 min here) then pays


def use_compile(setting, total_steps, device):
    """--compile=true / false, or auto: true for units of at least COMPILE_MIN_STEPS updates where
    torch.compile's default backend can build (a C++ compiler on CPU, Triton on CUDA). Compiling
    takes about a minute per process and shape; it failing is caught by the fast path's check."""
    if setting != "auto":
        return setting == "true"
    if total_steps < COMPILE_MIN_STEPS:
        return False
    if device.type == "cpu":
        return any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++"))
    return device.type == "cuda" and importlib.util.find_spec("triton") is not None


def datasets_of(cfg):
    names = cfg.datasets if isinstance(cfg.datasets, tuple) else cfg.datasets.split(",")
    return [d for d in names if d]


def config_record(opts, cfg):
    return {**dataclasses.asdict(opts), **dataclasses.asdict(cfg)}


def code_identity(train_unit):
    """sha256 of the experiment file that defines train_unit and of this module."""
    files = {"experiment.py": inspect.getsourcefile(train_unit), "harness.py": __file__}
    return {name: hashlib.sha256(Path(path).read_bytes()).hexdigest() for name, path in files.items()}


# ---------------------------------------------------------------------------------------------
# ONE UNIT: what train_unit gets from the harness.
# ---------------------------------------------------------------------------------------------
FAST_PATH_TOLERANCE = 1e-4  # max |fast - plain| <= TOL x (1 + max |plain|), per tensor


def check_fast_path(model, fast, plain, x, y, loss_fn):
    """None if fast(x) equals plain(x) on this batch (logits, loss and every parameter gradient,
    within FAST_PATH_TOLERANCE) in training mode, else why not. Both see the same random state,
    and the model's parameters, buffers, gradients and the random state are left as they were."""
    saved = copy.deepcopy(model.state_dict())
    params = [p for p in model.parameters() if p.requires_grad]
    cuda = [x.device] if x.device.type == "cuda" else []
    outs = []
    try:
        with torch.random.fork_rng(devices=cuda):
            rng = torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in cuda]
            for fn in (fast, plain):
                torch.set_rng_state(rng[0])
                for d, s in zip(cuda, rng[1]):
                    torch.cuda.set_rng_state(s, d)
                model.zero_grad(set_to_none=True)
                model.load_state_dict(saved)
                try:
                    logits = fn(x)
                    loss = loss_fn(logits, y)
                    loss.backward()
                except Exception as e:
                    if fn is plain:
                        raise
                    first = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
                    return f"the fast forward raised {type(e).__name__}: {first}"
                outs.append([logits.detach(), loss.detach(),
                             *[torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]])
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(saved)
    names = ["logits", "loss", *[n for n, p in model.named_parameters() if p.requires_grad]]
    for name, a, b in zip(names, *outs):
        if a.shape != b.shape:
            return f"{name} has shape {tuple(a.shape)} on the fast path, {tuple(b.shape)} on the plain one"
        err, scale = (a - b).abs().max().item(), b.abs().max().item()
        if not err <= FAST_PATH_TOLERANCE * (1 + scale):
            return (f"{name} differs by {err:.3g} (tolerance {FAST_PATH_TOLERANCE * (1 + scale):.3g}): "
                    "the edit makes the shortcut inexact")
    return None


class UnitRun:
    """One (dataset, seed) unit's harness side, handed to train_unit: its device and seed, the
    fast path's self-check (choose_forward), the records (record) and the result (result)."""

    def __init__(self, cfg, dataset, seed_index, device="cpu", progress=None, warn=None, out_dir=None):
        self.cfg, self.dataset, self.seed_index, self.out_dir = cfg, dataset, seed_index, out_dir
        self.seed, self.device = cfg.seed + seed_index, torch.device(device)
        self.train_info, self.val_info, self.diverged_at = [], [], None
        self.forward = {"path": "plain", "reason": "fast forward not requested", "check_s": 0.0}
        self.progress, self.warn = progress, warn or (lambda m: print(f"warning: {m}", file=sys.stderr))
        self.start = time.perf_counter()

    def choose_forward(self, model, fast, plain, x, y, loss_fn):
        """The first fast forward that computes what plain does on the batch (x, y)
        (check_fast_path), else plain, with one warning line saying why the ones before it
        were not used. fast: a function, or {name: function} tried in order. The path used
        goes into the unit's file."""
        start = time.perf_counter()
        problems = []
        for name, fn in (fast.items() if isinstance(fast, dict) else [("fast", fast)]):
            problem = check_fast_path(model, fn, plain, x, y, loss_fn)
            stop_if_asked()  # an interrupt while torch.compile compiled
            if problem is None:
                break
            problems.append(f"{name}: {problem}" if isinstance(fast, dict) else problem)
        else:
            name, fn = "plain", plain
        self.forward = {"path": name, "reason": "; ".join(problems) or "equal to the plain forward on a train batch",
                        "check_s": round(time.perf_counter() - start, 4)}
        if problems:
            self.warn(f"{self.dataset}_{self.seed_index}: training with the {name} forward: {'; '.join(problems)}")
        return fn

    def save_checkpoint(self, step, state):
        """torch.save(state) as out_dir/checkpoints/{dataset}_{seed_index}/step_{step:06d}.pt,
        atomically (a half-written checkpoint is never there). Returns the path (None without
        an out_dir)."""
        if self.out_dir is None:
            return None
        folder = Path(self.out_dir) / "checkpoints" / f"{self.dataset}_{self.seed_index}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step_{step:06d}.pt"
        write_atomic(path, lambda tmp: torch.save(state, tmp))
        return path

    def record(self, train_row, val_row):
        """Keep one record of each kind; False (stop training) once a loss is not finite."""
        stop_if_asked()
        bad = [k for row in (train_row, val_row) for k, v in row.items()
               if "loss" in k and isinstance(v, float) and not math.isfinite(v)]
        self.train_info.append(strict(train_row))
        self.val_info.append(strict(val_row))
        if self.progress:
            self.progress(train_row["step"])
        if bad:
            self.diverged_at = train_row["step"]
        return not bad

    def result(self):
        final_info = unit_final_info(self.train_info, self.val_info, self.cfg.total_steps,
                                     self.diverged_at)
        return {"dataset": self.dataset, "seed_index": self.seed_index, "seed": self.seed,
                "final_info": final_info, "train_info": self.train_info, "val_info": self.val_info,
                "wall_time_s": time.perf_counter() - self.start, "device": str(self.device),
                "torch_threads": torch.get_num_threads(), "forward": self.forward,
                "diverged_at": self.diverged_at}


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


# ---------------------------------------------------------------------------------------------
# RUNNING UNITS: in this process (--jobs=1) or in worker processes, results identical either way.
# ---------------------------------------------------------------------------------------------
def default_jobs(opts, n_units):
    """CPU: workers x threads = cores; single-threaded workers beat one multi-threaded process
    for these small matrices. GPU: a few units share the device."""
    if opts.jobs:
        return min(opts.jobs, n_units)
    cores = os.cpu_count() or 1
    if resolve_device(opts.device).type == "cpu":
        return max(1, min(cores // opts.threads, n_units))
    return max(1, min(4, cores, n_units))


_progress_queue = _parent_pid = None


def _worker_init(threads, queue, parent_pid):
    global _progress_queue, _parent_pid
    torch.set_num_threads(threads)
    _progress_queue, _parent_pid = queue, parent_pid


def _worker_run(train_unit, cfg, device, dataset, seed_index, out_dir):
    def report(step):  # every record
        if os.getppid() != _parent_pid:  # the main process was killed (kill -9, a launcher's
            os._exit(1)                  # timeout): stop instead of training on as an orphan
        _progress_queue.put(step)
    return train_unit(cfg, dataset, seed_index, UnitRun(cfg, dataset, seed_index, device, report,
                                                        out_dir=out_dir))


def run_units(train_unit, opts, cfg, units, jobs, on_result, bar=None):
    """Run (dataset, seed_index) units, calling on_result(result) as each one finishes."""
    device = resolve_device(opts.device)
    if jobs == 1:
        torch.set_num_threads(opts.threads)
        for dataset, s in units:
            last = [0]

            def report(step):
                if bar:
                    bar.update(step - last[0])
                last[0] = step
            on_result(train_unit(cfg, dataset, s, UnitRun(cfg, dataset, s, device, report,
                                                          out_dir=opts.out_dir)))
        return
    import multiprocessing as mp
    ctx = mp.get_context("spawn")  # fork is unsafe once torch has started threads
    queue = ctx.Queue()
    with ctx.Pool(jobs, initializer=_worker_init, initargs=(opts.threads, queue, os.getpid())) as pool:
        pending = [pool.apply_async(_worker_run, (train_unit, cfg, device, d, s, opts.out_dir))
                   for d, s in units]
        while pending:
            time.sleep(0.2)
            stop_if_asked()
            while not queue.empty():
                queue.get()
                if bar:
                    bar.update(cfg.eval_every)
            for job in [j for j in pending if j.ready()]:
                pending.remove(job)
                on_result(job.get())  # re-raises a worker's exception here


# ---------------------------------------------------------------------------------------------
# OUTPUTS: strict JSON, atomic writes, per-unit files, all_results.npy, final_info.json last.
# ---------------------------------------------------------------------------------------------
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


def unit_path(out_dir, dataset, seed_index):
    return Path(out_dir) / "units" / f"{dataset}_{seed_index}.json"


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


# ---------------------------------------------------------------------------------------------
# OUT_DIR STATE: what is there, checked before anything is touched; --resume's finished units.
# ---------------------------------------------------------------------------------------------
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
                                          f"{str(theirs)[:12]}, now {digest[:12]}); restore that "
                                          "version, or pass --overwrite to discard the finished units")
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
    (out / "units").mkdir(parents=True, exist_ok=True)
    if not (opts.resume and (out / "config.json").exists()):
        write_json(out / "config.json", config_record(opts, cfg))


# ---------------------------------------------------------------------------------------------
# NOTES: the lab notebook beside the run folders. A run owns its heading and the lines it writes
# under it (NOTES_KEYS); every other line of notes.txt is kept as it is.
# ---------------------------------------------------------------------------------------------
NOTES_HEADER = ("# Title: Grokking on algorithmic datasets\n"
                "# Experiment description: (the idea this series of runs tests)\n")
NOTES_KEYS = ("Results: ", "Description: ", "Steps to 99% val acc: ", "Verdict vs run_0: ", "Warning: ")


def run_number(out_dir):
    match = re.fullmatch(r"run_(\d+)", Path(out_dir).resolve().name)
    return int(match.group(1)) if match else None


def one_line(text):
    return " ".join(str(text).split())


def run_title(number, description):
    """"Baseline" for run 0; else the description's first sentence (decimals kept), 80 chars."""
    if number == 0:
        return "Baseline"
    return re.split(r"\.(?:\s|$)", one_line(description), maxsplit=1)[0][:80]


def notes_section(number, means, description, extra=()):
    title = run_title(number, description)
    lines = [f"## Run {number}" + (f": {title}" if title else ""), f"Results: {means}",
             f"Description: {one_line(description) or ('Baseline results.' if number == 0 else '')}",
             *extra]
    return "\n".join(lines) + "\n"


def put_section(text, number, section):
    """text with run `number`'s heading and its NOTES_KEYS lines replaced by `section` (other
    lines under the heading stay after it), or with `section` appended."""
    lines = text.splitlines(keepends=True)
    heading = re.compile(rf"## Run {number}\b")
    start = next((i for i, line in enumerate(lines) if heading.match(line)), None)
    if start is None:
        if text == NOTES_HEADER or text.endswith("\n\n") or not text:
            return text + section
        return text + ("\n" if text.endswith("\n") else "\n\n") + section
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## Run ")), len(lines))
    kept = [line for line in lines[start + 1:end] if not line.startswith(NOTES_KEYS)]
    return "".join(lines[:start]) + section + "".join(kept) + "".join(lines[end:])


def update_notes(out_dir, description, final_infos, extra=()):
    """Create notes.txt beside the run folder if missing (with Run 0 when run_0 exists), then put
    this run's section in it. Returns the path, or None for a folder not named run_N."""
    number = run_number(out_dir)
    if number is None:
        return None
    notes = Path(out_dir).resolve().parent / "notes.txt"
    means = {k: v["means"] for k, v in final_infos.items()}
    text = notes.read_text(encoding="utf-8") if notes.exists() else NOTES_HEADER
    if not notes.exists() and number != 0:
        run0 = notes.parent / "run_0" / "final_info.json"
        if run0.exists():
            base = {k: v["means"] for k, v in json.loads(run0.read_text()).items()}
            text = put_section(text, 0, notes_section(0, base, "Baseline results."))
    text = put_section(text, number, notes_section(number, means, description, extra))
    write_atomic(notes, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return notes


def notes_lines(out_dir, cfg, results):
    """The statistics lines of a run's notes section: steps to 99% (k/n, KM median) per dataset,
    the verdict against run_0 for runs N >= 1, and one warning per diverged unit."""
    lines = ["Steps to 99% val acc: " + "; ".join(
        f"{d} {grok_summary([results[(d, s)] for s in range(cfg.num_seeds)])['text']}"
        for d in datasets_of(cfg))]
    number = run_number(out_dir)
    if number:
        baseline = Path(out_dir).resolve().parent / "run_0"
        verdicts = compare_with_baseline(baseline, cfg, results)
        if verdicts:
            lines.append("Verdict vs run_0: " + " | ".join(f"{d}: {v['text']}" for d, v in verdicts.items()))
    diverged = [f"{d}_{s} at update {r['diverged_at']}" for (d, s), r in sorted(results.items())
                if r.get("diverged_at") is not None]
    if diverged:
        lines.append(f"Warning: diverged (non-finite loss) {len(diverged)}/{len(results)}: "
                     + ", ".join(diverged))
    return lines


def compare_with_baseline(baseline, cfg, results):
    """{dataset: grokstats.compare_to_baseline(...)} for the datasets run_0 shares with this run."""
    try:
        base = grokstats.run_units(baseline)
    except (OSError, ValueError):
        return {}
    verdicts = {}
    for dataset in datasets_of(cfg):
        if dataset in base:
            mine = [grokstats.comparison_unit(r["train_info"], r["val_info"], r["config"]["total_steps"],
                                              r.get("diverged_at") is not None)
                    for r in (results[(dataset, s)] for s in range(cfg.num_seeds))]
            verdicts[dataset] = grokstats.compare_to_baseline(base[dataset], mine)
    return verdicts


# ---------------------------------------------------------------------------------------------
# MAIN
# ---------------------------------------------------------------------------------------------
_deferred = None  # warnings held back while the command is checked (refused: only the error)


def warn(message):
    if _deferred is not None:
        _deferred.append(message)
    else:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def run(Config, train_unit, opts, cfg):
    start = time.perf_counter()
    global _deferred
    code = code_identity(train_unit)
    results = check_out_dir(opts, cfg, code)
    for message in _deferred or []:  # every check passed: now the warnings count
        print(f"warning: {message}", file=sys.stderr, flush=True)
    _deferred = None
    prepare_out_dir(opts, cfg)
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

    if opts.launcher == "slurm" and todo:
        import launch_slurm
        if not launch_slurm.run_units(train_unit, opts, cfg, todo, on_result, bar):
            return None  # submitted (--slurm_wait=false) or units failed: no final_info.json
    else:
        run_units(train_unit, opts, cfg, todo, jobs, on_result, bar)
    if bar:
        bar.close()
    return finish(opts, cfg, results, code, jobs, device, time.perf_counter() - start)


def save_unit(opts, cfg, code, result):
    """A finished unit's file in out_dir/units, with the code and settings that made it."""
    result["code"], result["config"] = code, config_record(opts, cfg)
    write_json(unit_path(opts.out_dir, result["dataset"], result["seed_index"]), result)


def train_and_save_unit(train_unit, opts, cfg, dataset, seed_index):
    """Train one unit in this process and write its file: what a Slurm array task runs.
    Returns the result."""
    torch.set_num_threads(opts.threads)
    code = code_identity(train_unit)  # before training: an edit meanwhile must not relabel this unit
    run = UnitRun(cfg, dataset, seed_index, resolve_device(opts.device), out_dir=opts.out_dir)
    result = train_unit(cfg, dataset, seed_index, run)
    save_unit(opts, cfg, code, result)
    return result


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


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`), handled as Ctrl-C: the worker pool is terminated, finished units kept."""


_stop_signal = None  # SIGINT or SIGTERM, once one has asked this process to stop


def _on_signal(signum, frame):
    """Ctrl-C and `kill PID` stop the run: raised here, and again at the next check (stop_if_asked),
    because torch.compile runs Python in weakref callbacks, where CPython prints and drops an
    exception raised by a signal handler (a Ctrl-C during compiling would otherwise be lost)."""
    global _stop_signal
    _stop_signal = signum
    stop_if_asked()


def stop_if_asked():
    if _stop_signal is not None:
        raise Terminated if _stop_signal == signal.SIGTERM else KeyboardInterrupt


def main(Config, train_unit, argv=None):
    """The command line of experiment.py: parse and check everything, then run."""
    if threading_main():  # `kill PID` must not leave workers running; Ctrl-C must not be lost
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    global _deferred
    _deferred = []
    try:
        opts, cfg = parse(Config, sys.argv[1:] if argv is None else argv)
        final_infos = run(Config, train_unit, opts, cfg)
        if final_infos is None and opts.launcher == "slurm" and opts.slurm_wait:
            sys.exit(1)  # units failed after their retries, each named on stderr; no final_info.json
        return final_infos
    except ConfigError as e:
        _deferred = None
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        print("error: interrupted; finished units are in units/, rerun with --resume", file=sys.stderr)
        sys.exit(143 if isinstance(e, Terminated) else 130)


def threading_main():
    import threading
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # python harness.py restat run_0 [run_1 ...]
    if len(sys.argv) < 3 or sys.argv[1] != "restat":
        sys.exit("usage: python harness.py restat RUN_FOLDER [RUN_FOLDER ...]")
    for folder in sys.argv[2:]:
        restat(folder)
        print(f"restat: {folder}: final_info.json, all_results.npy, units/ and its notes section "
              "recomputed from the saved curves")
