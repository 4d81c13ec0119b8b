"""
campaign.py: one report over a whole campaign of runs, every verdict against run_0 corrected for
multiplicity (Benjamini-Hochberg), as a leaderboard.

    python campaign.py report results/grokking --out=reports/grokking
    python campaign.py report ideas/a ideas/b sweeps/wd_frac --out=report --alpha=0.1

Each FOLDER is searched (not inside run folders, hidden folders or confirm_run_N folders) for run_N
folders, N >= 1, holding final_info.json: an AI-Scientist results/<experiment>/ folder (one folder
per idea, each with run_0 ... run_5 and notes.txt), one idea folder, or a sweep folder (run_i
folders). Each run is compared with the run_0 beside it (grokstats.run_units, then
grokstats.compare_to_baseline per dataset they share): steps to 99% val accuracy (log-rank), the
grokked fraction (Fisher) and the tail val accuracy (Mann-Whitney), each with its effect and
interval. A folder without a readable run_0, or a run that cannot be read, is listed as not
compared, with the reason.

The family: every test this report makes, i.e. every (run, dataset, measure) with a p-value, across
all the folders given. A write-up may claim any one of them, so the false discovery rate is held at
--alpha over all of them together: Benjamini-Hochberg q-values (scipy.stats.false_discovery_control,
method "bh"), significant when q <= alpha. An untestable comparison (fewer than 2 seeds a side,
nothing to compare) has no p-value, is listed, and is not in the family. docs/campaigns.md has the
definitions and how to read the leaderboard.

Confirmed: a confirmation run of run_N lives in confirm_run_N/ beside it; its verdict.json
{"replicated": true | false, ...} gives "replicated" / "not replicated" ("not replicated (nothing to
replicate)" when its "significant_in_exploration" is 0); without one, "not
confirmed yet".

Writes into --out (created if missing): campaign.md (the leaderboard, best q first, with links to
each run's figures), campaign.html (the same, one static page that opens from disk, the figures
inline as data URIs), campaign.json (strict JSON: the settings, the family size, the rows and the
runs not compared) and claims.tex (a LaTeX tabular, no package needed, of the rows a write-up may
claim: significant after correction, or replicated on fresh seeds with p < grokstats.ALPHA; one
row saying so when none survives), which templates/latex/template.tex inputs. Bad input (no folder, a path that is not a folder, --alpha outside (0, 1), --out
a file, no run to compare): one line on stderr naming the value and what is allowed, exit 2, before
anything is written.
"""
import argparse
import base64
import html
import json
import math
import os
import re
import sys
from pathlib import Path

import grokstats

RUN_NAME = re.compile(r"run_(\d+)")
MEASURES = {"steps": "steps to 99% (log-rank)", "grokked": "grokked fraction (Fisher)",
            "final": "tail val. acc. (Mann-Whitney)"}
FIGURE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg"}
FAMILY = ("every (run, dataset, measure) comparison with a p-value in this report: each run_N "
          "(N >= 1) against the run_0 of its own folder, on each dataset they share, on each of the "
          "three measures; a write-up may claim any of them")


# ---------------------------------------------------------------------------------------------
# FINDING THE RUNS
# ---------------------------------------------------------------------------------------------
def run_number(path):
    match = RUN_NAME.fullmatch(path.name)
    return int(match[1]) if match else None


def find_groups(folder):
    """{group folder: [run_N folders, N >= 1, with final_info.json, by N]} under folder (itself
    included), never looking inside run_N, confirm_run_N or hidden folders."""
    groups = {}
    for top, dirs, _ in os.walk(folder):
        top = Path(top)
        runs = [top / d for d in dirs if run_number(Path(d)) and (top / d / "final_info.json").is_file()]
        if runs:
            groups[top] = sorted(runs, key=run_number)
        dirs[:] = sorted(d for d in dirs if run_number(Path(d)) is None and not d.startswith(".")
                         and not d.startswith("confirm_run_") and d != "__pycache__")
    return groups


def group_label(group, folder):
    """The group's path from the given folder's parent: "grokking/idea_a", or "sweep"."""
    return Path(group).resolve().relative_to(Path(folder).resolve().parent).as_posix()


def run_titles(group):
    """{"run_N": title} from notes.txt's "## Run N: Title" headings (first one wins)."""
    notes = Path(group) / "notes.txt"
    text = notes.read_text(errors="replace") if notes.is_file() else ""
    titles = {}
    for number, title in re.findall(r"^## Run (\d+)\b:?[ \t]*(.*?)[ \t]*$", text, flags=re.M):
        titles.setdefault(f"run_{int(number)}", title)
    return titles


def confirmation(group, run):
    """'replicated' / 'not replicated' from confirm_run_N/verdict.json ('not replicated (nothing to
    replicate)' where no comparison was significant in exploration), else 'not confirmed yet'."""
    path = Path(group) / f"confirm_{run}" / "verdict.json"
    if not path.is_file():
        return "not confirmed yet"
    try:
        found = json.loads(path.read_text())
        replicated, claimed = found["replicated"], found.get("significant_in_exploration")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"unreadable {path.parent.name}/verdict.json ({type(e).__name__})"
    if not isinstance(replicated, bool):
        return f"unreadable {path.parent.name}/verdict.json (replicated is not true or false)"
    if replicated:
        return "replicated"
    return "not replicated (nothing to replicate)" if claimed == 0 else "not replicated"


def figures(group, run, dataset):
    """The figures that show this run on this dataset: the folder's val_acc_{dataset} and
    summary_plot (plot.py's), its per-run figures *_{dataset}_{run}, and any in the run folder."""
    group = Path(group)
    found = [group / f"{stem}{ext}" for stem in (f"val_acc_{dataset}", "summary_plot") for ext in FIGURE_TYPES]
    found += sorted(p for ext in FIGURE_TYPES for p in group.glob(f"*_{dataset}_{run}{ext}"))
    found += sorted(p for ext in FIGURE_TYPES for p in (group / run).glob(f"*{ext}"))
    return [p for p in found if p.is_file()]


# ---------------------------------------------------------------------------------------------
# COMPARING AND CORRECTING
# ---------------------------------------------------------------------------------------------
def compare_group(group, runs, label):
    """(rows, not_compared) for one folder: every run against the folder's run_0."""
    names = ", ".join(r.name for r in runs)
    if not (Path(group) / "run_0").is_dir():
        return [], [f"{label}: {names} not compared: no run_0 beside them"]
    try:
        base = grokstats.run_units(Path(group) / "run_0")
    except ValueError as e:
        return [], [f"{label}: {names} not compared: run_0 unusable ({e})"]
    rows, skipped, titles = [], [], run_titles(group)
    for run in runs:
        try:
            mine = grokstats.run_units(run)
        except ValueError as e:
            skipped.append(f"{label}/{run.name}: not compared ({e})")
            continue
        for dataset in [d for d in mine if d not in base]:
            skipped.append(f"{label}/{run.name}: {dataset} not compared (run_0 has no {dataset})")
        for dataset in [d for d in mine if d in base]:
            found = grokstats.compare_to_baseline(base[dataset], mine[dataset])
            counts = [[sum(u["grokked"] for u in units), len(units)] for units in (mine[dataset], base[dataset])]
            for key in MEASURES:
                rows.append(row(label, group, run, titles.get(run.name, ""), dataset, key, found[key], counts))
    return rows, skipped


def row(label, group, run, title, dataset, key, entry, counts):
    """One leaderboard row (JSON-safe); q and significant are filled by `correct`. counts: the
    seeds that grokked and the seeds, [[k, n] of the run, [k, n] of run_0]."""
    return {"idea": label, "run": run.name, "title": title, "dataset": dataset, "measure": key,
            "grokked_seeds": counts,
            "test": entry["test"], "verdict": entry["verdict"], "p": entry["p"], "q": None,
            "significant": None, "estimate": entry["estimate"], "ci": entry["ci"],
            "ci_level": entry["ci_level"], "ci_method": entry["ci_method"], "ci_note": entry["ci_note"],
            "effect": grokstats.format_effect(key, entry, compact=True), "effect_text": entry["effect_text"],
            "confirmed": confirmation(group, run.name), "folder": str(run),
            "figures": [str(p) for p in figures(group, run.name, dataset)]}


def benjamini_hochberg(ps):
    """Benjamini-Hochberg adjusted p-values (q-values) of a family: with p_(1) <= ... <= p_(m),
    q_(i) = min over j >= i of min(1, m p_(j) / j). Rejecting every q <= alpha holds the false
    discovery rate at alpha (independent or positively dependent tests)."""
    if not ps:
        return []
    from scipy import stats  # imported on use, as grokstats does
    return [float(q) for q in stats.false_discovery_control(ps, method="bh")]


def correct(rows, alpha):
    """Fill each row's q and significant (q <= alpha) over the family: the rows with a p-value."""
    family = [r for r in rows if r["p"] is not None]
    for r, q in zip(family, benjamini_hochberg([r["p"] for r in family])):
        r["q"], r["significant"] = q, q <= alpha
    return len(family)


def leaderboard(rows):
    """Best first: by q (untested last), then p, then idea, run number, dataset, measure."""
    def order(r):
        return (r["q"] is None, r["q"] or 0.0, r["p"] if r["p"] is not None else 2.0, r["idea"],
                run_number(Path(r["run"])), r["dataset"], list(MEASURES).index(r["measure"]))
    return sorted(rows, key=order)


# ---------------------------------------------------------------------------------------------
# WRITING: markdown, HTML, JSON
# ---------------------------------------------------------------------------------------------
HEADER = ("Idea", "Run", "Dataset", "Measure", "Effect [95% CI]", "p", "q (BH)",
          "Significant after correction", "Confirmed", "Figures")


def number(value):
    """p and q in a cell: '0.021', '< 0.001', '-' when not tested."""
    if value is None:
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def cells(r):
    run = r["run"] + (f": {r['title']}" if r["title"] else "")
    significant = "-" if r["significant"] is None else ("yes" if r["significant"] else "no")
    effect = r["effect"] if r["p"] is not None else "not testable"
    return [r["idea"], run, r["dataset"], MEASURES[r["measure"]], effect, number(r["p"]), number(r["q"]),
            significant, r["confirmed"]]


def summary_lines(report):
    rows, alpha = report["rows"], report["alpha"]
    tested = [r for r in rows if r["p"] is not None]
    return [f"{len(tested)} tests in the family ({len(rows) - len(tested)} comparisons not testable), "
            f"{len({(r['idea'], r['run']) for r in rows})} runs in {len({r['idea'] for r in rows})} folders. "
            f"Benjamini-Hochberg over the whole family at q <= {alpha:g}: "
            f"{sum(bool(r['significant']) for r in rows)} significant after correction "
            f"({sum(r['p'] < alpha for r in tested)} at p < {alpha:g} before it).",
            f"The family: {FAMILY}. Effects are run - run_0: the difference of Kaplan-Meier median "
            "steps to 99% (percentile bootstrap interval; ∞ = open-ended), of grokked fractions "
            "(Newcombe's interval), and the Hodges-Lehmann shift of the tail val. accuracy (its level "
            "printed when below 95%: 90% is the most 3 vs 3 seeds allow). docs/campaigns.md defines them."]


def markdown(report, out):
    counts, meaning = summary_lines(report)
    lines = ["# Campaign report", "", counts, "", meaning, "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in leaderboard(report["rows"]):
        links = ", ".join(f"[{Path(p).stem}](<{os.path.relpath(p, out)}>)" for p in r["figures"]) or "-"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(r) + [links]) + " |")
    if report["not_compared"]:
        lines += ["", "## Not compared", "", *[f"- {note}" for note in report["not_compared"]]]
    return "\n".join(lines) + "\n"


STYLE = ("body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;"
         "font-size:14px}th,td{border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top}"
         "th{background:#eee}tr.yes td{background:#e6f4e6}img{max-width:100%;border:1px solid #ddd}"
         "td:nth-child(5),td:nth-child(6),td:nth-child(7){white-space:nowrap}figure{margin:1em 0}")


def html_page(report):
    """One static page: no script, no external file; each figure inline once, linked from its rows."""
    ids = {}
    for r in report["rows"]:
        for p in r["figures"]:
            ids.setdefault(p, f"fig-{len(ids) + 1}")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>Campaign report</title>',
           f"<style>{STYLE}</style></head><body>", "<h1>Campaign report</h1>",
           *[f"<p>{html.escape(line)}</p>" for line in summary_lines(report)],
           '<table id="leaderboard"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
           + "</tr></thead><tbody>"]
    for r in leaderboard(report["rows"]):
        links = ", ".join(f'<a href="#{ids[p]}">{html.escape(Path(p).stem)}</a>' for p in r["figures"]) or "-"
        row_class = ' class="yes"' if r["significant"] else ""
        out.append(f"<tr{row_class}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r))
                   + f"<td>{links}</td></tr>")
    out.append("</tbody></table>")
    if report["not_compared"]:
        out += ["<h2>Not compared</h2>", "<ul>", *[f"<li>{html.escape(n)}</li>" for n in report["not_compared"]],
                "</ul>"]
    if ids:
        out.append("<h2>Figures</h2>")
    for path, anchor in ids.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        out.append(f'<figure id="{anchor}"><img alt="{html.escape(Path(path).name)}" '
                   f'src="data:{FIGURE_TYPES[Path(path).suffix]};base64,{data}">'
                   f"<figcaption>{html.escape(path)}</figcaption></figure>")
    return "\n".join(out + ["</body></html>"]) + "\n"


def claimed(r, alpha):
    """Why a row may be claimed ("BH q <= alpha", "replicated on fresh seeds", both), or None:
    significant after correction, or its run replicated on fresh seeds (confirm.py: every row
    significant in exploration replicated) and this row was one of them (p < grokstats.ALPHA)."""
    reasons = [f"BH q <= {alpha:g}"] if r["significant"] else []
    if r["confirmed"] == "replicated" and r["p"] is not None and r["p"] < grokstats.ALPHA:
        reasons.append("replicated on fresh seeds")
    return " and ".join(reasons) or None


TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
       "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": "$<$", ">": "$>$",
       "≤": r"$\le$", "∞": r"$\infty$"}  # < and > are other glyphs in LaTeX's default text font


def tex(text):
    """Plain text as LaTeX text (TEX: the special characters escaped, <= as $\\le$)."""
    return "".join(TEX.get(c, c) for c in text.replace("<=", "≤"))


CLAIMS_HEADER = ("Idea", "Run", "Dataset", "Measure", "Effect [95% CI]", "Grokked", "p", "q (BH)", "Basis")


def claims_tex(report):
    """claims.tex: a tabular of the rows a write-up may claim (`claimed`), best q first, or one row
    saying that none survives."""
    alpha, rows = report["alpha"], [r for r in report["rows"] if claimed(r, report["alpha"])]
    lines = [f"% Written by campaign.py report over {', '.join(report['folders'])}: the only comparisons a",
             f"% write-up may claim (Benjamini-Hochberg over {report['family_size']} tests at q <= {alpha:g},",
             "% or replicated on fresh seeds by `python harness.py confirm`). Effects are run - run_0.",
             r"\begin{tabular}{" + "l" * len(CLAIMS_HEADER) + "}", r"\hline",
             " & ".join(tex(h) for h in CLAIMS_HEADER) + r" \\", r"\hline"]
    for r in rows:
        (kr, nr), (kb, nb) = r["grokked_seeds"]
        run = r["run"] + (f": {r['title']}" if r["title"] else "")
        cells = [r["idea"], run, r["dataset"], MEASURES[r["measure"]], r["effect"], f"{kr}/{nr} vs {kb}/{nb}",
                 number(r["p"]), number(r["q"]), claimed(r, alpha)]
        lines.append(" & ".join(tex(c) for c in cells) + r" \\")
    if not rows:
        lines.append(rf"\multicolumn{{{len(CLAIMS_HEADER)}}}{{l}}{{No claim survives: no comparison is significant "
                     rf"after Benjamini--Hochberg correction over {report['family_size']} tests, and none was "
                     r"replicated on fresh seeds.} \\")
    return "\n".join(lines + [r"\hline", r"\end{tabular}"]) + "\n"


def write_atomic(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# MAIN
# ---------------------------------------------------------------------------------------------
def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        fail(message)


def parse_args(argv):
    parser = OneLineParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    report = commands.add_parser("report", help="the leaderboard of every run under the folders",
                                 allow_abbrev=False)
    report.add_argument("folders", nargs="+", metavar="FOLDER",
                        help="results/<experiment>, idea or sweep folders")
    report.add_argument("--out", required=True, help="folder for campaign.md, .html and .json")
    report.add_argument("--alpha", default="0.05", help="false discovery rate, in (0, 1)")
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not Path(folder).is_dir():
            fail(f"FOLDER {folder!r} is not a folder; give results/<experiment>, idea or sweep folders")
    given = args.alpha
    try:
        args.alpha = float(given)
    except ValueError:
        args.alpha = math.nan
    if not 0 < args.alpha < 1:  # NaN fails too
        fail(f"--alpha={given!r} is not a number in (0, 1), e.g. --alpha=0.05")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        fail(f"--out={args.out!r} is a file, not a folder")
    return args


def collect(folders):
    """(rows, not_compared) of every group under the folders, each group once."""
    rows, skipped, seen = [], [], set()
    for folder in folders:
        for group, runs in find_groups(folder).items():
            if group.resolve() in seen:
                continue
            seen.add(group.resolve())
            label = group_label(group, folder)
            found, notes = compare_group(group, runs, label)
            rows += found
            skipped += notes
            compared = sorted({r["run"] for r in found}, key=lambda name: run_number(Path(name)))
            if compared:
                print(f"compared: {label} ({', '.join(compared)})")
            for note in notes:
                print(f"not compared: {note}")
    return rows, skipped


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not any(find_groups(folder) for folder in args.folders):
        fail(f"no run_N folder (N >= 1) with final_info.json under {', '.join(map(repr, args.folders))}")
    rows, skipped = collect(args.folders)
    out = Path(args.out)
    report = {"command": "campaign.py report", "folders": [str(f) for f in args.folders],
              "alpha": args.alpha, "correction": "Benjamini-Hochberg (scipy.stats.false_discovery_control, "
              "method 'bh'), significant when q <= alpha", "family": FAMILY,
              "family_size": correct(rows, args.alpha), "rows": leaderboard(rows), "not_compared": skipped}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "campaign.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    write_atomic(out / "campaign.md", markdown(report, out))
    write_atomic(out / "campaign.html", html_page(report))
    write_atomic(out / "claims.tex", claims_tex(report))
    print(f"family: {report['family_size']} tests, "
          f"{sum(bool(r['significant']) for r in rows)} significant after correction, "
          f"{sum(bool(claimed(r, args.alpha)) for r in rows)} claimable")
    for name in ("campaign.md", "campaign.html", "campaign.json", "claims.tex"):
        print(f"wrote: {out / name}")


if __name__ == "__main__":
    main()
