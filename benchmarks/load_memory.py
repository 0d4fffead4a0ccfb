"""Peak memory of ``dermo.imageio.load_image`` on the largest uploads it accepts: 64-megapixel files (the pixel limit)
under the 25 MB upload limit, each loaded in a fresh Python process, so that its peak resident set (``ru_maxrss``) is
that one load's, on top of the interpreter and the imports (measured alone as the baseline). The peak is the
process's VmHWM (``/proc/self/status``): ``ru_maxrss`` would carry over the peak of the process that started it.

    python benchmarks/load_memory.py --json reports/load_memory.json --md reports/load_memory.md

Cases: an 8000 x 8000 RGBA PNG with varied alpha (gradients, noise, a transparent and an opaque strip: the
transparency path), the same pixels as an RGB PNG (no transparency), and an 8000 x 8000 JPEG (libjpeg's DCT scaling
decodes it at half size). The files are made once, with a fixed seed, in ``--work`` (default: a temporary folder).
Each result is downscaled to 4096 px on its longest side, as the app gets it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SIDE = 8000  # 64 MP: dermo.imageio.MAX_PIXELS


def make_files(work: Path) -> dict[str, Path]:
    """The three test files (reused when present)."""
    files = {"rgba_png": work / "rgba_8000.png", "rgb_png": work / "rgb_8000.png", "jpeg": work / "rgb_8000.jpg"}
    if all(p.is_file() for p in files.values()):
        return files
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    a = np.empty((SIDE, SIDE, 4), np.uint8)
    a[..., 0] = (x * 255 / SIDE).astype(np.uint8)
    a[..., 1] = (y * 255 / SIDE).astype(np.uint8)
    a[..., 2] = ((x + y) * 255 / (2 * SIDE)).astype(np.uint8)
    # noise repeated along the rows keeps the PNG under the 25 MB upload limit
    noise = np.tile(rng.integers(0, 64, (SIDE, 96), dtype=np.uint8), (1, SIDE // 96 + 1))[:, :SIDE]
    alpha = ((np.sin(x / 300) * np.cos(y / 450) + 1) * 95).astype(np.int32) + noise
    alpha[:, : SIDE // 8] = 0
    alpha[:, -SIDE // 8:] = 255
    a[..., 3] = np.clip(alpha, 0, 255).astype(np.uint8)
    del x, y, alpha, noise
    Image.fromarray(a, "RGBA").save(files["rgba_png"], compress_level=6)
    rgb = Image.fromarray(np.ascontiguousarray(a[..., :3]), "RGB")
    del a
    rgb.save(files["rgb_png"], compress_level=6)
    rgb.save(files["jpeg"], quality=90)
    return files


def child(path: str | None) -> None:
    """One measurement in this (fresh) process: prints a JSON line."""
    sys.path.insert(0, str(ROOT))
    from dermo.imageio import load_image

    t0 = time.perf_counter()
    out = load_image(path) if path else None
    seconds = time.perf_counter() - t0
    hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"peak_mb": round(hwm_kb / 1024, 1),
                      "seconds": round(seconds, 2), "size": list(out.size) if out else None,
                      "sha256": hashlib.sha256(out.tobytes()).hexdigest() if out else None}))


def measure(path: Path | None) -> dict:
    cmd = [sys.executable, __file__, "--child"] + ([str(path)] if path else [])
    line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(line)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="reports/load_memory.json")
    ap.add_argument("--md", default="reports/load_memory.md")
    ap.add_argument("--work", help="folder for the test files (default: a temporary one)")
    ap.add_argument("--child", nargs="?", const="", help=argparse.SUPPRESS)
    ap.add_argument("--make", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child(args.child or None)
    if args.make:
        make_files(Path(args.make))
        return None
    with tempfile.TemporaryDirectory(prefix="dermo_mem_") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        # made in a process of their own (about 1.5 GB), so that nothing measured runs beside that
        subprocess.run([sys.executable, __file__, "--make", str(work)], check=True)
        files = make_files(work)
        baseline = measure(None)
        rows = {}
        for name, path in files.items():
            r = measure(path)
            rows[name] = {"file_mb": round(path.stat().st_size / 1e6, 1), **r,
                          "above_baseline_mb": round(r["peak_mb"] - baseline["peak_mb"], 1)}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    report = {"command": "python benchmarks/load_memory.py --json reports/load_memory.json --md reports/load_memory.md",
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit,
              "platform": platform.platform(), "python": platform.python_version(),
              "pillow": Image.__version__, "pixels": SIDE * SIDE, "baseline_peak_mb": baseline["peak_mb"],
              "files": rows}
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    lines = ["# Peak memory of loading the largest accepted uploads", "",
             f"`{report['command']}` on {report['date']} at commit {commit} (Pillow {report['pillow']}, Python "
             f"{report['python']}). Each file is loaded by `dermo.imageio.load_image` in a fresh process; the peak "
             f"resident set of the interpreter and its imports alone is {baseline['peak_mb']} MB.", "",
             "| file | size on disk (MB) | peak (MB) | above the baseline (MB) | seconds | result |", "|---|---|---|---|---|---|"]
    lines += [f"| {n} ({SIDE} x {SIDE}) | {r['file_mb']} | {r['peak_mb']} | {r['above_baseline_mb']} | {r['seconds']} | "
              f"{r['size'][0]} x {r['size'][1]} RGB |" for n, r in rows.items()]
    lines += ["", "DermoHelper is a triage aid, not a diagnosis."]
    Path(args.md).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
