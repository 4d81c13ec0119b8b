"""
launch_slurm.py: --launcher=slurm. The missing units of a run (harness.run -> run_units) or of a
whole sweep (sweep.py -> launch, then run_units per point) run as the tasks of a Slurm job array,
submitted through submitit. Each array task trains --slurm_units_per_task units of one run, one
after another, with workers.train_and_save_unit and writes their unit files into the run folder, so
that folder must be on a filesystem that the compute nodes share with the submitting machine.

Files:
- <folder>/slurm/<job id>/: submitit's files for one array task (job id "123_4" = task 4 of array
  123): <job id>_0_log.out (stdout: "unit: ... started" / "written"), <job id>_0_log.err (stderr,
  tracebacks, Slurm's own messages), the pickled task and its result. <folder> is the run's out_dir,
  or the sweep folder for a sweep's array.
- out_dir/slurm/jobs.json (strict JSON, written atomically by the submitting process only):
  {"units": {"<dataset>_<s>": {"job": job id, "log": absolute path of its .err log, "settings":
  hash of the run's settings and code}}}: the job each unit was last submitted to.

Waiting: a unit is finished when its unit file exists (checked every second). At most every
SQUEUE_EVERY_S, squeue says which jobs are alive. A unit whose job reached a state in ENDED, or left
the queue, without its unit file failed (failed, cancelled, timed out, preempted and not requeued,
out of memory, node failure): one line on stderr names it, the job's last state, its log and the
log's last line, and it is resubmitted, up to --retries times per command. States come from squeue
alone: sacct needs accounting storage, which a small cluster may lack.

Collecting later (--slurm_wait=false, then --resume; or after Ctrl-C while waiting): a recorded job
that is still queued or running, submitted with the same settings and code, is waited for, not
resubmitted; one submitted with other settings or code (after --overwrite or an edit) is cancelled
(scancel), because it would write a unit of another configuration into the folder.
"""
import contextlib
import dataclasses
import hashlib
import importlib.util
import inspect
import io
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from options import RUN_CONTROL_KEYS, ConfigError, parse_extra
from outputs import code_identity, config_record, strict, unit_path, write_json
from run_dir import load_unit
from workers import train_and_save_unit

SQUEUE_EVERY_S = 5.0  # squeue calls are the only load this puts on the controller
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
         "TIMEOUT"}  # PREEMPTED is not here: a requeued job comes back; one that does not leaves the queue
JOB_NAME = "grokking"


# ---------------------------------------------------------------------------------------------
# THE ARRAY TASK: what runs on a compute node.
# ---------------------------------------------------------------------------------------------
def _stop(signum, frame):
    raise SystemExit(f"stopped by signal {signal.Signals(signum).name} (scancel, preemption or the "
                     "node going down): the unit being trained was not written")


def import_file(path):
    """The module of a Python file, imported by path under its file name (experiment.py -> experiment)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass(frozen=True)
class ArrayTask:
    """One array task: import the experiment file by path, then train and save each unit. Importing
    by path at the task's start (not pickling the code by value) makes the code hash in each unit
    file the hash of the code that ran."""
    experiment: str  # absolute path of the file that defines train_unit and Config
    train_unit: str  # their names in it
    config: str

    def __call__(self, opts, cfg_fields, units):
        signal.signal(signal.SIGTERM, _stop)  # submitit ignores SIGTERM; a unit cannot checkpoint
        module = import_file(self.experiment)
        cfg = getattr(module, self.config)(**cfg_fields)
        for dataset, s in units:
            print(f"unit: {dataset}_{s} started", flush=True)
            train_and_save_unit(getattr(module, self.train_unit), opts, cfg, dataset, s)
            print(f"unit: {dataset}_{s} written to {unit_path(opts.out_dir, dataset, s)}", flush=True)


# ---------------------------------------------------------------------------------------------
# SUBMITTING: one array for every unit that has no live job.
# ---------------------------------------------------------------------------------------------
def executor_parameters(opts, experiment, n_tasks):
    """submitit.SlurmExecutor parameters from the --slurm_* options."""
    extra = parse_extra(opts.slurm_extra)
    if opts.slurm_mem:
        extra.setdefault("mem", opts.slurm_mem)  # not submitit's mem_gb: "4G", "500M" pass as given
    paths = ":".join(dict.fromkeys([str(Path(experiment).parent), str(Path(__file__).resolve().parent)]))
    params = {"job_name": JOB_NAME, "time": opts.slurm_time, "cpus_per_task": opts.slurm_cpus_per_task,
              "gpus_per_task": opts.slurm_gpus_per_task or None, "partition": opts.slurm_partition or None,
              "array_parallelism": opts.slurm_array_parallelism or n_tasks,
              # submitit's warning signal before the time limit; a unit cannot checkpoint, so keep it short
              "signal_delay_s": min(90, 6 * opts.slurm_time),
              # the task unpickles ArrayTask (this module) and imports harness and the experiment
              "setup": [f"export PYTHONPATH={shlex.quote(paths)}${{PYTHONPATH:+:$PYTHONPATH}}"],
              "additional_parameters": extra}
    return {k: v for k, v in params.items() if v is not None}


def max_array_size():
    """The cluster's MaxArraySize (scontrol show config), else Slurm's default, 1001."""
    try:
        text = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.M)
    return int(match.group(1)) if match else 1001


def submit(train_unit, tasks, folder):
    """Submit tasks [(opts, cfg, units)] (same --slurm_* options) as one job array (several when
    more than MaxArraySize). Returns one submitit job per task. ConfigError if sbatch refuses."""
    try:
        import submitit
        executor = submitit.SlurmExecutor(folder=Path(folder).resolve() / "slurm" / "%j")
    except RuntimeError as e:  # submitit's "Could not detect srun"
        raise ConfigError(f"--launcher=slurm: no Slurm here ({e}); use --launcher=local") from None
    experiment = str(Path(inspect.getsourcefile(train_unit)).resolve())
    task = ArrayTask(experiment, train_unit.__name__, type(tasks[0][1]).__name__)
    size, jobs = max_array_size(), []
    tasks = [(dataclasses.replace(opts, out_dir=str(Path(opts.out_dir).resolve())), cfg, units)
             for opts, cfg, units in tasks]  # absolute: a task may start in another folder
    for start in range(0, len(tasks), size):
        chunk = tasks[start:start + size]
        executor.update_parameters(**executor_parameters(chunk[0][0], experiment, len(chunk)))
        try:
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():  # submitit echoes sbatch
                jobs += [executor.submit(task, opts, dataclasses.asdict(cfg), units)
                         for opts, cfg, units in chunk]
        except Exception as e:  # sbatch's own words: a bad account, time limit, memory request...
            said = [line.strip(" '\"").removeprefix("sbatch: error: ") for line in str(e).splitlines()]
            raise ConfigError(f"--launcher=slurm: sbatch refused the array: "
                              f"{'; '.join(filter(None, said)) or repr(e)}") from None
        first = jobs[-len(chunk)].job_id.split("_")[0]
        print(f"slurm: submitted job {first} (array tasks: {len(chunk)}, units: "
              f"{sum(len(u) for _, _, u in chunk)}); logs in {Path(folder) / 'slurm' / first}_*/", flush=True)
    return jobs


def job_states(job_ids):
    """{job id: squeue state} of these jobs, array tasks one by one ("123_4": "RUNNING"); jobs that
    left the queue are absent. None if squeue did not answer."""
    arrays = sorted({str(j).split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", ",".join(arrays)],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode:  # every job already purged from the queue is an error to squeue
        return {} if "Invalid job id" in proc.stderr else None
    return dict(line.split()[:2] for line in proc.stdout.splitlines() if len(line.split()) >= 2)


def record_path(out_dir):
    return Path(out_dir) / "slurm" / "jobs.json"


def read_record(out_dir):
    """jobs.json's {"<dataset>_<s>": entry}; {} if there is none or it is unreadable."""
    try:
        units = json.loads(record_path(out_dir).read_text()).get("units")
        return units if isinstance(units, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def settings_key(opts, cfg, code):
    """Hash of what a unit's result depends on: the settings a --resume keeps, and the code."""
    kept = {k: v for k, v in config_record(opts, cfg).items() if k not in RUN_CONTROL_KEYS}
    text = json.dumps([strict(kept), code], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def name(unit):
    return f"{unit[0]}_{unit[1]}"


def launch(train_unit, runs, folder):
    """Give every unit of runs [(opts, cfg, units)] a live Slurm job: adopt a recorded job that is
    queued or running with the same settings and code; cancel one with others; submit all the other
    units, of every run, as one array into folder/slurm. Records each run's jobs in its jobs.json.
    Returns, per run, {unit: jobs.json entry}."""
    code = code_identity(train_unit)
    records = [read_record(opts.out_dir) for opts, _, _ in runs]
    states = job_states([e.get("job") for r in records for e in r.values() if isinstance(e, dict)])
    if states is None:
        raise ConfigError("--launcher=slurm: squeue does not answer; is Slurm up here?")
    adopted, tasks, stale = [], [], []
    for i, ((opts, cfg, units), record) in enumerate(zip(runs, records)):
        key, mine, todo = settings_key(opts, cfg, code), {}, []
        for unit in units:
            entry = record.get(name(unit))
            alive = isinstance(entry, dict) and states.get(entry.get("job"), "COMPLETED") not in ENDED
            if alive and entry.get("settings") == key:
                mine[unit] = entry
            else:
                stale += [entry["job"]] if alive else []
                todo.append(unit)
        adopted.append(mine)
        step = opts.slurm_units_per_task
        tasks += [(i, opts, cfg, todo[j:j + step], key) for j in range(0, len(todo), step)]
    stale = list(dict.fromkeys(stale))  # a task of several units appears once per unit
    if stale:
        subprocess.run(["scancel", *stale], check=False)
        print(f"slurm: cancelled {len(stale)} queued or running units of other settings or code: "
              f"{', '.join(stale)}", flush=True)
    if sum(len(a) for a in adopted):
        jobs = sorted({e["job"].split("_")[0] for a in adopted for e in a.values()})
        print(f"slurm: {sum(len(a) for a in adopted)} units already queued or running (job "
              f"{', '.join(jobs)}): waiting for them, not resubmitting", flush=True)
    jobs = submit(train_unit, [t[1:4] for t in tasks], folder) if tasks else []
    for (i, _, _, units, key), job in zip(tasks, jobs):
        adopted[i].update({unit: {"job": job.job_id, "log": str(job.paths.stderr), "settings": key}
                           for unit in units})
    for (opts, _, _), record, mine in zip(runs, records, adopted):
        if mine:
            record_path(opts.out_dir).parent.mkdir(parents=True, exist_ok=True)
            units = {**record, **{name(u): e for u, e in mine.items()}}
            write_json(record_path(opts.out_dir), {"units": units})
    return adopted


# ---------------------------------------------------------------------------------------------
# WAITING: unit files appear; failed units are reported and resubmitted.
# ---------------------------------------------------------------------------------------------
def last_line(path):
    """The log's last line that is not srun's own ("srun: error: ... Exited with exit code 1"): the
    exception, the signal that stopped the unit, or Slurm's "CANCELLED AT ..." / "DUE TO TIME LIMIT"."""
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines()
                 if line.strip() and not line.startswith("srun:")]
    except OSError:
        return "no log yet"
    return lines[-1][:200] if lines else "empty log"


def run_units(train_unit, opts, cfg, todo, on_result, bar=None):
    """harness.run's Slurm path: submit (or adopt) the units todo [(dataset, s)], then, with
    --slurm_wait, wait for them: on_result(result, written=True) for each finished unit, failed ones
    reported and resubmitted up to opts.retries times. True when every unit finished; False when only
    submitted (--slurm_wait=false) or when units failed after their retries."""
    pending = launch(train_unit, [(opts, cfg, todo)], opts.out_dir)[0]
    script = Path(inspect.getsourcefile(train_unit)).name
    if not opts.slurm_wait:
        print(f"slurm: {len(pending)} units queued; collect them (and final_info.json) with: python "
              f"{script} --out_dir={opts.out_dir} --resume", flush=True)
        return False
    print(f"slurm: waiting for {len(pending)} units; Ctrl-C stops waiting, not the jobs (collect them "
          f"with --resume)", flush=True)
    retries, failed, last_state, queried = dict.fromkeys(pending, 0), [], {}, -SQUEUE_EVERY_S
    while pending:
        states = None
        if time.monotonic() - queried >= SQUEUE_EVERY_S:  # before the files: a job that ended
            states, queried = job_states([e["job"] for e in pending.values()]), time.monotonic()
        ended = []
        for unit, entry in list(pending.items()):
            path = unit_path(opts.out_dir, *unit)
            if path.exists():
                del pending[unit]
                on_result(load_unit(path, *unit), written=True)
                if bar:
                    bar.update(cfg.total_steps)
            elif states is not None:
                job = entry["job"]
                last_state[job] = states.get(job, last_state.get(job, "left the queue"))
                if job not in states or states[job] in ENDED:
                    ended.append(unit)
        again = [u for u in ended if retries[u] < opts.retries]
        for unit in ended:
            entry = pending.pop(unit)
            tail = (f"resubmitting (retry {retries[unit] + 1} of {opts.retries})" if unit in again
                    else f"not resubmitted (--retries={opts.retries} used)")
            print(f"{'warning' if unit in again else 'error'}: {name(unit)} of {opts.out_dir} ended "
                  f"without its unit file (Slurm job {entry['job']}: {last_state[entry['job']]}); log: "
                  f"{entry['log']} ({last_line(entry['log'])}); {tail}", file=sys.stderr, flush=True)
        if again:
            pending.update(launch(train_unit, [(opts, cfg, again)], opts.out_dir)[0])
            retries.update({u: retries[u] + 1 for u in again})
        failed += [u for u in ended if u not in again]
        if pending:
            time.sleep(1)
    if failed:
        print(f"error: {len(failed)} units of {opts.out_dir} failed ({', '.join(map(name, failed))}): no "
              f"final_info.json; rerun with --resume to train them again", file=sys.stderr, flush=True)
    return not failed
