"""Hyper-parameter search for the MAG-KD student: successive halving over a grid, on the one training loop.

    python -m train.search --teacher runs/teacher/best --space train/spaces/seed_grid.json --rungs 1,3,9 --eta 3 \
        --out runs/search --concurrency 8 [any RunConfig flag: --img_size 224 --data_dir ... --pretrained true]

Every configuration of the space is trained for ``rungs[0]`` epochs; the best ``1/eta`` (by the selection score on
validation) continue, from their own checkpoint, to ``rungs[1]`` epochs, and so on (synchronous successive halving;
36 -> 12 -> 4 for the seed grid with rungs 1,3,9 and eta 3). Pruned trials keep their partial results. The winner is
then retrained from scratch for ``--final-epochs`` (unless it reached them at the top rung: then its own model, a
retrain being a bit-identical repeat) next to the untuned MAG-KD student (the base config: alpha, beta,
gamma, lr, batch size and class weights as given on the command line or their defaults), and both are evaluated once
on the test split at their validation operating point.

Data are decoded once, and the teacher runs once over the training images: its logits and attention maps go to
``OUT/teacher_outputs.pt`` (``distill.teacher_cache``), which every trial reads, warping the maps with each batch's
augmentation, so no trial runs the teacher. ``--concurrency N`` runs N trials at once in N worker processes that each hold the decoded
tensors on the device (small batches leave a GPU mostly idle). Every finished trial is appended to
``OUT/trials.jsonl`` and the report is rewritten, so a killed search keeps its trials and the same command resumes it
(finished trials are reused, an interrupted one continues from its last epoch checkpoint).

Selection (``dermo.metrics.selection_score``), on validation at the threshold reaching sensitivity >= 0.90:
``score = 0.6 * sensitivity + 0.2 * accuracy + 0.2 * specificity``; validation AUROC is reported beside it. Since
sensitivity is pinned near 0.90 by the threshold, the score in effect ranks by specificity and accuracy there.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from dermo import metrics as M
from dermo.config import REPORT_FOOTER, RunConfig, flat_fields
from train.cli import build_parser, resolve, setup_logging

logger = logging.getLogger("train.search")

DEFAULT_SPACE = Path(__file__).resolve().parent / "spaces" / "seed_grid.json"
SELECTION_FORMULA = ("score = 0.6 * sensitivity + 0.2 * accuracy + 0.2 * specificity, on the validation split at the "
                     "threshold where validation sensitivity first reaches >= 0.90 (dermo.metrics.selection_score)")
MIN_SENSITIVITY = 0.90  # the operating point used by dermo.training.evaluate
# Fields the search itself controls, or that would invalidate the once-decoded data.
RESERVED = {"epochs", "schedule_epochs", "output_dir", "resume", "max_steps", "teacher", "img_size", "data_dir",
            "manifest", "limit_train", "limit_eval", "num_workers", "progress", "save_every_steps"}


# ------------------------------------------------------------------------------------------------------------ space
def load_space(path: str | Path) -> dict[str, Any]:
    """Read a search space: ``{"name": ..., "grid": {"lr": [..], "alpha,beta,gamma": [[..], ..], ...}}``.

    A key is a RunConfig field name, or several comma-separated names whose values vary together (each value then a
    list with one entry per name). Raises ValueError naming the bad key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"search space {path} not found; give a JSON file like {DEFAULT_SPACE}")
    spec = json.loads(path.read_text())
    grid = spec.get("grid") if isinstance(spec, dict) else None
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"{path}: needs a non-empty object 'grid' mapping field names to lists of values")
    known = flat_fields()
    for key, values in grid.items():
        names = [n.strip() for n in key.split(",")]
        for n in names:
            if n not in known:
                raise ValueError(f"{path}: unknown field {n!r} in key {key!r}; use RunConfig field names")
            if n in RESERVED:
                raise ValueError(f"{path}: {n!r} cannot be searched (the search sets it; use rungs / CLI flags)")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: {key!r} needs a non-empty list of values")
        if len(names) > 1 and not all(isinstance(v, list) and len(v) == len(names) for v in values):
            raise ValueError(f"{path}: every value of {key!r} must be a list of {len(names)} numbers")
    return {"name": spec.get("name", path.stem), "description": spec.get("description", ""), "grid": grid,
            "file": str(path)}


def expand_space(grid: dict[str, list]) -> list[dict[str, Any]]:
    """All configurations of a grid (cartesian product, in file order) as flat ``{field: value}`` overrides."""
    keys = list(grid)
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        ov: dict[str, Any] = {}
        for key, value in zip(keys, combo):
            names = [n.strip() for n in key.split(",")]
            ov.update({names[0]: value} if len(names) == 1 else dict(zip(names, value)))
        out.append(ov)
    return out


def halving_sizes(n: int, n_rungs: int, eta: int) -> list[int]:
    """Trials per rung: n, n // eta, n // eta^2, ... (at least 1)."""
    return [max(1, n // eta ** k) for k in range(n_rungs)]


# -------------------------------------------------------------------------------------------------------------- data
def load_data(cfg: RunConfig, with_test: bool = True) -> dict[str, tuple]:
    """Decode the splits once, at the student's size (the trials never run the teacher: see
    ``teacher_cache_config``).
    Returns ``{split: (uint8 images (N, S, S, 3), labels (N,))}`` plus ``train_ids`` and ``test_groups``."""
    from dermo.training import load_arrays

    out: dict[str, tuple] = {}
    tr_x, tr_y, tr_df = load_arrays(cfg, "train", cfg.model.img_size, cfg.data.limit_train)
    va_x, va_y, _ = load_arrays(cfg, "validation", cfg.model.img_size, cfg.data.limit_eval)
    out["train"], out["validation"] = (tr_x, tr_y), (va_x, va_y)
    out["train_ids"] = tr_df["image_id"].tolist()
    if with_test:
        te_x, te_y, te_df = load_arrays(cfg, "test", cfg.model.img_size, cfg.data.limit_eval)
        out["test"] = (te_x, te_y)
        out["test_groups"] = te_df["lesion_id"].to_numpy() if "lesion_id" in te_df else None
    return out


def teacher_cache_config(base: RunConfig, out: Path) -> RunConfig:
    """The teacher runs once for the whole search: ``distill.teacher_cache`` defaults to ``OUT/teacher_outputs.pt``
    (written by ``dermo.training.write_teacher_cache`` from the teacher at its own image size), which every trial
    reads."""
    if base.distill.teacher_cache in ("", "memory"):
        base = base.override(teacher_cache=str(out / "teacher_outputs.pt"))
    return base


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _on_device(data: dict[str, tuple]) -> dict[str, tuple]:
    dev = _device()
    out: dict[str, Any] = {k: (v[0].to(dev), v[1]) for k, v in data.items() if k in ("train", "validation")}
    if data.get("train_ids") is not None:
        out["train_ids"] = data["train_ids"]
    return out


# ------------------------------------------------------------------------------------------------------------- jobs
def execute(job: dict[str, Any], data: dict[str, tuple]) -> dict[str, Any]:
    """Train one job (a trial at one rung, or a final run) through ``dermo.training.run``; returns its record.

    A job continues from ``output_dir/checkpoints/last`` when one exists (promotion to the next rung, or a run that
    was killed), otherwise starts fresh. Failures are recorded, not raised, so one bad config cannot end a search.
    """
    from dermo.training import STATE_FILE, run

    cfg = RunConfig.from_dict(job["cfg"])
    out_dir = Path(cfg.train.output_dir)
    ckpt = out_dir / "checkpoints" / "last" / STATE_FILE
    job_file = out_dir / "search_job.json"
    # what a checkpoint here must have been trained with to be continued: the same config on the same cosine
    # schedule (a promotion keeps it; a final run with other --final-epochs does not, and starts from scratch)
    identity = {"overrides": job["overrides"], "schedule_epochs": cfg.train.schedule_epochs or cfg.train.epochs}
    if ckpt.is_file() and job_file.is_file() and json.loads(job_file.read_text()) == identity:
        cfg = cfg.override(resume="latest")
    elif out_dir.exists():  # a different configuration trained here before (e.g. another winner): start clean
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    job_file.write_text(json.dumps(identity))
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"name": job["name"], "kind": job["kind"], "rung": job.get("rung"),
                           "epochs": cfg.train.epochs, "span": job.get("span", cfg.train.epochs),
                           "overrides": job["overrides"], "resumed": bool(cfg.train.resume), "pid": os.getpid()}
    try:
        result = run(cfg, data=data)
    except Exception as e:  # noqa: BLE001 - recorded in the report, the search goes on
        logger.exception("job %s failed", job["name"])
        if _WORKER_DATA is not None and sticky_cuda_error(e):
            # the CUDA context of this process is unusable now: every later job here would fail too. Ending the
            # worker makes the Runner rebuild the pool and requeue the job (failed after MAX_DEATHS breakdowns).
            os._exit(70)
        rec.update(status="failed", error=f"{type(e).__name__}: {e}", wall_s=time.perf_counter() - t0)
        return rec
    val = result.get("validation", {})
    hist_file = Path(cfg.train.output_dir) / "history.json"
    history = json.loads(hist_file.read_text()) if hist_file.is_file() else []
    rec.update(status="ok", wall_s=time.perf_counter() - t0, best_epoch=result["best_epoch"],
               train_seconds=result["train_seconds"], train_img_per_s=result["train_img_per_s"],
               model_dir=result["model_dir"],
               validation={k: val.get(k) for k in ("score", "auroc", "sensitivity", "specificity", "accuracy",
                                                   "threshold")},
               history=[{"epoch": h["epoch"], "val_score": h.get("val_score"), "val_auroc": h.get("val_auroc"),
                         "train_loss": h.get("train_loss")} for h in history])
    return rec


_WORKER_DATA: dict[str, tuple] | None = None


def sticky_cuda_error(e: BaseException) -> bool:
    """A CUDA error that leaves the process's context broken (an illegal address, a device-side assert), unlike an
    out-of-memory error, after which the next job can still run."""
    if isinstance(e, torch.cuda.OutOfMemoryError) or not torch.cuda.is_available():
        return False
    return type(e).__name__ == "AcceleratorError" or "CUDA error" in str(e)


def _init_worker(cache_dir: str, threads: int) -> None:
    global _WORKER_DATA
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    import accelerate  # noqa: F401 - first-trial import cost paid here, outside the trials' wall time
    import dermo.training  # noqa: F401
    c = Path(cache_dir)
    data: dict[str, Any] = {s: (torch.from_numpy(np.load(c / f"{s}_x.npy")), np.load(c / f"{s}_y.npy"))
                            for s in ("train", "validation")}
    if (c / "train_ids.json").is_file():
        data["train_ids"] = json.loads((c / "train_ids.json").read_text())
    _WORKER_DATA = _on_device(data)


def _execute_in_worker(job: dict[str, Any]) -> dict[str, Any]:
    assert _WORKER_DATA is not None, "worker not initialised"
    return execute(job, _WORKER_DATA)


class Runner:
    """Runs batches of jobs in-process (concurrency 1) or in a pool of worker processes, longest jobs first.

    Finished records are appended to ``journal`` (JSON lines, fsynced) and handed to ``on_record``; a job whose
    record is already in the journal (same name, epochs and config) is not run again.
    """

    def __init__(self, data: dict[str, tuple], concurrency: int, journal: Path, cache_dir: Path,
                 on_record: Callable[[dict], None] | None = None):
        self.concurrency = concurrency
        self.adopt(journal, on_record)
        self.pool = None
        if concurrency > 1:
            cache_dir.mkdir(parents=True, exist_ok=True)
            for s in ("train", "validation"):
                np.save(cache_dir / f"{s}_x.npy", data[s][0].numpy())
                np.save(cache_dir / f"{s}_y.npy", np.asarray(data[s][1]))
            if data.get("train_ids") is not None:
                (cache_dir / "train_ids.json").write_text(json.dumps(data["train_ids"]))
            import multiprocessing as mp

            threads = max(1, _cpu_count() // concurrency)
            self._new_pool = lambda: ProcessPoolExecutor(concurrency, mp_context=mp.get_context("spawn"),
                                                         initializer=_init_worker,
                                                         initargs=(str(cache_dir), threads))
            self.pool = self._new_pool()
            self.data = None
        else:
            self.data = _on_device(data)
        self.cache_dir = cache_dir

    def adopt(self, journal: Path, on_record: Callable[[dict], None] | None = None) -> None:
        """Journal to ``journal`` from now on (reusing the records already in it); the pool, warm, is kept."""
        self.journal, self.on_record = journal, on_record
        self.done: dict[tuple[str, int], dict] = {}
        if journal.is_file():
            for line in journal.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    if r.get("status") == "ok":
                        self.done[(r["name"], r["epochs"])] = r

    def _record(self, rec: dict) -> dict:
        with self.journal.open("a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if rec["status"] == "ok":
            self.done[(rec["name"], rec["epochs"])] = rec
        logger.info("%s (%s epochs): %s score=%s auroc=%s in %.1fs", rec["name"], rec["epochs"], rec["status"],
                    _fmt(rec.get("validation", {}).get("score")), _fmt(rec.get("validation", {}).get("auroc")),
                    rec.get("wall_s", 0.0))
        if self.on_record:
            self.on_record(rec)
        return rec

    def run_jobs(self, jobs: list[dict], deadline: float | None = None,
                 stop_at: float | None = None) -> dict[str, dict]:
        """Run jobs (reusing journaled ones); jobs not started before ``deadline`` (perf_counter) get no record.

        ``stop_at`` (perf_counter) is a hard limit: no job starts after it, and jobs still running in the worker
        processes then are stopped (the workers are killed; a new pool serves later calls) and get no record either,
        so that a caller with a fixed time budget always gets control back in time. In-process (concurrency 1) a
        running job cannot be stopped: ``stop_at`` then only keeps new jobs from starting.
        """
        out: dict[str, dict] = {}
        todo = []
        for job in jobs:
            prev = self.done.get((job["name"], job["cfg"]["train"]["epochs"]))
            if prev is not None and prev.get("overrides") == job["overrides"]:
                out[job["name"]] = {**prev, "reused": True}
            else:
                todo.append(job)
        # Longest first (epochs to run / batch size ~ steps) so stragglers do not idle the other workers.
        todo.sort(key=lambda j: -j["cost"])
        stopped = lambda: stop_at is not None and time.perf_counter() > stop_at  # noqa: E731
        expired = lambda: stopped() or deadline is not None and time.perf_counter() > deadline  # noqa: E731
        if self.pool is None:
            for job in todo:
                if expired():
                    break
                out[job["name"]] = self._record(execute(job, self.data))
            return out
        pending: dict[Any, dict] = {}
        queue = list(todo)
        deaths: dict[str, int] = {}  # pool breakdowns each job was part of
        while queue or pending:
            try:
                while queue and len(pending) < self.concurrency and not expired():
                    job = _next_job(queue, pending, deaths)
                    if job is None:
                        break
                    try:
                        pending[self.pool.submit(_execute_in_worker, job)] = job
                    except BrokenProcessPool:  # a worker died since the last wait (counted for this job too,
                        deaths[job["name"]] = deaths.get(job["name"], 0) + 1  # so that restarts always end)
                        if deaths[job["name"]] < MAX_DEATHS:
                            queue.insert(0, job)
                        else:
                            out[job["name"]] = self._record(_failed(job, "no worker process could start it"))
                        raise
            except BrokenProcessPool:
                self._restart(pending, queue, deaths, out)
                continue
            if not pending:
                break
            timeout = None if stop_at is None else max(0.0, stop_at - time.perf_counter())
            finished, _ = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            if not finished:  # the hard limit passed with these jobs still running
                self._abandon(pending)
                break
            if any(isinstance(f.exception(), BrokenProcessPool) for f in finished):
                self._restart(pending, queue, deaths, out)
            for fut in finished:
                if fut not in pending:
                    continue
                job = pending.pop(fut)
                try:
                    rec = fut.result()
                except Exception as e:  # noqa: BLE001 - recorded like a failed trial
                    rec = _failed(job, f"{type(e).__name__}: {e}")
                out[job["name"]] = self._record(rec)
        return out

    def _restart(self, pending: dict, queue: list, deaths: dict[str, int], out: dict[str, dict]) -> None:
        """A worker died (segfault, out of memory): the pool is unusable and every job still in it is lost, with no
        telling which one killed it. Each goes back to the queue, for a new pool, and continues from its last epoch
        checkpoint; one that was in ``MAX_DEATHS`` breakdowns is recorded as failed. Jobs that had finished are
        left in ``pending`` to be collected."""
        for fut, job in list(pending.items()):
            if fut.done() and not isinstance(fut.exception(), BrokenProcessPool):
                continue
            pending.pop(fut)
            deaths[job["name"]] = deaths.get(job["name"], 0) + 1
            if deaths[job["name"]] < MAX_DEATHS:
                queue.append(job)  # behind the others: next time it runs beside other jobs
            else:
                out[job["name"]] = self._record(_failed(job, f"its worker process died ({MAX_DEATHS} times, "
                                                             "with the jobs beside it)"))
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()
        logger.warning("a worker process died; %d job(s) queued for a new pool", len(queue))

    def _abandon(self, pending: dict) -> None:
        """Stop the jobs still running at the hard limit: kill the pool's worker processes (a running trial cannot be
        interrupted otherwise) and put a new, not yet started, pool in its place."""
        logger.warning("time limit: stopping %d running job(s): %s", len(pending),
                       ", ".join(sorted(j["name"] for j in pending.values())))
        for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
            try:
                proc.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.pool.shutdown(wait=False, cancel_futures=True)
        pending.clear()
        self.pool = self._new_pool()  # its processes start only if another job is submitted

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            shutil.rmtree(self.cache_dir, ignore_errors=True)


def _cpu_count() -> int:
    """CPUs this process may run on (a container's share, where os.cpu_count() tells the host's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _next_job(queue: list[dict], pending: dict, deaths: dict[str, int]) -> dict | None:
    """The next job to submit, taken out of ``queue``: at most one suspect (a job that was in a pool breakdown) is
    in the pool at a time, so the job that kills its workers never dies twice beside the same innocent one (side by
    side in the queue, they would die together until both reached ``MAX_DEATHS``). None: nothing may start now."""
    suspect_running = any(deaths.get(j["name"]) for j in pending.values())
    for i, job in enumerate(queue):
        if not (suspect_running and deaths.get(job["name"])):
            return queue.pop(i)
    return None


MAX_DEATHS = 3  # a job in this many pool breakdowns is recorded as failed (it is likely the one that kills workers)


def _failed(job: dict, error: str) -> dict:
    return {"name": job["name"], "kind": job["kind"], "rung": job.get("rung"),
            "epochs": job["cfg"]["train"]["epochs"], "overrides": job["overrides"], "status": "failed",
            "error": error}


def make_job(base: RunConfig, name: str, kind: str, overrides: dict, epochs: int, out_dir: Path,
             rung: int | None = None, start_epochs: int = 0, schedule_epochs: int = 0) -> dict[str, Any]:
    """A job: train ``base`` + ``overrides`` to ``epochs`` in ``out_dir``, continuing from ``start_epochs``, on a
    cosine schedule ``schedule_epochs`` long (0: ``epochs``)."""
    cfg = base.override(**overrides, epochs=epochs, schedule_epochs=schedule_epochs, output_dir=str(out_dir),
                        progress=False, resume="")
    span = epochs - start_epochs
    # cost ~ optimizer steps: scheduling longest jobs first keeps workers busy to the end of a rung
    return {"name": name, "kind": kind, "rung": rung, "overrides": overrides, "cfg": cfg.to_dict(), "span": span,
            "cost": span / cfg.train.batch_size}


def _rank_key(rec: dict | None, name: str) -> tuple:
    if rec is None or rec.get("status") != "ok" or rec["validation"].get("score") is None:
        return (1, 0.0, 0.0, name)
    v = rec["validation"]
    auc = v.get("auroc") if v.get("auroc") is not None else 0.0
    return (0, -v["score"], -auc, name)


# ------------------------------------------------------------------------------------------------------- evaluation
def evaluate_model(model_dir: str | Path, data: dict[str, tuple], n_boot: int = 1000, tta: bool = False) -> dict:
    """Validation (operating point + selection score) and test (``dermo.metrics.summarize`` at the validation
    threshold, lesion-grouped bootstrap CIs) of a saved model. Test is looked at here only, once per model."""
    from dermo.models import load_model, predict_logits

    model = load_model(str(model_dir)).eval().to(_device())
    out: dict[str, Any] = {"model_dir": str(model_dir)}
    probs = {}
    for split in ("validation", "test"):
        x, y = data[split]
        logits, _ = predict_logits(model, x, model.config, batch_size=64, tta=tta)
        probs[split] = (np.asarray(y), torch.softmax(logits.float(), 1)[:, 1].numpy().astype(np.float64))
    y, p = probs["validation"]
    thr = M.threshold_for_sensitivity(y, p, MIN_SENSITIVITY)
    op = M.confusion_at(y, p, thr)
    out["validation"] = {"auroc": M.auroc(y, p), "threshold": thr, "sensitivity": op["sensitivity"],
                         "specificity": op["specificity"], "accuracy": op["accuracy"],
                         "score": M.selection_score(op["sensitivity"], op["accuracy"], op["specificity"])}
    y, p = probs["test"]
    out["test"] = M.summarize(y, p, thr, groups=data.get("test_groups"), n_boot=n_boot)
    return out


# ----------------------------------------------------------------------------------------------------------- search
def search(base: RunConfig, space: dict, rungs: Sequence[int], eta: int, out: Path, concurrency: int = 1,
           final_epochs: int | None = None, untuned_dir: str | None = None, report: Path | None = None,
           label: str = "", deadline_s: float = 0.0, n_boot: int = 1000, command: str = "",
           data: dict[str, tuple] | None = None, decode_s: float = 0.0,
           runner: "Runner | None" = None, time_limit_s: float = 0.0) -> dict[str, Any]:
    """Successive halving over ``space`` on ``base``, then the final retrain and the test evaluation.

    Returns the report dict (also written to ``report``.json/.md when given, after every finished job). ``runner``:
    a pool of ``concurrency`` workers already warm on ``data`` (the concurrency benchmark's), which the search then
    owns and closes; without it the search starts its own.

    ``time_limit_s`` (0 = none): the complete report (winner and untuned evaluated on test) is due that many seconds
    after the start. Trials and final runs still running ``FINAL_EVAL_RESERVE_S`` before it are stopped (a cut rung
    is treated like one the deadline cut), a retrain that would not fit (estimated from the winner's own trial time
    per epoch) is not started, and a winner that could not be retrained, in time or at all, is its trial's model.
    """
    t_start = time.perf_counter()
    rungs = [int(r) for r in rungs]
    if not rungs or any(r < 1 for r in rungs) or sorted(set(rungs)) != rungs:
        raise ValueError(f"rungs={rungs}: give increasing epoch counts >= 1, e.g. 1,3,9")
    if eta < 2:
        raise ValueError(f"eta={eta} must be >= 2 (keep the best 1/eta at each rung)")
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency} must be >= 1")
    if not base.distill.teacher:
        raise ValueError("the MAG-KD search needs a trained teacher: --teacher runs/.../teacher/best")
    final_epochs = int(final_epochs or rungs[-1])
    if untuned_dir:  # scored on the search's decoded images, which are not resized again
        cfg_file = Path(untuned_dir) / "config.json"
        size = json.loads(cfg_file.read_text()).get("img_size") if cfg_file.is_file() else None
        if size != base.model.img_size:
            raise ValueError(f"--untuned {untuned_dir} takes {size} px images, the search {base.model.img_size} px: "
                             f"give --img_size {size} or an untuned model of {base.model.img_size} px")
    base = teacher_cache_config(base, out)
    configs = expand_space(space["grid"])
    for ov in configs:  # every configuration must be valid before anything trains
        base.override(**ov)
    out.mkdir(parents=True, exist_ok=True)
    state = {"space": space["grid"], "base_config": base.to_dict(), "rungs": rungs, "eta": eta}
    state_file = out / "search_state.json"
    if state_file.is_file() and json.loads(state_file.read_text()) != json.loads(json.dumps(state)):
        raise ValueError(f"{out} holds a different search (space, base config, rungs or eta); "
                         "use another --out or delete it")
    state_file.write_text(json.dumps(state, indent=1))

    t0 = time.perf_counter()
    if data is None:
        data = load_data(base)
    decode_s += time.perf_counter() - t0
    if data.get("train_ids") is None:
        raise ValueError("search data need 'train_ids' (the training image ids the teacher outputs belong to)")
    from dermo.training import write_teacher_cache

    t0 = time.perf_counter()
    write_teacher_cache(base)
    teacher_s = time.perf_counter() - t0
    names = [f"t{i:03d}" for i in range(len(configs))]
    rep: dict[str, Any] = {
        "label": label, "status": "running", "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "device": _device_name(),
        "selection": {"formula": SELECTION_FORMULA, "min_sensitivity": MIN_SENSITIVITY,
                      "tie_break": "validation AUROC, then trial id"},
        "space": space, "n_configs": len(configs), "rungs": rungs, "eta": eta,
        "planned_trials_per_rung": halving_sizes(len(configs), len(rungs), eta),
        "concurrency": concurrency, "final_epochs": final_epochs, "deadline_s": deadline_s or None,
        "data": {s: {"n": int(len(data[s][1])), "n_malignant": int(np.sum(data[s][1])),
                     "img_size": int(data[s][0].shape[1])} for s in ("train", "validation", "test") if s in data},
        "base_config": base.to_dict(), "out": str(out),
        "trials": [{"id": n, "overrides": ov, "rungs": []} for n, ov in zip(names, configs)],
        "timing": {"decode_s": decode_s, "teacher_outputs_s": teacher_s},
    }
    by_name = {t["id"]: t for t in rep["trials"]}

    def on_record(rec: dict) -> None:
        if rec["kind"] == "trial":
            t = by_name[rec["name"]]
            t["rungs"] = [r for r in t["rungs"] if r["epochs"] != rec["epochs"]] + [_rung_row(rec)]
            t["rungs"].sort(key=lambda r: r["epochs"])
        if report is not None:
            write_report(rep, report)

    if runner is not None and runner.concurrency == concurrency:
        runner.adopt(out / "trials.jsonl", on_record)
    else:
        if runner is not None:
            runner.close()
        runner = Runner(data, concurrency, out / "trials.jsonl", out / "cache", on_record)
    deadline = t_start + deadline_s if deadline_s else None
    hard_end = t_start + time_limit_s - FINAL_EVAL_RESERVE_S if time_limit_s else None
    try:
        alive = list(names)
        t_search = time.perf_counter()
        top_rung = -1
        ranking: list[str] = []
        last_ok: dict[str, dict] = {}  # each trial's record at the last rung it finished
        # The untuned student depends on no trial: it trains beside the first rung (the final step then finds it
        # in the journal), so that it is not left for the end of the call.
        untuned_job = None if untuned_dir else make_job(base, "untuned", "final", {}, final_epochs, out / "untuned")
        for k, epochs in enumerate(rungs):
            # promoted trials continue from their checkpoint at the previous rung
            # one schedule, the top rung's, for every trial at every rung: a promoted trial's learning rate goes on
            # down the curve it was on (a schedule per rung would decay to 0, then jump back up on promotion)
            jobs = [make_job(base, n, "trial", configs[names.index(n)], epochs, out / "trials" / n, rung=k,
                             start_epochs=rungs[k - 1] if k else 0, schedule_epochs=rungs[-1]) for n in alive]
            recs = runner.run_jobs(jobs + ([untuned_job] if k == 0 and untuned_job else []), deadline,
                                   stop_at=hard_end)
            for n, r in recs.items():
                if r.get("reused") and n in by_name:
                    on_record(r)
            ran = [n for n in alive if n in recs and recs[n].get("status") == "ok"]
            last_ok.update({n: recs[n] for n in ran})
            missing = [n for n in alive if n not in recs]
            for n in missing:
                by_name[n]["note"] = f"not run at rung {k} ({epochs} epochs): deadline or time limit reached"
            if missing and k > 0:
                # The deadline cut this rung: trials are compared at the last rung they all finished (ranking it
                # among the trials that happened to run first would favour the ones scheduled first, the small
                # batch sizes); the results of this one are reported, and a winner that ran it keeps that model.
                rep["cut_rung"] = {"rung": k, "epochs": epochs, "ran": len(ran), "of": len(alive)}
                break
            if not ran:
                break
            top_rung = k
            ranking = sorted(ran, key=lambda n: _rank_key(recs[n], n))
            if missing:  # the first rung itself was cut: only the trials that ran it can be ranked
                rep["cut_rung"] = {"rung": k, "epochs": epochs, "ran": len(ran), "of": len(alive)}
                break
            alive = ranking[:max(1, len(alive) // eta)]
        rep["timing"]["search_wall_s"] = time.perf_counter() - t_search
        if top_rung < 0:
            raise RuntimeError("no trial finished; see the errors in the report / trials.jsonl")
        winner = ranking[0]
        _mark_status(rep, rungs, top_rung, winner, set(ranking))
        won = last_ok[winner]
        rep["winner"] = {"id": winner, "overrides": by_name[winner]["overrides"], "chosen_at_epochs": rungs[top_rung],
                         "epochs": won["epochs"], "validation": by_name[winner]["rungs"][-1]["validation"]}
        if report is not None:
            write_report(rep, report)

        # Final: the winner on the full budget, beside the untuned student, same budget. A winner that reached the
        # full budget at the top rung is that run already (same seed, same cosine schedule, and a promotion resumes
        # exactly): retraining it would be the same run again (bit for bit on CPU; on a GPU up to its
        # nondeterministic kernels), so its trial's model is used.
        t_final = time.perf_counter()
        final_jobs = []
        reuse = won["epochs"] == final_epochs == rungs[-1] and bool(won.get("model_dir")) \
            and Path(won["model_dir"]).is_dir()
        fallback = ""  # why the winning trial's own model stands in for a retrain that did not happen
        if not reuse:
            est = _retrain_estimate(by_name[winner], final_epochs)
            if hard_end is not None and (time.perf_counter() > hard_end or
                                         est is not None and time.perf_counter() + est > hard_end):
                fallback = (f"not retrained: the time limit left {max(0.0, hard_end - time.perf_counter()):.0f} s, "
                            f"a {final_epochs}-epoch retrain takes about {_fmt(est, 0)} s")
                logger.warning("winner %s: %s", winner, fallback)
            else:
                final_jobs.append(make_job(base, "winner", "final", by_name[winner]["overrides"], final_epochs,
                                           out / "winner"))
        if untuned_job:  # trained beside the first rung: reused from the journal (run now if the deadline stopped it)
            final_jobs.append(untuned_job)
        finals = runner.run_jobs(final_jobs, stop_at=hard_end) if final_jobs else {}
        if not reuse and not fallback:
            if "winner" not in finals:
                fallback = "not retrained: the retrain was stopped at the time limit"
            elif finals["winner"].get("status") != "ok":
                fallback = f"not retrained: the retrain failed ({finals['winner'].get('error')})"
            if fallback:
                logger.warning("winner %s: %s", winner, fallback)
        if fallback and won.get("model_dir") and Path(won["model_dir"]).is_dir():
            reuse = True
        if reuse:  # copied to out/winner like a retrained one (the trials' folders stay behind on the device)
            src, dst = Path(won["model_dir"]), out / "winner"
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst / "best")
            for f in ("history.json", "run_config.json", "metrics.json"):
                if (src.parent / f).is_file():
                    shutil.copy2(src.parent / f, dst / f)
            finals["winner"] = {**won, "kind": "final", "wall_s": 0.0, "trial_model": True,
                                "model_dir": str(dst / "best"), "fallback": fallback,
                                "retrain_error": (finals.get("winner") or {}).get("error")}
        elif "winner" not in finals:
            finals["winner"] = {"status": "failed", "error": fallback or "not trained"}
    finally:
        runner.close()
    rep["timing"]["final_train_wall_s"] = time.perf_counter() - t_final
    rep["final"] = {}
    dirs = {"winner": finals["winner"].get("model_dir"),
            "untuned": untuned_dir or finals.get("untuned", {}).get("model_dir")}
    for key, d in dirs.items():
        rec = finals.get(key, {})
        entry: dict[str, Any] = {"overrides": rec.get("overrides", {}), "epochs": rec.get("epochs"),
                                 "train_wall_s": rec.get("wall_s"), "status": rec.get("status", "given")}
        if rec.get("trial_model") and rec.get("fallback"):
            entry["note"] = (f"the winning trial's own model ({winner}, {rec.get('epochs')} epochs, not the final "
                             f"budget's {final_epochs}), {rec['fallback']}")
            if rec.get("retrain_error"):
                entry["retrain_error"] = rec["retrain_error"]
        elif rec.get("trial_model"):
            entry["note"] = (f"the winning trial's own model ({winner}, {rec.get('epochs')} epochs on the full "
                             "budget's schedule), not retrained: a retrain would be the same run again: same seed, data order and schedule")
        if key == "untuned":
            entry["alpha_beta_gamma"] = [base.distill.alpha, base.distill.beta, base.distill.gamma]
            entry["lr"], entry["batch_size"] = base.train.lr, base.train.batch_size
            entry["class_weights"] = list(base.train.class_weights)
            if untuned_dir:
                entry["note"] = f"existing model {untuned_dir}, not retrained by this search"
        if d and (rec.get("status") == "ok" or key == "untuned" and untuned_dir):
            try:  # one model that cannot be evaluated must not cost the other's figures (nor the report)
                entry.update(evaluate_model(d, data, n_boot=n_boot, tta=base.train.tta))
            except Exception as e:  # noqa: BLE001 - recorded in the report
                logger.exception("evaluating %s (%s) failed", key, d)
                entry["error"] = f"evaluation failed: {type(e).__name__}: {e}"
        else:
            entry["error"] = rec.get("error", "not trained")
        rep["final"][key] = entry
    w, u = rep["final"]["winner"].get("validation"), rep["final"]["untuned"].get("validation")
    if w and u:
        rep["final"]["winner_beats_untuned_on_validation"] = bool(w["score"] > u["score"])
        rep["final"]["ship"] = "winner" if w["score"] > u["score"] else "untuned"
    rep["timing"]["total_s"] = time.perf_counter() - t_start
    ok = [r for t in rep["trials"] for r in t["rungs"]]
    rep["timing"]["trial_epochs"] = int(sum(r["epochs_this_job"] for r in ok if r["status"] == "ok"))
    # jobs reused from the journal of an earlier (killed) invocation did not run in this one's search_wall_s
    fresh = [r for r in ok if not r.get("reused") and r.get("wall_s") is not None]
    rep["timing"]["sum_trial_wall_s"] = float(sum(r["wall_s"] for r in fresh))
    rep["timing"]["reused_jobs"] = len(ok) - len(fresh)
    sw = rep["timing"].get("search_wall_s") or 0
    rep["timing"]["effective_parallelism"] = rep["timing"]["sum_trial_wall_s"] / sw if sw else None
    rep["n_trials_reported"] = sum(1 for t in rep["trials"] if t["rungs"])
    rep["status"] = "complete"
    rep["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if report is not None:
        write_report(rep, report)
    return rep


FINAL_EVAL_RESERVE_S = 30.0  # of a --time-limit, kept for evaluating winner and untuned on validation and test


def _retrain_estimate(trial: dict, epochs: int) -> float | None:
    """Seconds a ``epochs``-epoch retrain of ``trial``'s config takes, from its own trials' wall time per epoch
    (measured beside other trials: an overestimate when it runs alone, which a time budget can afford)."""
    ok = [r for r in trial.get("rungs", []) if r.get("status") == "ok" and r.get("wall_s")]
    n = sum(r["epochs_this_job"] for r in ok)
    return sum(r["wall_s"] for r in ok) / n * epochs if n else None


def _rung_row(rec: dict) -> dict:
    row = {"rung": rec.get("rung"), "epochs": rec["epochs"], "status": rec["status"], "wall_s": rec.get("wall_s"),
           "resumed": rec.get("resumed"), "reused": bool(rec.get("reused")), "validation": rec.get("validation"),
           "best_epoch": rec.get("best_epoch"), "train_img_per_s": rec.get("train_img_per_s"),
           "history": rec.get("history", [])}
    if rec.get("error"):
        row["error"] = rec["error"]
    # Epochs trained by this job alone: a promotion continues from the previous rung's checkpoint.
    row["epochs_this_job"] = int(rec.get("span", rec["epochs"]))
    return row


def _mark_status(rep: dict, rungs: list[int], top_rung: int, winner: str, finalists: set[str]) -> None:
    """``finalists``: the trials ranked at the top rung, the last one every surviving trial finished."""
    for t in rep["trials"]:
        ok = [r for r in t["rungs"] if r["status"] == "ok"]
        t["epochs_reached"] = max((r["epochs"] for r in ok), default=0)
        beyond = t["epochs_reached"] > rungs[top_rung]  # ran the rung the deadline cut
        if t["id"] == winner:
            t["status"] = "winner"
        elif any(r["status"] == "failed" for r in t["rungs"]):
            t["status"] = "failed"
        elif not ok:
            t["status"] = "not run"
        elif t["id"] in finalists:
            t["status"] = "finalist" + (f" (ran {t['epochs_reached']} epochs before the deadline; ranked at "
                                        f"{rungs[top_rung]})" if beyond else
                                        " (promoted, not run further: deadline)" if t.get("note") else "")
        elif t.get("note"):  # promoted, but the deadline came before its next rung ran
            t["status"] = f"promoted, not run after {t['epochs_reached']} epoch(s) (deadline)"
        else:
            t["status"] = f"pruned after {t['epochs_reached']} epoch(s)"


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads " \
           f"{torch.get_num_threads()})"


# ---------------------------------------------------------------------------------------------------------- reports
def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _ov_text(ov: dict) -> str:
    parts = []
    for k, v in ov.items():
        parts.append(f"{k}={','.join(f'{x:g}' for x in v) if isinstance(v, (list, tuple)) else v}")
    return " ".join(parts)


def _pct_ci(s: dict, key: str) -> str:
    v, ci = s.get(key), s.get(f"{key}_ci")
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def write_report(rep: dict, prefix: Path) -> None:
    """Write ``prefix``.json and ``prefix``.md (atomically: a killed search leaves the last complete version)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(rep, indent=1, default=str) + "\n"), (".md", render_markdown(rep))):
        path = prefix.with_name(prefix.name + suffix)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def render_markdown(rep: dict) -> str:
    L = []
    title = "MAG-KD hyper-parameter search"
    L.append(f"# {title}" + (f": {rep['label']}" if rep.get("label") else ""))
    L.append("")
    if rep.get("status") != "complete":
        L.append(f"**Status: {rep.get('status')}** (rewritten after every finished trial).")
        L.append("")
    L.append(f"Command: `{rep.get('command', '')}`  ")
    L.append(f"Device: {rep.get('device')}; concurrency {rep.get('concurrency')}; started {rep.get('started')}"
             + (f", finished {rep['finished']}" if rep.get("finished") else ""))
    L.append("")
    d = rep.get("data", {})
    L.append("Data (lesion-grouped split manifest): " + ", ".join(
        f"{s} {v['n']} images ({v['n_malignant']} malignant) at {v['img_size']} px" for s, v in d.items()))
    L.append("")
    L.append("## Selection rule")
    L.append("")
    L.append(f"`{rep['selection']['formula']}`. Ties: {rep['selection']['tie_break']}. Validation AUROC is shown "
             "beside it. At that threshold every trial's sensitivity sits at about 0.90 (it moves only where scores "
             "tie), so in practice the score ranks trials by specificity (and accuracy) at 90% sensitivity; "
             "sensitivity comes first by fixing the operating point, not by its weight. The test split is not used "
             "for any choice: it is evaluated once, after the search, for the winner and the untuned student.")
    L.append("")
    L.append("## Schedule")
    L.append("")
    sp, bc = rep["space"], rep["base_config"]
    L.append(f"Space `{sp.get('name')}` ({sp.get('file')}): {rep['n_configs']} configurations. "
             + "; ".join(f"{k} in {v}" for k, v in sp["grid"].items()))
    L.append("")
    L.append(f"Successive halving: rungs {rep['rungs']} epochs, eta {rep['eta']}, planned trials per rung "
             f"{rep['planned_trials_per_rung']}. A promoted trial continues from its own checkpoint; every trial's "
             f"cosine schedule spans the top rung's {rep['rungs'][-1]} epochs, so a promoted trial goes on down the "
             "learning-rate curve of a full-length run; it is ranked on its best-AUROC epoch so far, the "
             "checkpoint it saves. Base config: " + _ov_text({
                 "backbone": bc["model"]["backbone"], "img_size": bc["model"]["img_size"],
                 "teacher": bc["distill"]["teacher"], "seed": bc["train"]["seed"],
                 "pretrained": bc["train"]["pretrained"], "mixed_precision": bc["train"]["mixed_precision"]}) + ".")
    L.append("")
    L.append("## Trials")
    L.append("")
    rungs = rep["rungs"]
    head = "| trial | config | status | epochs reached | " + " | ".join(f"score@{r}" for r in rungs) + \
           " | val score | val AUROC | sens | spec | acc | wall s |"
    L.append(head)
    L.append("|" + "---|" * (head.count("|") - 1))

    def sort_key(t):
        last = t["rungs"][-1]["validation"] if t["rungs"] and t["rungs"][-1].get("validation") else {}
        return (-t.get("epochs_reached", max((r["epochs"] for r in t["rungs"]), default=0)),
                -(last.get("score") or -1), t["id"])

    for t in sorted(rep["trials"], key=sort_key):
        by_ep = {r["epochs"]: r for r in t["rungs"]}
        last = t["rungs"][-1] if t["rungs"] else {}
        v = last.get("validation") or {}
        wall = sum(r["wall_s"] or 0 for r in t["rungs"]) if t["rungs"] else None
        cells = [_fmt((by_ep[r].get("validation") or {}).get("score")) if r in by_ep else "" for r in rungs]
        L.append(f"| {t['id']} | {_ov_text(t['overrides'])} | {t.get('status', 'running')} | "
                 f"{t.get('epochs_reached', last.get('epochs', 0))} | " + " | ".join(cells) +
                 f" | {_fmt(v.get('score'))} | {_fmt(v.get('auroc'))} | {_fmt(v.get('sensitivity'))} | "
                 f"{_fmt(v.get('specificity'))} | {_fmt(v.get('accuracy'))} | {_fmt(wall, 1)} |")
    L.append("")
    if rep.get("winner"):
        w = rep["winner"]
        L.append(f"**Winner: {w['id']}** ({_ov_text(w['overrides'])}), validation score "
                 f"{_fmt(w['validation'].get('score'))}, AUROC {_fmt(w['validation'].get('auroc'))} after "
                 f"{w['epochs']} epochs.")
        L.append("")
        cut = rep.get("cut_rung")
        if cut:
            L.append(f"The deadline cut rung {cut['rung']} ({cut['epochs']} epochs): {cut['ran']} of {cut['of']} "
                     f"trials ran it. " + (f"Trials were ranked at the last rung all of them finished "
                                           f"({w.get('chosen_at_epochs')} epochs); the results of the cut rung are "
                                           "listed, not ranked." if cut["rung"] > 0 else
                                           "Only the trials that ran it could be ranked."))
            L.append("")
    if rep.get("final"):
        f = rep["final"]
        how = (f"{f['winner'].get('epochs') or rep['final_epochs']} epochs: {f['winner']['note']}"
               if f.get("winner", {}).get("note")
               else f"retrained, {rep['final_epochs']} epochs from scratch")
        L.append(f"## Winner ({how}) vs untuned MAG-KD student")
        L.append("")
        L.append("Validation: operating point and selection score (recomputed from the saved model). Test: "
                 "evaluated once, at the validation threshold, 95% lesion-grouped bootstrap CIs.")
        L.append("")
        L.append("| model | config | val score | val AUROC | val sens | val spec | test AUROC | test sens | "
                 "test spec | test acc | threshold |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for key in ("untuned", "winner"):
            e = f.get(key, {})
            v, s = e.get("validation") or {}, e.get("test") or {}
            cfg = _ov_text(e.get("overrides") or {}) if key == "winner" else \
                f"alpha,beta,gamma={','.join(f'{x:g}' for x in e.get('alpha_beta_gamma', []))} " \
                f"lr={e.get('lr')} batch_size={e.get('batch_size')} " \
                f"class_weights={','.join(f'{x:g}' for x in e.get('class_weights', []))}"
            auc = s.get("auroc")
            auc_txt = "-" if auc is None else f"{auc:.3f}" + (
                f" [{s['auroc_ci'][0]:.3f}, {s['auroc_ci'][1]:.3f}]" if s.get("auroc_ci") else "")
            L.append(f"| {key} | {cfg} | {_fmt(v.get('score'))} | {_fmt(v.get('auroc'))} | "
                     f"{_fmt(v.get('sensitivity'))} | {_fmt(v.get('specificity'))} | {auc_txt} | "
                     f"{_pct_ci(s, 'sensitivity')} | {_pct_ci(s, 'specificity')} | {_pct_ci(s, 'accuracy')} | "
                     f"{_fmt(v.get('threshold'))} |")
            if e.get("note"):
                L.append(f"<!-- {key}: {e['note']} -->")
        L.append("")
        if "ship" in f:
            L.append(f"Winner beats the untuned student on validation score: "
                     f"**{'yes' if f['winner_beats_untuned_on_validation'] else 'no'}** -> ship the "
                     f"**{f['ship']}** student (decided on validation only).")
            L.append("")
    tm = rep.get("timing", {})
    L.append("## Time")
    L.append("")
    L.append(" ".join(f"{k} {_fmt(v, 1)};" for k, v in tm.items()))
    L.append("")
    if tm.get("reused_jobs"):
        L.append(f"{tm['reused_jobs']} trial jobs were reused from the journal of an earlier, interrupted invocation: "
                 "their wall times are in the trial table, the times above are this invocation's.")
        L.append("")
    L.append("`effective_parallelism` = sum of trial wall times / search wall time (trials overlapping on the "
             "device); trial_epochs = epochs actually trained by all trials.")
    if rep.get("concurrency_benchmark"):
        L.append("")
        L.append("## Concurrency benchmark")
        L.append("")
        L.append("| concurrent trials | wall s | sum of the trials' train img/s | speed-up vs 1 | "
                 "train images / wall s | speed-up vs 1 |")
        L.append("|---|---|---|---|---|---|")
        cb = rep["concurrency_benchmark"]
        rows = cb["levels"]
        base = rows[0]["img_per_s"] if rows else None
        base_w = rows[0].get("img_per_s_wall") if rows else None
        for r in rows:
            w = r.get("img_per_s_wall")
            L.append(f"| {r['concurrency']} | {_fmt(r['wall_s'], 1)} | {_fmt(r['img_per_s'], 0)} | "
                     f"{_fmt(r['img_per_s'] / base if base else None, 2)} | {_fmt(w, 0)} | "
                     f"{_fmt(w / base_w if w and base_w else None, 2)} |")
        L.append("")
        L.append("The sum of the trials' own training img/s assumes their training loops overlapped (an upper bound "
                 "when they start at different times); images over the wall time of the whole level counts each "
                 "trial's setup, evaluation and saving too (a lower bound). The search's gain lies between.")
        L.append("")
        L.append(f"{cb['steps']} training steps per trial, after a warm-up batch; "
                 + ("the benchmark's worker processes, warm, then ran the search." if cb.get("pool_kept_for_search")
                    else "the search started its own worker processes."))
    L.append("")
    L.append(REPORT_FOOTER)
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------------------------------- concurrency
def bench_concurrency(base: RunConfig, data: dict[str, tuple], levels: Sequence[int], steps: int, out: Path,
                      overrides: dict | None = None, keep: bool = False) -> tuple[dict[str, Any], Runner | None]:
    """Aggregate training throughput of 1, 2, ... identical short trials running at once in worker processes.

    Each level runs ``c`` copies of one trial (``max_steps=steps``) together; the aggregate img/s is the sum of the
    copies' training img/s (they overlap). One pool of max(levels) workers, warmed up first, serves every level.
    With ``keep`` that pool is returned, warm, for the search to use (it is closed otherwise, and None returned).
    """
    overrides = dict(overrides or {})
    levels = sorted({int(c) for c in levels})
    runner = Runner(data, max(levels), out / "bench.jsonl", out / "cache")
    rows: list[dict] = []
    pids: set[int] = set()  # the worker processes that ran benchmark trials
    kept = False
    try:
        def batch(c: int, tag: str, n_steps: int) -> dict:
            jobs = []
            for i in range(c):
                j = make_job(base, f"{tag}{i}", "bench", overrides, 1, out / "bench" / f"{tag}{i}")
                j["cfg"]["train"]["max_steps"] = n_steps
                shutil.rmtree(out / "bench" / f"{tag}{i}", ignore_errors=True)
                jobs.append(j)
            t0 = time.perf_counter()
            recs = runner.run_jobs(jobs)
            pids.update(r["pid"] for r in recs.values() if r.get("pid"))
            wall = time.perf_counter() - t0
            images = sum((r.get("train_img_per_s") or 0.0) * (r.get("train_seconds") or 0.0) for r in recs.values())
            return {"concurrency": c, "wall_s": wall, "images": images, "img_per_s_wall": images / wall,
                    "img_per_s": float(sum(r.get("train_img_per_s", 0.0) for r in recs.values())),
                    "per_trial_img_per_s": [r.get("train_img_per_s") for r in recs.values()]}

        batch(max(levels), "warm", 3)  # CUDA contexts, cuDNN autotuning, first-call overheads
        for c in levels:
            rows.append(batch(c, f"c{c}_", steps))
            logger.info("concurrency %d: %.0f img/s", c, rows[-1]["img_per_s"])
        kept = keep
    finally:
        if not kept:
            runner.close()
        (out / "bench.jsonl").unlink(missing_ok=True)
    return ({"steps": steps, "overrides": overrides, "levels": rows, "device": _device_name(),
             "pool_kept_for_search": kept, "worker_pids": sorted(pids)}, runner if kept else None)


# ------------------------------------------------------------------------------------------------------------- CLI
def build_search_parser() -> argparse.ArgumentParser:
    ap = build_parser(__doc__.splitlines()[0])
    g = ap.add_argument_group("search")
    g.add_argument("--space", default=str(DEFAULT_SPACE), help="JSON search space (default: the seed's 36-config grid)")
    g.add_argument("--rungs", default="1,3,9", help="successive-halving epoch budgets, increasing (default 1,3,9)")
    g.add_argument("--eta", type=int, default=3, help="keep the best 1/eta trials at each rung (default 3)")
    g.add_argument("--out", default="runs/search",
                   help="trials, journal and the winner's model folder (OUT/winner/best)")
    g.add_argument("--concurrency", type=int, default=1, help="trials trained at once, one worker process each")
    g.add_argument("--final-epochs", "--final_epochs", dest="final_epochs", type=int, default=0,
                   help="epochs for the winner's retrain and the untuned student (default: the last rung)")
    g.add_argument("--untuned", default="", help="an existing untuned MAG-KD model folder to compare against "
                                                  "instead of training one with the same budget")
    g.add_argument("--report", default="reports/search", help="report prefix: writes PREFIX.md and PREFIX.json")
    g.add_argument("--label", default="", help="report title suffix, e.g. 'CPU smoke run (not the real search)'")
    g.add_argument("--deadline", type=float, default=0.0, help="seconds after which no new trial starts "
                                                                "(the final retrain still runs); 0 = none")
    g.add_argument("--time-limit", "--time_limit", dest="time_limit", type=float, default=0.0,
                   help="seconds after the start by which the report must be complete: trials and final runs "
                        "still running shortly before are stopped, a winner not retrained in time is its trial's "
                        "model; 0 = none")
    g.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples for the test CIs")
    g.add_argument("--bench-concurrency", "--bench_concurrency", dest="bench_concurrency", default="",
                   help="e.g. 1,4,8: first measure aggregate throughput of that many simultaneous short trials")
    g.add_argument("--bench-steps", "--bench_steps", dest="bench_steps", type=int, default=100)
    return ap


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_search_parser().parse_args(argv)
    setup_logging()
    base = resolve(args, progress=False)
    space = load_space(args.space)
    rungs = [int(r) for r in args.rungs.split(",") if r.strip()]
    out = Path(args.out)
    command = "python -m train.search " + " ".join(shlex.quote(a) for a in argv)
    t0 = time.perf_counter()
    data = load_data(base)
    decode_s = time.perf_counter() - t0
    logger.info("decoded data in %.1fs", decode_s)
    bench = None
    if args.bench_concurrency:  # trials as the search runs them: reading the teacher's outputs from the file
        from dermo.training import write_teacher_cache

        base = teacher_cache_config(base, out)
        write_teacher_cache(base)
        levels = [int(c) for c in args.bench_concurrency.split(",") if c.strip()]
        first = expand_space(space["grid"])[0]
        # the benchmark's pool, warm, serves the search when it has the search's size (no second cold start)
        bench, pool = bench_concurrency(base, data, levels, args.bench_steps, out, first,
                                        keep=max(levels) == args.concurrency > 1)
    else:
        pool = None
    deadline = args.deadline - (time.perf_counter() - t0) if args.deadline else 0.0
    try:
        rep = search(base, space, rungs, args.eta, out, concurrency=args.concurrency,
                     final_epochs=args.final_epochs or None, untuned_dir=args.untuned or None,
                     report=Path(args.report), label=args.label,
                     deadline_s=max(deadline, 1e-3) if args.deadline else 0.0,
                     n_boot=args.n_boot, command=command, data=data, decode_s=decode_s, runner=pool,
                     time_limit_s=max(args.time_limit - (time.perf_counter() - t0), 1e-3) if args.time_limit
                     else 0.0)
    except BaseException:
        if pool is not None:  # refused before it adopted the pool (closing twice is harmless)
            pool.close()
        raise
    if bench is not None:
        rep["concurrency_benchmark"] = bench
        write_report(rep, Path(args.report))
    summary = {"winner": rep.get("winner"), "ship": rep["final"].get("ship"),
               "report": f"{args.report}.md", "winner_model": rep["final"]["winner"].get("model_dir"),
               "timing": rep["timing"]}
    print(json.dumps(summary, indent=1, default=str))
    return rep


if __name__ == "__main__":
    main()
