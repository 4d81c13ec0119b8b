"""The reference template and this harness on the same short work, in one invocation.

    python benchmarks/side_by_side.py                      # 2 units x 1500 updates (~12 min here)
    python benchmarks/side_by_side.py --updates=7500       # the baseline's length (~50 min here)
    python benchmarks/side_by_side.py --variant compile=--compile=true --also /path/to/old/checkout

Work: one unit per --datasets entry (seed offset 0), --updates AdamW updates each with the same
warm-up, batch 512 and an evaluation every 10 updates; each program runs as it runs by default.
The reference template (its unchanged experiment.py, --template) runs its units one after the
other on torch's default threads and evaluates 8 batches of 512 drawn with replacement; ours runs
them in --jobs workers and evaluates the whole val split. The template is imported from its file
and stopped after its (updates / 10)-th evaluation: no line of it is changed. Every time is the
wall time of a whole process (interpreter, imports, data and all), so start-up counts for both;
torch.compile starts from an empty cache, as on a new machine (--warm_cache: it reuses its own).
--variant NAME=ARGS adds a run of this checkout with extra arguments; --also DIR adds the same
run of another checkout (e.g. a `git worktree` of an older commit), for before/after in one run.
Compare the printed ratios, not the seconds: they move with the machine's load. On a noisy machine
add --rounds=N: every program runs N times, in an order that alternates between rounds (so slow
drift hits each alike), and the table gives each one's median wall time, its range, and the ratio
of the medians; --updates=500 keeps that short.
"""
import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT.parent / "shared" / "reference-template" / "experiment.py"
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")

# Runs inside a fresh interpreter: argv = template path, out dir, updates, dataset:seed ...
RUN_TEMPLATE = """
import importlib.util, sys
path, out, updates, units = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
sys.argv = [path, f"--out_dir={out}"]  # the template parses its command line on import
spec = importlib.util.spec_from_file_location("reference_template", path)
template = importlib.util.module_from_spec(spec)
spec.loader.exec_module(template)
real_evaluate, calls = template.evaluate, [0]

class Enough(Exception):
    pass

def evaluate(*args, **kwargs):  # the template's own evaluate, counted; it runs run() unchanged
    metrics = real_evaluate(*args, **kwargs)
    calls[0] += 1
    if calls[0] == updates // 10:
        raise Enough(metrics)
    return metrics

template.evaluate = evaluate
for unit in units:
    dataset, seed = unit.split(":")
    calls[0] = 0
    try:
        template.run(out, dataset, int(seed))
    except Enough as done:
        print(dataset, seed, "val_accuracy", done.args[0]["val_accuracy"])
"""


def cpu_flags():
    """The vector-extension flags of this CPU that matter for fp32 / bf16 matmuls (Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    return f"{model}; " + " ".join(f for f in FLAGS if f in have) + \
        (" (no " + ", ".join(f for f in FLAGS if f not in have) + ")" if set(FLAGS) - have else "")


def timed(name, cmd, cwd, env=None):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"side_by_side: {name} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def time_program(name, run, args, datasets, prefix):
    """Wall seconds of one program on the work: the template (run None) or experiment.py of a
    checkout with extra arguments; its outputs (and, unless --warm_cache, its compile cache) under
    prefix."""
    if run is None:
        units = [f"{d}:0" for d in datasets]
        return timed(name, [sys.executable, "-c", RUN_TEMPLATE, str(args.template), f"{prefix}template",
                            str(args.updates), *units], ROOT)
    folder, extra = run
    env = None if args.warm_cache else {**os.environ, "TORCHINDUCTOR_CACHE_DIR": f"{prefix}inductor",
                                        "TRITON_CACHE_DIR": f"{prefix}triton"}
    return timed(name, [sys.executable, str(folder / "experiment.py"), f"--out_dir={prefix}run",
                        f"--datasets={args.datasets}", "--num_seeds=1", f"--total_steps={args.updates}",
                        *extra], folder, env)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--template", type=Path, default=TEMPLATE, help="the reference template's experiment.py")
    ap.add_argument("--datasets", default="x_div_y,permutation", help="one unit each (seed offset 0)")
    ap.add_argument("--updates", type=int, default=1500, help="updates per unit, a multiple of 10")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                    help="also run this checkout with these extra experiment.py arguments")
    ap.add_argument("--also", action="append", default=[], type=Path, metavar="DIR",
                    help="also run the experiment.py of another checkout (before/after)")
    ap.add_argument("--warm_cache", action="store_true",
                    help="let torch.compile reuse its on-disk cache (default: each run starts from an "
                         "empty one, as a first run on a new machine does)")
    ap.add_argument("--skip_template", action="store_true", help="time only ours (ratios between them)")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each program, interleaved; the table "
                                                           "gives medians and ranges")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds={args.rounds}: must be at least 1")
    if args.updates < 10 or args.updates % 10:
        ap.error(f"--updates={args.updates}: must be a positive multiple of 10 (the evaluation interval)")
    if not args.skip_template and not args.template.is_file():
        ap.error(f"--template={args.template}: no such file (the reference template's experiment.py)")
    datasets = [d for d in args.datasets.split(",") if d]
    runs = {"ours": (ROOT, [])}
    for v in args.variant:
        name, _, extra = v.partition("=")
        runs[f"ours {name}"] = (ROOT, shlex.split(extra))
    for d in args.also:
        runs[f"{d.name} (--also)"] = (d.resolve(), [])

    import torch  # only for the versions printed
    print(f"machine: {cpu_flags()}; cpu_count {os.cpu_count()}; torch {torch.__version__}; "
          f"load average before {os.getloadavg()[0]:.2f}")
    print(f"work: {len(datasets)} units ({', '.join(datasets)}, seed offset 0) x {args.updates} updates, "
          f"evaluation every 10")
    programs = ([("reference template", None)] if not args.skip_template else []) + list(runs.items())
    walls = {name: [] for name, _ in programs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(enumerate(programs))
            for i, (name, run) in (order if r % 2 == 0 else order[::-1]):
                walls[name].append(time_program(name, run, args, datasets, f"{tmp}/round{r}_program{i}_"))
    median = {name: statistics.median(w) for name, w in walls.items()}
    base = median.get("reference template", median["ours"])
    spread = "median wall s (range)" if args.rounds > 1 else "wall s"
    print(f"| program | {spread} | speed-up over {'the template' if 'reference template' in walls else 'ours'} |")
    print("|---|---|---|")
    for name, w in walls.items():
        shown = f"{median[name]:.1f}" + (f" ({min(w):.1f}-{max(w):.1f})" if args.rounds > 1 else "")
        print(f"| {name} | {shown} | {base / median[name]:.2f}x |")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
