"""Our baseline next to the reference template's published ones, with the same censoring-aware
statistics everywhere (grokstats.py).

    python benchmarks/compare_baseline.py [run_0 [more folders of the same configuration ...]]

Extra folders add seeds (e.g. studies/permutation_seeds_1340_1346 adds 7 permutation seeds to
run_0's 3). Published values (the seed documents of the project: the reference template's
layer-wise-LR study, Run 0, per seed = baseline A; its batch-size study, Run 0, means only =
baseline B): A's permutation seeds never reached 99% (final val accuracy 0.011, 0.089, 0.008), nor
did B's (mean final val accuracy 0.009, so none of its 3 seeds can have). Steps to 99% are censored
at the 7500-update horizon when not reached and summarised as k/n with the Kaplan-Meier median;
ours are compared with A's by the log-rank test, and the grokked fraction with Fisher's exact test,
each with its effect and interval (grokstats.compare_to_baseline) and its Benjamini-Hochberg q over
every testable comparison the table makes (the family: the table's claims).

    python benchmarks/compare_baseline.py run_0 --previous=studies/run_0_before_token_tables

adds run_0 against an earlier baseline (every measure, effects, intervals, q over that family).
"""
import sys
from pathlib import Path

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import grokstats  # noqa: E402

HORIZON = 7500
PUBLISHED_A = {"x_div_y": [3910, 4220, 4470], "x_minus_y": [4910, 4350, 4900],
               "x_plus_y": [2960, 1620, 2510], "permutation": [None, None, None]}
PUBLISHED_B = {"x_div_y": "mean 4353.3", "x_minus_y": "mean 4403.3", "x_plus_y": "mean 2640.0",
               "permutation": "0/3 (mean final val acc 0.009)"}
PUBLISHED_PERMUTATION = (0, 6)  # grokked / seeds: A's 3 and B's 3


def published_units(steps):
    return [{"time": s or HORIZON, "observed": s is not None, "grokked": int(s is not None),
             "final_val_acc_tail": None} for s in steps]


def seeds_text(units):
    return ", ".join(f"{u['time']}" if u["observed"] else f"never ({u['time']})" for u in units)


def summary(units):
    return grokstats.grok_steps_summary([(u["time"], u["observed"]) for u in units])["text"]


def q_values(verdicts):
    """{(dataset, measure): BH q} over every testable comparison in verdicts {dataset: verdict}."""
    keys = [(d, m) for d, v in verdicts.items() for m in ("steps", "grokked", "final") if v[m]["p"] is not None]
    qs = stats.false_discovery_control([verdicts[d][m]["p"] for d, m in keys], method="bh") if keys else []
    return dict(zip(keys, map(float, qs)))


def report(folders):
    units = {}
    for folder in folders:
        for dataset, found in grokstats.run_units(folder).items():
            units.setdefault(dataset, []).extend(found)
    lines = ["| dataset | ours: steps to 99% per seed | ours | published A per seed | A "
             "| published B | ours vs A (log-rank) | KM median diff [95% CI] | q (BH) |",
             "|---|---|---|---|---|---|---|---|---|"]
    verdicts = {d: grokstats.compare_to_baseline(published_units(PUBLISHED_A[d]), ours, base_name="A")
                for d, ours in units.items() if d in PUBLISHED_A}
    qs = q_values(verdicts)
    for dataset, ours in units.items():
        a = published_units(PUBLISHED_A.get(dataset, []))
        v = verdicts.get(dataset)
        q = qs.get((dataset, "steps"))
        lines.append(f"| {dataset} | {seeds_text(ours)} | {summary(ours)} | {seeds_text(a) or '-'} "
                     f"| {summary(a) if a else '-'} | {PUBLISHED_B.get(dataset, '-')} "
                     f"| {v['steps']['verdict'] if v else '-'} | {v['steps']['effect_text'] if v else '-'} "
                     f"| {'-' if q is None else f'{q:.2f}'} |")
    if qs:
        lines += ["", f"q: Benjamini-Hochberg over the {len(qs)} testable comparisons against A in this "
                      f"table (steps and grokked fraction per dataset); significant after correction: "
                      f"{', '.join(f'{d} {m}' for (d, m), q in qs.items() if q < grokstats.ALPHA) or 'none'}."]
    if "permutation" in units:
        ours = units["permutation"]
        k, n = sum(u["grokked"] for u in ours), len(ours)
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        pk, pn = PUBLISHED_PERMUTATION
        p = stats.fisher_exact([[k, n - k], [pk, pn - pk]]).pvalue
        steps = sorted(u["time"] for u in ours if u["observed"])
        lines += ["", f"permutation: {k}/{n} seeds grokked within {HORIZON} updates ({k / n:.0%}, "
                      f"95% Clopper-Pearson CI {ci.low:.0%}-{ci.high:.0%}); steps of those that did: "
                      f"{', '.join(map(str, steps)) or 'none'}; published {pk}/{pn}: Fisher exact "
                      f"(two-sided) {grokstats.format_p(p)}."]
    return "\n".join(lines)


def versus_previous(folder, previous):
    """Every measure of folder's units against previous's, with effects, intervals and BH q."""
    ours, theirs = grokstats.run_units(folder), grokstats.run_units(previous)
    verdicts = {d: grokstats.compare_to_baseline(theirs[d], ours[d], base_name="previous")
                for d in ours if d in theirs}
    qs = q_values(verdicts)
    lines = [f"{folder} against {previous}:", "", "| dataset | measure | verdict | effect [interval] | p | q (BH) |",
             "|---|---|---|---|---|---|"]
    for d, v in verdicts.items():
        for m in ("steps", "grokked", "final"):
            q = qs.get((d, m))
            lines.append(f"| {d} | {m} | {v[m]['verdict']} | {v[m]['effect_text'] if v[m]['p'] is not None else '-'} "
                         f"| {'-' if v[m]['p'] is None else grokstats.format_p(v[m]['p'])} "
                         f"| {'-' if q is None else f'{q:.2f}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--previous=")]
    previous = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--previous=")]
    print(report(args or ["run_0"]))
    for p in previous:
        print("\n" + versus_previous((args or ["run_0"])[0], p))
