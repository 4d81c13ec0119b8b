"""grokstats.py as a specification: per-unit statistics on synthetic curves with known answers,
censoring-aware steps to grok, the three seed-honest tests against hand-worked values, and the
committed baseline run_0. No torch: these take well under a second."""

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


def test_text_joins_the_three_verdicts():
    base = seeds([2000, 3000, 4000], tails=[0.98, 0.99, 0.97])
    run = seeds([2500, 3500, 3900], tails=[0.99, 0.96, 0.985])
    c = g.compare_to_baseline(base, run, base_name="run_3")
    assert c["text"] == (f"vs run_3: {c['steps']['verdict']}; {c['grokked']['verdict']}; "
                         f"{c['final']['verdict']}")
    assert "no detectable difference in steps to grok with 3 vs 3 seeds" in c["text"]


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
