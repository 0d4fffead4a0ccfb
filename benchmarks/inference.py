"""CPU inference benchmark of the shipped model: PyTorch eager vs ONNX Runtime fp32 / dynamic int8 / shipped variant.

    python benchmarks/inference.py --json reports/inference.json --md reports/inference.md

Defaults: the bundle in ``dermo/assets`` and the PyTorch folder it was exported from (``source_model`` in its
config.json). ORT fp32 and dynamic int8 are rebuilt from that folder with ``dermo.export`` (same code as the
export), the shipped file is loaded through ``dermo.inference.Predictor`` (sha256 checked).

When the shipped variant is not static int8, a static QDQ int8 row (same settings as the export, recorded in
config.json) is added to show what it would have given.

In one run, for each backend: file size, batch-1 latency (median and p90 over ``--runs`` calls, measured in
interleaved rounds so a busy neighbour slows every backend alike), batch-32 throughput, test-split AUROC with the
shipped calibration, and for the ONNX variants the share of test images whose Low/Medium/High band equals fp32's.
Then the issue-6 targets are checked. ``--threads`` sets intra-op threads for ORT and PyTorch alike (default 1: the
shared 2-core machine this was written on gave noisier and slower 2-thread numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dermo.config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST  # noqa: E402
from dermo.export import (INPUT_NAME, export_onnx, image_batches, load_images, make_session,  # noqa: E402
                          probabilities, quantize_dynamic_int8, quantize_static_int8, run_onnx, run_torch)
from dermo.inference import BUNDLED_MODEL_DIR, ONNX_NAME, Predictor, read_config  # noqa: E402
from dermo.metrics import assign_bands, auroc  # noqa: E402

TARGETS = {"max_size_mb": 6.0, "max_latency_vs_fp32": 0.8, "min_speedup_vs_dynamic": 4.0,
           "max_auroc_drop": 0.005, "min_band_agreement": 0.99}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted({f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in text})


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=str(BUNDLED_MODEL_DIR), help="shipped bundle (model.onnx + config.json)")
    ap.add_argument("--torch-model", default=None, help="PyTorch folder it came from (default: its source_model)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--md", default=None, help="write the markdown table here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=50, help="batch-1 calls per backend")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds the batch-1 calls are split into")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batch-runs", type=int, default=5, help="batch calls per backend for throughput")
    ap.add_argument("--test-images", type=int, default=0, help="test images for AUROC / bands (0 = whole split)")
    ap.add_argument("--no-static", action="store_true",
                    help="skip the extra static-int8 row shown when the shipped variant is not static int8")
    ap.add_argument("--data", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    from dermo.models import load_model

    torch.set_num_threads(args.threads)
    model_dir = Path(args.model_dir)
    shipped = Predictor(model_dir, backend="onnx", num_threads=args.threads)  # checks sha256
    cfg, extra = read_config(model_dir)
    torch_dir = args.torch_model or extra.get("source_model")
    if not torch_dir or not Path(torch_dir).is_dir():
        raise SystemExit(f"PyTorch model folder {torch_dir!r} not found; pass --torch-model <save_pretrained dir>")
    model = load_model(str(torch_dir)).eval()
    if model.config.img_size != cfg.img_size or model.config.backbone != cfg.backbone:
        raise SystemExit(f"{torch_dir} ({model.config.backbone}@{model.config.img_size}) is not the model of "
                         f"{model_dir} ({cfg.backbone}@{cfg.img_size})")
    variant = extra.get("onnx_variant", "fp32")

    x, y = load_images(cfg, "test", args.test_images, data_dir=args.data, manifest=args.manifest)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx")
        dyn = quantize_dynamic_int8(fp32, Path(tmp) / "dynamic.onnx")
        files = {"ort_fp32": fp32, "ort_dynamic_int8": dyn}
        if variant != "static" and not args.no_static:  # show what static int8 would have cost/gained
            q = extra.get("quantization", {})
            x_cal, _ = load_images(cfg, "train", q.get("calib_images") or 256, seed=q.get("seed", 0),
                                   data_dir=args.data, manifest=args.manifest)
            files["ort_static_int8"] = quantize_static_int8(
                fp32, Path(tmp) / "static.onnx", x_cal, per_channel=q.get("per_channel", True),
                keep_head_fp32=q.get("keep_head_fp32", True), method=q.get("calib_method", "minmax"))
        files[f"ort_shipped_{variant}"] = model_dir / ONNX_NAME
        sessions = {k: make_session(f, args.threads) for k, f in files.items()}
        sizes = {k: f.stat().st_size / 1e6 for k, f in files.items()}
    sizes["torch_eager"] = (Path(torch_dir) / "model.safetensors").stat().st_size / 1e6
    names = ["torch_eager", *files]

    def call(name: str, xb: np.ndarray) -> None:
        if name == "torch_eager":
            with torch.no_grad():
                model(torch.from_numpy(xb))
        else:
            sessions[name].run(None, {INPUT_NAME: xb})

    # ---- latency: batch 1, interleaved rounds; throughput: batch N
    batches = image_batches(x[:64], (1, args.batch))
    for n in names:  # warm-up
        for _ in range(3):
            call(n, batches[1])
        call(n, batches[args.batch])
    times: dict[str, list[float]] = {n: [] for n in names}
    per_round = max(1, args.runs // args.rounds)
    for r in range(args.rounds):
        for n in names:
            for i in range(per_round):
                xb = np.ascontiguousarray(x[(r * per_round + i) % len(x)][None])
                t = time.perf_counter()
                call(n, xb)
                times[n].append((time.perf_counter() - t) * 1e3)
    bt: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.batch_runs):
        for n in names:
            t = time.perf_counter()
            call(n, batches[args.batch])
            bt[n].append(time.perf_counter() - t)

    # ---- accuracy on the test split with the shipped calibration
    logits = {"torch_eager": run_torch(model, x)["logits"]}
    for n in files:
        logits[n] = run_onnx(sessions[n], x)["logits"]
    probs = {n: probabilities(v, cfg) for n, v in logits.items()}
    bands = {n: assign_bands(p, cfg.band_low, cfg.band_high) for n, p in probs.items()}
    two_classes = len(set(y.tolist())) == 2
    rows = {}
    for n in names:
        ts = sorted(times[n])
        rows[n] = {
            "size_mb": round(sizes[n], 3),
            "latency_b1_median_ms": round(statistics.median(ts), 3),
            "latency_b1_p90_ms": round(ts[min(len(ts) - 1, int(0.9 * len(ts)))], 3),
            f"throughput_b{args.batch}_img_s": round(args.batch / statistics.median(bt[n]), 1),
            "test_auroc": round(float(auroc(y, probs[n])), 5) if two_classes else None,
            "band_agreement_vs_fp32": round(float((bands[n] == bands["ort_fp32"]).mean()), 5),
            "max_prob_diff_vs_fp32": round(float(np.max(np.abs(probs[n] - probs["ort_fp32"]))), 5),
        }
    s, f, d = rows[f"ort_shipped_{variant}"], rows["ort_fp32"], rows["ort_dynamic_int8"]
    checks = {
        "size_mb<=6": s["size_mb"] <= TARGETS["max_size_mb"],
        "latency<=0.8x_fp32": s["latency_b1_median_ms"] <= TARGETS["max_latency_vs_fp32"] * f["latency_b1_median_ms"],
        "speedup>=4x_dynamic": d["latency_b1_median_ms"] >= TARGETS["min_speedup_vs_dynamic"]
        * s["latency_b1_median_ms"],
        "auroc_within_0.005": (s["test_auroc"] is not None and f["test_auroc"] is not None
                               and abs(s["test_auroc"] - f["test_auroc"]) <= TARGETS["max_auroc_drop"]),
        "band_agreement>=0.99": s["band_agreement_vs_fp32"] >= TARGETS["min_band_agreement"],
    }
    result = {
        "model_dir": str(model_dir), "torch_model": str(torch_dir), "shipped_variant": variant,
        "shipped_sha256": shipped.sha256, "backbone": cfg.backbone, "img_size": cfg.img_size,
        "calibration": {"temperature": cfg.temperature, "logit_bias": cfg.logit_bias, "band_low": cfg.band_low,
                        "band_high": cfg.band_high, "calibrated": cfg.calibrated},
        "test_images": int(len(y)), "test_malignant": int(y.sum()),
        "speed_vs_fp32": round(f["latency_b1_median_ms"] / s["latency_b1_median_ms"], 3),
        "speed_vs_dynamic": round(d["latency_b1_median_ms"] / s["latency_b1_median_ms"], 3),
        "rows": rows, "targets": TARGETS, "checks": checks,
        "env": {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(), "threads": args.threads,
                "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "onnxruntime": ort.__version__,
                "torch": torch.__version__, "python": platform.python_version(), "runs_b1": len(times[names[0]]),
                "batch": args.batch, "batch_runs": args.batch_runs},
        "command": "python benchmarks/inference.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    md = markdown(result, args.batch)
    print(md)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(md + "\n")
    return result


def markdown(r: dict, batch: int) -> str:
    e = r["env"]
    lines = [f"# Inference benchmark: {r['backbone']} @ {r['img_size']} px ({r['torch_model']})", "",
             f"CPU: {e['cpu']} ({', '.join(e['cpu_flags'])}), {e['cores']} cores, {e['threads']} thread(s); "
             f"load average {e['loadavg_start'][0]:.2f} -> {e['loadavg_end'][0]:.2f}; onnxruntime {e['onnxruntime']}, "
             f"torch {e['torch']}. Test split: {r['test_images']} images ({r['test_malignant']} malignant). "
             f"Bands use the shipped calibration (T={r['calibration']['temperature']:.3g}, "
             f"edges {r['calibration']['band_low']:.3g}/{r['calibration']['band_high']:.3g}).", "",
             f"| backend | size MB | batch-1 median ms | batch-1 p90 ms | batch-{batch} img/s | test AUROC | "
             "same band as fp32 |", "|---|---|---|---|---|---|---|"]
    for n, row in r["rows"].items():
        au = "n/a" if row["test_auroc"] is None else f"{row['test_auroc']:.4f}"
        lines.append(f"| {n} | {row['size_mb']:.2f} | {row['latency_b1_median_ms']:.2f} | "
                     f"{row['latency_b1_p90_ms']:.2f} | {row[f'throughput_b{batch}_img_s']:.1f} | {au} | "
                     f"{100 * row['band_agreement_vs_fp32']:.1f} % |")
    lines += ["", f"Shipped variant: **{r['shipped_variant']}**, {r['speed_vs_fp32']:.2f}x the speed of ORT fp32 and "
                  f"{r['speed_vs_dynamic']:.2f}x dynamic int8 at batch 1.", "",
              "Issue-6 targets: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in r["checks"].items()),
              "", f"Reproduce: `{r['command']}`"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
