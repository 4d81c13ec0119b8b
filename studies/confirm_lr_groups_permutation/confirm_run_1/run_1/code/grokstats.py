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
(exact without ties), diverged units excluded. A p-value >= ALPHA reads "no detectable
difference with N vs M seeds", never "no difference". A test with fewer than 2 seeds on a side, or
with nothing to compare, gives p None and says why.

Each verdict carries an effect size, run - baseline, with an interval (docs/campaigns.md works
examples), computed when each side has >= 2 seeds:
- steps (`km_median_difference`): KM median of the run - KM median of the baseline, with a
  percentile bootstrap interval: BOOTSTRAP_RESAMPLES times, resample each arm's units with
  replacement (numpy default_rng(BOOTSTRAP_SEED)) and take the difference of the resamples'
  `km_median`s; a median not reached counts as +inf (it lies beyond the resample's follow-up), so
  the interval is open on that side rather than ending at a made-up number. Nominal 1 - ALPHA; with
  3 seeds a side the bootstrap sees at most 10 distinct resamples of an arm, so read it as rough.
- grokked (`newcombe_difference`): difference of grokked fractions with Newcombe's hybrid score
  interval (method 10 of Newcombe 1998, Stat Med 17:873), built from the two Wilson intervals.
- final (`hodges_lehmann_shift`): the Hodges-Lehmann shift of final_val_acc_tail (median of the
  n_run * n_base pairwise differences) with its distribution-free interval from the Mann-Whitney
  null distribution: the k-th smallest and k-th largest differences, k the largest with
  2 P(U <= k - 1) <= ALPHA, confidence 1 - 2 P(U <= k - 1) exactly (no ties). 3 vs 3 seeds cannot
  reach 95%: the widest interval (k = 1, the range of the differences) has 90%, which is reported.

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


def _stats():
    """scipy.stats, imported on first use: 1.4 s that a training worker never needs."""
    from scipy import stats
    return stats

THRESHOLD = 0.99
TAIL_FRACTION = 0.1
HELD_FRACTION = 0.8
ALPHA = 0.05
SPIKE_FACTOR = 10.0
SPIKE_WINDOW = 10
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


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
    return _stats().CensoredData(uncensored=[t for t, o in times_observed if o],
                                 right=[t for t, o in times_observed if not o])


def km_median(times_observed):
    """Kaplan-Meier median of (time, observed) pairs: the smallest time with S(t) <= 0.5 (an int
    when integral), None if S never reaches 0.5 (or no pairs). S is scipy.stats.ecdf's survival
    function, computed here with its arithmetic (S *= (n - d) / n at each distinct time, n at risk,
    d crossings; tests check equality) because the bootstrap calls this thousands of times."""
    pairs = sorted((t, bool(o)) for t, o in times_observed)
    at_risk, survival, i = len(pairs), 1.0, 0
    while i < len(pairs):
        time, deaths, j = pairs[i][0], 0, i
        while j < len(pairs) and pairs[j][0] == time:
            deaths, j = deaths + pairs[j][1], j + 1
        survival *= (at_risk - deaths) / at_risk
        if survival <= 0.5:
            return int(time) if float(time).is_integer() else float(time)
        at_risk, i = at_risk - (j - i), j
    return None


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
        res = _stats().logrank(_censored(pairs[0]), _censored(pairs[1]))
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
    p = _stats().fisher_exact([[kr, nr - kr], [kb, nb - kb]]).pvalue
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
    res = _stats().mannwhitneyu(r, b, alternative="two-sided")
    if res.pvalue >= ALPHA:
        verdict = f"final val acc no detectable difference with {len(r)} vs {len(b)} seeds"
    else:  # U counts the (run, base) pairs where the run's value is the larger
        verdict = f"{'higher' if res.statistic > len(r) * len(b) / 2 else 'lower'} final val acc"
    return res.pvalue, effect, f"{verdict}{note}, {format_p(res.pvalue)}"


# ---------------------------------------------------------------------------------------------
# EFFECT SIZES with intervals, run - baseline (module docstring; docs/campaigns.md)
# ---------------------------------------------------------------------------------------------
def km_median_difference(run_pairs, base_pairs, alpha=ALPHA, resamples=BOOTSTRAP_RESAMPLES,
                         seed=BOOTSTRAP_SEED):
    """KM median steps to grok, run - baseline, of (time, observed) pairs, with a percentile
    bootstrap interval. Returns {"estimate", "low", "high", "level", "method", "not_reached"}:
    estimate = km_median(run) - km_median(base), None when either is not reached. Interval: with
    rng = numpy.random.default_rng(seed), draw a (resamples, n_run) array of run indices, then a
    (resamples, n_base) array of baseline indices (uniform, with replacement); each row pair gives
    d = km_median(run resample) - km_median(base resample), a median not reached counting as +inf
    (so d = +inf, -inf, or undefined when neither is reached). low is the k-th smallest d and high
    the k-th largest, k = max(1, floor(resamples * alpha / 2)), an undefined d counting as -inf for
    low and +inf for high; an infinite bound means the interval is open on that side. level is
    the nominal 1 - alpha; not_reached the fraction of resamples where some median was not
    reached. low = high = level = None with fewer than 2 units a side."""
    run_pairs, base_pairs = list(run_pairs), list(base_pairs)
    mr, mb = km_median(run_pairs), km_median(base_pairs)
    out = {"estimate": None if mr is None or mb is None else mr - mb, "low": None, "high": None,
           "level": None, "not_reached": None,
           "method": f"percentile bootstrap, {resamples} resamples of the seeds, seed {seed}"}
    if min(len(run_pairs), len(base_pairs)) < 2:
        return out
    rng = np.random.default_rng(seed)
    arms = []
    for pairs in (run_pairs, base_pairs):
        rows = rng.integers(0, len(pairs), size=(resamples, len(pairs)))
        medians = [km_median([pairs[i] for i in row]) for row in rows]
        arms.append(np.array([math.inf if m is None else m for m in medians], dtype=float))
    with np.errstate(invalid="ignore"):  # inf - inf: neither median reached, sign unknown
        d = arms[0] - arms[1]
    k = max(1, math.floor(resamples * alpha / 2))
    out.update(low=float(np.sort(np.where(np.isnan(d), -math.inf, d))[k - 1]),
               high=float(np.sort(np.where(np.isnan(d), math.inf, d))[resamples - k]),
               level=1 - alpha, not_reached=float(np.mean(~np.isfinite(d))))
    return out


def newcombe_difference(k_run, n_run, k_base, n_base, alpha=ALPHA):
    """Difference of proportions k_run/n_run - k_base/n_base with Newcombe's hybrid score interval
    (method 10 of Newcombe 1998): with (l, u) each proportion's Wilson score interval at 1 - alpha
    (no continuity correction), low = d - sqrt((p_run - l_run)^2 + (u_base - p_base)^2) and high =
    d + sqrt((u_run - p_run)^2 + (p_base - l_base)^2). Returns {"estimate", "low", "high", "level"
    (nominal 1 - alpha), "method"}; all None but "method" if a side has no seeds."""
    out = {"estimate": None, "low": None, "high": None, "level": None,
           "method": "Newcombe hybrid score (Wilson) interval"}
    if not n_run or not n_base:
        return out
    (pr, lr, ur), (pb, lb, ub) = [_wilson(k, n, alpha) for k, n in ((k_run, n_run), (k_base, n_base))]
    d = pr - pb
    out.update(estimate=d, low=d - math.hypot(pr - lr, ub - pb), high=d + math.hypot(ur - pr, pb - lb),
               level=1 - alpha)
    return out


def _wilson(k, n, alpha):
    ci = _stats().binomtest(int(k), int(n)).proportion_ci(1 - alpha, method="wilson")
    return k / n, float(ci.low), float(ci.high)


def mann_whitney_null_cdf(m, n):
    """P(U <= u) for u = 0 .. m*n, U the number of pairs (x, y) with x > y among m x's and n y's
    when every ordering of the m + n (distinct) values is equally likely. Recursion on the largest
    value: an x with probability m / (m + n), beating all n y's (U = n + U(m - 1, n)), else a y
    (U = U(m, n - 1))."""
    previous = [np.ones(1) for _ in range(n + 1)]  # m = 0: U = 0 whatever n
    for i in range(1, m + 1):
        current = [np.ones(1)]  # n = 0: U = 0
        for j in range(1, n + 1):
            pmf = np.zeros(i * j + 1)
            pmf[j:] += i / (i + j) * previous[j]
            pmf[:i * (j - 1) + 1] += j / (i + j) * current[j - 1]
            current.append(pmf)
        previous = current
    return np.cumsum(previous[n])


def hodges_lehmann_shift(run_values, base_values, alpha=ALPHA):
    """Hodges-Lehmann shift, run - baseline, with its distribution-free interval. estimate: the
    median of the m * n differences r - b (m run values, n baseline values). With D_(1) <= ... <=
    D_(mn) those differences sorted and P the Mann-Whitney null distribution of (m, n)
    (`mann_whitney_null_cdf`), k is the largest integer >= 1 with 2 P(U <= k - 1) <= alpha, or 1
    when even k = 1 misses; the interval is [D_(k), D_(mn + 1 - k)] and its confidence level is
    exactly 1 - 2 P(U <= k - 1) for continuous values (ties make it approximate). "attained" is
    False when that level is below 1 - alpha (3 vs 3: 1 - 2/20 = 90% at most). Returns
    {"estimate", "low", "high", "level", "attained", "method"}; all None but "method" with fewer
    than 2 values a side."""
    r, b = list(run_values), list(base_values)
    out = {"estimate": None, "low": None, "high": None, "level": None, "attained": None,
           "method": "Hodges-Lehmann shift, Mann-Whitney order-statistic interval"}
    if min(len(r), len(b)) < 2:
        return out
    d = np.sort(np.subtract.outer(np.asarray(r, float), np.asarray(b, float)).ravel())
    cdf = mann_whitney_null_cdf(len(r), len(b))
    k = max(1, int(np.sum(2 * cdf[:len(d) // 2] <= alpha + 1e-12)))  # cdf rises: a prefix passes
    level = 1 - 2 * float(cdf[k - 1])
    out.update(estimate=float(np.median(d)), low=float(d[k - 1]), high=float(d[len(d) - k]),
               level=level, attained=level >= 1 - alpha - 1e-12)
    return out


def _steps_effect(run, base):
    pairs = [[(u["time"], u["observed"]) for u in units] for units in (run, base)]
    found = km_median_difference(*pairs)
    missing = [name for name, p in zip(("the run", "the baseline"), pairs) if km_median(p) is None]
    found["undefined"] = ("median not reached in " + " or ".join(missing)) if missing else None
    return found


def _grokked_effect(run, base):
    return newcombe_difference(sum(u["grokked"] for u in run), len(run),
                               sum(u["grokked"] for u in base), len(base))


def _final_effect(run, base):
    r, b = [[u["final_val_acc_tail"] for u in units if u["final_val_acc_tail"] is not None]
            for units in (run, base)]
    found = hodges_lehmann_shift(r, b)
    if found["attained"] is False:
        found["note"] = f"the most {len(r)} vs {len(b)} seeds allow"
    return found


_TESTS = {"steps": ("log-rank", _steps_test), "grokked": ("Fisher exact", _grokked_test),
          "final": ("Mann-Whitney U", _final_test)}
_EFFECTS = {"steps": ("KM median diff", 0, _steps_effect), "grokked": ("grokked fraction diff", 2, _grokked_effect),
            "final": ("HL shift", 3, _final_effect)}


def _bound(value):
    return None if value is None or not math.isfinite(value) else value


def _effect_entry(key, found):
    """The effect keys of a measure's verdict: "estimate", "ci" ([low, high], None at an open end;
    None when there is no interval, or when both ends are infinite on one side), "ci_level",
    "ci_method", "ci_note" (why the estimate is undefined or the level missed), "effect_text"."""
    low, high = found["low"], found["high"]
    ci = None
    if found["level"] is not None and not (low == high and math.isinf(low)):
        ci = [_bound(low), _bound(high)]
    entry = {"estimate": found["estimate"], "ci": ci, "ci_level": found["level"] if ci else None,
             "ci_method": found["method"], "ci_note": found.get("undefined") or found.get("note")}
    entry["effect_text"] = format_effect(key, entry)
    return entry


def _signed(value, digits):
    text = f"{value:+.{digits}f}"
    return text[1:] if float(text) == 0 else text  # "0", not "+0" or "-0"


def below_nominal(level):
    """True when an interval's confidence level is under 1 - ALPHA (so a "95% CI" it is not)."""
    return level is not None and level < 1 - ALPHA - 1e-9


def format_level(level):
    """0.95 -> "95%", 0.9683 -> "96.8%"."""
    return f"{100 * level:.3g}%"


def format_effect(key, entry, compact=False):
    """A measure's effect and interval (key: "steps", "grokked" or "final"). Long, for notes and
    verdicts: "KM median diff -340, 95% CI [-910, +120]", an open end written "unbounded", the
    confidence level always given, then any ci_note in parentheses. compact, for tables and
    figures under a "95% CI" heading: "-340 [-910, +120]", an open end written ∞, the level added
    only when it is below 1 - ALPHA ("+0.004 [-0.010, +0.020] 90%"; a Hodges-Lehmann interval
    above it, such as 96.8% with 5 vs 5 seeds, is a conservative 95% one); "undefined" for no
    estimate."""
    name, digits, _ = _EFFECTS[key]
    estimate, ci, level = entry["estimate"], entry["ci"], entry["ci_level"]
    open_low, open_high = ("(-∞", "∞)") if compact else ("(unbounded", "unbounded)")
    interval = "" if ci is None else (
        f"{open_low if ci[0] is None else '[' + _signed(ci[0], digits)}, "
        f"{open_high if ci[1] is None else _signed(ci[1], digits) + ']'}")
    value = "undefined" if estimate is None else _signed(estimate, digits)
    if compact:
        flag = f" {format_level(level)}" if ci is not None and below_nominal(level) else ""
        return value + (f" {interval}{flag}" if interval else "")
    text = f"{name} {value}" + (f", {format_level(level)} CI {interval}" if interval else "")
    return text + (f" ({entry['ci_note']})" if entry["ci_note"] else "")


def compare_to_baseline(base_units, run_units, base_name="run_0"):
    """Compare a run's units with the baseline's for one dataset. Units are dicts with "time",
    "observed" (from `grok_time`), "grokked" and "final_val_acc_tail". Returns {"steps", "grokked",
    "final"}, each {"test", "p" (None if not testable), "effect" (run - base: KM medians, grokked
    fractions, median tail accuracies; None if undefined), "verdict"} and the effect size with its
    interval (`_effect_entry`: "estimate" = "effect" but for "final", where it is the
    Hodges-Lehmann shift; "ci", "ci_level", "ci_method", "ci_note", "effect_text"), and "text": the
    verdicts on one line, each testable one followed by its effect_text."""
    base, run = list(base_units), list(run_units)
    out = {}
    for key, (name, test) in _TESTS.items():
        p, effect, verdict = test(run, base)
        out[key] = {"test": name, "p": None if p is None else float(p), "effect": effect,
                    "verdict": verdict, **_effect_entry(key, _EFFECTS[key][2](run, base))}
    out["text"] = f"vs {base_name}: " + "; ".join(
        out[key]["verdict"] + ("" if out[key]["p"] is None else f", {out[key]['effect_text']}")
        for key in _TESTS)
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
