"""The split between the agent's file and the harness: a typed command line generated from the
Config, the fast path's self-check under edits an agent makes, code identity on --resume, tools
that work while experiment.py is broken, and the AI-Scientist launcher's use of the folder."""
import ast
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import pytest

import options
import outputs
from harness import option
from helpers import CODE_FILES, ROOT, TINY

ONE_UNIT = ["--datasets=x_plus_y", "--num_seeds=1", *TINY]


def project(tmp_path, edits=()):
    """A copy of the project's files in tmp_path, experiment.py edited by (old, new) text pairs
    as an agent edits it."""
    for name in CODE_FILES:
        shutil.copy(ROOT / name, tmp_path / name)
    source = (tmp_path / "experiment.py").read_text()
    for old, new in edits:
        assert old in source, old
        source = source.replace(old, new)
    (tmp_path / "experiment.py").write_text(source)
    return tmp_path


def run(folder, *args, script="experiment.py", check=True):
    proc = subprocess.run([sys.executable, script, *args], cwd=folder, capture_output=True,
                          text=True, timeout=300)
    assert not check or proc.returncode == 0, proc.stderr
    return proc


def unit(folder, out, name="x_plus_y_0"):
    return json.loads((folder / out / "units" / f"{name}.json").read_text())


# --- the command line generated from the dataclass -----------------------------------------
@dataclass(frozen=True)
class Typed:
    datasets: str = option("a", "units")
    num_seeds: int = option(1, "seeds")
    seed: int = option(0, "seed")
    clip: Optional[float] = option(None, "gradient clipping norm; none = off", ok="(0, inf)")
    mode: Literal["x", "y"] = option("x", "a choice")
    widths: tuple[int, ...] = option((8, 16), "layer widths", ok="[1, inf)")
    scale: float | None = option(1.0, "PEP 604 optional")


def test_optional_literal_and_tuple_fields_are_read_and_checked(tmp_path):
    out = f"--out_dir={tmp_path / 'r'}"
    _, cfg = options.parse(Typed, [out])
    assert (cfg.clip, cfg.mode, cfg.widths, cfg.scale) == (None, "x", (8, 16), 1.0)
    _, cfg = options.parse(Typed, [out, "--clip=0.5", "--mode=y", "--widths=4,2,1", "--scale=none"])
    assert (cfg.clip, cfg.mode, cfg.widths, cfg.scale) == (0.5, "y", (4, 2, 1), None)
    for bad, needle in ((["--clip=-1"], "--clip=-1.0 must be in (0, inf)"),
                        (["--clip=nan"], "--clip=nan must be a finite number"),
                        (["--mode=z"], "--mode=z is unknown; allowed: x|y"),
                        (["--widths=4,0"], "--widths=4,0 must be in [1, inf)"),
                        (["--widths=4,a"], "--widths")):
        with pytest.raises(options.ConfigError, match=needle.replace("|", r"\|").replace("(", r"\(")
                           .replace(")", r"\)").replace("[", r"\[")):
            options.parse(Typed, [out, *bad])


def test_an_unsupported_field_type_is_refused_naming_the_field(tmp_path):
    @dataclass(frozen=True)
    class WithDict(Typed):
        table: dict = option(None, "not readable from a command line")
    with pytest.raises(options.ConfigError, match="'table'"):
        options.parse(WithDict, [f"--out_dir={tmp_path}"])


@pytest.mark.slow
def test_a_new_optional_field_works_from_the_command_line(tmp_path):
    """The field issue 12 found crashing at import: grad_clip: float | None = None."""
    folder = project(tmp_path, [(
        '    # evaluation and speed\n',
        '    grad_clip: float | None = option(None, "clip the gradient norm; none = off", ok="(0, inf)")\n'
        '    # evaluation and speed\n')])
    run(folder, "--out_dir=r", "--grad_clip=1.5", *ONE_UNIT)
    assert json.loads((folder / "r" / "config.json").read_text())["grad_clip"] == 1.5
    proc = run(folder, "--out_dir=s", "--grad_clip=-2", *ONE_UNIT, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --grad_clip=-2.0 must be in (0, inf)"


# --- the fast path checks itself ------------------------------------------------------------
NO_CAUSAL_MASK = ('weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=2)',
                  'weights = scores.softmax(dim=2)')
DROPOUT = [("        self.ffn_norm = nn.LayerNorm(dim)\n",
            "        self.ffn_norm = nn.LayerNorm(dim)\n        self.drop = nn.Dropout(0.1)\n"),
           ("return self.ffn_norm(x + self.ffn(x)), kv", "return self.ffn_norm(x + self.drop(self.ffn(x))), kv")]
TORCH_ATTENTION = [
    ("        self.attn = CausalSelfAttention(dim, heads)\n",
     "        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)\n"),
    ("""        a, kv = self.attn(x, past_kv, last_only, qkv)
        x = self.attn_norm((x[:, -1:] if last_only else x) + a)
        return self.ffn_norm(x + self.ffn(x)), kv""",
     """        T = x.shape[1]
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        a, _ = self.attn(x, x, x, attn_mask=mask, need_weights=False)
        x = self.attn_norm(x + a)
        return self.ffn_norm(x + self.ffn(x)), None""")]


@pytest.mark.parametrize("edits,why", [([NO_CAUSAL_MASK], "differs by"), (DROPOUT, "differs by"),
                                       (TORCH_ATTENTION, "the fast forward raised")],
                         ids=["no-causal-mask", "dropout", "nn.MultiheadAttention"])
@pytest.mark.slow
def test_an_edit_that_breaks_the_shortcut_trains_the_plain_forward(tmp_path, edits, why):
    folder = project(tmp_path, edits)
    proc = run(folder, "--out_dir=r", *ONE_UNIT)
    warnings = [line for line in proc.stderr.splitlines() if "plain forward" in line]
    assert len(warnings) == 1 and why in warnings[0], proc.stderr
    assert unit(folder, "r")["forward"]["path"] == "plain"
    assert json.loads((folder / "r" / "run_info.json").read_text())["forward_path"] == {"x_plus_y_0": "plain"}
    if edits == [NO_CAUSAL_MASK]:  # what trains is exactly what the agent wrote
        run(folder, "--out_dir=p", "--fast_forward=false", *ONE_UNIT)
        for part in ("train_info", "val_info", "final_info"):
            assert unit(folder, "r")[part] == unit(folder, "p")[part]


@pytest.mark.slow
def test_the_unedited_model_keeps_the_fast_path_and_the_check_changes_nothing(tmp_path):
    folder = project(tmp_path)
    proc = run(folder, "--out_dir=r", *ONE_UNIT)
    assert "plain forward" not in proc.stderr
    record = unit(folder, "r")
    assert record["forward"]["path"] == "fast" and 0 < record["forward"]["check_s"] < 5
    # the check leaves parameters, random state and gradients alone: with no check at all
    # (the plain forward), the exact same curves up to float tolerance of the two paths
    run(folder, "--out_dir=p", "--fast_forward=false", *ONE_UNIT)
    fast, plain = record["val_info"], unit(folder, "p")["val_info"]
    assert [r["val_accuracy"] for r in fast] == pytest.approx([r["val_accuracy"] for r in plain], abs=0.02)


PRE_NORM_AND_DROPOUT = [  # the idea agents found hard: DecoderBlock alone edited, nothing else
    ("        self.ffn_norm = nn.LayerNorm(dim)\n",
     "        self.ffn_norm = nn.LayerNorm(dim)\n        self.drop = nn.Dropout(0.1)\n"),
    ("""        a, kv = self.attn(x, past_kv, last_only, qkv)
        x = self.attn_norm((x[:, -1:] if last_only else x) + a)
        return self.ffn_norm(x + self.ffn(x)), kv""",
     """        a, kv = self.attn(self.attn_norm(x), past_kv, last_only, qkv)
        x = (x[:, -1:] if last_only else x) + self.drop(a)
        return x + self.drop(self.ffn(self.ffn_norm(x))), kv""")]


def test_a_pre_norm_and_dropout_edit_of_the_block_alone_trains_plain_with_one_warning(tmp_path):
    folder = project(tmp_path, PRE_NORM_AND_DROPOUT)
    proc = run(folder, "--out_dir=r", *ONE_UNIT)
    warnings = [line for line in proc.stderr.splitlines() if "forward" in line]  # (TINY: a batch warning too)
    assert len(warnings) == 1 and "training with the plain forward" in warnings[0], proc.stderr
    assert "fast: logits differs by" in warnings[0] and "prefix: logits differs by" in warnings[0]
    assert json.loads((folder / "r" / "run_info.json").read_text())["forward_path"] == {"x_plus_y_0": "plain"}
    run(folder, "--out_dir=p", "--fast_forward=false", *ONE_UNIT)  # what trained is what was written
    for part in ("train_info", "val_info", "final_info"):
        assert unit(folder, "r")[part] == unit(folder, "p")[part]


OUTSIDE_THE_TABLES = [(  # an augmentation idea: at update 15, one example's 'o' becomes '='
    "        logits, loss = train_step(cfg, step, unit, x, y)\n",
    "        if step == 15:\n            x = x.clone()\n            x[0, 1] = 1\n"
    "        logits, loss = train_step(cfg, step, unit, x, y)\n")]


@pytest.mark.slow
def test_a_batch_outside_the_tables_makes_the_unit_train_plain_from_the_start(tmp_path):
    """The shortcut never waits for the device to check a batch: it notes a row outside its tables
    on the device, the next record reads the note, and the unit trains again from the start with
    the plain forward: exactly what --fast_forward=false gives, recorded as plain."""
    folder = project(tmp_path, OUTSIDE_THE_TABLES)
    proc = run(folder, "--out_dir=r", *ONE_UNIT)
    warnings = [line for line in proc.stderr.splitlines() if "forward" in line]
    assert len(warnings) == 1, proc.stderr
    assert ("training again from the start with the plain forward: the fast forward was dropped: a batch "
            "had token rows outside the dataset's tables (by update 10)") in warnings[0]
    record = unit(folder, "r")
    assert record["forward"]["path"] == "plain" and "outside the dataset's tables" in record["forward"]["reason"]
    assert json.loads((folder / "r" / "run_info.json").read_text())["forward_path"] == {"x_plus_y_0": "plain"}
    run(folder, "--out_dir=p", "--fast_forward=false", *ONE_UNIT)
    for part in ("train_info", "val_info", "final_info"):
        assert record[part] == unit(folder, "p")[part]


# --- code identity --------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_refuses_units_made_by_other_code(tmp_path):
    folder = project(tmp_path)
    run(folder, "--out_dir=r", "--datasets=x_plus_y", "--num_seeds=2", *TINY)
    info = json.loads((folder / "r" / "run_info.json").read_text())
    assert set(info["code_sha256"]) == {"experiment.py", *outputs.CODE_MODULES}
    assert unit(folder, "r")["code"] == info["code_sha256"]
    (folder / "r" / "final_info.json").unlink()
    (folder / "r" / "units" / "x_plus_y_1.json").unlink()
    source = (folder / "experiment.py").read_text()
    (folder / "experiment.py").write_text(source.replace('option(1e-3, "AdamW learning rate"',
                                                         'option(2e-3, "AdamW learning rate"'))
    proc = run(folder, "--out_dir=r", "--resume", check=False)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "x_plus_y_0.json was made by another experiment.py" in proc.stderr and "--overwrite" in proc.stderr
    (folder / "experiment.py").write_text(source)  # the same code again: the resume goes through
    assert "units: 1 to run, 1 resumed" in run(folder, "--out_dir=r", "--resume").stdout
    # grokstats.py computes numbers the units hold (their slingshot steps): an edit there counts too
    (folder / "r" / "final_info.json").unlink()
    (folder / "r" / "units" / "x_plus_y_1.json").unlink()
    (folder / "grokstats.py").write_text((folder / "grokstats.py").read_text().replace("SPIKE_FACTOR = 10.0", "SPIKE_FACTOR = 5.0"))
    proc = run(folder, "--out_dir=r", "--resume", check=False)
    assert proc.returncode == 2 and "x_plus_y_0.json was made by another grokstats.py" in proc.stderr


# --- one-way dependencies -------------------------------------------------------------------
# Each module's floor: it may import (at its top or inside a function) only modules on lower floors.
FLOORS = {"grokstats": 0, "tasks": 0, "interrupts": 0, "instruments": 0,
          "options": 1, "outputs": 2, "fast_forward": 2, "run_dir": 3, "notes": 3, "live": 3,
          "unit_run": 4, "workers": 5, "launch_slurm": 6, "confirm": 6, "harness": 7,
          "experiment": 8, "plot": 1, "campaign": 1, "sweep": 9}


def project_imports(path):
    tree = ast.parse(path.read_text())
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    return names & set(FLOORS)


def test_every_module_has_a_floor_and_imports_only_modules_below_it():
    modules = {p.stem for p in ROOT.glob("*.py")}
    assert modules == set(FLOORS), "a new module needs its floor here"
    upward = [(m, other) for m in modules for other in project_imports(ROOT / f"{m}.py")
              if FLOORS[other] >= FLOORS[m]]
    assert upward == []


def test_the_import_graph_has_no_circle_and_no_stable_file_imports_experiment():
    graph = {p.stem: project_imports(p) for p in ROOT.glob("*.py")}
    graph |= {f"benchmarks/{p.stem}": project_imports(p) for p in (ROOT / "benchmarks").glob("*.py")}
    done, stack = set(), []

    def visit(m):  # depth-first: a module met again on the current path closes a circle
        assert m not in stack, f"import circle: {' -> '.join(stack[stack.index(m):] + [m])}"
        if m not in done:
            stack.append(m)
            for other in graph.get(m, ()):
                visit(other)
            stack.pop()
            done.add(m)
    for m in graph:
        visit(m)
    users = {m for m, imported in graph.items() if "experiment" in imported}
    assert users <= {"sweep", "benchmarks/bench.py", "benchmarks/interleaved", "benchmarks/bench",
                     "benchmarks/stacked_units", "benchmarks/side_by_side"}, users


def test_no_module_of_the_run_machinery_is_over_500_lines():
    machinery = ("options", "outputs", "fast_forward", "run_dir", "notes", "interrupts", "unit_run",
                 "workers", "launch_slurm", "harness")
    sizes = {m: len((ROOT / f"{m}.py").read_text().splitlines()) for m in machinery}
    assert max(sizes.values()) <= 500, sizes


@pytest.mark.slow
def test_plot_draws_every_run_while_experiment_py_is_broken(tmp_path):
    folder = project(tmp_path)
    run(folder, "--out_dir=run_0", *ONE_UNIT)
    run(folder, "--out_dir=run_1", "--lr=3e-3", *ONE_UNIT)
    (folder / "experiment.py").write_text((folder / "experiment.py").read_text() + "\ndef broken(:\n")
    assert run(folder, "--out_dir=run_2", *ONE_UNIT, check=False).returncode == 1
    proc = run(folder, script="plot.py")
    assert proc.stdout.startswith("runs: run_0, run_1")
    assert (folder / "val_acc_x_plus_y.png").stat().st_size > 1000


@pytest.mark.slow
def test_a_diagnostic_returned_by_an_edited_evaluate_is_recorded_and_drawn(tmp_path):
    folder = project(tmp_path, [(
        '"softmax_collapse": saturated / n,',
        '"softmax_collapse": saturated / n, "head_norm": model.head.weight.norm().item(),')])
    run(folder, "--out_dir=run_0", *ONE_UNIT)
    results = np.load(folder / "run_0" / "all_results.npy", allow_pickle=True).item()
    assert all(r["head_norm"] > 0 for r in results["x_plus_y_0_val_info"])
    proc = run(folder, script="plot.py")
    assert "head_norm_x_plus_y.png" in proc.stdout and (folder / "head_norm_x_plus_y.png").exists()


# --- ideas that keep state ------------------------------------------------------------------
@pytest.mark.slow
def test_an_ema_of_the_weights_is_an_edit_of_train_step_alone(tmp_path):
    folder = project(tmp_path, [("    optimizer.step()\n    return logits, loss\n",
                                 "    optimizer.step()\n"
                                 "    ema = unit.state.setdefault('ema', [p.detach().clone() for p in model.parameters()])\n"
                                 "    for e, p in zip(ema, model.parameters()):\n"
                                 "        e.lerp_(p.detach(), 0.01)\n"
                                 "    unit.state['updates'] = unit.state.get('updates', 0) + 1\n"
                                 "    assert unit.state['updates'] == step + 1  # one state per unit, kept\n"
                                 "    return logits, loss\n")])
    run(folder, "--out_dir=r", *ONE_UNIT)


# --- the AI-Scientist launcher's use of the folder ------------------------------------------
TINY_DEFAULTS = [('option(",".join(DATASETS), "comma', 'option("x_plus_y,permutation", "comma'),
                 ('option(3, "seeds per dataset', 'option(2, "seeds per dataset'),
                 ('option(97, "modulus', 'option(11, "modulus'),
                 ('option(128, "width', 'option(32, "width'),
                 ('option(4, "attention heads', 'option(2, "attention heads'),
                 ('option(7500, "optimizer updates', 'option(30, "optimizer updates')]


@pytest.mark.slow
def test_the_ai_scientist_launcher_flow(tmp_path):
    """As the launcher does it: baseline, an agent's edit, `python experiment.py --out_dir=run_1`
    with no other argument, final_info.json read as {dataset: {"means": ...}}, experiment.py
    copied to run_1.py, then `python plot.py`."""
    folder = project(tmp_path, TINY_DEFAULTS)
    run(folder, "--out_dir=run_0")
    source = (folder / "experiment.py").read_text()
    (folder / "experiment.py").write_text(source.replace('option(0.5, "AdamW decoupled weight decay',
                                                         'option(1.0, "AdamW decoupled weight decay'))
    run(folder, "--out_dir=run_1")
    with open(folder / "run_1" / "final_info.json") as f:
        means = {k: v["means"] for k, v in json.load(f).items()}
    assert set(means) == {"x_plus_y", "permutation"}
    assert all(0 <= m["final_val_acc_mean"] <= 1 for m in means.values())
    shutil.copy(folder / "experiment.py", folder / "run_1.py")
    assert "## Run 1" in (folder / "notes.txt").read_text()
    proc = run(folder, script="plot.py")
    assert proc.stdout.startswith("runs: run_0, run_1") and (folder / "summary_plot.png").exists()
