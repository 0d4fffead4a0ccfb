"""train.link_runs: committed weights folders become the runs/ layout the reports' Regenerate commands name."""
from pathlib import Path

from train.link_runs import link_runs

ROOT = Path(__file__).resolve().parent.parent


def _weights(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w")
    (folder / "config.json").write_text("{}")


def test_links_weights_and_the_scripts_run_links(tmp_path):
    models, runs = tmp_path / "models", tmp_path / "runs"
    for run in ("gpu/teacher", "gpu/baseline", "gpu/magkd_ensemble", "cpu_long/baseline"):
        _weights(models / run)
    (models / "cpu_seed1" / "magkd").mkdir(parents=True)  # metrics only, no weights
    res = link_runs(models, runs)
    assert (runs / "gpu/teacher/best/model.safetensors").read_bytes() == b"w"
    assert (runs / "gpu_ens/magkd/best").resolve() == (models / "gpu/magkd_ensemble").resolve()
    assert (runs / "gpu_ens/baseline/best").resolve() == (models / "gpu/baseline").resolve()
    assert (runs / "cpu_ensemble/baseline/best").resolve() == (models / "cpu_long/baseline").resolve()
    assert not (runs / "cpu_dino/teacher").exists() and (runs / "cpu_dino/baseline/best").is_dir()  # no cpu_long/teacher
    assert res["no_weights"] == [str(runs / "cpu_seed1/magkd")]
    assert link_runs(models, runs)["linked"] == []  # a second run changes nothing
    # relative links: the tree still resolves when moved (a clone elsewhere)
    moved = tmp_path / "moved"
    moved.mkdir()
    models.rename(moved / "models")
    runs.rename(moved / "runs")
    assert (moved / "runs/gpu_ens/magkd/best/model.safetensors").is_file()


def test_every_committed_weights_folder_is_linked(tmp_path):
    res = link_runs(ROOT / "models", tmp_path / "runs")
    assert len(res["linked"]) == len(list((ROOT / "models").glob("*/*/model.safetensors"))) + 5
    assert (tmp_path / "runs/gpu_ens/magkd/best/config.json").is_file()
