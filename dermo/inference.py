"""Serving: ``Predictor`` runs a model (ONNX Runtime or PyTorch) on images and returns ``Prediction``s.

A model is a folder (or a Hub id, see ``dermo.hub``) holding ``config.json`` (a ``ModelConfig``: preprocessing,
labels, calibration temperature, operating threshold, band edges) and either ``model.onnx`` (served with ONNX
Runtime; ``config.json`` then also carries ``sha256`` of the file, checked on load) or ``model.safetensors``
(PyTorch, ``save_pretrained`` layout). With no path, the ONNX student bundled in ``dermo/assets`` is used, so
everything runs offline.

The probability is calibrated: ``P(malignant) = sigmoid((z1 - z0) / temperature + logit_bias)`` (Platt scaling of
the logit margin, fitted on validation; with logit_bias 0 it is ``softmax(logits / temperature)[1]``). Bands: Low below
``band_low``, High at or above ``band_high``, Medium between.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import ModelConfig
from .data import normalize, resize

logger = logging.getLogger(__name__)

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "assets"
ONNX_NAME = "model.onnx"
CONFIG_NAME = "config.json"
BANDS = ("low", "medium", "high")
BAND_TEXT = {
    "low": "Low risk: nothing in this photo looks like the malignant lesions the model learned. Keep an eye on "
           "the spot and see a doctor if it changes, bleeds, itches or looks different from your other moles.",
    "medium": "Medium risk: the model cannot rule out a malignant lesion. Have it looked at by a doctor or "
              "dermatologist in the coming weeks.",
    "high": "High risk: this looks like the malignant lesions the model learned. Please see a doctor or "
            "dermatologist soon; only an examination (and often a biopsy) can tell.",
}
DISCLAIMER = ("DermoHelper is a triage aid, not a diagnosis and not a medical device. It was trained on "
              "dermoscopic images (HAM10000, mostly light skin) and can be wrong, especially on phone photos "
              "and darker skin. Always see a doctor about a lesion that worries you.")


class ModelIntegrityError(RuntimeError):
    """The model file does not match the sha256 recorded in its config."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def format_probability(p: float, decimals: int = 1) -> str:
    """A probability as people read it: one decimal, and never a flat "0.0%" or "100.0%" the model cannot promise."""
    floor = 10.0 ** -decimals / 100  # the smallest share the shown digits can tell from zero
    if p < floor:
        return f"<{100 * floor:.{decimals}f}%"
    if p > 1 - floor:
        return f">{100 * (1 - floor):.{decimals}f}%"
    return f"{100 * p:.{decimals}f}%"


def format_banded(p: float, low: float, high: float) -> tuple[str, str, str | None]:
    """``(probability, low edge, high edge)`` as percentages, with as many decimals as it takes for the shown
    numbers to agree with the band: one decimal (e.g. 3.8%, "Low below 3.7%"), more only where rounding would put
    the shown probability on the wrong side of a shown edge (3.66% against an edge of 3.65%: 3.66% / 3.65%).
    The high edge is ``None`` when it lies above 1: that model's High band is empty (see ``bands_text``)."""
    band = band_of(p, low, high)
    no_high = high > 1.0
    for d in range(1, 7):
        r = lambda v: round(100 * v, d)  # noqa: E731
        shown_band = "low" if r(p) < r(low) else "high" if not no_high and r(p) >= r(high) else "medium"
        if shown_band == band:
            break
    return format_probability(p, d), f"{100 * low:.{d}f}%", None if no_high else f"{100 * high:.{d}f}%"


def bands_text(low: str, high: str | None) -> str:
    """The band edges as a clause, from ``format_banded``'s strings: "Low below 3.7%, High from 51.0%"."""
    if high is None:  # the validation scores left no High edge that keeps 95% of benign lesions out of it
        return f"Low below {low}; this model calls no probability High"
    return f"Low below {low}, High from {high}"


def reported(p: float, low: float, high: float, digits: int = 6) -> tuple[float, str]:
    """The probability as the API and the command line report it (``digits`` decimals) and the band of that very
    number, so that a caller checking ``probability >= band_edges.high`` always agrees with ``band`` (banding the
    unrounded value disagreed within 1e-6 of an edge)."""
    p = round(float(p), digits)
    return p, band_of(p, low, high)


def band_of(p: float, low: float, high: float) -> str:
    """``dermo.metrics.assign_band`` (the evaluation's rule, NaN refused), imported when first needed."""
    from .metrics import assign_band

    return assign_band(p, low, high)


@dataclass
class Prediction:
    probability: float  # calibrated P(malignant)
    band: str  # low / medium / high
    attention: np.ndarray  # (h, w) map summing to 1, what the classifier pooled over
    logits: list[float]
    embedding: np.ndarray | None = None  # pooled features (out-of-distribution check)

    def to_dict(self) -> dict[str, Any]:
        return {"probability": self.probability, "band": self.band, "logits": self.logits}


def read_config(model_dir: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """(ModelConfig, extra keys) from ``config.json``; extra keys are e.g. ``sha256``, ``onnx_variant``, ``ood``."""
    path = Path(model_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a model folder needs config.json beside its weights")
    raw = json.loads(path.read_text())
    known = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in raw.items() if k in known}), {k: v for k, v in raw.items()
                                                                        if k not in known}


class Predictor:
    """Loads a model once; ``predict`` runs one forward pass per image (batched for lists)."""

    def __init__(self, model: str | Path | None = None, backend: str = "auto", num_threads: int | None = None):
        path = Path(model) if model is not None else BUNDLED_MODEL_DIR
        if path.is_file() and path.suffix == ".onnx":
            onnx_file, model_dir = path, path.parent
        else:
            model_dir, onnx_file = path, path / ONNX_NAME
        if not model_dir.is_dir():
            raise FileNotFoundError(f"model {model} not found: give a folder with config.json, a .onnx file, "
                                    "or a Hub id through Predictor.from_pretrained")
        self.config, self.extra = read_config(model_dir)
        self.model_dir = model_dir
        if backend == "auto":
            backend = "onnx" if onnx_file.is_file() else "torch"
        self.backend = backend
        if backend == "onnx":
            expected = self.extra.get("sha256")
            actual = sha256_file(onnx_file)
            if expected and expected != actual:
                raise ModelIntegrityError(f"{onnx_file} is corrupted or was replaced: sha256 {actual[:12]}... "
                                          f"does not match {expected[:12]}... in {CONFIG_NAME}; download it again")
            self.sha256 = actual
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = num_threads or int(os.environ.get("DERMO_THREADS", "0")) or 0
            self.session = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
            self.output_names = [o.name for o in self.session.get_outputs()]
            self.file = onnx_file
        elif backend == "torch":
            from .models import load_model

            self.model = load_model(str(model_dir)).eval()
            self.file = model_dir / "model.safetensors"
            self.sha256 = sha256_file(self.file)
        else:
            raise ValueError(f"backend {backend!r}: use auto, onnx or torch")

    @classmethod
    def from_pretrained(cls, repo_id: str, revision: str | None = None, **kwargs) -> "Predictor":
        """Download (or reuse the cached copy of) a model from the Hugging Face Hub; see ``dermo.hub``. A local
        folder laid out like the Hub repository (a download, a ``push-model --dry-run`` folder) is used as it is:
        its ``onnx/`` model when it has one."""
        from .hub import pull_model

        local = Path(repo_id)
        if revision is None and local.is_dir():
            return cls(local / "onnx" if (local / "onnx" / "model.onnx").is_file() else local, **kwargs)
        return cls(pull_model(repo_id, revision=revision), **kwargs)

    # --------------------------------------------------------------------------------------------------- info
    @property
    def info(self) -> dict[str, Any]:
        c = self.config
        return {"name": c.name, "version": c.version, "backbone": c.backbone, "sha256": self.sha256,
                "backend": self.backend, "variant": self.extra.get("onnx_variant", "fp32"),
                "temperature": c.temperature, "logit_bias": c.logit_bias, "threshold": c.threshold,
                "band_edges": {"low": c.band_low, "high": c.band_high}, "calibrated": c.calibrated}

    # ------------------------------------------------------------------------------------------------ running
    def preprocess(self, images: Sequence[Any]) -> np.ndarray:
        """PIL images / paths / bytes -> float32 (N, 3, S, S) through the one preprocessing. Upright RGB PIL images
        (e.g. already through ``load_image``, as in the app) are not loaded again; any other image (another mode, an
        EXIF orientation still to apply, transparency) goes through ``load_image`` as a file would."""
        from PIL import Image

        from .imageio import load_image

        def ready(im) -> bool:
            if not (isinstance(im, Image.Image) and im.mode == "RGB" and "transparency" not in im.info):
                return False
            try:
                return im.getexif().get(0x0112, 1) == 1
            except Exception:  # noqa: BLE001 - unreadable EXIF: load_image drops it and keeps the photo
                return False

        arr = np.stack([resize(im if ready(im) else load_image(im), self.config.img_size) for im in images])
        return normalize(arr, self.config.mean, self.config.std)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """float32 (N, 3, S, S) -> logits (N, 2), attention (N, h, w), embedding (N, C) or None."""
        if self.backend == "onnx":
            outs = dict(zip(self.output_names, self.session.run(None, {"pixel_values": x.astype(np.float32)})))
            return outs["logits"], outs["attention"], outs.get("embedding")
        import torch

        with torch.no_grad():
            o = self.model(torch.from_numpy(x))
        return o.logits.numpy(), o.attention.numpy(), o.embedding.numpy()

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        from .metrics import apply_temperature

        return apply_temperature(logits, self.config.temperature, self.config.logit_bias)

    def predict_batch(self, images: Sequence[Any], batch_size: int = 32) -> list[Prediction]:
        out: list[Prediction] = []
        c = self.config
        for i in range(0, len(images), batch_size):
            logits, att, emb = self.forward(self.preprocess(images[i:i + batch_size]))
            for j, p in enumerate(self.probabilities(logits)):
                out.append(Prediction(float(p), band_of(float(p), c.band_low, c.band_high), att[j],
                                      [float(v) for v in logits[j]], None if emb is None else emb[j]))
        return out

    def predict(self, image: Any) -> Prediction:
        return self.predict_batch([image])[0]
