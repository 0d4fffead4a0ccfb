"""DermoHelper web app (Gradio): photo of a skin lesion -> Low / Medium / High risk, calibrated probability, heatmap.

A triage aid, not a diagnosis. Thin over ``dermo.inference``: the model is loaded once at import, each handler
validates the photo (``dermo.imageio``), runs the quality gate (``dermo.quality`` + the out-of-distribution check of
``dermo.ood``), then one forward pass, then formats.

Run: ``python app.py`` (127.0.0.1:7860; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override). ``DERMO_MODEL`` may
name another model folder or a Hub id (default: the ONNX student bundled in ``dermo/assets``).

API (``gradio_client``)::

    from gradio_client import Client, handle_file
    result = Client("http://127.0.0.1:7860/").predict(handle_file("lesion.jpg"), api_name="/predict")
    # {"probability": 0.07, "band": "low", "band_edges": {...}, "quality": {"ok": true, ...}, "model": {...}}

Privacy: uploads and results are swept from Gradio's cache CACHE_TTL seconds after they arrive (``delete_cache``;
not deleted in the handler, because Gradio shares one cached file between identical concurrent uploads); nothing is
logged or flagged (Blocks has no flagging), and the heatmap has no share button.
"""
from __future__ import annotations

import atexit
import html
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline; nothing about users leaves the server
# Starlette renamed HTTP_422_UNPROCESSABLE_ENTITY; Gradio still reads the old name on every request
# (by message only: it comes as Starlette's own warning class)
warnings.filterwarnings("ignore", message=".*HTTP_422_UNPROCESSABLE_ENTITY.*")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from dermo.imageio import ERROR_CODES as IMAGE_ERROR_CODES  # noqa: E402
from dermo.imageio import ImageError, check_image_file, load_image  # noqa: E402
from dermo.inference import BAND_TEXT, DISCLAIMER, Predictor, bands_text, format_banded, reported  # noqa: E402
from dermo.ood import check_ood, load_ood  # noqa: E402
from dermo.quality import check_quality  # noqa: E402
from dermo.report_card import (BAND_COLORS, BAND_TEXT_COLORS, BAND_TEXT_COLORS_DARK,  # noqa: E402
                                attention_strength, colour_key, overlay_attention, render_report)

logger = logging.getLogger("dermohelper.app")
HERE = Path(__file__).resolve().parent
MAX_UPLOAD = "30mb"  # 30 MiB: Gradio refuses bigger uploads before they reach us; dermo.imageio refuses > 25 MB clearly


def load_predictor(setting: str | None) -> Predictor:
    """The one place that turns DERMO_MODEL (folder, .onnx, Hub id, or unset = bundled model) into a Predictor.

    One ONNX Runtime thread per request by default (DERMO_THREADS overrides): requests run in parallel
    (concurrency_limit), and on a small CPU one thread per run is faster than threads competing for cores.
    """
    from dermo.hub import resolve_model  # local path or Hub id; offline fallback to the bundled model

    return Predictor(resolve_model(setting), num_threads=int(os.environ.get("DERMO_THREADS") or 1))


PREDICTOR = load_predictor(os.environ.get("DERMO_MODEL") or None)
OOD = load_ood(PREDICTOR.model_dir, PREDICTOR.sha256)
if OOD is None:
    logger.warning("model %s has no OOD statistics: the 'not a skin lesion' check is off "
                   "(fit it with python -m dermo.ood --model %s)", PREDICTOR.model_dir, PREDICTOR.model_dir)
MODEL_INFO = {k: PREDICTOR.info[k] for k in ("name", "version", "sha256")}
BAND_EDGES = dict(PREDICTOR.info["band_edges"])
RETAKE = "Retake the photo"
HEATMAP_LABEL = "Where the model looked"
# the heatmap's colour key: its colour map from the least weighed parts of the photo to the most
HEATMAP_KEY = ("<div id='dh-key-row' role='img' aria-label='Colour key: dark = weighed least, yellow = weighed "
               "most'><span>less</span><span class='dh-key-bar' style='background: linear-gradient(to right, "
               + ", ".join(colour_key()) + ")'></span><span>more</span></div>")
#: below this strength (dermo.report_card.attention_strength: the peak cell under 1.5x an even share) the map is
#: drawn so faintly that it looks like the photo itself; its label then says why
FAINT_BELOW = 0.5
WELCOME = "<p>Upload or take a photo, then press <b>Analyse photo</b>.</p>"
# in the empty photo box (Gradio's own text there, "Drop Image Here - or - Click to Upload", says nothing to a phone;
# in the label, 12 px and cut off at 360 px, this advice was hard to read)
PHOTO_HINT = ("Tap or click here to choose a photo, or use the camera button below.\n\n"
              "One spot, close up, in focus, in good light.")
# Formats DermoHelper reads that Chrome, Firefox and Edge cannot show (Safari can): the photo box stays blank.
NO_PREVIEW = {"HEIF": "HEIC/HEIF", "TIFF": "TIFF"}
NO_PREVIEW_HTML = ("<p id='dh-no-preview'>Your {kind} photo arrived. Many browsers cannot show this kind of file, so "
                   "the photo box may stay blank, but DermoHelper can read it: press <b>Analyse photo</b>.</p>")
HAM_CREDIT = ("Tschandl, Rosendahl, Kittler, Sci. Data 5, 180161, 2018, doi:10.1038/sdata.2018.161; "
              "CC BY-NC-SA 4.0, so the model is not for commercial use")
CARD_NOTE = "A triage aid, not a diagnosis: see a doctor about any lesion that worries you."
CALIBRATION_NOTE = ("calibrated on validation images" if PREDICTOR.config.calibrated else
                    "NOT yet calibrated: interim temperature and band edges")

# Seconds an upload / result stays in Gradio's cache, i.e. the time there is to download the result card; the page
# says when it is gone (DERMO_CACHE_TTL overrides; Gradio sweeps every 60 s, or every TTL when that is shorter).
CACHE_TTL = max(1, int(os.environ.get("DERMO_CACHE_TTL") or 300))
SWEEP_S = min(60, CACHE_TTL)
KEPT_S = CACHE_TTL + SWEEP_S  # the longest a file can stay: it is deleted at the first sweep after CACHE_TTL
# Our own result cards are written here; Gradio copies each into its cache as the handler returns, so ours are
# swept (every SWEEP_S, by a thread launch() starts) after REPORT_TTL <= CACHE_TTL, and the folder goes at exit.
_TMP = Path(tempfile.mkdtemp(prefix="dermo_app_"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
REPORT_TTL = min(120, CACHE_TTL)


def _minutes(seconds: int) -> str:
    m = -(-seconds // 60)
    return "1 minute" if m == 1 else f"{m} minutes"


def _sweep() -> None:
    cutoff = time.time() - REPORT_TTL
    for p in _TMP.iterdir():  # result cards, each in a folder of its own
        try:
            if p.stat().st_mtime < cutoff:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        except OSError:
            pass


def remove_empty_folders(root: str | Path, min_age: float) -> int:
    """Remove the empty folders under ``root`` (not ``root``) left unchanged for ``min_age`` seconds; returns how
    many. Gradio's cache sweep deletes each upload's file but not its folder, whose name is a hash of the file's
    content: left behind, the folders would keep a trace of which photos were uploaded. ``min_age`` spares a folder
    Gradio has just made for an upload it is still writing."""
    removed, cutoff = 0, time.time() - min_age
    for d, subdirs, files in os.walk(root, topdown=False):
        if Path(d) == Path(root) or files:
            continue
        try:
            if os.stat(d).st_mtime <= cutoff and not os.listdir(d):
                os.rmdir(d)
                removed += 1
        except OSError:
            pass  # filled or removed meanwhile
    return removed


def _sweep_forever() -> None:
    while True:
        time.sleep(SWEEP_S)
        _sweep()
        remove_empty_folders(demo.GRADIO_CACHE, min_age=SWEEP_S)


# ------------------------------------------------------------------------------------------------------- core
# Why a call got no result: gradio_client's AppError carries one of these as its ``title`` (its message says what to
# do), so a program can branch on it; a photo that was read but failed the quality gate is a result instead, with
# ``quality.codes``. ``server_fault`` is the only one worth retrying as it is.
API_ERROR_CODES = {
    **IMAGE_ERROR_CODES,  # dermo.imageio's: why the file is not a usable photo
    "bad_request": "the request carried no uploaded file (a plain path string, a path the client never uploaded)",
    "url_failed": "the photo was sent as a web address that could not be fetched",
    "server_fault": "a fault on the server, not in the photo: try again",
}


def user_error(message: str, code: str) -> gr.Error:
    """A message for the user (what happened and what to do), with its ``API_ERROR_CODES`` code as the error's title
    (what API callers branch on; the page shows the message in place, never Gradio's modal); not logged as a server
    error."""
    assert code in API_ERROR_CODES, code
    return gr.Error(message, title=code, print_exception=False)


def open_upload(path: str | None, decode: bool = True) -> Image.Image | str:
    """The uploaded file as an RGB image, or ``gr.Error`` with what went wrong and what to do. ``decode=False``:
    only the checks that decode no pixels (``check_image_file``: cheap for any file), returns the format's name."""
    if path is None:
        raise user_error("Upload a photo of the skin lesion or take one with the camera, then press Analyse photo.",
                         "no_image")
    try:
        return load_image(path) if decode else check_image_file(path)
    except ImageError as e:
        raise user_error(str(e), e.code if e.code in API_ERROR_CODES else "not_image") from None
    except Exception:  # never show a traceback for a bad upload
        logger.exception("could not load an upload")
        raise user_error("This file could not be read as a photo. Upload a JPEG, PNG, WebP or HEIC photo.",
                         "corrupt") from None


def analyze(path: str | None) -> tuple[dict[str, Any], Image.Image | None, np.ndarray | None]:
    """Validate -> quality gate -> one forward pass -> JSON result (plus the photo and attention map for the UI).

    Raises ``gr.Error`` for files that are not a usable image. A photo that fails the gate gives a result with
    ``band`` None and the reasons; no verdict.
    """
    img = open_upload(path)
    report = check_quality(img)
    pred = None
    if report.ok:
        pred = PREDICTOR.predict(img)
        check_ood(OOD, pred.embedding, report)
    result: dict[str, Any] = {
        "probability": None, "band": None, "band_text": None, "band_edges": BAND_EDGES,
        "calibrated": bool(PREDICTOR.config.calibrated),
        "quality": {"ok": report.ok, "reasons": list(report.reasons), "codes": list(report.codes),
                    "lesion_check": OOD is not None},
        "model": MODEL_INFO, "heatmap": None, "disclaimer": DISCLAIMER,
    }
    if report.ok and pred is not None:
        # the band of the reported (rounded) number: probability >= band_edges["high"] <=> band == "high"
        p, band = reported(pred.probability, BAND_EDGES["low"], BAND_EDGES["high"])
        result.update(probability=p, band=band, band_text=BAND_TEXT[band],
                      heatmap=np.round(np.asarray(pred.attention, np.float64), 6).tolist())
        return result, img, pred.attention
    return result, img, None


SERVER_FAULT = ("DermoHelper could not analyse this photo because of a fault on the server, not because of the photo. "
                "Please try again in a moment.")


def analyze_or_explain(path: str | None) -> tuple[dict[str, Any], Image.Image | None, np.ndarray | None]:
    """``analyze``, with any unexpected failure (a bug, a missing package, memory) logged here and answered with
    ``SERVER_FAULT`` instead of Gradio's bare "Error" (or its advice to the operator to set show_error=True)."""
    try:
        return analyze(path)
    except gr.Error:
        raise
    except Exception:
        logger.exception("analysis failed")  # the traceback names no user data: the upload is only a temp path
        raise user_error(SERVER_FAULT, "server_fault") from None


# What view_api() and the "Use via API" page show callers (Gradio shows only this of the handler's docstring).
API_DESCRIPTION = (
    "Skin-lesion triage aid, not a diagnosis. Input: one photo of one skin lesion (JPEG, PNG, WebP, HEIC; at most "
    "25 MB), uploaded with gradio_client's handle_file(\"photo.jpg\"). Output (JSON): probability (calibrated "
    "P(malignant)), band (\"low\" / \"medium\" / \"high\"), band_text, band_edges {low, high}, quality {ok, reasons, "
    "codes, lesion_check (whether this model has the 'does not look like a skin lesion' check, run on photos that "
    "pass the image checks)}, heatmap (the attention map, "
    "rows of floats summing to 1), calibrated, model {name, version, sha256}, "
    "disclaimer. A photo that fails the quality gate gets probability, band, band_text and heatmap null, and its "
    "reasons and codes; a file that is not a usable photo gets an error (gradio_client's AppError) whose message says "
    "what to do and whose title is a code (empty, not_image, truncated, corrupt, too_many_pixels, file_too_large, "
    "heic_unsupported, unsupported_mode, bad_request, url_failed; server_fault: try again).")


def predict(file: str | None) -> dict[str, Any]:
    """API endpoint ``/predict``: an uploaded photo -> the JSON result (``API_DESCRIPTION``, the module docstring)."""
    if file is None:
        raise user_error(BAD_REQUEST, "bad_request")
    return analyze_or_explain(file)[0]


def _band_html(result: dict[str, Any]) -> str:
    if not result["quality"]["ok"]:
        reasons = "".join(f"<li>{r}</li>" for r in result["quality"]["reasons"])
        return (f"<div class='dh-card dh-retake'><h2>{RETAKE}</h2><p>No risk estimate was made, because:</p>"
                f"<ul>{reasons}</ul></div>")
    band = result["band"]
    heading = f"{band.capitalize()} risk"
    text = result["band_text"]  # "Low risk: nothing in ...": under its heading, without the heading again
    text = text[len(heading) + 1:].lstrip() if text.startswith(heading + ":") else text
    text = text[:1].upper() + text[1:]
    prob, low, high = format_banded(result["probability"], result["band_edges"]["low"], result["band_edges"]["high"])
    return (f"<div class='dh-card' style='border-color:{BAND_COLORS[band]}'>"
            f"<h2 id='dh-band' class='dh-band-{band}'>{heading}</h2>"
            f"<p>{text}</p>"
            f"<p><b>Estimated probability that this lesion is malignant: {prob}</b> "
            f"({CALIBRATION_NOTE}; {bands_text(low, high)}). "
            "It is the model's estimate for lesions like those in its training data, not a certainty.</p>"
            f"<p class='dh-card-note'>{CARD_NOTE}</p></div>")


def _error_html(message: str, heading: str = "This file could not be used") -> str:
    """A file the app cannot use: the message stays on the page (a toast would vanish), with no verdict."""
    return (f"<div class='dh-card dh-retake' id='dh-error'><h2>{html.escape(heading)}</h2>"
            f"<p>{html.escape(message)}</p></div>")


def analyze_ui(path: str | None):
    """UI handler: band card, heatmap overlay, downloadable PNG report (built from the same forward pass).

    Every outcome replaces all three outputs, so nothing of an earlier photo's result stays on the page: a file
    that cannot be used gets its message in the card (not a toast, which vanishes) and no heatmap or download, and
    so does a fault of the server (``SERVER_FAULT``), wherever it happens.
    """
    try:
        return _analyze_ui(path)
    except gr.Error as e:
        heading = ("No photo yet" if path is None else "Something went wrong" if e.message == SERVER_FAULT
                   else "This file could not be used")
        return _error_html(e.message, heading), None, gr.update(value=None, visible=False)
    except Exception:
        logger.exception("rendering the result failed")
        return _error_html(SERVER_FAULT, "Something went wrong"), None, gr.update(value=None, visible=False)


def _analyze_ui(path: str | None):
    result, img, attention = analyze_or_explain(path)
    if attention is None:
        return _band_html(result), None, gr.update(value=None, visible=False)
    photo = img.copy()
    photo.thumbnail((512, 512))  # the one downscale of the upload: the overlay and the report both use it
    overlay = overlay_attention(photo, attention)
    # a folder of its own, so that the saved file gets a name that says what it is and when (the card's UTC time)
    folder = Path(tempfile.mkdtemp(prefix="result_", dir=_TMP))
    name = str(folder / time.strftime("dermohelper-result-%Y-%m-%d-%H%M%S-UTC.png", time.gmtime()))
    try:
        render_report(name, photo, overlay, result, result["band_text"], result["disclaimer"])
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # no half-written result left in the cache
        raise
    return (_band_html(result), gr.update(value=overlay, label=heatmap_label(attention)),
            gr.update(value=name, visible=True))


def heatmap_label(attention) -> str:
    """The heatmap's label: a faint map says that it is faint because the model spread its attention out."""
    if attention_strength(attention) < FAINT_BELOW:
        return HEATMAP_LABEL + ": spread over much of the photo, so the map is faint"
    return HEATMAP_LABEL


def on_new_photo(path: str | None):
    """A new or removed photo: the previous photo's verdict, heatmap and download go (they are not this photo's).

    A file that cannot be used gets its message at once, in the card (the browser's preview of it is broken), rather
    than only after Analyse photo. This runs outside the queue, on every change, so it decodes no pixels (a small
    file can declare a 64 MP image): damage inside the pixel data is found by Analyse photo.
    """
    if path is not None:
        try:
            fmt = open_upload(path, decode=False)
        except gr.Error as e:
            return _error_html(e.message), None, gr.update(value=None, visible=False)
        if fmt in NO_PREVIEW:  # the photo box above stays empty in most browsers: say that the photo did arrive
            return NO_PREVIEW_HTML.format(kind=NO_PREVIEW[fmt]), None, gr.update(value=None, visible=False)
    return WELCOME, None, gr.update(value=None, visible=False)


# HAM10000's dx codes, for the examples' caption (file names end in _<dx>)
DX_NAMES = {"nv": "benign naevus", "mel": "melanoma", "bkl": "benign keratosis", "bcc": "basal cell carcinoma",
            "akiec": "actinic keratosis / Bowen's disease", "df": "dermatofibroma", "vasc": "vascular lesion"}


def examples_label(paths: list[str]) -> str:
    """The examples' caption, with each one's diagnosis: a visitor can see where the model is right and wrong (the
    benign keratosis is High risk for the shipped model)."""
    names = [DX_NAMES.get(Path(p).stem.rsplit("_", 1)[-1], "") for p in paths]
    label = "Example images (HAM10000, CC BY-NC-SA 4.0)"
    return label + (f"; their diagnoses, left to right: {', '.join(names)}" if all(names) else "")


def _examples() -> list[str]:
    for d in (HERE / "examples", HERE / "space" / "examples"):
        if d.is_dir():
            return sorted(str(p) for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return []


def pass_raw_upload(image: gr.Image) -> gr.Image:
    """Make a gr.Image (upload + camera) hand us the uploaded file's path untouched, so bad files reach
    ``dermo.imageio``'s validation and its clear messages instead of failing inside Gradio's own PIL decoding.
    (An instance override: subclassing a component makes Gradio write an app.pyi stub next to this file.)"""
    base = image.preprocess

    def preprocess(payload):
        if payload is None or payload.path is None or (payload.url or "").startswith("data:"):
            return base(payload)
        return str(payload.path)

    image.preprocess = preprocess
    return image


BAD_REQUEST = ("This request did not carry an uploaded image file. The API takes one file, uploaded by the client: "
               "from Python, client.predict(handle_file(\"photo.jpg\"), api_name=\"/predict\") with gradio_client's "
               "handle_file (a plain path string is not uploaded).")


URL_FAILED = ("The photo could not be fetched from the web address it was sent as (the address did not answer, or it "
              "is not a public one). Download the photo and send the file itself: from Python, "
              "client.predict(handle_file(\"photo.jpg\"), api_name=\"/predict\").")


def explain_bad_requests(blocks: gr.Blocks) -> gr.Blocks:
    """Answer a request whose input Gradio itself refuses before any handler runs (a plain string where a file goes,
    a path the client never uploaded) with ``BAD_REQUEST``, instead of Gradio's bare "Error" (its message is shown
    only with ``show_error=True``, which would also show internal messages). Nothing of the request is logged
    (Gradio had printed a traceback quoting it). A photo sent as a web address that Gradio cannot fetch gets
    ``URL_FAILED``, and a request with fewer inputs than the event takes (``"data": []``) ``BAD_REQUEST``. Instance
    overrides of ``Blocks.process_api``, which Gradio's queue calls for every event, and of
    its ``preprocess_data``."""
    from gradio.exceptions import InvalidPathError
    from pydantic import ValidationError

    base = blocks.process_api
    base_preprocess = blocks.preprocess_data

    async def process_api(*args, **kwargs):
        try:
            return await base(*args, **kwargs)
        except (ValidationError, InvalidPathError) as e:
            logger.info("refused a request whose input was not an uploaded file (%s)", type(e).__name__)
            raise user_error(BAD_REQUEST, "bad_request") from None

    async def preprocess_data(block_fn, inputs, *args, **kwargs):
        if len(inputs or []) < len(block_fn.inputs):  # a hand-written request without the file (Gradio: a traceback)
            logger.info("refused a request with %d of %d inputs", len(inputs or []), len(block_fn.inputs))
            raise user_error(BAD_REQUEST, "bad_request")
        try:
            return await base_preprocess(block_fn, inputs, *args, **kwargs)
        except (ValidationError, InvalidPathError):
            raise
        except Exception as e:  # Gradio fetches a file sent as a web address itself; that fetch failed
            if not any(isinstance(x, dict) and str(x.get("path") or x.get("url") or "").lower().startswith(
                    ("http://", "https://")) for x in inputs or []):
                raise
            logger.info("a photo sent as a web address could not be fetched (%s)", type(e).__name__)
            raise user_error(URL_FAILED, "url_failed") from None

    blocks.process_api = process_api
    blocks.preprocess_data = preprocess_data
    return blocks


def no_empty_cache_files(file: gr.File) -> gr.File:
    """Stop a gr.File(type="filepath") input from leaving an empty file in Gradio's cache on every call: Gradio 6.17's
    ``File._process_single_file`` opens a NamedTemporaryFile there that it never uses nor deletes (and no sweep
    removes). The upload's own path is all it returns. (An instance override, as in ``pass_raw_upload``.)"""
    from gradio.utils import NamedString

    file._process_single_file = lambda f: NamedString(f.path)
    return file


# After an analysis: bring the card into view when it is not (phones), and once the server has swept this result's
# files, say so on this card (its download would fail): a card still on the page after CACHE_TTL is this one.
SHOW_VERDICT = """() => {
  // the outputs are set, but the page may not show them yet: look one frame later
  requestAnimationFrame(() => requestAnimationFrame(() => {
    const card = document.querySelector('.dh-card');
    if (!card) return;
    const r = card.getBoundingClientRect();
    if (r.top < 0 || r.bottom > window.innerHeight) card.scrollIntoView({behavior: 'smooth', block: 'start'});
    if (!card.querySelector('#dh-band')) return;  // a verdict (retake and error cards have no download)
    setTimeout(() => {
      if (!card.isConnected || card.querySelector('.dh-expired')) return;
      const p = document.createElement('p');
      p.className = 'dh-expired';
      p.textContent = EXPIRED_TEXT;
      card.appendChild(p);
    }, TTL_MS);
  }));
}""".replace("EXPIRED_TEXT", repr(
    "This result has been deleted from the server, so it can no longer be downloaded. "
    "Press Analyse photo again to get it back.")).replace("TTL_MS", str(1000 * CACHE_TTL))

# A file the browser cannot draw (not an image; a HEIC or TIFF photo outside Safari) leaves a broken-image frame in the
# photo box: hide it (the card below says what happened). Runs once per page load (demo.load: Gradio 6.17 never runs
# launch(js=...), gradio-app/gradio#13636); 'error' and 'load' do not bubble, so they are captured.
ON_LOAD = """() => {
  for (const [type, visibility] of [['error', 'hidden'], ['load', '']]) {
    document.addEventListener(type, (e) => {
      const img = e.target;  // the same element may show the next photo: a good one is shown again
      if (img instanceof HTMLImageElement && img.closest('#dh-photo')) img.style.visibility = visibility;
    }, true);
  }
  // Screen readers: the verdict is announced when it arrives (a live region that stays while its content changes),
  // and the pictures Gradio draws without a text alternative get one.
  const verdict = document.getElementById('dh-verdict');
  if (verdict) { verdict.setAttribute('role', 'status'); verdict.setAttribute('aria-live', 'polite'); }
  const name = () => {
    document.querySelectorAll('#dh-photo img:not([alt]), #dh-photo img[alt=""]').forEach(
      (im) => im.setAttribute('alt', 'Your photo'));
    document.querySelectorAll('#dh-heatmap img:not([alt]), #dh-heatmap img[alt=""]').forEach(
      (im) => im.setAttribute('alt', 'Heatmap over your photo: brighter where the model looked most'));
    document.querySelectorAll('#dh-examples button:not([aria-label])').forEach(
      (b, i) => b.setAttribute('aria-label', 'Example image ' + (i + 1)));
  };
  name();
  new MutationObserver(name).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                     attributeFilter: ['src']});
}"""

# Analyse photo pressed: on a phone the verdict (where Gradio shows the analysis running) is below the screen, and
# nothing on the screen changed until the result came; bring it into view at once (a desktop shows it already).
SHOW_PROGRESS = """() => {
  const v = document.getElementById('dh-verdict');
  if (!v) return;
  const r = v.getBoundingClientRect();
  if (r.top < 0 || r.top > window.innerHeight - 120) v.scrollIntoView({behavior: 'smooth', block: 'start'});
}"""

# A new photo that cannot be used: its message is in the card, which on a small phone lies below the screen.
SHOW_MESSAGE = """() => {
  requestAnimationFrame(() => requestAnimationFrame(() => {
    const card = document.querySelector('#dh-error, #dh-no-preview');
    if (!card) return;
    const r = card.getBoundingClientRect();
    if (r.top < 0 || r.bottom > window.innerHeight) card.scrollIntoView({behavior: 'smooth', block: 'center'});
  }));
}"""

CSS = """
.dh-card {border: 3px solid #999; border-radius: 12px; padding: 12px 16px;}
.dh-card h2 {margin: 0 0 6px 0;}
.dh-retake {border-color: #ef6c00;}
.dh-disclaimer {font-size: 0.95em; background: #fff3e0; border-radius: 8px; padding: 8px 12px;}
/* its own text colour: on its light background the dark theme's near-white text could not be read */
.dh-disclaimer, .dh-disclaimer * {color: #3e2723 !important;}
.dh-card-note {font-size: max(0.9em, 14px); font-style: italic; margin-bottom: 0;}
.dh-expired {color: #b71c1c; font-weight: bold;}
.dark .dh-expired {color: #ff8a80;}
/* touch targets: upload / camera and the shutter are 18-22 px in Gradio's own style */
#dh-photo .source-selection button {min-width: 44px; min-height: 44px;}
#dh-photo button[aria-label='capture photo'] {min-width: 48px; min-height: 48px;}
/* small phones: a lower photo box, so that Analyse photo is on the first screen */
@media (max-width: 400px) { #dh-photo {height: 272px !important;} }
/* no heatmap yet (first load, a retake, a file that cannot be used): no empty 360 px box and no note about it */
#dh-heatmap:has(.empty), #dh-heatmap:has(.empty) ~ #dh-heatmap-note,
#dh-heatmap:has(.empty) ~ #dh-heatmap-key {display: none !important;}
#dh-key-row {display: flex; align-items: center; gap: 8px; font-size: 14px;}
.dh-key-bar {flex: 1; height: 14px; border-radius: 4px; max-width: 320px;}
/* phones: the photo's remove / fullscreen buttons (18 px in Gradio's style) and the two main buttons (40 px) */
@media (pointer: coarse) {
  #dh-photo .icon-button-wrapper button, #dh-heatmap .icon-button-wrapper button {min-width: 44px; min-height: 44px;}
}
#dh-analyse, #dh-download {min-height: 48px;}
/* Gradio's labels and captions are 12 px: the photo's label and the examples' diagnoses are read on phones too */
#dh-photo label.float, #dh-heatmap label.float, #dh-examples .label {font-size: 14px;}
"""
# The band's name in its colour, readable in both themes (the border colours were 3.1-3.7:1 as text on the dark theme)
CSS += "".join(f"#dh-band.dh-band-{b} {{color: {BAND_TEXT_COLORS[b]};}}\n"
               f".dark #dh-band.dh-band-{b} {{color: {BAND_TEXT_COLORS_DARK[b]};}}\n" for b in BAND_TEXT_COLORS)

with gr.Blocks(title="DermoHelper: skin lesion triage aid", delete_cache=(SWEEP_S, CACHE_TTL)) as demo:
    gr.Markdown("# DermoHelper\nA photo of one skin spot -> **Low / Medium / High** risk, with where the model looked.")
    gr.Markdown(f"**{DISCLAIMER}**", elem_classes="dh-disclaimer")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            # Rear camera preferred on phones ("ideal", so laptops with one front camera still work).
            photo = pass_raw_upload(gr.Image(
                label="Photo of the lesion", type="filepath", elem_id="dh-photo", sources=["upload", "webcam"],
                height=360, placeholder=PHOTO_HINT,
                webcam_options=gr.WebcamOptions(
                    mirror=False, constraints={"video": {"facingMode": {"ideal": "environment"}}})))
            run_btn = gr.Button("Analyse photo", variant="primary", elem_id="dh-analyse")
            if _examples():
                gr.Examples(_examples(), inputs=photo, label=examples_label(_examples()),
                            api_visibility="private", elem_id="dh-examples")
        with gr.Column(min_width=300):
            verdict = gr.HTML(WELCOME, elem_id="dh-verdict")
            # under the verdict: on a laptop (1366x768) below the heatmap it was off the first screen
            report_file = gr.DownloadButton("Download result (PNG)", visible=False, elem_id="dh-download")
            # No share button: on a Space it would offer to upload the user's photo to huggingface.co.
            heatmap = gr.Image(label=HEATMAP_LABEL, type="pil", interactive=False, height=360,
                               format="jpeg", elem_id="dh-heatmap", buttons=["fullscreen"])
            gr.HTML(HEATMAP_KEY, elem_id="dh-heatmap-key")
            # Model-independent on purpose: how much of the map lies on the lesion is measured per model
            # (python -m dermo.focus; the bundled model's map rests mostly on the skin around it, reports/focus.md).
            gr.Markdown("Brighter = the parts of the photo the model weighed most; a faint map means it spread its "
                        "attention over much of the photo. It is not an outline of the spot, and it may rest more on "
                        "the skin around the spot than on the spot itself.",
                        elem_id="dh-heatmap-note")
    gr.Markdown(f"Model: {MODEL_INFO['name']} {MODEL_INFO['version']} (sha256 {MODEL_INFO['sha256'][:12]}...). "
                f"Photos are only used for this analysis and deleted from the server within {_minutes(KEPT_S)} "
                "(the result card too: save it before then); nothing is stored, logged or shared. "
                f"Trained on HAM10000 ({HAM_CREDIT})."
                + ("" if OOD is not None else " **The check that a photo shows a skin lesion is off for this model**: "
                   "a photo of something else gets a verdict too."))
    # On a phone the columns stack and the verdict lands below the photo and the examples, out of sight: bring it
    # into view when it is not (on a desktop it is, beside the photo, and nothing moves). Gradio's own
    # scroll_to_output did not scroll here (6.17).
    outputs = [verdict, heatmap, report_file]
    # first: Gradio runs a button's listeners in the order they were added, each after the last has finished
    run_btn.click(None, js=SHOW_PROGRESS, queue=False, api_visibility="private")
    run_btn.click(analyze_ui, photo, outputs, api_visibility="private").success(None, js=SHOW_VERDICT)
    # A new photo (uploaded, taken, an example) or none: the last result is not this photo's, so it goes at once;
    # a file that cannot be used says so right away.
    photo.change(on_new_photo, photo, outputs, queue=False, show_progress="hidden",
                 api_visibility="private").success(None, js=SHOW_MESSAGE)

    # The public API: a plain file in, JSON out (hidden components: the page shows the UI above).
    api_file = no_empty_cache_files(gr.File(label="image", visible=False, type="filepath"))
    # the "Use via API" page's example call: a photo of the caller's (Gradio's default is a PDF on github.com)
    api_file.example_inputs = lambda: {"path": "photo.jpg", "url": "photo.jpg", "orig_name": "photo.jpg",
                                       "meta": {"_type": "gradio.FileData"}}
    api_json = gr.JSON(label="result", visible=False)
    api_btn = gr.Button(visible=False)
    api_btn.click(predict, api_file, api_json, api_name="predict", concurrency_limit=4, api_description=API_DESCRIPTION)
    demo.load(None, js=ON_LOAD, api_visibility="private")
explain_bad_requests(demo)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # what Gradio's launch() stops on: it closes the server, which empties its cache


def launch() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A stopped server (SIGTERM: a Space restarting, a container stopping) deletes the photos and results it holds,
    # as Ctrl-C does; atexit then removes our folder.
    signal.signal(signal.SIGTERM, _interrupt)
    # at exit, after Gradio's close has deleted the cached files: their folders too
    atexit.register(remove_empty_folders, demo.GRADIO_CACHE, 0)
    threading.Thread(target=_sweep_forever, daemon=True, name="dermo-sweep").start()
    # api_open=False: the queued handlers (the API's predict among them) are reached only through the queue and its
    # concurrency limits, not through Gradio's direct REST routes (Gradio closes those itself only on a Space).
    demo.queue(default_concurrency_limit=2, api_open=False).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=MAX_UPLOAD, css=CSS)


if __name__ == "__main__":
    launch()
