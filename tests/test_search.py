"""The MAG-KD hyper-parameter search end to end on tiny real data: trials, pruning, winner, retrain, report, resume."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from dermo import metrics as M
from dermo.config import ModelConfig
from dermo.models import create_model, load_model
from train import search as S

SIZE = 48


@pytest.fixture(autouse=True)
def one_thread():
    # On a shared 2-core machine, intra-op threads fight other processes for cores: one thread is ~20x faster here.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher") / "best"
    create_model(ModelConfig(backbone="test_efficientnet", img_size=SIZE)).save_pretrained(d)
    return d


def test_seed_grid_is_the_36_configurations():
    space = S.load_space(S.DEFAULT_SPACE)
    configs = S.expand_space(space["grid"])
    assert len(configs) == 36
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == 36
    assert {(c["alpha"], c["beta"], c["gamma"]) for c in configs} == {(0.5, 0.3, 0.2), (0.3, 0.4, 0.3)}
    assert {c["batch_size"] for c in configs} == {4, 8, 16}
    assert {c["lr"] for c in configs} == {1e-4, 5e-4, 1e-3}
    assert {tuple(c["class_weights"]) for c in configs} == {(1.0, 4.0), (1.0, 3.0)}
    assert S.halving_sizes(36, 3, 3) == [36, 12, 4]


@pytest.mark.parametrize("grid, match", [({"lrr": [1e-3]}, "unknown field"), ({"epochs": [1, 2]}, "cannot be searched"),
                                         ({"alpha,beta": [[0.5]]}, "list of 2"), ({"lr": []}, "non-empty")])
def test_bad_space_is_rejected(tmp_path, grid, match):
    p = tmp_path / "space.json"
    p.write_text(json.dumps({"grid": grid}))
    with pytest.raises(ValueError, match=match):
        S.load_space(p)


def test_search_end_to_end(tmp_path, tiny_data, tiny_manifest, teacher_dir):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"name": "tiny", "grid": {"lr": [1e-3, 3e-4], "batch_size": [4, 8]}}))
    out, report = tmp_path / "search", tmp_path / "reports" / "search"
    argv = ["--teacher", str(teacher_dir), "--space", str(space), "--rungs", "1,2", "--eta", "2",
            "--final-epochs", "1", "--out", str(out), "--report", str(report), "--n_boot", "20",
            "--backbone", "test_efficientnet", "--img_size", str(SIZE), "--pretrained", "false",
            "--batch_size", "8", "--mixed_precision", "no", "--num_workers", "1",
            "--data_dir", str(tiny_data), "--manifest", str(tiny_manifest), "--label", "test"]
    rep = S.main(argv)

    saved = json.loads((report.with_suffix(".json")).read_text())
    assert saved["status"] == "complete" and saved["n_configs"] == 4
    assert (report.with_suffix(".md")).read_text().count("| t00") == 4  # every trial in the table
    trials = {t["id"]: t for t in saved["trials"]}
    assert len(trials) == 4 and all(t["rungs"] for t in trials.values())
    reached = sorted(t["epochs_reached"] for t in trials.values())
    assert reached == [1, 1, 2, 2]  # two pruned after rung 1, two promoted
    pruned = [t for t in trials.values() if t["status"].startswith("pruned")]
    assert len(pruned) == 2 and all(len(t["rungs"]) == 1 for t in pruned)
    # every trial runs on the top rung's schedule (2 epochs), so promotion continues its learning-rate curve;
    # the winner's and the untuned retrain run their own (final-epochs) schedule
    for name in trials:
        assert json.loads((out / "trials" / name / "run_config.json").read_text())["train"]["schedule_epochs"] == 2
    assert json.loads((out / "winner" / "run_config.json").read_text())["train"]["schedule_epochs"] == 0
    for name, t in trials.items():
        for r in t["rungs"]:
            v = r["validation"]
            assert r["wall_s"] > 0
            assert v["score"] == pytest.approx(M.selection_score(v["sensitivity"], v["accuracy"], v["specificity"]))
        # a trial's result is its best epoch so far (first highest validation AUROC), carried over the resume
        aurocs = [h["val_auroc"] for h in json.loads((out / "trials" / name / "history.json").read_text())]
        assert len(aurocs) == t["epochs_reached"] and t["rungs"][-1]["validation"]["auroc"] == max(aurocs)
    # promotion keeps the best half of rung 1, ranked by score then AUROC
    rung1 = sorted(trials, key=lambda n: (-trials[n]["rungs"][0]["validation"]["score"],
                                          -trials[n]["rungs"][0]["validation"]["auroc"], n))
    assert {n for n in trials if trials[n]["epochs_reached"] == 2} == set(rung1[:2])
    # the promoted ones continued from their rung-1 checkpoint
    assert all(t["rungs"][1]["resumed"] for t in trials.values() if t["epochs_reached"] == 2)
    winner = saved["winner"]["id"]
    assert trials[winner]["status"] == "winner" and trials[winner]["epochs_reached"] == 2

    final = saved["final"]
    n_test = saved["data"]["test"]["n"]
    for key in ("winner", "untuned"):
        assert final[key]["test"]["n"] == n_test and "sensitivity" in final[key]["test"]
        assert final[key]["validation"]["score"] == pytest.approx(M.selection_score(
            final[key]["validation"]["sensitivity"], final[key]["validation"]["accuracy"],
            final[key]["validation"]["specificity"]))
    assert final["winner"]["overrides"] == trials[winner]["overrides"]
    # the winner ships only if it beats the untuned student on validation score (strictly; a tie keeps untuned)
    beats = final["winner"]["validation"]["score"] > final["untuned"]["validation"]["score"]
    assert final["winner_beats_untuned_on_validation"] is beats
    assert final["ship"] == ("winner" if beats else "untuned")
    # the teacher ran once for the whole search; every trial distilled from its saved outputs
    blob = torch.load(out / "teacher_outputs.pt", weights_only=False)
    assert blob["key"]["teacher"] == str(teacher_dir) and len(blob["key"]["image_ids"]) == saved["data"]["train"]["n"]
    assert blob["logits"].shape == (saved["data"]["train"]["n"], 2) and len(blob["attention"]) == len(blob["logits"])
    assert saved["timing"]["teacher_outputs_s"] > 0
    assert saved["base_config"]["distill"]["teacher_cache"] == str(out / "teacher_outputs.pt")
    hist = json.loads((out / "trials" / winner / "history.json").read_text())
    assert all(h["train_kd"] > 0 and h["train_att"] > 0 for h in hist)
    model = load_model(final["winner"]["model_dir"])  # strict round trip of the winner's folder
    assert model.config.img_size == SIZE and str(out / "winner") in final["winner"]["model_dir"]
    assert rep["timing"]["trial_epochs"] == 4 * 1 + 2 * 1

    # Every finished job was journaled as it finished; the same command resumes without retraining anything.
    journal = (out / "trials.jsonl").read_text().splitlines()
    assert len(journal) == 4 + 2 + 2
    names = [json.loads(line)["name"] for line in journal]
    assert names.index("untuned") < 5 and names.count("untuned") == 1  # trained beside the first rung, once
    S.main(argv)
    assert (out / "trials.jsonl").read_text().splitlines() == journal
    again = json.loads((report.with_suffix(".json")).read_text())
    assert again["winner"]["id"] == winner and len(again["trials"]) == 4


def test_different_search_in_same_out_is_refused(tmp_path, tiny_data, tiny_manifest, teacher_dir):
    base = S.RunConfig().override(teacher=str(teacher_dir), data_dir=str(tiny_data), manifest=str(tiny_manifest),
                                  img_size=2 * SIZE)
    with pytest.raises(ValueError, match=f"takes {SIZE} px images, the search {2 * SIZE} px"):
        S.search(base, {"name": "x", "grid": {"lr": [1e-3]}}, [1], 2, tmp_path / "s", untuned_dir=str(teacher_dir),
                 data={})
    out = tmp_path / "search"
    out.mkdir()
    (out / "search_state.json").write_text(json.dumps({"space": {"lr": [1.0]}}))
    base = S.RunConfig().override(teacher=str(teacher_dir), data_dir=str(tiny_data), manifest=str(tiny_manifest))
    with pytest.raises(ValueError, match="different search"):
        S.search(base, {"name": "x", "grid": {"lr": [1e-3]}}, [1], 2, out, data={})


def test_concurrent_trials_in_worker_processes(tmp_path, tiny_data, tiny_manifest, teacher_dir):
    """--concurrency 2: trials run in two spawned worker processes that load the once-decoded data; the concurrency
    benchmark's pool, warm, is the search's."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"name": "pair", "grid": {"lr": [1e-3, 3e-4]}}))
    out = tmp_path / "search"
    rep = S.main(["--teacher", str(teacher_dir), "--space", str(space), "--rungs", "1", "--eta", "2",
                  "--concurrency", "2", "--out", str(out), "--report", str(tmp_path / "r"), "--n_boot", "0",
                  "--bench-concurrency", "1,2", "--bench-steps", "1",
                  "--backbone", "test_efficientnet", "--img_size", str(SIZE), "--pretrained", "false",
                  "--batch_size", "8", "--mixed_precision", "no", "--num_workers", "1",
                  "--data_dir", str(tiny_data), "--manifest", str(tiny_manifest), "--untuned", str(teacher_dir)])
    recs = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert [r["status"] for r in recs] == ["ok"] * 2  # the two trials: no retrain (below), no untuned run (given)
    assert all(r["pid"] != os.getpid() for r in recs)  # trained in the workers
    bench = rep["concurrency_benchmark"]
    assert [r["concurrency"] for r in bench["levels"]] == [1, 2] and bench["pool_kept_for_search"]
    assert {r["pid"] for r in recs} <= set(bench["worker_pids"])  # the benchmark's workers, not a new cold pool
    assert "worker processes, warm, then ran the search" in (tmp_path / "r.md").read_text()
    # the winner reached the full budget (final epochs = the last rung) at the top rung, on that budget's schedule:
    # its trial's model is the final one, as a retrain would repeat it bit for bit
    w = rep["winner"]["id"]
    assert rep["final"]["winner"]["model_dir"] == str(out / "winner" / "best")  # a copy, where a retrain would be
    trial, final = out / "trials" / w / "best", out / "winner" / "best"
    assert (final / "model.safetensors").read_bytes() == (trial / "model.safetensors").read_bytes()
    assert [r["name"] for r in recs] == [r["name"] for r in recs if r["name"].startswith("t")]  # nothing retrained
    assert "not retrained" in rep["final"]["winner"]["note"] and rep["final"]["winner"]["test"]["n"] > 0
    assert "not retrained: a retrain would be the same run again" in (tmp_path / "r.md").read_text()
    assert not (out / "cache").exists()  # the shared decoded copy is removed afterwards
    assert rep["final"]["untuned"]["model_dir"] == str(teacher_dir)  # --untuned: an existing model, not retrained
    assert {t["status"] for t in rep["trials"]} == {"winner", "finalist"}


def test_a_final_run_of_another_length_starts_from_scratch(tmp_path, tiny_data, tiny_manifest, teacher_dir):
    """The same search again with other --final-epochs: the winner's earlier final run is on another cosine schedule,
    so it is retrained from scratch, not continued (continuing it had decayed the rate to 0, then raised it again)."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"name": "pair", "grid": {"lr": [1e-3, 3e-4]}}))
    out = tmp_path / "search"

    def go(final_epochs: int) -> dict:
        return S.main(["--teacher", str(teacher_dir), "--space", str(space), "--rungs", "1", "--eta", "2",
                       "--final-epochs", str(final_epochs), "--out", str(out), "--report", str(tmp_path / "r"),
                       "--n_boot", "0", "--backbone", "test_efficientnet", "--img_size", str(SIZE),
                       "--pretrained", "false", "--batch_size", "8", "--mixed_precision", "no", "--num_workers", "1",
                       "--data_dir", str(tiny_data), "--manifest", str(tiny_manifest), "--untuned", str(teacher_dir)])

    go(2)
    go(3)
    recs = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    finals = [r for r in recs if r["name"] == "winner"]
    assert [(r["epochs"], r["resumed"]) for r in finals] == [(2, False), (3, False)]
    lr = [h["lr_end"] for h in json.loads((out / "winner" / "history.json").read_text())]
    assert len(lr) == 3 and lr[0] > lr[1] > lr[2]  # one cosine curve, 3 epochs long


CRASHING_WORKER = """
import os
import dermo.training as DT


def fake_run(cfg, data=None):  # stands in for training in the search's worker processes
    if cfg.train.lr == 0.5:
        os._exit(1)  # a hard death: segfault, out-of-memory kill, fatal CUDA error
    return {"best_epoch": 0, "train_seconds": 0.1, "train_img_per_s": 1.0, "model_dir": cfg.train.output_dir,
            "validation": {"score": cfg.train.lr, "auroc": 0.5}}


DT.run = fake_run
"""


def test_a_dying_worker_fails_its_own_job_not_the_search(tmp_path, monkeypatch):
    """A job that kills its worker process breaks the whole pool: the other jobs go on in a new pool, the search
    does not end, and only the job that was in every breakdown is recorded as failed."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CRASHING_WORKER)  # loaded by every spawned worker at start
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), root]))
    x = torch.zeros(4, 8, 8, 3, dtype=torch.uint8)
    data = {"train": (x, [0, 1, 0, 1]), "validation": (x, [0, 1, 0, 1])}
    runner = S.Runner(data, 2, tmp_path / "trials.jsonl", tmp_path / "cache")
    base = S.RunConfig()
    lrs = [0.5, 1e-3, 3e-4, 1e-4, 2e-4]
    jobs = [S.make_job(base, f"t{i}", "trial", {"lr": lr}, 1, tmp_path / f"t{i}") for i, lr in enumerate(lrs)]
    try:
        recs = runner.run_jobs(jobs)
    finally:
        runner.close()
    assert recs["t0"]["status"] == "failed" and "worker process died" in recs["t0"]["error"]
    assert all(recs[f"t{i}"]["status"] == "ok" for i in range(1, len(lrs))), {k: (v["status"], v.get("error")) for k, v in sorted(recs.items())}


def test_a_suspect_job_never_shares_the_pool_with_another():
    """After a breakdown the jobs that were in it are suspects: one at a time in the pool, beside jobs that were not,
    so the killer cannot take the same innocent job down with it until both are recorded as failed."""
    job = lambda n: {"name": n}  # noqa: E731
    deaths = {"killer": 1, "innocent": 1}
    queue = [job("killer"), job("innocent"), job("fresh")]
    assert S._next_job(queue, {}, deaths)["name"] == "killer"  # an empty pool takes the first, suspect or not
    pending = {"f1": job("killer")}
    assert S._next_job(queue, pending, deaths)["name"] == "fresh"  # the other suspect waits
    assert S._next_job(queue, pending, deaths) is None and [j["name"] for j in queue] == ["innocent"]
    assert S._next_job(queue, {"f2": job("fresh")}, deaths)["name"] == "innocent" and queue == []


def test_a_rung_cut_by_the_deadline_is_not_ranked(tmp_path, monkeypatch):
    """The deadline lets only the first-scheduled trials (the smallest batches) run a rung: the winner is still chosen
    at the last rung every surviving trial finished, not among the ones that happened to run."""
    import numpy as np

    from dermo.config import RunConfig

    calls: list[list[str]] = []

    class CutRunner:  # the Runner's interface; rung 2 (the second call) is cut after the two costliest jobs
        def __init__(self, data, concurrency, journal, cache_dir, on_record=None):
            self.on_record, self.concurrency = on_record, concurrency

        def run_jobs(self, jobs, deadline=None, stop_at=None):
            todo = sorted(jobs, key=lambda j: -j["cost"])
            calls.append([j["name"] for j in todo])
            if len(calls) == 2:
                todo = todo[:2]
            out = {}
            for j in todo:
                bs, lr = j["cfg"]["train"]["batch_size"], j["cfg"]["train"]["lr"]
                # rung 1: (16, 1e-3) leads, (4, 1e-3) and (8, 1e-3) are promoted with it; rung 2: those two,
                # scheduled first, score above the leader's rung-1 score
                score = 0.5 if lr != 1e-3 else {4: 0.65, 8: 0.64, 16: 0.70, 32: 0.5}[bs] + 0.2 * (len(calls) == 2)
                rec = {"name": j["name"], "kind": j["kind"], "rung": j.get("rung"), "status": "ok", "wall_s": 1.0,
                       "epochs": j["cfg"]["train"]["epochs"], "span": j["span"], "overrides": j["overrides"],
                       "model_dir": str(tmp_path / "m" / j["name"]), "validation": {"score": score, "auroc": score}}
                out[j["name"]] = rec
                if self.on_record:
                    self.on_record(rec)
            return out

        def close(self):
            pass

    monkeypatch.setattr(S, "Runner", CutRunner)
    monkeypatch.setattr(S, "evaluate_model", lambda d, data, n_boot=0, tta=False: {"validation": {"score": 0.5}})
    import dermo.training as T

    monkeypatch.setattr(T, "write_teacher_cache", lambda cfg: None)
    base = RunConfig().override(teacher=str(tmp_path / "teacher"), batch_size=32)
    space = {"name": "cut", "grid": {"batch_size": [4, 8, 16], "lr": [1e-3, 1e-4]}}
    x = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    data = {"train": (x, np.array([0, 1])), "validation": (x, np.array([0, 1])), "train_ids": ["a", "b"]}
    rep = S.search(base, space, [1, 2], 2, tmp_path / "s", final_epochs=2, data=data, report=tmp_path / "r")
    assert "untuned" in calls[0]  # the untuned student trains beside the first rung
    by_bs = {t["id"]: t["overrides"]["batch_size"] for t in rep["trials"]}
    assert by_bs[rep["winner"]["id"]] == 16  # rung 1's leader, though it never ran the cut rung 2
    assert next(t for t in rep["trials"] if t["id"] == rep["winner"]["id"])["epochs_reached"] == 1
    assert rep["winner"]["chosen_at_epochs"] == 1 and rep["cut_rung"] == {"rung": 1, "epochs": 2, "ran": 2, "of": 3}
    ran_cut = [t for t in rep["trials"] if t["epochs_reached"] == 2]
    assert len(ran_cut) == 2 and all(t["status"].startswith("finalist (ran 2 epochs before the deadline")
                                     for t in ran_cut)
    assert "winner" in calls[-1]  # not at the full budget: retrained for it
    assert "The deadline cut rung 1 (2 epochs): 2 of 3 trials ran it" in (tmp_path / "r.md").read_text()


def test_a_broken_cuda_context_ends_its_worker_an_oom_does_not(tmp_path, monkeypatch):
    """After an illegal address or a device-side assert the worker's CUDA context is unusable: the worker exits (the
    Runner requeues its job in a new pool) instead of failing every later job; out of memory is only that job's."""
    import dermo.training as T

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert S.sticky_cuda_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not S.sticky_cuda_error(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not S.sticky_cuda_error(ValueError("bad config"))
    exits = []
    monkeypatch.setattr(S.os, "_exit", lambda code: exits.append(code))
    job = S.make_job(S.RunConfig(), "t0", "trial", {"lr": 1e-3}, 1, tmp_path / "t0")
    for err, in_worker, expected in ((RuntimeError("CUDA error: device-side assert triggered"), True, [70]),
                                     (torch.cuda.OutOfMemoryError("CUDA out of memory"), True, []),
                                     (RuntimeError("CUDA error: device-side assert triggered"), False, [])):
        exits.clear()
        monkeypatch.setattr(T, "run", lambda cfg, data=None, err=err: (_ for _ in ()).throw(err))
        monkeypatch.setattr(S, "_WORKER_DATA", {} if in_worker else None)
        rec = S.execute(job, {})
        assert rec["status"] == "failed" and exits == expected, (err, in_worker)


SLOW_WORKER = """
import time
import dermo.training as DT


def fake_run(cfg, data=None):  # stands in for training in the search's worker processes
    if cfg.train.lr == 0.5:
        time.sleep(600)  # a trial that would run far past the call's limit
    return {"best_epoch": 0, "train_seconds": 0.1, "train_img_per_s": 1.0, "model_dir": cfg.train.output_dir,
            "validation": {"score": cfg.train.lr, "auroc": 0.5}}


DT.run = fake_run
"""


def test_a_job_running_at_the_hard_limit_is_stopped(tmp_path, monkeypatch):
    """stop_at: the Runner hands control back at the hard limit even with a job still running (its worker is
    killed, the job gets no record), and a new pool serves the next call."""
    import time

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_WORKER)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), root]))
    x = torch.zeros(4, 8, 8, 3, dtype=torch.uint8)
    data = {"train": (x, [0, 1, 0, 1]), "validation": (x, [0, 1, 0, 1])}
    runner = S.Runner(data, 2, tmp_path / "trials.jsonl", tmp_path / "cache")
    base = S.RunConfig()
    jobs = [S.make_job(base, f"t{i}", "trial", {"lr": lr}, 1, tmp_path / f"t{i}") for i, lr in enumerate([0.5, 1e-3])]
    try:
        t0 = time.perf_counter()
        recs = runner.run_jobs(jobs, stop_at=t0 + 20)
        took = time.perf_counter() - t0
        old_pids = {recs["t1"]["pid"]} if "t1" in recs else set()
        again = runner.run_jobs([S.make_job(base, "t2", "trial", {"lr": 2e-3}, 1, tmp_path / "t2")])
    finally:
        runner.close()
    assert "t0" not in recs and 19 < took < 45, (recs, took)
    assert all(json.loads(line)["name"] != "t0" for line in (tmp_path / "trials.jsonl").read_text().splitlines())
    assert again["t2"]["status"] == "ok" and again["t2"]["pid"] not in old_pids  # a new pool


class FinalRunner:
    """The Runner's interface: every trial scores by its learning rate and takes ``wall_s`` seconds; the final
    winner job does what ``winner`` says ("ok", "failed" or "stopped": no record)."""
    winner = "ok"
    wall_s = 1.0
    calls: list = []

    def __init__(self, data, concurrency, journal, cache_dir, on_record=None):
        self.on_record, self.concurrency, self.root = on_record, concurrency, Path(cache_dir).parent

    def run_jobs(self, jobs, deadline=None, stop_at=None):
        FinalRunner.calls.append((sorted(j["name"] for j in jobs), stop_at))
        out = {}
        for j in jobs:
            if j["name"] == "winner" and self.winner == "stopped":
                continue
            d = Path(j["cfg"]["train"]["output_dir"]) / "best"
            d.mkdir(parents=True, exist_ok=True)
            (d / "model.safetensors").write_text(j["name"])
            rec = {"name": j["name"], "kind": j["kind"], "rung": j.get("rung"), "status": "ok", "wall_s": self.wall_s,
                   "epochs": j["cfg"]["train"]["epochs"], "span": j["span"], "overrides": j["overrides"],
                   "model_dir": str(d), "validation": {"score": j["cfg"]["train"]["lr"], "auroc": 0.5}}
            if j["name"] == "winner" and self.winner == "failed":
                rec = {**rec, "status": "failed", "error": "RuntimeError: boom"}
                rec.pop("model_dir")
            out[j["name"]] = rec
            if self.on_record:
                self.on_record(rec)
        return out

    def close(self):
        pass


def _final_search(tmp_path, monkeypatch, winner="ok", wall_s=1.0, time_limit_s=0.0, evaluate=None):
    import numpy as np

    import dermo.training as T
    from dermo.config import RunConfig

    monkeypatch.setattr(FinalRunner, "winner", winner)
    monkeypatch.setattr(FinalRunner, "wall_s", wall_s)
    monkeypatch.setattr(FinalRunner, "calls", [])
    monkeypatch.setattr(S, "Runner", FinalRunner)
    monkeypatch.setattr(S, "evaluate_model", evaluate or (
        lambda d, data, n_boot=0, tta=False: {"model_dir": str(d), "validation": {"score": 0.5}}))
    monkeypatch.setattr(T, "write_teacher_cache", lambda cfg: None)
    base = RunConfig().override(teacher=str(tmp_path / "teacher"))
    x = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    data = {"train": (x, np.array([0, 1])), "validation": (x, np.array([0, 1])), "train_ids": ["a", "b"]}
    space = {"name": "f", "grid": {"lr": [1e-3, 2e-3]}}
    return S.search(base, space, [1], 2, tmp_path / "s", final_epochs=3, data=data, report=tmp_path / "r",
                    time_limit_s=time_limit_s)


@pytest.mark.parametrize("winner, why", [("failed", "the retrain failed (RuntimeError: boom)"),
                                         ("stopped", "the retrain was stopped at the time limit")])
def test_a_winner_whose_retrain_did_not_happen_is_its_trial_model(tmp_path, monkeypatch, winner, why):
    rep = _final_search(tmp_path, monkeypatch, winner=winner, time_limit_s=3600)
    w = rep["final"]["winner"]
    assert rep["winner"]["id"] == "t001" and why in w["note"] and "1 epochs, not the final budget's 3" in w["note"]
    assert (tmp_path / "s" / "winner" / "best" / "model.safetensors").read_text() == "t001"  # the trial's model
    assert w["validation"] and rep["final"]["ship"] in ("winner", "untuned") and rep["status"] == "complete"
    assert all(stop is not None for _, stop in FinalRunner.calls)  # every call is bounded by the time limit


def test_a_retrain_that_cannot_fit_the_time_limit_is_not_started(tmp_path, monkeypatch):
    rep = _final_search(tmp_path, monkeypatch, wall_s=1000.0, time_limit_s=600)  # 3 epochs ~ 3000 s > 570 s left
    assert all("winner" not in names for names, _ in FinalRunner.calls)
    w = rep["final"]["winner"]
    assert "not retrained: the time limit left" in w["note"] and w["validation"]
    assert "1 epochs:" in (tmp_path / "r.md").read_text()  # the table heading says what the model had


def test_without_a_time_limit_the_winner_is_retrained(tmp_path, monkeypatch):
    rep = _final_search(tmp_path, monkeypatch, wall_s=1000.0)
    assert any("winner" in names for names, _ in FinalRunner.calls)
    assert "note" not in rep["final"]["winner"] and rep["final"]["winner"]["epochs"] == 3


def test_a_model_that_cannot_be_evaluated_leaves_the_report_complete(tmp_path, monkeypatch):
    def evaluate(d, data, n_boot=0, tta=False):
        if "untuned" in str(d):
            raise RuntimeError("CUDA out of memory")
        return {"model_dir": str(d), "validation": {"score": 0.5}}

    rep = _final_search(tmp_path, monkeypatch, evaluate=evaluate)
    assert rep["status"] == "complete" and rep["final"]["winner"]["validation"]
    assert "evaluation failed: RuntimeError: CUDA out of memory" in rep["final"]["untuned"]["error"]
    assert "ship" not in rep["final"]


def _plain_job(name: str) -> dict:
    return {"name": name, "kind": "trial", "rung": 0, "cfg": {"train": {"epochs": 1}}, "overrides": {"n": name},
            "cost": 1.0}


def test_no_job_starts_after_the_hard_limit(tmp_path, monkeypatch):
    """stop_at also keeps jobs from starting (in-process, where a running one cannot be stopped, that is all it
    does): with the limit passed nothing runs and nothing is recorded; before it, jobs run."""
    import time

    ran = []
    monkeypatch.setattr(S, "execute", lambda job, data: ran.append(job["name"]) or {
        "name": job["name"], "kind": job["kind"], "epochs": 1, "overrides": job["overrides"], "status": "ok"})
    x = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    runner = S.Runner({"train": (x, [0, 1]), "validation": (x, [0, 1])}, 1, tmp_path / "trials.jsonl",
                      tmp_path / "cache")
    assert runner.run_jobs([_plain_job("late")], stop_at=time.perf_counter() - 1) == {} and ran == []
    assert not (tmp_path / "trials.jsonl").exists()
    assert runner.run_jobs([_plain_job("early")], stop_at=time.perf_counter() + 3600)["early"]["status"] == "ok"
    assert ran == ["early"]


def test_a_pool_breakdown_is_retried_one_suspect_at_a_time(tmp_path, monkeypatch):
    """run_jobs itself (not only _next_job) keeps the suspects of a breakdown apart: the pool never holds two of them
    at once, the job that kills the pool is failed after MAX_DEATHS breakdowns, and every other job, also the one
    that died beside it the first time, ends ok. A fake pool: waiting on it "runs" the jobs in it, and one with the
    killer in it breaks down, taking every job in it along."""
    from concurrent.futures import Future

    class FakePool:
        def __init__(self):
            self.jobs = {}

        def submit(self, fn, job):
            fut = Future()
            self.jobs[fut] = job
            return fut

        def shutdown(self, wait=True, cancel_futures=False):
            pass

    pools: list = []
    held: list = []  # the jobs in the pool at each wait

    def fake_wait(pending, timeout=None, return_when=None):
        futs = list(pending)
        names = [pending[f]["name"] for f in futs]
        held.append(names)
        if "killer" in names:
            for f in futs:
                f.set_exception(S.BrokenProcessPool("a worker died"))
            return set(futs), set()
        j = pending[futs[0]]
        futs[0].set_result({"name": j["name"], "kind": "trial", "epochs": 1, "overrides": j["overrides"],
                            "status": "ok"})
        return {futs[0]}, set(futs[1:])

    monkeypatch.setattr(S, "wait", fake_wait)
    picks = []
    next_job = S._next_job

    def counted(queue, pending, deaths):  # a loop that keeps asking while nothing may start fails, not hangs
        picks.append(1)
        assert len(picks) < 100, "run_jobs keeps asking for a job while none may start"
        return next_job(queue, pending, deaths)

    monkeypatch.setattr(S, "_next_job", counted)
    x = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    runner = S.Runner({"train": (x, [0, 1]), "validation": (x, [0, 1])}, 1, tmp_path / "trials.jsonl",
                      tmp_path / "cache")
    runner.concurrency = 2
    runner._new_pool = lambda: pools.append(FakePool()) or pools[-1]
    runner.pool = runner._new_pool()
    recs = runner.run_jobs([_plain_job(n) for n in ("killer", "innocent", "a", "b")])
    assert recs["killer"]["status"] == "failed" and "worker process died" in recs["killer"]["error"]
    assert all(recs[n]["status"] == "ok" for n in ("innocent", "a", "b")), recs
    assert held[0] == ["killer", "innocent"]  # the first breakdown: both are suspects from now on
    suspects: set = set()
    for names in held:
        assert len(suspects & set(names)) <= 1, held  # never two suspects side by side
        if "killer" in names:
            suspects |= set(names)
    assert sum("killer" in names for names in held) == S.MAX_DEATHS and len(pools) == S.MAX_DEATHS + 1


def test_the_hard_limit_kills_the_running_workers(tmp_path, monkeypatch):
    """stop_at: the worker processes still running a job at the hard limit are killed, not left running (a trial of
    the old pool would go on using the GPU beside the next one, and keep the interpreter from exiting)."""
    import time

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_WORKER)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), root]))
    x = torch.zeros(4, 8, 8, 3, dtype=torch.uint8)
    data = {"train": (x, [0, 1, 0, 1]), "validation": (x, [0, 1, 0, 1])}
    import multiprocessing as mp

    before = set(mp.active_children())
    runner = S.Runner(data, 2, tmp_path / "trials.jsonl", tmp_path / "cache")
    old = runner.pool
    job = S.make_job(S.RunConfig(), "slow", "trial", {"lr": 0.5}, 1, tmp_path / "slow")
    try:
        t0 = time.perf_counter()
        recs = runner.run_jobs([job], stop_at=t0 + 8)
        took = time.perf_counter() - t0
    finally:
        runner.close()
    assert recs == {} and took < 30 and runner.pool is not old, (recs, took)
    # the old pool's workers (its executor forgets them at shutdown): this process's children since the runner began
    deadline = time.time() + 10
    while time.time() < deadline and set(mp.active_children()) - before:
        time.sleep(0.2)
    assert not set(mp.active_children()) - before, mp.active_children()


def test_the_cpu_count_is_this_process_share():
    """Worker threads are divided among the CPUs this process may use (its affinity mask: a container's share), not
    the host's os.cpu_count(); where there is no affinity mask, os.cpu_count()."""
    import unittest.mock as um

    with um.patch.object(S.os, "sched_getaffinity", lambda pid: {0, 1}, create=True), \
            um.patch.object(S.os, "cpu_count", lambda: 64):
        assert S._cpu_count() == 2
    with um.patch.object(S.os, "sched_getaffinity", um.Mock(side_effect=OSError), create=True), \
            um.patch.object(S.os, "cpu_count", lambda: 64):
        assert S._cpu_count() == 64
    with um.patch.object(S.os, "sched_getaffinity", um.Mock(side_effect=OSError), create=True), \
            um.patch.object(S.os, "cpu_count", lambda: None):
        assert S._cpu_count() == 1


def test_the_retrain_estimate_is_the_trials_time_per_epoch():
    """The retrain estimate: the winner's own ok rungs' wall time per epoch trained in each (a promoted rung trains
    only its extra epochs), times the final epochs; a failed rung does not count; no timed rung: no estimate."""
    trial = {"rungs": [{"status": "ok", "wall_s": 100.0, "epochs": 1, "epochs_this_job": 1},
                       {"status": "ok", "wall_s": 100.0, "epochs": 3, "epochs_this_job": 2},
                       {"status": "failed", "wall_s": 50.0, "epochs": 9, "epochs_this_job": 6}]}
    assert S._retrain_estimate(trial, 9) == pytest.approx(600.0)
    assert S._retrain_estimate({"rungs": [{"status": "failed", "wall_s": 5.0, "epochs_this_job": 1}]}, 9) is None
    assert S._retrain_estimate({"rungs": []}, 9) is None


@pytest.mark.parametrize("wall_s, retrained", [(185.0, True), (195.0, False)])
def test_the_retrain_must_fit_before_the_evaluation_reserve(tmp_path, monkeypatch, wall_s, retrained):
    """A 3-epoch retrain of a winner whose 1-epoch trial took ``wall_s`` takes about 3 x ``wall_s``; with a 600 s
    limit the search keeps FINAL_EVAL_RESERVE_S (30 s) for the evaluations, so 555 s fits and 585 s does not; every
    run_jobs call is bounded by that same point, 570 s after the start."""
    import time

    t0 = time.perf_counter()
    rep = _final_search(tmp_path, monkeypatch, wall_s=wall_s, time_limit_s=600)
    t1 = time.perf_counter()
    assert any("winner" in names for names, _ in FinalRunner.calls) is retrained
    assert ("note" not in rep["final"]["winner"]) is retrained
    assert all(t0 + 600 - S.FINAL_EVAL_RESERVE_S <= stop <= t1 + 600 - S.FINAL_EVAL_RESERVE_S
               for _, stop in FinalRunner.calls)
    assert S.FINAL_EVAL_RESERVE_S == 30.0


@pytest.mark.parametrize("winner, wall_s, why", [("ok", 1000.0, "not retrained: the time limit left"),
                                                 ("stopped", 1.0, "the retrain was stopped at the time limit"),
                                                 ("failed", 1.0, "RuntimeError: boom")])
def test_a_winner_with_neither_a_retrain_nor_a_trial_model_is_reported_failed(tmp_path, monkeypatch, winner, wall_s,
                                                                              why):
    """The winning trial's model is gone (and its retrain did not fit, was stopped or failed): the report is still
    complete, the winner row says why it has no model, and nothing ships."""
    import shutil

    run = FinalRunner.run_jobs

    def trials_then_gone(self, jobs, deadline=None, stop_at=None):
        out = run(self, jobs, deadline, stop_at)
        for r in out.values():
            if r["kind"] == "trial":
                shutil.rmtree(r["model_dir"])
        return out

    monkeypatch.setattr(FinalRunner, "run_jobs", trials_then_gone)
    rep = _final_search(tmp_path, monkeypatch, winner=winner, wall_s=wall_s, time_limit_s=600)
    w = rep["final"]["winner"]
    assert rep["status"] == "complete" and w["status"] == "failed" and why in w["error"], w
    assert "validation" not in w and "ship" not in rep["final"]


def test_a_failed_retrain_error_is_kept_beside_the_trial_model(tmp_path, monkeypatch):
    """A winner whose retrain failed is its trial's model, and the report keeps the retrain's error."""
    rep = _final_search(tmp_path, monkeypatch, winner="failed", time_limit_s=3600)
    assert rep["final"]["winner"]["retrain_error"] == "RuntimeError: boom"
    assert "retrain_error" not in _final_search(tmp_path, monkeypatch, winner="stopped", time_limit_s=3600)["final"][
        "winner"]


def test_main_gives_the_search_what_is_left_of_the_time_limit(tmp_path, monkeypatch):
    """--time-limit counts from main's start: the seconds spent decoding the data (and benchmarking) before the
    search are taken off what the search gets; without it the search has no limit."""
    import time

    got = []
    monkeypatch.setattr(S, "load_data", lambda base: time.sleep(1.0) or {})
    monkeypatch.setattr(S, "search", lambda *a, **k: got.append(k) or {"final": {"winner": {}}, "timing": {}})
    argv = ["--teacher", str(tmp_path / "teacher"), "--out", str(tmp_path / "s"), "--report", str(tmp_path / "r")]
    S.main(argv + ["--time-limit", "100"])
    S.main(argv + ["--time_limit", "100"])
    S.main(argv)
    assert all(98 < k["time_limit_s"] <= 99.0 for k in got[:2]) and got[2]["time_limit_s"] == 0.0, got


def test_the_call_packs_the_winning_trial_when_no_final_model_was_saved(tmp_path):
    """gpu_search_call.sh, killed after the winner was chosen but before the report had its final rows: the winning
    trial's model (left out of the tar with the other trials) is copied to runs/search/winner_trial with its id; with
    the final rows written, or no winner yet, nothing is. The script's own block, run on a fake runs/search."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    text = (root / "train" / "gpu_search_call.sh").read_text()
    assert "--time-limit $(( LEFT - " in text  # the search itself keeps inside the timeout that kills it
    start = text.index("W=$(python")
    block = text[start:text.index("\nfi\n", start) + 4]
    search = tmp_path / "runs" / "search"
    (search / "report").mkdir(parents=True)
    (search / "trials" / "t003" / "best").mkdir(parents=True)
    (search / "trials" / "t003" / "best" / "model.safetensors").write_text("t003")
    (search / "trials" / "t003" / "history.json").write_text("[]")
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}

    def call(report: dict) -> Path:
        (search / "report" / "search.json").write_text(json.dumps(report))
        subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], cwd=tmp_path, env=env, check=True)
        return search / "winner_trial"

    assert not call({"trials": []}).exists()
    assert not call({"winner": {"id": "t003"}, "final": {"winner": {"status": "ok"}}}).exists()
    packed = call({"winner": {"id": "t003"}})
    assert (packed / "TRIAL").read_text().strip() == "t003"
    assert (packed / "best" / "model.safetensors").read_text() == "t003" and (packed / "history.json").is_file()
