"""The model: the fast forward is exact, attention matches nn.MultiheadAttention, edits take effect."""
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import experiment as E
import fast_forward as FF
import unit_run
from helpers import ROOT


def forward_fast(model, x, tables=None, token_tables=True):
    """The shortcut on tokens x, with the tables of the whole dataset or, by default, of x."""
    tables = tables or (FF.TokenTable(x[:, :FF.PREFIX_LEN]), FF.TokenTable(x[:, FF.PREFIX_LEN:]))
    return FF.forward_fast(model, x, tables, token_tables)


def model_and_batch(name, cfg=E.Config(), n=512, seed=0):
    d = E.make_dataset(name, cfg, 1337, "cpu")
    torch.manual_seed(seed)
    model = E.Transformer(cfg, d["vocab_size"], d["num_classes"])
    return model, d["train_x"][:n], d["train_y"][:n]


@pytest.mark.parametrize("name", E.DATASETS)
def test_fast_forward_equals_plain_forward_and_loss(name):
    model, x, y = model_and_batch(name)
    plain, fast = model(x), forward_fast(model, x)
    assert (plain - fast).abs().max() <= 1e-5
    assert abs(F.cross_entropy(plain, y).item() - F.cross_entropy(fast, y).item()) <= 1e-5


@pytest.mark.parametrize("layers", [1, 3])
def test_fast_forward_gradients_match_for_other_depths(layers):
    model, x, y = model_and_batch("x_minus_y", E.Config(num_layers=layers, dim_model=64), n=256)
    grads = []
    for fn in (model, lambda t: forward_fast(model, t)):
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
    before = forward_fast(model, x).detach()
    for block in model.blocks:  # the kind of edit an agent makes: swap the FFN activation
        block.ffn[1] = nn.ReLU()
    after_fast, after_plain = forward_fast(model, x), model(x)
    assert (after_fast - before).abs().max() > 1e-3
    assert (after_fast - after_plain).abs().max() <= 1e-5


def pre_norm(self, x, past_kv=None, last_only=False, qkv=None):
    a, kv = self.attn(self.attn_norm(x), past_kv, last_only, qkv)
    x = (x[:, -1:] if last_only else x) + a
    return x + self.ffn(self.ffn_norm(x)), kv


def test_a_pre_norm_rewrite_of_the_block_takes_effect_in_both_paths(monkeypatch):
    model, x, _ = model_and_batch("permutation", n=64)
    before = model(x).detach()
    monkeypatch.setattr(E.DecoderBlock, "forward", pre_norm)
    assert (model(x) - before).abs().max() > 1e-3
    assert (forward_fast(model, x, token_tables=False) - model(x)).abs().max() <= 1e-5
    # the first block's q/k/v table is of the embedding, not of LN(embedding): the self-check
    # refuses it (test_a_pre_norm_edit_keeps_the_prefix_sharing_and_drops_only_the_token_tables)
    assert (forward_fast(model, x) - model(x)).abs().max() > 1e-3


# --- the speed machinery: static token tables, the layered self-check, compile, precision -----
def dataset_tables(name, cfg=E.Config()):
    d = E.make_dataset(name, cfg, 1337, "cpu")
    return d, FF.dataset_tables(d)


@pytest.mark.parametrize("name,prefixes,suffixes", [("x_plus_y", 97, 97), ("x_div_y", 97, 96),
                                                    ("permutation", 120, 120)])
def test_token_tables_hold_each_distinct_prefix_and_suffix_once(name, prefixes, suffixes):
    d, (pre, suf) = dataset_tables(name)
    assert (len(pre.rows), len(suf.rows)) == (prefixes, suffixes)  # a in every row; b != 0 for x_div_y
    model = E.Transformer(E.Config(), d["vocab_size"], d["num_classes"])
    for table, cols in ((pre, slice(0, 2)), (suf, slice(2, 4))):
        x, shortcut = d["val_x"][:, cols], FF.Shortcut(model, (pre, suf))
        row = table.index(x, shortcut)
        assert (table.rows[row] == x).all() and not shortcut.trouble.any()
    odd = d["val_x"][:3, 2:].clone()
    odd[1] = torch.tensor([1, 0])                  # ['=', 'o']: in no example
    for tokens in (odd, odd.clamp(max=0) + 500):   # and a token beyond the table's vocabulary
        shortcut = FF.Shortcut(model, (pre, suf))
        suf.index(tokens, shortcut)
        assert shortcut.trouble.tolist() == [True, False]  # noted on the device, never read there


def test_take_rows_gives_the_rows_of_indexing_and_gradients_summed_in_example_order():
    torch.manual_seed(0)
    index = torch.randint(97, (512,))  # repeats: their gradients add up
    table = torch.randn(97, 2, 384)[:, :, 128:256].unflatten(-1, (4, 32))  # strided, as a k of qkv
    grad = torch.randn(512, 4, 4, 32)[:, :2]  # not contiguous, as cat's backward hands it on
    in_order = torch.zeros_like(table)
    for i, row in enumerate(index.tolist()):
        in_order[row] += grad[i]

    def rows_and_grad(gather):
        leaf = table.detach().requires_grad_()
        rows = gather(leaf)
        rows.backward(grad)
        return rows.detach(), leaf.grad

    rows, grad_of_table = rows_and_grad(lambda t: FF.take_rows(t, index))
    assert torch.equal(rows, table[index]) and torch.equal(grad_of_table, in_order)
    threads = torch.get_num_threads()
    try:  # on one thread, as the workers run, indexing's backward sums in the same order: the
        torch.set_num_threads(1)  # numbers of runs made before take_rows stand bit for bit
        assert torch.equal(rows_and_grad(lambda t: t[index])[1], in_order)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", E.DATASETS)
@pytest.mark.parametrize("token_tables", [True, False])
def test_fast_forward_with_the_datasets_tables_equals_the_plain_forward(name, token_tables):
    d, tables = dataset_tables(name)
    torch.manual_seed(0)
    model = E.Transformer(E.Config(), d["vocab_size"], d["num_classes"])
    x, y = d["train_x"][:512], d["train_y"][:512]
    outs = []
    for fn in (model, lambda t: forward_fast(model, t, tables, token_tables)):
        model.zero_grad()
        logits = fn(x)
        F.cross_entropy(logits, y).backward()
        outs.append((logits.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    assert (outs[0][0] - outs[1][0]).abs().max() <= 1e-5 and (outs[0][1] - outs[1][1]).abs().max() <= 1e-6


def test_an_evaluation_runs_the_table_pass_once_for_all_its_chunks_and_equals_the_plain_one(monkeypatch):
    d, tables = dataset_tables("permutation")  # 7200 val examples: 8 chunks of 1024
    torch.manual_seed(0)
    model = E.Transformer(E.Config(), d["vocab_size"], d["num_classes"])
    passes = []
    table_pass = FF.table_pass
    monkeypatch.setattr(FF, "table_pass", lambda *a: passes.append(1) or table_pass(*a))
    shortcut = FF.Shortcut(model, tables)
    fast, plain = E.Unit(d, model, None, shortcut), E.Unit(d, model, None, model)
    for evaluation in (1, 2):
        got = E.evaluate(fast, d["val_x"], d["val_y"], 1024)
        assert got == pytest.approx(E.evaluate(plain, d["val_x"], d["val_y"], 1024), rel=1e-5)
        shortcut(d["train_x"][:8])  # a training call (autograd on) in between: nothing is kept
        assert len(passes) == 2 * evaluation  # once per evaluation, not once per chunk
    x = d["val_x"][:64]
    model.eval()  # as evaluate() has it (and leaves it in training mode)
    with torch.no_grad():
        first = shortcut(x)
        assert torch.equal(shortcut(x), first) and len(passes) == 5
        w = model.blocks[0].ffn[0].weight  # read by the table pass (the prefixes' keys and values)
        with torch.no_grad():
            w.add_(0.05 * torch.randn_like(w))  # a change the host sees (its version counter)
        after = shortcut(x)
        assert (after - first).abs().max() > 1e-4 and len(passes) == 6
        assert (after - model(x)).abs().max() <= 1e-5 and not shortcut.trouble.any()
        # one through .data leaves the version counter: the kept pass is used, but the device
        # notes that the weights differ, and the unit is then trained again plain (UnitRun)
        w.data.add_(0.05 * torch.randn_like(w))
        shortcut(x)
        assert len(passes) == 6 and shortcut.trouble.tolist() == [False, True]
        model.train()  # training mode (dropout would draw anew): never kept
        shortcut(x), shortcut(x)
        assert len(passes) == 8


def test_tokens_outside_the_tables_are_noted_on_the_device_without_waiting_for_it():
    """An edit that makes new examples (data augmentation, a new token) cannot be silently
    misread by the tables: the batch is noted in shortcut.trouble, which the harness reads once
    per record, and the unit is trained again from the start with the plain forward
    (test_harness: test_a_batch_outside_the_tables_makes_the_unit_train_plain_from_the_start)."""
    d, tables = dataset_tables("x_plus_y")
    model = E.Transformer(E.Config(), d["vocab_size"], d["num_classes"])
    shortcut = FF.Shortcut(model, tables)
    shortcut(d["train_x"][:64])
    assert not shortcut.trouble.any()
    x = d["train_x"][:64].clone()
    x[5, 3] = 0                                    # 'o' where '=' always is
    shortcut(x)
    assert shortcut.trouble.tolist() == [True, False]


def test_a_pre_norm_edit_keeps_the_prefix_sharing_and_drops_only_the_token_tables(monkeypatch):
    """The first block's q/k/v table assumes the attention reads the embedding; a pre-norm block
    reads LN(embedding), so the check refuses the tables and keeps the (still exact) prefixes."""
    monkeypatch.setattr(E.DecoderBlock, "forward", pre_norm)
    warnings = []
    cfg = E.Config(datasets="x_plus_y", compile="false")
    run = unit_run.UnitRun(cfg, "x_plus_y", 0, warn=warnings.append)
    E.build_unit(cfg, "x_plus_y", run)
    assert run.forward["path"] == "prefix" and run.forward["reason"].startswith("fast: logits differs by")
    assert len(warnings) == 1 and "training with the prefix forward" in warnings[0]


def test_a_candidate_that_raises_falls_back_to_the_next_one():
    model, x, y = model_and_batch("x_minus_y", E.Config(dim_model=32, num_heads=2), n=64)
    def broken(tokens):
        raise RuntimeError("no C++ compiler found")
    warnings = []
    run = unit_run.UnitRun(E.Config(), "x_minus_y", 0, warn=warnings.append)
    fast = FF.Shortcut(model, (FF.TokenTable(x[:, :2]), FF.TokenTable(x[:, 2:])))
    chosen = run.choose_forward(model, {"fast, compiled": broken, "fast": fast}, model, x, y, F.cross_entropy)
    assert chosen is fast and run.forward["path"] == "fast"
    assert warnings == ["x_minus_y_0: training with the fast forward: fast, compiled: the fast "
                        "forward raised RuntimeError: no C++ compiler found"]


def test_compile_auto_compiles_only_long_units_where_a_compiler_exists(monkeypatch):
    cpu = torch.device("cpu")
    assert FF.use_compile("true", 10, cpu) and not FF.use_compile("false", 10**6, cpu)
    assert not FF.use_compile("auto", FF.COMPILE_MIN_STEPS - 1, cpu)
    monkeypatch.setattr(FF.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert FF.use_compile("auto", FF.COMPILE_MIN_STEPS, cpu)
    monkeypatch.setattr(FF.shutil, "which", lambda name: None)
    assert not FF.use_compile("auto", 7500, cpu)  # no toolchain: eager


def in_a_fresh_process(code):
    """Run code where nothing has imported torch._dynamo yet (pytest's process has: torch.optim)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_run_that_never_compiles_never_imports_dynamo_and_one_that_does_disables_the_marked_functions():
    """Importing torch._dynamo costs a process ~2.4 s at its start, scipy.stats ~1.4 s; use_compile
    puts torch.compiler.disable in place of what eager_under_compile marked, before any tracing."""
    in_a_fresh_process("""
        import sys, torch, experiment as E, harness, fast_forward as FF
        assert "torch._dynamo" not in sys.modules and "scipy.stats" not in sys.modules
        index, kept = FF.TokenTable.index, FF.table_pass_kept
        assert not FF.use_compile("false", 10, torch.device("cpu")) and FF.TokenTable.index is index
        assert FF.use_compile("true", 10, torch.device("cpu"))
        assert FF.TokenTable.index.__wrapped__ is index and FF.table_pass_kept.__wrapped__ is kept
        table = FF.TokenTable(torch.tensor([[3, 0], [5, 0], [3, 0]]))
        assert table.index(torch.tensor([[5, 0], [3, 0]])).tolist() == [1, 0]  # still the same answer
    """)


def test_bf16_precision_runs_the_matmuls_in_bfloat16_and_keeps_the_rest_float32():
    model, x, y = model_and_batch("x_plus_y", n=64)
    seen = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    cfg = E.Config(precision="bf16")
    logits = E.with_precision(model, cfg, torch.device("cpu"))(x)
    assert seen == [torch.bfloat16] and logits.dtype == torch.float32
    assert 0 < (logits - model(x)).abs().max() < 0.1  # bfloat16 rounding, nothing else
    assert E.with_precision(model, E.Config(), torch.device("cpu")) is model
    F.cross_entropy(logits, y).backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


def test_bf16_on_a_cpu_without_native_bfloat16_is_said_to_be_slower(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native in (False, True):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        E.Config(precision="bf16").check()
        said = capsys.readouterr().err
        assert ("no native bfloat16" in said) != native, said
