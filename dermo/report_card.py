"""The picture the user sees and keeps: attention overlay and a one-page result card (PNG or PDF).

``overlay_attention(img, attention)`` upsamples the model's (h, w) attention map to the photo, maps it through a
colormap and alpha-blends it on top (brighter = where the classifier pooled its evidence from).
``render_report(path, ...)`` writes a phone-sized card with the photo, the overlay, the band and what it means, the calibrated
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
BAND_COLORS = {"low": "#2e7d32", "medium": "#ef6c00", "high": "#c62828"}  # borders and marks (3:1 on white)
# The band's name as text: at least 4.5:1 on white (WCAG AA for any size; the border orange is 3.1:1) and on the
# dark theme's backgrounds (the light colours are 6.8:1 or more on Gradio's darkest and lightest dark greys).
BAND_TEXT_COLORS = {"low": "#2e7d32", "medium": "#b95000", "high": "#c62828"}
BAND_TEXT_COLORS_DARK = {"low": "#81c784", "medium": "#ffb74d", "high": "#ef9a9a"}
CARD_WIDTH_IN, CARD_DPI = 5.4, 200  # the result card: 1080 px wide
FULL_CONTRAST = 2.0  # a heatmap cell with this many times the uniform share of the weight is drawn at full colour
_LUT: np.ndarray | None = None


def _lut() -> np.ndarray:
    global _LUT
    if _LUT is None:
        import matplotlib

        _LUT = (matplotlib.colormaps[COLORMAP](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return _LUT


def colour_key(n: int = 6) -> list[str]:
    """``n`` hex colours along the heatmap's colour map, from the least weighed cells to the most (a key for it)."""
    lut = _lut()
    return ["#%02x%02x%02x" % tuple(int(c) for c in lut[round(i * 255 / (n - 1))]) for i in range(n)]


def attention_strength(attention: np.ndarray, full_at: float | None = None) -> float:
    """How strongly :func:`overlay_attention` draws ``attention``, from 0 (an even spread: a faint tint) to 1 (its
    peak cell holds ``full_at`` = :data:`FULL_CONTRAST` times the uniform share or more: full colour)."""
    a = np.nan_to_num(np.clip(np.asarray(attention, np.float64), 0.0, None))
    if a.size == 0 or a.sum() <= 0:
        return 0.0
    full_at = FULL_CONTRAST if full_at is None else float(full_at)
    return float(np.clip((a.max() / a.mean() - 1.0) / (full_at - 1.0), 0.0, 1.0))


def overlay_attention(img: Image.Image, attention: np.ndarray, alpha: float = 0.45,
                      max_side: int = 512, full_at: float | None = None) -> Image.Image:
    """RGB photo + (h, w) attention map -> RGB overlay (longest side at most ``max_side``).

    Each cell's weight is taken relative to the uniform share (1 / cells): the map's shape is drawn (its lowest cell
    at no colour, its highest at the most), at a strength set by how far its peak rises above that share, full from
    ``full_at`` (default :data:`FULL_CONTRAST`: a cell with twice the uniform share) on. So a map that spreads the
    weight evenly stays a faint tint, and rounding noise on a flat map is not drawn as a sharp spot (a plain min-max
    stretch drew any map at full contrast). The map is upsampled bilinearly, coloured with ``COLORMAP`` and blended
    with weight ``alpha * map``, so that regions the model ignored keep the photo's own colours.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    a = np.asarray(attention, np.float32)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"attention must be a non-empty (h, w) map, got shape {a.shape}")
    full_at = FULL_CONTRAST if full_at is None else float(full_at)
    photo = img if img.mode == "RGB" else img.convert("RGB")
    if max(photo.size) > max_side:
        photo = photo.copy()  # never shrink the caller's image in place
        photo.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    strength = attention_strength(a, full_at)
    a = np.nan_to_num(np.clip(a.astype(np.float64), 0.0, None))
    if a.sum() > 0:
        rel = a / a.mean()  # 1 = the uniform share
        spread = rel.max() - rel.min()
        a = ((rel - rel.min()) / spread * strength if spread > 1e-6 else np.zeros_like(rel)).astype(np.float32)
    else:
        a = np.zeros_like(a, dtype=np.float32)
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
    how = "calibrated on validation images" if result.get("calibrated") else "NOT yet calibrated"
    shown, low, high = format_banded(float(result["probability"]), edges["low"], edges["high"])
    prob = (f"Estimated probability that the lesion is malignant ({how}): {shown}."
            f"  Bands: {bands_text(low, high)}.")
    meta = [f"Model: {model['name']} {model['version']}", f"sha256: {model['sha256']}",
            f"Date: {when.strftime('%Y-%m-%d %H:%M %Z').strip()}"]
    # Laid out for a phone screen, where it is mostly looked at and shown: a narrow portrait card (1080 px wide at
    # CARD_DPI), text sized to stay legible at a phone's width (the disclaimer no smaller than the body), laid out top
    # to bottom in inches, so the card is as tall as its text.
    width, margin = CARD_WIDTH_IN, 0.3
    blocks: list[tuple[str, float, dict]] = [  # (text, font size in pt, matplotlib text properties)
        (f"Risk band: {band.upper()}", 24, {"weight": "bold", "color": BAND_TEXT_COLORS.get(band, "black")}),
        ("\n".join(textwrap.wrap(band_text, 44)), 14, {}),
        ("\n".join(textwrap.wrap(prob, 48)), 13, {}),
        ("\n".join(meta), 8, {"family": "monospace", "color": "#333333"}),
    ]
    disclaimer_text = "\n".join(textwrap.wrap(disclaimer, 48))
    line = lambda size: size * 1.4 / 72  # noqa: E731 - inches per line of text of ``size`` pt
    photo_h = (width - 3 * margin) / 2 * 3 / 4 + 0.35  # two 4:3 images side by side, and their titles
    key_h = 0.3  # the heatmap's colour key, under it
    height = 0.9 + photo_h + key_h + sum(t.count("\n") * line(sz) + line(sz) + 0.18 for t, sz, _ in blocks) \
        + (disclaimer_text.count("\n") + 1) * line(13) + 0.6
    fig = Figure(figsize=(width, height), dpi=CARD_DPI)
    y = height - 0.25  # inches from the bottom edge
    fig.text(0.5, y / height, "DermoHelper result", ha="center", va="top", fontsize=20, weight="bold")
    y -= 0.5
    side = (width - 3 * margin) / 2
    for i, (im, title) in enumerate(((photo, "Photo"), (overlay, "Where the model looked"))):
        ax = fig.add_axes(((margin + i * (side + margin)) / width, (y - photo_h) / height, side / width,
                           (photo_h - 0.35) / height))
        ax.imshow(np.asarray(im.convert("RGB")))
        ax.set_title(title, fontsize=12)
        ax.axis("off")
    y -= photo_h
    x0 = margin + side + margin  # under the heatmap: its colour map, least weighed to most
    key = fig.add_axes(((x0 + 0.45) / width, (y - 0.2) / height, (side - 0.95) / width, 0.12 / height))
    key.imshow(_lut()[None, :, :], aspect="auto")
    key.axis("off")
    fig.text(x0 / width, (y - 0.14) / height, "less", fontsize=9, va="center")
    fig.text((x0 + side) / width, (y - 0.14) / height, "more", fontsize=9, va="center", ha="right")
    y -= key_h + 0.25
    for text, size, props in blocks:
        fig.text(margin / width, y / height, text, fontsize=size, va="top", **props)
        y -= (text.count("\n") + 1) * line(size) + 0.18
    fig.text(margin / width, (y - 0.1) / height, disclaimer_text, fontsize=13, va="top", style="italic",
             bbox={"facecolor": "#fff3e0", "edgecolor": "#ef6c00", "boxstyle": "round,pad=0.5"})
    fig.savefig(path, format=path.suffix[1:].lower())
    logger.debug("wrote report %s", path)
    return path
