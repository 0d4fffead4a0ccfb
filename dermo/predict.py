"""Batch prediction: one line per image, for one photo or a folder of thousands.

    python -m dermo.predict photo.jpg
    python -m dermo.predict folder/ more.png --model runs/cpu/magkd/best --json > predictions.jsonl

Each image gives one line; with ``--json`` a JSON object ``{"file", "probability", "band", "quality": {"ok",
"reasons", "codes"}}`` (probability = calibrated P(malignant), band = low/medium/high by the model's band edges). The
quality gate is the app's and the API's: size, exposure, focus, colour, "not a photo", and "does not look like a
skin lesion" (the model's out-of-distribution check, when the model folder has one). A photo that fails it gets
``probability`` and ``band`` null, as from the API, and ``quality.reasons`` says what to retake; ``--no-gate``
gives them anyway (``quality`` still says the photo failed). An unreadable or missing file gives ``{"file",
"error"}`` and the run goes on. Folders are searched recursively for image files and shown with a progress bar on
stderr; images are decoded and run in batches, so memory stays bounded. Exit status: 0 when every image was read, 1
when some could not be, 2 on a usage or model error.

DermoHelper is a triage aid, not a diagnosis: see a doctor about any lesion that worries you.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence



logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif", ".avif"}


def collect_images(inputs: Sequence[str | Path]) -> tuple[list[Path], bool]:
    """Files to predict, in order: explicit files as given (any suffix), folders searched recursively for images.

    Returns (files, any_folder). A path that does not exist is kept: it yields an error line, not a crash.
    """
    files: list[Path] = []
    any_folder = False
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            any_folder = True
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(p)
    return files, any_folder


def predict_files(predictor, files: Iterable[str | Path], batch_size: int = 32, ood=None,
                  gate: bool = True) -> Iterator[dict[str, Any]]:
    """Yield one result dict per file (see the module docstring), in order, running the model in batches.

    ``ood``: the model's ``dermo.ood.OODDetector`` (``load_ood``), None for none. ``gate=False`` keeps the
    probability and band of photos that fail the quality gate.
    """
    from .imageio import load_image
    from .inference import reported
    from .ood import check_ood
    from .quality import check_quality

    c = predictor.config

    def flush(batch: list[tuple[str, Any, Any]]) -> Iterator[dict[str, Any]]:
        if not batch:
            return
        try:
            preds = predictor.predict_batch([img for _, _, img in batch], batch_size=len(batch))
        except Exception as e:  # noqa: BLE001 - one image the model cannot take must not cost the others
            if len(batch) > 1:  # so: one by one, and the one that fails is that file's error line
                for item in batch:
                    yield from flush([item])
            else:
                logger.exception("predicting %s failed", batch[0][0])
                yield {"file": batch[0][0], "error": f"could not be analysed ({type(e).__name__}: {e})"}
            return
        for (name, q, _), pred in zip(batch, preds):
            if q.ok:  # the app runs the OOD check only on photos that passed the image checks: so do we
                check_ood(ood, pred.embedding, q)
            keep = q.ok or not gate
            p, band = reported(pred.probability, c.band_low, c.band_high)
            yield {"file": name, "probability": p if keep else None, "band": band if keep else None,
                   "quality": {"ok": q.ok, "reasons": list(q.reasons), "codes": list(q.codes)}}

    batch: list[tuple[str, Any, Any]] = []
    for f in files:
        name = str(f)
        try:
            img = load_image(f)
        except Exception as e:  # noqa: BLE001 - ImageError, and anything a broken file may raise: report, go on
            yield from flush(batch)
            batch = []
            yield {"file": name, "error": str(e)}
            continue
        batch.append((name, check_quality(img), img))
        if len(batch) >= batch_size:
            yield from flush(batch)
            batch = []
    yield from flush(batch)


def format_line(r: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(r, ensure_ascii=False)
    if "error" in r:
        return f"{r['file']}\tERROR\t{r['error']}"
    q = "ok" if r["quality"]["ok"] else "RETAKE: " + " ".join(r["quality"]["reasons"])
    p = "-" if r["probability"] is None else f"{r['probability']:.3f}"
    return f"{r['file']}\t{p}\t{r['band'] or '-'}\t{q}"


def _trained_with_tta(model_dir) -> bool:
    """Whether the run that wrote ``model_dir`` (its ``run_config.json``) evaluated with flip TTA."""
    import json
    from pathlib import Path

    try:
        return bool(json.loads((Path(model_dir) / "run_config.json").read_text())["train"]["tta"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    from tqdm.auto import tqdm

    ap = argparse.ArgumentParser(prog="python -m dermo.predict", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    ap.add_argument("--model", default=None, help="model folder, .onnx file or Hub id (default: the bundled model)")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--backend", default="auto", choices=("auto", "onnx", "torch"))
    ap.add_argument("--no-gate", dest="gate", action="store_false",
                    help="give probability and band for photos that fail the quality gate too (unreliable ones)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar on stderr (default: on when a folder is given)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .evaluate import open_predictor

    import contextlib

    try:
        with contextlib.redirect_stdout(sys.stderr):  # huggingface_hub prints while loading; stdout is for results
            predictor = open_predictor(args.model, args.backend)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as e:
        print(f"error: cannot load the model: {e}", file=sys.stderr)
        return 2
    from .ood import load_ood

    ood = load_ood(predictor.model_dir, predictor.sha256)
    if ood is None:
        print(f"note: {predictor.model_dir} has no out-of-distribution statistics for this model file: the "
              "'does not look like a skin lesion' check is off", file=sys.stderr)
    c = predictor.config
    if not c.calibrated:
        print(f"note: {predictor.model_dir} is not calibrated (temperature {c.temperature:g}, threshold "
              f"{c.threshold:g}, band edges {c.band_low:g}/{c.band_high:g}): its probabilities and bands are not "
              "the fitted ones the reports give; `python -m dermo.evaluate --calibrate` on a copy of the folder "
              "fits them", file=sys.stderr)
    if _trained_with_tta(predictor.model_dir):
        print(f"note: {predictor.model_dir} was evaluated with flip test-time augmentation; this command runs one "
              "pass per image, so its probabilities differ from the reports' (`python -m dermo.evaluate "
              "--tta` reproduces those)", file=sys.stderr)
    files, any_folder = collect_images(args.inputs)
    if not files:
        print("error: no images found in " + ", ".join(map(str, args.inputs)), file=sys.stderr)
        return 2
    show = any_folder if args.progress is None else args.progress
    n_err = 0
    with tqdm(total=len(files), unit="img", disable=not show, file=sys.stderr) as bar:
        for r in predict_files(predictor, files, args.batch_size, ood=ood, gate=args.gate):
            n_err += "error" in r
            print(format_line(r, args.json), flush=False)
            bar.update(1)
    sys.stdout.flush()
    if n_err:
        print(f"{n_err} of {len(files)} file(s) could not be read", file=sys.stderr)
    return 1 if n_err else 0


if __name__ == "__main__":
    raise SystemExit(main())
