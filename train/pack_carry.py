"""Pack what a GPU run needs into the git-ignored ``.carry/`` folder (the device tool's carry limit is 64 MiB
and counts per-file overhead): the dataset as ONE tar (images + metadata.csv: 34 MB gzipped, 39 MB unpacked) and
the verified ImageNet backbones in timm naming as fp16 safetensors (read through ``DERMO_PRETRAINED_DIR``).

    python -m train.pack_carry [--data ../shared/data/ham10000] [--models tf_efficientnet_lite0 mobilenetv2_100]
        [--trained runs/gpu/teacher/best runs/gpu/baseline/best]

``--trained`` also packs trained model folders (``save_pretrained`` layout) as fp16 copies under ``.carry/<folder>``
(e.g. ``.carry/runs/gpu/teacher/best``), for a device call that needs a teacher trained in an earlier call (the
search, ``train/gpu_search_call.sh``); ``dermo.models.load_model`` loads them back into fp32 modules.
"""
import argparse
import tarfile
from pathlib import Path

from dermo.config import DEFAULT_DATA_DIR


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--out", default=".carry")
    ap.add_argument("--models", nargs="*", default=["tf_efficientnet_lite0", "mobilenetv2_100"])
    ap.add_argument("--trained", nargs="*", default=[], help="trained model folders to pack as fp16 copies")
    ap.add_argument("--no-data", dest="data_tar", action="store_false", help="keep the dataset tar as it is")
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    # gzip: the JPEGs do not shrink, but the 512-byte tar padding of 10,015 small files does (55 -> ~40 MiB)
    if args.data_tar:
        with tarfile.open(out / "ham10000.tar.gz", "w:gz", compresslevel=1) as tar:
            tar.add(data / "metadata.csv", arcname="ham10000/metadata.csv")
            tar.add(data / "images", arcname="ham10000/images")
    from safetensors.torch import load_file, save_file

    from dermo.pretrained import timm_state_dict

    for name in args.models:
        sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in timm_state_dict(name).items()}
        save_file(sd, str(out / "weights" / f"{name}.safetensors"))
    for folder in args.trained:
        src = Path(folder)
        if src.is_absolute() or ".." in src.parts:
            raise SystemExit(f"{src}: give a path inside the repository, relative to it (it is mirrored under {out})")
        if not (src / "config.json").is_file() or not (src / "model.safetensors").is_file():
            raise SystemExit(f"{src}: not a trained model folder (config.json + model.safetensors)")
        dst = out / src
        dst.mkdir(parents=True, exist_ok=True)
        (dst / "config.json").write_bytes((src / "config.json").read_bytes())
        sd = load_file(str(src / "model.safetensors"))
        save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()},
                  str(dst / "model.safetensors"))
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"{p}  {p.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
