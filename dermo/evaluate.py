"""Evaluation: one command that computes every reported figure, the same way for every model, on any labelled folder.

    python -m dermo.evaluate --model runs/cpu/magkd/best --data ../shared/data/ham10000 --split validation \
        --out reports/evaluation/magkd-validation --calibrate
    python -m dermo.evaluate --model dermo/assets --data ../shared/data/ham10000 --split test \
        --out reports/evaluation/shipped-test

``--model`` is a ``save_pretrained`` folder (PyTorch), a folder with ``model.onnx`` + ``config.json`` (ONNX Runtime),
a ``.onnx`` file, or a Hub id (``owner/name``, pulled through ``dermo.hub``). ``--data`` is a labelled folder
(``metadata.csv`` with ``file_name,label``; ``lesion_id, age, sex, localization, dx`` used when present); ``--split``
picks a split of the committed manifest (a folder without ``lesion_id`` then takes the manifest's, so intervals
still resample lesions), without it the whole folder is evaluated.

Raw logits are computed once; probabilities are ``sigmoid((z1 - z0) / T + b)`` with the model's temperature ``T`` and
logit bias ``b`` (``b = 0``: plain ``softmax(logits / T)[1]``). Output
(``--out``): ``metrics.json`` (keys documented in :func:`evaluate_logits`), ``report.md``, ``roc.png``, ``pr.png``,
``calibration.png``, ``confusion.png`` and ``predictions.csv`` (per image: id, label, logits, probability, band).

``--calibrate`` (validation split only) fits on the validation logits, in this order (:func:`fit_calibration`):

1. temperature ``T`` and logit bias ``b`` minimising the validation NLL (temperature scaling, Guo et al. 2017, plus
   a bias: Platt scaling of the logit margin). The class weights [1, 4] shift the model's logits towards malignant by
   a roughly constant offset that a temperature alone cannot remove (on the CPU run's student: validation ECE 0.103
   with T alone, 0.022 with T and b; ``validation.ece_temperature_only`` in the calibration record keeps the figure);
2. ``threshold``: the highest threshold whose validation sensitivity is >= 0.90 on the calibrated probabilities;
3. band edges (``dermo.metrics.band_edges``): ``band_low`` the highest edge keeping validation sensitivity of
   ``p >= band_low`` >= 0.97 (at most 3% of validation cancers called Low), ``band_high`` the lowest edge with
   validation specificity of ``p >= band_high`` >= 0.95 (at most 5% of benign lesions called High) (just above 1,
   ``dermo.config.NO_HIGH_EDGE``, when at least 5% of benign validation scores are exactly 1.0: nothing is High);

and writes them, with ``calibrated: true``, into the model's ``config.json`` (every other key kept), so that the
export, the app and later evaluations read them from the model itself.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import metrics as M
from .config import DEFAULT_MANIFEST, ModelConfig
from .data import decode_images, load_metadata, load_split, normalize

logger = logging.getLogger(__name__)

#: Calibration targets (issue 4): operating point, Low-band sensitivity, High-band specificity.
OPERATING_SENSITIVITY = 0.90
LOW_SENSITIVITY = 0.97
HIGH_SPECIFICITY = 0.95
#: Report targets on the test split (issue 4).
TARGETS = {"ece_after": 0.03, "low_share_of_malignant": 0.03, "low_malignant_rate": 0.02, "high_malignant_rate": 0.70}
CALIBRATION_KEYS = ("temperature", "logit_bias", "threshold", "band_low", "band_high", "calibrated")
SUBGROUP_COLUMNS = ("sex", "age", "localization", "dx")
PLOTS = ("roc.png", "pr.png", "calibration.png", "confusion.png")


# ---------------------------------------------------------------------------------------------------- the model
def open_predictor(model: str | Path | None = None, backend: str = "auto"):
    """A ``dermo.inference.Predictor`` for a folder, a ``.onnx`` file, a Hub id, or ``None`` (the bundled model)."""
    from .inference import Predictor

    if model is None:
        from .inference import BUNDLED_MODEL_DIR

        if not (BUNDLED_MODEL_DIR / "config.json").is_file():
            raise FileNotFoundError(f"no bundled model in {BUNDLED_MODEL_DIR} yet (it is written by "
                                    "`python -m train.export`); pass --model <folder | .onnx | Hub id>")
        return Predictor(backend=backend)
    path = Path(model)
    if path.exists():
        return Predictor(path, backend=backend)
    from .hub import parse_hub_id

    text = str(model)
    if parse_hub_id(text) is not None and not text.startswith((".", "/")) and not text.endswith(".onnx"):
        from .inference import ModelIntegrityError

        try:
            return Predictor.from_pretrained(text, backend=backend)
        except ModelIntegrityError:
            raise
        except Exception as e:  # noqa: BLE001 - offline / not cached / no such repo: one clear message
            raise FileNotFoundError(f"cannot get model {text} from the Hugging Face Hub ({type(e).__name__}: {e}); "
                                    "check the id and your connection, or pass a local model folder") from e
    raise FileNotFoundError(f"model {model} not found: give a model folder (config.json + weights), a .onnx file "
                            "or a Hub id like owner/name")


def compute_logits(predictor, paths: Sequence[str], batch_size: int = 64, tta: bool = False,
                   num_workers: int = 2, progress: bool = False) -> np.ndarray:
    """Raw logits (N, 2) of the images at ``paths`` through the one preprocessing.

    Images are decoded in chunks (memory stays bounded on a folder of any size); an unreadable or missing image is a
    ``ValueError`` naming the file. With ``tta`` the logits are averaged over the identity, horizontal and vertical
    flips (as ``dermo.models.predict_logits`` does in training).
    """
    cfg: ModelConfig = predictor.config
    paths = list(paths)
    out = np.empty((len(paths), 2), np.float64)
    from tqdm.auto import tqdm

    chunk = max(batch_size, 256)
    with tqdm(total=len(paths), desc="images", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), chunk):
            imgs = decode_images(paths[start:start + chunk], cfg.img_size, num_workers)
            for i in range(0, len(imgs), batch_size):
                x = normalize(imgs[i:i + batch_size], cfg.mean, cfg.std)
                lg = predictor.forward(x)[0].astype(np.float64)
                if tta:
                    lg = (lg + predictor.forward(np.ascontiguousarray(x[..., ::-1]))[0]
                          + predictor.forward(np.ascontiguousarray(x[..., ::-1, :]))[0]) / 3.0
                out[start + i:start + i + len(lg)] = lg
                bar.update(len(lg))
    return out


def cached_logits(predictor, paths: Sequence[str], tta: bool = False, cache_dir: str | Path | None = None,
                  **kwargs: Any) -> np.ndarray:
    """``compute_logits`` through an optional on-disk cache (``<cache_dir>/<key>.npy``).

    The key covers everything the logits depend on: the weights' sha256, backend, preprocessing (img_size, mean,
    std), ``tta`` and the exact list of files, so calibrating a model (config.json only) keeps its cache valid and
    any other change misses it. ``cache_dir=None`` computes without caching.
    """
    if cache_dir is None:
        return compute_logits(predictor, paths, tta=tta, **kwargs)
    import hashlib

    c = predictor.config
    h = hashlib.sha256(json.dumps([predictor.sha256, predictor.backend, c.img_size, list(c.mean), list(c.std), tta,
                                   [str(p) for p in paths]]).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"{h}.npy"
    if path.is_file():
        logger.info("logits from cache %s", path)
        return np.load(path)
    logits = compute_logits(predictor, paths, tta=tta, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, logits)
    return logits


def load_labelled(data: str | Path, split: str | None = None,
                  manifest: str | Path | None = DEFAULT_MANIFEST) -> pd.DataFrame:
    """Rows of a labelled folder (``split=None``: all of it), validated with clear errors by ``dermo.data``."""
    if split is None:
        return load_metadata(data)
    return load_split(data, split, manifest)


# ---------------------------------------------------------------------------------------------------- calibration
def fit_calibration(y_val: Any, logits_val: Any, operating_sensitivity: float = OPERATING_SENSITIVITY,
                    low_sensitivity: float = LOW_SENSITIVITY,
                    high_specificity: float = HIGH_SPECIFICITY) -> dict[str, Any]:
    """Temperature, operating threshold and band edges fitted on validation logits (see the module docstring).

    Returns ``{temperature, threshold, band_low, band_high, calibrated: True}`` plus ``validation``: what the fitted
    values achieve on the data they were fitted on (in-sample, for the record).
    """
    y = M._check_labels(y_val)
    t_only = M.fit_temperature(logits_val, y)
    t, b = M.fit_temperature_bias(logits_val, y)
    p = M.apply_temperature(logits_val, t, b)
    thr = M.threshold_for_sensitivity(y, p, operating_sensitivity)
    low, high = M.band_edges(y, p, low_sensitivity, high_specificity)
    # A High edge above 1 (NO_HIGH_EDGE: at least 5% of benign validation scores are exactly 1.0) is kept: "nothing
    # is High". Clipped to 1.0 it would call those scores High, below the specificity target. (low and thr are
    # malignant scores, never above 1.)
    conf = M.confusion_at(y, p, thr)
    return {"temperature": t, "logit_bias": b, "threshold": thr, "band_low": low, "band_high": high, "calibrated": True,
            "targets": {"operating_sensitivity": operating_sensitivity, "low_sensitivity": low_sensitivity,
                        "high_specificity": high_specificity},
            "validation": {"n": int(len(y)), "n_malignant": int(y.sum()),
                           "ece_before": M.expected_calibration_error(y, M.apply_temperature(logits_val, 1.0)),
                           "ece_after": M.expected_calibration_error(y, p),
                           "ece_temperature_only": M.expected_calibration_error(
                               y, M.apply_temperature(logits_val, t_only)),
                           "temperature_only": t_only,
                           "sensitivity": conf["sensitivity"], "specificity": conf["specificity"],
                           "bands": M.band_table(y, p, low, high)}}


def write_calibration(model_dir: str | Path, calibration: dict[str, Any]) -> Path:
    """Write the fitted ``temperature, threshold, band_low, band_high, calibrated`` into ``<model_dir>/config.json``.

    Every other key is kept (``sha256`` of an ONNX file stays valid: it covers the weights, not the config). The
    result is validated through ``ModelConfig`` before it is written.
    """
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --calibrate writes into the model folder's config.json")
    raw = json.loads(path.read_text())
    raw.update({k: calibration[k] for k in CALIBRATION_KEYS})
    from dataclasses import fields

    known = {f.name for f in fields(ModelConfig)}
    ModelConfig(**{k: v for k, v in raw.items() if k in known})  # raises ValueError on an inconsistent result
    path.write_text(json.dumps(raw, indent=2) + "\n")
    logger.info("wrote calibration into %s: %s", path, {k: raw[k] for k in CALIBRATION_KEYS})
    return path


# ---------------------------------------------------------------------------------------------------- metrics
def _subgroups(df: pd.DataFrame) -> dict[str, np.ndarray]:
    groups: dict[str, np.ndarray] = {}
    for col in SUBGROUP_COLUMNS:
        if col in df.columns and df[col].notna().any():
            if col == "age":
                groups["age_band"] = M.age_band(df[col].to_numpy())
            else:
                groups[col] = df[col].to_numpy(dtype=object)
    return groups


def evaluate_logits(y: Any, logits: Any, config: ModelConfig, df: pd.DataFrame | None = None, n_boot: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    """Every reported figure from labels (N,) and raw logits (N, 2), at the model's calibration ``config``.

    Keys: ``n, n_malignant, n_groups, auroc, auroc_ci, threshold``, at that threshold ``sensitivity, specificity,
    precision, f1, accuracy`` each with ``<name>_ci`` (95% percentile bootstrap; resampling lesions when ``df`` has
    ``lesion_id``) and ``tp, fp, tn, fn``; ``at_0.5`` the same at 0.5; ``ece`` ``{before, after}`` temperature
    scaling (15 equal-width bins on P(malignant)); ``temperature``; ``band_edges``; ``bands`` ``{low, medium, high:
    n, n_malignant, malignant_rate, share_of_malignant, share_of_cases}``; ``subgroups`` (AUROC, sensitivity and
    specificity by sex, age band, localization, dx when present); ``reliability`` (bins after scaling);
    ``targets`` (issue 4 targets and whether they are met).
    """
    y = M._check_labels(y)
    logits = np.asarray(logits, np.float64)
    p_raw = M.apply_temperature(logits, 1.0)
    p = M.apply_temperature(logits, config.temperature, config.logit_bias)
    groups = None
    # load_metadata makes each image its own lesion when lesion_id is absent: that is the image bootstrap
    if df is not None and "lesion_id" in df.columns and not (df["lesion_id"].astype(str)
                                                               == df["image_id"].astype(str)).all():
        groups = df["lesion_id"].astype(str).to_numpy()
    out = M.summarize(y, p, config.threshold, groups=groups, n_boot=n_boot, seed=seed)
    out["bootstrap_unit"] = "lesion" if groups is not None else "image"
    out["temperature"] = float(config.temperature)
    out["logit_bias"] = float(config.logit_bias)
    out["calibrated"] = bool(config.calibrated)
    out["ece"] = {"before": M.expected_calibration_error(y, p_raw), "after": M.expected_calibration_error(y, p)}
    out["band_edges"] = {"low": float(config.band_low), "high": float(config.band_high)}
    out["bands"] = M.band_table(y, p, config.band_low, config.band_high)
    out["subgroups"] = M.subgroup_metrics(y, p, config.threshold, _subgroups(df)) if df is not None else {}
    out["reliability"] = M.reliability_table(y, p)
    out["targets"] = check_targets(out)
    return out


def check_targets(m: dict[str, Any]) -> dict[str, Any]:
    """Issue 4's targets (meant for the shipped model on the test split): value, target and ``met`` each."""
    low, high = m["bands"]["low"], m["bands"]["high"]
    vals = {"ece_after": (m["ece"]["after"], "<="),
            "low_share_of_malignant": (low["share_of_malignant"], "<="),
            "low_malignant_rate": (low["malignant_rate"], "<="),
            "high_malignant_rate": (high["malignant_rate"], ">=")}
    empty = {"low_malignant_rate": low["n"] == 0, "high_malignant_rate": high["n"] == 0}
    out = {}
    for k, (v, op) in vals.items():
        t = TARGETS[k]
        met = None if v is None else (v <= t if op == "<=" else v >= t)
        out[k] = {"value": v, "target": f"{op} {t}", "op": op, "goal": t, "met": met}
        if empty.get(k):
            # A band nobody lands in has no malignancy rate, but a triage that never says Low (or High) has failed
            # that band's target: "not met", not "n/a".
            out[k].update(met=False, reason="band empty")
    return out


# ---------------------------------------------------------------------------------------------------- outputs
def _fmt(v: Any, pct: bool = True) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


TARGET_OPS = {"ece_after": "<=", "low_share_of_malignant": "<=", "low_malignant_rate": "<=", "high_malignant_rate": ">="}


def _fmt_goal(v: Any, target: str | None) -> str:
    """A value beside issue 4's ``target`` (a TARGETS key): never rounded onto the other side of its goal."""
    if target is None:
        return _fmt(v)
    if target == "ece_after":
        return M.format_vs_goal(v, TARGETS[target], TARGET_OPS[target], digits=3, scale=1.0)
    s = M.format_vs_goal(v, TARGETS[target], TARGET_OPS[target])
    return s if s == "n/a" else s + "%"


def _fmt_ci(m: dict[str, Any], key: str, pct: bool = True) -> str:
    ci = m.get(f"{key}_ci")
    s = _fmt(m.get(key), pct)
    if ci:
        s += f" [{_fmt(ci[0], pct)}, {_fmt(ci[1], pct)}]"
    return s


def render_report(m: dict[str, Any]) -> str:
    """report.md: the human-readable view of ``metrics.json``."""
    src = m.get("source", {})
    lines = [f"# Evaluation: {src.get('model_name', 'model')} on {src.get('data', '?')}"
             f"{' (' + src['split'] + ' split)' if src.get('split') else ' (whole folder)'}", ""]
    lines += [f"- model: `{src.get('model', '?')}` ({src.get('backbone', '?')}, {src.get('backend', '?')}, "
              f"{src.get('variant', '')}, sha256 `{str(src.get('sha256', ''))[:12]}`), test-time augmentation: "
              f"{'flips' if src.get('tta') else 'none'}",
              f"- images: {m['n']} ({m['n_malignant']} malignant, {_fmt(m['n_malignant'] / m['n'])}); "
              f"{m.get('n_groups') or m['n']} {m['bootstrap_unit']}s; 95% intervals: percentile bootstrap over "
              f"{m['bootstrap_unit']}s ({m['n_boot']} resamples)",
              f"- calibration: temperature {m['temperature']:.3f}, logit bias {m.get('logit_bias', 0.0):.3f}, threshold {m['threshold']:.4f}, bands Low < "
              f"{m['band_edges']['low']:.4f} <= Medium < {m['band_edges']['high']:.4f} <= High"
              + ("" if m["calibrated"] else " **(NOT calibrated: interim defaults; run --calibrate on validation)**")]
    if src.get("command"):
        lines.append(f"- written by: `{src['command']}`")
    lines.append("")
    if src.get("calibrated_here"):
        lines += ["> These values were fitted on this very data (`--calibrate`): the figures below are in-sample. "
                  "Judge the model on the test split.", ""]
    lines += [f"**AUROC {_fmt_ci(m, 'auroc', pct=False)}**", "",
              "| rule | sensitivity | specificity | precision | F1 | accuracy |", "|---|---|---|---|---|---|"]
    for label, blk in ((f"operating point (p >= {m['threshold']:.4f})", m), ("p >= 0.5", m["at_0.5"])):
        lines.append(f"| {label} | " + " | ".join(_fmt_ci(blk, k) for k in M.CONFUSION_METRICS) + " |")
    lines += ["", f"Confusion at the operating point: TP {m['tp']}, FP {m['fp']}, TN {m['tn']}, FN {m['fn']}.", "",
              f"Calibration (ECE, 15 bins): {m['ece']['before']:.4f} before calibration, "
              f"{m['ece']['after']:.4f} after (temperature T = {m['temperature']:.3f}, logit bias b = "
              f"{m.get('logit_bias', 0.0):.3f}).", "",
              "## Risk bands", "", "| band | images | share of images | malignant | malignancy rate | "
              "share of all malignant |", "|---|---|---|---|---|---|"]
    goals = {("low", "malignant_rate"): "low_malignant_rate", ("low", "share_of_malignant"): "low_share_of_malignant",
             ("high", "malignant_rate"): "high_malignant_rate"}
    for b in ("low", "medium", "high"):
        r = m["bands"][b]
        cell = lambda key: _fmt_goal(r[key], goals.get((b, key)))  # noqa: E731
        lines.append(f"| {b} | {r['n']} | {_fmt(r['share_of_cases'])} | {r['n_malignant']} | "
                     f"{cell('malignant_rate')} | {cell('share_of_malignant')} |")
    lines += ["", "## Targets (issue 4; meant for the shipped model on the test split)", "",
              "| target | value | goal | met |", "|---|---|---|---|"]
    for k, t in m["targets"].items():
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        met += f" ({t['reason']})" if t.get("reason") else ""
        pct = k != "ece_after"
        lines.append(f"| {k} | {_fmt_goal(t['value'], k)} | {t['op']} {_fmt(t['goal'], pct)} | {met} |")
    if m["subgroups"]:
        lines += ["", "## Subgroups", "", "AUROC needs both classes in a subgroup (never within one `dx`); "
                  "sensitivity and specificity at the operating point.", ""]
        for name, res in m["subgroups"].items():
            lines += [f"### {name}", "", "| value | n | malignant | AUROC | sensitivity | specificity |",
                      "|---|---|---|---|---|---|"]
            for key, r in res.items():
                lines.append(f"| {key} | {r['n']} | {r['n_malignant']} | {_fmt(r['auroc'], pct=False)} | "
                             f"{_fmt(r['sensitivity'])} | {_fmt(r['specificity'])} |")
            lines.append("")
    lines += ["", "Plots: [ROC](roc.png), [precision-recall](pr.png), [calibration](calibration.png), "
              "[confusion matrix at the operating point](confusion.png).", "",
              "DermoHelper is a triage aid, not a diagnosis. These figures describe this data set only "
              "(HAM10000 is dermoscopic and mostly light skin).", ""]
    return "\n".join(lines)


def write_plots(y: np.ndarray, logits: np.ndarray, m: dict[str, Any], out: Path) -> list[Path]:
    """ROC, precision-recall, reliability (before/after temperature scaling) and the confusion matrix, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    p = M.apply_temperature(logits, m["temperature"], m.get("logit_bias", 0.0))
    p_raw = M.apply_temperature(logits, 1.0)
    paths = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)

    two = len(np.unique(y)) == 2
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if two:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"AUROC {m['auroc']:.3f}")
        ax.plot(1 - m["specificity"], m["sensitivity"], "o", label=f"operating point (t={m['threshold']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    ax.legend(loc="lower right")
    save(fig, "roc.png")

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if two:
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec)
        ax.axhline(y.mean(), ls=":", color="grey", label=f"prevalence {y.mean():.3f}")
        ax.plot(m["sensitivity"], m["precision"], "o", label="operating point")
        ax.legend(loc="upper right")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    save(fig, "pr.png")

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for probs, label in ((p_raw, f"T=1, ECE {m['ece']['before']:.3f}"),
                         (p, f"T={m['temperature']:.2f}, ECE {m['ece']['after']:.3f}")):
        r = M.reliability_table(y, probs, n_bins=10)
        xs = [a for a, c in zip(r["mean_p"], r["count"]) if c]
        ys = [b for b, c in zip(r["frac_malignant"], r["count"]) if c]
        ax.plot(xs, ys, "o-", label=label)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    for e in (m["band_edges"]["low"], m["band_edges"]["high"]):
        ax.axvline(e, color="k", lw=0.5, ls="--")
    ax.set(xlabel="predicted P(malignant)", ylabel="observed malignant fraction", title="Reliability (10 bins)",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    save(fig, "calibration.png")

    fig, ax = plt.subplots(figsize=(4, 3.6))
    cm = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["benign", "malignant"], yticklabels=["benign", "malignant"],
           xlabel="predicted", ylabel="true", title=f"Confusion at t={m['threshold']:.3f}")
    save(fig, "confusion.png")
    return paths


def write_outputs(out: str | Path, y: np.ndarray, logits: np.ndarray, m: dict[str, Any],
                  df: pd.DataFrame | None = None, plots: bool = True) -> Path:
    """metrics.json, report.md, predictions.csv and the plots into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(m, indent=1) + "\n")
    (out / "report.md").write_text(render_report(m))
    p = M.apply_temperature(logits, m["temperature"], m.get("logit_bias", 0.0))
    pred = pd.DataFrame({"image_id": df["image_id"].to_numpy() if df is not None else np.arange(len(y)),
                         "label": y, "logit_benign": logits[:, 0], "logit_malignant": logits[:, 1],
                         "probability": p, "band": M.assign_bands(p, m["band_edges"]["low"],
                                                                  m["band_edges"]["high"])})
    pred.to_csv(out / "predictions.csv", index=False)  # full precision: thresholds are scores
    if plots:
        write_plots(np.asarray(y), logits, m, out)
    return out


def run_evaluation(model: str | Path | None, data: str | Path, out: str | Path, split: str | None = None,
                   manifest: str | Path | None = DEFAULT_MANIFEST, calibrate: bool = False, tta: bool = False,
                   n_boot: int = 1000, batch_size: int = 64, backend: str = "auto", seed: int = 0,
                   progress: bool = False, plots: bool = True, cache_dir: str | Path | None = None,
                   command: str | None = None) -> dict[str, Any]:
    """The whole command: load, compute logits once, (calibrate), evaluate, write. Returns the metrics dict.
    ``command``: the command line that ran it, recorded in metrics.json and report.md."""
    if calibrate and split != "validation":
        raise ValueError(f"--calibrate fits temperature, threshold and bands and is only allowed on the validation "
                         f"split (got split={split!r}); run with --split validation, then evaluate on test")
    if calibrate and tta:
        raise ValueError("--calibrate with --tta would fit the calibration on flip-averaged logits, but the app, the "
                         "API and the ONNX file serve single-view logits: calibrate without --tta")
    if calibrate and model is not None and not Path(model).exists():
        raise ValueError(f"--calibrate writes into the model folder's config.json; {model} is not a local folder: "
                         "download it into a folder (dermo.hub.pull_model) and calibrate that folder")
    predictor = open_predictor(model, backend)
    df = load_labelled(data, split, manifest)
    y = df["label"].to_numpy()
    logger.info("evaluating %s on %d images of %s (split %s)", model, len(df), data, split)
    logits = cached_logits(predictor, df["path"].tolist(), tta, cache_dir, batch_size=batch_size, progress=progress)
    cfg = predictor.config
    calibration = None
    if calibrate:
        calibration = fit_calibration(y, logits)
        write_calibration(predictor.model_dir, calibration)
        cfg = ModelConfig(**{**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                             **{k: calibration[k] for k in CALIBRATION_KEYS}})
        predictor.config = cfg
    m = evaluate_logits(y, logits, cfg, df, n_boot=n_boot, seed=seed)
    info = predictor.info
    m = {**m, "source": {"model": str(model) if model is not None else "bundled (dermo/assets)",
                         "model_name": info["name"], "version": info["version"], "backbone": info["backbone"],
                         "backend": info["backend"], "variant": info["variant"], "sha256": info["sha256"],
                         "data": str(data), "split": split, "tta": tta, "calibrated_here": calibrate,
                         "command": command}}
    if calibration is not None:
        m["calibration"] = calibration
    write_outputs(out, y, logits, m, df, plots=plots)
    return m


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - exercised through tests via main([...])
    import argparse
    import shlex
    import sys

    ap = argparse.ArgumentParser(prog="python -m dermo.evaluate", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder, .onnx file or Hub id (default: bundled model)")
    ap.add_argument("--data", required=True, help="labelled folder with metadata.csv (file_name,label; lesion_id, age, sex, "
                    "localization, dx used when present; with --split, lesion ids missing from it come from the "
                    "manifest)")
    ap.add_argument("--split", default=None, choices=("train", "validation", "test"),
                    help="split of the committed manifest (default: the whole folder)")
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    ap.add_argument("--out", required=True, help="output folder (metrics.json, report.md, plots)")
    ap.add_argument("--calibrate", action="store_true",
                    help="fit temperature/threshold/bands on --split validation and write them into config.json")
    ap.add_argument("--tta", action="store_true", help="average logits over horizontal and vertical flips")
    ap.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--backend", default="auto", choices=("auto", "onnx", "torch"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no_plots", action="store_true")
    ap.add_argument("--cache", default=None, help="folder caching raw logits (keyed by weights, preprocessing, files)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import contextlib

    try:
        with contextlib.redirect_stdout(sys.stderr):  # huggingface_hub prints while loading weights
            m = run_evaluation(args.model, args.data, args.out, args.split, args.manifest, args.calibrate, args.tta,
                               args.n_boot, args.batch_size, args.backend, args.seed, args.progress,
                               not args.no_plots, args.cache,
                               command=shlex.join(["python", "-m", "dermo.evaluate", *(argv or sys.argv[1:])]))
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.calibrate:
        c = m["calibration"]
        print(f"calibrated on validation: temperature {c['temperature']:.4f}, logit bias {c['logit_bias']:.4f}, "
              f"(temperature alone: ECE {c['validation']['ece_temperature_only']:.4f}), threshold {c['threshold']:.4f}, "
              f"band_low {c['band_low']:.4f}, band_high {c['band_high']:.4f} -> written into config.json")
    ci = m["auroc_ci"] or [float("nan")] * 2
    print(f"n={m['n']} malignant={m['n_malignant']} AUROC {m['auroc'] if m['auroc'] is not None else float('nan'):.4f}"
          f" [{ci[0]:.4f}, {ci[1]:.4f}] sensitivity {_fmt(m['sensitivity'])} specificity {_fmt(m['specificity'])} "
          f"at t={m['threshold']:.4f}; ECE {m['ece']['before']:.4f} -> {m['ece']['after']:.4f}")
    print(f"wrote {Path(args.out) / 'metrics.json'} and report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
