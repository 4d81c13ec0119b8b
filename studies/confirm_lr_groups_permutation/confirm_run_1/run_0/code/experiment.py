"""
grokking-harness: train a small Transformer on algorithmic datasets and watch it grok.

    python experiment.py --out_dir=run_0          # the baseline: 4 datasets x 3 seeds x 7500 updates

This file is the science, read top to bottom: CONFIG, DATA, MODEL, OPTIMISATION (the named edit
points), TRAINING AND EVALUATION. Each (dataset, seed) unit trains a 2-layer post-norm Transformer
(dim 128, 4 heads) with AdamW (lr 1e-3, betas (0.9, 0.98), weight decay 0.5, 50-update linear
warm-up) on batches of 512 drawn with replacement from a seeded 50% split, and evaluates the WHOLE
validation split every 10 updates. Datasets: x_plus_y, x_minus_y, x_div_y (mod 97) and composition
of permutations of S5 by default; --datasets takes any task of tasks.py.

Where to edit for a new idea (one function each, called from train_step / build_unit):
param_groups (learning rates), init_weights, batch_size_at, lr_factor, regulariser,
filter_gradients, DecoderBlock / Transformer (the model), train_step (an idea that keeps state
across updates keeps it in unit.state: Grokfast's filter does), evaluate (a new diagnostic: any
number it returns is recorded and plotted). A new option is a Config field (bool, int, float, str,
Literal, X | None or tuple) with its allowed values beside it.

Edit the model freely: every unit, the harness checks each of its exact shortcuts of
Transformer.forward (fast_forward.py) against forward() on a train batch and trains with the first
exact one, or with forward() itself, with one warning line; run_info.json's forward_path says
which. An idea never needs to edit a shortcut; --fast_forward=false trains with forward() alone.

Research instruments, off by default: --progress_every (Fourier progress measures, instruments.py),
--loss=stablemax, --loss_precision=float64, --optimizer=orthograd, --save_checkpoints=N; always
recorded: last_layer_norm (evaluate) and the slingshot spikes (grokstats: final_info's slingshots).

The run machinery (command line, workers, --resume, outputs, notes.txt, statistics) is harness.py
and the modules it names, which no idea needs to touch. Outputs in --out_dir: final_info.json
{dataset: {"means", "stderrs", "final_info_dict"}} (written last, only on success), all_results.npy
({dataset}_{seed}_final_info / _train_info / _val_info), config.json, run_info.json, units/.
"""
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

import grokstats
import harness
import tasks
from harness import option, require

# ---------------------------------------------------------------------------------------------
# CONFIG: every hyperparameter, its default (the baseline), meaning and allowed values.
# ---------------------------------------------------------------------------------------------
DATASETS = ("x_div_y", "x_minus_y", "x_plus_y", "permutation")  # the default run; any of tasks.names()
PROGRESS_DATASETS = ("x_plus_y", "x_minus_y")  # where Fourier progress measures are defined
UNIFORM_INIT_RANGE = 0.1  # --init=uniform draws every weight from U(-0.1, 0.1)


def known_datasets(text):
    names = [d for d in text.split(",") if d]
    unknown = [d for d in names if d not in tasks.TASKS]
    if not names or unknown or len(set(names)) != len(names):
        return f"{'unknown ' + ','.join(unknown) + '; ' if unknown else ''}allowed: a comma-separated " \
               f"list without repeats from {','.join(tasks.names())}"


def is_prime(p):
    return None if p >= 3 and all(p % k for k in range(2, math.isqrt(p) + 1)) else "must be a prime >= 3"


def three_lrs(text):
    try:
        lrs = [float(v) for v in text.split(",")] if text else []
    except ValueError:
        lrs = None
    if text and not (lrs and len(lrs) == 3 and all(math.isfinite(v) and v > 0 for v in lrs)):
        return "must be three finite positive numbers EMB,LOWER,HIGHER"


@dataclass(frozen=True)
class Config:
    # units: every dataset x num_seeds seeds; seed index s uses seed + s
    datasets: str = option(",".join(DATASETS), "comma-separated task names (tasks.py; the README's "
                                               "task table)",
                           check=known_datasets)
    num_seeds: int = option(3, "seeds per dataset; seed index s uses seed + s", ok="[1, inf)")
    seed: int = option(1337, "base seed; one seed drives split, initialisation and batch sampling",
                       ok="[0, inf)")
    # data
    prime: int = option(97, "modulus of x_plus_y, x_minus_y, x_div_y", check=is_prime)
    train_frac: float = option(0.5, "fraction of all pairs in the train split", ok="(0, 1)")
    # model
    num_layers: int = option(2, "decoder blocks", ok="[1, inf)")
    dim_model: int = option(128, "width; the FFN is 4x wider", ok="[1, inf)")
    num_heads: int = option(4, "attention heads; must divide dim_model", ok="[1, inf)")
    init: Literal["default", "xavier", "he", "orthogonal", "kaiming_normal", "uniform"] = option(
        "default", "weight initialisation (init_weights)")
    # optimisation
    total_steps: int = option(7500, "optimizer updates per unit", ok="[1, inf)")
    batch_size: int = option(512, "train batch (with replacement); the final size of a batch "
                                  "schedule", ok="[1, inf)")
    batch_schedule: Literal["constant", "linear", "exponential", "step"] = option(
        "constant", "batch_size_min -> batch_size over training (batch_size_at)")
    batch_size_min: int = option(32, "first batch size of a non-constant batch schedule", ok="[1, inf)")
    lr: float = option(1e-3, "AdamW learning rate", ok="(0, inf)")
    lr_groups: str = option("", "EMB,LOWER,HIGHER learning rates (embeddings / first half of the "
                                "blocks / other blocks + final LayerNorm + head); empty = all at lr",
                            check=three_lrs)
    weight_decay: float = option(0.5, "AdamW decoupled weight decay, on all parameters", ok="[0, inf)")
    beta1: float = option(0.9, "AdamW beta1", ok="[0, 1)")
    beta2: float = option(0.98, "AdamW beta2", ok="[0, 1)")
    warmup_steps: int = option(50, "linear warm-up: lr x min(step / warmup_steps, 1); 0 = none",
                               ok="[0, inf)")
    l1_weight: float = option(0.0, "adds l1_weight x sum |p| over all parameters (unnormalised)",
                              ok="[0, inf)")
    grokfast: Literal["none", "ema", "ma"] = option("none", "gradient filter (filter_gradients)")
    grokfast_alpha: float = option(0.98, "EMA filter momentum", ok="[0, 1)")
    grokfast_lamb: float = option(2.0, "filter amplification: g <- g + lamb x filtered g")
    grokfast_window: int = option(100, "MA filter window, in updates", ok="[1, inf)")
    # evaluation and speed
    eval_every: int = option(10, "updates between records; val metrics use the whole val split",
                             ok="[1, inf)")
    eval_batch_size: int = option(1024, "examples per forward pass in evaluation (speed and memory "
                                        "only; 1024 measured fastest on CPU)", ok="[1, inf)")
    fast_forward: bool = option(True, "train with the harness's exact shortcut of Transformer.forward "
                                      "(fast_forward.py), checked against it at the start of each "
                                      "unit (the next exact one, or plain, where an edit makes it "
                                      "inexact); false = plain")
    compile: Literal["auto", "true", "false"] = option(
        "auto", "torch.compile the fast forward, checked against the plain one like it (eager if "
                "compiling fails): 17-25% faster updates, 30-50% faster evaluations (bench.py) after "
                "2-3 min of compiling per process and shape (seconds with a warm cache); auto = true "
                "for units of >= 5000 updates where a compiler exists (fast_forward.use_compile)")
    precision: Literal["float32", "bf16"] = option(
        "float32", "bf16: the forward under torch.autocast(bfloat16) (matmuls in bfloat16; weights, "
                   "AdamW and the loss stay float32): faster only on GPUs and CPUs with native bf16; "
                   "grokking is sensitive to precision, so compare with a float32 run (with_precision)")
    # research instruments (off by default: the baseline computes exactly what it did without them)
    loss: Literal["softmax", "stablemax"] = option(
        "softmax", "cross-entropy over softmax, or over StableMax (Prieto et al. 2025; make_loss)")
    loss_precision: Literal["float32", "float64"] = option(
        "float32", "dtype the loss (softmax / StableMax and cross-entropy) is computed in")
    optimizer: Literal["adamw", "orthograd"] = option(
        "adamw", "orthograd: each gradient made orthogonal to its weight, rescaled to its norm, "
                 "then the AdamW step (Prieto et al. 2025; orthogonalize_gradients)")
    progress_every: int = option(0, "updates between Fourier progress measures (Nanda et al. 2023: "
                                    "embedding norm per frequency, key frequencies, restricted and "
                                    "excluded loss) on x_plus_y, x_minus_y; a multiple of "
                                    "eval_every; 0 = off", ok="[0, inf)")
    save_checkpoints: int = option(0, "save each unit's model and optimizer state every N updates "
                                      "and at the end in out_dir/checkpoints/ (checkpoint); 0 = off",
                                   ok="[0, inf)")

    def check(self):
        """Rules between fields; each failure is one line on stderr and exit 2."""
        require(self.dim_model % self.num_heads == 0,
                f"--dim_model={self.dim_model} must be divisible by --num_heads={self.num_heads}")
        require(self.batch_size_min <= self.batch_size,
                f"--batch_size_min={self.batch_size_min} must be <= --batch_size={self.batch_size}")
        small, names = [], [d for d in self.datasets.split(",") if d]
        for name, pairs in ((d, tasks.num_pairs(d, self.prime)) for d in names):
            train = int(pairs * self.train_frac)
            require(0 < train < pairs, f"--train_frac={self.train_frac} leaves an empty split of {name}'s {pairs} pairs")
            small += [f"{name}'s {train}"] if self.batch_size > train else []
        if small:  # allowed (batches are drawn with replacement), but slow and unusual
            harness.warn(f"--batch_size={self.batch_size} exceeds the train split ({', '.join(small)} "
                         "examples); each batch repeats examples")
        if self.precision == "bf16" and not (torch.cuda.is_available() or torch.cpu._is_avx512_bf16_supported()
                                             or torch.cpu._is_amx_tile_supported()):
            harness.warn("--precision=bf16: this CPU has no native bfloat16 (avx512_bf16 or AMX), so "
                         "bf16 runs slower than float32 here")
        if self.progress_every:
            require(self.progress_every % self.eval_every == 0, f"--progress_every={self.progress_every}"
                    f" must be a multiple of --eval_every={self.eval_every}")
            other = [d for d in names if d not in PROGRESS_DATASETS]
            require(len(other) < len(names), f"--progress_every: Fourier progress measures are defined "
                    f"only on {','.join(PROGRESS_DATASETS)}; --datasets={self.datasets} has none")
            if other:
                harness.warn(f"--progress_every: nothing recorded on {','.join(other)} (Fourier progress "
                             f"measures are defined only on {','.join(PROGRESS_DATASETS)})")


# ---------------------------------------------------------------------------------------------
# DATA: every (a, b) pair of a binary operation as tokens [a, 'o', b, '='], label = a o b. Each
# operation is one function in tasks.py (x_plus_y, x2_plus_xy_plus_y2, s5_conjugation, ...).
# ---------------------------------------------------------------------------------------------
SPECIAL_TOKENS = ("o", "=")  # token ids 0 and 1; group element i is token id i + 2


def make_dataset(name, cfg, seed, device):
    """Tokens and labels of the seeded train / val split, resident on the device."""
    num_elements, a, b, c = tasks.operation_table(name, cfg.prime)  # every pair, its label
    tokens = torch.stack([a + 2, torch.zeros_like(a), b + 2, torch.ones_like(a)], dim=1)  # (N, 4)
    order = torch.randperm(len(c), generator=torch.Generator().manual_seed(seed))
    n_train = int(len(c) * cfg.train_frac)
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
    nn.MultiheadAttention (xavier-uniform in-projection, zero biases)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)  # nn.MultiheadAttention's in_proj
        self.out = nn.Linear(dim, dim)      # nn.MultiheadAttention's out_proj
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, past_kv=None, last_only=False, qkv=None):
        """x (B, T, D) new positions, after past_kv's P positions (keys, values (B, P, H, D/H));
        qkv: self.qkv(x) if already known. Returns the output (B, T or 1, D) and the keys and
        values of all P + T positions."""
        B, T, D = x.shape
        qkv = self.qkv(x) if qkv is None else qkv
        q, k, v = qkv.view(B, T, 3, self.heads, D // self.heads).unbind(2)  # (B, T, H, hd)
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
    """Post-norm block: x = LN(x + Attn(x)); x = LN(x + FFN(x)), FFN = D -> 4D GELU -> D.
    past_kv, last_only and qkv (keys and values of earlier positions, output only the last
    position, the in-projection already applied) are used only by the harness's exact shortcut;
    forward() never passes them, and an edit that ignores them is caught by its check."""

    def __init__(self, dim, heads):
        super().__init__()
        self.attn = CausalSelfAttention(dim, heads)
        self.attn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.ffn_norm = nn.LayerNorm(dim)

    def forward(self, x, past_kv=None, last_only=False, qkv=None):
        a, kv = self.attn(x, past_kv, last_only, qkv)
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
    groups = zip(("embeddings", "lower", "higher"), (emb, lower, higher), map(float, cfg.lr_groups.split(",")))
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


def stablemax_cross_entropy(logits, y, reduction="mean"):
    """--loss=stablemax, Prieto et al. (2025), "Grokking at the edge of numerical stability":
    s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0; StableMax(x)_i = s(x_i) / sum_j s(x_j); the
    loss is -log StableMax(x)_y, computed as their log_stablemax does (log of the quotient)."""
    s = torch.where(logits >= 0, logits + 1, 1 / (1 - logits.clamp(max=0)))  # clamp: no inf in the
    nll = -torch.log(s.gather(-1, y[:, None]).squeeze(-1) / s.sum(-1))     # unused branch's gradient
    return nll.mean() if reduction == "mean" else nll.sum() if reduction == "sum" else nll


def make_loss(cfg):
    """The loss train_step minimises and evaluate reports (train_loss, val_loss): F.cross_entropy
    (softmax) or stablemax_cross_entropy; --loss_precision=float64 casts the logits to float64
    first (the model stays float32), as Prieto et al.'s float64 cross-entropy does."""
    loss = F.cross_entropy if cfg.loss == "softmax" else stablemax_cross_entropy
    if cfg.loss_precision == "float32":
        return loss
    return lambda logits, y, reduction="mean": loss(logits.double(), y, reduction=reduction)


@torch.no_grad()
def orthogonalize_gradients(optimizer, eps=1e-30):
    """--optimizer=orthograd: Prieto et al. (2025)'s ⊥Grad, in their OrthoGrad wrapper's order, for
    each parameter w with gradient g (both flattened), just before the AdamW step:
    g_perp = g - (w.g / (w.w + eps)) w, then g <- g_perp * (|g| / (|g_perp| + eps))."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                w, g = p.view(-1), p.grad.view(-1)
                g_perp = g - torch.dot(w, g) / (torch.dot(w, w) + eps) * w
                p.grad.copy_((g_perp * (g.norm(2) / (g_perp.norm(2) + eps))).view_as(p.grad))


# ---------------------------------------------------------------------------------------------
# TRAINING AND EVALUATION: one (dataset, seed) unit.
# ---------------------------------------------------------------------------------------------
@dataclass
class Unit:
    """What one unit trains: its data, model, optimizer, forward, and `state`, the one place for
    an idea that keeps state across updates (Grokfast's filter; an EMA of weights; SAM's ascent)."""
    data: dict
    model: nn.Module
    optimizer: torch.optim.Optimizer
    logits_fn: callable
    state: dict = field(default_factory=dict)
    loss_fn: callable = F.cross_entropy  # make_loss(cfg)


@torch.no_grad()
def evaluate(unit, x, y, batch_size):
    """Loss, accuracy and grokking diagnostics over the whole split. Every number returned here
    is recorded in val_info and drawn by plot.py."""
    model = unit.model
    model.eval()
    loss_sum = correct = saturated = 0.0
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        logits = unit.logits_fn(xb).float()
        loss_sum += unit.loss_fn(logits, yb, reduction="sum")
        correct += (logits.argmax(-1) == yb).sum()
        saturated += (logits.softmax(-1).amax(-1) == 1.0).sum()  # softmax collapse in float32
    weight_norm = torch.sqrt(sum(p.detach().float().pow(2).sum() for p in model.parameters()))
    last_layer_norm = model.head.weight.detach().float().norm()  # the slingshot's (Thilak et al. 2022)
    model.train()
    n = len(y)
    stats = {"val_loss": loss_sum / n, "val_accuracy": correct / n, "weight_norm": weight_norm,
             "softmax_collapse": saturated / n, "last_layer_norm": last_layer_norm}
    # read from the device once for all of them (an .item() each would make the host wait each time)
    return dict(zip(stats, torch.stack([torch.as_tensor(v, dtype=torch.float64, device=y.device)
                                        for v in stats.values()]).tolist()))


def with_precision(logits_fn, cfg, device):
    """--precision=bf16: the forward under torch.autocast(bfloat16), which runs matmuls (and the
    other ops autocast lists) in bfloat16; parameters, gradients, AdamW and the loss stay float32."""
    if cfg.precision == "float32":
        return logits_fn

    def forward(tokens):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = logits_fn(tokens)
        return logits.float()
    return forward


def build_unit(cfg, dataset, run):
    """One unit's data, model, optimizer and forward; run.seed drives split and initialisation."""
    data = make_dataset(dataset, cfg, run.seed, run.device)
    torch.manual_seed(run.seed)
    model = Transformer(cfg, data["vocab_size"], data["num_classes"]).to(run.device)
    init_weights(model, cfg.init)
    # model itself, or an exact shortcut of its forward (--fast_forward, --compile), which the harness
    # checks against model.forward() on a train batch first: edit the model freely
    logits_fn = with_precision(run.forward_for(model, data), cfg, run.device)
    return Unit(data, model, make_optimizer(model, cfg), logits_fn, loss_fn=make_loss(cfg))


def make_progress_measures(cfg, dataset, data):
    """--progress_every: instruments.ProgressMeasures (Nanda et al. 2023; definitions in
    instruments.py) over every (a, b) pair of x_plus_y / x_minus_y; None when off or undefined."""
    if not cfg.progress_every or dataset not in PROGRESS_DATASETS:
        return None
    import instruments  # imported only when on: the default run needs none of it
    x, y = torch.cat([data["train_x"], data["val_x"]]), torch.cat([data["train_y"], data["val_y"]])
    order = ((x[:, 0] - 2) * cfg.prime + x[:, 2] - 2).argsort()  # every pair, in row order a p + b
    train = torch.arange(len(y), device=y.device) < len(data["train_y"])
    return instruments.ProgressMeasures(cfg.prime, x[order], y[order], train[order],
                                        1 if dataset == "x_plus_y" else -1, slice(2, 2 + cfg.prime),
                                        cfg.eval_batch_size)


def checkpoint(cfg, dataset, run, unit, step):
    """What --save_checkpoints writes with run.save_checkpoint, as
    out_dir/checkpoints/{dataset}_{seed_index}/step_{step:06d}.pt. Plain torch.load reads it
    (after `import torch, experiment as E`):
        ckpt = torch.load("run_1/checkpoints/x_plus_y_0/step_007500.pt")
        model = E.Transformer(E.Config(**ckpt["config"]), ckpt["vocab_size"], ckpt["num_classes"])
        model.load_state_dict(ckpt["model"])
    ckpt["optimizer"] loads into E.make_optimizer(model, E.Config(**ckpt["config"])).load_state_dict."""
    return {"step": step, "dataset": dataset, "seed": run.seed, "config": dataclasses.asdict(cfg),
            "vocab_size": unit.data["vocab_size"], "num_classes": unit.data["num_classes"],
            "model": unit.model.state_dict(), "optimizer": unit.optimizer.state_dict()}


def train_step(cfg, step, unit, x, y):
    """One update, the ideas in order: lr schedule, loss + regulariser, backward, gradient
    filter, optimizer step. Returns the logits and cross-entropy for the train metrics."""
    model, optimizer = unit.model, unit.optimizer
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * lr_factor(step, cfg)
    logits = unit.logits_fn(x)
    loss = unit.loss_fn(logits, y)
    optimizer.zero_grad(set_to_none=True)
    (loss + regulariser(model, cfg)).backward()
    filter_gradients(model, unit.state.setdefault("grokfast", {}), cfg)
    if cfg.optimizer == "orthograd":
        orthogonalize_gradients(optimizer)
    optimizer.step()
    return logits, loss


def train_unit(cfg, dataset, seed_index, run):
    """Train one (dataset, seed) unit. `run` (unit_run.UnitRun) gives the device and seed, keeps
    the records (stopping a unit whose loss is no longer finite) and makes the result."""
    unit = build_unit(cfg, dataset, run)
    data, device = unit.data, run.device
    progress = make_progress_measures(cfg, dataset, data)
    sampler = torch.Generator(device=device).manual_seed(run.seed)
    loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
    for step in range(cfg.total_steps):
        idx = torch.randint(len(data["train_y"]), (batch_size_at(step, cfg),), device=device,
                            generator=sampler)
        x, y = data["train_x"][idx], data["train_y"][idx]
        logits, loss = train_step(cfg, step, unit, x, y)
        # Train metrics come from the update's own forward pass, summed on the device (no sync).
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(-1) == y).sum()
        seen += len(y)
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.total_steps:
            train = {"step": done, "train_loss": (loss_sum / seen).item(),
                     "train_accuracy": (correct / seen).item()}
            val = {"step": done, **evaluate(unit, data["val_x"], data["val_y"], cfg.eval_batch_size)}
            if progress is not None and (done % cfg.progress_every == 0 or done == cfg.total_steps):
                val.update(progress(unit.model, unit.logits_fn))
            if not run.record(train, val):
                break  # diverged: the harness reports it and nulls the final values
            loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        if cfg.save_checkpoints and (done % cfg.save_checkpoints == 0 or done == cfg.total_steps):
            run.save_checkpoint(done, checkpoint(cfg, dataset, run, unit, done))
    # the slingshot spikes' steps go in the unit's file; their count is final_info's "slingshots"
    return {**run.result(), "slingshot_steps": grokstats.slingshot_steps(run.train_info)}


if __name__ == "__main__":
    harness.main(Config, train_unit)
