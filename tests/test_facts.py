"""train.facts: the dataset facts the README and the cards quote, measured on a real (tiny) copy."""
from __future__ import annotations

import io
import shutil

import pandas as pd
import pytest
from PIL import Image

from tests.conftest import make_tiny_folder
from train import facts


@pytest.mark.parametrize("q", [50, 75, 90])
def test_jpeg_quality_is_read_off_the_quantisation_table(q):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 80, 60)).save(buf, "JPEG", quality=q)
    assert facts.jpeg_quality(Image.open(buf)) == q
    assert facts.jpeg_quality(Image.new("RGB", (8, 8))) == "not IJG"  # no table at all


def test_dataset_facts_find_byte_identical_files(tmp_path):
    d = make_tiny_folder(tmp_path / "ham", n_benign=4, n_malignant=2)
    meta = pd.read_csv(d / "metadata.csv")
    first = meta.iloc[0]
    dup = meta.iloc[[0]].assign(image_id="ISIC_dup", file_name="images/ISIC_dup.jpg")
    shutil.copy(d / first["file_name"], d / "images" / "ISIC_dup.jpg")
    pd.concat([meta, dup]).to_csv(d / "metadata.csv", index=False)
    f = facts.dataset_facts(d)
    assert f["n_images"] == len(meta) + 1 and f["sizes"] == {"200x150": len(meta) + 1}
    assert f["jpeg_quality_ijg"] == {"75": len(meta) + 1}  # the shared copy's quality, measured
    assert f["byte_identical_groups"] == [{"image_ids": sorted([first["image_id"], "ISIC_dup"]),
                                           "lesion_ids": [first["lesion_id"]]}]
    both = pd.read_csv(d / "metadata.csv")
    benign = both[both["label"] == 0]
    assert f["benign_not_histology_confirmed"] == int((benign["dx_type"] != "histo").sum())
