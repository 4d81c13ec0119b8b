"""
live.py: live curves, opt-in. With --tensorboard and/or --wandb, each unit's records go, as they
are taken, to TensorBoard (out_dir/tensorboard/{dataset}_{seed_index}/, one run per unit, the
configuration as text) and/or to Weights & Biases (one run per unit named {dataset}_{seed_index},
grouped by the run folder's name, files under out_dir/wandb/; offline unless WANDB_MODE or
WANDB_API_KEY is set). A logger only reads the records: no number and no file of the output
contract changes. tensorboard and wandb are imported only here, and only when asked for;
options.check_live refuses a missing package before anything is touched (docs/live-curves.md).
"""
import json
import os
from pathlib import Path

from options import one_line
from outputs import config_record, strict


def live_settings(opts, cfg):
    """What a unit's process needs to log live (picklable, for the worker pool and Slurm tasks),
    or None when neither --tensorboard nor --wandb is on."""
    if not (opts.tensorboard or opts.wandb):
        return None
    return {"tensorboard": opts.tensorboard, "wandb": opts.wandb, "out_dir": opts.out_dir,
            "config": config_record(opts, cfg)}


def scalars(prefix, row):
    """{prefix/key: value} for the row's numbers (not its step, not bools, not lists such as the
    progress measures' key_frequencies)."""
    return {f"{prefix}/{k}": float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardSink:
    """One TensorBoard run per unit. A unit that trains again (after a restart with the plain
    forward, or on --resume / --overwrite) starts from update 0, so its earlier event files go:
    the run always shows one training's curves."""

    def __init__(self, folder, config):
        from torch.utils.tensorboard import SummaryWriter
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        self.writer = SummaryWriter(log_dir=str(folder))
        text = json.dumps(strict(config), indent=2)  # config.json's values and the unit's own
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()))  # markdown code

    def log(self, step, values):
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)  # stored as float32
        self.writer.flush()  # on disk at once: TensorBoard shows the curve while the unit trains

    def close(self, failed):
        self.writer.close()


class WandbSink:
    """One W&B run per unit, in out_dir/wandb/. A unit that trains again is a new run (the same
    name); the abandoned one is finished with exit code 1."""

    def __init__(self, out_dir, name, config):
        import wandb
        online = "WANDB_MODE" in os.environ or "WANDB_API_KEY" in os.environ
        settings = {"console": "off"}  # our stdout stays ours; W&B's own lines only if asked for
        if "WANDB_SILENT" not in os.environ:
            settings["silent"] = True
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "grokking-harness"),
            entity=os.environ.get("WANDB_ENTITY") or None,
            group=os.environ.get("WANDB_RUN_GROUP") or Path(out_dir).resolve().name,
            name=name, dir=str(Path(out_dir).resolve()), config=config,
            mode=None if online else "offline", settings=wandb.Settings(**settings))

    def log(self, step, values):
        self.run.log(values, step=step)

    def close(self, failed):
        self.run.finish(exit_code=1 if failed else 0)


class LiveCurves:
    """The live logger of one unit, opened in the process that trains it: log(train_row, val_row)
    at every record, close() at its end. A sink that fails (W&B unreachable, a full disk) is
    dropped with one warning line; the unit trains on and its results are unchanged."""

    def __init__(self, settings, dataset, seed_index, seed, warn):
        self.name, self.warn, self.sinks = f"{dataset}_{seed_index}", warn, {}
        config = {**settings["config"], "dataset": dataset, "seed_index": seed_index, "seed": seed}
        out = Path(settings["out_dir"])
        if settings["tensorboard"]:
            self.open("tensorboard", lambda: TensorBoardSink(out / "tensorboard" / self.name, config))
        if settings["wandb"]:
            self.open("wandb", lambda: WandbSink(out, self.name, config))

    def attempt(self, name, action):
        """action(); on an exception, drop the sink with one warning line."""
        try:
            action()
        except Exception as e:  # a logger never costs a unit (a bare Exception: the libraries' errors vary)
            self.sinks.pop(name, None)
            self.warn(f"{self.name}: --{name} stopped logging ({type(e).__name__}: {one_line(e)[:160]}); "
                      "the unit trains on, its results unchanged")

    def open(self, name, make):
        self.attempt(name, lambda: self.sinks.__setitem__(name, make()))

    def log(self, train_row, val_row):
        values = {**scalars("train", train_row), **scalars("val", val_row)}
        for name, sink in list(self.sinks.items()):
            self.attempt(name, lambda: sink.log(train_row["step"], values))

    def close(self, failed=False):
        """Finish every sink (failed: the unit stopped early, e.g. to train again plain)."""
        for name, sink in list(self.sinks.items()):
            self.attempt(name, lambda: sink.close(failed))
        self.sinks.clear()
