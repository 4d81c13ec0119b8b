"""The task registry: every binary operation a dataset can be, one decorated function each.

A task is its elements, its pairs and its label. A "modular" task's elements are Z_p (p =
--prime), its pairs all (x, y) in Z_p^2 (y != 0 where it divides: nonzero_y=True), and its label
function maps int64 tensors x, y (N,) and p to labels (N,) in [0, p). An "s5" task's elements are
the 120 permutations of (0, 1, 2, 3, 4), indexed in itertools.permutations order, its pairs all of
S5^2, and its label function maps two permutation tuples to one; products compose right to left,
(x y)(i) = x(y(i)), as the reference template's composition did. Adding a task is adding one
function here under @task: the datasets option, its validation, the plots, the statistics and the
fast path's tables all read this registry.

Names follow one scheme (NAME_SCHEME). A modular task is named by its label read left to right:
monomials x, y, x2 (x^2), xy, xy2 (x y^2), ... joined by _plus_, _minus_, _times_, _div_; a case
split reads A_if_y_odd_else_B. An S5 task is s5_ followed by the operation's name. The reference
template's S5 composition keeps its name, permutation.

operation_table(name, prime) gives (num_elements, a (N,), b (N,), c (N,)) int64 element indices,
row-major over (a, b) with the excluded rows removed: exactly the reference template's tables.
"""
import itertools
import re
from dataclasses import dataclass
from typing import Callable, Literal

import torch

_EXPRESSION = r"(x\d?(y\d?)?|y\d?)(_(plus|minus|times|div)_(x\d?(y\d?)?|y\d?))*"  # x2_plus_xy_plus_y2
NAME_SCHEME = re.compile(rf"{_EXPRESSION}(_if_[xy]_(odd|even)_else_{_EXPRESSION})?|s5_[a-z0-9]+|permutation")
S5 = tuple(itertools.permutations(range(5)))  # element i of every s5 task is the permutation S5[i]


@dataclass(frozen=True)
class Task:
    name: str
    domain: Literal["modular", "s5"]
    definition: str         # the label as text, e.g. "x^2 + xy + y^2 mod p"
    label: Callable         # modular: (x (N,), y (N,), p) -> (N,); s5: (tuple, tuple) -> tuple
    nonzero_y: bool = False  # modular only: the pairs exclude y = 0 (the label divides by y)


TASKS: dict[str, Task] = {}  # name -> Task, in registration order


def task(name, domain, definition, nonzero_y=False):
    """Decorator: registers the function below it as the label of task `name`."""
    if not NAME_SCHEME.fullmatch(name) or name in TASKS or domain not in ("modular", "s5") \
            or (nonzero_y and domain != "modular"):
        raise ValueError(f"task {name!r} ({domain}): a new name matching {NAME_SCHEME.pattern}, "
                         f"domain modular or s5, nonzero_y only for modular")

    def register(label):
        TASKS[name] = Task(name, domain, definition, label, nonzero_y)
        return label
    return register


def names():
    """Every task name, in registration order."""
    return tuple(TASKS)


def get(name):
    if name not in TASKS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {','.join(TASKS)}")
    return TASKS[name]


def describe(name):
    """The exact definition: label, elements and pairs, e.g. "x + y mod p; x, y in Z_p"."""
    t = get(name)
    if t.domain == "s5":
        return f"{t.definition}; x, y in S5, (x y)(i) = x(y(i))"
    return f"{t.definition}; " + ("x in Z_p, y in Z_p, y != 0" if t.nonzero_y else "x, y in Z_p")


def num_pairs(name, prime):
    """The number of examples of a task, without building its table."""
    t = get(name)
    return len(S5) ** 2 if t.domain == "s5" else prime * (prime - 1 if t.nonzero_y else prime)


def task_table(prime=97):
    """Markdown table of every task (name, definition, pairs at this prime), for the README."""
    rows = [f"| `{n}` | {describe(n)} | {num_pairs(n, prime)} |" for n in TASKS]
    return "\n".join([f"| name | definition | pairs (p = {prime}) |", "| --- | --- | --- |", *rows])


def operation_table(name, prime):
    """All pairs of a task: (num_elements, a (N,), b (N,), c (N,)) as int64 element indices."""
    t = get(name)
    n, a, b, c = s5_table(t) if t.domain == "s5" else modular_table(t, prime)
    if not (isinstance(c, torch.Tensor) and c.dtype == torch.int64 and c.shape == a.shape
            and (len(c) == 0 or 0 <= int(c.min()) <= int(c.max()) < n)):
        raise ValueError(f"task {name!r}: labels must be an int64 tensor of shape {tuple(a.shape)} "
                         f"with values in [0, {n})")
    return n, a, b, c


def modular_table(t, prime):
    a, b = torch.meshgrid(torch.arange(prime), torch.arange(prime), indexing="ij")
    a, b = a.flatten(), b.flatten()  # row-major over (a, b)
    if t.nonzero_y:
        a, b = a[b != 0], b[b != 0]
    return prime, a, b, t.label(a, b, prime)  # int64: x^3 + x y^2 < 2^63 for every p < 2^20


def s5_table(t):
    index = {perm: i for i, perm in enumerate(S5)}
    pairs = list(itertools.product(range(len(S5)), repeat=2))
    labels = [index.get(t.label(S5[i], S5[k])) for i, k in pairs]
    if None in labels:
        raise ValueError(f"task {t.name!r}: the label of an s5 task must be a permutation tuple")
    a, b = zip(*pairs)
    return len(S5), torch.tensor(a), torch.tensor(b), torch.tensor(labels)


# Helpers for label functions.
def mod_inverse(y, p):
    """y^-1 mod p elementwise (Fermat: y^(p-2)); 0 where y = 0, a value no task keeps."""
    return torch.tensor([pow(k, p - 2, p) for k in range(p)])[y]


def compose(x, y):
    """The permutation x y: i -> x(y(i))."""
    return tuple(x[j] for j in y)


def invert(x):
    """The permutation x^-1."""
    inverse = [0] * len(x)
    for i, j in enumerate(x):
        inverse[j] = i
    return tuple(inverse)


# ---------------------------------------------------------------------------------------------
# The tasks: Power et al. (2022)'s binary operations, in their order.
# ---------------------------------------------------------------------------------------------
@task("x_plus_y", "modular", "x + y mod p")
def x_plus_y(x, y, p):
    return (x + y) % p


@task("x_minus_y", "modular", "x - y mod p")
def x_minus_y(x, y, p):
    return (x - y) % p


@task("x_div_y", "modular", "x / y = x y^-1 mod p", nonzero_y=True)
def x_div_y(x, y, p):
    return (x * mod_inverse(y, p)) % p


@task("x_div_y_if_y_odd_else_x_minus_y", "modular", "x / y mod p if y is odd, else x - y mod p")
def x_div_y_if_y_odd_else_x_minus_y(x, y, p):
    return torch.where(y % 2 == 1, (x * mod_inverse(y, p)) % p, (x - y) % p)


@task("x2_plus_y2", "modular", "x^2 + y^2 mod p")
def x2_plus_y2(x, y, p):
    return (x**2 + y**2) % p


@task("x2_plus_xy_plus_y2", "modular", "x^2 + xy + y^2 mod p")
def x2_plus_xy_plus_y2(x, y, p):
    return (x**2 + x * y + y**2) % p


@task("x2_plus_xy_plus_y2_plus_x", "modular", "x^2 + xy + y^2 + x mod p")
def x2_plus_xy_plus_y2_plus_x(x, y, p):
    return (x**2 + x * y + y**2 + x) % p


@task("x3_plus_xy", "modular", "x^3 + xy mod p")
def x3_plus_xy(x, y, p):
    return (x**3 + x * y) % p


@task("x3_plus_xy2_plus_y", "modular", "x^3 + xy^2 + y mod p")
def x3_plus_xy2_plus_y(x, y, p):
    return (x**3 + x * y**2 + y) % p


@task("permutation", "s5", "x y (composition)")
def permutation(x, y):
    return compose(x, y)


@task("s5_conjugation", "s5", "x y x^-1 (conjugation)")
def s5_conjugation(x, y):
    return compose(compose(x, y), invert(x))


@task("s5_xyx", "s5", "x y x")
def s5_xyx(x, y):
    return compose(compose(x, y), x)
