"""Facts the README and the model cards quote that no training or evaluation report holds, measured.

    python -m train.facts [--data ../shared/data/ham10000] --out reports/facts

Writes ``<out>.json`` and ``<out>.md``: the dataset copy (image sizes, JPEG quality estimated from each file's
quantisation tables, checksums, byte-identical files, how benign labels were confirmed), the size of the packed
dataset that a device call carries (``train.pack_carry``), the DINOv2 ViT-S/14 parameter count, the size of the
attention-map targets a GPU run would carry.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
from PIL import Image

from dermo.config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST

# The IJG (libjpeg) base tables, natural (row-major) order; quality q scales them as libjpeg's jpeg_quality_scaling.
IJG_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
            14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
            49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]


def ijg_table(q: int) -> list[int]:
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return [min(255, max(1, (v * scale + 50) // 100)) for v in IJG_LUMA]


IJG = {q: ijg_table(q) for q in range(1, 101)}


def jpeg_quality(img: Image.Image) -> int | str:
    """The IJG quality whose luminance table the file uses exactly; 'not IJG' when none does."""
    table = list(getattr(img, "quantization", {}).get(0, []))
    for q, t in IJG.items():
        if table == t:
            return q
    return "not IJG"


def dataset_facts(data: Path) -> dict:
    meta = pd.read_csv(data / "metadata.csv")
    files = sorted(meta["file_name"])
    sizes, formats, modes, quality = Counter(), Counter(), Counter(), Counter()
    by_hash: dict[str, list[str]] = defaultdict(list)
    concat = hashlib.sha256()
    total_bytes = 0
    for f in files:
        raw = (data / f).read_bytes()
        total_bytes += len(raw)
        concat.update(raw)
        by_hash[hashlib.sha256(raw).hexdigest()].append(Path(f).stem)
        with Image.open(data / f) as im:
            sizes[f"{im.width}x{im.height}"] += 1
            formats[im.format] += 1
            modes[im.mode] += 1
            quality[str(jpeg_quality(im))] += 1
    lesion = dict(zip(meta["file_name"].map(lambda s: Path(s).stem), meta["lesion_id"]))
    dupes = [{"image_ids": ids, "lesion_ids": sorted({lesion[i] for i in ids})}
             for ids in by_hash.values() if len(ids) > 1]
    benign = meta[meta["label"] == 0]
    not_histo = int((benign["dx_type"] != "histo").sum()) if "dx_type" in meta else None
    return {
        "folder": os.path.relpath(data), "n_images": len(files), "n_lesions": int(meta["lesion_id"].nunique()),
        "sizes": dict(sizes), "formats": dict(formats), "modes": dict(modes), "jpeg_quality_ijg": dict(quality),
        "total_mb": total_bytes / 1e6,
        "sha256_metadata_csv": hashlib.sha256((data / "metadata.csv").read_bytes()).hexdigest(),
        "sha256_images_concatenated_in_file_name_order": concat.hexdigest(),
        "byte_identical_groups": dupes,
        "benign_images": len(benign), "benign_not_histology_confirmed": not_histo,
        "dx_type": {k: int(v) for k, v in meta["dx_type"].value_counts().items()} if "dx_type" in meta else None,
    }


def carry_facts(data: Path) -> dict:
    from train import pack_carry

    with tempfile.TemporaryDirectory() as tmp:
        pack_carry.main(["--data", str(data), "--out", tmp, "--models"])
        size = (Path(tmp) / "ham10000.tar.gz").stat().st_size
    return {"dataset_tar_gz_bytes": size, "dataset_tar_gz_mb": size / 1e6, "dataset_tar_gz_mib": size / 2**20}


def model_facts(manifest: Path) -> dict:
    import timm

    m = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=224)
    n = sum(p.numel() for p in m.parameters())
    n_train = int((pd.read_csv(manifest)["split"] == "train").sum())
    return {"dinov2_vits14_224_parameters": n, "dinov2_vits14_224_fp16_mb": 2 * n / 1e6,
            "train_images": n_train, "attention_targets_7x7_fp32_mb": n_train * 7 * 7 * 4 / 1e6}


def to_markdown(r: dict) -> str:
    d, c, m = r["dataset"], r["carry"], r["models"]
    q = ", ".join(f"{k}: {v:,}" for k, v in d["jpeg_quality_ijg"].items())
    L = ["# Facts quoted in the README and the model cards", "", f"Command: `{r['command']}`", "",
         "## The dataset copy", "",
         f"- {d['n_images']:,} images of {d['n_lesions']:,} lesions in `{d['folder']}`, {d['total_mb']:.1f} MB in all.",
         f"- Sizes: {', '.join(f'{k} px: {v:,}' for k, v in d['sizes'].items())}; formats: "
         f"{', '.join(f'{k}: {v:,}' for k, v in d['formats'].items())}; modes: "
         f"{', '.join(f'{k}: {v:,}' for k, v in d['modes'].items())}.",
         f"- JPEG quality, the IJG quality whose luminance table a file uses exactly (images per quality): {q}.",
         f"- sha256 of `metadata.csv`: `{d['sha256_metadata_csv']}`.",
         f"- sha256 of the image bytes concatenated in file-name order: "
         f"`{d['sha256_images_concatenated_in_file_name_order']}`.",
         f"- Byte-identical files: {len(d['byte_identical_groups'])} groups"
         + "".join(f"; {' = '.join(g['image_ids'])} (lesion {', '.join(g['lesion_ids'])})"
                   for g in d["byte_identical_groups"]) + ".",
         f"- Benign images not confirmed by histology: {d['benign_not_histology_confirmed']:,} of "
         f"{d['benign_images']:,} ({100 * d['benign_not_histology_confirmed'] / d['benign_images']:.1f}%; "
         f"{100 * d['benign_not_histology_confirmed'] / d['n_images']:.1f}% of all images). "
         f"dx_type: {', '.join(f'{k} {v:,}' for k, v in d['dx_type'].items())}.",
         "", "## What a device call carries", "",
         f"- The packed dataset (`python -m train.pack_carry`, `.carry/ham10000.tar.gz`): "
         f"{c['dataset_tar_gz_bytes']:,} bytes ({c['dataset_tar_gz_mb']:.1f} MB, {c['dataset_tar_gz_mib']:.1f} MiB).",
         f"- DINOv2 ViT-S/14 at 224 px (`timm` `vit_small_patch14_dinov2`): {m['dinov2_vits14_224_parameters']:,} "
         f"parameters, {m['dinov2_vits14_224_fp16_mb']:.1f} MB in fp16.",
         f"- Attention-map targets for the {m['train_images']:,} training images, 7 x 7 fp32: "
         f"{m['attention_targets_7x7_fp32_mb']:.2f} MB.",
         ""]
    return "\n".join(L)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    ap.add_argument("--out", default="reports/facts")
    args = ap.parse_args(argv)
    data = Path(args.data)
    rep = {"command": "python -m train.facts " + " ".join(shlex.quote(a) for a in argv),
           "dataset": dataset_facts(data), "carry": carry_facts(data), "models": model_facts(Path(args.manifest))}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rep, indent=1) + "\n")
    out.with_suffix(".md").write_text(to_markdown(rep))
    print(to_markdown(rep))
    return rep


if __name__ == "__main__":
    main()
