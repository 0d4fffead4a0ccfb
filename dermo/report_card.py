"""The picture the user sees and keeps: attention overlay and a one-page result card (PNG or PDF).

``overlay_attention(img, attention)`` upsamples the model's (h, w) attention map to the photo, maps it through a
colormap and alpha-blends it on top (brighter = where the classifier pooled its evidence from).
``render_report(path, ...)`` writes a card with the photo, the overlay, the band and what it means, the calibrated
probability, the model's name / version / sha256, the date and the disclaimer; the format follows the suffix
(``.png`` or ``.pdf``). Uses matplotlib's Agg backend only (no display needed).
"""
from __future__ import annotations

import datetime as _dt
import logging
import textwrap
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from .inference import bands_text, format_banded

logger = logging.getLogger(__name__)

COLORMAP = "inferno"
BAND_COLORS = {"low": "#2e7d32", "medium": "#ef6c00", "high": "#c62828"}
_LUT: np.ndarray | None = None


def _lut() -> np.ndarray:
    global _LUT
    if _LUT is None:
        import matplotlib

        _LUT = (matplotlib.colormaps[COLORMAP](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return _LUT


def overlay_attention(img: Image.Image, attention: np.ndarray, alpha: float = 0.45,
                      max_side: int = 512) -> Image.Image:
    """RGB photo + (h, w) attention map -> RGB overlay (longest side at most ``max_side``).

    The map is scaled to [0, 1] by its maximum (its absolute values only say how spread out it is), upsampled
    bilinearly to the photo, coloured with ``COLORMAP`` and blended with weight ``alpha * map`` so that regions the
    model ignored keep the photo's own colours.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    a = np.asarray(attention, np.float32)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"attention must be a non-empty (h, w) map, got shape {a.shape}")
    photo = img if img.mode == "RGB" else img.convert("RGB")
    if max(photo.size) > max_side:
        photo = photo.copy()  # never shrink the caller's image in place
        photo.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    a = a - a.min()
    a = a / a.max() if a.max() > 0 else np.zeros_like(a)
    up = np.asarray(Image.fromarray(a, "F").resize(photo.size, Image.Resampling.BILINEAR), np.float32)
    up = np.clip(up, 0.0, 1.0)
    colour = _lut()[(up * 255).astype(np.uint8)].astype(np.float32)
    w = (alpha * (0.35 + 0.65 * up))[..., None]  # a light tint everywhere, strong where attention is high
    base = np.asarray(photo, np.float32)
    return Image.fromarray(np.clip(base * (1 - w) + colour * w, 0, 255).astype(np.uint8), "RGB")


def render_report(path: str | Path, photo: Image.Image, overlay: Image.Image, result: Mapping[str, Any],
                  band_text: str, disclaimer: str, when: _dt.datetime | None = None) -> Path:
    """Write the result card to ``path`` (.png or .pdf); ``result`` is the app's JSON (probability, band, model).

    ``result`` needs ``probability``, ``band``, ``band_edges`` {low, high} and ``model`` {name, version, sha256};
    ``calibrated`` (bool) says whether the probability was calibrated.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf"):
        raise ValueError(f"report {path.name}: use a .png or .pdf file name")
    when = when or _dt.datetime.now(_dt.timezone.utc)
    band = str(result["band"])
    model = result["model"]
    edges = result["band_edges"]

    fig = Figure(figsize=(8.27, 9.5), dpi=100)  # A4 width
    fig.text(0.5, 0.965, "DermoHelper result", ha="center", va="top", fontsize=18, weight="bold")
    for i, (im, title) in enumerate(((photo, "Photo"), (overlay, "Where the model looked"))):
        ax = fig.add_axes((0.05 + 0.47 * i, 0.50, 0.43, 0.40))
        ax.imshow(np.asarray(im.convert("RGB")))
        ax.set_title(title, fontsize=11)
        ax.axis("off")
    fig.text(0.05, 0.46, f"Risk band: {band.upper()}", fontsize=20, weight="bold",
             color=BAND_COLORS.get(band, "black"), va="top")
    how = "calibrated on validation images" if result.get("calibrated") else "NOT yet calibrated"
    shown, low, high = format_banded(float(result["probability"]), edges["low"], edges["high"])
    prob = (f"Estimated probability that the lesion is malignant ({how}): {shown}."
            f"  Bands: {bands_text(low, high)}.")
    y = 0.40
    for para, size in ((prob, 10), (band_text, 11)):
        lines = textwrap.wrap(para, 95)
        fig.text(0.05, y, "\n".join(lines), fontsize=size, va="top")
        y -= 0.026 * len(lines) + 0.02
    meta = (f"Model: {model['name']} {model['version']}   sha256: {model['sha256']}\n"
            f"Date: {when.strftime('%Y-%m-%d %H:%M %Z').strip()}")
    fig.text(0.05, y - 0.01, meta, fontsize=7.5, va="top", family="monospace")
    fig.text(0.05, 0.11, "\n".join(textwrap.wrap(disclaimer, 100)), fontsize=9.5, va="top", style="italic",
             bbox={"facecolor": "#fff3e0", "edgecolor": "#ef6c00", "boxstyle": "round,pad=0.6"})
    fig.savefig(path, format=path.suffix[1:].lower())
    logger.debug("wrote report %s", path)
    return path
