"""
fast_forward.py: the exact shortcut of experiment.Transformer.forward, and its self-check. No idea
needs to open this file: edit the model freely; every unit, UnitRun.forward_for checks each
shortcut against model.forward() on a train batch (logits, loss and every parameter gradient) and
trains with the first exact one, or with the plain forward, with one warning line saying why.

The shortcut (forward_fast) computes the same logits as forward() with less arithmetic, exact
because attention is causal and only the last position reaches the loss:
1. positions < PREFIX_LEN depend only on the prefix tokens [a, 'o'], so they run once per distinct
   prefix of the dataset (the table pass) and their keys and values are gathered per example;
2. the first block's q, k, v at the other positions depend only on [b, '='], so they are computed
   once per distinct suffix and gathered ("fast"; "prefix" skips this step);
3. the last block computes only the last position.
It reads the model through what forward() uses: embed(tokens, start), blocks (each called as
block(x, past_kv=..., last_only=..., qkv=...)), final_norm and head.

It never makes the host wait for the device. What it cannot know on the host it records on the
device, in Shortcut.trouble, which UnitRun reads once per record: a batch with token rows outside
the dataset's tables (an edit that makes new examples), or a kept table pass whose weights changed
unseen (an in-place change through .data inside an evaluation). Either makes the unit train again
from the start with the plain forward, so a unit is never trained partly on a wrong shortcut.
"""
import copy
import importlib.util
import itertools
import os
import shutil
import sys

import torch
import torch.nn.functional as F

PREFIX_LEN = 2  # tokens [a, 'o']: the positions that depend only on the first operand
TROUBLES = ("a batch had token rows outside the dataset's tables",
            "a kept table pass was used after a weight changed in place through .data")


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


_eager_under_compile = []  # the functions eager_under_compile marked, until use_compile disables them


def eager_under_compile(fn):
    """Decorator, as torch.compiler.disable (torch.compile runs fn as plain Python, outside its
    graphs), put in place by use_compile: a process that never compiles never imports
    torch._dynamo for it (2.4 s). use_compile replaces fn where it is defined (a module-level
    function, or a method of a module-level class) with torch.compiler.disable(fn)."""
    if "torch._dynamo" in sys.modules or "<locals>" in fn.__qualname__:  # now: nothing to save
        return torch.compiler.disable(fn)
    _eager_under_compile.append(fn)
    return fn


def _disable_marked_functions():
    while _eager_under_compile:
        fn = _eager_under_compile.pop()
        *path, name = fn.__qualname__.split(".")
        owner = sys.modules[fn.__module__]
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, torch.compiler.disable(fn))


COMPILE_MIN_STEPS = 5000  # --compile=auto compiles units this long: a cold compile (2-3 min here) then pays


def use_compile(setting, total_steps, device):
    """--compile=true / false, or auto: true for units of at least COMPILE_MIN_STEPS updates where
    torch.compile's default backend can build (a C++ compiler on CPU, Triton on CUDA). Compiling
    takes about a minute per process and shape; it failing is caught by the fast path's check.
    When true, it also readies eager_under_compile's functions for torch.compile."""
    if setting != "auto":
        compiles = setting == "true"
    elif total_steps < COMPILE_MIN_STEPS:
        compiles = False
    elif device.type == "cpu":
        compiles = any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++"))
    else:
        compiles = device.type == "cuda" and importlib.util.find_spec("triton") is not None
    if compiles:  # before anything is traced
        _disable_marked_functions()
    return compiles


# ---------------------------------------------------------------------------------------------
# THE SHORTCUT
# ---------------------------------------------------------------------------------------------
class Shortcut:
    """forward_fast over one dataset's tables, called as a forward: tokens (B, T) -> logits (B, C).
    token_tables=False leaves out step 2 (the "prefix" shortcut). trouble: (len(TROUBLES),) bool on
    the device, what went wrong so far (never read here)."""

    def __init__(self, model, tables, token_tables=True):
        self.model, self.tables, self.token_tables = model, tables, token_tables
        self.trouble = torch.zeros(len(TROUBLES), dtype=torch.bool, device=tables[0].keys.device)
        self.kept = None  # the last table pass of a call without autograd (see table_pass_kept)

    def __call__(self, tokens):
        return forward_fast(self.model, tokens, self.tables, self.token_tables, self)


def forward_fast(model, tokens, tables, token_tables=True, shortcut=None):
    """model.forward(tokens) with less arithmetic (module docstring). tables: the (prefix, suffix)
    TokenTables of the whole dataset (dataset_tables: static shapes, nothing waits on the host).
    shortcut: where rows outside the tables and reused table passes are noted (Shortcut)."""
    prefixes, suffixes = tables
    which = prefixes.index(tokens[:, :PREFIX_LEN], shortcut)       # (B,) row in prefixes.rows
    suffix = suffixes.index(tokens[:, PREFIX_LEN:], shortcut)
    rows = prefixes.rows, suffixes.rows if token_tables else None
    if model.training or torch.is_grad_enabled() or shortcut is None:
        if shortcut is not None:
            shortcut.kept = None  # an update may follow: a later evaluation computes its own pass
        kv, qkv = table_pass(model, *rows)
    else:  # an evaluation's chunks (and the progress measures') share one table pass
        kv, qkv = table_pass_kept(shortcut, rows)
    x = model.embed(tokens[:, PREFIX_LEN:], start=PREFIX_LEN)       # (B, T - PREFIX_LEN, D)
    for i, block in enumerate(model.blocks):
        k, v = kv[i]
        x, _ = block(x, past_kv=(take_rows(k, which), take_rows(v, which)),
                     last_only=i == len(model.blocks) - 1,
                     qkv=take_rows(qkv, suffix) if i == 0 and qkv is not None else None)
    return model.head(model.final_norm(x[:, -1]))


def table_pass(model, prefix_rows, suffix_rows=None):
    """What forward_fast computes once per table row: each block's keys and values at the prefix
    positions of every distinct prefix (P, PREFIX_LEN, H, D/H), and the first block's q, k, v of
    every distinct suffix (S, T - PREFIX_LEN, 3D; None without suffix_rows)."""
    kv, x = [], model.embed(prefix_rows)                                # (P, PREFIX_LEN, D)
    for i, block in enumerate(model.blocks):
        x, kv_i = block(x, last_only=i == len(model.blocks) - 1)
        kv.append(kv_i)
    qkv = None if suffix_rows is None else model.blocks[0].attn.qkv(model.embed(suffix_rows, start=PREFIX_LEN))
    return kv, qkv


def _weights(model):
    return [t.detach() for t in itertools.chain(model.parameters(), model.buffers())]


@eager_under_compile  # a Python-side memo, on host values only (pointers, versions, modes)
def table_pass_kept(shortcut, rows):
    """table_pass without autograd, kept between calls while nothing it reads has changed: no
    training call came in between (forward_fast drops it), and the rows (the same objects), the
    model's training and autocast mode, and each parameter's and buffer's storage and version
    counter are the same. An evaluation's chunks share one pass this way. A change that leaves
    all of these as they were (one through .data; fused optimizers don't bump version counters)
    is not seen on the host: it is caught on the device (the kept copy of the weights against the
    weights now, into shortcut.trouble[1]), and the unit then trains again with the plain forward."""
    model = shortcut.model
    state = _weights(model)
    device = state[0].device.type if state else "cpu"
    mode = (model.training, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device),
            [(t.data_ptr(), t._version, t.shape) for t in state])
    kept = shortcut.kept
    if kept is not None and all(a is b for a, b in zip(kept[0], rows)) and kept[1] == mode:
        if state:
            changed = torch.stack([(a != b).any() for a, b in zip(kept[2], state)]).any()
            shortcut.trouble[1] |= changed
        return kept[3]
    with torch.no_grad():
        shortcut.kept = rows, mode, [t.clone() for t in state], table_pass(model, *rows)
    return shortcut.kept[3]


def take_rows(table, index):
    """table[index] for a (B,) index into the first dimension, through F.embedding: the same rows,
    and gradients summed in example order on any number of threads (as indexing does on one),
    faster on CPU than indexing: 5-7x forward, ~2x backward (forward_fast's gathers)."""
    return F.embedding(index, table.reshape(len(table), -1)).view(len(index), *table.shape[1:])


class TokenTable:
    """The distinct rows of a slice of token columns (rows (R, k)), and index(tokens): each
    example's row in them. forward_fast computes what depends only on those columns once per row.
    Made from the whole dataset, its shapes are static and index needs no torch.unique per batch."""

    def __init__(self, tokens):
        self.base = int(tokens.max()) + 1
        self.keys, inverse = torch.unique(self.key(tokens), return_inverse=True)   # sorted
        first = torch.empty_like(self.keys).scatter_(0, inverse, torch.arange(len(tokens), device=tokens.device))
        self.rows = tokens[first]

    def key(self, tokens):
        key = tokens[:, 0]
        for i in range(1, tokens.shape[1]):
            key = key * self.base + tokens[:, i]
        return key

    @eager_under_compile  # as before the shortcut waited on its answer: the same compiled graphs
    def index(self, tokens, shortcut=None):
        """(B,) row of each example; an example not in the table is noted in
        shortcut.trouble[0] on the device (its row is then wrong, and the unit trains again)."""
        key = self.key(tokens)
        row = torch.searchsorted(self.keys, key).clamp_(max=len(self.keys) - 1)
        if shortcut is not None:
            known = (self.keys[row] == key) & (tokens < self.base).all(1)
            shortcut.trouble[0] |= ~known.all()
        return row


def dataset_tables(data):
    """The (prefix, suffix) TokenTables of every example of a dataset (forward_fast's tables)."""
    every = torch.cat([data["train_x"], data["val_x"]])
    return TokenTable(every[:, :PREFIX_LEN]), TokenTable(every[:, PREFIX_LEN:])
