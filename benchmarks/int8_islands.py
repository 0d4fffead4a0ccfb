"""Static int8 with fp32 islands: which layers of a model move it out of the fp32 risk band, and does keeping the most
sensitive ones in fp32 bring static int8 up to the export's rule (>= 99% of validation images in the fp32 band,
validation AUROC within 0.005)?

    python benchmarks/int8_islands.py --model models/gpu/magkd_ensemble --json reports/int8_islands.json \
        --md reports/int8_islands.md

1. The model is exported to fp32 ONNX and calibrated once with the export's own settings (percentile ranges on the
   same 256 training images, QDQ, per-channel int8 weights, uint8 activations, attention head kept fp32); the ranges
   are cached, so every variant below uses the same ones.
2. Sensitivity: each quantizable node is quantized alone (everything else fp32), and scored by the RMS change of the
   logit difference z_malignant - z_benign against fp32 on ``--rank-images`` other training images (drawn with
   another seed; a few may also be calibration images). The validation split is not used to rank.
3. The k most sensitive nodes stay fp32 (k in ``--ks``; ``all`` keeps every node fp32, which must give fp32's
   outputs back), the rest is quantized; each variant is scored on the validation split (band agreement with fp32,
   AUROC, at the model's calibration) and timed at batch 1 in interleaved rounds beside fp32.

The rule is the export's (``dermo.export.choose_variant``); this script only measures, it ships nothing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dermo.config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST, REPORT_FOOTER  # noqa: E402
from dermo.export import (export_onnx, latency, load_images, make_session, quantizable_nodes,  # noqa: E402
                          quantize_static_int8, run_onnx, score_variant)
from dermo.inference import read_config, sha256_file  # noqa: E402
from dermo.models import load_model  # noqa: E402

RULE = {"min_band_agreement": 0.99, "auroc_tolerance": 0.005}


def logit_gap(logits: np.ndarray) -> np.ndarray:
    return logits[:, 1] - logits[:, 0]


def rms_change(logits: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(np.mean((logit_gap(logits) - logit_gap(ref)) ** 2)))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/gpu/magkd_ensemble", help="a save_pretrained folder (calibrated)")
    ap.add_argument("--data", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    ap.add_argument("--calib-images", type=int, default=256, help="as the export: training images, seed 0")
    ap.add_argument("--rank-images", type=int, default=512, help="training images (seed 1) that rank the nodes")
    ap.add_argument("--val-images", type=int, default=0, help="validation images scored (0 = all)")
    ap.add_argument("--ks", default="0,1,2,4,8,12,16,all", help="numbers of most sensitive nodes kept fp32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30, help="batch-1 latency calls per variant (in 3 rounds)")
    ap.add_argument("--json", default="")
    ap.add_argument("--md", default="")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    model_dir = Path(args.model)
    model = load_model(str(model_dir)).eval()
    cfg, _ = read_config(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = export_onnx(model, tmp / "fp32.onnx")
        x_cal, _ = load_images(cfg, "train", args.calib_images, seed=0, data_dir=args.data, manifest=args.manifest)
        x_rank, _ = load_images(cfg, "train", args.rank_images, seed=1, data_dir=args.data, manifest=args.manifest)
        x_val, y_val = load_images(cfg, "validation", args.val_images, data_dir=args.data, manifest=args.manifest)
        ref = make_session(fp32, args.threads)
        ref_rank, ref_val = run_onnx(ref, x_rank)["logits"], run_onnx(ref, x_val)["logits"]
        cache = tmp / "ranges.json"

        def quantize(dst: Path, **kw) -> Path:
            return quantize_static_int8(fp32, dst, x_cal, method="percentile", calibration_cache=cache, **kw)

        nodes = quantizable_nodes(fp32)
        ranking = []
        for name in nodes:
            one = quantize(tmp / "one.onnx", only=[name])
            ranking.append({"node": name, "rms_logit_change": rms_change(run_onnx(make_session(one, args.threads),
                                                                                  x_rank)["logits"], ref_rank)})
        order = [r["node"] for r in sorted(ranking, key=lambda r: -r["rms_logit_change"])]
        ks = sorted({len(nodes) if k.strip() == "all" else min(int(k), len(nodes)) for k in args.ks.split(",")})
        variants, sessions = [], {"fp32": ref}
        for k in ks:
            f = quantize(tmp / f"int8_fp32_{k}.onnx", exclude=order[:k])
            sessions[k] = make_session(f, args.threads)
            logits = run_onnx(sessions[k], x_val)["logits"]
            row = {"fp32_nodes": k, "fp32_nodes_names": order[:k], "size_mb": f.stat().st_size / 1e6,
                   **score_variant(logits, ref_val, y_val, cfg), "rms_logit_change": rms_change(logits, ref_val)}
            variants.append(row)
        fp32_row = {**score_variant(ref_val, ref_val, y_val, cfg), "size_mb": fp32.stat().st_size / 1e6}
        times: dict = {key: [] for key in sessions}
        for _ in range(3):  # interleaved, so a busy neighbour slows every variant alike
            for key, sess in sessions.items():
                times[key].append(latency(sess, x_val[:1], runs=max(1, args.runs // 3))["median_ms"])
    fp32_row["latency_b1_ms"] = statistics.median(times["fp32"])
    for row in variants:
        row["latency_b1_ms"] = statistics.median(times[row["fp32_nodes"]])
        row["latency_vs_fp32"] = row["latency_b1_ms"] / fp32_row["latency_b1_ms"]
        row["meets_rule"] = bool(row["band_agreement"] >= RULE["min_band_agreement"]
                                 and row["auroc"] is not None and fp32_row["auroc"] is not None
                                 and row["auroc"] >= fp32_row["auroc"] - RULE["auroc_tolerance"])
    result = {"command": "python benchmarks/int8_islands.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model": str(model_dir), "sha256": sha256_file(model_dir / "model.safetensors"),
              "img_size": cfg.img_size, "calib_images": len(x_cal), "rank_images": len(x_rank),
              "validation_images": len(y_val), "threads": args.threads, "quantizable_nodes": len(nodes),
              "rule": RULE, "fp32": fp32_row, "variants": variants,
              "ranking": sorted(ranking, key=lambda r: -r["rms_logit_change"]),
              "seconds": time.perf_counter() - t_start}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(render(result))
    return result


def render(r: dict) -> str:
    f = r["fp32"]
    lines = [f"# Static int8 with fp32 islands: {r['model']} ({r['img_size']} px)", "",
             f"`{r['command']}` ({r['seconds'] / 60:.1f} min). Calibration as the export's (percentile, "
             f"{r['calib_images']} training images); {r['quantizable_nodes']} quantizable nodes ranked by the RMS "
             f"change of the logit difference when each alone is int8, on {r['rank_images']} training images; "
             f"variants scored on {r['validation_images']} validation images at the model's calibration; batch-1 "
             f"latency with {r['threads']} thread(s). Rule (the export's): >= "
             f"{100 * r['rule']['min_band_agreement']:.0f}% of images in the fp32 band and AUROC within "
             f"{r['rule']['auroc_tolerance']} of fp32.", "",
             "| nodes kept fp32 (most sensitive first) | same band as fp32 | validation AUROC | max probability change "
             "| RMS logit change | batch-1 ms | vs fp32 | size MB | meets the rule |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| fp32 (reference) | 100.0% | {f['auroc']:.4f} | 0 | 0 | {f['latency_b1_ms']:.2f} | 1.00x | "
             f"{f['size_mb']:.2f} | - |"]
    for v in r["variants"]:
        lines.append(f"| {v['fp32_nodes']} | {100 * v['band_agreement']:.1f}% | {v['auroc']:.4f} | "
                     f"{v['max_prob_diff']:.3f} | {v['rms_logit_change']:.3f} | {v['latency_b1_ms']:.2f} | "
                     f"{v['latency_vs_fp32']:.2f}x | {v['size_mb']:.2f} | {'yes' if v['meets_rule'] else 'no'} |")
    lines += ["", "Most sensitive nodes (each alone int8, everything else fp32):", "",
              "| rank | node | RMS logit change |", "|---|---|---|"]
    for i, row in enumerate(r["ranking"][:12], 1):
        lines.append(f"| {i} | `{row['node']}` | {row['rms_logit_change']:.4f} |")
    lines += ["", REPORT_FOOTER]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
