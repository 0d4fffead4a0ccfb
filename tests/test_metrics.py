"""Tests for dermo.metrics (hand-computed values on small arrays)."""

import ast
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(_ROOT))

from dermo import metrics as M  # noqa: E402


# ---------------------------------------------------------------- AUROC


def test_auroc_six_elements_hand_computed():
    y = [0, 0, 1, 1, 0, 1]
    p = [0.1, 0.4, 0.35, 0.8, 0.7, 0.9]
    # positives: 0.35, 0.8, 0.9; negatives: 0.1, 0.4, 0.7 -> 9 pairs
    # 0.35 beats 0.1 only            -> 1
    # 0.8 beats 0.1, 0.4, 0.7        -> 3
    # 0.9 beats 0.1, 0.4, 0.7        -> 3
    # AUROC = 7 / 9
    assert M.auroc(y, p) == pytest.approx(7 / 9)


def test_auroc_ties_count_half():
    y = [0, 1, 0, 1]
    p = [0.5, 0.5, 0.2, 0.9]
    # pos 0.5: tie with neg 0.5 (0.5) + beats 0.2 (1) = 1.5
    # pos 0.9: beats both = 2          -> 3.5 / 4 = 0.875
    assert M.auroc(y, p) == pytest.approx(0.875)


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    p = np.round(rng.random(400) * 0.5 + 0.3 * y, 1)  # many ties
    assert M.auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auroc_one_class_raises():
    with pytest.raises(ValueError, match="one class"):
        M.auroc([1, 1, 1], [0.1, 0.2, 0.3])


# ---------------------------------------------------------------- confusion


def test_confusion_at_threshold_hand_computed():
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    p = [0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.5, 0.5]
    # rule p >= 0.5:
    # (1,.9) TP  (1,.6) TP  (1,.3) FN  (0,.7) FP  (0,.2) TN  (0,.1) TN  (0,.5) FP  (1,.5) TP
    # TP=3 FP=2 TN=2 FN=1
    # sens 3/4, spec 2/4, precision 3/5, f1 = 2*3/(2*3+2+1) = 6/9, acc 5/8
    c = M.confusion_at(y, p, 0.5)
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (3, 2, 2, 1)
    assert c["sensitivity"] == pytest.approx(0.75)
    assert c["specificity"] == pytest.approx(0.5)
    assert c["precision"] == pytest.approx(0.6)
    assert c["f1"] == pytest.approx(2 / 3)
    assert c["accuracy"] == pytest.approx(5 / 8)
    assert all(type(c[k]) is int for k in ("tp", "fp", "tn", "fn"))


def test_confusion_zero_division_conventions():
    # no malignant cases and nothing predicted malignant at t=0.9
    c = M.confusion_at([0, 0, 0], [0.1, 0.2, 0.3], 0.9)
    assert math.isnan(c["sensitivity"])  # 0/0: no positives
    assert c["specificity"] == 1.0
    assert c["precision"] == 0.0  # nothing predicted positive -> 0 by convention
    assert c["f1"] == 0.0
    assert c["accuracy"] == 1.0


# ---------------------------------------------------------------- thresholds and bands

POS = np.array([0.2, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])  # 10 malignant
NEG = np.arange(1, 21) / 100  # 20 benign: 0.01 .. 0.20


def _yp(pos, neg):
    return np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)], np.r_[pos, neg]


def test_threshold_for_sensitivity_is_highest_valid():
    y, p = _yp(POS, NEG)
    # need ceil(0.9*10) = 9 positives with p >= t -> 9th largest positive = 0.3
    t = M.threshold_for_sensitivity(y, p, 0.90)
    assert t == 0.3
    assert M.confusion_at(y, p, t)["sensitivity"] == pytest.approx(0.9)
    # any higher threshold loses the 0.3 case: 8/10
    assert M.confusion_at(y, p, np.nextafter(t, 1))["sensitivity"] == pytest.approx(0.8)


def test_threshold_for_sensitivity_float_rounding():
    # 0.97*100 == 97.00000000000001 in floating point; must still need 97 (not 98) positives
    pos = np.arange(100) / 100  # 0.00 .. 0.99
    y, p = _yp(pos, [0.5])
    t = M.threshold_for_sensitivity(y, p, 0.97)
    assert t == 0.03  # 97th largest of 0.99..0.00
    assert M.confusion_at(y, p, t)["sensitivity"] == pytest.approx(0.97)


def test_threshold_for_specificity_is_lowest_valid():
    y, p = _yp(POS, NEG)
    # need ceil(0.95*20) = 19 negatives with p < t -> t > 19th smallest = 0.19
    t = M.threshold_for_specificity(y, p, 0.95)
    assert t > 0.19 and t == np.nextafter(0.19, np.inf)
    assert M.confusion_at(y, p, t)["specificity"] == pytest.approx(0.95)
    # t = 0.19 itself flags the 0.19 benign case: 18/20
    assert M.confusion_at(y, p, 0.19)["specificity"] == pytest.approx(0.90)


def test_threshold_rules_need_both_classes_and_valid_rates():
    with pytest.raises(ValueError):
        M.threshold_for_sensitivity([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError):
        M.threshold_for_specificity([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError):
        M.threshold_for_sensitivity([0, 1], [0.1, 0.2], 1.5)


def test_band_edges_and_table_hand_computed():
    pos = np.array([0.25, 0.4, 0.45, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 0.95])
    neg = np.arange(1, 21) / 40  # 0.025 .. 0.5
    y, p = _yp(pos, neg)
    low, high = M.band_edges(y, p)
    # low: ceil(0.97*10) = 10 positives kept -> lowest positive 0.25
    # high: ceil(0.95*20) = 19 negatives below -> t > 19/40 = 0.475
    assert low == 0.25
    assert high == np.nextafter(0.475, np.inf)
    tab = M.band_table(y, p, low, high)
    # low  (p < 0.25): negatives 0.025..0.225 -> 9 cases, 0 malignant
    # high (p > 0.475): negative 0.5 + positives 0.55..0.95 (7) -> 8 cases, 7 malignant
    # medium: rest -> 13 cases (10 benign 0.25..0.475, malignant 0.25, 0.4, 0.45)
    assert (tab["low"]["n"], tab["low"]["n_malignant"]) == (9, 0)
    assert (tab["medium"]["n"], tab["medium"]["n_malignant"]) == (13, 3)
    assert (tab["high"]["n"], tab["high"]["n_malignant"]) == (8, 7)
    assert tab["high"]["malignant_rate"] == pytest.approx(7 / 8)
    assert tab["medium"]["share_of_malignant"] == pytest.approx(3 / 10)
    assert tab["low"]["malignant_rate"] == 0.0
    json.dumps(tab, allow_nan=False)


def test_band_edges_conflict_collapses_low_edge_to_high_edge():
    y, p = _yp(POS, NEG)
    # raw low edge (97% sens) = 0.2 (all 10 positives) > raw high edge nextafter(0.19)
    low, high = M.band_edges(y, p, low_sensitivity=0.97, high_specificity=0.95)
    assert low == high == np.nextafter(0.19, np.inf)
    # both guarantees still hold
    assert M.confusion_at(y, p, low)["sensitivity"] >= 0.97
    assert M.confusion_at(y, p, high)["specificity"] >= 0.95


def test_assign_band_boundaries_and_vectorised():
    assert M.assign_band(0.1, 0.2, 0.6) == "low"
    assert M.assign_band(0.2, 0.2, 0.6) == "medium"  # p == low_edge is not Low
    assert M.assign_band(0.59, 0.2, 0.6) == "medium"
    assert M.assign_band(0.6, 0.2, 0.6) == "high"  # p == high_edge is High
    ps = [0.1, 0.2, 0.59, 0.6, 1.0]
    assert M.assign_bands(ps, 0.2, 0.6).tolist() == [M.assign_band(x, 0.2, 0.6) for x in ps]
    assert M.assign_band(0.3, 0.3, 0.3) == "high"  # empty medium band
    with pytest.raises(ValueError):
        M.assign_band(0.5, 0.7, 0.6)


def test_assign_band_refuses_nan():
    # NaN compares False with both edges: without the check it would read as "medium"
    with pytest.raises(ValueError, match="NaN"):
        M.assign_band(float("nan"), 0.1, 0.6)
    with pytest.raises(ValueError):
        M.assign_bands([0.2, float("nan")], 0.1, 0.6)


def test_threshold_for_sensitivity_tiny_target_keeps_one_case():
    # ceil(1e-12 * 3 - eps) == 0: at least one malignant case is still required -> the highest malignant score
    assert M.threshold_for_sensitivity([1, 1, 1, 0], [0.2, 0.9, 0.5, 0.1], 1e-12) == 0.9


def test_band_edges_defaults_are_97_percent_sensitivity_and_95_percent_specificity():
    pos = (np.arange(100) + 0.5) / 100  # 0.005 .. 0.995
    neg = np.arange(100) / 200  # 0.0 .. 0.495
    y, p = _yp(pos, neg)
    low, high = M.band_edges(y, p)
    assert low == pos[3]  # 97 of 100 malignant at or above: the 97th largest (96% would give pos[4])
    assert high == np.nextafter(neg[94], np.inf)  # 95 of 100 benign below
    assert M.confusion_at(y, p, low)["sensitivity"] == pytest.approx(0.97)
    assert M.confusion_at(y, p, high)["specificity"] == pytest.approx(0.95)


# ---------------------------------------------------------------- calibration


def test_ece_hand_computed():
    y = [0, 1, 1, 0]
    p = [0.1, 0.2, 0.8, 0.9]
    # 2 bins: [0, .5): p .1,.2 (mean .15), y mean .5 -> |.5-.15| * 2/4 = .175
    #         [.5, 1]: p .8,.9 (mean .85), y mean .5 -> |.5-.85| * 2/4 = .175
    # ECE = 0.35
    assert M.expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.35)
    # perfectly calibrated bin: p = .5 everywhere, half malignant -> 0
    assert M.expected_calibration_error([0, 1, 0, 1], [0.5] * 4) == pytest.approx(0.0)
    # p = 1.0 falls in the last bin
    assert M.expected_calibration_error([1], [1.0]) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        M.expected_calibration_error([0, 1], [0.2, 1.2])
    # slightly negative scores are not probabilities either (int() truncation would put them in bin 0)
    with pytest.raises(ValueError):
        M.expected_calibration_error([0, 1], [-0.01, 0.5])
    with pytest.raises(ValueError):
        M.reliability_table([0, 1], [-0.01, 0.5])


def test_reliability_table_keeps_p_equal_one_in_the_last_bin():
    r = M.reliability_table([1], [1.0], 15)
    assert all(len(r[k]) == 15 for k in ("bin_lower", "bin_upper", "count", "mean_p", "frac_malignant"))
    assert r["count"] == [0] * 14 + [1]
    assert r["mean_p"][-1] == 1.0 and r["frac_malignant"][-1] == 1.0 and r["mean_p"][0] is None
    assert r["bin_lower"][-1] == pytest.approx(14 / 15) and r["bin_upper"][-1] == 1.0


def test_reliability_table_hand_computed():
    r = M.reliability_table([0, 1, 1, 0, 1], [0.1, 0.2, 0.8, 0.9, 0.5], n_bins=2)
    assert r["bin_lower"] == [0.0, 0.5] and r["bin_upper"] == [0.5, 1.0]
    assert r["count"] == [2, 3]  # 0.5 opens the upper bin
    assert r["mean_p"] == pytest.approx([0.15, 2.2 / 3]) and r["frac_malignant"] == pytest.approx([0.5, 2 / 3])


def test_fit_temperature_recovers_known_T():
    rng = np.random.default_rng(0)
    n = 20000
    z = rng.normal(0.0, 3.0, size=(n, 2))
    p_true = 1 / (1 + np.exp(-(z[:, 1] - z[:, 0]) / 2.0))  # softmax(z / 2)[:, 1]
    y = (rng.random(n) < p_true).astype(int)
    T = M.fit_temperature(z, y)
    assert T == pytest.approx(2.0, rel=0.08)
    # calibrated probabilities have lower NLL than raw ones
    def nll(q):
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
    assert nll(M.apply_temperature(z, T)) < nll(M.apply_temperature(z, 1.0))


def test_apply_temperature_hand_computed():
    z = np.array([[0.0, math.log(3.0)], [1.0, 1.0]])
    # softmax([0, ln 3]) = [1/4, 3/4]; equal logits -> 1/2
    assert M.apply_temperature(z, 1.0) == pytest.approx([0.75, 0.5])
    # T = 2: sigmoid(ln3 / 2) = sqrt3 / (1 + sqrt3)
    assert M.apply_temperature(z, 2.0)[0] == pytest.approx(math.sqrt(3) / (1 + math.sqrt(3)))
    with pytest.raises(ValueError):
        M.apply_temperature(z, 0.0)
    with pytest.raises(ValueError):
        M.apply_temperature(np.zeros((2, 3)), 1.0)


# ---------------------------------------------------------------- bootstrap


def _toy(n=300, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    return y, p


def test_bootstrap_counts_keep_lesions_together():
    groups = np.array(["a", "a", "a", "b", "c", "c", "d", "e", "e", "e", "e"])
    counts = M.bootstrap_counts(len(groups), groups=groups, n_boot=300, seed=0)
    assert counts.shape == (300, len(groups))
    for g in np.unique(groups):
        block = counts[:, groups == g]
        assert (block == block[:, :1]).all()  # every image of a lesion has the same multiplicity
    # 5 lesions drawn per resample
    first = [np.flatnonzero(groups == g)[0] for g in np.unique(groups)]
    assert (counts[:, first].sum(axis=1) == 5).all()
    # ungrouped: n images drawn per resample, images of a lesion vary independently
    free = M.bootstrap_counts(len(groups), n_boot=300, seed=0)
    assert (free.sum(axis=1) == len(groups)).all()
    assert not (free[:, 0] == free[:, 1]).all()


def test_bootstrap_singleton_groups_equal_ungrouped():
    y, p = _toy()
    a = M.bootstrap_ci(M.auroc, y, p, n_boot=200, seed=5)
    b = M.bootstrap_ci(M.auroc, y, p, groups=np.arange(len(y)), n_boot=200, seed=5)
    assert a == b


def test_bootstrap_grouped_ci_wider_for_duplicated_lesions():
    # 20 lesions x 15 identical images: the grouped bootstrap sees 20 independent
    # units, the ungrouped one 300 -> grouped CI is much wider
    rng = np.random.default_rng(2)
    y_l = np.r_[np.ones(10, int), np.zeros(10, int)]
    p_l = np.clip(rng.normal(0.4 + 0.2 * y_l, 0.2), 0, 1)
    y, p, g = np.repeat(y_l, 15), np.repeat(p_l, 15), np.repeat(np.arange(20), 15)
    metric = M.threshold_metric("accuracy", 0.5)
    lo_u, hi_u = M.bootstrap_ci(metric, y, p, n_boot=500, seed=0)
    lo_g, hi_g = M.bootstrap_ci(metric, y, p, groups=g, n_boot=500, seed=0)
    assert hi_g - lo_g > 2 * (hi_u - lo_u)


def test_bootstrap_fast_path_equals_generic_loop():
    y, p = _toy(n=120)
    g = np.arange(120) // 3
    for fast in (M.auroc, M.threshold_metric("sensitivity", 0.5), M.threshold_metric("f1", 0.4)):
        slow = lambda yy, pp, f=fast: f(yy, pp)  # no vectorised kernel -> per-resample loop
        a = M.bootstrap_ci(fast, y, p, groups=g, n_boot=150, seed=7)
        b = M.bootstrap_ci(slow, y, p, groups=g, n_boot=150, seed=7)
        assert a == pytest.approx(b, abs=1e-12)


def test_bootstrap_skips_undefined_resamples():
    y = [0, 0, 0, 0, 0, 1, 1]
    p = [0.1, 0.2, 0.3, 0.4, 0.6, 0.5, 0.9]
    lo, hi = M.bootstrap_ci(M.auroc, y, p, n_boot=300, seed=0)  # some resamples lack a positive
    assert 0.0 <= lo <= hi <= 1.0

    def always_undefined(yy, pp):
        raise ValueError("undefined")

    lo, hi = M.bootstrap_ci(always_undefined, y, p, n_boot=20)
    assert math.isnan(lo) and math.isnan(hi)


def test_bootstrap_scores_resamples_in_chunks_not_one_by_one(monkeypatch):
    """The bootstrap's speed comes from scoring a chunk of resamples in one array call (its timing is not a test):
    1000 resamples of AUROC and of the threshold metrics must be a few kernel calls, never one per resample."""
    calls = []
    real = M._weighted_auroc

    def counting(counts, y, p):
        calls.append(counts.shape[0])
        return real(counts, y, p)

    monkeypatch.setattr(M.auroc, "_weighted", counting)
    y, p = _toy(n=1500)
    g = np.arange(1500) // 2
    M.bootstrap_ci(M.auroc, y, p, groups=g, n_boot=1000)
    assert sum(calls) == 1000 and len(calls) <= 1000 // M._CHUNK + 1, calls


# ---------------------------------------------------------------- reports


def test_summarize_structure_and_consistency():
    y, p = _toy()
    g = np.arange(len(y)) // 2
    s = M.summarize(y, p, 0.4, groups=g, n_boot=200, seed=3)
    json.dumps(s, allow_nan=False)
    for key in ("n", "n_malignant", "auroc", "auroc_ci", "threshold"):
        assert key in s
    for block in (s, s["at_0.5"]):
        for m in M.CONFUSION_METRICS:
            assert isinstance(block[m], float)
            lo, hi = block[m + "_ci"]
            assert 0.0 <= lo <= hi <= 1.0
    assert s["n"] == len(y) and s["n_malignant"] == int(np.sum(y)) and s["n_groups"] == len(y) // 2
    assert s["at_0.5"]["threshold"] == 0.5
    assert s["auroc"] == pytest.approx(M.auroc(y, p))
    c = M.confusion_at(y, p, 0.4)
    assert s["sensitivity"] == pytest.approx(c["sensitivity"]) and s["tp"] == c["tp"]
    # the shared resamples are the ones bootstrap_ci uses with the same seed
    assert s["auroc_ci"] == list(M.bootstrap_ci(M.auroc, y, p, groups=g, n_boot=200, seed=3))
    sens = M.threshold_metric("sensitivity", 0.5)
    assert s["at_0.5"]["sensitivity_ci"] == list(M.bootstrap_ci(sens, y, p, groups=g, n_boot=200, seed=3))
    assert s["threshold"] == 0.4 and s["n_boot"] == 200 and s["ci_level"] == pytest.approx(0.95)
    # alpha reaches every interval and the reported level
    s90 = M.summarize(y, p, 0.4, groups=g, n_boot=200, seed=3, alpha=0.1)
    assert s90["ci_level"] == pytest.approx(0.9)
    assert s90["auroc_ci"] == list(M.bootstrap_ci(M.auroc, y, p, groups=g, n_boot=200, seed=3, alpha=0.1))
    spec = M.threshold_metric("specificity", 0.4)
    assert s90["specificity_ci"] == list(M.bootstrap_ci(spec, y, p, groups=g, n_boot=200, seed=3, alpha=0.1))
    assert s90["auroc_ci"][1] - s90["auroc_ci"][0] < s["auroc_ci"][1] - s["auroc_ci"][0]
    # n_boot = 0: no CIs
    s0 = M.summarize(y, p, 0.4, n_boot=0)
    assert s0["auroc_ci"] is None and s0["at_0.5"]["f1_ci"] is None


def test_summarize_one_class_gives_none():
    s = M.summarize([0, 0, 0], [0.1, 0.6, 0.3], 0.5, n_boot=20)
    json.dumps(s, allow_nan=False)
    assert s["auroc"] is None and s["auroc_ci"] is None and s["sensitivity"] is None
    assert s["specificity"] == pytest.approx(2 / 3)


def test_subgroup_metrics_hand_computed():
    y = [1, 0, 1, 0, 1, 1]
    p = [0.9, 0.2, 0.4, 0.6, 0.8, 0.3]
    sex = ["f", "f", "f", "m", "m", None]
    # f: y=[1,0,1] p=[.9,.2,.4]: AUROC 1 (both positives above .2); sens@.5 = 1/2; spec = 1
    # m: y=[0,1] p=[.6,.8]: AUROC 1; sens = 1; spec = 0
    # unknown: y=[1] -> AUROC None, sens@.5 = 0 (0.3 < .5), spec None
    out = M.subgroup_metrics(y, p, 0.5, {"sex": sex})
    f, m, u = out["sex"]["f"], out["sex"]["m"], out["sex"]["unknown"]
    assert (f["n"], f["n_malignant"], f["auroc"], f["sensitivity"]) == (3, 2, 1.0, 0.5)
    assert (m["n"], m["n_malignant"], m["auroc"], m["sensitivity"], m["specificity"]) == (2, 1, 1.0, 1.0, 0.0)
    assert u["auroc"] is None and u["sensitivity"] == 0.0 and u["specificity"] is None
    json.dumps(out, allow_nan=False)


def test_age_band():
    assert [M.age_band(a) for a in (0, 29.9, 30, 44, 45, 59, 60, 74, 75, 90)] == [
        "<30", "<30", "30-44", "30-44", "45-59", "45-59", "60-74", "60-74", "75+", "75+",
    ]
    assert [M.age_band(a) for a in (None, float("nan"), -5, "abc")] == ["unknown"] * 4
    assert M.age_band(np.array([25.0, np.nan, 80])).tolist() == ["<30", "unknown", "75+"]


def test_selection_score():
    # 0.6*0.9 + 0.2*0.8 + 0.2*0.7 = 0.54 + 0.16 + 0.14 = 0.84
    assert M.selection_score(0.9, 0.8, 0.7) == pytest.approx(0.84)
    # ranks sensitivity first: +0.1 sensitivity outweighs +0.2 specificity
    assert M.selection_score(0.9, 0.8, 0.6) > M.selection_score(0.8, 0.8, 0.8)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "y, match",
    [([0, 1, 2], r"\[2\]"), ([0, -1, 1], r"\[-1\]"), ([0, 0.5, 1], r"0\.5"), ([0, np.nan, 1], "nan")],
)
def test_bad_labels_raise_naming_values(y, match):
    with pytest.raises(ValueError, match=match):
        M.auroc(y, [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match=match):
        M.confusion_at(y, [0.1, 0.5, 0.9], 0.5)


def test_other_input_validation():
    with pytest.raises(ValueError, match="equal lengths"):
        M.auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        M.confusion_at([0, 1], [0.1, np.nan], 0.5)
    with pytest.raises(ValueError):
        M.auroc(["0", "1"], [0.1, 0.2])
    # booleans and 0.0/1.0 floats are fine
    assert M.auroc(np.array([False, True]), [0.1, 0.9]) == 1.0
    assert M.auroc([0.0, 1.0], [0.1, 0.9]) == 1.0


def test_module_has_no_top_level_torch_import():
    tree = ast.parse(Path(M.__file__).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert "torch" not in names


def test_temperature_bias_recovers_known_values():
    rng = np.random.default_rng(3)
    d_true = rng.normal(0, 2, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-(d_true / 2.0 - 0.7)))).astype(int)
    T, b = M.fit_temperature_bias(np.stack([np.zeros(5000), d_true], 1), y)
    assert abs(T - 2.0) < 0.2 and abs(b + 0.7) < 0.1
    p = M.apply_temperature(np.stack([np.zeros(3), np.array([0.0, 2.0, -2.0])], 1), 2.0, -0.7)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(np.array([0.0, 1.0, -1.0]) - 0.7))))


def test_paired_auroc_difference_is_paired_and_matches_per_resample_aurocs():
    y, p = _toy(n=200)
    rng = np.random.default_rng(3)
    g = np.arange(200) // 2
    noisy = np.clip(p + rng.normal(0, 0.05, size=p.shape), 0, 1)  # a slightly worse copy of p
    d = M.paired_auroc_difference(y, p, noisy, groups=g, n_boot=400, seed=1)
    assert d["difference"] == pytest.approx(M.auroc(y, p) - M.auroc(y, noisy))
    # the same resamples score both models: the difference's CI is the quantiles of per-resample differences
    counts = M.bootstrap_counts(len(y), groups=g, n_boot=400, seed=1)
    diffs = M._weighted_auroc(counts, y, p) - M._weighted_auroc(counts, y, noisy)
    assert d["ci"] == pytest.approx(list(np.quantile(diffs, [0.025, 0.975])))
    assert d["fraction_a_better"] == pytest.approx((diffs > 0).mean())
    # pairing: the interval of a difference between near-identical models is far narrower than either AUROC's own
    lo, hi = M.bootstrap_ci(M.auroc, y, p, groups=g, n_boot=400, seed=1)
    assert d["ci"][1] - d["ci"][0] < 0.5 * (hi - lo)
    # a model against itself: exactly zero everywhere, and never "better"
    same = M.paired_auroc_difference(y, p, p, groups=g, n_boot=100)
    assert same["difference"] == 0 and same["ci"] == [0.0, 0.0] and same["fraction_a_better"] == 0.0
    with pytest.raises(ValueError, match="equal lengths"):
        M.paired_auroc_difference(y, p, p[:-1])


@pytest.mark.parametrize("v, goal, op, shown", [
    (0.69963, 0.70, ">=", "69.96"),   # 191/273: would show 70.0 against >= 70% (not met)
    (0.70, 0.70, ">=", "70.0"),
    (0.7004, 0.70, ">=", "70.0"),     # met, and shown met
    (0.02004, 0.02, "<=", "2.004"),   # not met: 2.0 would read as met
    (0.0199, 0.02, "<=", "2.0"),      # met: 2.0 reads as met
    (0.5, 0.70, ">=", "50.0"),
    (None, 0.70, ">=", "n/a"),
])
def test_a_value_is_never_rounded_onto_the_other_side_of_its_goal(v, goal, op, shown):
    assert M.format_vs_goal(v, goal, op) == shown
    assert M.format_vs_goal(0.03004, 0.03, "<=", digits=3, scale=1.0) == "0.03004"  # an ECE just above 0.03
