"""Hub push/pull up to the network boundary: dry-run folders, cards, a hand-built Hub cache, one-commit pushes.

Nothing here reaches the network: huggingface_hub's offline switch is on for every test, and the push tests
replace only HfApi's network methods (and datasets' push_to_hub) with recorders.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
import torch

pytest.importorskip("onnxruntime")
from huggingface_hub import ModelCard, constants, metadata_load  # noqa: E402

from dermo import hub  # noqa: E402
from dermo.config import ModelConfig  # noqa: E402
from dermo import metrics as M  # noqa: E402
from dermo.inference import BUNDLED_MODEL_DIR, ModelIntegrityError, Predictor, sha256_file  # noqa: E402
from dermo.models import create_model, load_model  # noqa: E402

REPO = "dermotest/tiny-student"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test may reach the Hub: offline mode on, an empty private cache, no token."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random-init test_efficientnet saved with save_pretrained (+ run_config.json as training writes it)."""
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="test_efficientnet", img_size=64, name="dermohelper-tiny", version="0.0.1")
    model = create_model(cfg).eval()
    with torch.no_grad():  # the attention conv starts at zero; make the map non-trivial
        model.attn.weight.normal_(0, 0.1)
    out = tmp_path_factory.mktemp("tiny_model") / "best"
    model.save_pretrained(out)
    from dermo.config import RunConfig

    RunConfig().override(backbone="test_efficientnet", img_size=64, teacher="runs/x/teacher/best").save(
        out / "run_config.json")
    return out


@pytest.fixture(scope="module")
def tiny_onnx(tiny_model, tmp_path_factory) -> Path:
    """model.onnx + config.json (with sha256) as the export pipeline writes them."""
    from dermo.export import export_onnx, write_bundle

    model = load_model(str(tiny_model)).eval()
    tmp = tmp_path_factory.mktemp("onnx_tmp")
    f = export_onnx(model, tmp / "fp32.onnx", simplify=False)
    out = tmp_path_factory.mktemp("tiny_onnx")
    write_bundle(f, out, model.config, onnx_variant="fp32", source_model=str(tiny_model))
    return out


@pytest.fixture(scope="module")
def tiny_reports(tiny_onnx, tiny_data, tiny_manifest, tmp_path_factory) -> Path:
    """reports/evaluation/<name>/metrics.json written by the real evaluation command on the tiny test split."""
    from dermo.evaluate import run_evaluation

    root = tmp_path_factory.mktemp("reports")
    run_evaluation(tiny_onnx, tiny_data, root / "evaluation" / "tiny_test", split="test", manifest=tiny_manifest,
                   n_boot=50, plots=False)
    return root


def expected_files(with_onnx: bool = True) -> set[str]:
    files = {"config.json", "model.safetensors", "run_config.json", "README.md", "LICENSE", "SHA256SUMS",
             "ham10000_split.csv"}
    if with_onnx:
        files |= {"onnx/model.onnx", "onnx/config.json", "onnx/SHA256SUMS"}
    return files


def listing(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def ci_text(v: float, ci: list[float]) -> str:
    """A percentage with its 95% CI as the card prints it (written out here, not through dermo.cards)."""
    return f"{100 * v:.1f}% ({100 * ci[0]:.1f}% – {100 * ci[1]:.1f}%)"


# ------------------------------------------------------------------------------------------------------ helpers
def test_parse_hub_id():
    assert hub.parse_hub_id("owner/name") == ("owner/name", None)
    assert hub.parse_hub_id("owner/name@v1.0") == ("owner/name", "v1.0")
    assert hub.parse_hub_id(f"o-1/n.2@{COMMIT}") == ("o-1/n.2", COMMIT)
    for bad in ("name", "/abs/path", "a/b/c", "owner/na me", ""):
        assert hub.parse_hub_id(bad) is None


def test_round_trip_save_load_strict_identical_logits(tiny_model, tiny_data, tmp_path):
    from dermo.data import load_metadata, preprocess

    model = load_model(str(tiny_model)).eval()
    x = torch.from_numpy(np.stack([preprocess(p, model.config) for p in load_metadata(tiny_data)["path"][:4]]))
    model.save_pretrained(tmp_path / "again")
    again = load_model(str(tmp_path / "again")).eval()
    with torch.no_grad():
        a, b = model(x), again(x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.attention, b.attention)
    assert again.config == model.config
    # strict: a checkpoint missing a tensor is refused, not silently re-initialised
    from safetensors.torch import load_file, save_file

    sd = load_file(tmp_path / "again" / "model.safetensors")
    sd.pop("fc.weight")
    save_file(sd, tmp_path / "again" / "model.safetensors")
    with pytest.raises(RuntimeError, match="fc.weight"):
        load_model(str(tmp_path / "again"))


def test_read_sums_reads_text_and_binary_mode_lines(tmp_path):
    """``sha256sum -b`` writes ``<hex> *<name>``: the name is what follows the ``*``."""
    f = tmp_path / "SHA256SUMS"
    f.write_text(f"{'a' * 64}  config.json\n\n{'b' * 64} *onnx/model.onnx\n")
    assert hub.read_sums(f) == {"config.json": "a" * 64, "onnx/model.onnx": "b" * 64}


# ------------------------------------------------------------------------------------------------------ dry run
def test_side_files_named_by_the_config_travel_with_the_onnx_file(tiny_model, tiny_onnx, tiny_reports, tmp_path):
    import shutil

    onnx_dir = tmp_path / "onnx_src"
    shutil.copytree(tiny_onnx, onnx_dir)
    cfg = json.loads((onnx_dir / "config.json").read_text())
    cfg["ood"] = {"file": "ood.npz", "threshold": 1.0}
    (onnx_dir / "config.json").write_text(json.dumps(cfg))
    (onnx_dir / "ood.npz").write_bytes(b"side file")
    (onnx_dir / "notes.txt").write_text("not named by the config")
    out = hub.push_model(tiny_model, REPO, onnx_dir=onnx_dir, reports_dir=tiny_reports, dry_run_dir=tmp_path / "d")
    assert (out / "onnx" / "ood.npz").read_bytes() == b"side file"
    assert not (out / "onnx" / "notes.txt").exists()
    assert "ood.npz" in hub.read_sums(out / "onnx" / "SHA256SUMS")


def test_dry_run_model_folder_and_card(tiny_model, tiny_onnx, tiny_reports, tmp_path):
    out = hub.push_model(tiny_model, REPO, onnx_dir=tiny_onnx, reports_dir=tiny_reports,
                         dry_run_dir=tmp_path / "dry")
    assert listing(out) == expected_files()
    # weights and configs are the exact bytes of the sources
    for name in ("config.json", "model.safetensors", "run_config.json"):
        assert (out / name).read_bytes() == (tiny_model / name).read_bytes()
    for name in ("model.onnx", "config.json"):
        assert (out / "onnx" / name).read_bytes() == (tiny_onnx / name).read_bytes()
    # the split the figures were computed on, byte for byte, with its sha256 in the card and in SHA256SUMS
    from dermo.config import DEFAULT_MANIFEST

    assert (out / "ham10000_split.csv").read_bytes() == DEFAULT_MANIFEST.read_bytes()
    assert f"`ham10000_split.csv` (sha256 `{sha256_file(DEFAULT_MANIFEST)}`)" in (out / "README.md").read_text()
    sums = hub.read_sums(out / "onnx" / "SHA256SUMS")
    assert sums == {n: sha256_file(out / "onnx" / n) for n in ("config.json", "model.onnx")}
    assert json.loads((out / "onnx" / "config.json").read_text())["sha256"] == sums["model.onnx"]
    # the root SHA256SUMS: every file a pull checks, but not the card (it may be edited on the Hub)
    root = hub.read_sums(out / "SHA256SUMS")
    assert "README.md" not in root
    assert root == {n: sha256_file(out / n) for n in listing(out) - {"README.md", "SHA256SUMS", "onnx/SHA256SUMS"}}
    # card: front matter parsed by huggingface_hub
    meta = metadata_load(out / "README.md")
    assert meta["license"] == "cc-by-nc-sa-4.0" and "onnx" in meta["tags"]
    assert meta["pipeline_tag"] == "image-classification"
    assert "model-index" in meta and meta["datasets"] == ["dermotest/ham10000"]
    card = ModelCard.load(out / "README.md")
    metrics = json.loads((tiny_reports / "evaluation" / "tiny_test" / "metrics.json").read_text())
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["roc_auc"].dataset_split == "test"
    assert metrics["auroc"] is not None  # the tiny test split holds both classes
    assert results["roc_auc"].metric_value == round(metrics["auroc"], 4)
    assert results["recall"].metric_value == round(metrics["sensitivity"], 4)
    text = card.text
    assert (f"{metrics['n']} images, {metrics['n_malignant']} malignant, {metrics['n_groups']} lesions. "
            f"Intervals: 95% percentile bootstrap resampling lesions ({metrics['n_boot']} resamples)") in text
    assert len({metrics["n"], metrics["n_malignant"], metrics["n_groups"]}) == 3  # a swap would show
    # the headline table: value (lower – upper) of the 95% CI, both columns read from metrics.json
    lo, hi = metrics["auroc_ci"]
    assert f"| AUROC | {metrics['auroc']:.3f} ({lo:.3f} – {hi:.3f}) | (threshold-free) |" in text
    for key in ("sensitivity", "specificity", "precision", "f1", "accuracy"):
        op, at05 = (ci_text(d[key], d[f"{key}_ci"]) for d in (metrics, metrics["at_0.5"]))
        assert f"| {'F1' if key == 'f1' else key.capitalize()} | {op} | {at05} |" in text, key
    assert metrics["accuracy_ci"][0] != metrics["accuracy_ci"][1]  # bounds in the wrong order would show
    # band edges exactly as the bands are cut: Low p < low, Medium low <= p < high, High p >= high
    low, high = (f"{metrics['band_edges'][k]:.4g}" for k in ("low", "high"))
    for band, edge in (("Low", f"p < {low}"), ("Medium", f"{low} <= p < {high}"), ("High", f"p >= {high}")):
        assert f"| {band} | {edge} | " in text, band
    for needle in ("Not a medical device", "doi:[10.1038/sdata.2018.161]", "10.7910/DVN/DBW86T", "1902.03368",
                   "CC BY-NC-SA 4.0", "Lesion-grouped", "phone", "Skin types", "200 x 150",
                   "PyTorchModelHubMixin", "onnxruntime", "gradio_client", "MAG-KD student"):
        assert needle in text, needle
    # band rows carry the measured malignancy rates of the evaluation, not typed numbers
    goals = {"low": (0.02, "<="), "high": (0.70, ">=")}  # issue 4's: never rounded onto a goal's other side
    for band in ("low", "medium", "high"):
        rate = metrics["bands"][band]["malignant_rate"]
        expect = "n/a" if rate is None else (M.format_vs_goal(rate, *goals[band]) + "%" if band in goals
                                             else f"{100 * rate:.1f}%")
        row = next(line for line in text.splitlines() if line.startswith(f"| {band.capitalize()} |"))
        assert expect in row
    # reports that do not exist are said to be missing, not invented
    assert "**Inference benchmark** (`reports/inference.json`): not measured yet" in text
    assert "**Training report** (`reports/training.json`): not measured yet" in text
    assert "## License\nWeights and ONNX files: CC BY-NC-SA 4.0" in text
    assert "CC BY-NC-SA 4.0" in (out / "LICENSE").read_text()
    with pytest.raises(FileExistsError):
        hub.push_model(tiny_model, REPO, onnx_dir=tiny_onnx, reports_dir=tiny_reports, dry_run_dir=out)
    busy = tmp_path / "busy"  # a folder with anything in it is refused before a file is written
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        hub.push_model(tiny_model, REPO, reports_dir=tiny_reports, dry_run_dir=busy)
    assert listing(busy) == {"notes.txt"} and (busy / "notes.txt").read_text() == "mine"


def test_served_folder_of_dry_run_predicts(tiny_model, tiny_onnx, tiny_data, tmp_path):
    out = hub.push_model(tiny_model, REPO, onnx_dir=tiny_onnx, reports_dir=tmp_path / "none",
                         dry_run_dir=tmp_path / "dry")
    img = sorted((tiny_data / "images").glob("*.jpg"))[0]
    onnx_pred = Predictor(out / "onnx").predict(img)
    torch_pred = Predictor(out, backend="torch").predict(img)
    assert onnx_pred.probability == pytest.approx(torch_pred.probability, abs=1e-4)


def test_card_without_reports_says_not_measured(tiny_model, tmp_path):
    out = hub.push_model(tiny_model, REPO, reports_dir=tmp_path / "no_reports", dry_run_dir=tmp_path / "dry")
    assert listing(out) == expected_files(with_onnx=False)
    meta = metadata_load(out / "README.md")
    assert meta["license"] == "cc-by-nc-sa-4.0" and "model-index" not in meta
    assert "onnx" not in meta["tags"]  # no ONNX file in this repo, so no ONNX tag, nor ONNX in its License line
    text = ModelCard.load(out / "README.md").text
    assert "## License\nWeights: CC BY-NC-SA 4.0" in text
    assert "Test-split results for this model: not measured yet" in text
    assert "External sets** (never used in training or calibration): not measured yet" in text
    # an uncalibrated folder's usage says its config is not the figures' calibration; no TTA in its run, so no TTA line
    usage = text.split("## How to use", 1)[1]
    assert "# not calibrated: config.json keeps temperature 1, threshold 0.5 and bands 0.2/0.6" in usage
    assert "test-time augmentation" not in usage


def test_training_and_benchmark_reports_rendered(tiny_model, tiny_reports, tmp_path):
    reports = tmp_path / "reports"
    shutil.copytree(tiny_reports, reports)
    metrics = json.loads((reports / "evaluation" / "tiny_test" / "metrics.json").read_text())
    (reports / "training.json").write_text(json.dumps({"models": {"teacher": {"test": metrics}}}))
    (reports / "inference.json").write_text(json.dumps({"ort_fp32": {"latency_ms_p50": 4.2}}))
    out = hub.push_model(tiny_model, REPO, reports_dir=reports, dry_run_dir=tmp_path / "dry",
                         evaluations=["tiny_test"])
    text = (out / "README.md").read_text()
    assert "| models / teacher / test |" in text
    assert "| ort_fp32.latency_ms_p50 | 4.2000 |" in text
    with pytest.raises(FileNotFoundError, match="nope"):
        hub.push_model(tiny_model, REPO, reports_dir=reports, dry_run_dir=tmp_path / "dry2", evaluations=["nope"])


def test_card_headline_external_sets_and_columns(tiny_model, tiny_onnx, tiny_reports, tmp_path):
    """With several evaluations of this model: the headline is the served ONNX file's test evaluation (not the
    weights'), its "at p >= 0.5" column is the at_0.5 block, and an evaluation of other data (no split) is an
    external set, unless its name says it is HAM10000."""
    reports = tmp_path / "reports"
    shutil.copytree(tiny_reports, reports)
    ev = reports / "evaluation"
    served = json.loads((ev / "tiny_test" / "metrics.json").read_text())
    onnx_sha = json.loads((tiny_onnx / "config.json").read_text())["sha256"]
    assert served["source"]["sha256"] == onnx_sha
    # the served file's evaluation: at 0.5 other figures than at the operating point
    served["at_0.5"].update(sensitivity=0.25, sensitivity_ci=[0.125, 0.375], specificity=0.75,
                            specificity_ci=[0.5, 1.0])
    (ev / "tiny_test" / "metrics.json").write_text(json.dumps(served))

    def write(name, src, **top):
        (ev / name).mkdir()
        (ev / name / "metrics.json").write_text(json.dumps({**served, **top, "source": src}))

    # the weights' own test evaluation (sorted first by name): not the headline when the ONNX file is served
    write("a_weights_test", {**served["source"], "sha256": sha256_file(tiny_model / "model.safetensors"),
                             "backend": "torch"}, n=99, n_malignant=33)
    no_split = {k: v for k, v in served["source"].items() if k != "split"}
    write("phone_set", {**no_split, "data": "/data/phone_photos"}, n=12, n_malignant=5, auroc=0.6875,
          auroc_ci=[0.5, 0.875], sensitivity=0.4, sensitivity_ci=[0.2, 0.8], specificity=0.625,
          specificity_ci=[0.5, 0.75])
    write("ham10000_whole", no_split, n=77)  # whole HAM10000 folder, named so: not external
    text = (hub.push_model(tiny_model, REPO, onnx_dir=tiny_onnx, reports_dir=reports,
                           dry_run_dir=tmp_path / "dry") / "README.md").read_text()
    assert "Test split (from `reports/evaluation/tiny_test/metrics.json`" in text
    assert "99 images" not in text
    for key, at05 in (("sensitivity", "25.0% (12.5% – 37.5%)"), ("specificity", "75.0% (50.0% – 100.0%)")):
        assert f"| {key.capitalize()} | {ci_text(served[key], served[f'{key}_ci'])} | {at05} |" in text, key
    ext = text.split("**External sets**", 1)[1].split("\n\n**", 1)[0]
    assert "| phone_set | 12 | 5 | 0.688 (0.500 – 0.875) | 40.0% (20.0% – 80.0%) | 62.5% (50.0% – 75.0%) |" in ext
    assert "ham10000_whole" not in text and "a_weights_test" not in ext
    meta = metadata_load(tmp_path / "dry" / "README.md")
    ext_results = [r for r in meta["model-index"][0]["results"] if r["dataset"]["name"] == "phone_set"]
    assert [m["value"] for r in ext_results for m in r["metrics"]] == [0.6875]


def test_high_edge_and_band_table_at_exactly_one():
    """A High edge of exactly 1 is a (tiny) High band, p >= 1; only an edge above 1 means no High band."""
    from dermo.cards import bands_table, high_edge

    assert high_edge(1.0) == "1.0000" and high_edge(0.6) == "0.6000"
    assert high_edge(1.5) == "none (above 1: no probability is High)"
    bands = {"bands": {b: {"n": 1, "n_malignant": 0} for b in ("low", "medium", "high")}}
    table = bands_table(bands, 0.2, 1.0)
    assert "| Medium | 0.2 <= p < 1 | " in table and "| High | p >= 1 | " in table
    table = bands_table(bands, 0.2, 1.5)
    assert "| Medium | p >= 0.2 | " in table and "| High | none (edge above 1) | " in table


def test_push_refuses_mismatched_onnx(tiny_model, tiny_onnx, tmp_path):
    bad = tmp_path / "bad_onnx"
    shutil.copytree(tiny_onnx, bad)
    with open(bad / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        hub.push_model(tiny_model, REPO, onnx_dir=bad, dry_run_dir=tmp_path / "dry")


# ------------------------------------------------------------------------------------------ push (network stand-in)
class Recorder:
    """Stands in for the Hub's HTTP API: records each call instead of sending it."""

    def __init__(self, existing: list[str] | None = None):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.uploaded: dict[str, bytes] = {}
        self.deleted: list[str] = []
        self.existing = list(existing or [])  # the files the repository holds before the push

    def install(self, monkeypatch, cls):
        def make(name):
            def method(api_self, *args, **kwargs):
                self.calls.append((name, args, kwargs))
                self.tokens.add(api_self.token)
                if name == "create_commit":  # read the payload now: the staging folder is temporary
                    for op in kwargs["operations"]:
                        if hasattr(op, "path_or_fileobj"):
                            self.uploaded[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
                        else:
                            self.deleted.append(op.path_in_repo)
                    return {"commit_url": f"https://huggingface.co/{args[0]}/commit/{COMMIT}"}
                if name == "list_repo_files":
                    return list(self.existing)
                if name == "upload_folder":
                    folder = Path(kwargs["folder_path"])
                    self.uploaded.update({p.name: p.read_bytes() for p in folder.iterdir()})
                return None
            return method

        self.tokens: set = set()
        for name in ("create_repo", "create_branch", "create_commit", "upload_folder", "list_repo_files"):
            monkeypatch.setattr(cls, name, make(name))

    def names(self):
        return [c[0] for c in self.calls]


def test_push_model_one_commit(tiny_model, tiny_onnx, tiny_reports, tmp_path, monkeypatch):
    from huggingface_hub import CommitOperationAdd, HfApi

    rec = Recorder()
    rec.install(monkeypatch, HfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_from_env")
    info = hub.push_model(tiny_model, REPO, onnx_dir=tiny_onnx, reports_dir=tiny_reports, private=True,
                          revision="v1")
    assert rec.names() == ["create_repo", "create_branch", "list_repo_files", "create_commit"]
    _, args, kw = rec.calls[0]
    assert args == (REPO,) and kw["private"] is True and kw["exist_ok"] is True
    _, args, kw = rec.calls[3]
    assert kw["revision"] == "v1"
    assert all(isinstance(op, CommitOperationAdd) for op in kw["operations"])
    assert rec.tokens == {"hf_test_token_from_env"}
    assert info["commit_url"].endswith(COMMIT)
    # exactly the dry-run folder, byte for byte
    dry = hub.push_model(tiny_model, REPO, onnx_dir=tiny_onnx, reports_dir=tiny_reports, dry_run_dir=tmp_path / "d")
    assert set(rec.uploaded) == listing(dry) == expected_files()
    assert all(rec.uploaded[k] == (dry / k).read_bytes() for k in rec.uploaded)


def test_a_push_removes_what_an_earlier_push_left(tiny_model, tiny_onnx, tmp_path, monkeypatch):
    """Weights pushed without --onnx to a repository that has onnx/ from before: that old onnx/ (which a pull would
    prefer) goes in the same commit; files the push does not manage stay."""
    from huggingface_hub import HfApi

    rec = Recorder(existing=[".gitattributes", "notes.md", "README.md", "config.json", "onnx/model.onnx",
                             "onnx/config.json", "onnx/SHA256SUMS", "onnx/ood.npz", "onnx/dynamic.onnx"])
    rec.install(monkeypatch, HfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_from_env")
    hub.push_model(tiny_model, REPO, reports_dir=tmp_path / "none")
    assert sorted(rec.deleted) == ["onnx/SHA256SUMS", "onnx/config.json", "onnx/dynamic.onnx", "onnx/model.onnx",
                                   "onnx/ood.npz"]
    assert set(rec.uploaded) == expected_files(with_onnx=False)


def test_weights_and_onnx_of_different_models_are_not_pushed_together(tiny_model, tiny_onnx, tmp_path):
    """train.export records the sha256 of the weights it exported: an ONNX folder from other weights is refused."""
    other = tmp_path / "other"
    shutil.copytree(tiny_onnx, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["source_sha256"] = "0" * 64
    (other / "config.json").write_text(json.dumps(cfg))
    (other / "SHA256SUMS").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="exported from other weights"):
        hub.push_model(tiny_model, REPO, onnx_dir=other, dry_run_dir=tmp_path / "dry")
    # the same weights, but the bundle re-versioned (train.export --version) and the weights' config not
    cfg = json.loads((tiny_onnx / "config.json").read_text())
    cfg["version"] = "9.99.0"
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="one model under one version"):
        hub.push_model(tiny_model, REPO, onnx_dir=other, dry_run_dir=tmp_path / "dry2")
    # same weights and version, but the bundle's input size or backbone is another model's
    base = json.loads((tiny_onnx / "config.json").read_text())
    for key, value in (("img_size", base["img_size"] * 2), ("backbone", "resnet18")):
        (other / "config.json").write_text(json.dumps({**base, key: value}))
        with pytest.raises(ValueError, match=f"{key} differs"):
            hub.push_model(tiny_model, REPO, onnx_dir=other, dry_run_dir=tmp_path / f"dry_{key}")
        assert not (tmp_path / f"dry_{key}" / "README.md").exists()


def test_push_without_token_is_a_clear_error(tiny_model, monkeypatch, tmp_path):
    from huggingface_hub import HfApi

    rec = Recorder()
    rec.install(monkeypatch, HfApi)
    with pytest.raises(ValueError, match="huggingface-cli login"):
        hub.push_model(tiny_model, REPO)
    assert rec.calls == []
    with pytest.raises(ValueError, match="owner/name"):
        hub.push_model(tiny_model, "not-a-repo", dry_run_dir="unused")
    with pytest.raises(ValueError, match="the revision goes in --revision"):  # a dry run too
        hub.push_model(tiny_model, f"{REPO}@v1", dry_run_dir=tmp_path / "dry")
    assert not (tmp_path / "dry").exists()


# --------------------------------------------------------------------------------------------- pull (Hub cache)
def make_hub_cache(folder: Path, cache: Path, repo_id: str = REPO, commit: str = COMMIT,
                   ref: str = "main") -> Path:
    """Lay ``folder`` out as huggingface_hub's cache does: blobs/<hash>, snapshots/<commit>/<path> -> blob symlinks,
    refs/<ref> holding the commit. Returns the snapshot folder."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder)
        digest = hashlib.sha256(f.read_bytes()).hexdigest()  # LFS blobs are named by sha256
        blob = repo_dir / "blobs" / digest
        shutil.copyfile(f, blob)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(rel.parts) - 1)) / ".." / ".." / "blobs" / digest)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture()
def hub_cache(tiny_model, tiny_onnx, tmp_path) -> Path:
    dry = hub.push_model(tiny_model, REPO, onnx_dir=tiny_onnx, reports_dir=tmp_path / "none",
                         dry_run_dir=tmp_path / "dry")
    cache = tmp_path / "hub_cache"
    snap = make_hub_cache(dry, cache)
    assert (snap / "onnx" / "model.onnx").is_symlink() and (snap / "onnx" / "model.onnx").is_file()
    return cache


def test_pull_from_local_hub_cache_offline(hub_cache, tiny_onnx, tiny_data, monkeypatch):
    path = hub.pull_model(REPO, cache_dir=hub_cache)
    assert path.name == "onnx" and sha256_file(path / "model.onnx") == sha256_file(tiny_onnx / "model.onnx")
    assert hub.pull_model(REPO, revision=COMMIT, cache_dir=hub_cache) == path
    assert hub.pull_model(f"{REPO}@main", cache_dir=hub_cache) == path
    # Predictor.from_pretrained uses the default cache: point it at the hand-built one
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    pred = Predictor.from_pretrained(REPO)
    assert pred.backend == "onnx" and pred.sha256 == sha256_file(tiny_onnx / "model.onnx")
    img = sorted((tiny_data / "images").glob("*.jpg"))[0]
    assert pred.predict(img).probability == pytest.approx(Predictor(tiny_onnx).predict(img).probability)
    assert hub.resolve_model(f"{REPO}@{COMMIT}") == path
    from huggingface_hub.errors import LocalEntryNotFoundError

    with pytest.raises(LocalEntryNotFoundError):
        hub.pull_model(REPO, revision="v9", cache_dir=hub_cache)


def test_pull_safetensors_only_repo(tiny_model, tmp_path):
    dry = hub.push_model(tiny_model, REPO, reports_dir=tmp_path / "none", dry_run_dir=tmp_path / "dry")
    make_hub_cache(dry, tmp_path / "cache")
    path = hub.pull_model(REPO, cache_dir=tmp_path / "cache")
    assert (path / "model.safetensors").is_file()
    assert Predictor(path).backend == "torch"


def test_a_partial_or_tampered_cache_is_refused_not_served(tiny_model, hub_cache, tmp_path):
    """A cache that holds only part of the repository (what PyTorchModelHubMixin.from_pretrained fetches, or a
    snapshot missing a listed file) is refused, not served as another backend; so are tampered weights."""
    snap = hub_cache / ("models--" + REPO.replace("/", "--")) / "snapshots" / COMMIT
    (snap / "onnx" / "model.onnx").unlink()  # the root SHA256SUMS lists it
    with pytest.raises(ModelIntegrityError, match="listed in SHA256SUMS but missing.*incomplete"):
        hub.pull_model(REPO, cache_dir=hub_cache)
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model / name, partial / name)
    make_hub_cache(partial, tmp_path / "cache2")
    with pytest.raises(ModelIntegrityError, match="no SHA256SUMS"):
        hub.pull_model(REPO, cache_dir=tmp_path / "cache2")
    dry = hub.push_model(tiny_model, REPO, reports_dir=tmp_path / "none", dry_run_dir=tmp_path / "dry3")
    snap3 = make_hub_cache(dry, tmp_path / "cache3")
    blob = (snap3 / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="model.safetensors.*corrupted or was replaced"):
        hub.pull_model(REPO, cache_dir=tmp_path / "cache3")
    with pytest.raises(ValueError, match="pins revision"):
        hub.pull_model(f"{REPO}@v1", revision="main", cache_dir=hub_cache)


def test_corrupted_download_fails_sha256_check(hub_cache, monkeypatch):
    snap = hub_cache / ("models--" + REPO.replace("/", "--")) / "snapshots" / COMMIT
    blob = (snap / "onnx" / "model.onnx").resolve()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"corrupted or was replaced.*sha256.*pull again"):
        hub.pull_model(REPO, cache_dir=hub_cache)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    with pytest.raises(ModelIntegrityError, match=REPO):
        Predictor.from_pretrained(REPO)
    with pytest.raises(ModelIntegrityError):  # never falls back silently on a tampered file
        hub.resolve_model(REPO)


# ------------------------------------------------------------------------------------------------- resolve_model
def test_resolve_model_local_and_bad_settings(tiny_onnx):
    assert hub.resolve_model(None) == BUNDLED_MODEL_DIR
    assert hub.resolve_model("  ") == BUNDLED_MODEL_DIR
    assert hub.resolve_model(str(tiny_onnx)) == tiny_onnx
    assert hub.resolve_model(str(tiny_onnx / "model.onnx")) == tiny_onnx / "model.onnx"
    with pytest.raises(FileNotFoundError, match="neither an existing folder"):
        hub.resolve_model("/no/such/model/dir")


@pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "config.json").is_file(), reason="bundled model not exported yet")
def test_resolve_model_falls_back_to_bundled_with_one_log_line(caplog, tmp_path):
    with caplog.at_level(logging.INFO, logger="dermo.hub"):
        path = hub.resolve_model("nobody/not-cached@v2", cache_dir=tmp_path / "empty")
    assert path == BUNDLED_MODEL_DIR
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot be reached" in warnings[0].getMessage()
    assert "nobody/not-cached@v2" in warnings[0].getMessage()
    assert Predictor(path).config is not None


# ------------------------------------------------------------------------------------------------------- dataset
def test_dataset_dry_run_is_a_loadable_hub_layout(tiny_data, tiny_manifest, tmp_path):
    import datasets
    import pandas as pd
    from huggingface_hub import DatasetCard

    out = hub.push_dataset(tiny_data, "dermotest/ham10000", manifest=tiny_manifest, dry_run_dir=tmp_path / "ds")
    man = pd.read_csv(tiny_manifest, dtype=str)
    files = listing(out)
    assert {"README.md", "LICENSE"} < files
    assert {f for f in files if f.startswith("data/")} == {f"data/{s}-00000-of-00001.parquet"
                                                           for s in ("train", "validation", "test")}
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "cc-by-nc-sa-4.0"
    assert "10.1038/sdata.2018.161" in card.text and "lesion" in card.text
    # the same call a Hub id goes through (datasets.load_dataset(<repo>)), on the folder laid out like the repo
    # (re-read: datasets caches a local folder with README configs by relative paths, so an earlier run's folder
    # of the same name would answer from the cache)
    dsd = datasets.load_dataset(str(out), download_mode="force_redownload")
    assert set(dsd) == {"train", "validation", "test"}
    for split, ds in dsd.items():
        assert sorted(ds["image_id"]) == sorted(man.loc[man["split"] == split, "image_id"])
    row = dsd["train"][0]
    src = tiny_data / "images" / f"{row['image_id']}.jpg"
    assert row["image"].size == (200, 150)
    assert np.array_equal(np.asarray(row["image"]), np.asarray(__import__("PIL.Image").Image.open(src)))
    assert dsd["train"].features["label"].names == ["benign", "malignant"]
    from dermo.data import load_hf_dataset

    test = load_hf_dataset(out, split="test")
    assert sorted(test["image_id"]) == sorted(man.loc[man["split"] == "test", "image_id"])
    assert test.features["label"].names == ["benign", "malignant"]
    # a second folder of the same name and layout, with other rows, is read as itself (not from the cache)
    other = tmp_path / "again" / "ds"
    hub.write_dataset_folder(hub.build_dataset_dict(tiny_data, tiny_manifest).map(
        lambda r: {"image_id": "X" + r["image_id"]}), other, "dermotest/ham10000", tiny_manifest)
    again = load_hf_dataset(other, split="test")
    assert sorted(again["image_id"]) == sorted("X" + i for i in man.loc[man["split"] == "test", "image_id"])
    # embedded: the folder works without the source images
    import pyarrow.parquet as pq

    tbl = pq.read_table(out / "data" / "train-00000-of-00001.parquet")
    assert tbl.column("image")[0].as_py()["bytes"] == src.read_bytes()


def test_push_dataset_calls_push_to_hub(tiny_data, tiny_manifest, monkeypatch):
    import datasets
    from huggingface_hub import HfApi

    rec = Recorder()
    rec.install(monkeypatch, HfApi)
    pushed = {}

    def push_to_hub(self, repo_id, **kw):  # datasets' own upload, replaced at the network boundary
        pushed.update(repo_id=repo_id, splits={k: len(v) for k, v in self.items()}, **kw)

    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", push_to_hub)
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    hub.push_dataset(tiny_data, "dermotest/ham10000", manifest=tiny_manifest)
    assert rec.names() == ["create_repo", "upload_folder"]
    assert rec.calls[0][2]["repo_type"] == "dataset"
    assert set(rec.uploaded) == {"README.md", "LICENSE"}
    assert pushed["repo_id"] == "dermotest/ham10000" and pushed["token"] == "hf_x"
    assert pushed["num_shards"] == {"train": 1, "validation": 1, "test": 1}  # as the dry run writes them
    n_images = len((tiny_data / "metadata.csv").read_text().strip().splitlines()) - 1
    assert set(pushed["splits"]) == {"train", "validation", "test"} and sum(pushed["splits"].values()) == n_images


def test_card_names_the_teacher_or_the_ensemble(tiny_model, tmp_path):
    """The role line reads the teacher folder(s) of run_config: one backbone, or every member of an ensemble."""
    from dermo.cards import ModelInfo, _role

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    backbone = json.loads((Path(tiny_model) / "config.json").read_text())["backbone"]
    one = ModelInfo(config={"name": "s"}, run_config={"distill": {"teacher": str(tiny_model)}})
    assert _role(one) == f"MAG-KD student (distilled from a `{backbone}` teacher)"
    ens = ModelInfo(config={"name": "s"}, run_config={"distill": {"teacher": f"{tiny_model}, {other}"}})
    assert _role(ens) == (f"MAG-KD student (distilled from an ensemble teacher: `{backbone}` + `{backbone}`, "
                          "logits averaged)")
    assert _role(ModelInfo(config={"name": "dermohelper-teacher"})) == "teacher"


def test_card_says_where_the_attention_map_rests(tiny_model, tiny_data, tiny_manifest, tmp_path):
    """The limitation bullet on the heatmap comes from reports/focus.json (the real dermo.focus on the tiny model),
    matched by the weights' sha256; a model without a row is said to be unmeasured."""
    from dermo import focus

    reports = tmp_path / "reports"
    res = focus.run([str(tiny_model)], str(tiny_data), "test", str(tiny_manifest), examples=0,
                    out=reports / "focus")
    row = res["models"][-1]
    assert row["sha256"] == sha256_file(tiny_model / "model.safetensors")
    text = (hub.push_model(tiny_model, REPO, reports_dir=reports, dry_run_dir=tmp_path / "dry") / "README.md").read_text()
    line = next(x for x in text.splitlines() if "not a segmentation" in x)
    assert f"{row['lift_median']:.2f}x" in line
    assert ("mostly on the lesion" if row["lift_median"] > 1 else "mostly on the skin around the lesion") in line
    bare = hub.push_model(tiny_model, REPO, reports_dir=tmp_path / "none", dry_run_dir=tmp_path / "dry2")
    assert "has not been measured for this model" in (bare / "README.md").read_text()


def test_card_training_rows_and_a_calibration_it_does_not_hold(tiny_model, tiny_onnx, tiny_reports, tmp_path):
    """Training-report rows are named by each model's title and this model's row is marked; an evaluation made at a
    calibration the pushed config lacks (an uncalibrated teacher, calibrated in memory by train.report) says so."""
    reports = tmp_path / "reports"
    shutil.copytree(tiny_reports, reports)
    metrics_path = reports / "evaluation" / "tiny_test" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    mine = sha256_file(tiny_model / "model.safetensors")
    (reports / "training.json").write_text(json.dumps({"models": {
        "teacher": {"title": "Teacher: ensemble of 2 (mean logits)", "sha256": "0" * 64, "auroc": 0.91,
                    "validation": {"auroc": 0.9, "threshold": 0.3}},
        "magkd": {"title": "MAG-KD student", "sha256": mine, "auroc": 0.8, "validation": {"auroc": 0.7},
                  "operating_point": {"threshold": 0.25, "sensitivity": 0.875, "specificity": 0.625,
                                      "sensitivity_ci": [0.75, 1.0]},
                  "at_0.5": {"threshold": 0.5, "sensitivity": 0.5, "specificity": 0.95}}}}))
    text = (hub.push_model(tiny_model, REPO, reports_dir=reports, dry_run_dir=tmp_path / "dry") / "README.md").read_text()
    assert "| models / Teacher: ensemble of 2 (mean logits) | 0.910 |" in text
    assert "| models / Teacher: ensemble of 2 (mean logits) / validation | 0.900 |" in text
    assert "| models / MAG-KD student (this model) | 0.800 |" in text and "| models / MAG-KD student (this model) / validation |" in text
    assert "the rows marked (this model) are this card's model" in text
    # a test entry's figures at the validation-chosen point sit under operating_point (threshold 0.5's are not shown)
    assert "| models / MAG-KD student (this model) | 0.800 | 87.5% (75.0% – 100.0%) | 62.5% | 0.2500 |" in text
    assert "not the calibrated threshold under Model details" in text and "50.0%" not in text
    # the ONNX bundle's evaluation used the bundle's own calibration: no note
    served = (hub.push_model(tiny_model, REPO, onnx_dir=tiny_onnx, reports_dir=tiny_reports,
                             dry_run_dir=tmp_path / "dry_onnx") / "README.md").read_text()
    assert "**Calibration of these figures**" not in served
    # the same evaluation, as if made at a calibration fitted in memory that the weights' config does not hold
    cfg = json.loads((tiny_model / "config.json").read_text())
    metrics.update(temperature=cfg.get("temperature", 1.0) * 2 + 0.5, logit_bias=-0.25, threshold=0.125,
                   band_edges={"low": 0.0625, "high": 0.375})
    metrics["source"].update(sha256=mine, calibration_source="fitted here on validation")
    metrics_path.write_text(json.dumps(metrics))
    (reports / "training.json").unlink()
    text = (hub.push_model(tiny_model, REPO, reports_dir=reports, dry_run_dir=tmp_path / "dry2",
                           evaluations=["tiny_test"]) / "README.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("**Calibration of these figures**"))
    assert "fitted here on validation" in line and "logit bias b -0.2500" in line
    assert "operating threshold 0.1250" in line and "low 0.0625 / high 0.3750" in line


def test_teacher_card_says_whom_it_taught(tiny_model, tmp_path, monkeypatch):
    """--teacher-of: the teacher's card names the student it taught and, for an ensemble, the other members; the role
    is read from the student's run_config.json, and a model that is not among its teachers is refused."""
    from dermo.config import RunConfig

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    student = tmp_path / "student"
    shutil.copytree(tiny_model, student)
    RunConfig().override(backbone="test_efficientnet", img_size=64, teacher=f"{tiny_model},{other}").save(
        student / "run_config.json")
    out = hub.push_model(tiny_model, REPO, reports_dir=tmp_path / "none", dry_run_dir=tmp_path / "dry",
                         teacher_of=student)
    text = (out / "README.md").read_text()
    assert "teacher, one of the 2 members of the ensemble teacher of `dermohelper-tiny`" in text.splitlines()[
        next(i for i, line in enumerate(text.splitlines()) if line.startswith("# "))]
    assert f"the mean logits of 2 models, this one and `test_efficientnet` (`{other}`)" in text
    assert "this model's alone, not the ensemble's" in text
    # with the members' Hub ids the card links the others; a list that does not fit the members is refused
    out = hub.push_model(tiny_model, REPO, reports_dir=tmp_path / "none", dry_run_dir=tmp_path / "dry3",
                         teacher_of=student, member_repos=[REPO, "dermotest/teacher-member2"])
    text = (out / "README.md").read_text()
    assert (f"`test_efficientnet` (`{other}`; on the Hub: [`dermotest/teacher-member2`]"
            "(https://huggingface.co/dermotest/teacher-member2))") in text
    assert "**Not for triage.**" in text and "*Low*:" not in text  # a teacher's bands are not the app's
    assert "gradio_client" not in text  # the app's API runs the student, not this model
    with pytest.raises(ValueError, match="names 1 repositories for the 2 members"):
        hub.push_model(tiny_model, REPO, dry_run_dir=tmp_path / "dry5", teacher_of=student, member_repos=[REPO])
    with pytest.raises(ValueError, match="give --teacher-of too"):
        hub.push_model(tiny_model, REPO, dry_run_dir=tmp_path / "dry6", member_repos=[REPO])
    with pytest.raises(ValueError, match="not among its teachers"):
        hub.push_model(tmp_path / "student", REPO, dry_run_dir=tmp_path / "dry2", teacher_of=student)
    # a teacher carried to the GPU as train.pack_carry's fp16 copy (.carry/<folder>) stands for <folder>
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model, tmp_path / "models" / "teacher")
    RunConfig().override(backbone="test_efficientnet", img_size=64, teacher=".carry/models/teacher").save(
        student / "run_config.json")
    text = (hub.push_model(Path("models/teacher"), REPO, reports_dir=tmp_path / "none", dry_run_dir=tmp_path / "dry4",
                           teacher_of=student) / "README.md").read_text()
    assert "teacher of `dermohelper-tiny`" in text and "distilled from this model alone" in text
    plain = tmp_path / "plain"
    shutil.copytree(tiny_model, plain)
    RunConfig().override(backbone="test_efficientnet", img_size=64).save(plain / "run_config.json")
    with pytest.raises(ValueError, match="names no teacher"):
        hub.push_model(tiny_model, REPO, dry_run_dir=tmp_path / "dry3", teacher_of=plain)


def test_card_parity_and_benchmarks_of_another_model(tiny_model, tiny_reports, tmp_path):
    """The served file's parity with the PyTorch weights is in the card (from its config, as train.export writes
    it); a benchmark report of another model file is not shown as this model's."""
    from dermo.export import check_parity, export_onnx, write_bundle

    model = load_model(str(tiny_model)).eval()
    f = export_onnx(model, tmp_path / "fp32.onnx", simplify=False)
    x = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    parity = {**check_parity(model, f, x), "split": "random"}
    onnx_dir = tmp_path / "onnx"
    write_bundle(f, onnx_dir, model.config, onnx_variant="fp32", source_model=str(tiny_model), parity={"fp32": parity})
    reports = tmp_path / "reports"
    shutil.copytree(tiny_reports, reports)
    (reports / "inference.json").write_text(json.dumps({"shipped_sha256": "ab" * 32, "rows": {"x": 1.5}}))
    ev = reports / "evaluation" / "tiny_test" / "metrics.json"  # the command that wrote the evaluation is named
    m = json.loads(ev.read_text())
    ev.write_text(json.dumps({**m, "source": {**m["source"], "command": "python -m train.report --runs r"}}))
    text = (hub.push_model(tiny_model, REPO, onnx_dir=onnx_dir, reports_dir=reports, dry_run_dir=tmp_path / "dry",
                           evaluations=["tiny_test"]) / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| fp32 (served: model.onnx) |"))
    assert row.split(" | ")[1:4] == ["4", "random", f"{parity['logits_max_abs_diff']:.2g}"]
    assert ("**Inference benchmark** (`reports/inference.json`): measured on another model file (sha256 "
            "`abababababab...`, the app's), not on this one: not measured yet for this model.") in text
    assert "rows.x" not in text
    assert "(from `reports/evaluation/tiny_test/metrics.json`, written by `python -m train.report --runs r`)" in text


def test_card_usage_of_a_calibrated_tta_model(tiny_model, tmp_path):
    """A calibrated folder whose run evaluated with flip TTA: no 'not calibrated' line, a TTA line instead."""
    model = tmp_path / "tta_model"
    shutil.copytree(tiny_model, model)
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "calibrated": True, "temperature": 1.2}))
    rc = json.loads((model / "run_config.json").read_text())
    rc["train"]["tta"] = True
    (model / "run_config.json").write_text(json.dumps(rc))
    out = hub.push_model(model, REPO, reports_dir=tmp_path / "no_reports", dry_run_dir=tmp_path / "dry")
    usage = ModelCard.load(out / "README.md").text.split("## How to use", 1)[1]
    assert "not calibrated" not in usage and "flip test-time augmentation (dermo.evaluate --tta)" in usage
    assert "pixel_values.flip(-1), pixel_values.flip(-2)" in usage


def test_an_evaluation_of_other_weights_at_the_same_path_is_not_this_models(tmp_path):
    """Evaluations are matched by sha256; by path only when they record none: one that records another sha256 was
    made of weights that lay at that path before, and its figures must not reach this model's card."""
    from dermo.cards import Reports, match_evaluations

    path, sha = str(tmp_path / "model"), "a" * 64
    reports = Reports(root=tmp_path, evaluations={
        "this": {"source": {"model": path, "sha256": sha}, "auroc": 0.9},
        "older_weights_same_path": {"source": {"model": path, "sha256": "0" * 64}, "auroc": 0.99},
        "no_sha_recorded": {"source": {"model": path}, "auroc": 0.8},
        "other_model": {"source": {"model": str(tmp_path / "x"), "sha256": "b" * 64}, "auroc": 0.7}})
    assert set(match_evaluations(reports, {sha}, {path})) == {"this", "no_sha_recorded"}


@pytest.mark.parametrize("tta", [False, True])
def test_the_cards_code_runs_as_written(tiny_model, tiny_onnx, tiny_reports, tiny_data, tmp_path, monkeypatch, tta):
    """Every Python block of the card, run as it stands on a dry-run folder in place of the repository (its id
    replaced by the folder; hf_hub_download, the network boundary, reads that folder): the PyTorch, the Predictor
    and the by-hand ONNX code give the app's probability for the same photo (the by-hand code resizes as training
    did). The gradio_client block needs a running app: test_app's API tests call it so."""
    import re
    import shutil

    import huggingface_hub

    from dermo.config import RunConfig
    from dermo.inference import Predictor

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    RunConfig().override(backbone="test_efficientnet", img_size=64, tta=tta).save(model / "run_config.json")
    out = hub.push_model(model, REPO, onnx_dir=tiny_onnx, reports_dir=tiny_reports, dry_run_dir=tmp_path / "dry")
    card = (out / "README.md").read_text()
    assert f"{sum(p.numel() for p in load_model(str(model)).parameters()):,} parameters" in card
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 4 and "gradio_client" in blocks[-1]
    photo = sorted((tiny_data / "images").glob("*.jpg"))[0]
    shutil.copy(photo, tmp_path / "lesion.jpg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, **k: str(Path(repo) / name))
    want = Predictor(tiny_onnx).predict(photo)
    got = []
    for code in blocks[:3]:
        ns: dict = {}
        exec(compile(code.replace(f'"{REPO}"', repr(str(out))), "card", "exec"), ns)  # noqa: S102
        got.append(ns)
    if tta:  # the PyTorch block averages flips, as the card's figures do
        from dermo.evaluate import compute_logits
        from dermo.metrics import apply_temperature

        c = Predictor(tiny_onnx).config
        flip = apply_temperature(compute_logits(Predictor(tiny_onnx), [str(photo)], tta=True), c.temperature,
                                 c.logit_bias)[0]
        assert "flip(-1)" in blocks[0] and got[0]["p_malignant"] == pytest.approx(flip, abs=1e-5)
    else:
        assert "flip" not in blocks[0] and got[0]["p_malignant"] == pytest.approx(want.probability, abs=1e-5)
    assert "probability" in repr(got[1]["pred"].predict("lesion.jpg").to_dict())
    assert got[2]["p_malignant"] == pytest.approx(want.probability, abs=1e-5) and got[2]["band"] == want.band
    # a semi-transparent PNG: the by-hand code composites it on white, as the app does (it once took the raw RGB
    # under the alpha, and answered another probability)
    rgba = Image.open(photo).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(tmp_path / "lesion.png")
    ns = {}
    by_hand = blocks[2].replace(f'"{REPO}"', repr(str(out))).replace("lesion.jpg", "lesion.png")
    exec(compile(by_hand, "card", "exec"), ns)  # noqa: S102
    assert ns["p_malignant"] == pytest.approx(Predictor(tiny_onnx).predict(tmp_path / "lesion.png").probability,
                                              abs=1e-5)
    # what the blocks need is said, and the preprocessing is spelled out in full
    assert "git clone --branch v" in card and "pip install --no-deps -r requirements.txt" in card
    for needle in ("transparency composited on white", "aspect ratio is not kept", "bilinear", "4096"):
        assert needle in card, needle


# ------------------------------------------------------------------------ card facts a researcher checks by hand
def test_card_says_which_file_each_evaluation_ran(tiny_model, tiny_onnx, tiny_reports, tmp_path):
    """The headline names the file its figures are of: the served ONNX file (with its variant) when the evaluation
    records its sha256, the PyTorch weights when it records theirs (even where an ONNX file is pushed too), and
    neither when it records no sha256 (matched by path)."""
    reports = tmp_path / "reports"
    shutil.copytree(tiny_reports, reports)
    ev = reports / "evaluation"
    served = json.loads((ev / "tiny_test" / "metrics.json").read_text())
    for name, src in (("weights", {**served["source"], "sha256": sha256_file(tiny_model / "model.safetensors")}),
                      ("by_path", {k: v for k, v in {**served["source"], "model": str(tiny_model)}.items()
                                   if k != "sha256"})):
        (ev / name).mkdir()
        (ev / name / "metrics.json").write_text(json.dumps({**served, "source": src}))

    def card(evaluation, onnx=True):
        out = hub.push_model(tiny_model, REPO, onnx_dir=tiny_onnx if onnx else None, reports_dir=reports,
                             dry_run_dir=tmp_path / f"dry_{evaluation}_{onnx}", evaluations=[evaluation])
        return (out / "README.md").read_text()

    onnx_line = "These are the figures of the served file `onnx/model.onnx` (fp32), the one the app and `Predictor` run"
    weights_line = "These are the figures of the PyTorch weights (`model.safetensors`)."
    unknown_line = "Which of this repository's files it ran is not recorded in the evaluation."
    text = card("tiny_test")
    assert onnx_line in text and weights_line not in text
    text = card("weights")
    assert weights_line in text and "These are the figures of the served file" not in text
    text = card("by_path", onnx=False)
    assert unknown_line in text and weights_line not in text


def test_card_shows_benchmark_paths_as_repository_paths(tiny_model, tmp_path):
    """A report's absolute path inside this checkout is shown as the repository path it is (a card never shows a
    machine's checkout); a path outside it, and a relative one, are shown as they are."""
    from dermo.config import REPO_ROOT

    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "inference.json").write_text(json.dumps({"ort_fp32": {
        "latency_ms_p50": 4.2, "model": str(REPO_ROOT / "models" / "x.onnx"), "data": "/elsewhere/photos",
        "runs": "runs/a"}}))
    text = (hub.push_model(tiny_model, REPO, reports_dir=reports, dry_run_dir=tmp_path / "dry") / "README.md").read_text()
    assert "| ort_fp32.model | models/x.onnx |" in text
    assert "| ort_fp32.data | /elsewhere/photos |" in text and "| ort_fp32.runs | runs/a |" in text


def test_card_quotes_the_data_copys_hashes_from_facts_json(tiny_model, tmp_path):
    """"The copy used" quotes reports/facts.json's two hashes, each as what it is; without them (no facts.json, or
    only one of the two) it says they are not measured, never a half-filled line."""
    reports = tmp_path / "reports"
    reports.mkdir()

    def copy_line(n):
        text = (hub.push_model(tiny_model, REPO, reports_dir=reports, dry_run_dir=tmp_path / f"dry{n}")
                / "README.md").read_text()
        return next(x for x in text.splitlines() if x.startswith("**The copy used.**"))

    not_measured = "; its hashes: not measured yet (`python -m train.facts`)."
    line = copy_line(0)
    assert line.endswith(not_measured) and "bounding-box-detection-ham1000" in line
    (reports / "facts.json").write_text(json.dumps({"dataset": {"sha256_metadata_csv": "a" * 64}}))
    assert copy_line(1).endswith(not_measured)
    (reports / "facts.json").write_text(json.dumps({"dataset": {
        "sha256_metadata_csv": "a" * 64, "sha256_images_concatenated_in_file_name_order": "b" * 64}}))
    line = copy_line(2)
    assert f"`metadata.csv` sha256 `{'a' * 64}`" in line
    assert f"its images' bytes concatenated in file-name order sha256 `{'b' * 64}`" in line
    assert "not measured" not in line


def test_card_install_line_names_the_release_and_what_each_block_needs(tiny_model, tiny_onnx, tmp_path):
    """The install line clones this model's release tag (its config's version); it says which blocks need the
    package, and names the by-hand ONNX block's own needs only where the repository has an ONNX file."""
    from dermo.config import SOURCE_URL

    version = json.loads((tiny_model / "config.json").read_text())["version"]
    with_onnx = (hub.push_model(tiny_model, REPO, onnx_dir=tiny_onnx, reports_dir=tmp_path / "none",
                                dry_run_dir=tmp_path / "dry") / "README.md").read_text()
    weights = (hub.push_model(tiny_model, REPO, reports_dir=tmp_path / "none", dry_run_dir=tmp_path / "dry2")
               / "README.md").read_text()
    for text in (with_onnx, weights):
        assert f"git clone --branch v{version} {SOURCE_URL} && cd dermohelper" in text
        assert "The API block needs only `gradio_client`." in text
    assert "**Install.** The PyTorch and `Predictor` blocks need the `dermohelper` package" in with_onnx
    assert "The by-hand ONNX block needs only `numpy`, `onnxruntime`, `pillow` and `huggingface_hub`." in with_onnx
    assert "**Install.** The PyTorch block needs the `dermohelper` package" in weights
    assert "by-hand ONNX block" not in weights


def test_the_split_shipped_is_the_manifest_given_and_a_pull_fetches_it(tiny_model, tiny_onnx, tiny_manifest,
                                                                        tmp_path, monkeypatch):
    """The model folder ships the manifest it was given (its bytes and, in the card, its sha256); a real pull
    (snapshot_download with PULL_PATTERNS) fetches every file a push uploads, the split included, so the pulled copy
    passes its own SHA256SUMS; a push made without a split removes an earlier push's."""
    import fnmatch
    import functools

    import huggingface_hub
    from huggingface_hub import HfApi

    out = hub.build_model_folder(tiny_model, tmp_path / "folder", REPO, tiny_onnx, reports_dir=tmp_path / "none",
                                 manifest=tiny_manifest)
    assert (out / "ham10000_split.csv").read_bytes() == tiny_manifest.read_bytes()
    assert f"`ham10000_split.csv` (sha256 `{sha256_file(tiny_manifest)}`)" in (out / "README.md").read_text()
    # the network boundary: snapshot_download fetches the repository's files that match allow_patterns
    fetched = {}

    def snapshot_download(repo, revision=None, cache_dir=None, allow_patterns=None, token=None, **kw):
        snap = tmp_path / "snapshot"
        for name in listing(out):
            if any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                (snap / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(out / name, snap / name)
        fetched.update(names=listing(snap))
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert hub.pull_model(REPO) == tmp_path / "snapshot" / "onnx"
    assert fetched["names"] == listing(out) and "ham10000_split.csv" in fetched["names"]
    # a push without a split (a checkout without the manifest): the repository's old split goes in the same commit
    rec = Recorder(existing=["README.md", "ham10000_split.csv", "notes.md"])
    rec.install(monkeypatch, HfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_from_env")
    monkeypatch.setattr(hub, "build_model_folder",
                        functools.partial(hub.build_model_folder, manifest=tmp_path / "no_manifest.csv"))
    hub.push_model(tiny_model, REPO, reports_dir=tmp_path / "none")
    assert "ham10000_split.csv" not in rec.uploaded and rec.deleted == ["ham10000_split.csv"]
    # and its card does not claim a split file it does not hold
    card = rec.uploaded["README.md"].decode()
    assert "shipped in this repository" not in card and "no split manifest was found" in card


def test_teacher_card_points_to_the_student_and_each_members_repository(tiny_model, tmp_path, monkeypatch):
    """A teacher's "Not for triage" names the student (not the teacher); --member-repos is one id per member (not
    fewer, not more), ids as the CLI splits them ("a, b") are trimmed, and a real push's card has the links too."""
    from huggingface_hub import HfApi

    from dermo.config import RunConfig

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    student = tmp_path / "student"
    shutil.copytree(tiny_model, student)
    cfg = json.loads((student / "config.json").read_text())
    (student / "config.json").write_text(json.dumps({**cfg, "name": "dermohelper-student"}))
    RunConfig().override(backbone="test_efficientnet", img_size=64, teacher=f"{tiny_model},{other}").save(
        student / "run_config.json")
    link = "(`" + str(other) + "`; on the Hub: [`dermotest/member-2`](https://huggingface.co/dermotest/member-2))"
    text = (hub.push_model(tiny_model, REPO, reports_dir=tmp_path / "none", dry_run_dir=tmp_path / "dry",
                           teacher_of=student, member_repos=[f" {REPO}", " dermotest/member-2 "]) / "README.md"
            ).read_text()
    assert link in text
    assert "People deciding about a lesion should use the student `dermohelper-student`" in text
    with pytest.raises(ValueError, match="names 3 repositories for the 2 members"):
        hub.push_model(tiny_model, REPO, dry_run_dir=tmp_path / "dry2", teacher_of=student,
                       member_repos=[REPO, "dermotest/member-2", "dermotest/member-3"])
    rec = Recorder()
    rec.install(monkeypatch, HfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_from_env")
    hub.push_model(tiny_model, REPO, reports_dir=tmp_path / "none", teacher_of=student,
                   member_repos=[REPO, "dermotest/member-2"])
    assert link in rec.uploaded["README.md"].decode()
