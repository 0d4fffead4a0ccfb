"""Export a trained model folder to ONNX (+ int8) with its config.json: the bundle ``Predictor`` and the app load.

    python -m train.export --model runs/cpu/magkd/best --out dermo/assets            # auto: fp32/dynamic/static
    python -m train.export --model runs/cpu/teacher/best --out runs/cpu/teacher/onnx --variant fp32

``auto`` builds fp32, fp16-stored weights (fp16w), dynamic int8 and static QDQ int8, scores them on the validation
split and ships the fastest (then smallest) one within 0.005 AUROC of fp32 that keeps the fp32 risk band on >= 99 %
of images (see ``dermo.export.choose_variant``).
Run it after ``python -m dermo.evaluate --calibrate`` so the fitted temperature and bands travel in config.json.
"""
from __future__ import annotations

import argparse
import json
import logging

from dermo.config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST
from dermo.export import export_bundle


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--model", required=True, help="model folder (save_pretrained layout: config.json, "
                                                   "model.safetensors)")
    ap.add_argument("--out", required=True, help="output folder for model.onnx + config.json (dermo/assets ships)")
    ap.add_argument("--variant", default="auto", choices=("auto", "fp32", "fp16w", "dynamic", "static"))
    ap.add_argument("--calib-images", type=int, default=256, help="training images for static int8 calibration")
    ap.add_argument("--val-images", type=int, default=0, help="validation images used to choose (0 = all)")
    ap.add_argument("--parity-images", type=int, default=64, help="test images for the ORT vs PyTorch check")
    ap.add_argument("--calib-method", default="percentile", choices=("minmax", "percentile", "entropy"),
                    help="activation ranges; percentile (99.999) kept the fp32 band best on the MAG-KD student")
    ap.add_argument("--auroc-tolerance", type=float, default=0.005, help="max validation AUROC loss vs fp32")
    ap.add_argument("--min-band-agreement", type=float, default=0.99,
                    help="min share of validation images keeping the fp32 Low/Medium/High band")
    ap.add_argument("--quantize-head", action="store_true",
                    help="also quantize the attention head (kept fp32 by default)")
    ap.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel int8 weights")
    ap.add_argument("--threads", type=int, default=1, help="ORT threads for the latency used in the choice")
    ap.add_argument("--keep-variants", default=None, help="folder to also keep every candidate .onnx in")
    ap.add_argument("--data", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    ap.add_argument("--seed", type=int, default=0, help="seed of the calibration-image sample")
    ap.add_argument("--version", default=None,
                    help="version of the shipped bundle (default: the trained model's); required when --out holds "
                         "a bundle of other weights under the same name and version")
    return ap


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    # onnxruntime.quantization logs every tensor at INFO on the root logger: keep the root at WARNING
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("dermo").setLevel(logging.INFO)
    conf = export_bundle(args.model, args.out, variant=args.variant, calib_images=args.calib_images,
                         val_images=args.val_images, parity_images=args.parity_images, data_dir=args.data,
                         manifest=args.manifest, keep_head_fp32=not args.quantize_head,
                         per_channel=not args.per_tensor, calib_method=args.calib_method,
                         auroc_tolerance=args.auroc_tolerance, min_band_agreement=args.min_band_agreement,
                         num_threads=args.threads, seed=args.seed, keep_variants=args.keep_variants,
                         version=args.version)
    print(json.dumps({k: conf[k] for k in ("onnx_variant", "sha256", "source_model", "parity", "variants")},
                     indent=1))
    return conf


if __name__ == "__main__":
    main()
