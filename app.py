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

Privacy: uploads and results are swept from Gradio's cache a few minutes after they arrive (``delete_cache``; not
deleted in the handler, because Gradio shares one cached file between identical concurrent uploads); nothing is
logged or flagged (Blocks has no flagging).
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline; nothing about users leaves the server

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from dermo.imageio import ImageError, load_image  # noqa: E402
from dermo.inference import BAND_TEXT, DISCLAIMER, Predictor, format_probability  # noqa: E402
from dermo.ood import check_ood, load_ood  # noqa: E402
from dermo.quality import check_quality  # noqa: E402
from dermo.report_card import BAND_COLORS, overlay_attention, render_report  # noqa: E402

logger = logging.getLogger("dermohelper.app")
HERE = Path(__file__).resolve().parent
MAX_UPLOAD = "30mb"  # Gradio refuses bigger uploads before they reach us; dermo.imageio refuses > 25 MiB clearly


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
CALIBRATION_NOTE = ("calibrated on validation images" if PREDICTOR.config.calibrated else
                    "NOT yet calibrated: interim temperature and band edges")

# Our own temporary files (reports) live here, are swept after REPORT_TTL seconds and removed at exit.
_TMP = Path(tempfile.mkdtemp(prefix="dermo_app_"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
REPORT_TTL = 120
CACHE_TTL = 300  # seconds an upload / result stays in Gradio's cache (time to download the report)


def _sweep() -> None:
    cutoff = time.time() - REPORT_TTL
    for p in _TMP.iterdir():
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
        except OSError:
            pass


# ------------------------------------------------------------------------------------------------------- core
def user_error(message: str) -> gr.Error:
    """A message for the user (what happened and what to do); not logged as a server error."""
    return gr.Error(message, print_exception=False)


def analyze(path: str | None) -> tuple[dict[str, Any], Image.Image | None, np.ndarray | None]:
    """Validate -> quality gate -> one forward pass -> JSON result (plus the photo and attention map for the UI).

    Raises ``gr.Error`` for files that are not a usable image. A photo that fails the gate gives a result with
    ``band`` None and the reasons; no verdict.
    """
    if path is None:
        raise user_error("No photo yet: upload a photo of the skin lesion or take one with the camera.")
    try:
        img = load_image(path)
    except ImageError as e:
        raise user_error(str(e)) from None
    except Exception:  # never show a traceback for a bad upload
        logger.exception("could not load an upload")
        raise user_error("This file could not be read as a photo. Upload a JPEG, PNG, WebP or HEIC photo.") from None
    report = check_quality(img)
    pred = None
    if report.ok:
        pred = PREDICTOR.predict(img)
        check_ood(OOD, pred.embedding, report)
    result: dict[str, Any] = {
        "probability": None, "band": None, "band_text": None, "band_edges": BAND_EDGES,
        "calibrated": bool(PREDICTOR.config.calibrated),
        "quality": {"ok": report.ok, "reasons": list(report.reasons), "codes": list(report.codes)},
        "model": MODEL_INFO, "heatmap": None, "disclaimer": DISCLAIMER,
    }
    if report.ok and pred is not None:
        result.update(probability=round(pred.probability, 6), band=pred.band, band_text=BAND_TEXT[pred.band],
                      heatmap=np.round(np.asarray(pred.attention, np.float64), 6).tolist())
        return result, img, pred.attention
    return result, img, None


def predict(file: str | None) -> dict[str, Any]:
    """API endpoint ``/predict``: an image file -> JSON (see module docstring)."""
    return analyze(file)[0]


def _band_html(result: dict[str, Any]) -> str:
    if not result["quality"]["ok"]:
        reasons = "".join(f"<li>{r}</li>" for r in result["quality"]["reasons"])
        return (f"<div class='dh-card dh-retake'><h2>{RETAKE}</h2><p>No risk estimate was made, because:</p>"
                f"<ul>{reasons}</ul></div>")
    band = result["band"]
    low, high = result["band_edges"]["low"], result["band_edges"]["high"]
    return (f"<div class='dh-card' style='border-color:{BAND_COLORS[band]}'>"
            f"<h2 id='dh-band' style='color:{BAND_COLORS[band]}'>{band.capitalize()} risk</h2>"
            f"<p>{result['band_text']}</p>"
            f"<p><b>Estimated probability that this lesion is malignant: {format_probability(result['probability'])}</b> "
            f"({CALIBRATION_NOTE}; Low below {100 * low:.0f}%, High from {100 * high:.0f}%). "
            "It is the model's estimate for lesions like those in its training data, not a certainty.</p></div>")


def analyze_ui(path: str | None):
    """UI handler: band card, heatmap overlay, downloadable PNG report (built from the same forward pass)."""
    result, img, attention = analyze(path)
    if attention is None:
        return _band_html(result), None, gr.update(value=None, visible=False)
    photo = img.copy()
    photo.thumbnail((512, 512))  # the one downscale of the upload: the overlay and the report both use it
    overlay = overlay_attention(photo, attention)
    _sweep()
    fd, name = tempfile.mkstemp(suffix=".png", prefix="dermohelper_result_", dir=_TMP)
    os.close(fd)
    render_report(name, photo, overlay, result, result["band_text"], result["disclaimer"])
    return _band_html(result), overlay, gr.update(value=name, visible=True)


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


SHOW_VERDICT = """() => {
  const card = document.querySelector('.dh-card');
  if (!card) return;
  const r = card.getBoundingClientRect();
  if (r.top < 0 || r.bottom > window.innerHeight) card.scrollIntoView({behavior: 'smooth', block: 'start'});
}"""

CSS = """
.dh-card {border: 3px solid #999; border-radius: 12px; padding: 12px 16px;}
.dh-card h2 {margin: 0 0 6px 0;}
.dh-retake {border-color: #ef6c00;}
.dh-disclaimer {font-size: 0.95em; background: #fff3e0; border-radius: 8px; padding: 8px 12px;}
"""

with gr.Blocks(title="DermoHelper: skin lesion triage aid", delete_cache=(60, CACHE_TTL)) as demo:
    gr.Markdown("# DermoHelper\nA photo of one skin spot -> **Low / Medium / High** risk, with where the model looked.")
    gr.Markdown(f"**{DISCLAIMER}**", elem_classes="dh-disclaimer")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            # Rear camera preferred on phones ("ideal", so laptops with one front camera still work).
            photo = pass_raw_upload(gr.Image(
                label="Photo of the lesion (close-up, in focus, good light)", type="filepath",
                sources=["upload", "webcam"], height=360,
                webcam_options=gr.WebcamOptions(
                    mirror=False, constraints={"video": {"facingMode": {"ideal": "environment"}}})))
            run_btn = gr.Button("Analyse photo", variant="primary")
            if _examples():
                gr.Examples(_examples(), inputs=photo, label="Example images (HAM10000, CC BY-NC-SA 4.0)")
        with gr.Column(min_width=300):
            verdict = gr.HTML("<p>Upload or take a photo, then press <b>Analyse photo</b>.</p>")
            heatmap = gr.Image(label="Where the model looked (brighter = more attention)", type="pil",
                               interactive=False, height=360, format="jpeg", elem_id="dh-heatmap")
            # Model-independent on purpose: how much of the map lies on the lesion is measured per model
            # (python -m dermo.focus; the bundled model's map rests mostly on the skin around it, reports/focus.md).
            gr.Markdown("Brighter = the parts of the photo the model weighed most. It is not an outline of the spot, "
                        "and it may rest more on the skin around the spot than on the spot itself.",
                        elem_id="dh-heatmap-note")
            report_file = gr.DownloadButton("Download result (PNG)", visible=False)
    gr.Markdown(f"Model: {MODEL_INFO['name']} {MODEL_INFO['version']} (sha256 {MODEL_INFO['sha256'][:12]}...). "
                "Photos are only used for this analysis and deleted from the server within minutes; "
                "nothing is stored, logged or shared.")
    # On a phone the columns stack and the verdict lands below the photo and the examples, out of sight: bring it
    # into view when it is not (on a desktop it is, beside the photo, and nothing moves). Gradio's own
    # scroll_to_output did not scroll here (6.17).
    run_btn.click(analyze_ui, photo, [verdict, heatmap, report_file], api_visibility="private").success(
        None, js=SHOW_VERDICT)

    # The public API: a plain file in, JSON out (hidden components: the page shows the UI above).
    api_file = gr.File(visible=False, type="filepath")
    api_json = gr.JSON(visible=False)
    api_btn = gr.Button(visible=False)
    api_btn.click(predict, api_file, api_json, api_name="predict", concurrency_limit=4)


def launch() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    demo.queue(default_concurrency_limit=2).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=MAX_UPLOAD, css=CSS)


if __name__ == "__main__":
    launch()
