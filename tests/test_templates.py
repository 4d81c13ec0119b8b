"""templates/ as a specification: the idea generator's prompt and seed ideas match experiment.py,
the prompt and the paper skeleton tell the writer to claim only what survives the campaign's
correction or was confirmed and to cite campaign.py's claims table, and the skeleton uses only
names plot.py and campaign.py write, cites only keys references.bib holds, and compiles from a
real tiny run's outputs, with and without the claims table, wherever a TeX engine is installed."""

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import campaign
import experiment as E
from helpers import EXPERIMENT, PLOT, ROOT

TEMPLATES = ROOT / "templates"
LATEX = TEMPLATES / "latex"
SCORES = ("Interestingness", "Feasibility", "Novelty")
IDEA_KEYS = {"Name", "Title", "Experiment", *SCORES}
EDIT_POINTS = ("param_groups", "init_weights", "batch_size_at", "lr_factor", "regulariser",
               "filter_gradients")
CONFIG_FIELDS = {f.name for f in dataclasses.fields(E.Config)}
CAMPAIGN_OUTPUTS = {"claims.tex"}  # written by campaign.py report, loaded only if present
TINY_RUN = ["--out_dir=run_0", "--num_seeds=1", "--total_steps=20", "--eval_every=10", "--prime=11",
            "--dim_model=32", "--num_heads=2", "--jobs=1"]


def expected_outputs(datasets):
    """Every file name plot.py writes for these datasets: one figure per metric and dataset
    (weight_norm and softmax_collapse when val_info records them, as experiment.py's does),
    the summary figure, and the results table."""
    metrics = ("train_loss", "val_loss", "train_acc", "val_acc", "weight_norm", "softmax_collapse")
    return {f"{m}_{d}.png" for m in metrics for d in datasets} | {"summary_plot.png", "results.tex"}


def tex_source(path=LATEX / "template.tex"):
    """The template without its comments (an unescaped % to the end of the line)."""
    return "\n".join(re.sub(r"(?<!\\)%.*", "", line) for line in path.read_text().splitlines())


def referenced_files(tex):
    """Base names of the files \\includegraphics and \\input load (../ prefixes dropped)."""
    names = re.findall(r"\\includegraphics\s*(?:\[[^\]]*\])?\s*\{([^}]*)\}", tex)
    names += re.findall(r"\\input\s*\{([^}]*)\}", tex)
    return [Path(n.strip()).name for n in names]


def cited_keys(tex):
    groups = re.findall(r"\\cite[a-zA-Z]*\*?\s*(?:\[[^\]]*\]\s*)*\{([^}]*)\}", tex)
    return {key.strip() for group in groups for key in group.split(",") if key.strip()}


def bib_entries(path=LATEX / "references.bib"):
    """{key: entry text} of every @type{key, ...} entry."""
    text = path.read_text()
    starts = list(re.finditer(r"^@(\w+)\s*\{\s*([^,\s]+)\s*,", text, flags=re.M))
    ends = [m.start() for m in starts[1:]] + [len(text)]
    return {m.group(2): text[m.start():end] for m, end in zip(starts, ends)}


# ---------------------------------------------------------------------------------------------
# The idea generator's inputs
# ---------------------------------------------------------------------------------------------
def test_prompt_has_a_system_and_a_task_description():
    prompt = json.loads((TEMPLATES / "prompt.json").read_text())
    assert set(prompt) == {"system", "task_description"}
    assert all(isinstance(v, str) and v.strip() for v in prompt.values())


def test_prompt_describes_this_harness():
    task = json.loads((TEMPLATES / "prompt.json").read_text())["task_description"]
    for word in (*E.DATASETS, *EDIT_POINTS, "final_info.json", "all_results.npy", "step_val_acc_99",
                 "final_train_loss", "final_val_loss", "final_train_acc", "final_val_acc",
                 "Config", "python experiment.py --out_dir=run_i"):
        assert word in task, word
    for name in EDIT_POINTS:
        assert callable(getattr(E, name)), f"the prompt names {name}, which experiment.py lacks"


def test_prompt_says_what_may_be_claimed():
    """Only comparisons significant after the campaign's correction or replicated on fresh seeds,
    from claims.tex, each with its interval and k/n."""
    task = json.loads((TEMPLATES / "prompt.json").read_text())["task_description"]
    for words in ("python campaign.py report", "Benjamini-Hochberg", "claims.tex",
                  "python harness.py confirm run_i", "verdict.json", "\"replicated\": true", "interval",
                  "k/n", "no claim survives"):
        assert words in task, words


def test_seed_ideas_have_exactly_the_six_keys_and_scores_from_1_to_10():
    ideas = json.loads((TEMPLATES / "seed_ideas.json").read_text())
    assert isinstance(ideas, list) and ideas
    for idea in ideas:
        assert isinstance(idea, dict) and set(idea) == IDEA_KEYS, idea.get("Name")
        for key in IDEA_KEYS - set(SCORES):
            assert isinstance(idea[key], str) and idea[key].strip(), (idea["Name"], key)
        for key in SCORES:
            score = idea[key]
            assert type(score) is int and 1 <= score <= 10, (idea["Name"], key, score)
    names = [idea["Name"] for idea in ideas]
    assert len(set(names)) == len(names), names


def test_seed_ideas_name_options_and_functions_experiment_py_has():
    """Each worked example says which option selects it, and every --option or function() it
    names exists, so the examples cannot drift from experiment.py unnoticed."""
    for idea in json.loads((TEMPLATES / "seed_ideas.json").read_text()):
        text = idea["Experiment"]
        options = set(re.findall(r"--(\w+)", text)) | set(re.findall(r"Config\.(\w+)", text))
        assert options, f"{idea['Name']} names no Config option"
        assert options <= CONFIG_FIELDS, (idea["Name"], options - CONFIG_FIELDS)
        for function in re.findall(r"(\w+)\(\)", text):
            assert callable(getattr(E, function, None)), (idea["Name"], function)


def test_seed_ideas_cover_the_earlier_studies():
    text = " ".join(idea["Experiment"] for idea in json.loads((TEMPLATES / "seed_ideas.json").read_text()))
    for option in ("lr_groups", "init", "batch_schedule", "batch_size_min", "l1_weight", "grokfast",
                   "grokfast_alpha", "grokfast_lamb", "grokfast_window"):
        assert f"--{option}" in text, option
    for choice in ("xavier", "he", "orthogonal", "kaiming_normal", "uniform", "linear", "exponential",
                   "step", "ema", "ma"):
        assert re.search(rf"\b{choice}\b", text), choice


# ---------------------------------------------------------------------------------------------
# The paper skeleton
# ---------------------------------------------------------------------------------------------
def test_template_loads_only_files_plot_py_and_campaign_py_write():
    files = referenced_files(tex_source())
    assert files, "template.tex includes no figure or table"
    unknown = sorted(set(files) - expected_outputs(E.DATASETS) - CAMPAIGN_OUTPUTS)
    assert not unknown, f"template.tex loads files plot.py and campaign.py do not write: {unknown}"
    assert "results.tex" in files and "claims.tex" in files
    assert {f"val_acc_{d}.png" for d in E.DATASETS} <= set(files)


def test_template_cites_the_claims_table_and_loads_it_only_if_present():
    tex = tex_source()
    assert re.search(r"\\IfFileExists\{claims\.tex\}\{[^{}]*\\sbox\{\\claimsbox\}\{\\scriptsize\\input\{claims\.tex\}",
                     tex), "claims.tex must be loaded behind \\IfFileExists (it exists only after campaign.py)"
    assert "\\label{tab:claims}" in tex and tex.count("\\ref{tab:claims}") >= 1
    comments = (LATEX / "template.tex").read_text()
    for words in ("Benjamini-Hochberg", "python harness.py confirm", "python campaign.py report"):
        assert words in comments, words


def test_template_cites_only_keys_in_references_bib():
    cited, known = cited_keys(tex_source()), set(bib_entries())
    assert cited, "template.tex cites nothing"
    assert not cited - known, f"cited but not in references.bib: {sorted(cited - known)}"


def test_every_bib_entry_has_author_title_and_year():
    entries = bib_entries()
    assert len(entries) == len(re.findall(r"^@\w+", (LATEX / "references.bib").read_text(), flags=re.M))
    for key, entry in entries.items():
        for field in ("author", "title", "year"):
            assert re.search(rf"^\s*{field}\s*=", entry, flags=re.M), (key, field)


def test_template_uses_only_a_basic_tex_installations_packages():
    packages = {p.strip() for group in re.findall(r"\\usepackage\s*(?:\[[^\]]*\])?\s*\{([^}]*)\}",
                                                  tex_source()) for p in group.split(",")}
    basic = {"geometry", "graphicx", "amsmath", "amssymb", "natbib", "url", "hyperref", "booktabs"}
    assert packages <= basic, packages - basic  # booktabs only behind \IfFileExists
    assert "\\documentclass[11pt]{article}" in tex_source()


# ---------------------------------------------------------------------------------------------
# A real tiny run, plotted: the names match, and the paper compiles from it
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plotted(tmp_path_factory):
    """A folder holding run_0 of every dataset (1 seed, 20 updates) and plot.py's outputs."""
    if not PLOT.exists():
        pytest.skip("plot.py does not exist yet: nothing to compile the paper from")
    tmp = tmp_path_factory.mktemp("paper")
    subprocess.run([sys.executable, str(EXPERIMENT), *TINY_RUN], cwd=tmp, check=True,
                   capture_output=True, timeout=600)
    done = subprocess.run([sys.executable, str(PLOT)], cwd=tmp, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return tmp


def test_plot_py_writes_every_file_the_template_loads(plotted):
    missing = sorted(n for n in set(referenced_files(tex_source())) - CAMPAIGN_OUTPUTS
                     if not (plotted / n).is_file())
    assert not missing, f"template.tex loads files plot.py did not write: {missing}"


def run_tex(command, cwd):
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}"


def test_template_compiles_from_a_real_runs_outputs(request):
    if not (shutil.which("pdflatex") and shutil.which("bibtex")):
        pytest.skip("pdflatex/bibtex not installed (Debian: apt-get install texlive-latex-base)")
    plotted = request.getfixturevalue("plotted")  # only now: a skip costs no training run
    for name in ("template.tex", "references.bib"):
        shutil.copy(LATEX / name, plotted / name)
    pdflatex = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "template.tex"]
    (plotted / "claims.tex").unlink(missing_ok=True)
    for claims in (None, CLAIMS, []):  # no claims.tex yet; a claim (wider than the text); none survives
        if claims is not None:
            report = {"alpha": 0.05, "folders": ["results/grokking"], "family_size": 9, "rows": claims}
            (plotted / "claims.tex").write_text(campaign.claims_tex(report))
        run_tex(pdflatex, plotted)
        run_tex(["bibtex", "template"], plotted)
        run_tex(pdflatex, plotted)
        run_tex(pdflatex, plotted)
        assert (plotted / "template.pdf").stat().st_size > 10_000
        log = (plotted / "template.log").read_text(errors="replace")
        undefined = re.findall(r"(?:Citation|Reference) `[^']*' on page \d+ undefined", log)
        assert not undefined, undefined
        text = subprocess.run(["pdftotext", "template.pdf", "-"], cwd=plotted, capture_output=True,
                              text=True).stdout if shutil.which("pdftotext") else None
        if text is not None:
            expected = {None: "claims.tex not found", "claims": "More training data", "none": "No claim survives"}
            assert expected[None if claims is None else "claims" if claims else "none"] in " ".join(text.split())


CLAIMS = [{"idea": "grokking/idea_data", "run": "run_1", "title": "More training data (train_frac 0.8) & 50% more",
           "dataset": "x_plus_y", "measure": "steps", "effect": "-1600 [-2300, -900]", "grokked_seeds": [[6, 6], [6, 6]],
           "p": 0.0004, "q": 0.004, "significant": True, "confirmed": "replicated"},
          {"idea": "grokking/idea_data", "run": "run_2", "title": "", "dataset": "x_div_y", "measure": "final",
           "effect": "+0.040 [+0.010, ∞) 90%", "grokked_seeds": [[2, 3], [0, 3]], "p": 0.02, "q": 0.3,
           "significant": False, "confirmed": "replicated"}]
