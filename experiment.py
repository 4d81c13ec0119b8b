"""
grokking-harness: train a small Transformer on algorithmic datasets and watch it grok.

    python experiment.py --out_dir=run_0          # the baseline: 4 datasets x 3 seeds x 7500 updates

Each (dataset, seed) unit trains a 2-layer post-norm Transformer (dim 128, 4 heads) with AdamW
(lr 1e-3, betas (0.9, 0.98), weight decay 0.5, 50-update linear warm-up) on batches of 512 drawn
with replacement from a seeded 50% split, and evaluates the WHOLE validation split every 10 updates.
Datasets: x_plus_y, x_minus_y, x_div_y (mod 97) and composition of permutations of S5.

Outputs in --out_dir (other tools parse the first two; keys are only ever added):
    final_info.json   {dataset: {"means", "stderrs", "final_info_dict"}}; written last, only on success
    all_results.npy   pickled dict {dataset}_{seed}_final_info / _train_info / _val_info
    config.json       the resolved configuration;  run_info.json  wall times, device, versions
    units/            one JSON per finished (dataset, seed) unit, so --resume can skip it
and a "## Run N" section appended to notes.txt beside the run folder.

Baseline run_0 (README.md has the per-seed table): steps to 99% val accuracy x_plus_y 2670 +- 390,
x_minus_y 4093 +- 163, x_div_y 4743 +- 271 (mean +- SE, 3 seeds); permutation generalises only at the
very end, if at all (2 of 3 seeds at 7210 and 7230). 62 min for all 12 units on a 2-core CPU.

Where to edit for a new idea: each idea has one named function below, called from train_unit():
param_groups (learning rates), init_weights, batch_size_at, lr_factor, regulariser, filter_gradients.
"""

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# CONFIG: every hyperparameter, its default (the baseline) and its meaning. --key=value overrides.
# ---------------------------------------------------------------------------------------------
DATASETS = ("x_div_y", "x_minus_y", "x_plus_y", "permutation")
INITS = ("default", "xavier", "he", "orthogonal", "kaiming_normal", "uniform")
BATCH_SCHEDULES = ("constant", "linear", "exponential", "step")
GROKFAST = ("none", "ema", "ma")
UNIFORM_INIT_RANGE = 0.1  # --init=uniform draws every weight from U(-0.1, 0.1)


def _f(default, help):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    # run
    out_dir: str = _f("run_0", "folder for this run's outputs")
    datasets: str = _f(",".join(DATASETS), f"comma-separated, from {','.join(DATASETS)}")
    num_seeds: int = _f(3, "seeds per dataset; seed index s uses seed + s")
    seed: int = _f(1337, "base seed; one seed drives split, initialisation and batch sampling")
    device: str = _f("auto", "auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps")
    jobs: int = _f(0, "units run at once in worker processes; 0 = auto (one per CPU core)")
    threads: int = _f(1, "torch CPU threads per unit; fixed, because float results depend on "
                         "it: any --jobs then gives identical numbers")
    overwrite: bool = _f(False, "replace a finished run in out_dir (refused otherwise)")
    resume: bool = _f(False, "keep the finished units in out_dir/units and run only the rest")
    description: str = _f("", "Description: line for this run's notes.txt section")
    # data
    prime: int = _f(97, "modulus of x_plus_y, x_minus_y, x_div_y (a prime >= 3)")
    train_frac: float = _f(0.5, "fraction of all pairs in the train split, in (0, 1)")
    # model
    num_layers: int = _f(2, "decoder blocks")
    dim_model: int = _f(128, "width; the FFN is 4x wider")
    num_heads: int = _f(4, "attention heads; must divide dim_model")
    init: str = _f("default", f"weight initialisation: {'|'.join(INITS)}")
    # optimisation
    total_steps: int = _f(7500, "optimizer updates per unit")
    batch_size: int = _f(512, "train batch (with replacement); the final size of a batch schedule")
    batch_schedule: str = _f("constant", f"{'|'.join(BATCH_SCHEDULES)}: batch_size_min -> batch_size")
    batch_size_min: int = _f(32, "first batch size of a non-constant batch schedule")
    lr: float = _f(1e-3, "AdamW learning rate")
    lr_groups: str = _f("", "EMB,LOWER,HIGHER learning rates (embeddings / first half of the "
                            "blocks / other blocks + final LayerNorm + head); empty = all at lr")
    weight_decay: float = _f(0.5, "AdamW decoupled weight decay, on all parameters")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.98, "AdamW beta2")
    warmup_steps: int = _f(50, "linear warm-up: lr x min(step / warmup_steps, 1); 0 = none")
    l1_weight: float = _f(0.0, "adds l1_weight x sum |p| over all parameters (unnormalised)")
    grokfast: str = _f("none", f"gradient filter: {'|'.join(GROKFAST)}")
    grokfast_alpha: float = _f(0.98, "EMA filter momentum, in [0, 1)")
    grokfast_lamb: float = _f(2.0, "filter amplification: g <- g + lamb x filtered g")
    grokfast_window: int = _f(100, "MA filter window, in updates")
    # evaluation and speed
    eval_every: int = _f(10, "updates between records; val metrics use the whole val split")
    eval_batch_size: int = _f(1024, "examples per forward pass in evaluation (speed and memory "
                                     "only; 1024 measured fastest on CPU)")
    fast_forward: bool = _f(True, "exact shortcut: shared prefixes once, last block at the last "
                                  "position only (see Transformer.forward_fast); false = plain")
    compile: bool = _f(False, "torch.compile the forward: 7-20% faster CPU updates, 20-45% faster "
                              "evaluations (measured) after about a minute of compiling per "
                              "process and dataset shape; equal to float tolerance, not bitwise")


class ConfigError(ValueError):
    """Bad input: reported as one line on stderr, exit code 2."""


def dataset_list(cfg):
    return [d for d in cfg.datasets.split(",") if d]


def lr_group_values(cfg):
    return [float(v) for v in cfg.lr_groups.split(",")] if cfg.lr_groups else []


def validate(cfg):
    """Raise ConfigError naming the first bad value and what is allowed."""
    def need(ok, msg):
        if not ok:
            raise ConfigError(msg)
    names = dataset_list(cfg)
    need(names, "--datasets is empty; allowed: " + ",".join(DATASETS))
    for d in names:
        need(d in DATASETS, f"--datasets: unknown dataset {d!r}; allowed: {','.join(DATASETS)}")
    need(len(set(names)) == len(names), f"--datasets lists a dataset twice: {cfg.datasets!r}")
    for key in ("num_seeds", "threads", "total_steps", "batch_size", "batch_size_min", "eval_every",
                "eval_batch_size", "num_layers", "dim_model", "num_heads", "grokfast_window"):
        need(getattr(cfg, key) > 0, f"--{key}={getattr(cfg, key)} must be a positive integer")
    need(0 < cfg.train_frac < 1, f"--train_frac={cfg.train_frac} must be in (0, 1)")
    need(cfg.prime >= 3 and all(cfg.prime % k for k in range(2, math.isqrt(cfg.prime) + 1)),
         f"--prime={cfg.prime} must be a prime >= 3")
    need(cfg.dim_model % cfg.num_heads == 0,
         f"--dim_model={cfg.dim_model} must be divisible by --num_heads={cfg.num_heads}")
    need(cfg.lr > 0, f"--lr={cfg.lr} must be > 0")
    for key in ("weight_decay", "warmup_steps", "l1_weight", "jobs"):
        need(getattr(cfg, key) >= 0, f"--{key}={getattr(cfg, key)} must be >= 0")
    need(0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1, "--beta1 and --beta2 must be in [0, 1)")
    need(0 <= cfg.grokfast_alpha < 1, f"--grokfast_alpha={cfg.grokfast_alpha} must be in [0, 1)")
    for key, allowed in (("init", INITS), ("batch_schedule", BATCH_SCHEDULES), ("grokfast", GROKFAST)):
        need(getattr(cfg, key) in allowed,
             f"--{key}={getattr(cfg, key)!r} is unknown; allowed: {'|'.join(allowed)}")
    need(cfg.batch_size_min <= cfg.batch_size,
         f"--batch_size_min={cfg.batch_size_min} must be <= --batch_size={cfg.batch_size}")
    try:
        groups = lr_group_values(cfg)
    except ValueError:
        raise ConfigError(f"--lr_groups={cfg.lr_groups!r} must be three numbers EMB,LOWER,HIGHER")
    need(not cfg.lr_groups or (len(groups) == 3 and min(groups) > 0),
         f"--lr_groups={cfg.lr_groups!r} must be three positive numbers EMB,LOWER,HIGHER")
    need(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device),
         f"--device={cfg.device!r} is unknown; allowed: auto|cpu|cuda|cuda:N|mps")


def parse_bool(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r} (true|false)")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_config(argv):
    """--key=value / --key value for every Config field; bare --flag sets a bool to true."""
    parser = OneLineParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(Config):
        kind = {bool: parse_bool, int: int, float: float, str: str}[f.type]
        extra = {"nargs": "?", "const": True} if kind is parse_bool else {}
        parser.add_argument(f"--{f.name}", type=kind, default=f.default,
                            help=f.metadata["help"].replace("%", "%%"), **extra)
    cfg = Config(**vars(parser.parse_args(argv)))
    validate(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------
# DATA: every (a, b) pair of a binary operation as tokens [a, 'o', b, '='], label = a o b.
# ---------------------------------------------------------------------------------------------
SPECIAL_TOKENS = ("o", "=")  # token ids 0 and 1; group element i is token id i + 2
PREFIX_LEN = 2               # [a, 'o']: examples with the same a share these positions


def operation_table(name, prime):
    """All pairs of a dataset: (num_elements, a (N,), b (N,), c (N,)) as element indices."""
    if name == "permutation":
        perms = list(itertools.permutations(range(5)))
        index = {p: i for i, p in enumerate(perms)}
        pairs = list(itertools.product(range(len(perms)), repeat=2))
        a, b = zip(*pairs)
        c = [index[tuple(perms[i][j] for j in perms[k])] for i, k in pairs]  # c[j] = a[b[j]]
        return len(perms), torch.tensor(a), torch.tensor(b), torch.tensor(c)
    a, b = torch.meshgrid(torch.arange(prime), torch.arange(prime), indexing="ij")
    a, b = a.flatten(), b.flatten()
    if name == "x_plus_y":
        c = (a + b) % prime
    elif name == "x_minus_y":
        c = (a - b) % prime
    elif name == "x_div_y":
        a, b = a[b != 0], b[b != 0]
        inverse = torch.tensor([pow(int(x), prime - 2, prime) for x in b])  # Fermat: b^(p-2) = b^-1
        c = (a * inverse) % prime
    else:
        raise ConfigError(f"unknown dataset {name!r}; allowed: {','.join(DATASETS)}")
    return prime, a, b, c


def make_dataset(name, cfg, seed, device):
    """Tokens and labels of the seeded train / val split, resident on the device."""
    num_elements, a, b, c = operation_table(name, cfg.prime)
    tokens = torch.stack([a + 2, torch.zeros_like(a), b + 2, torch.ones_like(a)], dim=1)  # (N, 4)
    order = torch.randperm(len(c), generator=torch.Generator().manual_seed(seed))
    n_train = int(len(c) * cfg.train_frac)
    if not 0 < n_train < len(c):
        raise ConfigError(f"--train_frac={cfg.train_frac} leaves an empty split of {len(c)} pairs")
    train, val = order[:n_train], order[n_train:]
    return {"name": name, "vocab_size": num_elements + len(SPECIAL_TOKENS),
            "num_classes": num_elements,
            "train_x": tokens[train].to(device), "train_y": c[train].to(device),
            "val_x": tokens[val].to(device), "val_y": c[val].to(device)}


# ---------------------------------------------------------------------------------------------
# MODEL: token + position embedding, post-norm decoder blocks, LayerNorm, linear head.
# ---------------------------------------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with biases, parametrised and initialised exactly as
    nn.MultiheadAttention (xavier-uniform in-projection, zero biases), written out so that the
    keys and values of earlier positions can be passed in (see Transformer.forward_fast)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)  # nn.MultiheadAttention's in_proj
        self.out = nn.Linear(dim, dim)      # nn.MultiheadAttention's out_proj
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, past_kv=None, last_only=False):
        """x (B, T, D) new positions, after past_kv's P positions (keys, values (B, P, H, D/H)).
        Returns the output (B, T or 1, D) and the keys and values of all P + T positions."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).unbind(2)  # (B, T, H, hd)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], dim=1), torch.cat([past_kv[1], v], dim=1)
        if last_only:
            q = q[:, -1:]
        Tq, S = q.shape[1], k.shape[1]
        # Broadcast products in (batch, position, head, head_dim) order, not matmuls: with 4
        # positions, batched tiny matmuls are ~3x slower on CPU, and this order needs no permutes.
        scores = (q.unsqueeze(2) * k.unsqueeze(1)).sum(-1) / math.sqrt(D // self.heads)  # (B, Tq, S, H)
        causal = torch.ones(Tq, S, dtype=torch.bool, device=x.device).tril(S - Tq).unsqueeze(-1)
        weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=2)
        y = (weights.unsqueeze(-1) * v.unsqueeze(1)).sum(2)                               # (B, Tq, H, hd)
        return self.out(y.reshape(B, Tq, D)), (k, v)


class DecoderBlock(nn.Module):
    """Post-norm block: x = LN(x + Attn(x)); x = LN(x + FFN(x)), FFN = D -> 4D GELU -> D."""

    def __init__(self, dim, heads):
        super().__init__()
        self.attn = CausalSelfAttention(dim, heads)
        self.attn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.ffn_norm = nn.LayerNorm(dim)

    def forward(self, x, past_kv=None, last_only=False):
        a, kv = self.attn(x, past_kv, last_only)
        x = self.attn_norm((x[:, -1:] if last_only else x) + a)
        return self.ffn_norm(x + self.ffn(x)), kv


class Transformer(nn.Module):
    def __init__(self, cfg, vocab_size, num_classes, seq_len=4):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, cfg.dim_model)
        self.position_embedding = nn.Embedding(seq_len, cfg.dim_model)
        self.blocks = nn.ModuleList(DecoderBlock(cfg.dim_model, cfg.num_heads)
                                    for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.dim_model)
        self.head = nn.Linear(cfg.dim_model, num_classes)

    def embed(self, tokens, start=0):  # (B, T) -> (B, T, D), positions start .. start + T - 1
        return self.token_embedding(tokens) + self.position_embedding.weight[start:start + tokens.shape[1]]

    def forward(self, tokens):
        """The plain computation: (B, T) tokens -> (B, C) logits at the last position."""
        x = self.embed(tokens)
        for block in self.blocks:
            x, _ = block(x)
        return self.head(self.final_norm(x[:, -1]))

    def forward_fast(self, tokens, prefix_len=PREFIX_LEN):
        """The same logits as forward() with less arithmetic, exact because attention is causal:
        1. positions < prefix_len depend only on the prefix tokens, so they run once per distinct
           prefix (97 for a batch of 512) and their keys and values are gathered per example;
        2. only the last position reaches the loss, so the last block computes only it.
        Edits to the blocks take effect in both paths. Config.fast_forward=False runs forward()."""
        key = tokens[:, 0]
        for i in range(1, prefix_len):
            key = key * self.token_embedding.num_embeddings + tokens[:, i]
        prefixes, which = torch.unique(key, return_inverse=True)  # which: (B,) index into prefixes
        first = torch.empty_like(prefixes).scatter_(0, which, torch.arange(len(key), device=key.device))
        x_prefix = self.embed(tokens[first, :prefix_len])                 # (P, prefix_len, D)
        x = self.embed(tokens[:, prefix_len:], start=prefix_len)           # (B, T - prefix_len, D)
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            x_prefix_next, (k, v) = block(x_prefix, last_only=last)
            x, _ = block(x, past_kv=(k[which], v[which]), last_only=last)
            x_prefix = x_prefix_next
        return self.head(self.final_norm(x[:, -1]))


def init_weights(model, scheme):
    """--init: 'default' keeps PyTorch's initialisation (nn.MultiheadAttention's for attention).
    Any other scheme re-draws every Linear and Embedding weight (attention projections too),
    sets Linear biases to 0 and LayerNorm to weight 1, bias 0. Edit here for a new scheme."""
    if scheme == "default":
        return
    draw = {"xavier": nn.init.xavier_uniform_,
            "he": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
            "orthogonal": nn.init.orthogonal_,
            "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
            "uniform": lambda w: nn.init.uniform_(w, -UNIFORM_INIT_RANGE, UNIFORM_INIT_RANGE)}[scheme]
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            draw(module.weight)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------------------------
# OPTIMISATION: parameter groups, schedules, regulariser and gradient filter, one function each.
# ---------------------------------------------------------------------------------------------
def param_groups(model, cfg):
    """AdamW parameter groups. --lr_groups=EMB,LOWER,HIGHER: the embeddings; the first half of
    the blocks (rounded down, at least one); the remaining blocks, final LayerNorm and head."""
    if not cfg.lr_groups:
        return [{"name": "all", "params": list(model.parameters()), "lr": cfg.lr}]
    n_lower = max(1, len(model.blocks) // 2)
    emb = [*model.token_embedding.parameters(), *model.position_embedding.parameters()]
    lower = [p for block in model.blocks[:n_lower] for p in block.parameters()]
    higher = [p for block in model.blocks[n_lower:] for p in block.parameters()]
    higher += [*model.final_norm.parameters(), *model.head.parameters()]
    groups = zip(("embeddings", "lower", "higher"), (emb, lower, higher), lr_group_values(cfg))
    return [{"name": n, "params": ps, "lr": lr} for n, ps, lr in groups if ps]


def make_optimizer(model, cfg):
    groups = param_groups(model, cfg)
    for group in groups:
        group["base_lr"] = group["lr"]  # lr_factor() scales from here each update
    # fused: one kernel for all parameters (CPU and CUDA), the same AdamW to float tolerance and
    # ~3 ms/update faster on CPU than the default per-parameter loop; fused=False to compare.
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             weight_decay=cfg.weight_decay, fused=fused)


def lr_factor(step, cfg):
    """Linear warm-up, as LambdaLR(min(step / warmup, 1)): update 0 runs at lr 0."""
    return min(step / cfg.warmup_steps, 1.0) if cfg.warmup_steps else 1.0


def batch_size_at(step, cfg):
    """--batch_schedule from batch_size_min to batch_size over the updates: linear, exponential,
    or step (doubling at equal intervals: 32, 64, 128, 256, 512). The last update uses batch_size."""
    lo, hi, schedule = cfg.batch_size_min, cfg.batch_size, cfg.batch_schedule
    frac = step / max(cfg.total_steps - 1, 1)
    if schedule == "constant" or lo == hi:
        return hi
    if schedule == "linear":
        return round(lo + (hi - lo) * frac)
    if schedule == "exponential":
        return min(hi, round(lo * (hi / lo) ** frac))
    stages = int(math.log2(hi / lo)) + 1
    stage = min(step * stages // cfg.total_steps, stages - 1)
    return hi if stage == stages - 1 else lo * 2 ** stage


def regulariser(model, cfg):
    """Added to the cross-entropy before backward: l1_weight x sum |p| over all parameters,
    unnormalised (about 2e4 for the default model, so 0.005 weighs ~100 against a CE of ~4.6)."""
    if cfg.l1_weight == 0:
        return 0.0
    return cfg.l1_weight * sum(p.abs().sum() for p in model.parameters())


def filter_gradients(model, state, cfg):
    """Grokfast, after backward and before the optimizer step, parameter by parameter.
    ema: h <- alpha h + (1 - alpha) g (h starts at the first gradient); g <- g + lamb h.
    ma:  g <- g + lamb x mean of the last `window` gradients (this one included), once full."""
    if cfg.grokfast == "none":
        return
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        g = p.grad
        if cfg.grokfast == "ema":
            h = state.get(name)
            state[name] = g.detach().clone() if h is None else h.mul_(cfg.grokfast_alpha).add_(
                g, alpha=1 - cfg.grokfast_alpha)
            g.add_(state[name], alpha=cfg.grokfast_lamb)
        else:
            buf, count = state.get(name, (None, 0))
            if buf is None:
                buf = torch.zeros((cfg.grokfast_window, *g.shape), dtype=g.dtype, device=g.device)
            buf[count % cfg.grokfast_window] = g
            state[name] = (buf, count + 1)
            if count + 1 >= cfg.grokfast_window:
                g.add_(buf.mean(dim=0), alpha=cfg.grokfast_lamb)


# ---------------------------------------------------------------------------------------------
# TRAINING AND EVALUATION: one (dataset, seed) unit.
# ---------------------------------------------------------------------------------------------
def resolve_device(name):
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@torch.no_grad()
def evaluate(model, logits_fn, x, y, batch_size):
    """Loss, accuracy and grokking diagnostics over the whole split."""
    model.eval()
    loss_sum = correct = saturated = 0.0
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        logits = logits_fn(xb).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(-1) == yb).sum()
        saturated += (logits.softmax(-1).amax(-1) == 1.0).sum()  # softmax collapse in float32
    weight_norm = torch.sqrt(sum(p.detach().float().pow(2).sum() for p in model.parameters()))
    model.train()
    n = len(y)
    return {"val_loss": (loss_sum / n).item(), "val_accuracy": (correct / n).item(),
            "weight_norm": weight_norm.item(), "softmax_collapse": (saturated / n).item()}


def build_unit(cfg, dataset, seed, device):
    """One unit's data, model, optimizer and forward function; `seed` drives split and init."""
    data = make_dataset(dataset, cfg, seed, device)
    torch.manual_seed(seed)
    model = Transformer(cfg, data["vocab_size"], data["num_classes"]).to(device)
    init_weights(model, cfg.init)
    optimizer = make_optimizer(model, cfg)
    logits_fn = model.forward_fast if cfg.fast_forward else model
    if cfg.compile:
        logits_fn = torch.compile(logits_fn)
    return data, model, optimizer, logits_fn


def train_step(cfg, step, model, logits_fn, optimizer, filter_state, x, y):
    """One update, the ideas in order: lr schedule, loss + regulariser, backward, gradient
    filter, optimizer step. Returns the logits and cross-entropy for the train metrics."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * lr_factor(step, cfg)
    logits = logits_fn(x)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    (loss + regulariser(model, cfg)).backward()
    filter_gradients(model, filter_state, cfg)
    optimizer.step()
    return logits, loss


def train_unit(cfg, dataset, seed_index, progress=None):
    """Train one (dataset, seed) unit; returns its final_info, train_info and val_info."""
    start, seed = time.perf_counter(), cfg.seed + seed_index
    device = resolve_device(cfg.device)
    data, model, optimizer, logits_fn = build_unit(cfg, dataset, seed, device)
    sampler = torch.Generator(device=device).manual_seed(seed)
    filter_state, train_info, val_info = {}, [], []
    loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    for step in range(cfg.total_steps):
        idx = torch.randint(len(data["train_y"]), (batch_size_at(step, cfg),), device=device,
                            generator=sampler)
        x, y = data["train_x"][idx], data["train_y"][idx]
        logits, loss = train_step(cfg, step, model, logits_fn, optimizer, filter_state, x, y)
        # Train metrics come from the update's own forward pass, summed on the device (no sync).
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(-1) == y).sum()
        seen += len(y)
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.total_steps:
            train_info.append({"step": done, "train_loss": (loss_sum / seen).item(),
                               "train_accuracy": (correct / seen).item()})
            val = evaluate(model, logits_fn, data["val_x"], data["val_y"], cfg.eval_batch_size)
            val_info.append({"step": done, **val})
            loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
            if progress:
                progress(done)
    reached = [r["step"] for r in val_info if r["val_accuracy"] > 0.99]
    final_info = {"final_train_loss": train_info[-1]["train_loss"],
                  "final_val_loss": val_info[-1]["val_loss"],
                  "final_train_acc": train_info[-1]["train_accuracy"],
                  "final_val_acc": val_info[-1]["val_accuracy"],
                  "step_val_acc_99": reached[0] if reached else cfg.total_steps}
    return {"dataset": dataset, "seed_index": seed_index, "seed": seed, "final_info": final_info,
            "train_info": train_info, "val_info": val_info,
            "wall_time_s": time.perf_counter() - start, "device": str(device),
            "torch_threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------
# RUNNING UNITS: in this process (--jobs=1) or in worker processes, results identical either way.
# ---------------------------------------------------------------------------------------------
def default_jobs(cfg, n_units):
    """CPU: workers x threads = cores; single-threaded workers beat one multi-threaded process
    for these small matrices. GPU: a few units share the device (not yet measured)."""
    if cfg.jobs:
        return min(cfg.jobs, n_units)
    cores = os.cpu_count() or 1
    if resolve_device(cfg.device).type == "cpu":
        return max(1, min(cores // cfg.threads, n_units))
    return max(1, min(4, cores, n_units))


_progress_queue = _parent_pid = None


def _worker_init(threads, queue, parent_pid):
    global _progress_queue, _parent_pid
    torch.set_num_threads(threads)
    _progress_queue, _parent_pid = queue, parent_pid


def _worker_run(cfg, dataset, seed_index):
    def report(done):  # every eval_every updates
        if os.getppid() != _parent_pid:  # the main process was killed (kill -9, a launcher's
            os._exit(1)                  # timeout): stop instead of training on as an orphan
        _progress_queue.put(cfg.eval_every)
    return train_unit(cfg, dataset, seed_index, progress=report)


def run_units(cfg, units, jobs, on_result, bar=None):
    """Run (dataset, seed_index) units, calling on_result(result) as each one finishes."""
    if jobs == 1:
        torch.set_num_threads(cfg.threads)
        for dataset, s in units:
            on_result(train_unit(cfg, dataset, s, progress=bar and (lambda d: bar.update(cfg.eval_every))))
        return
    import multiprocessing as mp
    ctx = mp.get_context("spawn")  # fork is unsafe once torch has started threads
    queue = ctx.Queue()
    init_args = (cfg.threads, queue, os.getpid())
    with ctx.Pool(jobs, initializer=_worker_init, initargs=init_args) as pool:
        pending = [pool.apply_async(_worker_run, (cfg, d, s)) for d, s in units]
        while pending:
            time.sleep(0.2)
            while not queue.empty():
                step = queue.get()
                if bar:
                    bar.update(step)
            for job in [j for j in pending if j.ready()]:
                pending.remove(job)
                on_result(job.get())  # re-raises a worker's exception here


# ---------------------------------------------------------------------------------------------
# OUTPUTS: per-unit files as units finish, then all_results.npy and (last) final_info.json.
# ---------------------------------------------------------------------------------------------
RUN_CONTROL_KEYS = ("out_dir", "jobs", "overwrite", "resume", "description")


def standard_error(values):
    """Standard error of the mean: sample standard deviation (ddof=1) / sqrt(n); 0 when n = 1.
    The one helper for experiment.py and plot.py; NaN values propagate."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


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
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))


def save_npy(path, obj):
    with open(path, "wb") as f:  # a file object: np.save would append .npy to a temporary name
        np.save(f, obj, allow_pickle=True)


def unit_path(out_dir, dataset, seed_index):
    return Path(out_dir) / "units" / f"{dataset}_{seed_index}.json"


def aggregate(cfg, results):
    """final_info.json's dict and all_results.npy's dict, from every unit's result."""
    final_infos, all_results = {}, {}
    for dataset in dataset_list(cfg):
        runs = [results[(dataset, s)] for s in range(cfg.num_seeds)]
        per_seed = {k: [r["final_info"][k] for r in runs] for k in runs[0]["final_info"]}
        final_infos[dataset] = {
            "means": {f"{k}_mean": float(np.mean(v)) for k, v in per_seed.items()},
            "stderrs": {f"{k}_stderr": standard_error(v) for k, v in per_seed.items()},
            "final_info_dict": per_seed}
        for r in runs:
            for part in ("final_info", "train_info", "val_info"):
                all_results[f"{dataset}_{r['seed_index']}_{part}"] = r[part]
    return final_infos, all_results


def prepare_out_dir(cfg):
    """Refuse to clobber a finished run; a run being redone never looks complete."""
    out = Path(cfg.out_dir)
    if (out / "final_info.json").exists() and not cfg.overwrite:
        raise ConfigError(f"--out_dir={cfg.out_dir} already holds final_info.json; "
                          "pass --overwrite to replace it or choose another out_dir")
    (out / "final_info.json").unlink(missing_ok=True)
    (out / "units").mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        for f in (out / "units").glob("*.json"):
            f.unlink()
    write_json(out / "config.json", dataclasses.asdict(cfg))


def load_finished(cfg):
    """--resume: results of units already in out_dir/units, checked against this config."""
    finished, mine = {}, {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUN_CONTROL_KEYS}
    for dataset in dataset_list(cfg):
        for s in range(cfg.num_seeds):
            path = unit_path(cfg.out_dir, dataset, s)
            if cfg.resume and path.exists():
                result = json.loads(path.read_text())
                theirs = {k: v for k, v in result["config"].items() if k not in RUN_CONTROL_KEYS}
                if theirs != mine:
                    diff = sorted(k for k in mine if theirs.get(k) != mine[k])
                    raise ConfigError(f"--resume: {path} was made with other settings ({', '.join(diff)})")
                finished[(dataset, s)] = result
    return finished


def versions():
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count()}


def unit_line(r):
    """One grep-friendly stdout line per finished unit."""
    fi = r["final_info"]
    return (f"{r['dataset']}_{r['seed_index']}: " + ", ".join(
        f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in fi.items())
        + f", wall_s: {r['wall_time_s']:.1f}")


# ---------------------------------------------------------------------------------------------
# NOTES: the lab notebook beside the run folders; text is only ever appended.
# ---------------------------------------------------------------------------------------------
NOTES_HEADER = ("# Title: Grokking on algorithmic datasets\n"
                "# Experiment description: (the idea this series of runs tests)\n")


def run_number(out_dir):
    match = re.fullmatch(r"run_(\d+)", Path(out_dir).resolve().name)
    return int(match.group(1)) if match else None


def notes_section(number, means, description):
    title = "Baseline" if number == 0 else (description.split(".")[0][:60] if description else "")
    text = f"## Run {number}" + (f": {title}" if title else "") + "\n"
    text += f"Results: {means}\n"
    text += f"Description: {description or ('Baseline results.' if number == 0 else '')}\n"
    return text


def append_section(text, section):
    """Sections stand a blank line apart; the first follows the bare header directly."""
    if text == NOTES_HEADER or text.endswith("\n\n"):
        return text + section
    return text + ("\n" if text.endswith("\n") else "\n\n") + section


def update_notes(cfg, final_infos):
    """Create notes.txt beside the run folder if missing (with Run 0 when run_0 exists), then
    append this run's section unless notes.txt already has its heading. Returns the path."""
    number = run_number(cfg.out_dir)
    if number is None:
        return None
    notes = Path(cfg.out_dir).resolve().parent / "notes.txt"
    means = {k: v["means"] for k, v in final_infos.items()}
    text = notes.read_text() if notes.exists() else NOTES_HEADER
    if not notes.exists() and number != 0:
        run0 = notes.parent / "run_0" / "final_info.json"
        if run0.exists():
            base = {k: v["means"] for k, v in json.loads(run0.read_text()).items()}
            text = append_section(text, notes_section(0, base, "Baseline results."))
    if not re.search(rf"^## Run {number}\b", text, flags=re.M):
        text = append_section(text, notes_section(number, means, cfg.description))
    write_atomic(notes, lambda tmp: tmp.write_text(text))
    return notes


# ---------------------------------------------------------------------------------------------
# MAIN
# ---------------------------------------------------------------------------------------------
def run(cfg):
    start = time.perf_counter()
    prepare_out_dir(cfg)
    results = load_finished(cfg)
    todo = [(d, s) for d in dataset_list(cfg) for s in range(cfg.num_seeds) if (d, s) not in results]
    jobs = default_jobs(cfg, max(len(todo), 1))
    device = resolve_device(cfg.device)
    print(f"device: {device}, jobs: {jobs}, threads_per_job: {cfg.threads}, "
          f"units: {len(todo)} to run, {len(results)} resumed", flush=True)
    bar = None
    if sys.stderr.isatty() and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo) * cfg.total_steps, unit="update", file=sys.stderr)

    def on_result(result):
        result["config"] = dataclasses.asdict(cfg)
        write_json(unit_path(cfg.out_dir, result["dataset"], result["seed_index"]), result)
        results[(result["dataset"], result["seed_index"])] = result
        print(unit_line(result), flush=True)

    run_units(cfg, todo, jobs, on_result, bar)
    if bar:
        bar.close()
    final_infos, all_results = aggregate(cfg, results)
    out = Path(cfg.out_dir)
    write_json(out / "run_info.json", {
        "wall_time_s": time.perf_counter() - start, "device": str(device), "jobs": jobs,
        "threads_per_job": cfg.threads, "versions": versions(),
        "unit_wall_time_s": {f"{d}_{s}": r["wall_time_s"] for (d, s), r in sorted(results.items())}})
    write_atomic(out / "all_results.npy", lambda tmp: save_npy(tmp, all_results))
    notes = update_notes(cfg, final_infos)  # before final_info.json; a rerun never repeats it
    write_json(out / "final_info.json", final_infos)  # last: its presence means success
    print(f"wall_s: {time.perf_counter() - start:.1f}" + (f", notes: {notes}" if notes else ""))
    return final_infos


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`), handled as Ctrl-C: the worker pool is terminated, finished units kept."""


def _on_sigterm(signum, frame):
    raise Terminated


def main(argv=None):
    try:
        cfg = parse_config(sys.argv[1:] if argv is None else argv)
        run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        print("error: interrupted; finished units are in units/, rerun with --resume", file=sys.stderr)
        sys.exit(143 if isinstance(e, Terminated) else 130)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)  # `kill PID` must not leave workers running
    main()
