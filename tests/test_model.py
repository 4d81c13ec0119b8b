"""The model: the fast forward is exact, attention matches nn.MultiheadAttention, edits take effect."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import experiment as E


def model_and_batch(name, cfg=E.Config(), n=512, seed=0):
    d = E.make_dataset(name, cfg, 1337, "cpu")
    torch.manual_seed(seed)
    model = E.Transformer(cfg, d["vocab_size"], d["num_classes"])
    return model, d["train_x"][:n], d["train_y"][:n]


@pytest.mark.parametrize("name", E.DATASETS)
def test_fast_forward_equals_plain_forward_and_loss(name):
    model, x, y = model_and_batch(name)
    plain, fast = model(x), model.forward_fast(x)
    assert (plain - fast).abs().max() <= 1e-5
    assert abs(F.cross_entropy(plain, y).item() - F.cross_entropy(fast, y).item()) <= 1e-5


@pytest.mark.parametrize("layers", [1, 3])
def test_fast_forward_gradients_match_for_other_depths(layers):
    model, x, y = model_and_batch("x_minus_y", E.Config(num_layers=layers, dim_model=64), n=256)
    grads = []
    for fn in (model, model.forward_fast):
        model.zero_grad()
        F.cross_entropy(fn(x), y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert (grads[0] - grads[1]).abs().max() <= 1e-5


def test_attention_equals_torch_multihead_attention():
    torch.manual_seed(0)
    ours, theirs = E.CausalSelfAttention(32, 4), nn.MultiheadAttention(32, 4, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(ours.qkv.weight)
        theirs.in_proj_bias.copy_(ours.qkv.bias + 0.1)
        ours.qkv.bias.add_(0.1)
        theirs.out_proj.weight.copy_(ours.out.weight)
        theirs.out_proj.bias.copy_(ours.out.bias)
    x = torch.randn(8, 4, 32)
    mask = torch.ones(4, 4, dtype=torch.bool).triu(1)  # True = not allowed
    expected, _ = theirs(x, x, x, attn_mask=mask)
    assert (ours(x)[0] - expected).abs().max() <= 1e-5


def test_default_initialisation_is_multihead_attentions():
    model, _, _ = model_and_batch("x_plus_y")
    attn = model.blocks[0].attn
    bound = math.sqrt(6 / (128 + 3 * 128))  # xavier_uniform on the (3D, D) in-projection
    assert attn.qkv.weight.abs().max() <= bound and attn.qkv.weight.abs().max() > 0.9 * bound
    assert (attn.qkv.bias == 0).all() and (attn.out.bias == 0).all()
    # Everything else keeps nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    assert model.head.weight.abs().max() <= 1 / math.sqrt(128)


def test_an_edit_to_the_block_takes_effect_in_both_paths():
    model, x, _ = model_and_batch("x_plus_y", n=64)
    before = model.forward_fast(x).detach()
    for block in model.blocks:  # the kind of edit an agent makes: swap the FFN activation
        block.ffn[1] = nn.ReLU()
    after_fast, after_plain = model.forward_fast(x), model(x)
    assert (after_fast - before).abs().max() > 1e-3
    assert (after_fast - after_plain).abs().max() <= 1e-5


def test_a_pre_norm_rewrite_of_the_block_takes_effect_in_both_paths(monkeypatch):
    def pre_norm(self, x, past_kv=None, last_only=False):
        a, kv = self.attn(self.attn_norm(x), past_kv, last_only)
        x = (x[:, -1:] if last_only else x) + a
        return x + self.ffn(self.ffn_norm(x)), kv
    model, x, _ = model_and_batch("permutation", n=64)
    before = model(x).detach()
    monkeypatch.setattr(E.DecoderBlock, "forward", pre_norm)
    assert (model(x) - before).abs().max() > 1e-3
    assert (model.forward_fast(x) - model(x)).abs().max() <= 1e-5
