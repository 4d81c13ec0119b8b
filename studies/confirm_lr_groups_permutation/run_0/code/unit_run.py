"""
unit_run.py: UnitRun, the harness side of one (dataset, seed) unit, handed to train_unit: its
device and seed, the forward it trains with (the plain forward, or an exact shortcut checked
against it: fast_forward.py), its records (stopping a unit whose loss is no longer finite), its
checkpoints and its result.
"""
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fast_forward import TROUBLES, Shortcut, check_fast_path, dataset_tables, use_compile
from interrupts import stop_if_asked
from live import LiveCurves
from outputs import strict, unit_final_info, write_atomic


class ShortcutFailed(Exception):
    """Raised by UnitRun.record when the shortcut the unit trains with went wrong on the device
    (fast_forward.TROUBLES): train() then trains the unit again, from the start, plain."""


class UnitRun:
    """One (dataset, seed) unit's harness side, handed to train_unit: its device and seed, the
    forward it trains with (forward_for), the records (record) and the result (result).
    plain_because: train with the plain forward, for this reason (set by train()). live: the live
    curves' settings (live.live_settings), opened at the first record and closed when the `with`
    block around the unit ends (train())."""

    def __init__(self, cfg, dataset, seed_index, device="cpu", progress=None, warn=None, out_dir=None,
                 plain_because=None, live=None):
        self.cfg, self.dataset, self.seed_index, self.out_dir = cfg, dataset, seed_index, out_dir
        self.seed, self.device = cfg.seed + seed_index, torch.device(device)
        self.train_info, self.val_info, self.diverged_at = [], [], None
        self.forward = {"path": "plain", "reason": plain_because or "fast forward not requested",
                        "check_s": 0.0}
        self.plain_because, self.shortcut = plain_because, None  # the shortcut it trains with
        self.progress, self.warn = progress, warn or (lambda m: print(f"warning: {m}", file=sys.stderr))
        self.live, self.curves = live, None
        self.start = time.perf_counter()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        if self.curves:  # failed: the unit stopped early (an error, an interrupt, a restart plain)
            self.curves.close(failed=kind is not None)
            self.curves = None

    def forward_for(self, model, data, loss_fn=F.cross_entropy):
        """What train_unit trains and evaluates with: model itself (its forward()), or the first
        exact shortcut of it (fast_forward.py) where cfg.fast_forward asks for one, checked on the
        unit's first train batch (cfg.batch_size examples of data["train_x"]); torch.compiled
        where use_compile(cfg.compile, ...) says so, checked like the others."""
        cfg = self.cfg
        compiled = use_compile(cfg.compile, cfg.total_steps, self.device)
        if not cfg.fast_forward or self.plain_because:
            return torch.compile(model) if compiled and not self.plain_because else model
        tables = dataset_tables(data)
        x, y = data["train_x"][:cfg.batch_size], data["train_y"][:cfg.batch_size]
        candidates = {"fast": Shortcut(model, tables), "prefix": Shortcut(model, tables, token_tables=False)}
        if compiled:  # checked like the others
            fast = candidates["fast"]
            candidates = {"fast, compiled": torch.compile(lambda t: fast(t)), **candidates}
        chosen = self.choose_forward(model, candidates, model, x, y, loss_fn)
        if chosen is not model:
            self.shortcut = chosen if isinstance(chosen, Shortcut) else candidates["fast"]
            self.shortcut.trouble.zero_()  # the check's own calls are not the unit's
        return chosen

    def check_shortcut(self):
        """ShortcutFailed if the shortcut noted trouble on the device since the unit began: one
        read of the device per record."""
        if self.shortcut is not None:
            trouble = self.shortcut.trouble.tolist()
            if any(trouble):
                raise ShortcutFailed("; ".join(t for t, bad in zip(TROUBLES, trouble) if bad) +
                                     f" (by update {self.train_info[-1]['step'] if self.train_info else 0})")

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
        self.check_shortcut()
        bad = [k for row in (train_row, val_row) for k, v in row.items()
               if "loss" in k and isinstance(v, float) and not math.isfinite(v)]
        self.train_info.append(strict(train_row))
        self.val_info.append(strict(val_row))
        if self.live:  # --tensorboard, --wandb: they read the rows, never change them
            self.curves = self.curves or LiveCurves(self.live, self.dataset, self.seed_index, self.seed, self.warn)
            self.curves.log(train_row, val_row)
        if self.progress:
            self.progress(train_row["step"])
        if bad:
            self.diverged_at = train_row["step"]
        return not bad

    def result(self):
        self.check_shortcut()
        final_info = unit_final_info(self.train_info, self.val_info, self.cfg.total_steps,
                                     self.diverged_at)
        return {"dataset": self.dataset, "seed_index": self.seed_index, "seed": self.seed,
                "final_info": final_info, "train_info": self.train_info, "val_info": self.val_info,
                "wall_time_s": time.perf_counter() - self.start, "device": str(self.device),
                "torch_threads": torch.get_num_threads(), "forward": self.forward,
                "diverged_at": self.diverged_at}


def train(train_unit, cfg, dataset, seed_index, **run):
    """train_unit's result for one unit, given UnitRun(cfg, dataset, seed_index, **run); trained
    again from the start with the plain forward (one warning line) if its shortcut went wrong.
    Each UnitRun's live curves are closed as it ends; the second starts them anew."""
    try:
        with UnitRun(cfg, dataset, seed_index, **run) as first:
            return train_unit(cfg, dataset, seed_index, first)
    except ShortcutFailed as e:
        reason = f"the {first.forward['path']} forward was dropped: {e}"
        first.warn(f"{dataset}_{seed_index}: training again from the start with the plain forward: {reason}")
        with UnitRun(cfg, dataset, seed_index, plain_because=reason, **run) as again:
            return train_unit(cfg, dataset, seed_index, again)
