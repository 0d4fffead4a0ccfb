"""Batch prediction: one line per image, for one photo or a folder of thousands.

    python -m dermo.predict photo.jpg
    python -m dermo.predict folder/ more.png --model runs/cpu/magkd/best --json > predictions.jsonl

Each image gives one line; with ``--json`` a JSON object ``{"file", "probability", "band", "quality": {"ok",
"reasons", "codes"}}`` (probability = calibrated P(malignant), band = low/medium/high by the model's band edges). A
photo that fails the quality gate (too small, dark, bright or blurry) still gets its probability, with ``quality.ok``
false: the figure is unreliable and the photo should be retaken. An unreadable or missing file gives ``{"file",
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


def predict_files(predictor, files: Iterable[str | Path], batch_size: int = 32) -> Iterator[dict[str, Any]]:
    """Yield one result dict per file (see the module docstring), in order, running the model in batches."""
    from .imageio import load_image
    from .quality import check_quality

    def flush(batch: list[tuple[dict[str, Any], Any]]) -> Iterator[dict[str, Any]]:
        if not batch:
            return
        preds = predictor.predict_batch([img for _, img in batch], batch_size=len(batch))
        for (row, _), pred in zip(batch, preds):
            yield {"file": row["file"], "probability": round(pred.probability, 6), "band": pred.band,
                   "quality": row["quality"]}

    batch: list[tuple[dict[str, Any], Any]] = []
    for f in files:
        name = str(f)
        try:
            img = load_image(f)
        except Exception as e:  # noqa: BLE001 - ImageError, and anything a broken file may raise: report, go on
            yield from flush(batch)
            batch = []
            yield {"file": name, "error": str(e)}
            continue
        q = check_quality(img)
        batch.append(({"file": name, "quality": {"ok": q.ok, "reasons": q.reasons, "codes": q.codes}}, img))
        if len(batch) >= batch_size:
            yield from flush(batch)
            batch = []
    yield from flush(batch)


def format_line(r: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(r, ensure_ascii=False)
    if "error" in r:
        return f"{r['file']}\tERROR\t{r['error']}"
    q = "ok" if r["quality"]["ok"] else "POOR PHOTO: " + " ".join(r["quality"]["reasons"])
    return f"{r['file']}\t{r['probability']:.3f}\t{r['band']}\t{q}"


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
    files, any_folder = collect_images(args.inputs)
    if not files:
        print("error: no images found in " + ", ".join(map(str, args.inputs)), file=sys.stderr)
        return 2
    show = any_folder if args.progress is None else args.progress
    n_err = 0
    with tqdm(total=len(files), unit="img", disable=not show, file=sys.stderr) as bar:
        for r in predict_files(predictor, files, args.batch_size):
            n_err += "error" in r
            print(format_line(r, args.json), flush=False)
            bar.update(1)
    sys.stdout.flush()
    if n_err:
        print(f"{n_err} of {len(files)} file(s) could not be read", file=sys.stderr)
    return 1 if n_err else 0


if __name__ == "__main__":
    raise SystemExit(main())
