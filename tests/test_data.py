"""Every dataset's table is arithmetically right for every pair, and its split is seeded."""
import itertools

import pytest
import torch

import experiment as E
import tasks

P = 97


def table(name):
    return tasks.operation_table(name, P)


def test_x_plus_y_every_pair():
    n, a, b, c = table("x_plus_y")
    assert n == P and len(c) == P * P
    assert {(int(x), int(y)) for x, y in zip(a, b)} == set(itertools.product(range(P), repeat=2))
    assert all(int(z) == (int(x) + int(y)) % P for x, y, z in zip(a, b, c))


def test_x_minus_y_every_pair():
    n, a, b, c = table("x_minus_y")
    assert len(c) == P * P
    assert all(int(z) == (int(x) - int(y)) % P for x, y, z in zip(a, b, c))


def test_x_div_y_every_pair_uses_the_modular_inverse():
    n, a, b, c = table("x_div_y")
    assert len(c) == P * (P - 1) and int(b.min()) == 1
    assert {(int(x), int(y)) for x, y in zip(a, b)} == set(itertools.product(range(P), range(1, P)))
    assert all((int(z) * int(y)) % P == int(x) for x, y, z in zip(a, b, c))  # c = a / b


def test_permutation_is_composition_of_s5():
    n, a, b, c = table("permutation")
    perms = list(itertools.permutations(range(5)))
    assert n == 120 and len(c) == 120 * 120
    for x, y, z in zip(a.tolist(), b.tolist(), c.tolist()):
        pa, pb, pc = perms[x], perms[y], perms[z]
        assert all(pc[i] == pa[pb[i]] for i in range(5))


@pytest.mark.parametrize("name,vocab,classes", [("x_plus_y", 99, 97), ("x_div_y", 99, 97),
                                                ("permutation", 122, 120)])
def test_tokens_are_a_o_b_equals(name, vocab, classes):
    d = E.make_dataset(name, E.Config(), 1337, "cpu")
    assert d["vocab_size"] == vocab and d["num_classes"] == classes
    x = torch.cat([d["train_x"], d["val_x"]])
    assert (x[:, 1] == 0).all() and (x[:, 3] == 1).all()  # 'o' and '=' tokens
    assert x[:, [0, 2]].min() >= 2 and x[:, [0, 2]].max() == vocab - 1
    y = torch.cat([d["train_y"], d["val_y"]])
    assert y.min() == 0 and y.max() == classes - 1


@pytest.mark.parametrize("name", E.DATASETS)
def test_split_sizes_disjoint_complete(name):
    cfg = E.Config()
    d = E.make_dataset(name, cfg, 1337, "cpu")
    n = len(tasks.operation_table(name, P)[3])
    assert len(d["train_y"]) == int(n * 0.5) and len(d["train_y"]) + len(d["val_y"]) == n
    pairs = lambda x: {tuple(r) for r in x[:, [0, 2]].tolist()}  # noqa: E731
    train, val = pairs(d["train_x"]), pairs(d["val_x"])
    assert not train & val
    assert len(train | val) == n


def test_split_is_seeded():
    cfg = E.Config()
    one = E.make_dataset("x_plus_y", cfg, 1337, "cpu")
    same = E.make_dataset("x_plus_y", cfg, 1337, "cpu")
    other = E.make_dataset("x_plus_y", cfg, 1338, "cpu")
    assert torch.equal(one["train_x"], same["train_x"]) and torch.equal(one["val_y"], same["val_y"])
    assert not torch.equal(one["train_x"], other["train_x"])


def test_train_frac_is_respected():
    d = E.make_dataset("x_plus_y", E.Config(train_frac=0.3), 1, "cpu")
    assert len(d["train_y"]) == int(P * P * 0.3)
