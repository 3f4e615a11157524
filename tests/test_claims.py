"""Claim check (nnexp.report.claims): verdicts and intervals on synthetic run frames, against scipy.stats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nnexp.report.claims import Claim, ClaimError, claims_of, evaluate, measure, parse_claims, verdict


def _runs(values_a, values_b=(), metric="test_accuracy"):
    rows = [dict(run_id=f"a{i}", init="he_normal", **{metric: v}) for i, v in enumerate(values_a)]
    rows += [dict(run_id=f"b{i}", init="lecun_normal", **{metric: v}) for i, v in enumerate(values_b)]
    return pd.DataFrame(rows)


def _claim(**kw):
    base = dict(claim="c", metric="test_accuracy", compare=">", threshold=0.5, where={"init": "he_normal"})
    base.update(kw)
    return parse_claims([base])[0]


def test_mean_interval_is_students_t_and_decides_the_verdict():
    a = np.array([0.9, 0.8, 0.85, 0.95])
    row = evaluate([_claim()], _runs(a)).iloc[0]
    lo, hi = stats.t.interval(0.95, a.size - 1, loc=a.mean(), scale=stats.sem(a))
    assert row["low"] == pytest.approx(lo) and row["high"] == pytest.approx(hi)
    assert row["verdict"] == "reproduced" and row["n"] == "4"
    assert evaluate([_claim(threshold=0.99)], _runs(a)).iloc[0]["verdict"] == "not reproduced"
    assert evaluate([_claim(threshold=0.8)], _runs(a)).iloc[0]["verdict"] == "inconclusive"  # 0.8 inside the interval


def test_a_fraction_gets_wilsons_interval():
    a = np.r_[np.ones(300), np.zeros(700)]
    row = evaluate([_claim(compare="between", threshold=[0.25, 0.35])], _runs(a)).iloc[0]
    ci = stats.binomtest(300, 1000).proportion_ci(0.95, method="wilson")
    assert (row["estimate"], row["low"], row["high"]) == pytest.approx((0.3, ci.low, ci.high))
    assert row["verdict"] == "reproduced"
    assert evaluate([_claim(compare="between", threshold=[0.5, 0.6])], _runs(a)).iloc[0]["verdict"] == "not reproduced"


def test_two_groups_give_welchs_interval_of_the_difference():
    a, b = np.array([0.9, 0.7, 0.85, 0.95, 0.8]), np.array([0.1, 0.3, 0.12])
    claim = _claim(than={"init": "lecun_normal"}, threshold=0.0)
    row = evaluate([claim], _runs(a, b)).iloc[0]
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (row["estimate"], row["low"], row["high"]) == pytest.approx((a.mean() - b.mean(), ci.low, ci.high))
    assert row["n"] == "5 vs 3" and row["verdict"] == "reproduced"


def test_one_run_is_inconclusive_and_no_run_too():
    assert evaluate([_claim()], _runs([0.9])).iloc[0]["verdict"] == "inconclusive"
    assert evaluate([_claim(where={"init": "orthogonal"})], _runs([0.9, 0.8])).iloc[0]["verdict"] == "inconclusive"


def test_history_claims_at_an_epoch_and_first_epoch_below_with_censoring():
    runs = _runs([0, 0], [0, 0])
    hist = pd.DataFrame([(r, "train_loss", s, v) for r, curve in
                         {"a0": [2.3, 2.1, 1.0], "a1": [2.3, 2.25, 2.0], "b0": [2.3, 2.3, 2.3], "b1": [2.3, 2.3, 2.3]}.items()
                         for s, v in zip((1, 2, 3), curve)], columns=["run_id", "metric", "step", "value"])
    first = measure(_claim(metric="train_loss", first_below=2.2), runs, hist)
    assert list(first) == [2, 3, 4, 4]  # b0, b1 never below: censored at their last epoch + 1
    at2 = measure(_claim(metric="train_loss", epoch=2), runs, hist)
    assert list(at2) == [2.1, 2.25, 2.3, 2.3]
    ratio = measure(_claim(metric="`train_loss` / 2", epoch=3), runs, hist)
    assert list(ratio) == [0.5, 1.0, 1.15, 1.15]


def test_claims_come_back_from_the_runs_parameter_once():
    raw = [dict(claim="c", metric="m", compare="<", threshold=1)]
    runs = pd.DataFrame({"claims": [str(raw), str(raw)]})
    assert claims_of(runs) == [Claim("c", "m", "<", 1.0)]


@pytest.mark.parametrize("raw, words", [
    ({"claim": "c"}, "claims must be a list"),
    ([{"claim": "c", "metric": "m", "compare": ">", "threshold": 1, "typo": 1}], "claims[0].typo is not a claim key"),
    ([{"claim": "c", "metric": "m", "compare": ">="}], "claims[0].threshold is missing"),
    ([{"claim": "c", "metric": "m", "compare": ">=", "threshold": 1}], "claims[0].compare='>=' is not known"),
    ([{"claim": "c", "metric": "m", "compare": "between", "threshold": 1}], "must be [low, high]"),
    ([{"claim": "c", "metric": "m", "compare": ">", "threshold": 1, "epoch": 0, "first_below": 2}], "not both"),
])
def test_mistakes_are_one_line(raw, words):
    with pytest.raises(ClaimError) as e:
        parse_claims(raw)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_verdict_table():
    c = Claim("c", "m", "between", (0.0, 1.0))
    assert [verdict(c, lo, hi) for lo, hi in [(0.2, 0.8), (-0.5, 0.5), (1.1, 2.0), (np.nan, np.nan)]] == [
        "reproduced", "inconclusive", "not reproduced", "inconclusive"]


def test_a_mistaken_claim_is_reported_in_its_section_not_a_crash(tmp_path):
    from nnexp.report.claims import sections

    runs = pd.DataFrame({"run_id": ["r"], "outcome": ["finished"],
                         "claims": [str([{"claim": "c", "metric": "m", "compare": "=", "threshold": 1}])]})
    ((title, text),) = sections(runs, "sqlite:///unused.db", tmp_path)
    assert title == "Claim check" and "claims[0].compare=&#x27;=&#x27; is not known" in text


def _grid_runs():
    """Two activations over a learning-rate grid, 3 seeds per cell: gelu's losses are 1, 2 and 3 at the three
    rates (plus seed noise of +-0.1), relu's 1, 5 and 9."""
    rows = []
    for act, centres in (("gelu", (1.0, 2.0, 3.0)), ("relu", (1.0, 5.0, 9.0))):
        for lr, centre in zip((1e-3, 1e-2, 1e-1), centres):
            for k, noise in enumerate((-0.1, 0.0, 0.1)):
                rows.append(dict(run_id=f"{act}{lr}{k}", activation=act, **{"optimizer.lr": lr},
                                 train_loss=centre + noise))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("aggregate, gelu, relu", [("min", 1.0, 1.0), ("max", 3.0, 9.0), ("median", 2.0, 5.0),
                                                   ("mean", 2.0, 5.0), ("spread", 2.0, 8.0)])
def test_a_claim_across_a_grid_aggregates_the_per_level_medians(aggregate, gelu, relu):
    runs = _grid_runs()
    one = dict(claim="c", metric="train_loss", compare="<", threshold=0, over="optimizer.lr", aggregate=aggregate,
               where={"activation": "gelu"})
    row = evaluate(parse_claims([one]), runs).iloc[0]
    assert row["estimate"] == pytest.approx(gelu) and row["n"] == "9 runs at 3 optimizer.lr"
    two = evaluate(parse_claims([{**one, "than": {"activation": "relu"}}]), runs).iloc[0]
    assert two["estimate"] == pytest.approx(gelu - relu)
    assert two["n"] == "9 runs at 3 optimizer.lr vs 9 runs at 3 optimizer.lr"


def test_a_grid_claims_bootstrap_interval_brackets_the_estimate_and_decides():
    runs = _grid_runs()
    claim = dict(claim="c", metric="train_loss", compare="<", threshold=0, over="optimizer.lr", aggregate="spread",
                 where={"activation": "gelu"}, than={"activation": "relu"})
    row = evaluate(parse_claims([claim]), runs).iloc[0]
    # every resample moves each cell's median by at most 0.1: the spread's difference stays within -6 +- 0.4
    assert row["estimate"] == pytest.approx(-6.0) and -6.4 <= row["low"] <= -6.0 <= row["high"] <= -5.6
    assert row["verdict"] == "reproduced"
    # the best rate: 1 against 1, up to seed noise: the interval straddles 0
    best = evaluate(parse_claims([{**claim, "aggregate": "min"}]), runs).iloc[0]
    assert best["low"] < 0 < best["high"] and best["verdict"] == "inconclusive"
    # reproducible: a fixed generator
    assert evaluate(parse_claims([claim]), runs).iloc[0]["low"] == row["low"]


def test_a_grid_cell_with_one_run_gives_no_interval():
    runs = _grid_runs().drop_duplicates(subset=["activation", "optimizer.lr"])
    claim = dict(claim="c", metric="train_loss", compare="<", threshold=10, over="optimizer.lr", aggregate="max",
                 where={"activation": "gelu"})
    row = evaluate(parse_claims([claim]), runs).iloc[0]
    assert row["estimate"] == pytest.approx(2.9) and row["verdict"] == "inconclusive"


@pytest.mark.parametrize("extra, words", [
    ({"over": "optimizer.lr"}, "give over and aggregate together"),
    ({"aggregate": "min"}, "give over and aggregate together"),
    ({"over": "optimizer.lr", "aggregate": "best"}, "claims[0].aggregate='best' is not known; choose one of: min"),
    ({"over": "optimizer.lr", "aggregate": "min", "per_replica": True}, "cannot be combined"),
])
def test_grid_keys_are_checked_in_one_line(extra, words):
    with pytest.raises(ClaimError, match=re_escape(words)):
        parse_claims([dict(claim="c", metric="m", compare="<", threshold=1, **extra)])


def re_escape(text):
    import re

    return re.escape(text)


def test_a_paired_claim_takes_the_per_seed_differences():
    # the two groups vary a lot from seed to seed, but the difference is 1 +- 0.01 for every seed
    base = np.array([0.5, 3.0, 10.0, 1.5])
    shift = np.array([1.0, 1.01, 0.99, 1.0])
    runs = pd.DataFrame([dict(run_id=f"a{s}", init="he_normal", seed=s, m=base[s] + shift[s]) for s in range(4)]
                        + [dict(run_id=f"b{s}", init="lecun_normal", seed=s, m=base[s]) for s in range(4)]
                        + [dict(run_id="b9", init="lecun_normal", seed=9, m=100.0)])  # no partner: left out
    claim = dict(claim="c", metric="m", compare=">", threshold=0.9, where={"init": "he_normal"},
                 than={"init": "lecun_normal"})
    paired = evaluate(parse_claims([{**claim, "paired": True}]), runs).iloc[0]
    lo, hi = stats.t.interval(0.95, 3, loc=shift.mean(), scale=stats.sem(shift))
    assert (paired["estimate"], paired["low"], paired["high"]) == pytest.approx((shift.mean(), lo, hi))
    assert paired["n"] == "4 seeds, paired" and paired["verdict"] == "reproduced"
    assert evaluate(parse_claims([claim]), runs).iloc[0]["verdict"] == "inconclusive"  # Welch: the seeds' spread
    with pytest.raises(ClaimError, match=r"claims\[0\]\.paired needs than"):
        parse_claims([dict(claim="c", metric="m", compare=">", threshold=0, paired=True)])
