"""Ready for the GPU: no host synchronisation inside an update, one read of the device per
evaluation, and --deterministic. On the CPU nothing waits, but the same operators run: a read of a
device value is counted here as it would cost on CUDA."""
import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import experiment as E
import fast_forward as FF
import unit_run
from helpers import TINY, run_experiment

# Operators that copy a device value to the host, or whose output shape depends on values (the
# host must wait for them on CUDA).
SYNC_OPS = {"aten._local_scalar_dense.default", "aten.item.default", "aten.equal.default",
            "aten.is_nonzero.default", "aten.nonzero.default", "aten.masked_select.default",
            "aten._unique2.default", "aten.unique_consecutive.default", "aten.unique_dim.default"}
READS = ("tolist", "item", "__bool__", "__int__", "__float__", "__index__", "numpy")  # no operator on CPU


class HostReads(TorchDispatchMode):
    """Counts every read of a tensor's value by the host: the operators above, and the Tensor
    methods that on the CPU read memory without dispatching an operator (.tolist(), bool(t), ...)."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        masks = str(func) in ("aten.index.Tensor", "aten.index_put_.default", "aten.index_put.default") \
            and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)
        if str(func) in SYNC_OPS or masks:  # a boolean mask is a nonzero() inside
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def counting(self):
        originals = {name: getattr(torch.Tensor, name) for name in READS}

        def counted(name):
            def read(t, *args, **kwargs):
                self.reads.append(f"Tensor.{name}")
                with torch._C.DisableTorchFunctionSubclass():
                    return originals[name](t, *args, **kwargs)
            return read
        try:
            for name in READS:
                setattr(torch.Tensor, name, counted(name))
            with self:
                yield self
        finally:
            for name, fn in originals.items():
                setattr(torch.Tensor, name, fn)


def reads(fn, *args):
    counter = HostReads()
    with counter.counting():
        fn(*args)
    return counter.reads


def built_unit(dataset="x_plus_y", **overrides):
    cfg = E.Config(datasets=dataset, compile="false", **overrides)
    run = unit_run.UnitRun(cfg, dataset, 0, warn=lambda m: None)
    return cfg, run, E.build_unit(cfg, dataset, run)


def test_the_counter_sees_every_kind_of_host_read():
    t = torch.ones(3)
    for read in (lambda: bool(t.all()), lambda: t.sum().item(), lambda: t.tolist(),
                 lambda: torch.equal(t, t), lambda: t[t > 0], lambda: torch.unique(t), lambda: float(t[0])):
        assert reads(read)
    assert reads(lambda: (t * 2).sum()) == []


@pytest.mark.parametrize("dataset", ["x_plus_y", "permutation"])
def test_an_update_never_reads_the_device_and_an_evaluation_reads_it_once(dataset):
    cfg, run, unit = built_unit(dataset)
    assert run.forward["path"] == "fast"
    x, y = unit.data["train_x"][:cfg.batch_size], unit.data["train_y"][:cfg.batch_size]
    E.train_step(cfg, 0, unit, x, y)  # the first update creates the optimizer's state
    assert reads(E.train_step, cfg, 1, unit, x, y) == []
    evaluate = (E.evaluate, unit, unit.data["val_x"], unit.data["val_y"], cfg.eval_batch_size)
    assert reads(*evaluate) == ["Tensor.tolist"]
    E.train_step(cfg, 2, unit, x, y)
    assert reads(*evaluate) == ["Tensor.tolist"]  # every evaluation, its chunks sharing one table pass


def test_the_plain_forward_and_an_option_laden_update_never_read_the_device_either():
    cfg, run, unit = built_unit(fast_forward=False, grokfast="ema", l1_weight=1e-5, lr_groups="1e-3,2e-3,3e-3")
    x, y = unit.data["train_x"][:64], unit.data["train_y"][:64]
    E.train_step(cfg, 0, unit, x, y)
    assert run.forward["path"] == "plain" and reads(E.train_step, cfg, 1, unit, x, y) == []


def test_the_old_per_batch_check_would_be_caught(monkeypatch):
    """The shortcut's check used to be bool(...all()) per batch: two reads per update."""
    cfg, run, unit = built_unit()
    x, y = unit.data["train_x"][:64], unit.data["train_y"][:64]
    E.train_step(cfg, 0, unit, x, y)
    index = FF.TokenTable.index

    def per_batch_check(self, tokens, shortcut=None):
        row = index(self, tokens, shortcut)
        if not bool(((self.keys[row] == self.key(tokens)) & (tokens < self.base).all(1)).all()):
            raise AssertionError("outside")
        return row
    monkeypatch.setattr(FF.TokenTable, "index", per_batch_check)
    assert reads(E.train_step, cfg, 1, unit, x, y).count("Tensor.__bool__") == 2


@pytest.mark.slow
def test_deterministic_runs_and_gives_the_default_numbers_on_the_cpu(tmp_path):
    """--deterministic: torch.use_deterministic_algorithms(True) in every process that trains (and
    cuBLAS's workspace setting); on the CPU the numbers are those of the default run."""
    one = ["--datasets=x_plus_y", "--num_seeds=1", *TINY]
    run_experiment(tmp_path, "--out_dir=a", *one)
    run_experiment(tmp_path, "--out_dir=b", "--deterministic", *one)
    import json
    a, b = (json.loads((tmp_path / d / "units" / "x_plus_y_0.json").read_text()) for d in "ab")
    assert a["val_info"] == b["val_info"] and b["config"]["deterministic"] is True
