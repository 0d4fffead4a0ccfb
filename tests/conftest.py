"""Shared fixtures: a tiny labelled folder in the real on-disk layout, copied from the shared HAM10000."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from dermo.config import DEFAULT_DATA_DIR

SHARED = Path(DEFAULT_DATA_DIR)


def require_shared() -> Path:
    if not (SHARED / "metadata.csv").is_file():
        pytest.skip(f"shared HAM10000 not found at {SHARED}")
    return SHARED


def make_tiny_folder(dest: Path, n_benign: int = 24, n_malignant: int = 16, with_lesions: bool = True) -> Path:
    """Copy real images and their metadata rows (whole lesions, both labels) into ``dest``."""
    src = require_shared()
    meta = pd.read_csv(src / "metadata.csv", dtype=str)
    meta["label"] = meta["label"].astype(int)
    rows = []
    for label, n in ((0, n_benign), (1, n_malignant)):
        sub = meta[meta["label"] == label].sort_values("image_id")
        # whole lesions, about half the images from lesions with several (so that splits, bootstraps and grouped
        # metrics have lesions to keep together), the rest single-image lesions, exactly n images
        size = sub["lesion_id"].value_counts()
        order = sub["lesion_id"].drop_duplicates()
        picked, count = [], 0
        for lid in order[order.map(size).between(2, 3)]:
            if count + size[lid] > n // 2:
                break
            picked.append(lid)
            count += int(size[lid])
        singles = list(order[order.map(size) == 1][: n - count])
        rows.append(sub[sub["lesion_id"].isin(picked + singles)])
    tiny = pd.concat(rows).reset_index(drop=True)
    assert len(tiny) == n_benign + n_malignant and tiny["lesion_id"].nunique() < len(tiny), "tiny folder"
    (dest / "images").mkdir(parents=True, exist_ok=True)
    for f in tiny["file_name"]:
        shutil.copy(src / f, dest / f)
    if not with_lesions:
        tiny = tiny.drop(columns=["lesion_id"])
    tiny.to_csv(dest / "metadata.csv", index=False)
    return dest


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny_folder(tmp_path_factory.mktemp("tiny_ham"))


@pytest.fixture(scope="session")
def tiny_manifest(tiny_data, tmp_path_factory) -> Path:
    from dermo.data import load_metadata, make_split, write_manifest

    return write_manifest(make_split(load_metadata(tiny_data)), tmp_path_factory.mktemp("man") / "split.csv")
