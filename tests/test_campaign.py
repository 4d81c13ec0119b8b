"""campaign.py as a specification: a synthetic campaign (an AI-Scientist results/<experiment>/
folder with three ideas, and a sweep) with one real effect among nulls; which runs it compares and
which it lists as not compared; Benjamini-Hochberg q-values against a hand computation; the
markdown leaderboard; the HTML page as a real headless browser (Debian's chromium) shows it; bad
input. The run folders are written directly, as experiment.py writes them, so this takes seconds."""
import html.parser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

import campaign

ROOT = Path(__file__).resolve().parents[1]
TOTAL = 4000  # updates; a record every 100
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)


def unit(grok_step, tail):
    """(train_info, val_info): val accuracy 0.5 until grok_step, then `tail` (> 0.99) to the end."""
    steps = range(100, TOTAL + 1, 100)
    train = [{"step": s, "train_loss": 0.01, "train_accuracy": 1.0} for s in steps]
    val = [{"step": s, "val_loss": 0.1, "val_accuracy": tail if s >= grok_step else 0.5} for s in steps]
    return train, val


def write_run(folder, datasets):
    """A finished run folder: {dataset: [(grok_step, tail) per seed]} -> all_results.npy,
    final_info.json and config.json, with experiment.py's keys."""
    folder.mkdir(parents=True)
    results = {}
    for dataset, seeds in datasets.items():
        for s, (grok_step, tail) in enumerate(seeds):
            train, val = unit(grok_step, tail)
            results[f"{dataset}_{s}_train_info"], results[f"{dataset}_{s}_val_info"] = train, val
            results[f"{dataset}_{s}_final_info"] = {"step_val_acc_99": grok_step, "diverged": 0}
    np.save(folder / "all_results.npy", results, allow_pickle=True)
    (folder / "final_info.json").write_text(json.dumps({d: {"means": {}} for d in datasets}))
    (folder / "config.json").write_text(json.dumps({"total_steps": TOTAL}))


def seeds(steps, tails):
    return list(zip(steps, tails))


BASE8 = seeds(range(2600, 3400, 100), [0.992 + 0.001 * i for i in range(8)])
NULL8 = seeds(range(2650, 3450, 100), [0.9925 + 0.001 * i for i in range(8)])   # interleaved
FAST8 = seeds(range(1000, 1800, 100), [0.9925 + 0.001 * i for i in range(8)])   # the real effect
BASE3 = seeds((2600, 2900, 3200), (0.992, 0.995, 0.998))
NULL3 = seeds((2650, 2950, 3250), (0.993, 0.996, 0.997))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(tmp, completed process): results/grokking/{idea_fast, idea_null, idea_no_baseline} and
    sweep/, reported into report/. The one real effect: idea_fast's run_1 on x_plus_y, 8 vs 8 seeds
    grokking at 1000-1700 against 2600-3300; every other run interleaves with its run_0."""
    tmp = tmp_path_factory.mktemp("campaign")
    fast = tmp / "results" / "grokking" / "idea_fast"
    write_run(fast / "run_0", {"x_plus_y": BASE8, "x_div_y": BASE8})
    write_run(fast / "run_1", {"x_plus_y": FAST8, "x_div_y": NULL8})
    write_run(fast / "run_2", {"x_plus_y": NULL8, "x_div_y": NULL8})
    (fast / "notes.txt").write_text("# Title\n## Run 0: Baseline\n## Run 1: Faster grokking\n")
    image.imsave(fast / "val_acc_x_plus_y.png", np.tile(RED, (200, 300, 1)))
    image.imsave(fast / "summary_plot.png", np.tile(BLUE, (200, 300, 1)))
    (fast / "confirm_run_1").mkdir()
    (fast / "confirm_run_1" / "verdict.json").write_text(json.dumps({"replicated": True}))
    (fast / "confirm_run_2").mkdir()  # confirmed although nothing was significant in exploration
    (fast / "confirm_run_2" / "verdict.json").write_text(json.dumps({"replicated": False,
                                                                      "significant_in_exploration": 0}))
    null = tmp / "results" / "grokking" / "idea_null"
    write_run(null / "run_0", {"x_plus_y": BASE3})
    write_run(null / "run_1", {"x_plus_y": NULL3})
    (null / "run_2").mkdir()  # final_info.json but no curves: listed, not compared
    (null / "run_2" / "final_info.json").write_text("{}")
    (null / "confirm_run_1").mkdir()
    (null / "confirm_run_1" / "verdict.json").write_text(json.dumps({"replicated": False}))
    write_run(tmp / "results" / "grokking" / "idea_no_baseline" / "run_1", {"x_plus_y": NULL3})
    for name, data in (("run_0", BASE3), ("run_1", NULL3), ("run_2", BASE3[::-1])):
        write_run(tmp / "sweep" / name, {"x_plus_y": data})
    (tmp / "sweep" / "run_3").mkdir()  # unfinished: no final_info.json, not a run yet
    done = subprocess.run([sys.executable, str(ROOT / "campaign.py"), "report", "results/grokking", "sweep",
                           "--out=report"], cwd=tmp, capture_output=True, text=True, timeout=120)
    return tmp, done


def report(built):
    return json.loads((built[0] / "report" / "campaign.json").read_text())


# ---------------------------------------------------------------------------------------------
# What is compared
# ---------------------------------------------------------------------------------------------
def test_every_run_is_compared_with_its_own_run_0_and_the_rest_is_listed(built):
    tmp, done = built
    assert done.returncode == 0, done.stderr
    assert "compared: grokking/idea_fast (run_1, run_2)" in done.stdout
    assert "compared: sweep (run_1, run_2)" in done.stdout
    assert "not compared: grokking/idea_no_baseline: run_1 not compared: no run_0 beside them" in done.stdout
    found = report(built)
    # idea_fast: 2 runs x 2 datasets x 3 measures; idea_null: 1 x 1 x 3; sweep: 2 x 1 x 3
    assert found["family_size"] == len(found["rows"]) == 12 + 3 + 6
    assert {(r["idea"], r["run"]) for r in found["rows"]} == {
        ("grokking/idea_fast", "run_1"), ("grokking/idea_fast", "run_2"), ("grokking/idea_null", "run_1"),
        ("sweep", "run_1"), ("sweep", "run_2")}
    assert found["not_compared"] == ["grokking/idea_no_baseline: run_1 not compared: no run_0 beside them",
                                     "grokking/idea_null/run_2: not compared (no all_results.npy)"]


def test_the_real_effect_is_on_top_and_alone_significant_after_correction(built):
    rows = report(built)["rows"]
    top = rows[0]
    assert (top["idea"], top["run"], top["dataset"], top["measure"]) == (
        "grokking/idea_fast", "run_1", "x_plus_y", "steps")
    # 8 vs 8 seeds, all observed: KM medians are the 4th smallest times, 1300 and 2900
    assert top["estimate"] == 1300 - 2900 and top["ci"][1] < 0 and top["significant"] is True
    assert top["title"] == "Faster grokking" and top["confirmed"] == "replicated"
    assert [r["significant"] for r in rows[1:]] == [False] * (len(rows) - 1)
    final = next(r for r in rows if r["idea"] == "grokking/idea_null" and r["measure"] == "final")
    assert final["ci_level"] == pytest.approx(0.9) and final["effect"].endswith(" 90%")  # 3 vs 3


def test_q_values_are_benjamini_hochberg_by_hand(built):
    # p = 0.01, 0.04, 0.03, 0.20; sorted 0.01, 0.03, 0.04, 0.20; m p_(j) / j = 0.04, 0.06, 0.0533,
    # 0.20; the minimum from j upward: 0.04, 0.0533, 0.0533, 0.20; back in the given order:
    assert campaign.benjamini_hochberg([0.01, 0.04, 0.03, 0.20]) == pytest.approx(
        [0.04, 0.16 / 3, 0.16 / 3, 0.20])
    assert campaign.benjamini_hochberg([0.5, 0.9]) == pytest.approx([0.9, 0.9])
    rows = report(built)["rows"]
    ps = [r["p"] for r in rows]
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    expected, running = [0.0] * m, 1.0
    for rank in range(m, 0, -1):  # step-up, from the largest p down
        i = order[rank - 1]
        running = min(running, m * ps[i] / rank)
        expected[i] = running
    assert [r["q"] for r in rows] == pytest.approx(expected)
    assert rows[0]["q"] == pytest.approx(m * rows[0]["p"])  # the smallest p: q = m p
    assert rows[0]["q"] < 0.05 < min(r["p"] for r in rows[1:])


# ---------------------------------------------------------------------------------------------
# The leaderboard: markdown and HTML
# ---------------------------------------------------------------------------------------------
def test_markdown_leaderboard_rows_links_and_confirmation(built):
    tmp = built[0]
    md = (tmp / "report" / "campaign.md").read_text()
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| Idea |"))
    assert lines[header] == ("| Idea | Run | Dataset | Measure | Effect [95% CI] | p | q (BH) | "
                             "Significant after correction | Confirmed | Figures |")
    first = lines[header + 2].split(" | ")
    assert first[:4] == ["| grokking/idea_fast", "run_1: Faster grokking", "x_plus_y", "steps to 99% (log-rank)"]
    assert first[4].startswith("-1600 [") and first[7:9] == ["yes", "replicated"]
    rows = lines[header + 2:header + 2 + 21]
    assert sum(" | yes | " in r for r in rows) == 1
    assert all(" | not replicated | " in r for r in rows if "idea_null" in r)
    fast_2 = [r for r in rows if r.startswith("| grokking/idea_fast | run_2")]
    assert len(fast_2) == 6 and all(" | not replicated (nothing to replicate) | " in r for r in fast_2)
    assert all(" | not confirmed yet | " in r for r in rows if r.startswith("| sweep"))
    assert "21 tests in the family" in md and "1 significant after correction" in md
    assert "## Not compared" in md and "idea_no_baseline" in md
    links = [part.split("](<")[1].split(">)")[0] for part in first[9].split(", ")]
    assert [Path(link).name for link in links] == ["val_acc_x_plus_y.png", "summary_plot.png"]
    assert all((tmp / "report" / link).resolve().is_file() for link in links)


class Table(html.parser.HTMLParser):
    """The rendered DOM's table rows, each a list of its cells' text, and all its text."""

    def __init__(self):
        super().__init__()
        self.rows, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")

    def handle_data(self, data):
        self.text.append(data)
        if self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


def chromium(*args, tmp):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp / 'chromium-profile'}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
@pytest.mark.slow
def test_html_page_in_a_real_headless_browser(built, tmp_path):
    page = (built[0] / "report" / "campaign.html").resolve()
    source = page.read_text()
    assert "<script" not in source and not re.search(r'(src|href)="(?!data:|#)', source)  # from disk alone
    dom = chromium("--dump-dom", page.as_uri(), tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    table = Table()
    table.feed(dom.stdout)
    header, *shown = [[cell.strip() for cell in row] for row in table.rows]
    assert header == list(campaign.HEADER)
    rows = report(built)["rows"]
    assert len(shown) == len(rows) == 21
    assert shown[0][:9] == ["grokking/idea_fast", "run_1: Faster grokking", "x_plus_y",
                            "steps to 99% (log-rank)", rows[0]["effect"], "< 0.001", "< 0.001", "yes",
                            "replicated"]
    assert shown[0][9] == "val_acc_x_plus_y, summary_plot"
    assert [row[6] for row in shown] == [campaign.number(r["q"]) for r in rows]  # the q column
    assert sorted(row[0] for row in shown).count("grokking/idea_null") == 3
    assert [row[7] for row in shown].count("yes") == 1
    assert "idea_no_baseline" in " ".join(table.text)
    shot = tmp_path / "page.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1400,2600", page.as_uri(), tmp=tmp_path)
    assert done.returncode == 0 and shot.stat().st_size > 20_000, done.stderr[-2000:]
    pixels = image.imread(shot)[..., :3]
    assert pixels.std() > 0.05  # not a blank page
    red = (pixels[..., 0] > 0.9) & (pixels[..., 1] < 0.1) & (pixels[..., 2] < 0.1)
    blue = (pixels[..., 2] > 0.9) & (pixels[..., 0] < 0.1) & (pixels[..., 1] < 0.1)
    assert red.sum() > 30_000 and blue.sum() > 30_000  # both inline figures drawn (300 x 200 each)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, named", [
    ([], "FOLDER"), (["missing"], "'missing'"), (["file.txt"], "'file.txt'"),
    (["sweep", "--alpha=1.5"], "--alpha='1.5'"), (["sweep", "--alpha=0"], "(0, 1)"),
    (["sweep", "--alpha=nan"], "'nan'"), (["sweep", "--alpha=five"], "'five'"),
    (["empty"], "no run_N folder"), (["sweep", "--out=file.txt"], "'file.txt'")])
def test_bad_input_is_one_line_on_stderr_exit_2_and_nothing_written(built, tmp_path, args, named):
    shutil.copytree(built[0] / "sweep", tmp_path / "sweep")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("not a folder")
    out = [] if any(a.startswith("--out") for a in args) else ["--out=new_report"]
    done = subprocess.run([sys.executable, str(ROOT / "campaign.py"), "report", *args, *out], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and named in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "new_report").exists()


def test_import_has_no_side_effects(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import campaign"], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0 and done.stdout == "" and list(tmp_path.iterdir()) == []
