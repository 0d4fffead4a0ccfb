"""Training throughput of the one training loop (``dermo.training.train_one_epoch``), the figure issue 3 targets.

    python benchmarks/train_speed.py --json reports/train_speed.json --md reports/train_speed.md

For each backbone: the model and optimizer go through the same Accelerate setup as a real run (bf16 autocast on a GPU,
channels_last, AdamW, cosine schedule), the images are uint8 tensors resident on the device and augmented there, and
``--steps`` optimizer steps are timed after ``--warmup`` steps (cuDNN autotuning, allocator warm-up). The backbone
weights are random: speed does not depend on them, and no download is needed. ``--magkd`` adds the MAG-KD student as
it trains with a cached teacher (``teacher_cache=memory``: per batch, the cached attention maps are warped with the
batch's augmentation and the three loss terms computed), so the cost of distillation shows beside the plain student.

The reference img/s are those of issue 3's table (one H200, the seed's plain pipeline, batch 128, 224 px, bf16);
the issue's target is at least 2x them for the same models. They only compare on the same kind of GPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dermo.config import REPORT_FOOTER, RunConfig  # noqa: E402
from dermo.models import create_model  # noqa: E402
from dermo.training import _accelerator, _cosine_with_warmup, train_one_epoch  # noqa: E402

# issue 3's table: train img/s of the seed's pipeline on one H200 (batch 128, 224 px, bf16)
REFERENCE = {"mobilenetv3_large_100": 3513.0, "efficientnet_b4": 1327.0, "tf_efficientnet_lite0": 3253.0}
TARGET_SPEEDUP = 2.0
DEFAULT_BACKBONES = ["mobilenetv3_large_100", "efficientnet_b4", "tf_efficientnet_lite0", "mobilenetv2_100"]


def measure(backbone: str, args, accelerator, magkd: bool = False) -> dict:
    """img/s of ``args.steps`` training steps of ``backbone`` after ``args.warmup`` untimed ones."""
    cfg = RunConfig().override(backbone=backbone, img_size=args.img_size, batch_size=args.batch_size,
                               pretrained=False, progress=False, mixed_precision=args.mixed_precision,
                               seed=0)
    if magkd:
        cfg = cfg.override(teacher="(cached)", teacher_cache="memory")
    dev = accelerator.device
    g = torch.Generator().manual_seed(0)
    n = args.batch_size * max(args.steps, args.warmup)
    images = torch.randint(0, 256, (n, args.img_size, args.img_size, 3), generator=g, dtype=torch.uint8).to(dev)
    labels = torch.randint(0, 2, (n,), generator=g).to(dev)
    model = create_model(cfg.model).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    scheduler = _cosine_with_warmup(optimizer, 1, 10_000)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    cache = None
    if magkd:  # teacher outputs as the cache holds them: logits (N, 2) and attention maps (N, 7, 7)
        cache = (torch.randn(n, 2, generator=g).to(dev), torch.rand(n, 7, 7, generator=g).to(dev))

    def stop_after(k: int):
        return lambda epoch, step: step >= k

    train_one_epoch(model, [], optimizer, scheduler, accelerator, images, labels, cfg, 0,
                    on_step=stop_after(args.warmup), teacher_cache=cache)
    stats = train_one_epoch(model, [], optimizer, scheduler, accelerator, images, labels, cfg, 1,
                            on_step=stop_after(args.steps), teacher_cache=cache)
    row = {"backbone": backbone + (" + MAG-KD (cached teacher)" if magkd else ""), "img_per_s": stats["img_per_s"],
           "seconds": stats["seconds"], "steps": args.steps,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    ref = REFERENCE.get(backbone) if not magkd else None
    if ref:
        row["reference_img_per_s"] = ref
        row["speedup"] = stats["img_per_s"] / ref
        row["meets_2x"] = row["speedup"] >= TARGET_SPEEDUP
    del model, optimizer, images
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def rows_from_log(path: str, args) -> dict:
    """The rows this script printed into a log, with the GPU name (nvidia-smi's csv line) and the torch version
    (``python torch timm accelerate`` versions line) that train/gpu_full.sh prints first."""
    rows, device, torch_version = [], "unknown device", "unknown"
    for line in Path(path).read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{") and '"img_per_s"' in line and '"backbone"' in line:
            rows.append(json.loads(line))
        elif device == "unknown device" and line.startswith("NVIDIA") and "," in line:
            device = line.split(",")[0].strip()
        elif torch_version == "unknown" and len(line.split()) == 4 and line.split()[0][:1].isdigit():
            torch_version = line.split()[1]
    if not rows:
        raise SystemExit(f"{path}: no benchmark rows found")
    wanted = list(args.backbones) + [b + " + MAG-KD (cached teacher)" for b in args.magkd]
    missing = [b for b in wanted if b not in {r["backbone"] for r in rows}]
    return {"device": device, "torch": torch_version, "mixed_precision": "bf16" if device != "unknown device" else
            "unknown", "img_size": args.img_size, "batch_size": args.batch_size, "rows": rows,
            "source_log": path, "missing": missing}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=DEFAULT_BACKBONES)
    ap.add_argument("--magkd", nargs="*", default=["mobilenetv2_100"],
                    help="backbones also timed as MAG-KD students with a cached teacher")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"])
    ap.add_argument("--json", default="")
    ap.add_argument("--md", default="")
    ap.add_argument("--rows-from", default="",
                    help="measure nothing: rebuild the report from the rows this script printed into a log (a run "
                         "stopped before it wrote its files), with train/gpu_full.sh's GPU and version lines")
    args = ap.parse_args(argv)
    command = "python benchmarks/train_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.rows_from:
        result = rows_from_log(args.rows_from, args)
        result["command"] = command
    else:
        accelerator = _accelerator(RunConfig().override(mixed_precision=args.mixed_precision))
        rows = []
        for b in args.backbones:
            rows.append(measure(b, args, accelerator))
            print(json.dumps(rows[-1]), flush=True)
        for b in args.magkd:
            rows.append(measure(b, args, accelerator, magkd=True))
            print(json.dumps(rows[-1]), flush=True)
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
        result = {"device": device, "torch": torch.__version__, "mixed_precision": accelerator.mixed_precision,
                  "img_size": args.img_size, "batch_size": args.batch_size, "rows": rows, "command": command}
    rows = result["rows"]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.md:
        lines = [f"# Training throughput ({result['device']})", "",
                 f"`{result['command']}`: the training loop's own epoch function, data resident on the device and "
                 f"augmented there, batch {args.batch_size}, {args.img_size} px, mixed precision "
                 f"{result['mixed_precision']}, torch {result['torch']}; {args.steps} steps timed after "
                 f"{args.warmup} warm-up steps, random weights and images.", ""]
        if result.get("source_log"):
            lines += [f"Rows as printed into `{result['source_log']}` by the run there; not measured: "
                      f"{', '.join(result['missing']) or 'none'} (the run stopped first).", ""]
        lines += [
                 "| model | img/s | issue 3's table (H200) | speedup | target 2x |", "|---|---|---|---|---|"]
        for r in rows:
            ref = f"{r['reference_img_per_s']:,.0f}" if "reference_img_per_s" in r else "-"
            sp = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
            met = ("met" if r["meets_2x"] else "missed") if "meets_2x" in r else "-"
            lines.append(f"| {r['backbone']} | {r['img_per_s']:,.0f} | {ref} | {sp} | {met} |")
        lines += ["", "The references were measured on an H200; a speedup is only meaningful on the same kind of "
                  "GPU.", "", REPORT_FOOTER]
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
