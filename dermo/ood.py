"""Out-of-distribution check: "this photo does not look like a skin lesion".

The classifier always answers benign or malignant, even for a cat or a screenshot. Before a band is shown, the
model's pooled ``embedding`` (``Prediction.embedding``, (C,)) is compared with the embeddings of the training
lesions; a photo whose features lie far from all of them gets "retake the photo" instead of a verdict.

Distance of one fitted class (probabilistic PCA, i.e. a shrunk Mahalanobis distance), ``OODDetector``:

* embeddings are L2-normalised (cosine geometry: the feature scale varies with exposure, the direction much less);
* on training embeddings: mean ``mu``, the top ``k`` principal directions ``V`` (k, C) with variances ``lam``, and
  the mean variance ``sigma2`` of the discarded directions;
* ``score(e) = sum_k ((e - mu) . V_k)^2 / (lam_k + s) + ||residual||^2 / sigma2`` where ``residual`` is the part
  of ``e - mu`` outside the k-dimensional subspace and ``s = shrinkage * mean(lam)`` keeps rarely used directions
  from dominating (the ridge of a shrunk covariance estimate). It is a squared distance: larger = stranger.

Two methods (config.json's ``ood.method``):

* ``ppca-mahalanobis-l2-classwise`` (default, ``ClassOODDetector``): one PPCA per label (benign, malignant), each
  fitted on the TRAINING lesions of that label only; ``score(e) = min_c score_c(e) / scale_c`` (near enough to ANY
  class passes), threshold 1. The scales are solved on the VALIDATION lesions so that EACH label passes at least
  ``pass_rate`` (``calibrate``). Why: one PPCA fitted on all lesions is dominated by the common benign naevi (two
  thirds of HAM10000), so the rarer and more varied malignant lesions sit in its tail and were rejected about twice
  as often as benign ones (validation: 4.8 % against 2.6 %, ``reports/ood_selection.md``); a check that drops
  cancers first is worse than none. Per-label fits and a per-label pass rate make the rejection rate the same by construction on validation.
* ``ppca-mahalanobis-l2`` (``OODDetector``, the earlier method, still loaded): one PPCA on all training lesions,
  threshold = the ``pass_rate`` quantile of all validation scores.

Stats are stored in the model folder as ``ood.npz``; ``config.json`` gets an ``ood`` key (file, method, threshold,
pass_rate, components, fitted on what) so the detector travels with the weights it was fitted on. It must be
refitted whenever the weights change (after export too: the int8 ONNX model's embeddings differ slightly from the
float model's), which the CLI does::

    python -m dermo.ood --model dermo/assets

The score depends on the model, so it is honest only for the model it was fitted on; ``load_ood`` refuses stats
whose ``model_sha256`` differs from the model file's.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

OOD_FILE = "ood.npz"
CONFIG_KEY = "ood"
METHOD_POOLED = "ppca-mahalanobis-l2"
METHOD_CLASSWISE = "ppca-mahalanobis-l2-classwise"
METHODS = (METHOD_CLASSWISE, METHOD_POOLED)
DEFAULT_PASS_RATE = 0.97
DEFAULT_COMPONENTS = 64  # pooled method
DEFAULT_CLASS_COMPONENTS = 128  # class-wise method, per class (benchmarks/ood_selection.py chose it on validation)
DEFAULT_SHRINKAGE = 0.05
MESSAGE = ("This photo does not look like a close-up of a skin lesion (it is too different from the lesion photos "
           "the model learned from). Retake it: fill the frame with the spot and some skin around it, in good "
           "light, without other objects.")


def _check_pass_rate(pass_rate: float) -> None:
    if not 0.5 <= pass_rate < 1.0:
        raise ValueError(f"pass_rate={pass_rate}: use a share of validation lesions to pass, e.g. 0.97")


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[None]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class OODDetector:
    """Fitted statistics; ``score`` (N, C) -> (N,) squared distances; ``threshold`` set by ``calibrate``."""

    mean: np.ndarray  # (C,)
    components: np.ndarray  # (k, C), orthonormal rows
    variances: np.ndarray  # (k,) variances along the components, shrinkage already added
    noise_var: float  # mean variance of the discarded directions
    threshold: float = float("inf")
    pass_rate: float = DEFAULT_PASS_RATE

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        d = _l2(embeddings) - self.mean
        z = d @ self.components.T  # (N, k)
        resid = d - z @ self.components
        return (z ** 2 / self.variances).sum(1) + (resid ** 2).sum(1) / self.noise_var

    def is_ood(self, embeddings: np.ndarray) -> np.ndarray:
        return self.score(embeddings) > self.threshold

    def calibrate(self, val_embeddings: np.ndarray, pass_rate: float = DEFAULT_PASS_RATE) -> float:
        """Set the threshold so that ``pass_rate`` of the validation lesions pass; returns the achieved rate."""
        _check_pass_rate(pass_rate)
        s = self.score(val_embeddings)
        self.threshold = float(np.quantile(s, pass_rate, method="higher"))
        self.pass_rate = pass_rate
        return float((s <= self.threshold).mean())

    # ------------------------------------------------------------------------------------------------ storage
    def save(self, model_dir: str | Path, **meta: Any) -> Path:
        """Write ``ood.npz`` and the ``ood`` key of ``config.json`` (other keys kept)."""
        path = _ood_path(model_dir)
        np.savez(path, mean=self.mean.astype(np.float32), components=self.components.astype(np.float32),
                 variances=self.variances.astype(np.float64), noise_var=np.float64(self.noise_var))
        _write_config(model_dir, {"file": OOD_FILE, "method": METHOD_POOLED, "threshold": self.threshold,
                                  "pass_rate": self.pass_rate, "components": int(len(self.variances)), **meta})
        return path


def _ood_path(model_dir: str | Path) -> Path:
    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: --out must be the model folder (with config.json)")
    return Path(model_dir) / OOD_FILE


def _write_config(model_dir: str | Path, entry: dict[str, Any]) -> None:
    cfg_path = Path(model_dir) / "config.json"
    raw = json.loads(cfg_path.read_text())
    raw[CONFIG_KEY] = entry
    cfg_path.write_text(json.dumps(raw, indent=2) + "\n")


def fit_ood(train_embeddings: np.ndarray, components: int = DEFAULT_COMPONENTS,
            shrinkage: float = DEFAULT_SHRINKAGE) -> OODDetector:
    """Fit mean, principal subspace and residual variance on (N, C) training embeddings (threshold unset)."""
    x = _l2(train_embeddings)
    n, c = x.shape
    k = int(min(components, n - 1, c - 1))
    if k < 1:
        raise ValueError(f"need at least 2 training embeddings of dimension >= 2 to fit the OOD check, got {x.shape}")
    mu = x.mean(0)
    _, s, vt = np.linalg.svd(x - mu, full_matrices=False)
    var = s ** 2 / max(n - 1, 1)  # (min(n, c),)
    lam = var[:k]
    rest = var[k:]
    # Discarded directions: their mean variance over the full C-dimensional space (zeros beyond rank count too).
    noise = float(rest.sum() / max(c - k, 1)) if rest.size else 0.0
    noise = max(noise, 1e-3 * float(lam.mean()), 1e-12)
    return OODDetector(mu, vt[:k], lam + shrinkage * float(lam.mean()), noise)


@dataclass
class ClassOODDetector:
    """One ``OODDetector`` per class; ``score`` (N, C) -> (N,) = min over classes of ``score_c / scale_c``.

    A lesion passes when it is near enough to ANY class (``score <= threshold``, 1 after ``calibrate``). The scales
    put each class's boundary where at least ``pass_rate`` of that class's validation lesions pass.
    """

    classes: list[str]
    detectors: list[OODDetector]
    scales: np.ndarray  # (K,)
    threshold: float = float("inf")
    pass_rate: float = DEFAULT_PASS_RATE

    def class_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, C) -> (N, K) each class's squared distance divided by its scale."""
        return np.stack([d.score(embeddings) for d in self.detectors], 1) / self.scales

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        return self.class_scores(embeddings).min(1)

    def is_ood(self, embeddings: np.ndarray) -> np.ndarray:
        return self.score(embeddings) > self.threshold

    def calibrate(self, val_embeddings: np.ndarray, val_labels: Sequence[Any],
                  pass_rate: float = DEFAULT_PASS_RATE, max_iter: int = 100) -> dict[str, float]:
        """Solve the scales so that at least ``pass_rate`` of EACH class's validation lesions pass; threshold 1.

        Class c's scale is moved (the others fixed) to just above the smallest value at which ``pass_rate`` of
        class c pass, counting those already let through by another class's detector; repeated until no scale
        moves (if it cycles instead, the largest scales of the last sweep are kept). Returns the achieved pass
        rate per class and overall (``"all"``).
        """
        _check_pass_rate(pass_rate)
        labels = np.asarray([str(v) for v in val_labels])
        raw = np.stack([d.score(val_embeddings) for d in self.detectors], 1)  # (N, K) unscaled
        if len(labels) != len(raw):
            raise ValueError(f"{len(raw)} validation embeddings but {len(labels)} labels")
        members = [labels == c for c in self.classes]
        for c, m in zip(self.classes, members):
            if not m.any():
                raise ValueError(f"no validation lesion of class {c!r}: the per-class scales need each class")
        scales = np.array([np.quantile(raw[m, i], pass_rate, method="higher") for i, m in enumerate(members)])
        for _ in range(max_iter):
            before = scales.copy()
            sweep = [before]
            for i, m in enumerate(members):
                others = (np.delete(raw[m] / scales, i, 1).min(1) <= 1) if len(scales) > 1 else np.zeros(m.sum(), bool)
                need = int(np.ceil(pass_rate * m.sum() - 1e-9)) - int(others.sum())
                rest = np.sort(raw[m][~others, i])
                if need <= 0:  # the other classes already pass enough of this one: just below its nearest lesion
                    scales[i] = 0.999 * raw[m, i].min()
                elif need < len(rest):
                    # between the last lesion that must pass and the first that need not (geometric mean): no
                    # lesion sits on the boundary, where float32 storage or batch size could flip it
                    scales[i] = float(np.sqrt(rest[need - 1] * rest[need]))
                else:
                    scales[i] = 1.001 * rest[-1]
                sweep.append(scales.copy())
            if np.array_equal(before, scales):
                break
        else:
            # Cycling: each class met its target right after its own update, and a larger scale never lets fewer
            # lesions through, so the largest scales of the last sweep meet every target (still off any lesion).
            scales = np.max(sweep, 0)
        passed = (raw / scales).min(1) <= 1
        assert all(passed[m].sum() >= np.ceil(pass_rate * m.sum() - 1e-9) for m in members), "a class left short"
        self.scales = scales
        self.threshold = 1.0
        self.pass_rate = pass_rate
        ok = self.score(val_embeddings) <= self.threshold
        return {**{c: float(ok[m].mean()) for c, m in zip(self.classes, members)}, "all": float(ok.mean())}

    def save(self, model_dir: str | Path, **meta: Any) -> Path:
        """Write ``ood.npz`` (per class i: ``mean_i``, ``components_i``, ``variances_i``, ``noise_var_i``; and
        ``classes``, ``scales``) and the ``ood`` key of ``config.json`` (other keys kept)."""
        path = _ood_path(model_dir)
        arrays: dict[str, np.ndarray] = {"classes": np.array(self.classes, dtype=str),
                                         "scales": self.scales.astype(np.float64)}
        for i, d in enumerate(self.detectors):
            arrays.update({f"mean_{i}": d.mean.astype(np.float32), f"components_{i}": d.components.astype(np.float32),
                           f"variances_{i}": d.variances.astype(np.float64), f"noise_var_{i}": np.float64(d.noise_var)})
        np.savez(path, **arrays)
        _write_config(model_dir, {"file": OOD_FILE, "method": METHOD_CLASSWISE, "threshold": self.threshold,
                                  "pass_rate": self.pass_rate, "classes": list(self.classes),
                                  "scales": [float(v) for v in self.scales],
                                  "components": [int(len(d.variances)) for d in self.detectors], **meta})
        return path


def fit_class_ood(train_embeddings: np.ndarray, train_labels: Sequence[Any],
                  components: int = DEFAULT_CLASS_COMPONENTS, shrinkage: float = DEFAULT_SHRINKAGE) -> ClassOODDetector:
    """One PPCA per class of (N, C) training embeddings with (N,) labels (scales 1, threshold unset)."""
    labels = np.asarray([str(v) for v in train_labels])
    if len(labels) != len(train_embeddings):
        raise ValueError(f"{len(train_embeddings)} training embeddings but {len(labels)} labels")
    classes = sorted({str(v) for v in labels})
    dets = []
    for c in classes:
        try:
            dets.append(fit_ood(np.asarray(train_embeddings)[labels == c], components, shrinkage))
        except ValueError as e:
            raise ValueError(f"class {c!r}: {e}") from None
    return ClassOODDetector(classes, dets, np.ones(len(classes)))


def read_ood_config(model_dir: str | Path) -> dict[str, Any] | None:
    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.is_file():
        return None
    return json.loads(cfg_path.read_text()).get(CONFIG_KEY)


def load_ood(model_dir: str | Path, model_sha256: str | None = None) -> OODDetector | ClassOODDetector | None:
    """The detector stored with a model, or None when the folder has none (or it was fitted on other weights)."""
    meta = read_ood_config(model_dir)
    if not meta:
        return None
    name = Path(str(meta.get("file", OOD_FILE)))
    if name.is_absolute() or ".." in name.parts:  # a downloaded config must not point outside its folder
        logger.warning("config.json names %s, outside the model folder: OOD check disabled", name)
        return None
    path = Path(model_dir) / name
    if not path.is_file():
        logger.warning("config.json names %s but the file is missing: OOD check disabled", path)
        return None
    if model_sha256 and not meta.get("model_sha256"):
        logger.warning("OOD stats in %s do not say which model file they were fitted on: OOD check disabled; refit "
                       "with python -m dermo.ood", model_dir)
        return None
    if model_sha256 and meta["model_sha256"] != model_sha256:
        logger.warning("OOD stats in %s were fitted on another model file (sha256 %s..., this one %s...): "
                       "OOD check disabled; refit with python -m dermo.ood", model_dir,
                       meta["model_sha256"][:12], model_sha256[:12])
        return None
    method = meta.get("method", METHOD_POOLED)
    if method not in METHODS:
        logger.warning("OOD stats in %s use method %r, which this version does not know (%s): OOD check disabled",
                       model_dir, method, ", ".join(METHODS))
        return None
    threshold, pass_rate = float(meta["threshold"]), float(meta.get("pass_rate", DEFAULT_PASS_RATE))
    with np.load(path) as z:
        if method == METHOD_POOLED:
            return OODDetector(z["mean"].astype(np.float64), z["components"].astype(np.float64),
                               z["variances"].astype(np.float64), float(z["noise_var"]), threshold, pass_rate)
        dets = [OODDetector(z[f"mean_{i}"].astype(np.float64), z[f"components_{i}"].astype(np.float64),
                            z[f"variances_{i}"].astype(np.float64), float(z[f"noise_var_{i}"]))
                for i in range(len(z["classes"]))]
        return ClassOODDetector([str(c) for c in z["classes"]], dets, z["scales"].astype(np.float64), threshold,
                                pass_rate)


def check_ood(detector: OODDetector | ClassOODDetector | None, embedding: np.ndarray | None, report) -> float | None:
    """Add a ``not_skin`` issue to a ``dermo.quality.QualityReport`` when the embedding is out of distribution.

    Returns the score (None when there is no detector or no embedding, e.g. an ONNX model without that output).
    """
    if detector is None or embedding is None:
        return None
    score = float(detector.score(np.asarray(embedding))[0])
    if not np.isfinite(score) or score > detector.threshold:  # an embedding it cannot score is not passed either
        report.add_issue("not_skin", MESSAGE, ood_score=score, ood_threshold=detector.threshold)
    else:
        report.measures.update(ood_score=score, ood_threshold=detector.threshold)
    return score


# ---------------------------------------------------------------------------------------------------- embeddings
def embed_images(predictor, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
    """(N, C) embeddings of image paths / PIL images through ``predictor`` (one preprocessing, one forward)."""
    out = []
    for i in range(0, len(images), batch_size):
        _, _, emb = predictor.forward(predictor.preprocess(images[i:i + batch_size]))
        if emb is None:
            raise ValueError(f"model {predictor.model_dir} has no 'embedding' output; re-export it with the "
                             "embedding output (dermo.export) to use the OOD check")
        out.append(np.asarray(emb, np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def split_frame(data_dir: str | Path, split: str, manifest: str | Path, limit: int = 0, seed: int = 0):
    """Metadata rows of one split; ``limit`` > 0 takes a seeded random subset (every lesion type kept in proportion)."""
    from .data import load_split

    df = load_split(data_dir, split, manifest)
    if limit and limit < len(df):
        df = df.sample(n=limit, random_state=seed).sort_index()
    return df


def split_paths(data_dir: str | Path, split: str, manifest: str | Path, limit: int = 0,
                seed: int = 0) -> list[str]:
    """Image paths of one split (see ``split_frame``)."""
    return [str(Path(data_dir) / f) for f in split_frame(data_dir, split, manifest, limit, seed)["file_name"]]


def fit_for_model(model: str | Path, out: str | Path | None = None, data_dir: str | Path | None = None,
                  manifest: str | Path | None = None, limit_train: int = 0, pass_rate: float = DEFAULT_PASS_RATE,
                  components: int | None = None, shrinkage: float = DEFAULT_SHRINKAGE,
                  batch_size: int = 64, method: str = METHOD_CLASSWISE) -> dict[str, Any]:
    """Embed training and validation lesions with the model, fit, calibrate and save into ``out``; returns a summary.

    ``method`` is one of ``METHODS``; the class-wise one fits one detector per label name of the model's config
    (metadata ``label`` 0/1 -> benign/malignant) and needs both labels in the training and validation splits.
    ``components`` None: the method's default (``DEFAULT_CLASS_COMPONENTS`` per class, ``DEFAULT_COMPONENTS``).
    """
    from .config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST
    from .inference import Predictor

    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {', '.join(METHODS)}")
    data_dir = Path(data_dir or DEFAULT_DATA_DIR)
    manifest = Path(manifest or DEFAULT_MANIFEST)
    predictor = Predictor(model)
    names = list(predictor.config.labels)
    frames = {s: split_frame(data_dir, s, manifest, limit_train if s == "train" else 0) for s in ("train", "validation")}
    emb = {s: embed_images(predictor, [str(data_dir / f) for f in df["file_name"]], batch_size)
           for s, df in frames.items()}
    labels = {s: [names[int(v)] for v in df["label"]] for s, df in frames.items()}
    meta: dict[str, Any] = {"model_sha256": predictor.sha256, "n_train": int(len(emb["train"])),
                            "n_validation": int(len(emb["validation"])), "shrinkage": shrinkage}
    if method == METHOD_POOLED:
        det: OODDetector | ClassOODDetector = fit_ood(emb["train"], components or DEFAULT_COMPONENTS, shrinkage)
        meta["validation_pass_rate"] = det.calibrate(emb["validation"], pass_rate)
    else:
        det = fit_class_ood(emb["train"], labels["train"], components or DEFAULT_CLASS_COMPONENTS, shrinkage)
        rates = det.calibrate(emb["validation"], labels["validation"], pass_rate)
        meta.update(validation_pass_rate=rates.pop("all"), validation_pass_rate_by_class=rates,
                    n_train_by_class={c: labels["train"].count(c) for c in det.classes},
                    n_validation_by_class={c: labels["validation"].count(c) for c in det.classes})
    det.save(out or predictor.model_dir, **meta)
    logger.info("OOD check (%s) fitted on %d training embeddings; threshold %.4g passes %.1f%% of %d validation "
                "lesions", method, len(emb["train"]), det.threshold, 100 * meta["validation_pass_rate"],
                len(emb["validation"]))
    return {"method": method, "threshold": det.threshold, "pass_rate": pass_rate, **meta}


def main(argv: Iterable[str] | None = None) -> None:  # pragma: no cover - thin CLI
    import argparse

    p = argparse.ArgumentParser(description="Fit the out-of-distribution check of a model folder "
                                            "(training embeddings; threshold from validation).")
    p.add_argument("--model", required=True, help="model folder (config.json + model.onnx or model.safetensors)")
    p.add_argument("--out", default=None, help="folder to write ood.npz and config.json's 'ood' key "
                                               "(default: the model folder)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--manifest", default=None)
    p.add_argument("--limit-train", type=int, default=0, help="random training images to fit on (0 = all)")
    p.add_argument("--method", default=METHOD_CLASSWISE, choices=METHODS,
                   help="one detector per label, each label passing --pass-rate of its validation lesions "
                        "(default), or one detector for all lesions (the earlier method)")
    p.add_argument("--pass-rate", type=float, default=DEFAULT_PASS_RATE)
    p.add_argument("--components", type=int, default=None,
                   help=f"principal directions per detector (default {DEFAULT_CLASS_COMPONENTS} per class for the "
                        f"class-wise method, {DEFAULT_COMPONENTS} for the pooled one)")
    p.add_argument("--shrinkage", type=float, default=DEFAULT_SHRINKAGE)
    a = p.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = a.out or a.model
    if a.out and Path(a.out).resolve() != Path(a.model).resolve() and not (Path(a.out) / "config.json").is_file():
        raise SystemExit(f"--out {a.out} has no config.json: give the model folder itself (or a copy of it)")
    summary = fit_for_model(a.model, out, a.data_dir, a.manifest, a.limit_train, a.pass_rate, a.components,
                            a.shrinkage, method=a.method)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
