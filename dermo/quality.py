"""Image-quality gate, run on the RGB image from ``dermo.imageio.load_image``
before any verdict is given.

``check_quality(img)`` returns a :class:`QualityReport`::

    report = check_quality(img)
    if not report.ok:
        show(report.reasons)          # user-facing sentences, most important first

Checks (in this order; each has a machine-readable code in ``report.codes``):

=============  ===========================================  =====================
code           fails when                                   default threshold
=============  ===========================================  =====================
too_small      min(width, height) < ``min_side``            64 px
elongated      max(width, height) / min(...) > ``max_aspect``  :data:`MAX_ASPECT` = 3
too_dark       brightness < ``dark``                        :data:`DARK` = 30
too_bright     brightness > ``bright``                      :data:`BRIGHT` = 235
blurry         sharpness < ``blur``                         :data:`BLUR` = 2.0
no_colour      chroma < ``min_chroma``                      :data:`MIN_CHROMA` = 3.0
not_photo      flat_fraction > ``max_flat``                 :data:`MAX_FLAT` = 0.2
=============  ===========================================  =====================

``flat_fraction`` is the share of pixels of a 128 x 96 thumbnail that have exactly the most common RGB value. A
camera photo has sensor noise and JPEG texture everywhere (HAM10000: at most 0.10, 99th percentile 0.02); text,
screenshots, logos and drawings have large areas of one exact colour (0.24-0.71 in benchmarks/quality_gate.py).

``chroma`` is the mean of max(R, G, B) - min(R, G, B) over a 64 x 48 thumbnail (0 for a grey image). Every one of
the 10,015 HAM10000 images has chroma >= 5.2 (median 52.7); black-and-white photos, scans of text, grey noise and
checkerboards have 0. The model judges colour, so a grey photo is asked to be retaken in colour. Both HAM figures:
``python benchmarks/quality_thresholds.py --n 10015`` (reports/quality_thresholds.json).

Width and height are those of the user's file: when ``load_image`` downscaled it (longest side over 4096 px), the
size it recorded in ``img.info[dermo.imageio.ORIGINAL_SIZE]`` (a 10000 x 100 strip is "very long and narrow", not
"too small (4096 x 41)").

A too-small image is only reported as too small, and a too-dark/too-bright
image is not also reported as blurry: the other measures are meaningless
there and one clear instruction is better than three (the measures are
still computed and returned). Of blurry / no_colour / not_photo only the
first that fails is reported, except for a blank image (one flat colour:
luma contrast under :data:`BLANK_CONTRAST` and ``flat_fraction`` over
``max_flat``, e.g. a grey card or a lens cap), which is "not a photo", not
"blurry" (it has no sharpness either, but holding the camera steady would not
help). A blurred photo keeps its blurry verdict: its lesion and sensor noise
give it contrast, and calling a real photo "not a photo" would mislead.

Measures (``report.measures``), all computed on a grey copy of the image
(ITU-R 601 luma as float32, Pillow ``convert("F")``) resized with Lanczos
so that its longest side is :data:`ANALYSIS_SIDE` = 256 px -- up or down --
which makes them independent of the upload's resolution.  The grey image is
kept in floating point on purpose: rounding it to 8 bits adds quantisation
noise whose Laplacian variance (~1.7) is as large as that of the smoothest
real dermoscopic images, and would hide the difference between sharp and
blurred photos.

* ``brightness``: mean luma, 0..255;
* ``contrast``: standard deviation of luma;
* ``sharpness``: variance of the 4-neighbour Laplacian of the luma
  (valid region, no padding);
* ``width`` / ``height``: of the image as given.

The defaults were chosen with ``benchmarks/quality_thresholds.py`` on
HAM10000 dermoscopic images (200x150 JPEGs, i.e. low resolution and so
*upsampled* for the analysis -- the hardest case for the blur check):

* all 10,015 pass every check; their brightness spans 58..230 (p1 112,
  p99 202) and their sharpness 2.35..1924 (p0.1 2.9, p1 4.3);
* the same images resized to 600 px and blurred (Gaussian radius 8) have
  sharpness <= 1.62 (3,000 tried; p99 0.59), so all fail; radius 4 fails
  about 90 %, radius 2 passes (it is still sharp at 256 px);
* black, white and anything under 64 px fail.

``DARK`` = 30 and ``BRIGHT`` = 235 leave a wide margin around the HAM
range on purpose: HAM is mostly light skin under a dermatoscope's even
light, and phone photos of darker skin are legitimately darker.  ``BLUR``
sits between the blurred maximum (1.62) and the real minimum (2.35).
This measure has known limits: sensor noise raises it (a blurred but noisy
photo can pass), and blur finer than ~1 px at 256 px is not seen (it does
not matter at the model's input size either).

Extension point -- out-of-distribution ("this is not a skin lesion") check:
this module does not implement it.  It is meant to be added later on top
of model features, either by passing a callable in ``extra_checks``
(``check(img, report) -> None`` that calls ``report.add_issue(...)``), or by
calling ``report.add_issue("not_skin", "...", ood_score=...)`` on the
returned report.  ``add_issue`` keeps ``ok``, ``reasons``, ``codes`` and
``measures`` consistent.

The library never prints; it logs through ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from dermo.imageio import ORIGINAL_SIZE, RECORDED_FOR

__all__ = [
    "ANALYSIS_SIDE",
    "BLUR",
    "MIN_CHROMA",
    "MAX_FLAT",
    "BRIGHT",
    "DARK",
    "MESSAGES",
    "MAX_ASPECT",
    "MIN_SIDE",
    "QualityReport",
    "check_quality",
    "measure",
]

logger = logging.getLogger(__name__)

#: Longest side of the grey image all measures are computed on.
ANALYSIS_SIDE = 256
#: Default minimum for the shorter side, in pixels.
MIN_SIDE = 64
#: Default maximum ratio of the longer to the shorter side: the model sees every photo squeezed into a square (as it
#: saw HAM10000's 4:3 images), so a long strip would reach it distorted. Phone photos (4:3, 16:9) pass.
MAX_ASPECT = 3.0
#: Default minimum mean luma (0..255).
DARK = 30.0
#: Default maximum mean luma (0..255).
BRIGHT = 235.0
#: Default minimum variance of the Laplacian (at ANALYSIS_SIDE).
BLUR = 2.0
#: Default minimum mean channel spread max(RGB) - min(RGB) (0..255) of a 64 x 48 thumbnail.
MIN_CHROMA = 3.0
#: Default maximum share of a thumbnail's pixels that have exactly its most common colour.
MAX_FLAT = 0.2
#: Luma standard deviation under which an image with a flat_fraction over MAX_FLAT is blank (one flat colour):
#: every HAM10000 image has a contrast of 4.8 or more and a flat_fraction of 0.1 or less
#: (``python benchmarks/quality_thresholds.py --n 10015``, reports/quality_thresholds.json).
BLANK_CONTRAST = 1.0

#: User-facing sentences per code ({placeholders} filled from the measures).
MESSAGES = {
    "too_small": (
        "The photo is too small ({width} x {height} pixels; at least {min_side} pixels on each side are needed): "
        "upload the original photo, or take it closer to the lesion."
    ),
    "elongated": (
        "The photo is very long and narrow ({width} x {height} pixels), and DermoHelper would see it squeezed into a "
        "square: crop it to the spot, about as wide as it is tall, and upload it again."
    ),
    "too_dark": "The photo is too dark: retake it in better light.",
    "too_bright": (
        "The photo is too bright (overexposed): retake it without flash glare or direct sunlight on the skin."
    ),
    "blurry": "The photo is blurry: hold the camera steady, let it focus on the lesion and retake it.",
    "no_colour": "The photo has no colour (black and white): DermoHelper needs a colour photo of the skin; "
                 "retake it in colour.",
    "not_photo": "This looks like a graphic, text or a screenshot, not a photo: upload a photo of the skin lesion.",
}


@dataclass
class QualityReport:
    """Outcome of the quality gate.

    ``ok`` is True iff ``reasons`` is empty; ``reasons`` are user-facing
    sentences, ``codes`` the matching machine-readable codes (same order),
    ``measures`` the numbers they were based on.  Use :meth:`add_issue` to
    append a failure (e.g. the future out-of-distribution check).
    """

    ok: bool = True
    reasons: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)
    codes: list[str] = field(default_factory=list)

    def add_issue(self, code: str, reason: str, **measures: float) -> None:
        """Record a failed check: sets ``ok`` to False, appends the reason and code."""
        self.ok = False
        self.codes.append(code)
        self.reasons.append(reason)
        self.measures.update(measures)


def _analysis_grey(img: Image.Image, side: int = ANALYSIS_SIDE) -> np.ndarray:
    """Float luma resized so that the longest side is ``side`` (see module doc)."""
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    grey = img.convert("F")  # ITU-R 601 luma in float32: no 8-bit rounding
    w, h = grey.size
    scale = side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != (w, h):
        grey = grey.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(grey, dtype=np.float32)


def _laplacian_var(a: np.ndarray) -> float:
    if a.shape[0] < 3 or a.shape[1] < 3:
        return 0.0
    lap = a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:] - 4.0 * a[1:-1, 1:-1]
    return float(lap.astype(np.float64).var())


def _chroma(img: Image.Image) -> float:
    rgb = np.asarray(img.convert("RGB").resize((64, 48), Image.Resampling.BILINEAR), dtype=np.float32)
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean(dtype=np.float64))


def _flat_fraction(img: Image.Image) -> float:
    rgb = np.asarray(img.convert("RGB").resize((128, 96), Image.Resampling.BILINEAR))
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    return float(np.unique(packed, return_counts=True)[1].max() / packed.size)


def measure(img: Image.Image) -> dict[str, float]:
    """The measures used by :func:`check_quality` (see the module docstring)."""
    a = _analysis_grey(img)
    return {
        "brightness": float(a.mean(dtype=np.float64)),
        "contrast": float(a.std(dtype=np.float64)),
        "sharpness": _laplacian_var(a),
        "chroma": _chroma(img),
        "flat_fraction": _flat_fraction(img),
        "width": img.width,
        "height": img.height,
    }


def _file_size(img: Image.Image) -> tuple[int, int]:
    """The size of the user's file: ``load_image``'s record of it when it downscaled the image, else the image's.
    A record is read only on the image it was written for (a caller's crop or resize carries it along in ``info``)."""
    size = img.info.get(ORIGINAL_SIZE)
    if (img.info.get(RECORDED_FOR) == img.size and isinstance(size, tuple) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
            and max(size) >= max(img.size)):
        return size
    return img.size


def check_quality(
    img: Image.Image,
    *,
    min_side: int = MIN_SIDE,
    dark: float = DARK,
    bright: float = BRIGHT,
    blur: float = BLUR,
    min_chroma: float = MIN_CHROMA,
    max_flat: float = MAX_FLAT,
    max_aspect: float = MAX_ASPECT,
    extra_checks: Iterable[Callable[[Image.Image, QualityReport], None]] = (),
) -> QualityReport:
    """Judge whether ``img`` (RGB, from ``load_image``) is good enough to analyse.

    ``dark``/``bright`` bound the mean luma, ``blur`` is the minimum
    variance of the Laplacian, ``min_side`` the minimum shorter side.
    ``extra_checks`` are run last, each as ``check(img, report)``; they add
    failures with ``report.add_issue`` (slot for the out-of-distribution check).
    """
    m = measure(img)
    report = QualityReport(measures=dict(m))
    width, height = _file_size(img)
    if min(width, height) < min_side:
        report.add_issue("too_small", MESSAGES["too_small"].format(width=width, height=height, min_side=min_side))
    else:
        if max(width, height) > max_aspect * min(width, height):
            report.add_issue("elongated", MESSAGES["elongated"].format(width=width, height=height))
        exposure_ok = True
        if m["brightness"] < dark:
            report.add_issue("too_dark", MESSAGES["too_dark"])
            exposure_ok = False
        elif m["brightness"] > bright:
            report.add_issue("too_bright", MESSAGES["too_bright"])
            exposure_ok = False
        blank = m["contrast"] < BLANK_CONTRAST and m["flat_fraction"] > max_flat
        if exposure_ok and blank:
            report.add_issue("not_photo", MESSAGES["not_photo"])
        elif exposure_ok and m["sharpness"] < blur:
            report.add_issue("blurry", MESSAGES["blurry"])
        elif exposure_ok and m["chroma"] < min_chroma:
            report.add_issue("no_colour", MESSAGES["no_colour"])
        elif exposure_ok and m["flat_fraction"] > max_flat:
            report.add_issue("not_photo", MESSAGES["not_photo"])
    for check in extra_checks:
        check(img, report)
    if not report.ok:
        # DEBUG: the app logs at INFO and promises that nothing about an upload is logged
        logger.debug("quality gate failed: %s (%s)", report.codes,
                    {k: round(v, 1) for k, v in report.measures.items() if isinstance(v, float)})
    return report
