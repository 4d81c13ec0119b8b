"""Before and after in one process: this checkout's updates and evaluations against another's,
interleaved step by step, so that the machine's drift hits each alike.

    python benchmarks/interleaved.py --also ../before              # x_div_y and permutation, eager
    python benchmarks/interleaved.py --also ../before --compile    # the compiled forwards
    python benchmarks/interleaved.py --also .                      # this checkout twice: the noise

Each checkout (this one, and each --also DIR, e.g. a `git worktree` of an older commit) is loaded
in this one process with its own experiment.py and harness modules, and builds one unit
per dataset (seed offset 0) through its own build_unit, on the CPU, single-threaded as a worker
runs. Then, for --updates steps, every checkout runs one update (train_step) on the same batch, in
an order that reverses each step, and every --eval_every steps one evaluation (evaluate: the
whole val split).
The table gives the median (and mean) of each one's times, after a warm-up of 5 updates and one
evaluation, and its ratio to this checkout. The models share the caches of one process, so the
times run above bench.py's; what this measures is the ratio: a change of a few percent, which
separate processes on a noisy machine cannot resolve (benchmarks/README.md, fourth session).
"""
import argparse
import contextlib
import importlib
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("experiment", "harness", "grokstats", "instruments", "tasks", "options", "outputs", "unit_run",
           "fast_forward", "workers", "run_dir", "notes", "interrupts", "launch_slurm")  # any a checkout has
WARMUP_UPDATES = 5


class Checkout:
    """A checkout's experiment module with its own harness modules, and a way to put them
    back in sys.modules while its code runs (use_compile finds its functions there)."""

    def __init__(self, name, folder):
        self.name = name
        outer = {n: sys.modules.pop(n) for n in MODULES if n in sys.modules}
        sys.path.insert(0, str(folder))
        try:
            self.experiment = importlib.import_module("experiment")
        finally:
            sys.path.remove(str(folder))
            self.modules = {n: sys.modules.pop(n) for n in MODULES if n in sys.modules}
            sys.modules.update(outer)
        self.harness = self.modules["harness"]
        self.unit_run = self.modules.get("unit_run", self.harness)  # UnitRun's module (harness.py before)

    @contextlib.contextmanager
    def installed(self):
        outer = {n: sys.modules.get(n) for n in MODULES}
        sys.modules.update(self.modules)
        try:
            yield
        finally:
            for n, module in outer.items():
                if module is None:
                    sys.modules.pop(n, None)
                else:
                    sys.modules[n] = module


def build(checkout, dataset, compile_):
    E = checkout.experiment
    cfg = E.Config(compile="true" if compile_ else "false")
    with checkout.installed():
        run = checkout.unit_run.UnitRun(cfg, dataset, 0, torch.device("cpu"), warn=lambda m: None)
        unit = E.build_unit(cfg, dataset, run)
    return cfg, unit, run.forward["path"]


def timed(checkout, fn, *args):
    with checkout.installed():
        start = time.perf_counter()
        fn(*args)
        return time.perf_counter() - start


def compare(checkouts, dataset, args):
    """{name: (update times, evaluation times)} of one unit per checkout, interleaved."""
    units = {c.name: build(c, dataset, args.compile) for c in checkouts}
    print(f"{dataset}: forward " + ", ".join(f"{name} {path}" for name, (_, _, path) in units.items()),
          flush=True)
    times = {c.name: ([], []) for c in checkouts}
    batches = torch.Generator().manual_seed(0)
    cfg, unit, _ = units[checkouts[0].name]
    n_train, batch_size = len(unit.data["train_y"]), cfg.batch_size
    for step in range(WARMUP_UPDATES + args.updates):
        idx = torch.randint(n_train, (batch_size,), generator=batches)
        order = checkouts if step % 2 == 0 else checkouts[::-1]
        for c in order:
            cfg, unit, _ = units[c.name]
            x, y = unit.data["train_x"][idx], unit.data["train_y"][idx]
            t = timed(c, c.experiment.train_step, cfg, step, unit, x, y)
            if step >= WARMUP_UPDATES:
                times[c.name][0].append(t)
        if (step + 1) % args.eval_every == 0 or step + 1 == WARMUP_UPDATES:
            for c in order:
                cfg, unit, _ = units[c.name]
                t = timed(c, c.experiment.evaluate, unit, unit.data["val_x"], unit.data["val_y"],
                          cfg.eval_batch_size)
                if step >= WARMUP_UPDATES:
                    times[c.name][1].append(t)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--also", action="append", default=[], type=Path, metavar="DIR", required=True,
                    help="another checkout to compare with this one (repeatable)")
    ap.add_argument("--datasets", default="x_div_y,permutation", help="one unit each (seed offset 0)")
    ap.add_argument("--updates", type=int, default=150, help="timed updates per checkout and dataset")
    ap.add_argument("--eval_every", type=int, default=10, help="updates between timed evaluations")
    ap.add_argument("--compile", action="store_true", help="--compile=true for every checkout "
                                                           "(the compile itself is not timed)")
    args = ap.parse_args()
    if args.updates < 1 or args.eval_every < 1 or args.updates < args.eval_every:
        ap.error(f"--updates={args.updates}, --eval_every={args.eval_every}: both must be at least 1, "
                 "and --updates at least --eval_every")
    for d in args.also:
        if not (d / "experiment.py").is_file():
            ap.error(f"--also={d}: no experiment.py there (a checkout of this project)")
    torch.set_num_threads(1)
    checkouts = [Checkout("ours", ROOT)] + [Checkout(f"{d.name or d.resolve().name} (--also {i + 1})", d)
                                             for i, d in enumerate(args.also)]
    print(f"torch {torch.__version__}; one thread; {args.updates} updates and "
          f"{args.updates // args.eval_every} evaluations per checkout and dataset, interleaved")
    print("| dataset | checkout | ms/update median (mean) | vs ours | ms/eval median (mean) | vs ours |")
    print("|---|---|---|---|---|---|")
    for dataset in [d for d in args.datasets.split(",") if d]:
        times = compare(checkouts, dataset, args)
        base = [statistics.median(t) for t in times["ours"]]
        for name, (updates, evals) in times.items():
            u, e = statistics.median(updates), statistics.median(evals)
            print(f"| {dataset} | {name} | {u * 1e3:.1f} ({statistics.mean(updates) * 1e3:.1f}) | "
                  f"{u / base[0]:.3f} | {e * 1e3:.0f} ({statistics.mean(evals) * 1e3:.0f}) | "
                  f"{e / base[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
