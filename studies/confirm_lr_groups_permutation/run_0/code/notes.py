"""
notes.py: the lab notebook beside the run folders (notes.txt). A run owns its heading and the
lines it writes under it (NOTES_KEYS): its results, description, steps to 99% val accuracy and,
for run_N with N >= 1, the verdict against run_0 (grokstats); every other line is kept as it is.
"""
import json
import re
from pathlib import Path

import grokstats
from options import one_line
from outputs import datasets_of, grok_summary, write_atomic


NOTES_HEADER = ("# Title: Grokking on algorithmic datasets\n"
                "# Experiment description: (the idea this series of runs tests)\n")


NOTES_KEYS = ("Results: ", "Description: ", "Steps to 99% val acc: ", "Verdict vs run_0: ", "Warning: ")


def run_number(out_dir):
    match = re.fullmatch(r"run_(\d+)", Path(out_dir).resolve().name)
    return int(match.group(1)) if match else None


def run_title(number, description):
    """"Baseline" for run 0; else the description's first sentence (decimals kept), 80 chars."""
    if number == 0:
        return "Baseline"
    return re.split(r"\.(?:\s|$)", one_line(description), maxsplit=1)[0][:80]


def notes_section(number, means, description, extra=()):
    title = run_title(number, description)
    lines = [f"## Run {number}" + (f": {title}" if title else ""), f"Results: {means}",
             f"Description: {one_line(description) or ('Baseline results.' if number == 0 else '')}",
             *extra]
    return "\n".join(lines) + "\n"


def put_section(text, number, section):
    """text with run `number`'s heading and its NOTES_KEYS lines replaced by `section` (other
    lines under the heading stay after it), or with `section` appended."""
    lines = text.splitlines(keepends=True)
    heading = re.compile(rf"## Run {number}\b")
    start = next((i for i, line in enumerate(lines) if heading.match(line)), None)
    if start is None:
        if text == NOTES_HEADER or text.endswith("\n\n") or not text:
            return text + section
        return text + ("\n" if text.endswith("\n") else "\n\n") + section
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## Run ")), len(lines))
    kept = [line for line in lines[start + 1:end] if not line.startswith(NOTES_KEYS)]
    return "".join(lines[:start]) + section + "".join(kept) + "".join(lines[end:])


def update_notes(out_dir, description, final_infos, extra=()):
    """Create notes.txt beside the run folder if missing (with Run 0 when run_0 exists), then put
    this run's section in it. Returns the path, or None for a folder not named run_N."""
    number = run_number(out_dir)
    if number is None:
        return None
    notes = Path(out_dir).resolve().parent / "notes.txt"
    means = {k: v["means"] for k, v in final_infos.items()}
    text = notes.read_text(encoding="utf-8") if notes.exists() else NOTES_HEADER
    if not notes.exists() and number != 0:
        run0 = notes.parent / "run_0" / "final_info.json"
        if run0.exists():
            base = {k: v["means"] for k, v in json.loads(run0.read_text()).items()}
            text = put_section(text, 0, notes_section(0, base, "Baseline results."))
    text = put_section(text, number, notes_section(number, means, description, extra))
    write_atomic(notes, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return notes


def notes_lines(out_dir, cfg, results):
    """The statistics lines of a run's notes section: steps to 99% (k/n, KM median) per dataset,
    the verdict against run_0 for runs N >= 1, and one warning per diverged unit."""
    lines = ["Steps to 99% val acc: " + "; ".join(
        f"{d} {grok_summary([results[(d, s)] for s in range(cfg.num_seeds)])['text']}"
        for d in datasets_of(cfg))]
    number = run_number(out_dir)
    if number:
        baseline = Path(out_dir).resolve().parent / "run_0"
        verdicts = compare_with_baseline(baseline, cfg, results)
        if verdicts:
            lines.append("Verdict vs run_0: " + " | ".join(f"{d}: {v['text']}" for d, v in verdicts.items()))
    diverged = [f"{d}_{s} at update {r['diverged_at']}" for (d, s), r in sorted(results.items())
                if r.get("diverged_at") is not None]
    if diverged:
        lines.append(f"Warning: diverged (non-finite loss) {len(diverged)}/{len(results)}: "
                     + ", ".join(diverged))
    return lines


def compare_with_baseline(baseline, cfg, results):
    """{dataset: grokstats.compare_to_baseline(...)} for the datasets run_0 shares with this run."""
    try:
        base = grokstats.run_units(baseline)
    except (OSError, ValueError):
        return {}
    verdicts = {}
    for dataset in datasets_of(cfg):
        if dataset in base:
            mine = [grokstats.comparison_unit(r["train_info"], r["val_info"], r["config"]["total_steps"],
                                              r.get("diverged_at") is not None)
                    for r in (results[(dataset, s)] for s in range(cfg.num_seeds))]
            verdicts[dataset] = grokstats.compare_to_baseline(base[dataset], mine)
    return verdicts
