"""Per-unit grokking statistics and seed-honest comparisons between runs (numpy + scipy only).

A *unit* is one (dataset, seed) training run; its `val_info` / `train_info` are the records taken
every `eval_every` updates. "Reached" means accuracy strictly > THRESHOLD = 0.99, as
`step_val_acc_99`. A *diverged* unit (loss became non-finite) has records up to the one where that
was detected, with its non-finite values as None; None never counts as reached.

Per unit (`unit_statistics`):
- `diverged`: 1 or 0.
- `step_train_acc_99`: first record step with train accuracy > 0.99, else None.
- `grokked`: 1 if some val record has val accuracy > 0.99, else 0.
- `grok_delay`: first val crossing step - first train crossing step; None if either is not reached.
- `final_val_acc_tail`: mean val accuracy over the last ceil(10%) of val records (at least one);
  a spike at the last record moves it by 1/75 of the spike's depth over 750 records, unlike the
  final val accuracy. None if diverged.
- `sustained`: 1 if grokked, not diverged, and the generalisation held after the first crossing:
  (a) at least HELD_FRACTION = 0.8 of the val records from the first crossing onward are > 0.99,
  and (b) so are at least 0.8 of the final window: the last ceil(10%) of the val records, counting
  only those from the first crossing onward. A crossing at the last record counts as held.
  Measured on run_0 (7500 updates, 750 records; spikes every ~330-450 updates lasting 1-3
  records, down to val acc 0.055): fraction (a) is 0.924-0.966 on the 9 modular units and
  0.929 / 1.000 on permutation seeds 2 / 1; fraction (b) is 0.920-0.960 and 0.929 / 1.000
  (x_minus_y seed 1, last record 0.814 after a spike to 0.133, scores 0.941 and 0.933). A unit that
  falls back to chance after crossing scores near 0 on (a) or (b). The window is cut at the
  crossing because the permutation units cross at 7210 / 7230, inside the last-10% window, so
  their `final_val_acc_tail` (0.824 / 0.876) mixes in pre-grokking records.
- `slingshots`: the number of slingshot spikes (Thilak et al. 2022, "The slingshot mechanism") in
  the train loss after memorisation, None if train accuracy never exceeded 0.99
  (`slingshot_steps` gives their steps; experiment.py puts them in the unit's file as
  "slingshot_steps"). A spike starts at a train record, from the first one with train accuracy >
  0.99 onward and at least SPIKE_WINDOW = 10 records after it, whose train loss exceeds
  SPIKE_FACTOR = 10 times the median train loss of the SPIKE_WINDOW records before it; consecutive
  records over that line are one spike, counted at its first record. Non-finite or None losses
  are never spikes and are left out of the medians. Measured on run_0 (7500 updates, records every
  10): 15-18 spikes on x_plus_y, 21-22 on x_minus_y, 22-24 on x_div_y, 16-20 on permutation, the
  median gap 230-425 updates and never under 190; a factor of 5 gives the same counts on the
  modular units (permutation: 22-25), so the line sits well below the spikes' height (their
  peaks are 10-5000 times the median).

Steps to 99% val accuracy are censored data: a unit that never crossed is censored at
total_steps, or at its last recorded step if it diverged (`grok_time`). They are summarised by the
Kaplan-Meier estimate of the fraction of seeds not yet grokked, S(t); the KM median is the smallest
t with S(t) <= 0.5, "not reached" when S stays above 0.5 (`grok_steps_summary`). Censored times are
never averaged.

Two runs are compared seed by seed (`compare_to_baseline`) at ALPHA = 0.05, two-sided: steps to
grok by the log-rank test (chi-square approximation; direction from scipy's signed statistic,
positive when the run has more crossings than expected under no difference, i.e. groks earlier);
the fraction that grokked by Fisher's exact test; `final_val_acc_tail` by the Mann-Whitney U test
(exact without ties), diverged units excluded. Effects are run - baseline: difference of KM
medians, of grokked fractions, of median tail accuracies. A p-value >= ALPHA reads "no detectable
difference with N vs M seeds", never "no difference". A test with fewer than 2 seeds on a side, or
with nothing to compare, gives p None and says why.

Power (`detectable_difference`, `seeds_needed`): with sd the sample sd of a baseline's observed
steps to grok, a two-sided two-sample test at ALPHA with power 0.8 and n seeds per arm detects a
shift in mean steps of (z_{1-ALPHA/2} + z_{0.8}) * sd * sqrt(2 / n) (normal approximation:
optimistic for few seeds, censoring ignored). E.g. run_0's x_plus_y (1890, 3030, 3090; sd 676):
1547 steps with 3 seeds per arm; 29 seeds per arm to detect 500 steps.
"""
import json
import math
import re
from pathlib import Path
from statistics import NormalDist

import numpy as np
from scipy import stats

THRESHOLD = 0.99
TAIL_FRACTION = 0.1
HELD_FRACTION = 0.8
ALPHA = 0.05
SPIKE_FACTOR = 10.0
SPIKE_WINDOW = 10


def _finite(values):
    return all(v is not None and math.isfinite(v) for v in values)


def standard_error(values):
    """Sample standard deviation (ddof=1) / sqrt(n); 0.0 for n == 1; None if empty or any value is
    None or non-finite."""
    values = list(values)
    if not values or not _finite(values):
        return None
    return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def mean_or_none(values):
    """Plain mean; None if empty or any value is None or non-finite (never drops a seed)."""
    values = list(values)
    return float(np.mean(values)) if values and _finite(values) else None


def _reached(value):
    return value is not None and value > THRESHOLD


def _first_step(records, key):
    return next((r["step"] for r in records if _reached(r[key])), None)


def unit_statistics(train_info, val_info, total_steps, diverged=False):
    """The per-unit statistics of the module docstring, as a JSON-safe dict (total_steps is taken
    for symmetry with `grok_time`; no statistic here needs it)."""
    acc = [r["val_accuracy"] for r in val_info]
    first = next((i for i, a in enumerate(acc) if _reached(a)), None)
    step_val = None if first is None else val_info[first]["step"]
    step_train = _first_step(train_info, "train_accuracy")
    tail = max(1, math.ceil(TAIL_FRACTION * len(acc)))
    spikes = slingshot_steps(train_info)
    sustained = 0
    if first is not None and not diverged:
        after = [_reached(a) for a in acc[first:]]
        sustained = int(np.mean(after) >= HELD_FRACTION and np.mean(after[-tail:]) >= HELD_FRACTION)
    return {"diverged": int(diverged),
            "step_train_acc_99": step_train,
            "grokked": int(step_val is not None),
            "grok_delay": None if step_val is None or step_train is None else step_val - step_train,
            "final_val_acc_tail": None if diverged or not acc else mean_or_none(acc[-tail:]),
            "sustained": sustained,
            "slingshots": None if spikes is None else len(spikes)}


def slingshot_steps(train_info, factor=SPIKE_FACTOR, window=SPIKE_WINDOW):
    """Steps where a slingshot spike of the train loss starts (module docstring), or None if train
    accuracy never exceeded THRESHOLD."""
    start = next((i for i, r in enumerate(train_info) if _reached(r.get("train_accuracy"))), None)
    if start is None:
        return None
    losses = [r.get("train_loss") for r in train_info]
    losses = [v if v is not None and math.isfinite(v) else None for v in losses]
    steps, previous = [], False
    for i in range(start + window, len(losses)):
        before = [v for v in losses[i - window:i] if v is not None]
        spike = losses[i] is not None and bool(before) and losses[i] > factor * float(np.median(before))
        if spike and not previous:
            steps.append(train_info[i]["step"])
        previous = spike
    return steps


def grok_time(val_info, total_steps, diverged=False):
    """Steps to 99% val accuracy as censored data: (first crossing step, True) if reached, else
    (censoring time, False): total_steps, or the last recorded step (0 if none) if diverged."""
    step = _first_step(val_info, "val_accuracy")
    if step is not None:
        return step, True
    return (val_info[-1]["step"] if val_info else 0) if diverged else total_steps, False


def _censored(times_observed):
    return stats.CensoredData(uncensored=[t for t, o in times_observed if o],
                              right=[t for t, o in times_observed if not o])


def km_median(times_observed):
    """Kaplan-Meier median of (time, observed) pairs: the smallest time with S(t) <= 0.5 (an int
    when integral), None if S never reaches 0.5 (or no pairs)."""
    if not times_observed:
        return None
    sf = stats.ecdf(_censored(times_observed)).sf
    below = sf.quantiles[sf.probabilities <= 0.5]
    if not below.size:
        return None
    return int(below[0]) if float(below[0]).is_integer() else float(below[0])


def grok_steps_summary(times_observed):
    """{"n", "k" (observed), "median" (KM median or None), "text"} for (time, observed) pairs, e.g.
    "2/3 grokked, KM median 7230" or "0/3 grokked, median not reached"."""
    n, k = len(times_observed), sum(bool(o) for _, o in times_observed)
    median = km_median(times_observed)
    tail = "median not reached" if median is None else f"KM median {median}"
    return {"n": n, "k": k, "median": median, "text": f"{k}/{n} grokked, {tail}"}


def format_p(p):
    """'p = 0.03' (two decimals; three below 0.01 or where two would print ALPHA), 'p < 0.001'."""
    if p < 0.001:
        return "p < 0.001"
    text = f"{p:.2f}"
    return f"p = {p:.3f}" if p < 0.01 or text == f"{ALPHA:.2f}" else f"p = {text}"


def _seeds(n):
    return f"{n} seed" + ("" if n == 1 else "s")


def _steps_test(run, base):
    """(p, effect, verdict) of the log-rank test on steps to grok."""
    pairs = [[(u["time"], u["observed"]) for u in units] for units in (run, base)]
    mr, mb = km_median(pairs[0]), km_median(pairs[1])
    effect = None if mr is None or mb is None else mr - mb
    if min(len(run), len(base)) < 2:
        return None, effect, f"steps to grok not testable: {_seeds(min(len(run), len(base)))}"
    if not any(u["observed"] for u in run + base):
        return None, effect, "steps to grok not testable: no seed grokked in either run"
    with np.errstate(invalid="ignore", divide="ignore"):  # zero variance: p is NaN, handled below
        res = stats.logrank(_censored(pairs[0]), _censored(pairs[1]))
    if not math.isfinite(res.pvalue):
        return None, effect, "steps to grok not testable: all times identical"
    if res.pvalue >= ALPHA:
        verdict = f"no detectable difference in steps to grok with {len(run)} vs {len(base)} seeds"
    else:  # the statistic is (observed - expected crossings in the run) / sd
        verdict = "groks earlier" if res.statistic > 0 else "groks later"
    return res.pvalue, effect, f"{verdict}, {format_p(res.pvalue)}"


def _grokked_test(run, base):
    """(p, effect, verdict) of Fisher's exact test on the number of seeds that grokked."""
    (nr, kr), (nb, kb) = [(len(units), sum(u["grokked"] for u in units)) for units in (run, base)]
    effect = kr / nr - kb / nb if nr and nb else None
    counts = f"{kr}/{nr} vs {kb}/{nb}"
    if min(nr, nb) < 2:
        return None, effect, f"grokked {counts} (not testable: {_seeds(min(nr, nb))})"
    p = stats.fisher_exact([[kr, nr - kr], [kb, nb - kb]]).pvalue
    if p >= ALPHA:
        return p, effect, (f"grokked {counts} (no detectable difference with {nr} vs {nb} seeds, "
                           f"{format_p(p)})")
    return p, effect, f"groks {'more' if effect > 0 else 'less'} often ({counts}), {format_p(p)}"


def _final_test(run, base):
    """(p, effect, verdict) of the Mann-Whitney U test on final_val_acc_tail, diverged excluded."""
    r, b = [[u["final_val_acc_tail"] for u in units if u["final_val_acc_tail"] is not None]
            for units in (run, base)]
    effect = float(np.median(r) - np.median(b)) if r and b else None
    dropped = len(run) + len(base) - len(r) - len(b)
    note = f" ({_seeds(dropped)} diverged, excluded)" if dropped else ""
    if min(len(r), len(b)) < 2:
        return None, effect, f"final val acc not testable: {_seeds(min(len(r), len(b)))}{note}"
    if len(set(r + b)) == 1:
        return None, effect, f"final val acc not testable: all values identical{note}"
    res = stats.mannwhitneyu(r, b, alternative="two-sided")
    if res.pvalue >= ALPHA:
        verdict = f"final val acc no detectable difference with {len(r)} vs {len(b)} seeds"
    else:  # U counts the (run, base) pairs where the run's value is the larger
        verdict = f"{'higher' if res.statistic > len(r) * len(b) / 2 else 'lower'} final val acc"
    return res.pvalue, effect, f"{verdict}{note}, {format_p(res.pvalue)}"


_TESTS = {"steps": ("log-rank", _steps_test), "grokked": ("Fisher exact", _grokked_test),
         "final": ("Mann-Whitney U", _final_test)}


def compare_to_baseline(base_units, run_units, base_name="run_0"):
    """Compare a run's units with the baseline's for one dataset. Units are dicts with "time",
    "observed" (from `grok_time`), "grokked" and "final_val_acc_tail". Returns {"steps", "grokked",
    "final"}, each {"test", "p" (None if not testable), "effect" (run - base: KM medians, grokked
    fractions, median tail accuracies; None if undefined), "verdict"}, and "text": the verdicts on
    one line."""
    base, run = list(base_units), list(run_units)
    out = {}
    for key, (name, test) in _TESTS.items():
        p, effect, verdict = test(run, base)
        out[key] = {"test": name, "p": None if p is None else float(p), "effect": effect,
                    "verdict": verdict}
    out["text"] = f"vs {base_name}: " + "; ".join(out[key]["verdict"] for key in _TESTS)
    return out


def _z(alpha, power):
    return NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)


def detectable_difference(steps, n_per_arm, alpha=ALPHA, power=0.8):
    """Smallest shift in mean steps to grok that a two-sided two-sample test at `alpha` detects with
    `power` for n_per_arm seeds per arm: (z_{1-alpha/2} + z_power) * sd * sqrt(2 / n), sd the
    sample sd (ddof=1) of `steps` (a baseline's observed steps to grok for one dataset). Normal
    approximation: optimistic for few seeds (a t-test needs more), and it ignores censoring."""
    return _z(alpha, power) * float(np.std(steps, ddof=1)) * math.sqrt(2 / n_per_arm)


def seeds_needed(steps, effect, alpha=ALPHA, power=0.8):
    """Seeds per arm for `detectable_difference` to reach `effect` steps:
    ceil(2 * ((z_{1-alpha/2} + z_power) * sd / effect) ** 2), same approximation."""
    return math.ceil(2 * (_z(alpha, power) * float(np.std(steps, ddof=1)) / effect) ** 2)


# ---------------------------------------------------------------------------------------------
# RUN FOLDERS: reading a finished run_N (final_info.json, all_results.npy, config.json), shared by
# harness.py (the verdict against run_0), plot.py and benchmarks/compare_baseline.py.
# ---------------------------------------------------------------------------------------------
RESULT_KEY = re.compile(r"(?P<dataset>.+)_(?P<seed>\d+)_(?P<part>final_info|train_info|val_info)")


def read_file(path, read):
    """read(path), or ValueError naming the file and why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no {path.name}")
    try:
        return read(path)
    except Exception as e:  # truncated, garbage or foreign files all mean "not a finished run"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{path.name} is unreadable ({type(e).__name__}: {reason[:120]})")


def read_results(folder):
    """all_results.npy of a run folder as a dict, or ValueError."""
    results = read_file(Path(folder) / "all_results.npy", lambda p: np.load(p, allow_pickle=True).item())
    if not isinstance(results, dict):
        raise ValueError("all_results.npy does not hold a dict")
    return results


def comparison_unit(train_info, val_info, total_steps, diverged=False):
    """A unit as compare_to_baseline takes it."""
    time, observed = grok_time(val_info, total_steps, diverged)
    stats_ = unit_statistics(train_info, val_info, total_steps, diverged)
    return {"time": time, "observed": observed, "grokked": stats_["grokked"],
            "final_val_acc_tail": stats_["final_val_acc_tail"]}


def run_units(folder):
    """{dataset: [comparison_unit per seed]} of a finished run folder, or ValueError. The horizon
    is config.json's total_steps (else the last record's step); a unit is diverged when its
    final_info says so."""
    folder = Path(folder)
    results = read_results(folder)
    try:
        total_steps = json.loads((folder / "config.json").read_text())["total_steps"]
    except (OSError, ValueError, KeyError, TypeError):
        total_steps = None
    units = {}
    for key in sorted(results, key=str):
        match = RESULT_KEY.fullmatch(str(key))
        if not match or match["part"] != "val_info":
            continue
        d, s = match["dataset"], match["seed"]
        val, train = results[key], results.get(f"{d}_{s}_train_info", [])
        final = results.get(f"{d}_{s}_final_info") or {}
        horizon = total_steps or (val[-1]["step"] if val else 0)
        units.setdefault(d, []).append(comparison_unit(train, val, horizon, bool(final.get("diverged"))))
    return units
