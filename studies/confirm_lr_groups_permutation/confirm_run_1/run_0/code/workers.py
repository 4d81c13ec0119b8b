"""
workers.py: running units, in this process (--jobs=1) or in a pool of spawned worker processes,
results identical either way (each unit seeds its own generators; --threads fixes torch's thread
count per unit). A worker dies with the main process; progress comes back through a queue.
"""
import os
import signal
import sys
import time

import torch

from interrupts import stop_if_asked
from live import live_settings
from options import resolve_device
from outputs import code_identity
from run_dir import save_unit
from unit_run import train


def default_jobs(opts, n_units):
    """CPU: workers x threads = cores; single-threaded workers beat one multi-threaded process
    for these small matrices. GPU: a few units share the device."""
    if opts.jobs:
        return min(opts.jobs, n_units)
    cores = os.cpu_count() or 1
    if resolve_device(opts.device).type == "cpu":
        return max(1, min(cores // opts.threads, n_units))
    return max(1, min(4, cores, n_units))


def process_settings(threads, deterministic):
    """What every process that trains units sets first: torch's thread count (--threads) and, with
    --deterministic, deterministic algorithms (CUBLAS_WORKSPACE_CONFIG before CUDA starts)."""
    torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's reproducible workspace
        torch.use_deterministic_algorithms(True)


_progress_queue = _parent_pid = None


def _worker_init(threads, deterministic, queue, parent_pid):
    global _progress_queue, _parent_pid
    process_settings(threads, deterministic)
    _progress_queue, _parent_pid = queue, parent_pid
    if sys.platform == "linux":  # die with the main process at once, even mid-compile (no record
        import ctypes            # comes for minutes while torch.compile compiles): PR_SET_PDEATHSIG
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the main process died before that was set
            os._exit(1)


def _worker_run(train_unit, cfg, device, dataset, seed_index, out_dir, live):
    def report(step):  # every record
        if os.getppid() != _parent_pid:  # the main process was killed (kill -9, a launcher's
            os._exit(1)                  # timeout): stop instead of training on as an orphan
        _progress_queue.put(step)
    return train(train_unit, cfg, dataset, seed_index, device=device, progress=report, out_dir=out_dir,
                 live=live)


def run_units(train_unit, opts, cfg, units, jobs, on_result, bar=None, then=lambda: None):
    """Run (dataset, seed_index) units, calling on_result(result) as each one finishes, then
    then() (while the workers exit: their interpreters take 1-2 s to tear down); returns its value."""
    device, live = resolve_device(opts.device), live_settings(opts, cfg)  # live: --tensorboard, --wandb
    if jobs == 1:
        process_settings(opts.threads, opts.deterministic)
        for dataset, s in units:
            last = [0]

            def report(step):
                if bar:
                    bar.update(step - last[0])
                last[0] = step
            on_result(train(train_unit, cfg, dataset, s, device=device, progress=report,
                            out_dir=opts.out_dir, live=live))
        return then()
    import multiprocessing as mp
    ctx = mp.get_context("spawn")  # fork is unsafe once torch has started threads
    queue = ctx.Queue()
    with ctx.Pool(jobs, initializer=_worker_init, initargs=(opts.threads, opts.deterministic, queue, os.getpid())) as pool:
        pending = [pool.apply_async(_worker_run, (train_unit, cfg, device, d, s, opts.out_dir, live))
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
        pool.close()  # all done: the workers exit on their own (leaving the `with` terminates them,
        done = then()  # which made the resource tracker warn of torch.compile's leaked semaphores)
        pool.join()
        return done


def train_and_save_unit(train_unit, opts, cfg, dataset, seed_index):
    """Train one unit in this process and write its file: what a Slurm array task runs.
    Returns the result."""
    process_settings(opts.threads, opts.deterministic)
    code = code_identity(train_unit)  # before training: an edit meanwhile must not relabel this unit
    result = train(train_unit, cfg, dataset, seed_index, device=resolve_device(opts.device),
                   out_dir=opts.out_dir, live=live_settings(opts, cfg))
    save_unit(opts, cfg, code, result)
    return result
