"""train.seeds on the committed reports of two real seeds: paired differences, the summary, and refused inputs."""
from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pandas as pd
import pytest

from dermo import metrics as M
from train import seeds as S

ROOT = Path(__file__).resolve().parents[1]
SEED0, SEED1 = ROOT / "reports" / "cpu_ensemble", ROOT / "reports" / "cpu_seed1"


def _auroc(folder: Path, model: str) -> float:
    df = pd.read_csv(folder / "evaluation" / f"{model}-test" / "predictions.csv")
    return M.auroc(df["label"], df["probability"])


def test_seeds_table_from_two_committed_seeds(tmp_path):
    out = tmp_path / "seeds"
    assert S.main([str(SEED0), str(SEED1), "--n_boot", "200", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert [r["seed"] for r in res["seeds"]] == [0, 1]
    for r, folder in zip(res["seeds"], (SEED0, SEED1)):
        training = json.loads((folder / "training.json").read_text())["models"]
        d = r["test_difference"]
        assert d["difference"] == pytest.approx(_auroc(folder, "magkd") - _auroc(folder, "baseline"))
        assert d["ci"][0] <= d["difference"] <= d["ci"][1]
        assert r["a"]["test_auroc"] == pytest.approx(_auroc(folder, "magkd"))
        assert r["validation_difference"] == pytest.approx(
            training["magkd"]["validation"]["auroc"] - training["baseline"]["validation"]["auroc"])
    s = res["summary"]
    diffs = [r["test_difference"]["difference"] for r in res["seeds"]]
    assert s["test_difference"]["mean"] == pytest.approx(statistics.fmean(diffs))
    assert s["test_difference"]["sd"] == pytest.approx(statistics.stdev(diffs))
    md = out.with_suffix(".md").read_text()
    assert "paired" in md and "triage aid, not a diagnosis" in md and "reports/cpu_seed1" in md


def test_seeds_refuses_a_repeated_seed_and_mismatched_predictions(tmp_path):
    with pytest.raises(SystemExit, match="repeat a seed"):
        S.main([str(SEED1), str(SEED1), "--n_boot", "50", "--out", str(tmp_path / "x")])
    broken = tmp_path / "broken"
    shutil.copytree(SEED1, broken, ignore=shutil.ignore_patterns("*.png"))
    pred = broken / "evaluation" / "magkd-test" / "predictions.csv"
    pd.read_csv(pred).iloc[:-5].to_csv(pred, index=False)
    with pytest.raises(ValueError, match="same test images"):
        S.main([str(broken), "--n_boot", "50", "--out", str(tmp_path / "y")])
    with pytest.raises(KeyError, match="no model 'student'"):
        S.main([str(SEED1), "--a", "student", "--n_boot", "50", "--out", str(tmp_path / "z")])


def test_recorded_command_writes_the_same_report(tmp_path):
    """The Command line a report prints (note and title included) writes that report again, byte for byte."""
    import shlex

    out = tmp_path / "first"
    assert S.main([str(SEED0), "--n_boot", "50", "--note", "a note's words", "--title", "A title", "--out", str(out)]) == 0
    first = out.with_suffix(".md").read_text(), out.with_suffix(".json").read_text()
    cmd = json.loads(first[1])["command"]
    argv = shlex.split(cmd)
    assert argv[:3] == ["python", "-m", "train.seeds"] and "--note" in argv and "--title" in argv
    assert S.main(argv[3:]) == 0  # same --out: the report is written over itself
    assert (out.with_suffix(".md").read_text(), out.with_suffix(".json").read_text()) == first
    assert first[0].startswith("# A title") and "a note's words" in first[0]
