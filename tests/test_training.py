"""The real training path end to end on a tiny real folder: data on disk -> loop -> checkpoint -> resume ->
evaluation -> strict reload, with timm's tiny test model at 48-64 px."""
import json

import numpy as np
import pytest
import torch

from dermo.config import RunConfig
from dermo.models import load_model
from dermo.training import run


def tiny_cfg(tiny_data, tiny_manifest, out, **kw) -> RunConfig:
    base = dict(backbone="test_efficientnet", img_size=64, data_dir=str(tiny_data), manifest=str(tiny_manifest),
                output_dir=str(out), epochs=2, batch_size=8, lr=1e-3, pretrained=False, progress=False)
    base.update(kw)
    return RunConfig().override(**base)


def assert_best_is_first_max(result: dict, out) -> list[dict]:
    """The kept ("best") epoch is the first epoch of highest validation AUROC in the run's history (strict >: a later
    tie does not replace it), and the reported validation metrics are that epoch's."""
    hist = json.loads((out / "history.json").read_text())
    aurocs = [h["val_auroc"] for h in hist]
    first_max = aurocs.index(max(aurocs))
    assert result["best_epoch"] == hist[first_max]["epoch"], (result["best_epoch"], aurocs)
    assert result["validation"]["auroc"] == max(aurocs)
    assert result["validation"]["score"] == hist[first_max]["val_score"]
    return hist


def assert_loss_is_the_weighted_sum(hist: list[dict], cfg: RunConfig) -> None:
    """Every epoch's logged loss is alpha*focal + beta*KD + gamma*attention of the run's config: each term is a mean
    over the same steps, so the weighted sum of the means is the mean of the weighted sums (up to fp32 rounding)."""
    a, b, g = cfg.distill.alpha, cfg.distill.beta, cfg.distill.gamma
    assert len({a, b, g}) == 3  # all different, or a swap of two would go unseen
    for h in hist:
        assert h["train_kd"] > 0 and h["train_att"] > 0
        assert h["train_loss"] == pytest.approx(a * h["train_cls"] + b * h["train_kd"] + g * h["train_att"],
                                                rel=1e-5, abs=1e-8), h


def test_teacher_student_distill_resume(tiny_data, tiny_manifest, tmp_path):
    teacher = run(tiny_cfg(tiny_data, tiny_manifest, tmp_path / "teacher", tta=True))
    assert (tmp_path / "teacher" / "best" / "model.safetensors").is_file()
    assert teacher["epochs_run"] == 2
    assert_best_is_first_max(teacher, tmp_path / "teacher")
    saved = json.loads((tmp_path / "teacher" / "run_config.json").read_text())
    assert saved["model"]["backbone"] == "test_efficientnet" and saved["train"]["tta"] is True

    # MAG-KD student at a smaller size than the teacher (attention maps of different sizes are aligned)
    cfg = tiny_cfg(tiny_data, tiny_manifest, tmp_path / "student", img_size=48,
                   teacher=str(tmp_path / "teacher" / "best"), epochs=1, alpha=0.6, beta=0.25, gamma=0.15)
    first = run(cfg)
    hist = json.loads((tmp_path / "student" / "history.json").read_text())
    assert len(hist) == 1
    assert_loss_is_the_weighted_sum(hist, cfg)
    # resume: continue the same run to 2 epochs from its saved state
    second = run(cfg.override(epochs=2, resume="latest"))
    assert second["epochs_run"] == 2 and first["epochs_run"] == 1
    hist = assert_best_is_first_max(second, tmp_path / "student")  # the history carried over the resume
    assert len(hist) == 2
    assert_loss_is_the_weighted_sum(hist, cfg)
    model = load_model(str(tmp_path / "student" / "best"))
    x = torch.randn(2, 3, 48, 48)
    out = model.eval()(x)
    assert out.logits.shape == (2, 2) and torch.allclose(out.attention.sum((1, 2)), torch.ones(2), atol=1e-5)


def test_a_run_continued_to_more_epochs_keeps_its_schedule(tiny_data, tiny_manifest, tmp_path):
    """schedule_epochs (what successive halving sets): 1 epoch, then resumed to 2, follows a 2-epoch run's learning
    rate; without it the first epoch decays to 0 at its own end (and the resumed one starts back up)."""
    def lrs(out):
        return [h["lr_end"] for h in json.loads((out / "history.json").read_text())]

    straight = tmp_path / "straight"
    straight_cfg = tiny_cfg(tiny_data, tiny_manifest, straight, epochs=2)
    res = run(straight_cfg)
    assert_best_is_first_max(res, straight)
    # best/ holds the weights of that epoch: scored again from disk, it gives the reported validation AUROC
    from dermo import metrics as M
    from dermo.models import predict_logits
    from dermo.training import load_arrays

    va_x, va_y, _ = load_arrays(straight_cfg, "validation", straight_cfg.model.img_size)
    best = load_model(str(straight / "best")).eval()
    logits, _ = predict_logits(best, va_x, best.config)
    assert M.auroc(va_y, torch.softmax(logits.float(), 1)[:, 1].numpy()) == pytest.approx(res["validation"]["auroc"])
    staged = tiny_cfg(tiny_data, tiny_manifest, tmp_path / "staged", epochs=1, schedule_epochs=2)
    run(staged)
    run(staged.override(epochs=2, resume="latest"))
    assert lrs(tmp_path / "staged") == pytest.approx(lrs(straight), rel=1e-9)
    restarted = tiny_cfg(tiny_data, tiny_manifest, tmp_path / "restarted", epochs=1)
    run(restarted)
    run(restarted.override(epochs=2, resume="latest"))
    assert abs(lrs(tmp_path / "restarted")[0]) < 1e-12 < lrs(straight)[0]


def test_resume_mid_epoch(tiny_data, tiny_manifest, tmp_path):
    cfg = tiny_cfg(tiny_data, tiny_manifest, tmp_path / "r", epochs=1, save_every_steps=1, max_steps=1)
    run(cfg)
    state = json.loads((tmp_path / "r" / "checkpoints" / "last" / "progress.json").read_text())
    assert state["global_step"] == 1
    res = run(cfg.override(max_steps=0, resume="latest"))
    assert res["global_step"] > 1


def test_bad_config_and_missing_resume(tiny_data, tiny_manifest, tmp_path):
    with pytest.raises(ValueError, match="unknown config field"):
        RunConfig().override(learning_rate=1)
    with pytest.raises(ValueError, match="class_weights"):
        RunConfig().override(class_weights=(1.0,))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run(tiny_cfg(tiny_data, tiny_manifest, tmp_path / "x", resume="latest"))
    with pytest.raises(ValueError, match="no obtainable ImageNet weights"):
        run(tiny_cfg(tiny_data, tiny_manifest, tmp_path / "y", pretrained=True))


def test_cli_flags_map_to_fields(tiny_data, tiny_manifest, tmp_path):
    from train.cli import build_parser, resolve

    args = build_parser("t").parse_args(["--lr", "0.002", "--class_weights", "1,3", "--tta", "true"])
    cfg = resolve(args)
    assert cfg.train.lr == 0.002 and cfg.train.class_weights == (1.0, 3.0) and cfg.train.tta is True
    with pytest.raises(SystemExit):
        build_parser("t").parse_args(["--not_a_field", "1"])


def test_ensemble_teacher_outputs_average_members():
    from dermo.config import ModelConfig
    from dermo.models import create_model
    from dermo.training import teacher_outputs

    torch.manual_seed(0)
    a = create_model(ModelConfig(backbone="test_efficientnet", img_size=64)).eval()
    b = create_model(ModelConfig(backbone="test_efficientnet", img_size=32)).eval()
    x = torch.rand(2, 3, 64, 64)
    la, aa = teacher_outputs([a], x)
    lab, aab = teacher_outputs([a, a], x)
    assert torch.allclose(la, lab) and torch.allclose(aa, aab)
    l2, a2 = teacher_outputs([a, b], x)
    lb, _ = teacher_outputs([b], x)
    assert torch.allclose(l2, (la + lb) / 2, atol=1e-6)
    assert a2.shape == aa.shape and torch.allclose(a2.sum((1, 2)), torch.ones(2), atol=1e-5)


def test_cached_teacher_outputs_memory_and_file(tiny_data, tiny_manifest, tmp_path):
    """teacher_cache: the teacher runs once per training image (not once per step), its maps follow the augmentation,
    and a .pt cache lets a student train where the teacher folder is absent."""
    import shutil

    from dermo import models as Mo

    run(tiny_cfg(tiny_data, tiny_manifest, tmp_path / "teacher", epochs=1))
    teacher = str(tmp_path / "teacher" / "best")
    calls = {"n": 0}
    orig = Mo.LesionClassifier.forward

    def counting(self, x):
        if self.config.img_size == 64 and not self.training:
            calls["n"] += x.shape[0]
        return orig(self, x)

    cfg = tiny_cfg(tiny_data, tiny_manifest, tmp_path / "s_mem", img_size=48, teacher=teacher, epochs=2,
                   teacher_cache="memory", alpha=0.5, beta=0.3, gamma=0.2)
    Mo.LesionClassifier.forward = counting
    try:
        mem = run(cfg)
    finally:
        Mo.LesionClassifier.forward = orig
    n_train = len(__import__("dermo.data", fromlist=["load_split"]).load_split(str(tiny_data), "train",
                                                                                 str(tiny_manifest)))
    assert calls["n"] == n_train  # once per image for two epochs, not once per batch per epoch
    hist = assert_best_is_first_max(mem, tmp_path / "s_mem")
    assert len(hist) == 2 and mem["epochs_run"] == 2
    assert_loss_is_the_weighted_sum(hist, cfg)  # the loss of the cached teacher's outputs, weighted as configured

    cache = tmp_path / "cache" / "teacher.pt"
    run(cfg.override(output_dir=str(tmp_path / "s_file"), teacher_cache=str(cache), epochs=1))
    assert cache.is_file()
    # the teacher retrained in place (other weights in the same folder): its old outputs are refused, not reused
    original = (tmp_path / "teacher" / "best" / "model.safetensors").read_bytes()
    t = Mo.load_model(teacher)
    with torch.no_grad():
        next(t.parameters()).add_(0.01)
    t.save_pretrained(teacher)
    with pytest.raises(ValueError, match="other weights"):
        run(cfg.override(output_dir=str(tmp_path / "s_stale"), teacher_cache=str(cache), epochs=1))
    (tmp_path / "teacher" / "best" / "model.safetensors").write_bytes(original)
    shutil.rmtree(tmp_path / "teacher")  # the teacher is gone: its outputs on disk still teach
    again = run(cfg.override(output_dir=str(tmp_path / "s_file2"), teacher_cache=str(cache), epochs=1))
    assert again["epochs_run"] == 1
    with pytest.raises(ValueError, match="other training images"):
        run(cfg.override(output_dir=str(tmp_path / "s_bad"), teacher_cache=str(cache), limit_train=8))
    with pytest.raises(ValueError, match="teacher_cache"):
        RunConfig().override(teacher_cache="teacher.npz")


def test_train_speed_benchmark_and_rows_from_log(tmp_path, capsys):
    """benchmarks/train_speed.py times the loop's own epoch function (plain and MAG-KD with a cached teacher), and
    rebuilds its report from the rows a stopped run printed into a log."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"
    spec = importlib.util.spec_from_file_location("train_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--backbones", "test_efficientnet", "--magkd", "test_efficientnet", "--img-size", "32",
                      "--batch-size", "4", "--steps", "2", "--warmup", "1", "--json", str(tmp_path / "s.json"),
                      "--md", str(tmp_path / "s.md")])
    assert [r["backbone"] for r in res["rows"]] == ["test_efficientnet", "test_efficientnet + MAG-KD (cached teacher)"]
    assert all(r["img_per_s"] > 0 and r["steps"] == 2 for r in res["rows"])
    assert "| test_efficientnet | " in (tmp_path / "s.md").read_text()
    printed = capsys.readouterr().out
    log = tmp_path / "log"
    log.write_text("NVIDIA H200, 143771 MiB, 580.1\n3.12.3 2.11.0+cu130 1.0.29 1.15.0\nnoise\n" + printed
                   .splitlines()[0] + "\n" + json.dumps({"backbone": "efficientnet_b4", "img_per_s": 2654.0,
                                                        "seconds": 1.0, "steps": 40, "reference_img_per_s": 1327.0,
                                                        "speedup": 2.0, "meets_2x": True}) + "\n")
    res = bench.main(["--rows-from", str(log), "--backbones", "test_efficientnet", "efficientnet_b4",
                      "--magkd", "test_efficientnet", "--md", str(tmp_path / "r.md")])
    assert res["device"] == "NVIDIA H200" and res["torch"] == "2.11.0+cu130"
    assert res["missing"] == ["test_efficientnet + MAG-KD (cached teacher)"]
    md = (tmp_path / "r.md").read_text()
    assert "| efficientnet_b4 | 2,654 | 1,327 | 2.00x | met |" in md
    assert "not measured: test_efficientnet + MAG-KD (cached teacher)" in md


def test_pack_carry_trained_folders_as_fp16(tmp_path, monkeypatch):
    """train.pack_carry --trained mirrors a trained model folder under the carry folder with fp16 weights, and
    load_model reads it back strictly into an fp32 module close to the original; a path outside the repo is refused."""
    from dermo.config import ModelConfig
    from dermo.models import LesionClassifier
    from train import pack_carry

    monkeypatch.chdir(tmp_path)
    model = LesionClassifier(ModelConfig(backbone="test_efficientnet", img_size=32))
    model.save_pretrained("runs/x/teacher/best")
    pack_carry.main(["--no-data", "--models", "--out", "carry", "--trained", "runs/x/teacher/best"])
    from safetensors.torch import load_file

    packed = load_file("carry/runs/x/teacher/best/model.safetensors")
    assert all(v.dtype == torch.float16 for v in packed.values() if v.is_floating_point())
    back = load_model("carry/runs/x/teacher/best")
    ref = model.state_dict()
    for k, v in back.state_dict().items():
        assert v.dtype == ref[k].dtype
        if v.is_floating_point():
            assert torch.allclose(v, ref[k], rtol=1e-3, atol=1e-3), k
    with pytest.raises(SystemExit):
        pack_carry.main(["--no-data", "--models", "--out", "carry", "--trained", str(tmp_path / "runs/x/teacher/best")])


def test_training_step_makes_no_tensor_from_host_data():
    """A tensor made from Python numbers inside the step loop is, on a GPU, a host-to-device copy that makes the host
    wait for the GPU every step. Counted here at the dispatcher (``aten.lift_fresh`` is how torch.tensor(list) enters
    it): the count must not grow with the number of steps, for the plain and the MAG-KD (cached teacher) loop."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from dermo.models import create_model
    from dermo.training import _accelerator, _cosine_with_warmup, train_one_epoch

    class CountFresh(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.lift_fresh.default:
                CountFresh.n += 1
            return func(*args, **(kwargs or {}))

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 32, 32, 3), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 2, (24,), generator=g)
    cache = (torch.randn(24, 2, generator=g), torch.rand(24, 2, 2, generator=g))
    for teacher_cache in (None, cache):
        cfg = RunConfig().override(backbone="test_efficientnet", img_size=32, batch_size=4, pretrained=False,
                                   progress=False, mixed_precision="no",
                                   **({"teacher": "(cached)", "teacher_cache": "memory"} if teacher_cache else {}))
        acc = _accelerator(cfg)
        model = create_model(cfg.model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model, opt, sched = acc.prepare(model, opt, _cosine_with_warmup(opt, 1, 100))
        counts = []
        for steps in (1, 1, 4):  # the first call also creates the optimizer's state
            CountFresh.n = 0
            with CountFresh():
                out = train_one_epoch(model, [], opt, sched, acc, images, labels, cfg, 0, teacher_cache=teacher_cache,
                                      on_step=lambda epoch, step, k=steps: step >= k)
            assert out["loss"] > 0
            counts.append(CountFresh.n)
        assert counts[1] == counts[2], f"tensors made from host data per step: {counts[1:]}"


def test_eval_shards_are_equal_and_cover_every_image_once():
    """Multi-process validation: every process runs as many images (a gather needs equal sizes), and after dropping
    the padding each image appears exactly once (1502 images on 4 GPUs had crashed the gather)."""
    from dermo.training import eval_shard

    for n, world in ((1502, 4), (1502, 3), (7, 2), (8, 2), (1, 3), (5, 1)):
        parts = [eval_shard(n, r, world) for r in range(world)]
        assert len({len(idx) for idx, _ in parts}) == 1 and all(len(i) == len(o) for i, o in parts)
        order = torch.cat([o for _, o in parts])
        assert sorted(order[order >= 0].tolist()) == list(range(n))
        assert all(((i == o) | (o == -1)).all() and (i < n).all() for i, o in parts)


def _free_port() -> int:
    """A port nothing listens on now (a fixed one may still be held by an earlier run's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TWO_PROCESS_EVALUATE = """
import os
import sys

import torch
from accelerate import Accelerator

from dermo.config import ModelConfig, RunConfig
from dermo.models import create_model
from dermo.training import evaluate

acc = Accelerator(cpu=True)
assert acc.num_processes == int(sys.argv[2]), acc.num_processes
torch.manual_seed(0)
cfg = RunConfig().override(backbone="test_efficientnet", img_size=32, pretrained=False, batch_size=4)
model = create_model(ModelConfig(backbone="test_efficientnet", img_size=32)).eval()
images = torch.randint(0, 255, (7, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
m = evaluate(model, acc, images, torch.tensor([0, 1, 0, 1, 1, 0, 0]).numpy(), cfg)
open(f"{sys.argv[1]}.{acc.process_index}", "w").write(repr(m["auroc"]))
# results written: end here, without the interpreter's teardown, where gloo's threads abort now and then
# ("terminate called without an active exception", after the work is done: 1 run in 12 here)
os._exit(0)
"""


TWO_PROCESS_SCHEDULE = """
import os
import sys

import torch
from accelerate import Accelerator

from dermo.training import _cosine_with_warmup, schedule_steps

acc = Accelerator(cpu=True)
model = torch.nn.Linear(2, 2)
opt = torch.optim.AdamW(model.parameters(), lr=1.0)
sched = _cosine_with_warmup(opt, *schedule_steps(acc, 2, 20))
model, opt, sched = acc.prepare(model, opt, sched)
lrs = []
for _ in range(20):
    opt.step()
    sched.step()
    lrs.append(opt.param_groups[0]["lr"])
open(f"{sys.argv[1]}.{acc.process_index}", "w").write(repr(lrs))
# results written: end here, without the interpreter's teardown, where gloo's threads abort now and then
# ("terminate called without an active exception", after the work is done: 1 run in 12 here)
os._exit(0)
"""


def _run_on(n: int, code: str, out, tmp_path) -> list:
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / f"script_{abs(hash(code))}.py"
    script.write_text(code)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
                        "--master_port", str(_free_port()), str(script), str(out), str(n)],
                       cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return [Path(f"{out}.{i}").read_text() for i in range(n)]


@pytest.mark.slow
def test_learning_rate_schedule_is_the_same_on_two_processes(tmp_path):
    """Accelerate's prepared scheduler steps once per process per optimizer step: on 2 processes the cosine schedule
    had reached 0 after half the steps and stayed there. It now follows the one-process curve, step for step."""
    one = eval(_run_on(1, TWO_PROCESS_SCHEDULE, tmp_path / "one", tmp_path)[0])
    two = [eval(t) for t in _run_on(2, TWO_PROCESS_SCHEDULE, tmp_path / "two", tmp_path)]
    # the cosine part step for step (the linear warmup counts its half steps: 0.75 against 1.0 after its first step)
    assert two[0] == two[1] and two[0][2:] == pytest.approx(one[2:]) and two[0][1] == one[1] == 1.0
    assert one[9] > 0.3 and one[-1] == pytest.approx(0.0, abs=1e-12)  # a real cosine: half-way up, 0 at the end


@pytest.mark.slow
def test_evaluate_on_two_processes_matches_one(tmp_path):
    """7 validation images on 2 processes (shards of 4 and 3, gloo on CPU, fresh processes from torch.distributed.run):
    no crash in the gather, the same AUROC as one process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESS_EVALUATE)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    aurocs = {}
    for n in (1, 2):
        out = tmp_path / f"auroc{n}"
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
                            "--master_port", str(_free_port()), str(script), str(out), str(n)],
                           cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        aurocs[n] = [float(Path(f"{out}.{i}").read_text()) for i in range(n)]
    assert aurocs[2] == [aurocs[1][0]] * 2


def test_validation_is_scored_in_fp32_under_bf16_training():
    """Checkpoints and search trials are chosen on evaluate(): under a bf16 accelerator it still scores fp32 logits,
    the ones every report and the shipped model use (bf16 autocast moved them, and the AUROC, here)."""
    from accelerate import Accelerator

    from dermo.config import ModelConfig, RunConfig
    from dermo.models import create_model, predict_logits
    from dermo.training import evaluate, validation_metrics

    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # earlier tests' Accelerator (fp32) is process-wide
    try:
        acc = Accelerator(cpu=True, mixed_precision="bf16")
        torch.manual_seed(0)
        cfg = RunConfig().override(backbone="test_efficientnet", img_size=32, pretrained=False, batch_size=4)
        model = create_model(ModelConfig(backbone="test_efficientnet", img_size=32)).eval()
        torch.nn.init.normal_(model.fc.weight, std=0.5)
        images = torch.randint(0, 255, (64, 32, 32, 3), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(1))
        y = np.random.default_rng(0).integers(0, 2, 64)
        fp32, _ = predict_logits(model, images, cfg.model, batch_size=64)
        with acc.autocast():
            bf16, _ = predict_logits(model, images, cfg.model, batch_size=64)
        assert (bf16.float() - fp32).abs().max() > 1e-4  # bf16 really differs here
        model, _ = acc.prepare(model, torch.optim.AdamW(model.parameters()))  # as run() does: an autocast forward
        wrapped = model.forward
        after, _ = predict_logits(model, images, cfg.model, batch_size=64)
        assert (after.float() - fp32).abs().max() > 1e-4  # the prepared model's own forward is bf16 now
        m = evaluate(model, acc, images, y, cfg)
        assert m == validation_metrics(y, torch.softmax(fp32, 1)[:, 1].numpy())
        assert model.forward is wrapped  # and training goes on with it
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
