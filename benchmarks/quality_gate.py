"""How well the app's quality gate (dermo.quality + dermo.ood) lets lesions through and keeps non-skin images out.

    python benchmarks/quality_gate.py [--model DIR] [--json reports/quality_gate.json]

* lesions: every VALIDATION image of the committed split (the OOD threshold was calibrated there) and every TEST
  image (held out from the calibration: the honest figure);
* non-skin: photos that ship with packages (scikit-learn's china.jpg / flower.jpg; scikit-image's bundled sample
  data when installed from requirements-bench.txt) and synthetic patterns (noise, gradients, checkerboards, text
  renders, solid colours, stripes), each a few sizes / colours, fixed seeds.

Each image goes through exactly what the app does: ``load_image`` -> ``check_quality`` -> forward -> ``check_ood``.
Lesion pass rates are also given per label (benign / malignant) and per diagnosis (``dx``), with the risk band the
model would have shown for each rejected lesion: a gate that rejects cancers more often than benign lesions hides
exactly the verdicts that matter. Writes the JSON and a Markdown table next to it (same stem). Targets: >= 95 % of
validation lesions pass, >= 90 % of non-skin images rejected.
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
from dermo.inference import Predictor, band_of  # noqa: E402
from dermo.ood import check_ood, load_ood, read_ood_config, split_frame  # noqa: E402
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
    """Per image: {"ok", "codes", "ood_score", "band"} through the app's gate (batched forward for speed); ``band``
    is the risk band the model gives the image (None when the image checks stopped it before the forward pass)."""
    results: list[dict] = [None] * len(images)  # type: ignore[list-item]
    pending: list[tuple[int, Image.Image, object]] = []

    def flush() -> None:
        if not pending:
            return
        logits, _, emb = predictor.forward(predictor.preprocess([im for _, im, _ in pending]))
        c = predictor.config
        for j, ((i, _, rep), prob) in enumerate(zip(pending, predictor.probabilities(logits))):
            score = check_ood(ood, None if emb is None else emb[j], rep)
            results[i] = {"ok": rep.ok, "codes": list(rep.codes), "ood_score": score,
                          "band": band_of(float(prob), c.band_low, c.band_high)}
        pending.clear()

    for i, src in enumerate(images):
        try:
            img = load_image(src)
        except ValueError as e:
            results[i] = {"ok": False, "codes": [getattr(e, "code", "load_error")], "ood_score": None, "band": None}
            continue
        rep = check_quality(img)
        if not rep.ok:
            results[i] = {"ok": False, "codes": list(rep.codes), "ood_score": None, "band": None}
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


def summarize_groups(results: list[dict], groups: list[str]) -> dict:
    """Per group: n, passed, pass_rate, and the bands the model would have shown for the rejected lesions."""
    out = {}
    for g in sorted(set(groups)):
        rs = [r for r, k in zip(results, groups) if k == g]
        passed = sum(r["ok"] for r in rs)
        bands = Counter(r["band"] or "no_forward" for r in rs if not r["ok"])
        out[g] = {"n": len(rs), "passed": passed, "pass_rate": passed / len(rs), "rejected_bands": dict(bands)}
    return out


def skew_lines(split: str, s: dict) -> list[str]:
    """Plain-language statement of how the rejections fall on benign and malignant lesions of one split."""
    b, m = s["by_class"]["benign"], s["by_class"]["malignant"]
    rej_b, rej_m = b["n"] - b["passed"], m["n"] - m["passed"]
    rej = rej_b + rej_m
    mh = sum(m["rejected_bands"].get(k, 0) for k in ("medium", "high"))
    gap = 100 * (b["pass_rate"] - m["pass_rate"])
    ratio = ((1 - m["pass_rate"]) / (1 - b["pass_rate"])) if b["pass_rate"] < 1 else float("inf")
    return [f"- {split}: malignant lesions pass {100 * m['pass_rate']:.1f}% ({m['passed']}/{m['n']}), benign "
            f"{100 * b['pass_rate']:.1f}% ({b['passed']}/{b['n']}): gap {gap:+.1f} points, malignant rejected "
            f"{ratio:.1f}x as often as benign; {rej_m} of the {rej} rejected lesions "
            f"({100 * rej_m / rej if rej else 0:.0f}%) are malignant (the split is "
            f"{100 * m['n'] / (m['n'] + b['n']):.0f}% malignant), {mh} of them in a band the model would have "
            "put Medium or High."]


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
    ood_method = (read_ood_config(predictor.model_dir) or {}).get("method", "ppca-mahalanobis-l2")
    report: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "command": "python " + " ".join(sys.argv), "platform": platform.platform(),
                    "model": {k: predictor.info[k] for k in ("name", "version", "sha256", "backend", "variant")},
                    "model_dir": str(predictor.model_dir),
                    "ood": None if ood is None else {"method": ood_method, "threshold": ood.threshold,
                                                     "pass_rate_target": ood.pass_rate},
                    "targets": {"validation_pass_rate": TARGET_PASS, "non_skin_rejected_rate": TARGET_REJECT}}
    lesions, by_dx = {}, {}
    names = list(predictor.config.labels)
    for split in ("validation", "test"):
        df = split_frame(a.data_dir, split, a.manifest, a.limit)
        res = run_gate(predictor, ood, [str(Path(a.data_dir) / f) for f in df["file_name"]])
        lesions[split] = {**summarize(res), "by_class": summarize_groups(res, [names[int(v)] for v in df["label"]])}
        by_dx[split] = summarize_groups(res, [str(v) for v in df["dx"]])
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
    report["lesions_by_dx"] = by_dx  # last: model cards list the first rows of this report

    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = ["# Quality gate (dermo.quality + dermo.ood)\n",
          f"`{report['command']}` on {report['date']}; model {report['model']['name']} {report['model']['version']} "
          f"({report['model']['backend']}, sha256 {report['model']['sha256'][:12]}...); OOD threshold "
          f"{'off' if ood is None else f'{ood.threshold:.4g}'} "
          f"({'no OOD stats' if ood is None else ood_method}).\n",
          "| images | n | passed | rejected | rejection reasons |", "|---|---:|---:|---:|---|"]
    if ood_method == "ppca-mahalanobis-l2-classwise":
        md.insert(2, "The OOD method and its number of components were chosen on validation lesions only, by the rule "
                     "in `reports/ood_selection.md` (`python benchmarks/ood_selection.py`): cross-fitted validation "
                     "pass >= 95% and non-skin rejected >= 90%, then the smallest benign - malignant validation gap. "
                     "The test rows below were measured once, after that choice.\n")
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
    md += ["\n## Lesions per label and diagnosis\n",
           "| split | group | n | passed | rejected | band the model would have shown each rejected lesion |",
           "|---|---|---:|---:|---:|---|"]
    for split in lesions:
        groups = list(lesions[split]["by_class"].items()) + [(f"dx {g}", r) for g, r in by_dx[split].items()]
        for g, r in groups:
            bands = ", ".join(f"{k} {v}" for k, v in sorted(r["rejected_bands"].items())) or "-"
            md.append(f"| {split} | {g} | {r['n']} | {100 * r['pass_rate']:.1f}% | {r['n'] - r['passed']} | {bands} |")
    if all({"benign", "malignant"} <= set(s["by_class"]) for s in lesions.values()):
        md.append("\nSkew between benign and malignant lesions:\n")
        for split in lesions:
            md.extend(skew_lines(split, lesions[split]))
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
