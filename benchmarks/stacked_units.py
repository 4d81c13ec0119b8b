"""Several units per process: does stacking U units' weights beat one unit per process?

    python benchmarks/stacked_units.py                  # eager, U = 1, 3, 6 (~3 minutes)
    python benchmarks/stacked_units.py --compile        # also torch.compile'd, both ways (+5-10 min)

Issue 16 asks for several units per process only "if a measurement shows it beats one unit per
process". This is that measurement. It builds U units of one dataset (seeds 0..U-1) with
experiment.py's own build_unit, then times, single-threaded as each worker runs:
  - one unit per process: experiment.train_step / evaluate on each unit in turn (the fast forward
    the self-check chose), i.e. what the workers do today;
  - stacked: the same U models as one set of (U, ...) weights, the same fast forward (prefix
    sharing, first-block token tables, last block at the last position only) written with batched
    matmuls (baddbmm) over the unit axis, one fused AdamW over the stacked weights.
Before timing, it checks that the stacked loss and every stacked gradient equal the U units' own
(within fast_forward.FAST_PATH_TOLERANCE), so the two columns compute the same thing. The stacked code
here is a measuring prototype of the model as it is: it does not follow edits to experiment.py.
Compare ratios within one run; absolute times move with machine load.
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import experiment as E  # noqa: E402
import fast_forward
import unit_run


def stack_params(units):
    """{name: (U, ...) leaf tensor} from the units' models, parameter by parameter."""
    names = [n for n, _ in units[0].model.named_parameters()]
    per_unit = [dict(u.model.named_parameters()) for u in units]
    return {n: torch.stack([p[n].detach() for p in per_unit]).requires_grad_() for n in names}


def linear(P, name, x):
    """x (U, ..., in) through the U units' nn.Linear `name`."""
    U, shape = x.shape[0], x.shape[1:-1]
    w, b = P[f"{name}.weight"], P[f"{name}.bias"]
    y = torch.baddbmm(b.unsqueeze(1), x.reshape(U, -1, x.shape[-1]), w.transpose(1, 2))
    return y.view(U, *shape, w.shape[1])


def layer_norm(P, name, x):
    U = x.shape[0]
    w, b = P[f"{name}.weight"], P[f"{name}.bias"]
    view = (U,) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return F.layer_norm(x, x.shape[-1:]) * w.view(view) + b.view(view)


def attention(P, pre, heads, x, past_kv=None, last_only=False, qkv=None):
    """CausalSelfAttention.forward with a leading unit axis: x (U, B, T, D)."""
    U, B, T, D = x.shape
    qkv = linear(P, f"{pre}.qkv", x) if qkv is None else qkv
    q, k, v = qkv.view(U, B, T, 3, heads, D // heads).unbind(3)
    if past_kv is not None:
        k, v = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)
    if last_only:
        q = q[:, :, -1:]
    Tq, S = q.shape[2], k.shape[2]
    scores = (q.unsqueeze(3) * k.unsqueeze(2)).sum(-1) / math.sqrt(D // heads)  # (U, B, Tq, S, H)
    causal = torch.ones(Tq, S, dtype=torch.bool, device=x.device).tril(S - Tq).unsqueeze(-1)
    weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=3)
    y = (weights.unsqueeze(-1) * v.unsqueeze(2)).sum(3)
    return linear(P, f"{pre}.out", y.reshape(U, B, Tq, D)), (k, v)


def block(P, i, heads, x, past_kv=None, last_only=False, qkv=None):
    pre = f"blocks.{i}"
    a, kv = attention(P, f"{pre}.attn", heads, x, past_kv, last_only, qkv)
    x = layer_norm(P, f"{pre}.attn_norm", (x[:, :, -1:] if last_only else x) + a)
    h = linear(P, f"{pre}.ffn.2", F.gelu(linear(P, f"{pre}.ffn.0", x)))
    return layer_norm(P, f"{pre}.ffn_norm", x + h), kv


def stacked_forward(P, tables, heads, layers, tokens):
    """fast_forward.forward_fast for U units at once: tokens (U, B, 4) -> logits (U, B, C)."""
    prefixes, suffixes = tables
    U, B, _ = tokens.shape
    which = prefixes.index(tokens[..., :fast_forward.PREFIX_LEN].reshape(U * B, -1)).view(U, B)
    suffix = suffixes.index(tokens[..., fast_forward.PREFIX_LEN:].reshape(U * B, -1)).view(U, B)
    units = torch.arange(U, device=tokens.device).unsqueeze(1)
    emb, pos = P["token_embedding.weight"], P["position_embedding.weight"]
    x_prefix = emb[:, prefixes.rows] + pos[:, None, :fast_forward.PREFIX_LEN]              # (U, Pn, 2, D)
    x = emb[units.unsqueeze(2), tokens[..., fast_forward.PREFIX_LEN:]] + pos[:, None, fast_forward.PREFIX_LEN:]
    for i in range(layers):
        last = i == layers - 1
        x_prefix_next, (k, v) = block(P, i, heads, x_prefix, last_only=last)
        past = k[units, which], v[units, which]
        if i == 0:
            s = emb[:, suffixes.rows] + pos[:, None, fast_forward.PREFIX_LEN:]
            qkv = linear(P, "blocks.0.attn.qkv", s)[units, suffix]
            x, _ = block(P, i, heads, x, past, last_only=last, qkv=qkv)
        else:
            x, _ = block(P, i, heads, x, past, last_only=last)
        x_prefix = x_prefix_next
    return linear(P, "head", layer_norm(P, "final_norm", x[:, :, -1]))


def stacked_loss(logits, y):
    """The sum over units of each unit's mean cross-entropy: each unit's gradient is its own."""
    U, B, C = logits.shape
    return F.cross_entropy(logits.reshape(U * B, C), y.reshape(-1), reduction="none").view(U, B).mean(1).sum()


def check_equal(units, P, forward, x, y):
    """None if the stacked loss and gradients equal each unit's own, else what differs."""
    for u in units:
        u.model.zero_grad(set_to_none=True)
    own = torch.stack([F.cross_entropy(u.logits_fn(x[i]), y[i]) for i, u in enumerate(units)])
    own.sum().backward()
    logits = forward(P, x)
    U, B, C = logits.shape
    stacked = F.cross_entropy(logits.reshape(U * B, C), y.reshape(-1), reduction="none").view(U, B).mean(1)
    stacked.sum().backward()
    tol = fast_forward.FAST_PATH_TOLERANCE
    problems = []
    if not torch.allclose(stacked, own, atol=tol, rtol=tol):
        problems.append(f"loss {stacked.tolist()} vs {own.tolist()}")
    for n, p in P.items():
        ref = torch.stack([dict(u.model.named_parameters())[n].grad for u in units])
        err = (p.grad - ref).abs().max().item()
        if not err <= tol * (1 + ref.abs().max().item()):
            problems.append(f"{n} gradient differs by {err:.3g}")
        p.grad = None
    for u in units:
        u.model.zero_grad(set_to_none=True)
    return "; ".join(problems) or None


def timed(fn, n):
    fn(), fn()  # warm-up (and compilation)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e3


def measure(dataset, U, compiled, updates, evals):
    cfg = E.Config(compile="true" if compiled else "false")
    units = [E.build_unit(cfg, dataset, unit_run.UnitRun(cfg, dataset, s, "cpu", warn=lambda m: None))
             for s in range(U)]
    tables = fast_forward.dataset_tables(units[0].data)
    P = stack_params(units)
    heads, layers = cfg.num_heads, cfg.num_layers

    def forward(params, tokens):
        return stacked_forward(params, tables, heads, layers, tokens)
    fwd = torch.compile(forward) if compiled else forward
    g = torch.Generator().manual_seed(0)
    idx = [torch.randint(len(u.data["train_y"]), (cfg.batch_size,), generator=g) for u in units]
    x = torch.stack([u.data["train_x"][i] for u, i in zip(units, idx)])
    y = torch.stack([u.data["train_y"][i] for u, i in zip(units, idx)])
    problem = check_equal(units, P, forward, x, y)
    if problem:
        sys.exit(f"the stacked prototype does not compute what the units do: {problem}")
    opt = torch.optim.AdamW(P.values(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                            weight_decay=cfg.weight_decay, fused=True)

    def each_update():
        for i, u in enumerate(units):
            E.train_step(cfg, 100, u, x[i], y[i])

    def stacked_update():
        opt.zero_grad(set_to_none=True)
        stacked_loss(fwd(P, x), y).backward()
        opt.step()

    val_x = torch.stack([u.data["val_x"] for u in units])
    val_y = torch.stack([u.data["val_y"] for u in units])

    def each_eval():
        for u in units:
            E.evaluate(u, u.data["val_x"], u.data["val_y"], cfg.eval_batch_size)

    @torch.no_grad()
    def stacked_eval():  # the numbers evaluate() reports, per unit
        loss = correct = 0
        for xb, yb in zip(val_x.split(cfg.eval_batch_size, 1), val_y.split(cfg.eval_batch_size, 1)):
            logits = fwd(P, xb)
            loss = loss + F.cross_entropy(logits.transpose(1, 2), yb, reduction="none").sum(1)
            correct = correct + (logits.argmax(-1) == yb).sum(1)
        torch.sqrt(sum(p.pow(2).flatten(1).sum(1) for p in P.values())).tolist(), loss.tolist(), correct.tolist()

    return [timed(each_update, updates) / U, timed(stacked_update, updates) / U,
            timed(each_eval, evals) / U, timed(stacked_eval, evals) / U]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="x_plus_y,permutation")
    ap.add_argument("--units", default="1,3,6", help="U values")
    ap.add_argument("--updates", type=int, default=10)
    ap.add_argument("--evals", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also both ways under torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; ms per unit (each: one unit after another, as a "
          "worker runs them; stacked: all U at once)")
    print("| dataset | U | compiled | update: each | update: stacked | ratio | eval: each | eval: stacked | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for compiled in (False, True) if args.compile else (False,):
        for dataset in args.datasets.split(","):
            for U in map(int, args.units.split(",")):
                eu, su, ee, se = measure(dataset, U, compiled, args.updates, args.evals)
                print(f"| {dataset} | {U} | {'yes' if compiled else 'no'} | {eu:.1f} | {su:.1f} | {eu / su:.2f}x "
                      f"| {ee:.0f} | {se:.0f} | {ee / se:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
