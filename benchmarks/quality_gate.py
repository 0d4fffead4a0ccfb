"""How well the app's quality gate (dermo.quality + dermo.ood) lets lesions through and keeps non-skin images out.

    python benchmarks/quality_gate.py [--model DIR] [--json reports/quality_gate.json]

* lesions: every VALIDATION image of the committed split (the OOD threshold was calibrated there) and every TEST
  image (held out from the calibration: the honest figure);
* non-skin: photos that ship with packages (scikit-learn's china.jpg / flower.jpg; scikit-image's bundled sample
  data when installed from requirements-bench.txt) and synthetic patterns (noise, gradients, checkerboards, text
  renders, solid colours, stripes), each a few sizes / colours, fixed seeds.

Each image goes through exactly what the app does: ``load_image`` -> ``check_quality`` -> forward -> ``check_ood``.
Writes the JSON and a Markdown table next to it (same stem). Targets: >= 95 % of validation lesions pass,
>= 90 % of non-skin images rejected.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dermo.config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST  # noqa: E402
from dermo.imageio import load_image  # noqa: E402
from dermo.inference import Predictor  # noqa: E402
from dermo.ood import check_ood, load_ood, split_paths  # noqa: E402
from dermo.quality import check_quality  # noqa: E402

TARGET_PASS, TARGET_REJECT = 0.95, 0.90


def package_photos() -> list[tuple[str, str, Image.Image]]:
    """(category, name, image): photos installed with scikit-learn and (optionally) scikit-image."""
    out = []
    from sklearn.datasets import load_sample_images

    for name, arr in zip(("china.jpg", "flower.jpg"), load_sample_images().images):
        out.append(("photo:scikit-learn", name, Image.fromarray(arr)))
    try:
        import skimage.data as skd
    except ImportError:
        return out
    d = Path(skd.__file__).parent
    for p in sorted(d.iterdir()):
        if p.suffix.lower() in (".png", ".jpg", ".jpeg"):
            try:
                out.append(("photo:scikit-image", p.name, load_image(p)))
            except ValueError:
                pass
    return out


def synthetic() -> list[tuple[str, str, Image.Image]]:
    rng = np.random.default_rng(0)
    out = []
    for i, (w, h) in enumerate(((224, 224), (400, 300), (640, 480))):
        noise = rng.integers(0, 256, (h, w, 3), np.uint8)
        out.append(("synthetic:noise", f"uniform_rgb_{w}x{h}", Image.fromarray(noise)))
        g = np.clip(rng.normal(128, 40, (h, w)), 0, 255).astype(np.uint8)
        out.append(("synthetic:noise", f"gaussian_grey_{w}x{h}", Image.fromarray(g).convert("RGB")))
        lo = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), np.uint8)
        blocky = Image.fromarray(lo).resize((w, h), Image.Resampling.BICUBIC)
        out.append(("synthetic:noise", f"smooth_colour_noise_{w}x{h}", blocky))
        x = np.linspace(0, 1, w)[None, :, None]
        y = np.linspace(0, 1, h)[:, None, None]
        c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        out.append(("synthetic:gradient", f"linear_{w}x{h}",
                    Image.fromarray((c1 * (1 - x) + c2 * x + 0 * y).astype(np.uint8))))
        r = np.sqrt((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.71
        out.append(("synthetic:gradient", f"radial_{w}x{h}", Image.fromarray((c1 * (1 - r) + c2 * r).astype(np.uint8))))
        out.append(("synthetic:gradient", f"diagonal_{w}x{h}",
                    Image.fromarray((255 * (x + y) / 2 * np.ones(3)).astype(np.uint8))))
    for cell in (4, 8, 16, 32, 64):
        yy, xx = np.mgrid[0:256, 0:256]
        board = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8)
        out.append(("synthetic:checkerboard", f"bw_{cell}px", Image.fromarray(board).convert("RGB")))
        col = np.where(board[..., None] > 0, rng.integers(0, 256, 3), rng.integers(0, 256, 3)).astype(np.uint8)
        out.append(("synthetic:checkerboard", f"colour_{cell}px", Image.fromarray(col)))
        stripes = ((xx // cell) % 2 * 255).astype(np.uint8)
        out.append(("synthetic:stripes", f"stripes_{cell}px", Image.fromarray(stripes).convert("RGB")))
    texts = ["DermoHelper is a triage aid", "Lorem ipsum dolor sit amet, consectetur adipiscing elit",
             "ERROR 404: page not found", "Invoice #2024-117  Total: 42.00 EUR", "0123456789 abcdefghij"]
    for i, t in enumerate(texts):
        for size in (16, 32):
            im = Image.new("RGB", (400, 300), tuple(int(v) for v in rng.integers(180, 256, 3)))
            d = ImageDraw.Draw(im)
            font = ImageFont.load_default(size=size)
            for line in range(0, 300, size + 8):
                d.text((10, line), t, fill=tuple(int(v) for v in rng.integers(0, 90, 3)), font=font)
            out.append(("synthetic:text", f"text{i}_{size}px", im))
    for c in ((255, 255, 255), (0, 0, 0), (128, 128, 128), (200, 150, 130), (230, 190, 170), (120, 80, 60),
              (255, 0, 0), (0, 128, 255), (30, 160, 60), (250, 220, 40)):
        out.append(("synthetic:solid", "solid_%02x%02x%02x" % c, Image.new("RGB", (300, 300), c)))
    return out


def run_gate(predictor: Predictor, ood, images, batch_size: int = 32) -> list[dict]:
    """Per image: {"ok", "codes", "ood_score"} through the app's gate (batched forward for speed)."""
    results: list[dict] = [None] * len(images)  # type: ignore[list-item]
    pending: list[tuple[int, Image.Image, object]] = []

    def flush() -> None:
        if not pending:
            return
        _, _, emb = predictor.forward(predictor.preprocess([im for _, im, _ in pending]))
        for j, (i, _, rep) in enumerate(pending):
            score = check_ood(ood, None if emb is None else emb[j], rep)
            results[i] = {"ok": rep.ok, "codes": list(rep.codes), "ood_score": score}
        pending.clear()

    for i, src in enumerate(images):
        try:
            img = load_image(src)
        except ValueError as e:
            results[i] = {"ok": False, "codes": [getattr(e, "code", "load_error")], "ood_score": None}
            continue
        rep = check_quality(img)
        if not rep.ok:
            results[i] = {"ok": False, "codes": list(rep.codes), "ood_score": None}
            continue
        pending.append((i, img, rep))
        if len(pending) >= batch_size:
            flush()
    flush()
    return results


def summarize(results: list[dict]) -> dict:
    n = len(results)
    passed = sum(r["ok"] for r in results)
    codes = Counter(c for r in results for c in r["codes"])
    return {"n": n, "passed": passed, "pass_rate": passed / n if n else None,
            "rejected_rate": (n - passed) / n if n else None, "reasons": dict(codes)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model folder (default: the bundled dermo/assets)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    p.add_argument("--limit", type=int, default=0, help=">0: at most N lesion images per split (quick runs)")
    p.add_argument("--json", default=str(ROOT / "reports" / "quality_gate.json"))
    a = p.parse_args()

    predictor = Predictor(a.model)
    ood = load_ood(predictor.model_dir, predictor.sha256)
    report: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "command": "python " + " ".join(sys.argv), "platform": platform.platform(),
                    "model": {k: predictor.info[k] for k in ("name", "version", "sha256", "backend", "variant")},
                    "model_dir": str(predictor.model_dir),
                    "ood": None if ood is None else {"threshold": ood.threshold, "pass_rate_target": ood.pass_rate},
                    "targets": {"validation_pass_rate": TARGET_PASS, "non_skin_rejected_rate": TARGET_REJECT}}
    lesions = {}
    for split in ("validation", "test"):
        paths = split_paths(a.data_dir, split, a.manifest, a.limit)
        lesions[split] = summarize(run_gate(predictor, ood, paths))
        print(f"{split}: {lesions[split]['passed']}/{lesions[split]['n']} lesions pass", flush=True)
    report["lesions"] = lesions

    items = package_photos() + synthetic()
    res = run_gate(predictor, ood, [im for _, _, im in items])
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for (cat, name, _), r in zip(items, res):
        by_cat[cat].append(r)
    report["non_skin"] = {"all": summarize(res), "by_category": {k: summarize(v) for k, v in sorted(by_cat.items())},
                          "passed_images": [f"{cat}/{name}" for (cat, name, _), r in zip(items, res) if r["ok"]]}
    report["meets_targets"] = {
        "validation_pass_rate": lesions["validation"]["pass_rate"] >= TARGET_PASS,
        "non_skin_rejected_rate": report["non_skin"]["all"]["rejected_rate"] >= TARGET_REJECT}

    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = [f"# Quality gate (dermo.quality + dermo.ood)\n",
          f"`{report['command']}` on {report['date']}; model {report['model']['name']} {report['model']['version']} "
          f"({report['model']['backend']}, sha256 {report['model']['sha256'][:12]}...); OOD threshold "
          f"{'off' if ood is None else f'{ood.threshold:.2f}'}.\n",
          "| images | n | passed | rejected | rejection reasons |", "|---|---:|---:|---:|---|"]
    for split, s in lesions.items():
        md.append(f"| HAM10000 {split} lesions | {s['n']} | {100 * s['pass_rate']:.1f}% "
                  f"| {100 * s['rejected_rate']:.1f}% | {', '.join(f'{k} {v}' for k, v in s['reasons'].items())} |")
    for cat, s in [("non-skin, all", report["non_skin"]["all"])] + list(report["non_skin"]["by_category"].items()):
        md.append(f"| {cat} | {s['n']} | {100 * s['pass_rate']:.1f}% | {100 * s['rejected_rate']:.1f}% "
                  f"| {', '.join(f'{k} {v}' for k, v in s['reasons'].items())} |")
    md.append(f"\nTargets: validation lesions passed >= {100 * TARGET_PASS:.0f}% "
              f"({'met' if report['meets_targets']['validation_pass_rate'] else 'NOT met'}); "
              "non-skin rejected >= "
              f"{100 * TARGET_REJECT:.0f}% ({'met' if report['meets_targets']['non_skin_rejected_rate'] else 'NOT met'}).")
    if report["non_skin"]["passed_images"]:
        md.append("\nNon-skin images that got through: " + ", ".join(report["non_skin"]["passed_images"]) + ".")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
