"""The research instruments as specifications, against hand computations on tiny cases: the
Fourier progress measures (Nanda et al. 2023; instruments.py), StableMax and float64 losses and
the ⊥Grad optimiser (Prieto et al. 2025), slingshot spikes (Thilak et al. 2022; grokstats.py),
checkpoints; and each option taking effect in a tiny real run."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import experiment as E
import grokstats
import instruments as I

from helpers import PREVIOUS_RUN_0, TINY, run_experiment


# ---------------------------------------------------------------------------------------------
# Fourier progress measures
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [3, 7, 11, 97])
def test_fourier_basis_is_orthonormal_constant_then_cos_sin_pairs(p):
    basis = I.fourier_basis(p)
    assert basis.shape == (p, p)
    assert torch.allclose(basis @ basis.T, torch.eye(p, dtype=torch.float64), atol=1e-12)
    x = torch.arange(p, dtype=torch.float64)
    assert torch.allclose(basis[0], torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64))
    for k in (1, (p - 1) // 2):  # rows 2k - 1, 2k: cos and sin of frequency k, norm sqrt(p / 2)
        assert torch.allclose(basis[2 * k - 1], torch.cos(2 * math.pi * k * x / p) / math.sqrt(p / 2))
        assert torch.allclose(basis[2 * k], torch.sin(2 * math.pi * k * x / p) / math.sqrt(p / 2))


def planted_embedding(p, d, k, a=3.0, b=-2.0, seed=0):
    """E[x] = a cos(w_k x) u + b sin(w_k x) v, u and v orthonormal in R^d: all its norm is at
    frequency k, norm_k = sqrt(a^2 + b^2) sqrt(p / 2) by hand (|cos(w_k .)|^2 = p / 2)."""
    q, _ = torch.linalg.qr(torch.randn(d, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    x = torch.arange(p, dtype=torch.float64)[:, None]
    w = 2 * math.pi * k / p
    return a * torch.cos(w * x) * q[:, 0] + b * torch.sin(w * x) * q[:, 1]


def test_a_planted_single_frequency_embedding_gives_that_one_key_frequency():
    p, k = 11, 3
    norms, total = I.frequency_norms(planted_embedding(p, 8, k), I.fourier_basis(p))
    expected = torch.zeros((p - 1) // 2, dtype=torch.float64)
    expected[k - 1] = math.sqrt(13 * p / 2)
    assert torch.allclose(norms, expected, atol=1e-10)
    assert total.item() == pytest.approx(13 * p / 2)
    assert I.key_frequencies(norms) == [k]
    # a weaker second frequency is key down to a quarter of the strongest's norm, not below
    for scale, keys in ((0.26, [2, k]), (0.24, [k])):
        both = planted_embedding(p, 8, k) + scale * planted_embedding(p, 8, 2, seed=1)
        assert I.key_frequencies(I.frequency_norms(both, I.fourier_basis(p))[0]) == keys


def test_the_model_embedding_is_read_without_the_special_tokens():
    p, k = 11, 4
    cfg = E.Config(prime=p, dim_model=8, num_heads=2)
    model = E.Transformer(cfg, p + len(E.SPECIAL_TOKENS), p)
    with torch.no_grad():
        model.token_embedding.weight[:2] = 100.0  # 'o' and '=': not numbers, must not count
        model.token_embedding.weight[2:] = planted_embedding(p, 8, k).float()
    data = E.make_dataset("x_plus_y", cfg, 0, "cpu")
    progress = E.make_progress_measures(E.Config(prime=p, dim_model=8, num_heads=2, progress_every=10),
                                        "x_plus_y", data)
    out = progress(model, model.forward)
    assert len(out["fourier_norms"]) == (p - 1) // 2
    assert out["fourier_norms"][k - 1] == pytest.approx(math.sqrt(13 * p / 2), rel=1e-6)
    assert sum(v ** 2 for v in out["fourier_norms"]) == pytest.approx(13 * p / 2, rel=1e-6)
    assert set(out) == {"restricted_loss", "excluded_loss", "key_embedding_share", "key_logit_share",
                        "key_frequencies", "fourier_norms", "logit_fourier_norms"}


def test_key_frequencies_are_read_from_the_logits_and_the_measures_follow_them():
    """A model whose logits are planted, L(a, b, c) = 5 cos(w_k (a + b - c)) + 0.5 cos(w_j (a + b - c)):
    all their variance lies along the sum directions of k and j, with n_k / n_j = 5 / 0.5 = 10 by
    hand, so only k is key (j is under a quarter) and carries 100 / 101 of the variance;
    restricting to k leaves the j term out, excluding k leaves the j term alone; fixing
    keys=[j, k] keeps everything."""
    p, k, j = 11, 4, 1
    cfg = E.Config(prime=p, dim_model=8, num_heads=2, progress_every=10)
    model = E.Transformer(cfg, p + 2, p)
    data = E.make_dataset("x_plus_y", cfg, 0, "cpu")
    progress = E.make_progress_measures(cfg, "x_plus_y", data)
    c = torch.arange(p)

    def planted(tokens):
        s = (tokens[:, 0] - 2 + tokens[:, 2] - 2)[:, None] - c[None]
        return 5 * torch.cos(2 * math.pi * k * s / p) + 0.5 * torch.cos(2 * math.pi * j * s / p)
    out = progress(model, planted)
    norms = out["logit_fourier_norms"]
    assert norms[k - 1] / norms[j - 1] == pytest.approx(10, rel=1e-5)
    assert sum(v for i, v in enumerate(norms) if i not in (k - 1, j - 1)) < 1e-4
    assert out["key_frequencies"] == [k] and out["key_logit_share"] == pytest.approx(100 / 101, rel=1e-5)
    logits = planted(progress.tokens).double()
    only_k = 5 * torch.cos(2 * math.pi * k * ((progress.tokens[:, 0] + progress.tokens[:, 2] - 4)[:, None] - c) / p).double()
    labels, train = progress.labels, progress.train
    assert out["restricted_loss"] == pytest.approx(F.cross_entropy(only_k, labels).item(), rel=1e-5)
    assert out["excluded_loss"] == pytest.approx(F.cross_entropy((logits - only_k)[train], labels[train]).item(),
                                                 rel=1e-5)
    both = progress(model, planted, keys=[j, k])
    assert both["key_frequencies"] == [j, k] and both["key_logit_share"] == pytest.approx(1.0, rel=1e-6)
    assert both["restricted_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)


@pytest.mark.parametrize("sign", [1, -1])
def test_sum_directions_are_orthonormal_and_nandas_2d_fourier_combinations(sign):
    p = 7
    d = I.sum_directions(p, sign).reshape(-1, p * p)
    assert torch.allclose(d @ d.T, torch.eye(p - 1, dtype=torch.float64), atol=1e-12)
    f = I.fourier_basis(p)
    for k in (1, 2, 3):  # cos(w(a +- b)) = cos cos -+ sin sin; sin(w(a +- b)) = sin cos +- cos sin
        cc, ss = torch.outer(f[2 * k - 1], f[2 * k - 1]), torch.outer(f[2 * k], f[2 * k])
        sc, cs = torch.outer(f[2 * k], f[2 * k - 1]), torch.outer(f[2 * k - 1], f[2 * k])
        assert torch.allclose(d[2 * (k - 1)], ((cc - sign * ss) / math.sqrt(2)).flatten(), atol=1e-12)
        assert torch.allclose(d[2 * (k - 1) + 1], ((sc + sign * cs) / math.sqrt(2)).flatten(), atol=1e-12)


def test_restricted_and_excluded_loss_on_logits_made_of_one_key_frequency():
    """Logits L(a, b, c) = 5 cos(w_k (a + b - c)) + bias_c lie entirely in frequency k's sum
    directions plus the constant: restricting to k keeps all of L (loss = its own cross-entropy);
    excluding k leaves the constant bias_c alone (loss = logsumexp(bias) - bias_label averaged over
    the train pairs). With another frequency as the key one, the roles swap."""
    p, k = 11, 2
    a, b = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
    c = torch.arange(p)
    bias = torch.linspace(-1, 1, p, dtype=torch.float64)
    angle = 2 * math.pi * k * (a[:, None] + b[:, None] - c[None]).double() / p
    logits = 5 * torch.cos(angle) + bias
    labels = (a + b) % p
    train = torch.rand(p * p, generator=torch.Generator().manual_seed(0)) < 0.5
    only_bias = (torch.logsumexp(bias, 0) - bias[labels[train]]).mean().item()
    keys = I.sum_directions(p)[[k - 1]].reshape(-1, p * p)
    restricted, excluded = I.ablated_losses(logits, labels, train, keys)
    assert restricted == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-9)
    assert excluded == pytest.approx(only_bias, rel=1e-9)
    other = I.sum_directions(p)[[k]].reshape(-1, p * p)  # a frequency the logits do not use
    restricted, excluded = I.ablated_losses(logits, labels, train, other)
    assert restricted == pytest.approx((torch.logsumexp(bias, 0) - bias[labels]).mean().item(), rel=1e-9)
    assert excluded == pytest.approx(F.cross_entropy(logits[train], labels[train]).item(), rel=1e-9)


# ---------------------------------------------------------------------------------------------
# StableMax, float64 loss, ⊥Grad
# ---------------------------------------------------------------------------------------------
def test_stablemax_cross_entropy_against_its_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0], [-3.0, 0.5, 1.0]])
    y = torch.tensor([0, 1])
    s = [[3.0, 1.0, 1 / 2], [1 / 4, 1.5, 2.0]]  # s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0)
    nll = [-math.log(s[0][0] / sum(s[0])), -math.log(s[1][1] / sum(s[1]))]
    out = E.stablemax_cross_entropy(logits, y, reduction="none")
    assert out.tolist() == pytest.approx(nll, rel=1e-6)
    assert E.stablemax_cross_entropy(logits, y).item() == pytest.approx(sum(nll) / 2, rel=1e-6)
    assert E.stablemax_cross_entropy(logits, y, reduction="sum").item() == pytest.approx(sum(nll), rel=1e-6)
    # gradients are finite everywhere, x = 1 included (the unused branch 1 / (1 - x) is clamped)
    x = torch.tensor([[1.0, 0.0, -2.0]], requires_grad=True)
    E.stablemax_cross_entropy(x, torch.tensor([2])).backward()
    assert torch.isfinite(x.grad).all()
    # s is continuous with slope 1 at 0 from both sides: the loss is smooth through 0
    left, right = (E.stablemax_cross_entropy(torch.tensor([[v, 0.3]]), torch.tensor([0])).item()
                   for v in (-1e-4, 1e-4))
    assert abs(left - right) < 1e-3


@pytest.mark.parametrize("loss", ["softmax", "stablemax"])
def test_float64_loss_equals_float32_loss_on_easy_logits(loss):
    logits = torch.randn(64, 11, generator=torch.Generator().manual_seed(0))
    y = torch.randint(11, (64,), generator=torch.Generator().manual_seed(1))
    f32 = E.make_loss(E.Config(loss=loss))
    f64 = E.make_loss(E.Config(loss=loss, loss_precision="float64"))
    assert f64(logits, y).dtype == torch.float64 and f32(logits, y).dtype == torch.float32
    assert f64(logits, y).item() == pytest.approx(f32(logits, y).item(), rel=1e-6)
    assert f64(logits, y, reduction="sum").item() == pytest.approx(f32(logits, y, reduction="sum").item(),
                                                                   rel=1e-6)
    assert E.make_loss(E.Config()) is F.cross_entropy  # the default is untouched


class ReferenceOrthoGrad(torch.optim.Optimizer):
    """Prieto et al.'s OrthoGrad wrapper as published (orthograd.py of their repository),
    written out here as the reference: orthogonalise every gradient in step(), then the base
    optimizer's step."""

    def __init__(self, params, base_optimizer_cls, **kwargs):
        super().__init__(params, {})
        self.base_optimizer = base_optimizer_cls(self.param_groups, **kwargs)

    def step(self, closure=None):
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        w, g = p.view(-1), p.grad.view(-1)
                        w_norm_sq = torch.dot(w, w) + 1e-30
                        proj = torch.dot(w, g) / w_norm_sq
                        g_orth = g - proj * w
                        g_norm = g.norm(2)
                        g_orth_norm = g_orth.norm(2) + 1e-30
                        g_orth_scaled = g_orth * (g_norm / g_orth_norm)
                        p.grad.copy_(g_orth_scaled.view_as(p.grad))
        return self.base_optimizer.step(closure)


def test_orthograd_leaves_each_gradient_orthogonal_to_its_weight_with_its_norm():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3))
    model(torch.randn(8, 5)).pow(2).sum().backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    E.orthogonalize_gradients(torch.optim.AdamW(model.parameters()))
    for n, p in model.named_parameters():
        assert abs(torch.dot(p.detach().flatten(), p.grad.flatten()).item()) < 1e-5 * p.norm().item() * p.grad.norm().item()
        assert p.grad.norm().item() == pytest.approx(before[n].norm().item(), rel=1e-6)
        w = p.detach().flatten().double()  # and it is g minus its component along w
        g = before[n].flatten().double()
        perp = g - (w @ g) / (w @ w) * w
        assert torch.allclose(p.grad.flatten().double(), perp * g.norm() / perp.norm(), atol=1e-6)


def test_orthograd_train_step_equals_the_reference_wrapper_around_adamw():
    cfg = E.Config(prime=11, dim_model=16, num_heads=2, optimizer="orthograd", weight_decay=0.5)
    data = E.make_dataset("x_plus_y", cfg, 0, "cpu")
    x, y = data["train_x"][:32], data["train_y"][:32]
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(E.Transformer(cfg, data["vocab_size"], data["num_classes"]))
    ours, theirs = models
    opt = torch.optim.AdamW(ours.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.5)
    for group in opt.param_groups:
        group["base_lr"] = group["lr"]
    unit = E.Unit(data, ours, opt, ours.forward)
    ref = ReferenceOrthoGrad(theirs.parameters(), torch.optim.AdamW, lr=1e-3, betas=(0.9, 0.98),
                             weight_decay=0.5)
    for step in range(1, 4):  # after the warm-up's update 0 at lr 0: the lr is step / 50 x 1e-3
        E.train_step(cfg, step, unit, x, y)
        for group in ref.param_groups:
            group["lr"] = 1e-3 * step / 50
        ref.zero_grad(set_to_none=True)
        F.cross_entropy(theirs(x), y).backward()
        ref.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# Slingshot spikes
# ---------------------------------------------------------------------------------------------
def synthetic_train_info(spikes, memorised_at=5, n=60, base=0.01):
    """Records every 10 updates: loss 2.0 and accuracy 0.5 before record `memorised_at`, then
    loss `base` (x1.5 wiggle every other record) and accuracy 1.0; spikes: {record: loss}."""
    rows = []
    for i in range(n):
        loss = 2.0 if i < memorised_at else base * (1.5 if i % 2 else 1.0)
        rows.append({"step": 10 * (i + 1), "train_loss": spikes.get(i, loss),
                     "train_accuracy": 0.5 if i < memorised_at else 1.0})
    return rows


def test_slingshot_spikes_are_found_after_memorisation_and_counted_once_each():
    spikes = {2: 9.0,                 # before memorisation: not counted
              8: 5.0,                 # memorised at record 5, but < 10 records since: not counted
              20: 0.5,                # 0.5 > 10 x median 0.0125: a spike at step 210
              30: 0.3, 31: 0.8,       # two records over the line: one spike, at step 310
              40: 0.09,               # 7 x the median: not a spike
              50: None}               # a missing value is never a spike
    train = synthetic_train_info(spikes)
    assert grokstats.slingshot_steps(train) == [210, 310]
    stats = grokstats.unit_statistics(train, [{"step": r["step"], "val_accuracy": 0.0} for r in train], 600)
    assert stats["slingshots"] == 2 and list(stats)[-1] == "slingshots"
    assert grokstats.slingshot_steps(synthetic_train_info({}, memorised_at=100)) is None  # never memorised
    assert grokstats.slingshot_steps(synthetic_train_info({}, memorised_at=0)) == []


def test_run_0_units_have_regular_slingshots():
    results = np.load(PREVIOUS_RUN_0 / "all_results.npy", allow_pickle=True).item()
    steps = grokstats.slingshot_steps(results["x_plus_y_0_train_info"])
    assert 15 <= len(steps) <= 20 and min(np.diff(steps)) >= 190


# ---------------------------------------------------------------------------------------------
# Tiny real runs: each option takes effect, checkpoints, refusals
# ---------------------------------------------------------------------------------------------
ONE = ["--datasets=x_plus_y", "--num_seeds=1", *TINY]


def curves(folder, dataset="x_plus_y"):
    results = np.load(folder / "all_results.npy", allow_pickle=True).item()
    return results[f"{dataset}_0_train_info"], results[f"{dataset}_0_val_info"]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("default")
    run_experiment(root, "--out_dir=r", *ONE)
    return root / "r"


@pytest.mark.parametrize("option", ["--loss=stablemax", "--loss_precision=float64", "--optimizer=orthograd"])
@pytest.mark.slow
def test_each_training_option_changes_the_training(tmp_path, default_run, option):
    run_experiment(tmp_path, "--out_dir=r", *ONE, option)
    train, val = curves(tmp_path / "r")
    base_train, base_val = curves(default_run)
    assert [r["step"] for r in train] == [r["step"] for r in base_train]
    # the losses differ (in float64 only in the val loss's last digits: at this size the float32
    # gradients can round to the same values, and then so does the whole training)
    assert [(r["train_loss"], q["val_loss"]) for r, q in zip(train, val)] != \
        [(r["train_loss"], q["val_loss"]) for r, q in zip(base_train, base_val)]
    assert json.loads((tmp_path / "r" / "config.json").read_text())[option[2:].split("=")[0]] == option.split("=")[1]


def test_the_default_run_records_the_last_layer_norm_and_writes_no_checkpoint(default_run):
    train, val = curves(default_run)
    assert all(r["last_layer_norm"] > 0 for r in val)
    assert not any("restricted_loss" in r for r in val)
    assert not (default_run / "checkpoints").exists()
    unit = json.loads((default_run / "units" / "x_plus_y_0.json").read_text())
    assert unit["slingshot_steps"] is None and unit["final_info"]["slingshots"] is None  # 30 updates


@pytest.mark.slow
def test_progress_measures_are_recorded_on_modular_sums_only_and_change_nothing_else(tmp_path, default_run):
    proc = run_experiment(tmp_path, "--out_dir=r", "--datasets=x_plus_y,permutation", "--num_seeds=1",
                          *TINY, "--progress_every=20")
    assert proc.stderr.count("warning: --progress_every: nothing recorded on permutation") == 1
    train, val = curves(tmp_path / "r")
    base_train, base_val = curves(default_run)
    assert train == base_train  # the measures only read the model
    assert [{k: v for k, v in r.items() if k in base_val[0]} for r in val] == base_val
    measured = [r["step"] for r in val if "restricted_loss" in r]
    assert measured == [20, 30]  # every 20 updates and at the end
    for r in val:
        if "restricted_loss" in r:
            assert len(r["fourier_norms"]) == 5 and 1 <= len(r["key_frequencies"]) <= 5
            assert len(r["logit_fourier_norms"]) == 5
            assert r["restricted_loss"] > 0 and r["excluded_loss"] > 0
            assert 0 < r["key_embedding_share"] <= 1 and 0 < r["key_logit_share"] <= 1
    assert not any("restricted_loss" in r for r in curves(tmp_path / "r", "permutation")[1])


@pytest.mark.slow
def test_progress_measures_are_refused_for_a_list_without_modular_sums(tmp_path):
    proc = run_experiment(tmp_path, "--out_dir=r", "--datasets=permutation,x_div_y", *TINY,
                          "--progress_every=10", check=False)
    assert proc.returncode == 2 and not (tmp_path / "r").exists()
    assert proc.stderr.strip().splitlines() == [
        "error: --progress_every: Fourier progress measures are defined only on x_plus_y,x_minus_y; "
        "--datasets=permutation,x_div_y has none"]
    proc = run_experiment(tmp_path, "--out_dir=r", *ONE, "--progress_every=15", check=False)
    assert proc.returncode == 2 and "multiple of --eval_every=10" in proc.stderr


@pytest.mark.slow
def test_checkpoints_are_written_and_load_with_the_documented_recipe(tmp_path, default_run):
    run_experiment(tmp_path, "--out_dir=r", *ONE, "--save_checkpoints=20")
    folder = tmp_path / "r" / "checkpoints" / "x_plus_y_0"
    assert sorted(p.name for p in folder.iterdir()) == ["step_000020.pt", "step_000030.pt"]
    assert curves(tmp_path / "r") == curves(default_run)  # saving changes nothing
    # the recipe of experiment.checkpoint's docstring, with plain torch.load
    ckpt = torch.load(folder / "step_000030.pt")
    model = E.Transformer(E.Config(**ckpt["config"]), ckpt["vocab_size"], ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    assert ckpt["step"] == 30 and ckpt["dataset"] == "x_plus_y" and ckpt["seed"] == 1337
    optimizer = E.make_optimizer(model, E.Config(**ckpt["config"]))
    optimizer.load_state_dict(ckpt["optimizer"])
    assert optimizer.state[next(model.parameters())]["step"].item() == 30
    # the loaded model reproduces the run's last val loss
    cfg = E.Config(**ckpt["config"])
    data = E.make_dataset("x_plus_y", cfg, ckpt["seed"], "cpu")
    val = E.evaluate(E.Unit(data, model, optimizer, model.forward), data["val_x"], data["val_y"], 1024)
    assert val["val_loss"] == pytest.approx(curves(tmp_path / "r")[1][-1]["val_loss"], rel=1e-5)
    # --overwrite discards them with the rest of the old run: none is left to pass for the new one's
    run_experiment(tmp_path, "--out_dir=r", *ONE, "--overwrite")
    assert not (tmp_path / "r" / "checkpoints").exists()
