"""Every registered task's table is exactly its definition, computed here another way, for every pair;
the reference template's four tables are unchanged; adding a task is one decorated function."""
import itertools

import pytest
import torch

import experiment as E
import tasks

PRIMES = (97, 11)


# Independent definitions: plain Python integers, division by searching for the quotient, and
# permutations as dicts i -> image composed as functions, (f g)(i) = f(g(i)).
def quotient(x, y, p):
    return next(z for z in range(p) if z * y % p == x)  # the z with z y = x mod p


MODULAR = {  # name -> (label of ints x, y mod p, pairs exclude y = 0)
    "x_plus_y": (lambda x, y, p: (x + y) % p, False),
    "x_minus_y": (lambda x, y, p: (x - y) % p, False),
    "x_div_y": (quotient, True),
    "x_div_y_if_y_odd_else_x_minus_y": (lambda x, y, p: quotient(x, y, p) if y % 2 else (x - y) % p, False),
    "x2_plus_y2": (lambda x, y, p: (x * x + y * y) % p, False),
    "x2_plus_xy_plus_y2": (lambda x, y, p: (x * x + x * y + y * y) % p, False),
    "x2_plus_xy_plus_y2_plus_x": (lambda x, y, p: (x * x + x * y + y * y + x) % p, False),
    "x3_plus_xy": (lambda x, y, p: (x * x * x + x * y) % p, False),
    "x3_plus_xy2_plus_y": (lambda x, y, p: (x * x * x + x * y * y + y) % p, False),
}


def then(f, g):
    """f after g, as a dict."""
    return {i: f[g[i]] for i in g}


def inv(f):
    return {v: k for k, v in f.items()}


S5_TASKS = {
    "permutation": lambda x, y: then(x, y),
    "s5_conjugation": lambda x, y: then(then(x, y), inv(x)),
    "s5_xyx": lambda x, y: then(then(x, y), x),
}
# Element i is the i-th permutation of 0..4 in lexicographic order (itertools.permutations' order).
S5_LEX = [w for w in itertools.product(range(5), repeat=5) if len(set(w)) == 5]


def reference(name, p):
    """(num_elements, [(a, b, c), ...] row-major over (a, b)) by plain loops."""
    if name in S5_TASKS:
        maps = [dict(enumerate(w)) for w in S5_LEX]
        index = {tuple(f[i] for i in range(5)): k for k, f in enumerate(maps)}
        label = S5_TASKS[name]
        rows = [(i, k, index[tuple(label(f, g)[j] for j in range(5))])
                for i, f in enumerate(maps) for k, g in enumerate(maps)]
        return len(maps), rows
    label, nonzero_y = MODULAR[name]
    return p, [(x, y, label(x, y, p)) for x in range(p) for y in range(p) if y or not nonzero_y]


def rows_of(name, p):
    n, a, b, c = tasks.operation_table(name, p)
    assert a.dtype == b.dtype == c.dtype == torch.int64 and a.shape == b.shape == c.shape
    return n, list(zip(a.tolist(), b.tolist(), c.tolist()))


def test_every_task_has_an_independent_reference():
    assert set(tasks.names()) == set(MODULAR) | set(S5_TASKS)


@pytest.mark.parametrize("p", PRIMES)
@pytest.mark.parametrize("name", tasks.names())
def test_table_is_the_definition_for_every_pair(name, p):
    assert rows_of(name, p) == reference(name, p)


@pytest.mark.parametrize("p", PRIMES)
@pytest.mark.parametrize("name", tasks.names())
def test_pair_counts_and_ranges(name, p):
    n, a, b, c = tasks.operation_table(name, p)
    s5, nonzero_y = name in S5_TASKS, name in MODULAR and MODULAR[name][1]
    assert n == (120 if s5 else p)
    assert len(c) == (14400 if s5 else p * (p - 1) if nonzero_y else p * p) == tasks.num_pairs(name, p)
    assert len(set(zip(a.tolist(), b.tolist()))) == len(c)  # no pair twice
    for t in (a, b, c):
        assert 0 <= int(t.min()) and int(t.max()) < n
    assert int(b.min()) == (1 if nonzero_y else 0)


# The reference template's operation_table for its four datasets, frozen here as it was before
# the registry, so that the comparison stays meaningful once experiment.py calls tasks.
def frozen_operation_table(name, prime):
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
    return prime, a, b, c


@pytest.mark.parametrize("p", PRIMES)
@pytest.mark.parametrize("name", ["x_plus_y", "x_minus_y", "x_div_y", "permutation"])
def test_the_reference_templates_tables_are_unchanged(name, p):
    ours, theirs = tasks.operation_table(name, p), frozen_operation_table(name, p)
    assert ours[0] == theirs[0]
    assert all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(ours[1:], theirs[1:]))
    data = E.make_dataset(name, E.Config(prime=p), 1337, "cpu")  # what experiment.py trains on
    assert data["num_classes"] == theirs[0] and len(data["train_y"]) + len(data["val_y"]) == len(theirs[3])


SPLITS_AT_HALF = {9409: (4704, 4705), 9312: (4656, 4656), 14400: (7200, 7200)}  # p = 97


@pytest.mark.parametrize("name", tasks.names())
def test_split_sizes_at_train_frac_one_half(name):
    # the split as experiment.make_dataset draws it: a seeded permutation, the first int(N x 0.5) train
    n, a, b, c = tasks.operation_table(name, 97)
    order = torch.randperm(len(c), generator=torch.Generator().manual_seed(1337))
    n_train = int(len(c) * 0.5)
    train, val = order[:n_train], order[n_train:]
    assert (len(train), len(val)) == SPLITS_AT_HALF[len(c)]
    pairs = lambda idx: set(zip(a[idx].tolist(), b[idx].tolist()))  # noqa: E731
    assert not pairs(train) & pairs(val) and len(pairs(train) | pairs(val)) == len(c)


def test_names_are_unique_and_follow_the_scheme():
    assert len(set(tasks.names())) == len(tasks.names()) == 12
    assert all(tasks.NAME_SCHEME.fullmatch(n) for n in tasks.names())
    assert tasks.names()[:3] == ("x_plus_y", "x_minus_y", "x_div_y") and set(E.DATASETS) <= set(tasks.names())
    for bad in ("x+y", "X_plus_y", "x_plus", "plus_y", "x__plus_y", "s5", "s5_", "sum", "x_plus_y,x"):
        assert not tasks.NAME_SCHEME.fullmatch(bad), bad
        with pytest.raises(ValueError):
            tasks.task(bad, "modular", "bad")
    with pytest.raises(ValueError, match="x_plus_y"):  # a name is registered once
        tasks.task("x_plus_y", "modular", "x + y mod p")


def test_describe_and_task_table():
    assert tasks.describe("x2_plus_xy_plus_y2") == "x^2 + xy + y^2 mod p; x, y in Z_p"
    assert "y != 0" in tasks.describe("x_div_y") and "S5" in tasks.describe("s5_xyx")
    lines = tasks.task_table(97).splitlines()
    assert len(lines) == 2 + len(tasks.names())
    assert "| `x_div_y` | x / y = x y^-1 mod p; x in Z_p, y in Z_p, y != 0 | 9312 |" in lines
    assert "| `permutation` | x y (composition); x, y in S5, (x y)(i) = x(y(i)) | 14400 |" in lines


def test_unknown_name_is_refused_naming_the_allowed():
    with pytest.raises(ValueError) as e:
        tasks.operation_table("x_times_y", 97)
    assert "x_times_y" in str(e.value) and all(n in str(e.value) for n in tasks.names())
    with pytest.raises(ValueError):
        tasks.describe("nope")


@pytest.mark.parametrize("domain", ["modular", "s5"])
def test_adding_a_task_is_one_decorated_function(domain):
    name = "x_times_y" if domain == "modular" else "s5_yx"
    try:
        if domain == "modular":
            @tasks.task(name, "modular", "x y mod p")
            def x_times_y(x, y, p):
                return (x * y) % p
            expected = 7, [(x, y, x * y % 7) for x in range(7) for y in range(7)]
        else:
            @tasks.task(name, "s5", "y x")
            def s5_yx(x, y):
                return tasks.compose(y, x)
            maps = [dict(enumerate(w)) for w in S5_LEX]
            index = {w: k for k, w in enumerate(S5_LEX)}
            expected = 120, [(i, k, index[tuple(then(g, f)[j] for j in range(5))])
                             for i, f in enumerate(maps) for k, g in enumerate(maps)]
        assert tasks.names()[-1] == name and tasks.describe(name).startswith(tasks.TASKS[name].definition)
        assert rows_of(name, 7) == expected
        assert f"| `{name}` |" in tasks.task_table(7)
    finally:
        tasks.TASKS.pop(name, None)
    assert name not in tasks.names()


def test_a_wrong_label_is_refused():
    try:
        @tasks.task("x_plus_y_plus_x", "modular", "forgot the mod")
        def no_mod(x, y, p):
            return x + y + x
        with pytest.raises(ValueError, match="values in"):
            tasks.operation_table("x_plus_y_plus_x", 11)

        @tasks.task("s5_bad", "s5", "not a permutation")
        def not_a_permutation(x, y):
            return (0, 0, 0, 0, 0)
        with pytest.raises(ValueError, match="permutation tuple"):
            tasks.operation_table("s5_bad", 11)
    finally:
        tasks.TASKS.pop("x_plus_y_plus_x", None)
        tasks.TASKS.pop("s5_bad", None)


@pytest.mark.parametrize("p", [3, 5, 101])
def test_any_prime_works(p):
    for name in MODULAR:
        assert rows_of(name, p)[1] == reference(name, p)[1]
