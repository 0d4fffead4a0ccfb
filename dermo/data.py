"""Data: the labelled-folder format, the lesion-grouped split, and the ONE preprocessing.

A labelled folder is the HF ``imagefolder`` layout: image files plus ``metadata.csv`` with at least
``file_name,label`` (label 0 = benign, 1 = malignant) and optionally ``image_id, lesion_id, dx, age, sex,
localization``. HAM10000 has several images per lesion, so every split is by ``lesion_id``.

Preprocessing (used by training evaluation, export parity, the evaluation CLI and the app):
``load_image`` (EXIF orientation, RGB) -> ``resize`` to ``img_size`` x ``img_size`` (bilinear, antialiased) ->
``normalize`` with the model's mean/std. Training augmentation (``augment_batch``) works on the resized uint8
tensors and is kept separate.

Missing or unreadable images are errors that name the file (never silently skipped): a split that quietly loses
images would make reported figures incomparable.
"""
from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import pandas as pd

from .config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST, ModelConfig

if TYPE_CHECKING:  # torch is not needed to read metadata or split
    import torch

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("file_name", "label")
OPTIONAL_COLUMNS = ("image_id", "lesion_id", "dx", "age", "sex", "localization", "dx_type")
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)


# ----------------------------------------------------------------------------------------------- metadata / split
def load_metadata(data_dir: str | Path = DEFAULT_DATA_DIR, check_files: bool = True) -> pd.DataFrame:
    """Read and validate ``<data_dir>/metadata.csv``.

    Returns a DataFrame with at least ``file_name, label, image_id, lesion_id, path``. ``image_id`` defaults to the
    file stem and ``lesion_id`` to ``image_id`` (each image its own lesion) when absent.
    """
    data_dir = Path(data_dir)
    meta_path = data_dir / "metadata.csv"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist; pass --data <folder with metadata.csv>")
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} not found: a labelled folder needs metadata.csv with columns file_name,label")
    df = pd.read_csv(meta_path, dtype={"image_id": str, "lesion_id": str, "file_name": str})
    for col in REQUIRED_COLUMNS:
        if col not in df.columns:
            raise ValueError(f"{meta_path} has no '{col}' column; required columns: {', '.join(REQUIRED_COLUMNS)}")
    if df.empty:
        raise ValueError(f"{meta_path} lists no images")
    labels = pd.to_numeric(df["label"], errors="coerce")
    bad = df.loc[~labels.isin([0, 1]), ["file_name", "label"]]
    if len(bad):
        raise ValueError(f"{meta_path}: label must be 0 (benign) or 1 (malignant); {len(bad)} rows are not, "
                         f"first: {bad.iloc[0].to_dict()}")
    df["label"] = labels.astype(int)
    if "image_id" not in df.columns:
        df["image_id"] = df["file_name"].map(lambda f: Path(f).stem)
    if "lesion_id" not in df.columns:
        df["lesion_id"] = df["image_id"]
    df["lesion_id"] = df["lesion_id"].fillna(df["image_id"])
    if df["image_id"].duplicated().any():
        dup = df.loc[df["image_id"].duplicated(), "image_id"].iloc[0]
        raise ValueError(f"{meta_path}: image_id {dup!r} appears more than once")
    df["path"] = [str(data_dir / f) for f in df["file_name"]]
    if check_files:
        missing = [p for p in df["path"] if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} image(s) listed in {meta_path} are missing, first: {missing[0]}")
    return df.reset_index(drop=True)


def make_split(df: pd.DataFrame, fractions: Sequence[float] = SPLIT_FRACTIONS, seed: int = 0) -> pd.DataFrame:
    """Deterministic lesion-grouped, label-stratified split.

    Lesions (not images) are shuffled with ``seed`` within each label, then cut where the cumulative *image* count
    reaches the fractions, so each split holds ~70/15/15 % of each class's images and no lesion crosses splits.
    Returns ``image_id, lesion_id, label, split``.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or len(fractions) != len(SPLITS):
        raise ValueError(f"fractions {fractions} must be three numbers summing to 1")
    lesion_label = df.groupby("lesion_id")["label"].max()  # a lesion is malignant if any image is
    sizes = df.groupby("lesion_id").size()
    rng = np.random.RandomState(seed)
    assign: dict[str, str] = {}
    edges = np.cumsum(fractions)[:-1]
    for label in (0, 1):
        lesions = np.array(sorted(lesion_label.index[lesion_label == label]))
        lesions = lesions[rng.permutation(len(lesions))]
        counts = sizes.loc[lesions].to_numpy()
        # Position of each lesion's midpoint in the cumulative image count decides its split.
        mid = (np.cumsum(counts) - counts / 2) / max(counts.sum(), 1)
        which = np.searchsorted(edges, mid, side="right")
        assign.update({lid: SPLITS[w] for lid, w in zip(lesions, which)})
    out = df[["image_id", "lesion_id", "label"]].copy()
    out["split"] = out["lesion_id"].map(assign)
    return out.sort_values("image_id").reset_index(drop=True)


def extend_split(df: pd.DataFrame, existing: pd.DataFrame, fractions: Sequence[float] = SPLIT_FRACTIONS,
                 seed: int = 0) -> pd.DataFrame:
    """``make_split`` for a folder that grew: every lesion of ``existing`` (a manifest) keeps its split.

    New images of a known lesion join that lesion's split; a new lesion is placed by a hash of its id and ``seed``
    (each lesion on its own, so adding more data later moves none of these either). Rebuilding with ``make_split``
    would reshuffle every lesion, putting trained-on images in validation and test. Images the folder no longer
    holds are dropped. Raises ValueError when the folder's lesion ids join lesions that ``existing`` put in
    different splits. Returns ``image_id, lesion_id, label, split``.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or len(fractions) != len(SPLITS):
        raise ValueError(f"fractions {fractions} must be three numbers summing to 1")
    known = existing.drop_duplicates("image_id").set_index("image_id")
    out = df[["image_id", "lesion_id", "label"]].copy()
    out["split"] = out["image_id"].map(known["split"])
    # a lesion takes the split its known images had (by this folder's lesion ids, then by the manifest's)
    by_lesion = out.dropna(subset=["split"]).groupby("lesion_id")["split"].agg(set)
    clash = by_lesion[by_lesion.map(len) > 1]
    if len(clash):
        raise ValueError(f"{len(clash)} lesions of the folder hold images the manifest put in different splits "
                         f"(e.g. {clash.index[0]}: {sorted(clash.iloc[0])}); fix their lesion_id or rebuild "
                         "the split on purpose")
    lesion_split = by_lesion.map(lambda x: next(iter(x))).to_dict()
    if "lesion_id" in known.columns:
        for lid, sp in known.groupby("lesion_id")["split"].first().items():
            lesion_split.setdefault(lid, sp)
    edges = np.cumsum(fractions)[:-1]

    def place(lid: str) -> str:
        if lid in lesion_split:
            return lesion_split[lid]
        h = hashlib.sha256(f"{seed}:{lid}".encode()).digest()
        return SPLITS[int(np.searchsorted(edges, int.from_bytes(h[:8], "big") / 2.0 ** 64, side="right"))]

    out["split"] = out["split"].fillna(out["lesion_id"].map(place))
    return out.sort_values("image_id").reset_index(drop=True)


def write_manifest(split_df: pd.DataFrame, path: str | Path = DEFAULT_MANIFEST) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    split_df[["image_id", "lesion_id", "label", "split"]].to_csv(path, index=False)
    return path


def load_split(data_dir: str | Path = DEFAULT_DATA_DIR, split: str | None = None,
               manifest: str | Path | None = DEFAULT_MANIFEST, limit: int = 0) -> pd.DataFrame:
    """Metadata rows of one split (``train``/``validation``/``test``) of a labelled folder.

    With ``split=None`` the whole folder is returned. A split needs a manifest that covers every image of the
    folder; a folder not in the manifest gets a clear error (evaluate it whole, or make a manifest with make_split).
    """
    df = load_metadata(data_dir)
    if split is None:
        return df.head(limit) if limit else df
    if split not in SPLITS:
        raise ValueError(f"split {split!r} unknown; use one of {SPLITS}")
    if manifest is None or not Path(manifest).is_file():
        raise FileNotFoundError(f"split manifest {manifest} not found; build it with `python -m dermo.data --write`")
    man = pd.read_csv(manifest, dtype={"image_id": str, "lesion_id": str})
    merged = df.merge(man[["image_id", "split"]], on="image_id", how="left")
    if "lesion_id" in man.columns:
        # images without a lesion id of their own (no column, or an empty cell: load_metadata made them their own
        # lesion) take the manifest's, so bootstraps and grouped metrics still resample lesions, not images
        missing = merged["lesion_id"] == merged["image_id"]
        lesions = merged.loc[missing, "image_id"].map(man.set_index("image_id")["lesion_id"])
        merged.loc[missing, "lesion_id"] = lesions.fillna(merged.loc[missing, "image_id"])
    if merged["split"].isna().any():
        n = int(merged["split"].isna().sum())
        raise ValueError(f"{n} images of {data_dir} are not in the manifest {manifest}; "
                         "evaluate the whole folder (no --split) or build a manifest for it")
    if "label" in man.columns:  # a copy whose labels differ from the manifest's would be scored on other labels
        theirs = merged["image_id"].map(man.set_index("image_id")["label"])
        differ = int((theirs.astype(int) != merged["label"].astype(int)).sum())
        if differ:
            raise ValueError(f"{differ} images of {data_dir} have another label than in the manifest {manifest}; "
                             "fix the folder's metadata.csv or build a manifest for it")
    out = merged[merged["split"] == split].reset_index(drop=True)
    expected = int((man["split"] == split).sum())
    if len(out) < expected:  # a partial copy: said, so that its figures are not taken for the whole split's
        logger.warning("%s holds %d of the %d %s images of the manifest %s: results are on those only",
                       data_dir, len(out), expected, split, manifest)
    return out.head(limit) if limit else out


def load_hf_dataset(source: str | Path = DEFAULT_DATA_DIR, split: str | None = None,
                    manifest: str | Path | None = DEFAULT_MANIFEST, revision: str | None = None):
    """Load a labelled folder or a Hub dataset id as a ``datasets.Dataset`` with an ``image`` column.

    A local folder goes through the ``imagefolder`` builder (metadata.csv columns become features) and gets a
    ``split`` column from the manifest; a Hub id (``owner/name``), or a folder laid out like that repository, is
    loaded as pushed by ``dermo.hub`` (splits ``train``/``validation``/``test``).
    """
    import datasets  # not installed on the training GPU machine: imported where needed

    # a folder laid out like the pushed Hub repo (data/<split>-*.parquet, e.g. `dermo.hub push-dataset --dry-run`)
    # loads like the Hub id
    hub_layout = (Path(source).is_dir() and not (Path(source) / "metadata.csv").is_file()
                  and any(Path(source).glob("data/*.parquet")))
    if Path(source).is_dir() and not hub_layout:
        df = load_metadata(source)  # validates columns/labels with clear messages first
        ds = datasets.load_dataset("imagefolder", data_dir=str(source), split="train")
        if manifest is not None and Path(manifest).is_file():
            man = pd.read_csv(manifest, dtype={"image_id": str})
            lookup = dict(zip(man["image_id"], man["split"]))
            ids = [str(x) for x in (ds["image_id"] if "image_id" in ds.column_names else df["image_id"])]
            ds = ds.add_column("split", [lookup.get(i, "unassigned") for i in ids])
            if split is not None:
                ds = ds.filter(lambda s: s == split, input_columns="split")
        elif split is not None:
            raise FileNotFoundError(f"split manifest {manifest} not found")
        return ds
    if hub_layout:
        # the parquet files themselves: datasets caches a local folder whose README lists `configs` by the files'
        # relative paths, so a second folder of the same name and layout loaded the first one's rows from the cache
        files = {s: sorted(str(f) for f in Path(source).glob(f"data/{s}-*.parquet")) for s in SPLITS}
        dsd = datasets.load_dataset("parquet", data_files={s: f for s, f in files.items() if f})
    else:
        dsd = datasets.load_dataset(str(source), revision=revision)
    if split is None:
        return datasets.concatenate_datasets([dsd[k] for k in dsd])
    return dsd[split]


# ---------------------------------------------------------------------------------------------------- preprocessing
def resize(img, size: int) -> np.ndarray:
    """RGB PIL image -> uint8 array (size, size, 3), bilinear (Pillow's bilinear filter, which antialiases when it
    shrinks; not Pillow's default for resize, bicubic: a model is only right with the filter it was trained on)."""
    from PIL import Image

    return np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def normalize(arr: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) normalised with mean/std given for [0, 1] pixels."""
    x = arr.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def preprocess(src, cfg: ModelConfig) -> np.ndarray:
    """The one preprocessing: any image source -> float32 (3, S, S) model input."""
    from .imageio import load_image

    return normalize(resize(load_image(src), cfg.img_size), cfg.mean, cfg.std)


def decode_images(paths: Iterable[str], size: int, num_workers: int = 2) -> np.ndarray:
    """Decode + resize a list of files once into a uint8 array (N, size, size, 3). Errors name the file."""
    from .imageio import load_image

    paths = list(paths)

    def one(p: str) -> np.ndarray:
        try:
            return resize(load_image(p), size)
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise ValueError(f"cannot read image {p}: {e}") from e

    out = np.empty((len(paths), size, size, 3), np.uint8)
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        for i, a in enumerate(pool.map(one, paths)):
            out[i] = a
    return out


# ----------------------------------------------------------------------------------------------------- augmentation
def augment_batch(x: "torch.Tensor", generator: "torch.Generator | None" = None, return_theta: bool = False):
    """Training augmentation on a float batch (B, 3, H, W) in [0, 1], on whatever device it lives on.

    Dermoscopy has no canonical orientation: random flips, 90-degree-free rotation, scale 0.85-1.15 and small
    translation through one ``affine_grid`` (reflection padding), then brightness/contrast/saturation jitter.
    With ``return_theta`` also returns the (B, 2, 3) affine matrices, so that cached spatial maps of the
    un-augmented images (teacher attention) can be warped the same way (``dermo.losses.warp_attention``).
    """
    import math

    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    dev = x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, device=dev, generator=generator) * (hi - lo) + lo

    angle = u(-math.pi, math.pi)
    scale = u(0.85, 1.15)
    flip = torch.where(torch.rand(b, device=dev, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, u(-0.1, 0.1)], 1),
                         torch.stack([sin * flip, cos, u(-0.1, 0.1)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.8, 1.2).view(b, 1, 1, 1) + mean * u(0.8, 1.2).view(b, 1, 1, 1)
    grey = x.mean(dim=1, keepdim=True)
    x = grey + (x - grey) * u(0.8, 1.2).view(b, 1, 1, 1)
    x = x.clamp_(0.0, 1.0)
    return (x, theta) if return_theta else x


def main() -> None:  # pragma: no cover - thin CLI
    import argparse

    ap = argparse.ArgumentParser(description="Build or check the lesion-grouped split manifest")
    ap.add_argument("--data", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true",
                    help="write the manifest; an existing one is extended (its images keep their splits)")
    ap.add_argument("--rebuild", action="store_true",
                    help="reshuffle every lesion instead of extending an existing manifest (moves trained-on "
                         "images into validation and test: models trained on the old split must be retrained)")
    args = ap.parse_args()
    meta = load_metadata(args.data)
    if Path(args.manifest).is_file() and not args.rebuild:
        split = extend_split(meta, pd.read_csv(args.manifest, dtype={"image_id": str, "lesion_id": str}),
                             seed=args.seed)
    else:
        split = make_split(meta, seed=args.seed)
    if args.write:
        print(f"wrote {write_manifest(split, args.manifest)}")
    summary = split.groupby("split").agg(images=("image_id", "size"), lesions=("lesion_id", "nunique"),
                                         malignant_share=("label", "mean"))
    print(summary.to_string())


if __name__ == "__main__":
    main()
