"""grokstats.py as a specification: per-unit statistics on synthetic curves with known answers,
censoring-aware steps to grok, the three seed-honest tests and their effect sizes with intervals
against hand-worked and published values, and the committed baseline run_0. No torch: these take
well under a second."""

import math

import numpy as np
import pytest
from scipy import stats

import grokstats as g
from helpers import PREVIOUS_RUN_0
EVERY = 10


def val(accs):
    """val_info with one record per accuracy, every EVERY updates."""
    return [{"step": EVERY * (i + 1), "val_loss": 0.1, "val_accuracy": a}
            for i, a in enumerate(accs)]


def train(accs):
    return [{"step": EVERY * (i + 1), "train_loss": 0.1, "train_accuracy": a}
            for i, a in enumerate(accs)]


TOTAL = 1000  # 100 records
TRAIN = train([0.5] * 10 + [1.0] * 90)  # crosses 99% at step 110


def unit(accs, diverged=False):
    v = val(accs)
    s = g.unit_statistics(TRAIN[:len(v)], v, TOTAL, diverged)
    time, observed = g.grok_time(v, TOTAL, diverged)
    return {**s, "time": time, "observed": observed}


# ---------------------------------------------------------------------------------------------
# Per-unit statistics on synthetic curves
# ---------------------------------------------------------------------------------------------

def test_never_reached_is_censored_at_total_steps():
    u = unit([0.5] * 99 + [0.99])  # 0.99 is not > 0.99
    assert (u["grokked"], u["sustained"], u["grok_delay"], u["diverged"]) == (0, 0, None, 0)
    assert u["step_train_acc_99"] == 110
    assert (u["time"], u["observed"]) == (TOTAL, False)
    assert u["final_val_acc_tail"] == pytest.approx((9 * 0.5 + 0.99) / 10)


def test_reached_at_the_last_record_counts_as_grokked_and_held():
    u = unit([0.5] * 99 + [1.0])
    assert (u["time"], u["observed"]) == (1000, True)
    assert (u["grokked"], u["sustained"], u["grok_delay"]) == (1, 1, 1000 - 110)


def test_crossed_and_collapsed_is_grokked_but_not_sustained():
    # crosses at step 100, holds 5 records, then back to chance for the rest of training
    u = unit([0.3] * 9 + [1.0] * 5 + [0.01] * 86)
    assert (u["time"], u["observed"], u["grokked"], u["sustained"]) == (100, True, 1, 0)
    assert u["final_val_acc_tail"] == pytest.approx(0.01)


def test_held_most_of_the_time_but_collapsed_at_the_end_is_not_sustained():
    # 85% of the records after the crossing are > 0.99, but the last 10% of records are at chance
    u = unit([0.3] * 20 + [1.0] * 70 + [0.01] * 10)
    assert (u["grokked"], u["sustained"]) == (1, 0)


def test_spikes_including_one_at_the_last_record_do_not_count_as_collapse():
    # run_0-like: a 2-record spike every 35 records after the crossing, and one at the very end
    accs = [0.3] * 20 + [1.0] * 80
    for i in range(40, 100, 35):
        accs[i] = accs[i + 1] = 0.1
    accs[-1] = 0.1
    u = unit(accs)
    assert (u["grokked"], u["sustained"]) == (1, 1)
    assert u["final_val_acc_tail"] == pytest.approx(0.91)  # robust, while the final acc is 0.1


def test_diverged_unit_is_censored_at_its_last_record():
    v = val([0.3] * 40)
    v[-1].update(val_loss=None, val_accuracy=None)  # non-finite values of the detecting record
    s = g.unit_statistics(TRAIN[:40], v, TOTAL, diverged=True)
    assert (s["diverged"], s["grokked"], s["sustained"], s["final_val_acc_tail"]) == (1, 0, 0, None)
    assert g.grok_time(v, TOTAL, diverged=True) == (400, False)


def test_diverged_after_grokking_is_observed_but_not_sustained():
    u = unit([0.3] * 10 + [1.0] * 30, diverged=True)
    assert (u["time"], u["observed"], u["grokked"], u["sustained"]) == (110, True, 1, 0)


def test_standard_error_and_mean_never_drop_a_seed():
    assert g.standard_error([1.0, 2.0, 3.0]) == pytest.approx(1 / math.sqrt(3))
    assert g.standard_error([5.0]) == 0.0
    assert g.standard_error([]) is None
    assert g.standard_error([1.0, None]) is None and g.standard_error([1.0, float("nan")]) is None
    assert g.mean_or_none([1.0, 2.0]) == 1.5
    assert g.mean_or_none([]) is None and g.mean_or_none([1.0, None]) is None
    assert g.mean_or_none([1.0, float("inf")]) is None


# ---------------------------------------------------------------------------------------------
# Kaplan-Meier summary of steps to grok
# ---------------------------------------------------------------------------------------------

def test_km_median_hand_worked():
    # All observed: S(10) = 2/3, S(20) = 1/3 <= 0.5 -> 20.
    assert g.km_median([(10, True), (20, True), (30, True)]) == 20
    # 10 observed, 20 censored, 30 observed: S(10) = 1 - 1/3 = 2/3; the censoring at 20 leaves S
    # at 2/3 and 1 seed at risk; S(30) = 2/3 * (1 - 1/1) = 0 <= 0.5 -> 30 (not the naive 20).
    assert g.km_median([(10, True), (20, False), (30, True)]) == 30
    # 10, 20 observed, 30, 40 censored: S(10) = 3/4, S(20) = 3/4 * (1 - 1/3) = 1/2 -> 20.
    assert g.km_median([(10, True), (20, True), (30, False), (40, False)]) == 20
    # 10 observed, 20 and 30 censored: S stays at 2/3 -> not reached.
    s = g.grok_steps_summary([(10, True), (20, False), (30, False)])
    assert s == {"n": 3, "k": 1, "median": None, "text": "1/3 grokked, median not reached"}


def test_km_median_is_scipy_ecdf_median_exactly():
    """km_median repeats scipy.stats.ecdf's arithmetic (fast enough for the bootstrap): the same
    answer on random samples full of tied times, censored and not, integral and not."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n = int(rng.integers(1, 9))
        times = rng.integers(1, 6, n) * 10 + (rng.random(n) < 0.2) * 0.5
        observed = rng.random(n) < rng.random()
        pairs = [(int(t) if float(t).is_integer() else float(t), bool(o)) for t, o in zip(times, observed)]
        sf = stats.ecdf(stats.CensoredData(uncensored=[t for t, o in pairs if o],
                                           right=[t for t, o in pairs if not o])).sf
        below = sf.quantiles[sf.probabilities <= 0.5]
        assert g.km_median(pairs) == (float(below[0]) if below.size else None), pairs


def test_all_censored_median_not_reached():
    s = g.grok_steps_summary([(7500, False)] * 3)
    assert s == {"n": 3, "k": 0, "median": None, "text": "0/3 grokked, median not reached"}
    assert g.grok_steps_summary([(2670, True)] * 3)["text"] == "3/3 grokked, KM median 2670"


# ---------------------------------------------------------------------------------------------
# Comparisons against a baseline
# ---------------------------------------------------------------------------------------------

def seeds(times, observed=True, tails=None):
    """Units for compare_to_baseline; tails: one final_val_acc_tail per seed (default all 1.0)."""
    tails = [1.0] * len(times) if tails is None else tails
    return [{"time": t, "observed": observed, "grokked": int(observed), "final_val_acc_tail": a}
            for t, a in zip(times, tails)]


def test_logrank_matches_hand_worked_statistic():
    # x: 10, 20 observed; y: 15 censored, 30 observed. Event times (N at risk, N_x, deaths O):
    #   t=10: N=4, N_x=2, O=1 (x): E_x = 2/4 = 0.5, V = 0.5 * (3/4) * (2/3) = 0.25
    #   t=15: y censored -> 1 at risk in each group
    #   t=20: N=2, N_x=1, O=1 (x): E_x = 1/2, V = 0.5 * (1/2) * (1/1) = 0.25
    #   t=30: N=1, N_x=0: E_x = 0, V = 0
    # O_x - E_x = 2 - 1 = 1, V = 0.5: chi-square = 1 / 0.5 = 2 (1 df), p = erfc(1) = 0.1573;
    # scipy's statistic is the signed root, +sqrt(2): x has more events than expected.
    x = stats.CensoredData(uncensored=[10, 20])
    y = stats.CensoredData(uncensored=[30], right=[15])
    res = stats.logrank(x, y)
    assert res.statistic == pytest.approx(math.sqrt(2))
    assert res.pvalue == pytest.approx(math.erfc(1))
    c = g.compare_to_baseline(seeds([30]) + seeds([15], observed=False), seeds([10, 20]))
    assert c["steps"]["p"] == pytest.approx(math.erfc(1))
    assert c["steps"]["verdict"] == ("no detectable difference in steps to grok with 2 vs 2 seeds, "
                                     "p = 0.16")


def test_logrank_direction():
    early, late = seeds([100, 200, 300]), seeds([1000, 2000, 3000])
    c = g.compare_to_baseline(late, early)
    assert c["steps"]["verdict"].startswith("groks earlier, p = 0.0") and c["steps"]["p"] < g.ALPHA
    assert c["steps"]["effect"] == 200 - 2000
    assert g.compare_to_baseline(early, late)["steps"]["verdict"].startswith("groks later")
    # later but censored: the run never grokked, the baseline did
    c = g.compare_to_baseline(early, seeds([7500] * 3, observed=False))
    assert c["steps"]["verdict"].startswith("groks later") and c["steps"]["effect"] is None


def test_fisher_exact_hand_worked():
    # [[3, 0], [0, 3]]: with all margins 3, P(a = 3) = C(3,3) C(3,0) / C(6,3) = 1/20; the two-sided
    # p sums the tables as unlikely: a = 3 and a = 0, p = 2/20 = 0.1.
    assert stats.fisher_exact([[3, 0], [0, 3]]).pvalue == pytest.approx(0.1)
    c = g.compare_to_baseline(seeds([7500] * 3, observed=False), seeds([100, 200, 300]))
    assert c["grokked"]["p"] == pytest.approx(0.1) and c["grokked"]["effect"] == 1.0
    assert c["grokked"]["verdict"] == ("grokked 3/3 vs 0/3 (no detectable difference with 3 vs 3 "
                                       "seeds, p = 0.10)")
    # 8/8 vs 0/8: p = 2 / C(16, 8) = 2 / 12870
    c = g.compare_to_baseline(seeds([7500] * 8, observed=False), seeds([100] * 8))
    assert c["grokked"]["p"] == pytest.approx(2 / 12870)
    assert c["grokked"]["verdict"] == "groks more often (8/8 vs 0/8), p < 0.001"


def test_mann_whitney_direction_and_diverged_exclusion():
    # complete separation, 4 vs 4, no ties: exact two-sided p = 2 / C(8, 4) = 2/70
    low = seeds([100] * 4, tails=[0.1, 0.2, 0.3, 0.4])
    high = seeds([100] * 4, tails=[0.9, 0.95, 0.97, 0.99])
    c = g.compare_to_baseline(low, high)
    assert c["final"]["p"] == pytest.approx(2 / 70)
    assert c["final"]["verdict"] == "higher final val acc, p = 0.03"
    assert c["final"]["effect"] == pytest.approx(0.96 - 0.25)
    assert g.compare_to_baseline(high, low)["final"]["verdict"] == "lower final val acc, p = 0.03"
    diverged = seeds([50], observed=False, tails=[None])
    c = g.compare_to_baseline(low, high[:3] + diverged)
    assert c["final"]["verdict"].startswith("final val acc no detectable difference with 3 vs 4 "
                                            "seeds (1 seed diverged, excluded), p = ")


def test_untestable_cases_say_why():
    c = g.compare_to_baseline(seeds([100, 200, 300]), seeds([150]))
    assert [c[k]["p"] for k in ("steps", "grokked", "final")] == [None, None, None]
    assert c["text"] == ("vs run_0: steps to grok not testable: 1 seed; grokked 1/1 vs 3/3 "
                         "(not testable: 1 seed); final val acc not testable: 1 seed")
    c = g.compare_to_baseline(seeds([7500] * 3, observed=False), seeds([7500] * 3, observed=False))
    assert c["steps"]["verdict"] == "steps to grok not testable: no seed grokked in either run"
    assert c["final"]["verdict"] == "final val acc not testable: all values identical"


def test_text_joins_the_three_verdicts_each_with_its_effect():
    base = seeds([2000, 3000, 4000], tails=[0.98, 0.99, 0.97])
    run = seeds([2500, 3500, 3900], tails=[0.99, 0.96, 0.985])
    c = g.compare_to_baseline(base, run, base_name="run_3")
    assert c["text"] == (f"vs run_3: {c['steps']['verdict']}, {c['steps']['effect_text']}; "
                         f"{c['grokked']['verdict']}, {c['grokked']['effect_text']}; "
                         f"{c['final']['verdict']}, {c['final']['effect_text']}")
    assert "no detectable difference in steps to grok with 3 vs 3 seeds" in c["text"]
    # KM medians 3500 - 3000; every resample's median is one of the arm's times (the smallest
    # with probability 7/27, the largest alike), so the bootstrap cannot leave
    # [2500 - 4000, 3900 - 2000] and puts (7/27)^2 = 6.7% > 2.5% on each end
    assert c["steps"]["effect_text"] == "KM median diff +500, 95% CI [-1500, +1900]"
    # Wilson 3/3 = [3 / (3 + z^2), 1] = [0.4385, 1]: d = 0, +-sqrt(0.5615^2 + 0) = +-0.56
    assert c["grokked"]["effect_text"] == "grokked fraction diff 0.00, 95% CI [-0.56, +0.56]"
    assert c["final"]["effect_text"].startswith("HL shift ") and "90% CI" in c["final"]["effect_text"]


def test_untestable_measures_add_no_effect_to_the_text_but_keep_it_in_the_dict():
    c = g.compare_to_baseline(seeds([100, 200, 300]), seeds([150]))
    assert c["steps"]["estimate"] == 150 - 200 and c["steps"]["ci"] is None  # 1 seed: no interval
    assert "diff" not in c["text"]


# ---------------------------------------------------------------------------------------------
# Effect sizes with intervals
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("counts, expected", [
    ((56, 70, 48, 80), (0.2, 0.0524, 0.3339)),   # Newcombe (1998) Table II, example (a), method 10
    ((9, 10, 3, 10), (0.6, 0.1705, 0.8090))])    # example (b)
def test_newcombe_interval_matches_the_published_examples(counts, expected):
    found = g.newcombe_difference(*counts)
    assert [found["estimate"], found["low"], found["high"]] == pytest.approx(expected, abs=5e-5)
    assert found["level"] == 0.95


def test_newcombe_interval_hand_worked_for_all_against_none():
    # n/n vs 0/n: Wilson gives [n / (n + z^2), 1] and [0, z^2 / (n + z^2)], so d = 1,
    # low = 1 - sqrt(2) * z^2 / (n + z^2), high = 1. z^2 = 3.8415: n = 10 -> 0.6075; n = 3 -> 0.2059.
    z2 = stats.norm.ppf(0.975) ** 2
    for n, low in ((10, 0.6075), (3, 0.2059)):
        found = g.newcombe_difference(n, n, 0, n)
        assert found["low"] == pytest.approx(1 - math.sqrt(2) * z2 / (n + z2)) == pytest.approx(low, abs=1e-4)
        assert found["high"] == pytest.approx(1.0)
    # the interval excludes 0 while Fisher's exact p is 0.10: two procedures, both reported
    c = g.compare_to_baseline(seeds([7500] * 3, observed=False), seeds([100, 200, 300]))
    assert c["grokked"]["p"] == pytest.approx(0.1)
    assert c["grokked"]["effect_text"] == "grokked fraction diff +1.00, 95% CI [+0.21, +1.00]"


def test_mann_whitney_null_distribution_hand_worked_and_as_scipy():
    # 3 vs 3: of the C(6, 3) = 20 orderings, U = 0 .. 9 in 1, 1, 2, 3, 3, 3, 3, 2, 1, 1 of them
    counts = np.diff(np.concatenate([[0.0], g.mann_whitney_null_cdf(3, 3)])) * 20
    assert counts == pytest.approx([1, 1, 2, 3, 3, 3, 3, 2, 1, 1])
    assert g.mann_whitney_null_cdf(4, 4)[:2] * 70 == pytest.approx([1, 2])
    rng = np.random.default_rng(3)
    for m, n in ((2, 5), (4, 6), (7, 3)):
        x, y = rng.normal(size=m), rng.normal(size=n) + 0.5
        u = int(sum(a > b for a in x for b in y))
        exact = stats.mannwhitneyu(x, y, alternative="less", method="exact").pvalue  # P(U <= u)
        assert g.mann_whitney_null_cdf(m, n)[u] == pytest.approx(exact)


def test_hodges_lehmann_hand_worked_3_vs_3_reports_the_confidence_it_reaches():
    # differences r - b, r in (0.95, 0.97, 0.99), b in (0.90, 0.93, 0.98), sorted:
    # -0.03 -0.01 0.01 0.02 [0.04] 0.05 0.06 0.07 0.09; median 0.04. P(U <= 0) = 1/20, so 95% needs
    # 2/20 <= 0.05 at k = 0: impossible; k = 1 gives the full range at 1 - 2/20 = 90%.
    found = g.hodges_lehmann_shift([0.95, 0.97, 0.99], [0.90, 0.93, 0.98])
    assert [found["estimate"], found["low"], found["high"]] == pytest.approx([0.04, -0.03, 0.09])
    assert (found["level"], found["attained"]) == (pytest.approx(0.9), False)
    c = g.compare_to_baseline(seeds([100] * 3, tails=[0.90, 0.93, 0.98]),
                              seeds([100] * 3, tails=[0.95, 0.97, 0.99]))
    assert c["final"]["effect_text"] == ("HL shift +0.040, 90% CI [-0.030, +0.090] "
                                         "(the most 3 vs 3 seeds allow)")
    assert c["final"]["ci_level"] == pytest.approx(0.9) and c["final"]["effect"] == pytest.approx(0.04)


def test_hodges_lehmann_5_vs_5_uses_the_tabled_order_statistics():
    # m = n = 5: P(U <= 2) = 4/252 <= 0.025 < P(U <= 3) = 7/252, so k = 3: [D_(3), D_(23)] at
    # 1 - 8/252 = 96.83%, the tabled 95% interval for 5 vs 5 (e.g. Hollander & Wolfe).
    # r - b = i - j - 0.5 for i, j = 1..5: D_(1) = -4.5, D_(2..3) = -3.5, D_(23..24) = 2.5; median -0.5
    found = g.hodges_lehmann_shift([1, 2, 3, 4, 5], [1.5, 2.5, 3.5, 4.5, 5.5])
    assert [found["estimate"], found["low"], found["high"]] == [-0.5, -3.5, 2.5]
    assert found["level"] == pytest.approx(1 - 8 / 252) and found["attained"]
    found = g.hodges_lehmann_shift([1, 2, 3, 4], [1.5, 2.5, 3.5, 4.5])  # 4 vs 4: k = 1, 1 - 2/70
    assert (found["low"], found["high"], found["level"]) == (-3.5, 2.5, pytest.approx(1 - 2 / 70))


def test_km_median_bootstrap_hand_worked():
    # Each arm of 2 seeds resamples to {a, a}, {a, b} or {b, b} with probabilities 1/4, 1/2, 1/4,
    # whose KM medians (S <= 0.5 at the first of two) are a, a, b. Run (30, 40): 30 w.p. 3/4, 40
    # w.p. 1/4; baseline (10, 20): 10 w.p. 3/4, 20 w.p. 1/4. So d = 10 w.p. 3/16, 20 w.p. 10/16,
    # 30 w.p. 3/16: both tails hold far more than 2.5%, and the interval is [10, 30].
    run, base = [(30, True), (40, True)], [(10, True), (20, True)]
    found = g.km_median_difference(run, base)
    assert (found["estimate"], found["low"], found["high"], found["level"]) == (20, 10, 30, 0.95)
    assert found == g.km_median_difference(run, base)  # seeded: the same numbers every time
    assert g.km_median_difference(run, base, seed=1)[("low")] == 10


def test_km_median_bootstrap_is_open_where_a_median_is_not_reached():
    # Run: one seed groks at 100, two are censored at 7500: S(100) = 2/3, median not reached. A
    # resample reaches it only with >= 2 copies of the first seed (7/27), so d = +inf in 20/27 of
    # resamples: the upper end is open. Baseline 200, 300, 400: resampled medians 200, 300, 400
    # w.p. 7/27, 13/27, 7/27, so the smallest d = 100 - 400 has probability 49/729 = 6.7% > 2.5%.
    run = seeds([100]) + seeds([7500, 7500], observed=False)
    c = g.compare_to_baseline(seeds([200, 300, 400]), run)
    assert (c["steps"]["estimate"], c["steps"]["ci"]) == (None, [-300, None])
    assert c["steps"]["effect_text"] == ("KM median diff undefined, 95% CI [-300, unbounded) "
                                         "(median not reached in the run)")
    assert g.format_effect("steps", c["steps"], compact=True) == "undefined [-300, ∞)"
    # a run that never groks against one that always does: every resample is +inf, no interval
    c = g.compare_to_baseline(seeds([200, 300, 400]), seeds([7500] * 3, observed=False))
    assert c["steps"]["ci"] is None
    assert c["steps"]["effect_text"] == "KM median diff undefined (median not reached in the run)"
    # neither reached in a resample: undefined sign, counted against both ends
    found = g.km_median_difference([(100, True), (7500, False)], [(100, True), (7500, False)])
    assert (found["low"], found["high"]) == (-math.inf, math.inf)


def test_compact_effect_flags_a_level_below_95():
    entry = {"estimate": 0.04, "ci": [-0.03, 0.09], "ci_level": 0.9, "ci_note": None}
    assert g.format_effect("final", entry, compact=True) == "+0.040 [-0.030, +0.090] 90%"
    entry["ci_level"] = 1 - 8 / 252  # 5 vs 5: a conservative 95% interval
    assert g.format_effect("final", entry, compact=True) == "+0.040 [-0.030, +0.090]"
    assert g.format_effect("final", entry) == "HL shift +0.040, 96.8% CI [-0.030, +0.090]"
    entry = {"estimate": -340, "ci": [None, 120], "ci_level": 0.95, "ci_note": None}
    assert g.format_effect("steps", entry, compact=True) == "-340 (-∞, +120]"
    assert g.format_effect("steps", entry) == "KM median diff -340, 95% CI (unbounded, +120]"


def test_p_formatting():
    assert [g.format_p(p) for p in (1.0, 0.4, 0.0286, 0.0496, 0.004, 0.0004)] == [
        "p = 1.00", "p = 0.40", "p = 0.03", "p = 0.050", "p = 0.004", "p < 0.001"]


def test_detectable_difference_normal_approximation():
    steps = [1000.0, 2000.0, 3000.0]  # sd = 1000
    z = 1.959964 + 0.841621  # z_{0.975} + z_{0.8}
    assert g.detectable_difference(steps, 2) == pytest.approx(z * 1000, rel=1e-5)
    assert g.detectable_difference(steps, 8) == pytest.approx(z * 500, rel=1e-5)
    assert g.seeds_needed(steps, z * 500 * 1.001) == 8
    assert g.seeds_needed(steps, z * 500 * 0.999) == 9


# ---------------------------------------------------------------------------------------------
# The committed baseline
# ---------------------------------------------------------------------------------------------

def test_run_0_units_are_classified_as_their_curves_show():
    """On the baseline made before issue 16's token tables (kept as a fixed real dataset; the
    current run_0 is regenerated whenever the code's arithmetic changes)."""
    results = np.load(PREVIOUS_RUN_0 / "all_results.npy", allow_pickle=True).item()
    for dataset in ("x_div_y", "x_minus_y", "x_plus_y", "permutation"):
        pairs = []
        for s in range(3):
            v, t = results[f"{dataset}_{s}_val_info"], results[f"{dataset}_{s}_train_info"]
            u = g.unit_statistics(t, v, 7500)
            pairs.append(g.grok_time(v, 7500))
            expected = (0, 0) if (dataset, s) == ("permutation", 0) else (1, 1)
            assert (u["grokked"], u["sustained"]) == expected, (dataset, s)
            assert pairs[-1][0] == results[f"{dataset}_{s}_final_info"]["step_val_acc_99"]
        if dataset != "permutation":
            assert g.grok_steps_summary(pairs)["k"] == 3
    assert pairs == [(7500, False), (7210, True), (7230, True)]
    assert g.grok_steps_summary(pairs)["text"] == "2/3 grokked, KM median 7230"
    # x_minus_y seed 1 ends on a spike (final val acc 0.814) yet its tail accuracy stays high
    u = g.unit_statistics(results["x_minus_y_1_train_info"], results["x_minus_y_1_val_info"], 7500)
    assert results["x_minus_y_1_final_info"]["final_val_acc"] < 0.82
    assert u["final_val_acc_tail"] > 0.97 and u["sustained"] == 1
