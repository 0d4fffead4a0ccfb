"""dermo.predict: one line per image, errors as lines, folders with a progress bar."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from dermo.config import ModelConfig
from dermo.models import create_model
from dermo.predict import collect_images, main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_model_predict")
    create_model(ModelConfig(backbone="test_efficientnet", img_size=64, band_low=0.3, band_high=0.7)).save_pretrained(d)
    return d


@pytest.fixture()
def folder(tiny_data, tmp_path):
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    imgs = sorted((tiny_data / "images").iterdir())[:5]
    for i, f in enumerate(imgs):
        shutil.copy(f, (d / "sub" if i % 2 else d) / f.name)
    (d / "broken.jpg").write_bytes(b"this is text, not a JPEG")
    (d / "notes.txt").write_text("ignored: not an image suffix")
    return d, [f.name for f in imgs]


def test_folder_with_bad_file(tiny_model, folder, capsys):
    d, names = folder
    rc = main([str(d), "--model", str(tiny_model), "--json", "--batch_size", "2"])
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert rc == 1  # some file could not be read
    assert len(rows) == len(names) + 1  # the .txt is not an image
    bad = [r for r in rows if "error" in r]
    assert len(bad) == 1 and bad[0]["file"].endswith("broken.jpg") and bad[0]["error"]
    good = [r for r in rows if "error" not in r]
    assert sorted(r["file"].rsplit("/", 1)[-1] for r in good) == sorted(names)
    for r in good:
        assert 0.0 <= r["probability"] <= 1.0
        expected = "high" if r["probability"] >= 0.7 else "low" if r["probability"] < 0.3 else "medium"
        assert r["band"] == expected
        assert r["quality"]["ok"] is True and r["quality"]["reasons"] == []
    assert "could not be read" in err


def test_results_do_not_depend_on_batching(tiny_model, folder, capsys):
    d, _ = folder
    main([str(d), "--model", str(tiny_model), "--json", "--batch_size", "1", "--no-progress"])
    one = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    main([str(d), "--model", str(tiny_model), "--json", "--batch_size", "64", "--no-progress"])
    many = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in one] == [r["file"] for r in many]
    for a, b in zip(one, many):
        if "error" not in a:
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_single_files_missing_and_poor_quality(tiny_model, folder, tmp_path, capsys):
    from PIL import Image

    d, names = folder
    dark = tmp_path / "dark.png"
    Image.new("RGB", (200, 150), (5, 5, 5)).save(dark)
    rc = main([str(d / names[0]), str(tmp_path / "missing.jpg"), str(dark), "--model", str(tiny_model)])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 1 and len(lines) == 3
    assert "\tERROR\t" in lines[1]
    assert lines[2].split("\t")[1:3] == ["-", "-"] and "RETAKE" in lines[2] and "dark" in lines[2]
    # JSON, as the API: no probability or band for a photo that failed the gate; --no-gate gives them anyway
    main([str(dark), "--model", str(tiny_model), "--json"])
    row = json.loads(capsys.readouterr().out)
    assert row["probability"] is None and row["band"] is None and row["quality"]["codes"] == ["too_dark"]
    main([str(dark), "--model", str(tiny_model), "--json", "--no-gate"])
    row = json.loads(capsys.readouterr().out)
    assert 0.0 <= row["probability"] <= 1.0 and row["band"] in ("low", "medium", "high")
    assert row["quality"]["ok"] is False


def test_the_skin_lesion_check_is_the_apps(tiny_model, folder, tmp_path, capsys):
    """With the model's OOD statistics in its folder, the CLI refuses what the app refuses ("does not look like a
    skin lesion"); without them it says the check is off."""
    from dermo.inference import Predictor
    from dermo.ood import embed_images, fit_ood

    d, names = folder
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    main([str(d / names[0]), "--model", str(model), "--json"])
    out, err = capsys.readouterr()
    assert json.loads(out)["quality"]["ok"] is True and "check is off" in err
    pred = Predictor(model)
    det = fit_ood(embed_images(pred, sorted(str(f) for f in d.glob("*.jpg") if f.name != "broken.jpg")), 2)
    capsys.readouterr()  # timm's loading message
    for threshold, ok in ((float("inf"), True), (-1.0, False)):  # everything in / everything out of distribution
        det.threshold = threshold
        det.save(model, model_sha256=pred.sha256)
        main([str(d / names[0]), "--model", str(model), "--json"])
        out, err = capsys.readouterr()
        row = json.loads(out)
        assert row["quality"]["ok"] is ok and "check is off" not in err
        assert (row["band"] is None) is (not ok) and (row["quality"]["codes"] == ["not_skin"]) is (not ok)


def test_bad_model_is_a_clear_error(tmp_path, folder, capsys):
    d, _ = folder
    assert main([str(d), "--model", str(tmp_path / "nope")]) == 2
    assert "cannot load the model" in capsys.readouterr().err


def test_collect_images(folder):
    d, names = folder
    files, any_folder = collect_images([d])
    assert any_folder and len(files) == len(names) + 1
    assert all(f.suffix != ".txt" for f in files)


def test_an_uncalibrated_or_tta_model_is_named_on_stderr(tiny_model, folder, tmp_path, capsys):
    """A folder whose probabilities are not the reports' says why: not calibrated, or evaluated with flip TTA."""
    import dataclasses

    d, names = folder
    photo = str(d / names[0])
    main([photo, "--model", str(tiny_model)])
    err = capsys.readouterr().err
    assert "is not calibrated" in err and "band edges 0.3/0.7" in err and "test-time augmentation" not in err
    calibrated = tmp_path / "calibrated"
    cfg = dataclasses.replace(ModelConfig(backbone="test_efficientnet", img_size=64), temperature=1.3,
                              calibrated=True)
    create_model(cfg).save_pretrained(calibrated)
    (calibrated / "run_config.json").write_text(json.dumps({"train": {"tta": True}}))
    main([photo, "--model", str(calibrated)])
    err = capsys.readouterr().err
    assert "not calibrated" not in err and "test-time augmentation" in err and "--tta" in err


def test_a_damaged_exif_block_is_not_an_error(tiny_model, folder, capsys):
    """A photo with EXIF Pillow cannot parse is analysed like the same photo without it (it once ended the run)."""
    from PIL import Image

    d, names = folder
    src = d / names[0]
    Image.open(src).save(d / "bad_exif.jpg", quality=95, exif=b"Exif\x00\x00MM\x00\x07\x00\x00\x00\x08")
    Image.open(src).save(d / "same_without.jpg", quality=95)
    rc = main([str(d / "bad_exif.jpg"), str(d / "same_without.jpg"), str(src), "--model", str(tiny_model), "--json",
               "--no-gate"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0 and [("error" in r) for r in rows] == [False] * 3
    assert rows[0]["probability"] == rows[1]["probability"] is not None


def test_an_image_the_model_fails_on_costs_only_its_own_line(tiny_model, folder, monkeypatch, capsys):
    """A fault in one image of a batch is that file's error line; the others of its batch are still analysed."""
    from dermo.inference import Predictor

    d, names = folder
    real = Predictor.predict_batch

    def flaky(self, images, batch_size=32):
        if any(im.size == (17, 17) for im in images):
            raise RuntimeError("model fault")
        return real(self, images, batch_size)

    from PIL import Image

    Image.new("RGB", (17, 17), (120, 80, 60)).save(d / "odd.png")
    monkeypatch.setattr(Predictor, "predict_batch", flaky)
    rc = main([str(d / names[0]), str(d / "odd.png"), str(d / names[2]), "--model", str(tiny_model), "--json",
               "--batch_size", "8", "--no-gate"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 1 and [r["file"].rsplit("/", 1)[-1] for r in rows] == [names[0], "odd.png", names[2]]
    assert "model fault" in rows[1]["error"] and rows[0]["probability"] is not None and rows[2]["probability"] is not None
