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

import harness
from harness import option
from helpers import ROOT, TINY

PROJECT_FILES = ("experiment.py", "harness.py", "grokstats.py", "plot.py")
ONE_UNIT = ["--datasets=x_plus_y", "--num_seeds=1", *TINY]


def project(tmp_path, edits=()):
    """A copy of the project's files in tmp_path, experiment.py edited by (old, new) text pairs
    as an agent edits it."""
    for name in PROJECT_FILES:
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
    _, cfg = harness.parse(Typed, [out])
    assert (cfg.clip, cfg.mode, cfg.widths, cfg.scale) == (None, "x", (8, 16), 1.0)
    _, cfg = harness.parse(Typed, [out, "--clip=0.5", "--mode=y", "--widths=4,2,1", "--scale=none"])
    assert (cfg.clip, cfg.mode, cfg.widths, cfg.scale) == (0.5, "y", (4, 2, 1), None)
    for bad, needle in ((["--clip=-1"], "--clip=-1.0 must be in (0, inf)"),
                        (["--clip=nan"], "--clip=nan must be a finite number"),
                        (["--mode=z"], "--mode=z is unknown; allowed: x|y"),
                        (["--widths=4,0"], "--widths=4,0 must be in [1, inf)"),
                        (["--widths=4,a"], "--widths")):
        with pytest.raises(harness.ConfigError, match=needle.replace("|", r"\|").replace("(", r"\(")
                           .replace(")", r"\)").replace("[", r"\[")):
            harness.parse(Typed, [out, *bad])


def test_an_unsupported_field_type_is_refused_naming_the_field(tmp_path):
    @dataclass(frozen=True)
    class WithDict(Typed):
        table: dict = option(None, "not readable from a command line")
    with pytest.raises(harness.ConfigError, match="'table'"):
        harness.parse(WithDict, [f"--out_dir={tmp_path}"])


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


# --- code identity --------------------------------------------------------------------------
def test_resume_refuses_units_made_by_other_code(tmp_path):
    folder = project(tmp_path)
    run(folder, "--out_dir=r", "--datasets=x_plus_y", "--num_seeds=2", *TINY)
    info = json.loads((folder / "r" / "run_info.json").read_text())
    assert set(info["code_sha256"]) == {"experiment.py", "harness.py", "grokstats.py"}  # no instruments.py here
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
@pytest.mark.parametrize("name", ["harness.py", "grokstats.py", "plot.py", "benchmarks/compare_baseline.py"])
def test_the_stable_files_never_import_experiment(name):
    tree = ast.parse((ROOT / name).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "experiment" not in imported


def test_plot_draws_every_run_while_experiment_py_is_broken(tmp_path):
    folder = project(tmp_path)
    run(folder, "--out_dir=run_0", *ONE_UNIT)
    run(folder, "--out_dir=run_1", "--lr=3e-3", *ONE_UNIT)
    (folder / "experiment.py").write_text((folder / "experiment.py").read_text() + "\ndef broken(:\n")
    assert run(folder, "--out_dir=run_2", *ONE_UNIT, check=False).returncode == 1
    proc = run(folder, script="plot.py")
    assert proc.stdout.startswith("runs: run_0, run_1")
    assert (folder / "val_acc_x_plus_y.png").stat().st_size > 1000


def test_a_diagnostic_returned_by_an_edited_evaluate_is_recorded_and_drawn(tmp_path):
    folder = project(tmp_path, [(
        '"val_accuracy": (correct / n).item(),',
        '"val_accuracy": (correct / n).item(), "head_norm": model.head.weight.norm().item(),')])
    run(folder, "--out_dir=run_0", *ONE_UNIT)
    results = np.load(folder / "run_0" / "all_results.npy", allow_pickle=True).item()
    assert all(r["head_norm"] > 0 for r in results["x_plus_y_0_val_info"])
    proc = run(folder, script="plot.py")
    assert "head_norm_x_plus_y.png" in proc.stdout and (folder / "head_norm_x_plus_y.png").exists()


# --- ideas that keep state ------------------------------------------------------------------
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
TINY_DEFAULTS = [('option(",".join(DATASETS), f"comma', 'option("x_plus_y,permutation", f"comma'),
                 ('option(3, "seeds per dataset', 'option(2, "seeds per dataset'),
                 ('option(97, "modulus', 'option(11, "modulus'),
                 ('option(128, "width', 'option(32, "width'),
                 ('option(4, "attention heads', 'option(2, "attention heads'),
                 ('option(7500, "optimizer updates', 'option(30, "optimizer updates')]


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
