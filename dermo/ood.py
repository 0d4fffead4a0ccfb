"""Out-of-distribution check: "this photo does not look like a skin lesion".

The classifier always answers benign or malignant, even for a cat or a screenshot. Before a band is shown, the
model's pooled ``embedding`` (``Prediction.embedding``, (C,)) is compared with the embeddings of the training
lesions; a photo whose features lie far from all of them gets "retake the photo" instead of a verdict.

Score (probabilistic PCA, i.e. a shrunk Mahalanobis distance):

* embeddings are L2-normalised (cosine geometry: the feature scale varies with exposure, the direction much less);
* on the TRAINING split: mean ``mu``, the top ``k`` principal directions ``V`` (k, C) with variances ``lam``, and
  the mean variance ``sigma2`` of the discarded directions;
* ``score(e) = sum_k ((e - mu) . V_k)^2 / (lam_k + s) + ||residual||^2 / sigma2`` where ``residual`` is the part
  of ``e - mu`` outside the k-dimensional subspace and ``s = shrinkage * mean(lam)`` keeps rarely used directions
  from dominating (the ridge of a shrunk covariance estimate). It is a squared distance: larger = stranger.

The threshold is the ``pass_rate`` quantile of the scores of the VALIDATION lesions (default 0.97, so that at least
95 % of validation lesions pass with a margin for the held-out test split). Stats are stored in the model folder as
``ood.npz``; ``config.json`` gets an ``ood`` key (file, threshold, pass_rate, k, fitted on what) so the detector
travels with the weights it was fitted on. It must be refitted whenever the weights change (after export too:
the int8 ONNX model's embeddings differ slightly from the float model's), which the CLI does::

    python -m dermo.ood --model dermo/assets --out dermo/assets

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
DEFAULT_PASS_RATE = 0.97
DEFAULT_COMPONENTS = 64
DEFAULT_SHRINKAGE = 0.05
MESSAGE = ("This photo does not look like a close-up of a skin lesion (it is too different from the lesion photos "
           "the model learned from). Retake it: fill the frame with the spot and some skin around it, in good "
           "light, without other objects.")


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
        if not 0.5 <= pass_rate < 1.0:
            raise ValueError(f"pass_rate={pass_rate}: use a share of validation lesions to pass, e.g. 0.97")
        s = self.score(val_embeddings)
        self.threshold = float(np.quantile(s, pass_rate, method="higher"))
        self.pass_rate = pass_rate
        return float((s <= self.threshold).mean())

    # ------------------------------------------------------------------------------------------------ storage
    def save(self, model_dir: str | Path, **meta: Any) -> Path:
        """Write ``ood.npz`` and the ``ood`` key of ``config.json`` (other keys kept)."""
        model_dir = Path(model_dir)
        cfg_path = model_dir / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path} not found: --out must be the model folder (with config.json)")
        path = model_dir / OOD_FILE
        np.savez(path, mean=self.mean.astype(np.float32), components=self.components.astype(np.float32),
                 variances=self.variances.astype(np.float64), noise_var=np.float64(self.noise_var))
        raw = json.loads(cfg_path.read_text())
        raw[CONFIG_KEY] = {"file": OOD_FILE, "method": "ppca-mahalanobis-l2", "threshold": self.threshold,
                           "pass_rate": self.pass_rate, "components": int(len(self.variances)), **meta}
        cfg_path.write_text(json.dumps(raw, indent=2) + "\n")
        return path


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


def read_ood_config(model_dir: str | Path) -> dict[str, Any] | None:
    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.is_file():
        return None
    return json.loads(cfg_path.read_text()).get(CONFIG_KEY)


def load_ood(model_dir: str | Path, model_sha256: str | None = None) -> OODDetector | None:
    """The detector stored with a model, or None when the folder has none (or it was fitted on other weights)."""
    meta = read_ood_config(model_dir)
    if not meta:
        return None
    path = Path(model_dir) / meta.get("file", OOD_FILE)
    if not path.is_file():
        logger.warning("config.json names %s but the file is missing: OOD check disabled", path)
        return None
    if model_sha256 and meta.get("model_sha256") and meta["model_sha256"] != model_sha256:
        logger.warning("OOD stats in %s were fitted on another model file (sha256 %s..., this one %s...): "
                       "OOD check disabled; refit with python -m dermo.ood", model_dir,
                       meta["model_sha256"][:12], model_sha256[:12])
        return None
    with np.load(path) as z:
        return OODDetector(z["mean"].astype(np.float64), z["components"].astype(np.float64),
                           z["variances"].astype(np.float64), float(z["noise_var"]),
                           float(meta["threshold"]), float(meta.get("pass_rate", DEFAULT_PASS_RATE)))


def check_ood(detector: OODDetector | None, embedding: np.ndarray | None, report) -> float | None:
    """Add a ``not_skin`` issue to a ``dermo.quality.QualityReport`` when the embedding is out of distribution.

    Returns the score (None when there is no detector or no embedding, e.g. an ONNX model without that output).
    """
    if detector is None or embedding is None:
        return None
    score = float(detector.score(np.asarray(embedding))[0])
    if score > detector.threshold:
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


def split_paths(data_dir: str | Path, split: str, manifest: str | Path, limit: int = 0,
                seed: int = 0) -> list[str]:
    """Image paths of one split; ``limit`` > 0 takes a seeded random subset (every lesion type kept in proportion)."""
    from .data import load_split

    df = load_split(data_dir, split, manifest)
    if limit and limit < len(df):
        df = df.sample(n=limit, random_state=seed).sort_index()
    return [str(Path(data_dir) / f) for f in df["file_name"]]


def fit_for_model(model: str | Path, out: str | Path | None = None, data_dir: str | Path | None = None,
                  manifest: str | Path | None = None, limit_train: int = 3000, pass_rate: float = DEFAULT_PASS_RATE,
                  components: int = DEFAULT_COMPONENTS, shrinkage: float = DEFAULT_SHRINKAGE,
                  batch_size: int = 64) -> dict[str, Any]:
    """Embed training and validation lesions with the model, fit, calibrate and save into ``out``; returns a summary."""
    from .config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST
    from .inference import Predictor

    data_dir = Path(data_dir or DEFAULT_DATA_DIR)
    manifest = Path(manifest or DEFAULT_MANIFEST)
    predictor = Predictor(model)
    train = embed_images(predictor, split_paths(data_dir, "train", manifest, limit_train), batch_size)
    val = embed_images(predictor, split_paths(data_dir, "validation", manifest), batch_size)
    det = fit_ood(train, components, shrinkage)
    achieved = det.calibrate(val, pass_rate)
    meta = {"model_sha256": predictor.sha256, "n_train": int(len(train)), "n_validation": int(len(val)),
            "validation_pass_rate": achieved, "shrinkage": shrinkage}
    det.save(out or predictor.model_dir, **meta)
    logger.info("OOD check fitted on %d training embeddings; threshold %.2f passes %.1f%% of %d validation lesions",
                len(train), det.threshold, 100 * achieved, len(val))
    return {"threshold": det.threshold, "pass_rate": pass_rate, **meta}


def main(argv: Iterable[str] | None = None) -> None:  # pragma: no cover - thin CLI
    import argparse

    p = argparse.ArgumentParser(description="Fit the out-of-distribution check of a model folder "
                                            "(training embeddings; threshold from validation).")
    p.add_argument("--model", required=True, help="model folder (config.json + model.onnx or model.safetensors)")
    p.add_argument("--out", default=None, help="folder to write ood.npz and config.json's 'ood' key "
                                               "(default: the model folder)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--manifest", default=None)
    p.add_argument("--limit-train", type=int, default=3000, help="random training images to fit on (0 = all)")
    p.add_argument("--pass-rate", type=float, default=DEFAULT_PASS_RATE)
    p.add_argument("--components", type=int, default=DEFAULT_COMPONENTS)
    p.add_argument("--shrinkage", type=float, default=DEFAULT_SHRINKAGE)
    a = p.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = a.out or a.model
    if a.out and Path(a.out).resolve() != Path(a.model).resolve() and not (Path(a.out) / "config.json").is_file():
        raise SystemExit(f"--out {a.out} has no config.json: give the model folder itself (or a copy of it)")
    summary = fit_for_model(a.model, out, a.data_dir, a.manifest, a.limit_train, a.pass_rate, a.components,
                            a.shrinkage)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
