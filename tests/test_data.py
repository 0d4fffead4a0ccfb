
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermo.config import DEFAULT_MANIFEST, ModelConfig
from dermo.data import (augment_batch, decode_images, extend_split, load_hf_dataset, load_metadata, load_split,
                        make_split,
                        normalize, preprocess, resize)
from tests.conftest import require_shared


@pytest.fixture(scope="module")
def manifest() -> pd.DataFrame:
    return pd.read_csv(DEFAULT_MANIFEST, dtype={"image_id": str, "lesion_id": str})


def test_manifest_covers_shared_set_and_is_reproducible(manifest, tmp_path):
    """The README's and the cards' rebuild (``python -m dermo.data --rebuild --manifest X --write``) gives the
    committed file byte for byte: a researcher can compare sha256s."""
    from dermo.data import write_manifest

    shared = require_shared()
    meta = load_metadata(shared, check_files=False)
    assert len(manifest) == len(meta) == 10015
    assert set(manifest["image_id"]) == set(meta["image_id"])
    rebuilt = make_split(meta)
    pd.testing.assert_frame_equal(rebuilt.reset_index(drop=True), manifest.reset_index(drop=True),
                                  check_dtype=False)
    assert Path(write_manifest(rebuilt, tmp_path / "split.csv")).read_bytes() == DEFAULT_MANIFEST.read_bytes()


def test_a_grown_folder_keeps_every_known_image_in_its_split(manifest):
    meta = load_metadata(require_shared(), check_files=False)
    # the committed manifest extended by the very same data is the manifest
    pd.testing.assert_frame_equal(extend_split(meta, manifest), manifest, check_dtype=False)
    # a manifest built on a third of the lesions, then the folder grows to all of them
    lesions = sorted(meta["lesion_id"].unique())
    old = make_split(meta[meta["lesion_id"].isin(lesions[::3])])
    grown = extend_split(meta, old)
    assert len(grown) == len(meta) and grown["split"].notna().all()
    kept = grown.set_index("image_id").loc[old["image_id"], "split"]
    assert (kept.to_numpy() == old["split"].to_numpy()).all()
    assert grown.groupby("lesion_id")["split"].nunique().max() == 1
    new = grown[~grown["image_id"].isin(old["image_id"])]
    share = new["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.70, abs=0.04) and share["test"] == pytest.approx(0.15, abs=0.04)
    # the hash placement does not depend on which other lesions are new
    again = extend_split(meta[meta["lesion_id"].isin(lesions[::2] + lesions[::3])], old)
    both = grown.merge(again, on="image_id", suffixes=("", "_b"))
    assert (both["split"] == both["split_b"]).all()


def test_extend_split_refuses_a_lesion_the_manifest_split_in_two():
    meta = pd.DataFrame({"image_id": ["a", "b", "c"], "lesion_id": ["L1", "L1", "L2"], "label": [0, 0, 1]})
    old = pd.DataFrame({"image_id": ["a", "b"], "lesion_id": ["L1", "L9"], "label": [0, 0],
                        "split": ["train", "test"]})
    with pytest.raises(ValueError, match="different splits"):
        extend_split(meta, old)


def test_no_lesion_crosses_splits(manifest):
    per_lesion = manifest.groupby("lesion_id")["split"].nunique()
    assert per_lesion.max() == 1
    assert manifest["lesion_id"].nunique() == 7470


def test_byte_identical_duplicates_share_a_split(manifest):
    split = dict(zip(manifest["image_id"], manifest["split"]))
    for a, b in (("ISIC_0024366", "ISIC_0029861"), ("ISIC_0024777", "ISIC_0029938")):
        assert split[a] == split[b]


def test_split_sizes_and_malignant_share(manifest):
    overall = manifest["label"].mean()
    shares = manifest.groupby("split")["label"].mean()
    fractions = manifest["split"].value_counts(normalize=True)
    for s in ("train", "validation", "test"):
        assert abs(shares[s] - overall) < 0.01, (s, shares[s], overall)
    assert abs(fractions["train"] - 0.70) < 0.01
    assert abs(fractions["validation"] - 0.15) < 0.01 and abs(fractions["test"] - 0.15) < 0.01


def test_load_split_on_tiny_folder(tiny_data, tiny_manifest):
    parts = [load_split(tiny_data, s, tiny_manifest) for s in ("train", "validation", "test")]
    assert sum(len(p) for p in parts) == len(load_metadata(tiny_data))
    lesions = [set(p["lesion_id"]) for p in parts]
    assert not (lesions[0] & lesions[1]) and not (lesions[0] & lesions[2]) and not (lesions[1] & lesions[2])


def test_folder_not_in_manifest_is_a_clear_error(tiny_data, tmp_path):
    man = tmp_path / "m.csv"
    pd.DataFrame({"image_id": ["x"], "lesion_id": ["y"], "label": [0], "split": ["train"]}).to_csv(man, index=False)
    with pytest.raises(ValueError, match="not in the manifest"):
        load_split(tiny_data, "test", man)


def test_a_copy_with_other_labels_or_fewer_images_than_the_manifest(tiny_data, tiny_manifest, tmp_path, caplog):
    """A folder whose labels differ from the manifest's is refused (it would be scored on other labels); one that
    holds only part of a split is loaded with a warning that says how much of it."""
    import shutil

    relabelled = tmp_path / "relabelled"
    shutil.copytree(tiny_data, relabelled)
    meta = pd.read_csv(relabelled / "metadata.csv")
    meta.loc[meta["label"] == 1, "label"] = 0
    meta.loc[meta["dx"].isin(["mel", "bcc", "akiec"]), "dx"] = "nv"
    meta.to_csv(relabelled / "metadata.csv", index=False)
    with pytest.raises(ValueError, match="another label than in the manifest"):
        load_split(relabelled, "test", tiny_manifest)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_data, partial)
    test_ids = load_split(tiny_data, "test", tiny_manifest)["image_id"]
    meta = pd.read_csv(partial / "metadata.csv")
    meta[meta["image_id"] != test_ids.iloc[0]].to_csv(partial / "metadata.csv", index=False)
    with caplog.at_level("WARNING", logger="dermo.data"):
        part = load_split(partial, "test", tiny_manifest)
    assert len(part) == len(test_ids) - 1
    assert f"holds {len(test_ids) - 1} of the {len(test_ids)} test images" in caplog.text


def test_metadata_without_lesion_id_defaults_to_image(tmp_path):
    from tests.conftest import make_tiny_folder

    d = make_tiny_folder(tmp_path / "d", 4, 2, with_lesions=False)
    df = load_metadata(d)
    assert (df["lesion_id"] == df["image_id"]).all()


def test_a_split_of_a_folder_without_lesion_ids_takes_the_manifests(tiny_data, tiny_manifest, tmp_path):
    """A copy of a split-covered folder whose metadata.csv has only file_name,label still resamples lesions."""
    import shutil

    from dermo.evaluate import evaluate_logits

    d = tmp_path / "bare"
    shutil.copytree(tiny_data, d)
    meta = pd.read_csv(d / "metadata.csv")
    meta[["file_name", "label"]].to_csv(d / "metadata.csv", index=False)
    man = pd.read_csv(tiny_manifest, dtype={"image_id": str, "lesion_id": str})
    man["lesion_id"] = [f"L{i // 2}" for i in range(len(man))]  # two images per lesion: the grouping is visible
    man.to_csv(tmp_path / "split.csv", index=False)
    bare = load_split(d, "train", tmp_path / "split.csv")
    assert bare["lesion_id"].tolist() == bare["image_id"].map(man.set_index("image_id")["lesion_id"]).tolist()
    assert bare["lesion_id"].nunique() < len(bare)
    # some cells empty: those rows take the manifest's, the others keep their own
    part = pd.read_csv(tiny_data / "metadata.csv", dtype=str)
    train_ids = set(bare["image_id"])
    own = part["image_id"].isin(train_ids) & (part.index % 2 == 0)
    part["lesion_id"] = np.where(own, "OWN_" + part["image_id"], None)
    part.to_csv(d / "metadata.csv", index=False)
    mixed = load_split(d, "train", tmp_path / "split.csv").set_index("image_id")["lesion_id"]
    for image_id, lesion in mixed.items():
        mine = part.loc[part["image_id"] == image_id, "lesion_id"].iloc[0]
        assert lesion == (mine if isinstance(mine, str) else man.set_index("image_id").loc[image_id, "lesion_id"])
    # a folder with its own lesion ids keeps them
    assert load_split(tiny_data, "train", tmp_path / "split.csv")["lesion_id"].tolist() \
        == load_split(tiny_data, "train", tiny_manifest)["lesion_id"].tolist()
    logits = np.linspace(-2, 2, len(bare))
    assert evaluate_logits(bare["label"].to_numpy(), logits, ModelConfig(), df=bare, n_boot=20)["bootstrap_unit"] \
        == "lesion"


@pytest.mark.parametrize("problem,match", [
    ("no_label", "no 'label' column"),
    ("no_file_name", "no 'file_name' column"),
    ("bad_label", "label must be 0"),
    ("missing_image", "missing"),
    ("no_csv", "metadata.csv not found"),
])
def test_bad_metadata(tiny_data, tmp_path, problem, match):
    import shutil

    d = tmp_path / "bad"
    shutil.copytree(tiny_data, d)
    meta = pd.read_csv(d / "metadata.csv")
    if problem == "no_label":
        meta = meta.drop(columns=["label"])
    elif problem == "no_file_name":
        meta = meta.drop(columns=["file_name"])
    elif problem == "bad_label":
        meta.loc[0, "label"] = 2
    elif problem == "missing_image":
        (d / meta.loc[0, "file_name"]).unlink()
    if problem == "no_csv":
        (d / "metadata.csv").unlink()
    else:
        meta.to_csv(d / "metadata.csv", index=False)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_metadata(d)


def test_corrupt_image_names_the_file(tiny_data, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        decode_images([str(bad)], 32)


def test_preprocess_is_resize_then_normalize_and_honours_exif(tmp_path):
    cfg = ModelConfig(img_size=32)
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif, quality=95)
    x = preprocess(p, cfg)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    # after the EXIF rotation the blue half is on top
    top_blue = x[2, :8].mean() > x[2, -8:].mean()
    assert top_blue
    ref = normalize(resize(Image.open(p).transpose(Image.Transpose.ROTATE_270).convert("RGB"), 32), cfg.mean, cfg.std)
    np.testing.assert_allclose(x, ref, atol=1e-6)


def test_augment_batch_keeps_shape_and_range():
    import torch

    x = torch.rand(4, 3, 32, 32)
    y = augment_batch(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.allclose(x, y)


def test_hf_dataset_from_folder(tiny_data, tiny_manifest):
    ds = load_hf_dataset(tiny_data, "train", tiny_manifest)
    assert len(ds) == len(load_split(tiny_data, "train", tiny_manifest))
    assert ds[0]["image"].size == (200, 150) and set(ds["split"]) == {"train"}
    assert set(ds["label"]) <= {0, 1}
