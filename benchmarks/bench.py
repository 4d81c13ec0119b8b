"""Speed of the default configuration on this machine, in about 3 minutes.

    python benchmarks/bench.py              # add --compile to time torch.compile too (+3-6 min)

Measures ms per update and per evaluation (whole val split) of one unit, single-threaded as the
workers run, for the fast forward (with and without the first block's token tables), the plain
forward and, with --compile, the compiled fast forward (what --compile=auto runs for long units
where a compiler exists; compile time excluded: it is paid once per process and shape); projects
the full baseline (4 datasets x 3 seeds x 7500 updates, eval every 10) for the default --jobs; on
a CPU, measures the core's matmul rate and counts the matmul FLOPs of an update and an evaluation,
giving the baseline's arithmetic floor (no overhead at all), and profiles an update to split its
time into matmuls and everything else; then times a short multi-unit run of experiment.py at
--jobs=1 and --jobs=2.
Ratios within one run are what to compare across machines.
"""
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import experiment as E  # noqa: E402
import fast_forward
import options
import unit_run
import workers

TIMED = ("x_plus_y", "permutation")
DEVICE = "auto"  # the smallest and the largest vocabulary and val split


def without_token_tables(unit):
    """The unit's forward made the fast forward as it was before the first block's q/k/v tables."""
    unit.logits_fn = fast_forward.Shortcut(unit.model, fast_forward.dataset_tables(unit.data), token_tables=False)


def time_unit(dataset, cfg, updates=20, evals=2, token_tables=True):
    """(ms per update, ms per evaluation) of one unit, through experiment.py's own functions."""
    device = options.resolve_device(DEVICE)
    unit = E.build_unit(cfg, dataset, unit_run.UnitRun(cfg, dataset, 0, device))
    data = unit.data
    if not token_tables:
        without_token_tables(unit)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps = itertools.count()

    def update():
        idx = torch.randint(len(data["train_y"]), (cfg.batch_size,), device=device)
        E.train_step(cfg, next(steps), unit, data["train_x"][idx], data["train_y"][idx])

    def evaluate():
        E.evaluate(unit, data["val_x"], data["val_y"], cfg.eval_batch_size)

    timings = []
    for step, n in ((update, updates), (evaluate, evals)):
        step(), step(), sync()  # warm-up (and compilation)
        start = time.perf_counter()
        for _ in range(n):
            step()
        sync()
        timings.append((time.perf_counter() - start) / n * 1e3)
    return timings


def projected_baseline_s(per_dataset, cfg, jobs):
    """Wall time of all units, spread evenly over `jobs` workers."""
    unit_s = {d: (cfg.total_steps * u + cfg.total_steps // cfg.eval_every * e) / 1e3
              for d, (u, e) in per_dataset.items()}
    total = sum(unit_s[d if d in unit_s else "x_plus_y"] * cfg.num_seeds for d in E.DATASETS)
    return total / jobs


def matmul_gflops(seconds=1.0):
    """fp32 matmul GFLOP/s at the caller's thread count, on a typical shape of the model (the
    FFN's first layer on 1024 rows)."""
    a, b = torch.randn(1024, 128), torch.randn(128, 512)
    a @ b
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 1024 * 128 * 512 * n / (time.perf_counter() - start) / 1e9


def unit_gflop(dataset, cfg, token_tables=True):
    """Matmul GFLOP of one update and of one evaluation, counted by torch's FlopCounterMode."""
    unit = E.build_unit(cfg, dataset, unit_run.UnitRun(cfg, dataset, 0, "cpu"))
    data = unit.data
    if not token_tables:
        without_token_tables(unit)
    x, y = data["train_x"][:cfg.batch_size], data["train_y"][:cfg.batch_size]
    with FlopCounterMode(display=False) as update:
        E.train_step(cfg, 100, unit, x, y)
    with FlopCounterMode(display=False) as evaluation:
        E.evaluate(unit, data["val_x"], data["val_y"], cfg.eval_batch_size)
    return update.get_total_flops() / 1e9, evaluation.get_total_flops() / 1e9


def matmul_share(dataset, cfg, updates=10):
    """(ms per update, of which ms in matmuls) of one unit's update, from torch.profiler's
    self times (mm, addmm, bmm: the ops the floor counts), after a warm-up (and compilation)."""
    from torch.profiler import profile
    unit = E.build_unit(cfg, dataset, unit_run.UnitRun(cfg, dataset, 0, "cpu", warn=lambda m: None))
    data = unit.data
    x, y = data["train_x"][:cfg.batch_size], data["train_y"][:cfg.batch_size]
    for step in range(3):
        E.train_step(cfg, step, unit, x, y)
    with profile() as prof:
        start = time.perf_counter()
        for step in range(updates):
            E.train_step(cfg, 100 + step, unit, x, y)
        wall = (time.perf_counter() - start) / updates * 1e3
    mm = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    return wall, mm / updates / 1e3


def time_jobs(jobs, steps=100):
    """Wall time of experiment.py on 4 units of `steps` updates with --jobs=jobs."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "experiment.py"), f"--out_dir={tmp}/r",
                        "--datasets=x_plus_y,x_minus_y", "--num_seeds=2", f"--total_steps={steps}",
                        f"--jobs={jobs}"], check=True, capture_output=True)
        return time.perf_counter() - start


def main():
    torch.set_num_threads(1)
    cfg = E.Config()
    opts = options.RunOptions(device=DEVICE)
    device = options.resolve_device(opts.device)
    jobs = workers.default_jobs(opts, len(E.DATASETS) * cfg.num_seeds)
    print(f"device: {device}, cpu_count: {os.cpu_count()}, torch: {torch.__version__}, "
          f"default jobs: {jobs}, threads per job: {opts.threads}")
    eager = E.Config(compile="false")
    variants = {"fast": (eager, True), "fast, no token tables": (eager, False),
                "plain": (E.Config(fast_forward=False, compile="false"), True)}
    if "--compile" in sys.argv:
        variants["fast, compiled"] = (E.Config(compile="true"), True)
    default = "fast, compiled" if fast_forward.use_compile(cfg.compile, cfg.total_steps, device) else "fast"
    print(f"--compile={cfg.compile} runs the '{default}' variant for the baseline here")
    results = {}
    print("| variant | dataset | ms/update | ms/eval | projected baseline (min) |")
    print("|---|---|---|---|---|")
    for name, (c, tables) in variants.items():
        per_dataset = {d: time_unit(d, c, token_tables=tables) for d in TIMED}
        results[name] = projected_baseline_s(per_dataset, c, jobs)
        for d, (u, e) in per_dataset.items():
            print(f"| {name} | {d} | {u:.1f} | {e:.0f} | {results[name] / 60:.1f} |")
    print(", ".join(f"{name} {results['plain'] / r:.2f}x" for name, r in results.items() if name != "plain")
          + " faster than plain (projected baseline)")
    if device.type == "cpu":  # the floor: the matmul arithmetic alone at this core's rate
        rate = matmul_gflops()
        print(f"matmul rate (1 thread, 1024x128 @ 128x512): {rate:.0f} GFLOP/s")
        gflop = {}
        for name, tables in (("fast", True), ("fast, no token tables", False)):
            flops = gflop[name] = {d: unit_gflop(d, eager, tables) for d in TIMED}
            floor = projected_baseline_s({d: (u / rate * 1e3, e / rate * 1e3)
                                          for d, (u, e) in flops.items()}, cfg, jobs)
            print(f"{name}: matmul GFLOP per update / eval: "
                  + ", ".join(f"{d} {u:.2f} / {e:.2f}" for d, (u, e) in flops.items())
                  + f"; arithmetic floor of the baseline (matmuls only, at that rate, {jobs} jobs): "
                  f"{floor / 60:.1f} min; its projection above is {results[name] / floor:.2f}x the floor"
                  + (f", compiled {results['fast, compiled'] / floor:.2f}x" if name == "fast" and
                     "fast, compiled" in results else ""))
        for name, c in (("fast", eager), ("fast, compiled", E.Config(compile="true"))):
            if name in results:  # what the floor leaves out: time outside the matmuls
                wall, mm = matmul_share("x_plus_y", c)
                print(f"{name}, x_plus_y, under torch.profiler: {wall:.1f} ms per update, {mm:.1f} ms of it "
                      f"in matmuls ({mm / wall:.0%}; {gflop['fast']['x_plus_y'][0] / mm * 1e3:.0f} GFLOP/s), "
                      f"{wall - mm:.1f} ms in everything else")
    walls = {j: time_jobs(j) for j in (1, 2)}
    print("| --jobs | wall s (4 units x 100 updates) | speedup |")
    print("|---|---|---|")
    for j, w in walls.items():
        print(f"| {j} | {w:.1f} | {walls[1] / w:.2f}x |")


if __name__ == "__main__":
    main()
