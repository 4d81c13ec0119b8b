"""Each study option takes effect as documented, and a tiny run with it writes the contract."""
import json
import math

import pytest
import torch
import torch.nn as nn

import experiment as E
import unit_run
from helpers import TINY, run_experiment


def tiny_model(**overrides):
    cfg = E.Config(**{"dim_model": 32, "num_heads": 2, **overrides})
    torch.manual_seed(0)
    return E.Transformer(cfg, vocab_size=13, num_classes=11), cfg


# --- layer-wise learning rates -------------------------------------------------------------
def group_ids(group):
    return {id(p) for p in group["params"]}


def test_default_is_one_group_at_lr():
    model, cfg = tiny_model()
    groups = E.make_optimizer(model, cfg).param_groups
    assert len(groups) == 1 and groups[0]["lr"] == cfg.lr
    assert group_ids(groups[0]) == {id(p) for p in model.parameters()}


def test_fused_adamw_is_adamw():
    """make_optimizer's fused AdamW (the speed choice) updates like torch's reference per-parameter
    AdamW with the same settings, layer-wise groups and warm-up included."""
    (model, cfg), (reference, _) = tiny_model(lr_groups="1e-3,2e-3,3e-3"), tiny_model()
    fused = E.make_optimizer(model, cfg)
    assert fused.defaults["fused"]
    by_id = {id(p): q for p, q in zip(model.parameters(), reference.parameters())}
    plain = torch.optim.AdamW([{"params": [by_id[id(p)] for p in g["params"]], "lr": g["lr"],
                                "base_lr": g["base_lr"]} for g in fused.param_groups],
                              betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
                              foreach=False, fused=False)
    assert not any(g["fused"] or g["foreach"] for g in plain.param_groups)
    torch.manual_seed(1)
    for step in range(30):  # the same gradients for both: only the optimizers' arithmetic differs
        for p in model.parameters():
            p.grad = torch.randn_like(p)
            by_id[id(p)].grad = p.grad.clone()
        for opt in (fused, plain):
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * E.lr_factor(step, cfg)
            opt.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert (model.head.weight - tiny_model()[0].head.weight).abs().max() > 1e-3  # it did move


@pytest.mark.parametrize("layers,n_lower", [(2, 1), (4, 2), (3, 1), (1, 1)])
def test_lr_groups_split_embeddings_lower_higher(layers, n_lower):
    model, cfg = tiny_model(num_layers=layers, lr_groups="8e-4,2e-3,3e-3")
    groups = {g["name"]: g for g in E.make_optimizer(model, cfg).param_groups}
    emb = {id(p) for m in (model.token_embedding, model.position_embedding) for p in m.parameters()}
    lower = {id(p) for b in model.blocks[:n_lower] for p in b.parameters()}
    assert group_ids(groups["embeddings"]) == emb and groups["embeddings"]["lr"] == 8e-4
    assert group_ids(groups["lower"]) == lower and groups["lower"]["lr"] == 2e-3
    assert groups["higher"]["lr"] == 3e-3
    assert {id(p) for p in model.head.parameters()} <= group_ids(groups["higher"])
    assert {id(p) for p in model.final_norm.parameters()} <= group_ids(groups["higher"])
    every = [i for g in groups.values() for i in group_ids(g)]
    assert sorted(every) == sorted(id(p) for p in model.parameters())  # each parameter once


def test_warm_up_scales_every_group(monkeypatch):
    seen = []
    real_step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append([g["lr"] for g in self.param_groups])
        return real_step(self, *a, **k)
    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    cfg = E.Config(prime=11, dim_model=32, num_heads=2, total_steps=60, eval_every=30,
                   lr_groups="1e-3,2e-3,4e-3", warmup_steps=50)
    E.train_unit(cfg, "x_plus_y", 0, unit_run.UnitRun(cfg, "x_plus_y", 0))
    assert seen[0] == [0.0, 0.0, 0.0]                           # update 0, as LambdaLR
    assert seen[10] == pytest.approx([2e-4, 4e-4, 8e-4])        # 10 / 50 of each group's rate
    assert seen[55] == pytest.approx([1e-3, 2e-3, 4e-3])


# --- initialisation ------------------------------------------------------------------------
def weights(model, kind):
    return [m.weight for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("scheme", ["xavier", "he", "orthogonal", "kaiming_normal", "uniform"])
def test_init_resets_biases_and_layernorms(scheme):
    model, _ = tiny_model(dim_model=64)
    E.init_weights(model, scheme)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            assert (m.bias == 0).all()
        if isinstance(m, nn.LayerNorm):
            assert (m.weight == 1).all() and (m.bias == 0).all()


@torch.no_grad()
def test_init_statistics():
    model, _ = tiny_model(dim_model=64)
    E.init_weights(model, "uniform")
    w = torch.cat([p.flatten() for p in weights(model, (nn.Linear, nn.Embedding))])
    assert w.abs().max() <= E.UNIFORM_INIT_RANGE and w.std().item() == pytest.approx(0.1 / math.sqrt(3), rel=0.05)
    E.init_weights(model, "xavier")
    ffn_in = model.blocks[0].ffn[0].weight  # (256, 64)
    assert ffn_in.std().item() == pytest.approx(math.sqrt(2 / (64 + 256)), rel=0.05)
    E.init_weights(model, "he")
    assert ffn_in.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.05)  # kaiming uniform, relu gain
    E.init_weights(model, "kaiming_normal")
    assert ffn_in.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.05)
    E.init_weights(model, "orthogonal")
    qkv = model.blocks[0].attn.qkv.weight  # (192, 64): orthonormal columns, attention included
    assert torch.allclose(qkv.T @ qkv, torch.eye(64), atol=1e-4)


# --- batch-size schedules ------------------------------------------------------------------
def sizes(schedule, steps=7500):
    cfg = E.Config(batch_schedule=schedule, total_steps=steps)
    return [E.batch_size_at(s, cfg) for s in range(steps)]


def test_constant_batch():
    assert set(sizes("constant")) == {512}


def test_step_schedule_doubles_at_equal_intervals():
    s = sizes("step")
    assert s[0] == 32 and s[-1] == 512
    assert [s[i] for i in (0, 1499, 1500, 2999, 3000, 4500, 6000, 7499)] == [32, 32, 64, 64, 128, 256, 512, 512]


@pytest.mark.parametrize("schedule", ["linear", "exponential"])
def test_growing_schedules_go_from_min_to_max(schedule):
    s = sizes(schedule)
    assert s[0] == 32 and s[-1] == 512 and all(a <= b for a, b in zip(s, s[1:]))
    middle = s[len(s) // 2]
    assert middle == pytest.approx(272, abs=1) if schedule == "linear" else middle == pytest.approx(128, abs=1)


def test_train_metrics_are_per_example_means_under_a_batch_schedule(monkeypatch):
    """With batches of 32, 64, ... the recorded train loss weighs each example once."""
    losses = []
    real = torch.nn.functional.cross_entropy

    def spy(logits, y, **k):
        out = real(logits, y, **k)
        if not k and logits.requires_grad:
            losses.append((out.item(), len(y)))
        return out
    monkeypatch.setattr(E.F, "cross_entropy", spy)
    cfg = E.Config(prime=11, dim_model=32, num_heads=2, total_steps=20, eval_every=20,
                   batch_schedule="linear", batch_size_min=8, batch_size=64,
                   fast_forward=False)  # the fast path's self-check computes a loss of its own
    result = E.train_unit(cfg, "x_plus_y", 0, unit_run.UnitRun(cfg, "x_plus_y", 0))
    expected = sum(l * n for l, n in losses) / sum(n for _, n in losses)
    assert len({n for _, n in losses}) > 5
    assert result["train_info"][0]["train_loss"] == pytest.approx(expected, rel=1e-5)


# --- L1 regularisation ---------------------------------------------------------------------
def test_l1_term_is_weight_times_sum_of_abs():
    model, cfg = tiny_model(l1_weight=0.005)
    expected = 0.005 * sum(p.abs().sum().item() for p in model.parameters())
    assert E.regulariser(model, cfg).item() == pytest.approx(expected, rel=1e-6)
    assert E.regulariser(model, E.Config()) == 0.0


# --- Grokfast ------------------------------------------------------------------------------
GRADS = [torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5]), torch.tensor([-1.0, 4.0]),
         torch.tensor([0.0, 1.0])]


def filtered(cfg):
    param = nn.Linear(2, 1, bias=False)
    state, out = {}, []
    for g in GRADS:
        param.weight.grad = g.clone().view(1, 2)
        E.filter_gradients(param, state, cfg)
        out.append(param.weight.grad.view(2).clone())
    return out


def test_grokfast_ema_matches_hand_computation():
    alpha, lamb = 0.9, 2.0
    out = filtered(E.Config(grokfast="ema", grokfast_alpha=alpha, grokfast_lamb=lamb))
    h = None
    for g, got in zip(GRADS, out):
        h = g.clone() if h is None else alpha * h + (1 - alpha) * g
        assert torch.allclose(got, g + lamb * h)


def test_grokfast_ma_matches_hand_computation():
    window, lamb = 3, 2.0
    out = filtered(E.Config(grokfast="ma", grokfast_window=window, grokfast_lamb=lamb))
    assert torch.equal(out[0], GRADS[0]) and torch.equal(out[1], GRADS[1])  # window not yet full
    for i in (2, 3):
        mean = torch.stack(GRADS[i - window + 1:i + 1]).mean(0)
        assert torch.allclose(out[i], GRADS[i] + lamb * mean)


def test_no_filter_leaves_gradients_alone():
    assert all(torch.equal(a, b) for a, b in zip(filtered(E.Config()), GRADS))


# --- diagnostics ---------------------------------------------------------------------------
def test_weight_norm_and_softmax_collapse():
    model, _ = tiny_model()
    x = torch.tensor([[2, 0, 3, 1], [4, 0, 5, 1]])
    y = torch.tensor([0, 1])
    norm = math.sqrt(sum((p.double() ** 2).sum().item() for p in model.parameters()))
    stats = E.evaluate(E.Unit({}, model, None, model), x, y, 1024)
    assert stats["weight_norm"] == pytest.approx(norm, rel=1e-5) and stats["softmax_collapse"] == 0.0
    with torch.no_grad():
        model.head.bias[0] = 1e4  # every softmax saturates to exactly 1.0 in float32
    stats = E.evaluate(E.Unit({}, model, None, model), x, y, 1024)
    assert stats["softmax_collapse"] == 1.0 and stats["val_accuracy"] == 0.5


# --- every option through the command line ---------------------------------------------------
@pytest.mark.parametrize("option", [
    ["--lr_groups=8e-4,2e-3,3e-3"], ["--init=orthogonal"], ["--batch_schedule=step"],
    ["--num_layers=4", "--dim_model=64"], ["--l1_weight=0.005"], ["--grokfast=ema"],
    ["--grokfast=ma", "--grokfast_window=5"], ["--fast_forward=false"],
    ["--train_frac=0.4", "--weight_decay=1.0", "--eval_every=15"],
])
@pytest.mark.slow
def test_tiny_run_with_option_writes_the_contract(tmp_path, option):
    run_experiment(tmp_path, "--out_dir=r", "--datasets=x_minus_y", "--num_seeds=1", *TINY, *option)
    info = json.loads((tmp_path / "r" / "final_info.json").read_text())
    assert list(info["x_minus_y"]) == ["means", "stderrs", "final_info_dict"]
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    for opt in option:
        key, value = opt[2:].split("=")
        assert str(config[key]).lower() == value.lower() or float(config[key]) == float(value)
