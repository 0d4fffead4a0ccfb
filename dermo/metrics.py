"""Metrics for DermoHelper's binary malignancy triage.

Everything here is a pure function on numpy arrays (no torch, no printing;
diagnostics go to ``logging.getLogger(__name__)``).  Conventions used
throughout:

* ``y``: 1-D array of labels, ``1`` = malignant, ``0`` = benign.  Booleans and
  floats equal to 0.0/1.0 are accepted; anything else raises ``ValueError``
  naming the offending values.
* ``p``: 1-D array of finite scores, normally P(malignant) in [0, 1].
* Decision rule at a threshold ``t``: predict malignant when ``p >= t``.
* Risk bands (app): ``low`` if ``p < low_edge``, ``high`` if
  ``p >= high_edge``, otherwise ``medium``.

Why not ``evaluate``: ``evaluate.load("roc_auc")`` needs to download the
metric script from the Hugging Face Hub, which is unavailable offline, so
AUROC and friends are implemented here directly (AUROC via ranks, checked
against scikit-learn in the tests).

Undefined (0/0) cases in the confusion metrics:

* sensitivity = TP/(TP+FN) is ``nan`` when there are no malignant cases;
* specificity = TN/(TN+FP) is ``nan`` when there are no benign cases;
* precision = TP/(TP+FP) is ``0.0`` when nothing is predicted malignant;
* F1 = 2TP/(2TP+FP+FN) is ``0.0`` when its denominator is 0;
* AUROC raises ``ValueError`` (``nan`` inside the bootstrap) with one class.

``summarize``/``band_table``/``subgroup_metrics`` return JSON-serialisable
plain Python values and turn ``nan`` into ``None``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit

logger = logging.getLogger(__name__)

__all__ = [
    "auroc",
    "confusion_at",
    "threshold_metric",
    "threshold_for_sensitivity",
    "threshold_for_specificity",
    "band_edges",
    "assign_band",
    "assign_bands",
    "expected_calibration_error",
    "reliability_table",
    "fit_temperature",
    "apply_temperature",
    "fit_temperature_bias",
    "bootstrap_counts",
    "bootstrap_ci",
    "summarize",
    "band_table",
    "subgroup_metrics",
    "age_band",
    "selection_score",
    "CONFUSION_METRICS",
    "TEMPERATURE_BOUNDS",
]

#: Rate metrics reported by :func:`confusion_at` / :func:`summarize`.
CONFUSION_METRICS: Tuple[str, ...] = ("sensitivity", "specificity", "precision", "f1", "accuracy")

#: Search interval for :func:`fit_temperature`.
TEMPERATURE_BOUNDS: Tuple[float, float] = (0.05, 20.0)

# Resamples processed together in the vectorised bootstrap: bounds memory to
# about _CHUNK * n * 8 bytes per temporary array.
_CHUNK = 250
# Tolerance when turning a rate into a count, e.g. ceil(0.97 * 100) must be 97
# although 0.97 * 100 == 97.00000000000001 in floating point.
_EPS = 1e-9


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------


def _check_labels(y: Any, name: str = "y") -> np.ndarray:
    """Return ``y`` as a 1-D int8 array of 0/1, or raise ``ValueError``."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if arr.dtype.kind in "USV":
        bad = sorted({repr(v) for v in arr.tolist()})
        raise ValueError(f"{name} must contain only numeric 0/1 labels; got values {bad[:10]}")
    if arr.dtype.kind not in "iuf":
        try:
            num = arr.astype(float)
        except (TypeError, ValueError):
            bad = sorted({repr(v) for v in arr.tolist() if v not in (0, 1)})
            raise ValueError(f"{name} must contain only 0/1 labels; invalid values: {bad[:10]}") from None
        arr = num
    bad_mask = ~np.isin(arr, (0, 1))  # NaN is also flagged here
    if bad_mask.any():
        bad = np.unique(arr[bad_mask])
        raise ValueError(
            f"{name} must contain only 0/1 labels (1 = malignant); invalid values: {bad[:10].tolist()}"
        )
    return arr.astype(np.int8)


def _check_scores(p: Any, n: Optional[int] = None, name: str = "p") -> np.ndarray:
    """Return ``p`` as a 1-D float64 array of finite values, or raise."""
    arr = np.asarray(p, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"y and {name} must have equal lengths, got {n} and {arr.shape[0]}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN/inf value(s)")
    return arr


def _check_yp(y: Any, p: Any) -> Tuple[np.ndarray, np.ndarray]:
    yy = _check_labels(y)
    pp = _check_scores(p, n=yy.shape[0])
    return yy, pp


def _check_threshold(threshold: Any, name: str = "threshold") -> float:
    t = float(threshold)
    if math.isnan(t):
        raise ValueError(f"{name} is NaN")
    return t


def _check_rate(value: float, name: str) -> float:
    v = float(value)
    if not (0.0 < v <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return v


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(isinstance(v, (float, np.floating)) and math.isnan(v))
    except TypeError:
        return False


def _group_codes(groups: Any, n: int, name: str = "groups") -> Tuple[np.ndarray, int]:
    """Map group ids (e.g. lesion_id) to integer codes 0..G-1 (sorted id order)."""
    arr = np.asarray(groups)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with length {n}, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise ValueError(f"{name} contains NaN ids")
    elif arr.dtype.kind == "O":
        if any(_is_missing(v) for v in arr.tolist()):
            raise ValueError(f"{name} contains missing (None/NaN) ids")
    try:
        _, codes = np.unique(arr, return_inverse=True)
    except TypeError:  # mixed, unorderable object ids
        _, codes = np.unique(arr.astype(str), return_inverse=True)
    codes = codes.reshape(-1)
    return codes, int(codes.max()) + 1


def _nan_to_none(x: Any) -> Any:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


# --------------------------------------------------------------------------
# weighted (bootstrap-vectorised) kernels
#
# A bootstrap resample is represented by a row of multiplicities w (how many
# times each original item was drawn).  A metric of the resample equals the
# metric of the original items weighted by w, so B resamples are a (B, n)
# weight matrix and all metrics below are computed for all rows at once.
# --------------------------------------------------------------------------


def _weighted_auroc(W: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """AUROC for each row of weights ``W`` (B, n); ``nan`` where one class has zero weight.

    AUROC = sum_{i pos, j neg} w_i w_j ( [p_i > p_j] + 0.5 [p_i == p_j] ) / (W_pos W_neg),
    computed by sorting once and cumulating negative weight below each score level.
    """
    W = np.asarray(W, dtype=float)
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    ys = y[order].astype(bool)
    Ws = W[:, order]
    neg = Ws * ~ys
    new_level = np.empty(ps.shape[0], dtype=bool)
    new_level[0] = True
    np.not_equal(ps[1:], ps[:-1], out=new_level[1:])
    level = np.cumsum(new_level) - 1
    starts = np.flatnonzero(new_level)
    ends = np.append(starts[1:], ps.shape[0])
    cum_neg = np.zeros((W.shape[0], ps.shape[0] + 1))
    np.cumsum(neg, axis=1, out=cum_neg[:, 1:])
    below = cum_neg[:, starts]  # negative weight strictly below each level
    tied = cum_neg[:, ends] - below  # negative weight at the level itself
    pos_level = level[ys]
    pos_w = Ws[:, ys]
    num = (pos_w * (below[:, pos_level] + 0.5 * tied[:, pos_level])).sum(axis=1)
    n_pos = pos_w.sum(axis=1)
    n_neg = cum_neg[:, -1]
    den = n_pos * n_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


def _weighted_confusion(W: np.ndarray, y: np.ndarray, p: np.ndarray, threshold: float):
    """Weighted TP, FP, TN, FN (each shape (B,)) for the rule ``p >= threshold``."""
    W = np.asarray(W, dtype=float)
    pred = p >= threshold
    pos = y.astype(bool)
    tp = W @ (pos & pred).astype(float)
    fp = W @ (~pos & pred).astype(float)
    tn = W @ (~pos & ~pred).astype(float)
    fn = W @ (pos & ~pred).astype(float)
    return tp, fp, tn, fn


def _rates(tp, fp, tn, fn) -> Dict[str, np.ndarray]:
    """Confusion-derived rates with the module's 0/0 conventions (see module docstring)."""
    tp, fp, tn, fn = (np.asarray(v, dtype=float) for v in (tp, fp, tn, fn))

    def div(a, b, empty):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / np.where(b > 0, b, 1.0), empty)

    return {
        "sensitivity": div(tp, tp + fn, np.nan),
        "specificity": div(tn, tn + fp, np.nan),
        "precision": div(tp, tp + fp, 0.0),
        "f1": div(2 * tp, 2 * tp + fp + fn, 0.0),
        "accuracy": div(tp + tn, tp + fp + tn + fn, np.nan),
    }


# --------------------------------------------------------------------------
# discrimination metrics
# --------------------------------------------------------------------------


def auroc(y: Any, p: Any) -> float:
    """Area under the ROC curve (Mann-Whitney form, ties count 1/2).

    AUROC = (1 / (n_pos * n_neg)) * sum_{i: y_i=1} sum_{j: y_j=0}
            ( [p_i > p_j] + 0.5 * [p_i == p_j] )
          = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos * n_neg),
    with R_pos the sum of the (average) ranks of the positives.  Equals
    ``sklearn.metrics.roc_auc_score``.

    Raises ``ValueError`` if ``y`` contains only one class.
    """
    yy, pp = _check_yp(y, p)
    n_pos = int(yy.sum())
    if n_pos == 0 or n_pos == yy.shape[0]:
        raise ValueError("AUROC is undefined: y contains only one class")
    return float(_weighted_auroc(np.ones((1, yy.shape[0])), yy, pp)[0])


auroc._weighted = _weighted_auroc  # type: ignore[attr-defined]  # bootstrap fast path


def confusion_at(y: Any, p: Any, threshold: float) -> Dict[str, Any]:
    """Confusion counts and rates when predicting malignant for ``p >= threshold``.

    TP = #{y=1, p>=t}, FP = #{y=0, p>=t}, TN = #{y=0, p<t}, FN = #{y=1, p<t};
    sensitivity = TP/(TP+FN)   (nan if no malignant cases),
    specificity = TN/(TN+FP)   (nan if no benign cases),
    precision   = TP/(TP+FP)   (0.0 if nothing is predicted malignant),
    f1          = 2TP/(2TP+FP+FN)  (0.0 if the denominator is 0),
    accuracy    = (TP+TN)/N.

    Returns ``dict(sensitivity, specificity, precision, f1, accuracy, tp, fp, tn, fn)``
    with Python floats / ints.
    """
    yy, pp = _check_yp(y, p)
    t = _check_threshold(threshold)
    tp, fp, tn, fn = _weighted_confusion(np.ones((1, yy.shape[0])), yy, pp, t)
    rates = _rates(tp, fp, tn, fn)
    out: Dict[str, Any] = {k: float(rates[k][0]) for k in CONFUSION_METRICS}
    out.update(tp=int(tp[0]), fp=int(fp[0]), tn=int(tn[0]), fn=int(fn[0]))
    return out


def threshold_metric(name: str, threshold: float) -> Callable[[Any, Any], float]:
    """Return ``metric(y, p)`` computing ``confusion_at(y, p, threshold)[name]``.

    ``name`` is one of :data:`CONFUSION_METRICS`.  The returned callable carries
    a vectorised kernel so :func:`bootstrap_ci` with it is fast.
    """
    if name not in CONFUSION_METRICS:
        raise ValueError(f"unknown metric {name!r}; expected one of {CONFUSION_METRICS}")
    t = _check_threshold(threshold)

    def metric(y: Any, p: Any) -> float:
        return confusion_at(y, p, t)[name]

    def weighted(W: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
        return _rates(*_weighted_confusion(W, y, p, t))[name]

    metric._weighted = weighted  # type: ignore[attr-defined]
    metric.__name__ = f"{name}_at_{t:g}"
    metric.__doc__ = f"{name} of the rule p >= {t!r} (see confusion_at)."
    return metric


# --------------------------------------------------------------------------
# operating thresholds and risk bands
# --------------------------------------------------------------------------


def threshold_for_sensitivity(y: Any, p: Any, min_sensitivity: float = 0.90) -> float:
    """Highest threshold ``t`` with sensitivity(p >= t) >= ``min_sensitivity``.

    With k = ceil(min_sensitivity * n_pos) positives required at or above t,
    sensitivity(p >= t) >= min_sensitivity  <=>  t <= s_(k), the k-th largest
    malignant score.  So the answer is exactly t = s_(k) (a malignant case's
    score; the set of valid t is closed above, so the maximum exists).
    Raises ``ValueError`` if there are no malignant cases.
    """
    yy, pp = _check_yp(y, p)
    target = _check_rate(min_sensitivity, "min_sensitivity")
    pos = np.sort(pp[yy == 1])[::-1]
    if pos.size == 0:
        raise ValueError("threshold_for_sensitivity needs at least one malignant case (y == 1)")
    k = max(1, min(pos.size, math.ceil(target * pos.size - _EPS)))
    return float(pos[k - 1])


def threshold_for_specificity(y: Any, p: Any, min_specificity: float = 0.95) -> float:
    """Lowest threshold ``t`` with specificity(p >= t) >= ``min_specificity``.

    Specificity counts benign cases with p < t.  With k = ceil(min_specificity
    * n_neg) benign cases required strictly below t, the condition is
    t > s_(k), the k-th smallest benign score.  The valid set is open below,
    so the lowest representable threshold is returned:
    ``t = nextafter(s_(k), +inf)`` (the next float64 above s_(k)).  Any score
    strictly greater than s_(k) is therefore flagged; s_(k) itself is not.
    The result can exceed 1.0 (when s_(k) == 1.0), meaning nothing is flagged.
    Raises ``ValueError`` if there are no benign cases.
    """
    yy, pp = _check_yp(y, p)
    target = _check_rate(min_specificity, "min_specificity")
    neg = np.sort(pp[yy == 0])
    if neg.size == 0:
        raise ValueError("threshold_for_specificity needs at least one benign case (y == 0)")
    k = max(1, min(neg.size, math.ceil(target * neg.size - _EPS)))
    return float(np.nextafter(neg[k - 1], np.inf))


def band_edges(
    y_val: Any,
    p_val: Any,
    low_sensitivity: float = 0.97,
    high_specificity: float = 0.95,
) -> Tuple[float, float]:
    """Validation-derived band edges ``(low_edge, high_edge)`` for the app.

    * low_edge  = threshold_for_sensitivity(y_val, p_val, low_sensitivity):
      the highest edge such that at most (1 - low_sensitivity) of validation
      malignant cases fall in Low (p < low_edge).
    * high_edge = threshold_for_specificity(y_val, p_val, high_specificity):
      the lowest edge such that High (p >= high_edge) has validation
      specificity >= high_specificity (at most 5% of benign cases flagged).

    Conflict rule (low_edge > high_edge, i.e. no room for Medium): set
    ``low_edge = high_edge``.  Both guarantees still hold (a lower low_edge
    only raises the sensitivity of ``p >= low_edge``), Medium is empty, and
    the ambiguous cases in [high_edge, old low_edge) go to High rather than
    Low -- the conservative choice for cancer triage.  A warning is logged.
    """
    yy, pp = _check_yp(y_val, p_val)
    low = threshold_for_sensitivity(yy, pp, low_sensitivity)
    high = threshold_for_specificity(yy, pp, high_specificity)
    if low > high:
        logger.warning(
            "band_edges: low_edge %.6g > high_edge %.6g (sensitivity %.3f and specificity %.3f "
            "targets overlap); setting low_edge = high_edge, Medium band is empty",
            low, high, low_sensitivity, high_specificity,
        )
        low = high
    return float(low), float(high)


def _check_edges(low_edge: float, high_edge: float) -> Tuple[float, float]:
    lo = _check_threshold(low_edge, "low_edge")
    hi = _check_threshold(high_edge, "high_edge")
    if lo > hi:
        raise ValueError(f"low_edge ({lo}) must be <= high_edge ({hi})")
    return lo, hi


def assign_band(p: float, low_edge: float, high_edge: float) -> str:
    """Band of one probability: ``"low"`` if p < low_edge, ``"high"`` if p >= high_edge, else ``"medium"``."""
    lo, hi = _check_edges(low_edge, high_edge)
    x = float(p)
    if math.isnan(x):
        raise ValueError("p is NaN")
    if x >= hi:
        return "high"
    if x < lo:
        return "low"
    return "medium"


def assign_bands(p: Any, low_edge: float, high_edge: float) -> np.ndarray:
    """Vectorised :func:`assign_band`: array of ``"low"|"medium"|"high"`` strings."""
    lo, hi = _check_edges(low_edge, high_edge)
    pp = _check_scores(np.atleast_1d(np.asarray(p, dtype=float)).reshape(-1))
    return np.where(pp >= hi, "high", np.where(pp < lo, "low", "medium"))


# --------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)


def reliability_table(y: Any, p: Any, n_bins: int = 15) -> Dict[str, list]:
    """Per-bin reliability data (equal-width bins on P(malignant), see ECE).

    Returns lists ``bin_lower``, ``bin_upper``, ``count``, ``mean_p``,
    ``frac_malignant`` (``None`` for empty bins); handy for reliability plots.
    """
    yy, pp = _check_yp(y, p)
    n_bins = int(n_bins)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    if (pp < 0).any() or (pp > 1).any():
        raise ValueError("p must be probabilities in [0, 1]")
    b = _bin_index(pp, n_bins)
    count = np.bincount(b, minlength=n_bins)
    sum_p = np.bincount(b, weights=pp, minlength=n_bins)
    sum_y = np.bincount(b, weights=yy.astype(float), minlength=n_bins)
    nz = count > 0
    mean_p = [float(sum_p[i] / count[i]) if nz[i] else None for i in range(n_bins)]
    frac = [float(sum_y[i] / count[i]) if nz[i] else None for i in range(n_bins)]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "count": count.astype(int).tolist(),
        "mean_p": mean_p,
        "frac_malignant": frac,
    }


def expected_calibration_error(y: Any, p: Any, n_bins: int = 15) -> float:
    """Binary expected calibration error of P(malignant).

    Bins: B_b = {i : b/n_bins <= p_i < (b+1)/n_bins}, b = 0..n_bins-1 (the last
    bin also includes p = 1).  Reliability is measured on P(malignant) itself
    (not on the max-class confidence):

        ECE = sum_b (|B_b| / N) * | mean_{i in B_b} y_i - mean_{i in B_b} p_i |

    Empty bins contribute 0.  ``p`` must lie in [0, 1].
    """
    yy, pp = _check_yp(y, p)
    n_bins = int(n_bins)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    if (pp < 0).any() or (pp > 1).any():
        raise ValueError("p must be probabilities in [0, 1]")
    b = _bin_index(pp, n_bins)
    sum_p = np.bincount(b, weights=pp, minlength=n_bins)
    sum_y = np.bincount(b, weights=yy.astype(float), minlength=n_bins)
    # (|B|/N) * |mean_y - mean_p| == |sum_y - sum_p| / N
    return float(np.abs(sum_y - sum_p).sum() / pp.shape[0])


def _margin(logits: Any) -> np.ndarray:
    """Malignant-vs-benign logit margin d = z1 - z0 from (N, 2) logits (or (N,) margins)."""
    z = np.asarray(logits, dtype=float)
    if z.ndim == 2 and z.shape[1] == 2:
        d = z[:, 1] - z[:, 0]
    elif z.ndim == 1:
        d = z
    else:
        raise ValueError(f"logits must have shape (N, 2) (or (N,) margins), got {z.shape}")
    if d.size == 0:
        raise ValueError("logits are empty")
    if not np.isfinite(d).all():
        raise ValueError("logits contain NaN/inf")
    return d


def fit_temperature(logits: Any, y: Any) -> float:
    """Temperature T minimising the NLL of softmax(logits / T) on (validation) data.

    For 2-class logits z = (z0, z1), softmax(z/T)[1] = sigmoid(d/T) with
    d = z1 - z0, so

        NLL(T) = (1/N) sum_i softplus(-s_i d_i / T),   s_i = 2 y_i - 1.

    NLL is convex in 1/T; we minimise over log T with bounded Brent
    (``scipy.optimize.minimize_scalar``), T in [0.05, 20]
    (:data:`TEMPERATURE_BOUNDS`).  ``logits`` has shape (N, 2) (class 1 =
    malignant); a 1-D array is taken as the margin d.  Returns T as a float.
    """
    d = _margin(logits)
    yy = _check_labels(y)
    if yy.shape[0] != d.shape[0]:
        raise ValueError(f"logits and y must have equal lengths, got {d.shape[0]} and {yy.shape[0]}")
    sd = (2.0 * yy - 1.0) * d

    def nll(log_t: float) -> float:
        return float(-log_expit(sd / math.exp(log_t)).mean())

    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    t = float(math.exp(res.x))
    if min(abs(res.x - lo), abs(res.x - hi)) < 1e-3:
        logger.warning("fit_temperature: optimum T=%.4g is at the search bound %s", t, TEMPERATURE_BOUNDS)
    logger.debug("fit_temperature: T=%.4f, NLL %.5f -> %.5f", t, nll(0.0), float(res.fun))
    return t


def fit_temperature_bias(logits: Any, y: Any) -> tuple[float, float]:
    """Temperature T and bias b minimising the NLL of sigmoid(d / T + b), d = z1 - z0 (Platt scaling of the margin).

    Temperature scaling alone cannot move the decision boundary, and a model trained with class weights [1, 4]
    over-predicts malignancy by a roughly constant logit offset; the bias b removes it. Convex in (1/T, b);
    solved with L-BFGS. T is clipped to :data:`TEMPERATURE_BOUNDS`.
    """
    from scipy.optimize import minimize

    d = _margin(logits)
    yy = _check_labels(y)
    if yy.shape[0] != d.shape[0]:
        raise ValueError(f"logits and y must have equal lengths, got {d.shape[0]} and {yy.shape[0]}")
    s = 2.0 * yy - 1.0

    def nll_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = s * (d * w[0] + w[1])
        g = -expit(-z) * s  # d(-log sigmoid(z))/d(a d + b)
        return float(-log_expit(z).mean()), np.array([(g * d).mean(), g.mean()])

    res = minimize(nll_grad, np.array([1.0 / fit_temperature(logits, yy), 0.0]), jac=True, method="L-BFGS-B",
                   bounds=[(1.0 / TEMPERATURE_BOUNDS[1], 1.0 / TEMPERATURE_BOUNDS[0]), (-20.0, 20.0)])
    return float(1.0 / res.x[0]), float(res.x[1])


def apply_temperature(logits: Any, T: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """P(malignant) = sigmoid((z1 - z0) / T + bias); with bias 0 this is softmax(logits / T)[:, 1]. Stable."""
    t = float(T)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"temperature must be a positive finite number, got {T!r}")
    return expit(_margin(logits) / t + float(bias))


# --------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------


def _iter_count_chunks(
    n: int, groups: Any, n_boot: int, seed: int, chunk: int = _CHUNK
) -> Iterator[np.ndarray]:
    """Yield (b, n) multiplicity matrices; rows are bootstrap resamples.

    Without groups: n draws of items with replacement.  With groups: G draws
    of groups with replacement; every image of a drawn group gets the
    group's multiplicity (all images of a lesion come together).
    """
    rng = np.random.default_rng(seed)
    if groups is not None:
        codes, n_units = _group_codes(groups, n)
    else:
        codes, n_units = None, n
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        draws = rng.integers(0, n_units, size=(b, n_units))
        flat = (draws + (np.arange(b) * n_units)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_units).reshape(b, n_units)
        yield counts if codes is None else counts[:, codes]
        done += b


def bootstrap_counts(n: int, groups: Any = None, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """The (n_boot, n) multiplicity matrix used by :func:`bootstrap_ci` / :func:`summarize`.

    Row r gives how many times each item appears in resample r (rows sum to
    n without groups; with groups each row is constant within a group).
    Exposed for inspection and tests.
    """
    n, n_boot = int(n), int(n_boot)
    if n < 1 or n_boot < 1:
        raise ValueError("n and n_boot must be >= 1")
    return np.concatenate(list(_iter_count_chunks(n, groups, n_boot, seed)), axis=0)


def _percentile_ci(values: np.ndarray, alpha: float, label: str, n_boot: int) -> Tuple[float, float]:
    vals = values[np.isfinite(values)]
    if vals.size == 0:
        logger.warning("bootstrap %s: metric undefined in all %d resamples", label, n_boot)
        return float("nan"), float("nan")
    skipped = n_boot - vals.size
    if skipped:
        (logger.warning if skipped > 0.1 * n_boot else logger.debug)(
            "bootstrap %s: skipped %d/%d resamples where the metric is undefined", label, skipped, n_boot
        )
    lo, hi = np.quantile(vals, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def _check_boot_args(n_boot: int, alpha: float) -> Tuple[int, float]:
    n_boot = int(n_boot)
    alpha = float(alpha)
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    if not (0.0 < alpha < 1.0):
        raise ValueError("alpha must be in (0, 1)")
    return n_boot, alpha


def bootstrap_ci(
    metric_fn: Callable[[Any, Any], float],
    y: Any,
    p: Any,
    groups: Any = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of ``metric_fn(y, p)``.

    Resampling unit: images, or -- when ``groups`` (e.g. lesion_id per image)
    is given -- groups drawn with replacement, each bringing all its images.
    CI = (q_{alpha/2}, q_{1-alpha/2}) of the metric over resamples.
    Resamples where the metric is undefined (raises ``ValueError`` or gives
    NaN/inf, e.g. a single class for AUROC) are skipped; (nan, nan) if all are.

    :func:`auroc` and callables from :func:`threshold_metric` are evaluated
    for all resamples at once (weights = multiplicities; ~0.1 s for n=1500,
    n_boot=1000).  Any other ``metric_fn`` is called once per resample with
    the resampled arrays (grouped by item, so it must not depend on order).
    """
    yy, pp = _check_yp(y, p)
    n_boot, alpha = _check_boot_args(n_boot, alpha)
    n = yy.shape[0]
    weighted = getattr(metric_fn, "_weighted", None)
    values = []
    for counts in _iter_count_chunks(n, groups, n_boot, seed):
        if weighted is not None:
            values.append(np.asarray(weighted(counts, yy, pp), dtype=float))
            continue
        chunk_vals = np.empty(counts.shape[0])
        base = np.arange(n)
        for r, row in enumerate(counts):
            idx = np.repeat(base, row)
            try:
                chunk_vals[r] = float(metric_fn(yy[idx], pp[idx]))
            except ValueError:
                chunk_vals[r] = np.nan
        values.append(chunk_vals)
    label = getattr(metric_fn, "__name__", "metric")
    return _percentile_ci(np.concatenate(values), alpha, label, n_boot)


def paired_auroc_difference(
    y: Any,
    p_a: Any,
    p_b: Any,
    groups: Any = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Dict[str, Any]:
    """AUROC(a) - AUROC(b) of two models scored on the same images, with a paired percentile bootstrap interval.

    Both models are scored on each resample (images, or ``groups`` drawn with replacement as in
    :func:`bootstrap_ci`), so the interval reflects the difference, not two independent intervals. Returns
    ``{"difference", "ci" ([lo, hi] or None), "fraction_a_better"}``: the last is the share of resamples where a's
    AUROC is above b's (a one-sided bootstrap reading, not a p-value).
    """
    yy, pa = _check_yp(y, p_a)
    pb = _check_scores(p_b, yy.shape[0], "p_b")
    n_boot, alpha = _check_boot_args(n_boot, alpha)
    diffs = np.concatenate([_weighted_auroc(c, yy, pa) - _weighted_auroc(c, yy, pb)
                            for c in _iter_count_chunks(yy.shape[0], groups, n_boot, seed)])
    ci = _ci_or_none(_percentile_ci(diffs, alpha, "auroc difference", n_boot))
    finite = diffs[np.isfinite(diffs)]
    return {"difference": auroc(yy, pa) - auroc(yy, pb), "ci": ci,
            "fraction_a_better": float((finite > 0).mean()) if finite.size else None}


# --------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------


def _ci_or_none(ci: Tuple[float, float]):
    lo, hi = ci
    if math.isnan(lo) or math.isnan(hi):
        return None
    return [float(lo), float(hi)]


def summarize(
    y: Any,
    p: Any,
    threshold: float,
    groups: Any = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Dict[str, Any]:
    """Evaluation summary with percentile-bootstrap CIs (JSON-serialisable).

    Keys: ``n``, ``n_malignant``, ``n_groups`` (None without groups),
    ``auroc``, ``auroc_ci``, ``threshold``, then for each of sensitivity,
    specificity, precision, f1, accuracy the point value and ``<name>_ci``
    at ``threshold``, the counts ``tp, fp, tn, fn``, ``n_boot``,
    ``ci_level`` (= 1 - alpha), and ``"at_0.5"``: the same threshold metrics
    (with CIs and counts) at threshold 0.5.

    All CIs share the same resamples (resampling lesions when ``groups`` is
    given; see :func:`bootstrap_ci`; same seed => same CIs as bootstrap_ci).
    Undefined values are ``None``; CIs are ``[low, high]`` lists or ``None``.
    ``n_boot=0`` skips the bootstrap (all CIs ``None``), e.g. inside training.
    """
    yy, pp = _check_yp(y, p)
    t = _check_threshold(threshold)
    n = int(yy.shape[0])
    n_boot = int(n_boot)
    if n_boot < 0:
        raise ValueError("n_boot must be >= 0")
    if n_boot:
        _check_boot_args(n_boot, alpha)
    n_groups = None
    if groups is not None:
        n_groups = _group_codes(groups, n)[1]

    thresholds = {"main": t, "at_0.5": 0.5}
    auc_vals = []
    rate_vals: Dict[str, Dict[str, list]] = {k: {m: [] for m in CONFUSION_METRICS} for k in thresholds}
    if n_boot:
        for counts in _iter_count_chunks(n, groups, n_boot, seed):
            auc_vals.append(_weighted_auroc(counts, yy, pp))
            for key, thr in thresholds.items():
                rates = _rates(*_weighted_confusion(counts, yy, pp, thr))
                for m in CONFUSION_METRICS:
                    rate_vals[key][m].append(rates[m])

    def ci(vals: list, label: str):
        if not n_boot:
            return None
        return _ci_or_none(_percentile_ci(np.concatenate(vals), alpha, label, n_boot))

    n_pos = int(yy.sum())
    auc = auroc(yy, pp) if 0 < n_pos < n else None

    def block(key: str) -> Dict[str, Any]:
        conf = confusion_at(yy, pp, thresholds[key])
        out: Dict[str, Any] = {"threshold": float(thresholds[key])}
        for m in CONFUSION_METRICS:
            out[m] = _nan_to_none(conf[m])
            out[f"{m}_ci"] = ci(rate_vals[key][m], f"{m}@{thresholds[key]:g}")
        out.update(tp=conf["tp"], fp=conf["fp"], tn=conf["tn"], fn=conf["fn"])
        return out

    summary: Dict[str, Any] = {
        "n": n,
        "n_malignant": n_pos,
        "n_groups": n_groups,
        "auroc": auc,
        "auroc_ci": ci(auc_vals, "auroc"),
    }
    summary.update(block("main"))
    summary["n_boot"] = n_boot
    summary["ci_level"] = 1.0 - float(alpha)
    summary["at_0.5"] = block("at_0.5")
    return summary


_BANDS = ("low", "medium", "high")


def band_table(y: Any, p: Any, low_edge: float, high_edge: float) -> Dict[str, Dict[str, Any]]:
    """Composition of the Low/Medium/High bands.

    For each band b: ``n`` (cases in b), ``n_malignant``, ``malignant_rate``
    = n_malignant / n (None if the band is empty), ``share_of_malignant`` =
    n_malignant / (total malignant) (None if there are no malignant cases),
    and ``share_of_cases`` = n / N.  ``share_of_malignant["low"]`` is the
    fraction of cancers the app would call Low risk.
    """
    yy, pp = _check_yp(y, p)
    bands = assign_bands(pp, low_edge, high_edge)
    total_pos = int(yy.sum())
    n = int(yy.shape[0])
    table: Dict[str, Dict[str, Any]] = {}
    for b in _BANDS:
        m = bands == b
        nb = int(m.sum())
        pos = int(yy[m].sum())
        table[b] = {
            "n": nb,
            "n_malignant": pos,
            "malignant_rate": pos / nb if nb else None,
            "share_of_malignant": pos / total_pos if total_pos else None,
            "share_of_cases": nb / n,
        }
    return table


def _subgroup_keys(values: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"subgroup {name!r} must be 1-D with length {n}, got shape {arr.shape}")
    return np.array(["unknown" if _is_missing(v) else str(v) for v in arr.tolist()], dtype=object)


def subgroup_metrics(
    y: Any, p: Any, threshold: float, groups: Mapping[str, Sequence[Any]]
) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Per-subgroup discrimination, e.g. ``groups={"sex": sex, "age": age_band(age)}``.

    Returns ``{name: {value: {n, n_malignant, auroc, sensitivity, specificity}}}``
    where values are stringified (missing -> ``"unknown"``), ``auroc`` is None
    unless the subgroup has both classes, ``sensitivity`` (at ``p >= threshold``)
    is None without malignant cases and ``specificity`` None without benign ones.
    """
    yy, pp = _check_yp(y, p)
    t = _check_threshold(threshold)
    n = yy.shape[0]
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for name, values in groups.items():
        keys = _subgroup_keys(values, n, name)
        res: Dict[str, Dict[str, Any]] = {}
        for key in sorted(set(keys.tolist())):
            m = keys == key
            ys, ps = yy[m], pp[m]
            n_pos = int(ys.sum())
            conf = confusion_at(ys, ps, t)
            res[key] = {
                "n": int(m.sum()),
                "n_malignant": n_pos,
                "auroc": auroc(ys, ps) if 0 < n_pos < ys.shape[0] else None,
                "sensitivity": _nan_to_none(conf["sensitivity"]),
                "specificity": _nan_to_none(conf["specificity"]),
            }
        out[str(name)] = res
    return out


_AGE_BANDS = ((30, "<30"), (45, "30-44"), (60, "45-59"), (75, "60-74"))


def _age_band_scalar(age: Any) -> str:
    if _is_missing(age):
        return "unknown"
    try:
        a = float(age)
    except (TypeError, ValueError):
        return "unknown"
    if not math.isfinite(a) or a < 0:
        return "unknown"
    for upper, label in _AGE_BANDS:
        if a < upper:
            return label
    return "75+"


def age_band(age: Any):
    """Age group label: ``"<30"``, ``"30-44"``, ``"45-59"``, ``"60-74"``, ``"75+"`` or ``"unknown"``.

    Bands are half-open on the right ([30, 45) -> "30-44").  Missing,
    non-numeric, negative or non-finite ages give ``"unknown"``.  A scalar
    returns a ``str``; an array-like returns a numpy array of ``str``.
    """
    if np.ndim(age) == 0:
        return _age_band_scalar(age.item() if isinstance(age, np.ndarray) else age)
    return np.array([_age_band_scalar(a) for a in np.asarray(age, dtype=object).reshape(-1).tolist()])


def selection_score(sensitivity: float, accuracy: float, specificity: float) -> float:
    """Hyper-parameter search score on validation, ranking sensitivity first.

        score = 0.6 * sensitivity + 0.2 * accuracy + 0.2 * specificity

    Missing a cancer is the costliest error, so sensitivity carries 60% of
    the weight; accuracy and specificity (unnecessary referrals) 20% each.
    Arguments are rates in [0, 1]; the score is in [0, 1].  Raises
    ``ValueError`` for NaN inputs (e.g. undefined sensitivity).
    """
    vals = [float(sensitivity), float(accuracy), float(specificity)]
    if any(math.isnan(v) for v in vals):
        raise ValueError(f"selection_score got NaN input(s): {vals}")
    s, a, sp = vals
    return 0.6 * s + 0.2 * a + 0.2 * sp


# ------------------------------------------------------------------------------------------------------ display
def format_vs_goal(v: Any, goal: float, op: str, digits: int = 1, scale: float = 100.0) -> str:
    """``v * scale`` with ``digits`` decimals, or more where rounding would put the shown number on the other side of
    ``goal`` than ``v`` is (a malignancy rate of 69.963% against ">= 70%" shows as 69.96, not 70.0). ``op``: "<=" or
    ">=", the side of ``goal`` that meets it. "n/a" for a missing value."""
    if _is_missing(v):
        return "n/a"
    if op not in ("<=", ">="):
        raise ValueError(f"op={op!r}: use '<=' or '>='")
    meets = (lambda x: x <= goal * scale) if op == "<=" else (lambda x: x >= goal * scale)
    x = float(v) * scale
    for d in range(digits, digits + 6):
        if meets(float(f"{x:.{d}f}")) == meets(x):
            break
    return f"{x:.{d}f}"
