"""Measure the quality-gate statistics on real dermoscopic images.

    python benchmarks/quality_thresholds.py [--data DIR] [--n 1000] [--seed 0] [--n-bad 100] [--json PATH]
    python benchmarks/quality_thresholds.py --n 0 --json reports/quality_thresholds.json   # every image (committed)

Loads ``--n`` images (random sample, fixed seed; 0 = all) from ``--data`` with
``dermo.imageio.load_image``, computes ``dermo.quality.measure`` on each and
prints (and with ``--json`` writes) one JSON object with ``command`` (the command line that made it) and

* ``thresholds``: the defaults in ``dermo.quality``;
* ``good.percentiles``: p0.1/p1/p5/p50/p95/p99/max of brightness, contrast, sharpness, chroma, flat_fraction;
* ``good.pass_rate``: fraction passing each check and overall (defaults);
* ``bad``: for synthetic bad photos made from ``--n-bad`` of those images
  (black, white, tiny 48x36, and Gaussian blur radius 2/4/8 after resizing
  to 600 px wide), the sharpness percentiles and the fraction that the gate
  rejects, with the codes it gave.

Runs in a few seconds on one core.  The defaults (DARK, BRIGHT, BLUR) were
picked from this output: far outside the 1st/99th percentiles of real
images, and well clear of the blurred ones.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dermo import quality  # noqa: E402
from dermo.imageio import load_image  # noqa: E402

try:
    from dermo.config import DEFAULT_DATA_DIR  # noqa: E402

    DEFAULT_DATA = str(Path(DEFAULT_DATA_DIR) / "images")
except ImportError:
    DEFAULT_DATA = "/work/shared/data/ham10000/images"
PCTS = (0.1, 1, 5, 50, 95, 99)


def _pcts(values) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    out = {f"p{p:g}": round(float(np.percentile(a, p)), 2) for p in PCTS}
    out["min"] = round(float(a.min()), 2)
    out["max"] = round(float(a.max()), 2)
    return out


def _summarise_bad(reports) -> dict:
    codes = Counter(c for r in reports for c in r.codes)
    return {
        "n": len(reports),
        "rejected": round(sum(not r.ok for r in reports) / len(reports), 4),
        "codes": dict(codes),
        "sharpness": _pcts([r.measures["sharpness"] for r in reports]),
        "brightness": _pcts([r.measures["brightness"] for r in reports]),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="folder of images (default: %(default)s)")
    ap.add_argument("--n", type=int, default=1000, help="images to sample (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-bad", type=int, default=100, help="images used to make bad variants")
    ap.add_argument("--json", default=None, help="also write the JSON object to this file")
    args = ap.parse_args(argv)
    command = shlex.join(["python", "benchmarks/quality_thresholds.py", *(sys.argv[1:] if argv is None else argv)])

    files = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not files:
        ap.error(f"no images in {args.data}")
    random.Random(args.seed).shuffle(files)
    files = files[: args.n] if args.n > 0 else files

    t0 = time.perf_counter()
    images, reports = [], []
    for i, path in enumerate(files):
        img = load_image(path)
        reports.append(quality.check_quality(img))
        if i < args.n_bad:
            images.append(img)
    t_good = time.perf_counter() - t0

    checks = {
        "size": lambda r: min(r.measures["width"], r.measures["height"]) >= quality.MIN_SIDE,
        "dark": lambda r: r.measures["brightness"] >= quality.DARK,
        "bright": lambda r: r.measures["brightness"] <= quality.BRIGHT,
        "blur": lambda r: r.measures["sharpness"] >= quality.BLUR,
        "colour": lambda r: r.measures["chroma"] >= quality.MIN_CHROMA,
        "photo": lambda r: r.measures["flat_fraction"] <= quality.MAX_FLAT,
        "overall": lambda r: r.ok,
    }
    n = len(reports)
    good = {
        "n": n,
        "seconds": round(t_good, 2),
        "percentiles": {k: _pcts([r.measures[k] for r in reports]) for k in ("brightness", "contrast", "sharpness",
                                                                              "chroma", "flat_fraction")},
        "pass_rate": {k: round(sum(map(f, reports)) / n, 4) for k, f in checks.items()},
        "failed": [{"file": files[i].name, "codes": r.codes,
                    "measures": {k: round(v, 1) for k, v in r.measures.items()}}
                   for i, r in enumerate(reports) if not r.ok][:20],
    }

    bad: dict[str, dict] = {}
    size = images[0].size
    bad["black"] = _summarise_bad([quality.check_quality(Image.new("RGB", size, 0))])
    bad["white"] = _summarise_bad([quality.check_quality(Image.new("RGB", size, (255, 255, 255)))])
    bad["tiny_48x36"] = _summarise_bad([quality.check_quality(im.resize((48, 36))) for im in images])
    big = [im.resize((600, round(600 * im.height / im.width)), Image.Resampling.BICUBIC) for im in images]
    bad["resized_600_sharp"] = _summarise_bad([quality.check_quality(im) for im in big])
    for radius in (2, 4, 8):
        bad[f"blur_r{radius}_600"] = _summarise_bad(
            [quality.check_quality(im.filter(ImageFilter.GaussianBlur(radius))) for im in big]
        )

    out = {
        "command": command,
        "data": str(args.data),
        "thresholds": {"min_side": quality.MIN_SIDE, "dark": quality.DARK, "bright": quality.BRIGHT,
                       "blur": quality.BLUR, "min_chroma": quality.MIN_CHROMA, "max_flat": quality.MAX_FLAT,
                       "analysis_side": quality.ANALYSIS_SIDE},
        "good": good,
        "bad": bad,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
