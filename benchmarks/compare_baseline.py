"""Our baseline next to the reference template's published ones, with the same censoring-aware
statistics everywhere (grokstats.py).

    python benchmarks/compare_baseline.py [run_0 [more folders of the same configuration ...]]

Extra folders add seeds (e.g. studies/permutation_seeds_1340_1346 adds 7 permutation seeds to
run_0's 3). Published values (the seed documents of the project: the reference template's
layer-wise-LR study, Run 0, per seed = baseline A; its batch-size study, Run 0, means only =
baseline B): A's permutation seeds never reached 99% (final val accuracy 0.011, 0.089, 0.008), nor
did B's (mean final val accuracy 0.009, so none of its 3 seeds can have). Steps to 99% are censored
at the 7500-update horizon when not reached and summarised as k/n with the Kaplan-Meier median;
ours are compared with A's by the log-rank test, and the grokked fraction with Fisher's exact test.
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


def report(folders):
    units = {}
    for folder in folders:
        for dataset, found in grokstats.run_units(folder).items():
            units.setdefault(dataset, []).extend(found)
    lines = ["| dataset | ours: steps to 99% per seed | ours | published A per seed | A "
             "| published B | ours vs A (log-rank) |", "|---|---|---|---|---|---|---|"]
    for dataset, ours in units.items():
        a = published_units(PUBLISHED_A.get(dataset, []))
        versus = grokstats.compare_to_baseline(a, ours, base_name="A")["steps"]["verdict"] if a else "-"
        lines.append(f"| {dataset} | {seeds_text(ours)} | {summary(ours)} | {seeds_text(a) or '-'} "
                     f"| {summary(a) if a else '-'} | {PUBLISHED_B.get(dataset, '-')} | {versus} |")
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


if __name__ == "__main__":
    print(report(sys.argv[1:] or ["run_0"]))
