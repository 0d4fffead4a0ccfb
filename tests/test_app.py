"""The real app (``python app.py``) as a subprocess on a free port, hit with gradio_client: good photos, every bad
input of tests/badinputs.py, the server still answering after each, and the API listing showing only /predict."""
from __future__ import annotations

import dataclasses
import importlib
import json
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermo.inference import BANDS, sha256_file
from tests.badinputs import EXPECTED, make_bad_inputs
from tests.test_ood import make_tiny_model

ROOT = Path(__file__).resolve().parent.parent

# What the user must read for each refusal (a fragment of dermo.imageio's message).
MESSAGE_HINT = {"empty": "empty", "not_image": "not an image", "truncated": "incomplete",
                "too_many_pixels": "too large", "file_too_large": "too large"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(model_dir: Path, port: int, log: Path, **env_extra: str) -> subprocess.Popen:
    env = {**os.environ, "DERMO_MODEL": str(model_dir), "GRADIO_SERVER_PORT": str(port),
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False", "DERMO_THREADS": "1",
           **env_extra}
    return subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 400) -> None:
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"app not ready after {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = make_tiny_model(tmp_path_factory.mktemp("app_model"))
    port = free_port()
    log = tmp_path_factory.mktemp("app_log") / "app.log"
    cache = tmp_path_factory.mktemp("gradio_cache")
    proc = start_app(model, port, log, GRADIO_TEMP_DIR=str(cache))
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_ready(proc, url, log)
        yield {"url": url, "model": model, "log": log, "cache": cache}
    finally:
        stop_app(proc)


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server["url"], verbose=False)


def good_images(tiny_data: Path, n: int = 3) -> list[Path]:
    return sorted((tiny_data / "images").glob("*.jpg"))[:n]


def call(client, path: Path):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), api_name="/predict")


def check_verdict(r: dict, model: Path) -> None:
    assert r["quality"]["ok"] is True and r["quality"]["reasons"] == []
    assert r["band"] in BANDS and 0.0 <= r["probability"] <= 1.0
    low, high = r["band_edges"]["low"], r["band_edges"]["high"]
    want = "high" if r["probability"] >= high else "low" if r["probability"] < low else "medium"
    assert r["band"] == want
    assert r["model"]["sha256"] == sha256_file(model / "model.safetensors")
    assert r["model"]["name"] == "tiny-test" and r["model"]["version"] == "0.0.1"
    assert len(r["heatmap"]) == 2 and abs(sum(map(sum, r["heatmap"])) - 1) < 1e-3  # 64 px test net: 2x2 map
    assert "not a diagnosis" in r["disclaimer"] and r["calibrated"] is False  # tiny model: interim values


@pytest.mark.slow
def test_only_predict_is_public(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert list(api["named_endpoints"]) == ["/predict"]
    assert not api["unnamed_endpoints"]
    ep = api["named_endpoints"]["/predict"]
    assert [p["label"] for p in ep["parameters"]] == ["image"] and [r["label"] for r in ep["returns"]] == ["result"]
    # not even callable: every other event (the examples' loader too) is private
    config = json.loads(urllib.request.urlopen(client.src.rstrip("/") + "/config", timeout=30).read())
    others = {d.get("api_name"): d.get("api_visibility") for d in config["dependencies"]
              if d.get("api_name") != "predict"}
    assert others and set(others.values()) == {"private"}, others
    # and not reachable past the queue: Gradio's direct REST route is closed (api_open=False)
    req = urllib.request.Request(client.src.rstrip("/") + "/gradio_api/run/predict", method="POST",
                                 data=b'{"data": [null]}', headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=30)
    assert ei.value.code == 404 and b"join the queue" in ei.value.read()
    # the page credits the dataset and its license, and says what the tool is not
    texts = " ".join(str(c.get("props", {}).get("value", "")) for c in config["components"])
    for needle in ("triage aid, not a diagnosis", "HAM10000", "doi:10.1038/sdata.2018.161", "CC BY-NC-SA 4.0"):
        assert needle in texts, needle


@pytest.mark.slow
def test_predict_on_real_photos(client, server, tiny_data):
    for p in good_images(tiny_data):
        check_verdict(call(client, p), server["model"])
    # each upload sits in its own folder of Gradio's cache, where the sweep finds it; nothing else is left there
    # (Gradio's gr.File input had left an empty tmpXXXX file beside them on every call)
    cached = [p for p in server["cache"].rglob("*") if p.is_file()]
    assert {p.name for p in cached} >= {p.name for p in good_images(tiny_data)}
    assert all(p.parent != server["cache"] and p.stat().st_size > 0 for p in cached), cached


@pytest.mark.slow
def test_swept_uploads_leave_no_folders_behind(tmp_path, tiny_data):
    """Gradio's sweep deletes an upload's file but not its folder, named by a hash of the photo: our sweep removes
    the emptied folders, and a stopped server (SIGTERM) leaves no upload, file or folder, in its cache."""
    from gradio_client import Client

    model, cache, log, port = make_tiny_model(tmp_path / "m"), tmp_path / "cache", tmp_path / "app.log", free_port()
    cache.mkdir()
    proc = start_app(model, port, log, GRADIO_TEMP_DIR=str(cache), DERMO_CACHE_TTL="2")
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_ready(proc, url, log)
        kept = {d for d in cache.rglob("*") if d.is_dir()}  # made at start (the examples, when there are any)
        client = Client(url, verbose=False)
        first, second = good_images(tiny_data, 2)
        assert call(client, first)["band"] in BANDS
        folder = next(p.parent for p in cache.rglob(first.name))
        deadline = time.time() + 60
        while folder.exists() and time.time() < deadline:
            time.sleep(0.5)
        assert not folder.exists(), sorted(cache.rglob("*"))
        assert call(client, second)["band"] in BANDS  # the server still takes uploads
    finally:
        proc.terminate()  # Gradio takes several seconds to close
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-2000:]
    left = {p for p in cache.rglob("*")} - kept
    assert not [p for p in left if p.is_file() and p.name in (first.name, second.name)], left
    assert not [d for d in left if d.is_dir() and not any(d.iterdir())], left


@pytest.mark.slow
def test_every_bad_input_gets_a_clear_answer_and_the_server_keeps_working(client, server, tiny_data, tmp_path):
    from gradio_client.exceptions import AppError

    good = good_images(tiny_data, 1)[0]
    bad = make_bad_inputs(tmp_path)
    bad.pop("missing")  # a path that does not exist cannot be uploaded; dermo/imageio tests cover it
    for name, path in bad.items():
        expected = EXPECTED[name]
        if expected == "ok":
            # decoded (dermo.imageio's tests check their pixels), then refused by the quality gate: every one of
            # these synthetic files is smaller than its minimum, so the answer is a retake message, not a verdict
            # (verdicts on real photos: test_predict_on_real_photos)
            r = call(client, path)
            assert r["quality"]["codes"] == ["too_small"] and r["quality"]["ok"] is False, (name, r["quality"])
            assert r["band"] is None and r["probability"] is None and r["quality"]["reasons"], name
        else:
            with pytest.raises(AppError) as e:
                call(client, path)
            msg = str(e.value)
            assert e.value.title == expected, (name, e.value.title)  # the code a program branches on
            assert MESSAGE_HINT[expected] in msg.lower(), (name, msg)
            assert "Traceback" not in msg and ("upload" in msg.lower() or "resize" in msg.lower()), (name, msg)
        check_verdict(call(client, good), server["model"])  # still serving
    assert "Traceback" not in server["log"].read_text()


@pytest.mark.slow
def test_a_request_without_an_uploaded_file_is_told_how_to_send_one(client, server, tiny_data):
    """Inputs Gradio refuses before our handler runs (a plain path string; a path the client never uploaded) get a
    message naming handle_file, not a bare "Error", and the server logs neither a traceback nor the request."""
    from gradio_client.exceptions import AppError

    good = good_images(tiny_data, 1)[0]
    with pytest.raises(AppError) as e:
        client.predict(str(good), api_name="/predict")  # the common mistake: no handle_file
    assert "handle_file" in str(e.value) and "Traceback" not in str(e.value) and e.value.title == "bad_request"
    # a photo sent as a web address, which Gradio fetches itself: here one it may not fetch (a loopback address)
    from gradio_client import handle_file

    with pytest.raises(AppError) as e:
        client.predict(handle_file("http://127.0.0.1:9/jane_doe_mole.jpg"), api_name="/predict")
    assert "web address" in str(e.value) and "handle_file" in str(e.value), str(e.value)
    assert e.value.title == "url_failed"
    # a raw queue request naming a server path nobody uploaded, as a hand-written client might send
    config = json.loads(urllib.request.urlopen(server["url"] + "config", timeout=30).read())
    fn = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "predict")
    body = {"data": [{"path": str(good.resolve()), "orig_name": "jane_doe_mole.jpg",
                      "meta": {"_type": "gradio.FileData"}}],
            "fn_index": fn, "session_hash": "notuploaded1", "event_data": None, "trigger_id": None}
    req = urllib.request.Request(server["url"] + "gradio_api/queue/join", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()
    with urllib.request.urlopen(server["url"] + "gradio_api/queue/data?session_hash=notuploaded1", timeout=60) as r:
        done = next(json.loads(line[5:]) for line in r.read().decode().splitlines()
                    if line.startswith("data:") and '"process_completed"' in line)
    assert done["success"] is False and "handle_file" in done["output"]["error"], done
    assert done["output"]["title"] == "bad_request"
    body.update(data=[], session_hash="noinputs0001")  # no inputs at all (Gradio itself logged a traceback)
    req = urllib.request.Request(server["url"] + "gradio_api/queue/join", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()
    with urllib.request.urlopen(server["url"] + "gradio_api/queue/data?session_hash=noinputs0001", timeout=60) as r:
        done = next(json.loads(line[5:]) for line in r.read().decode().splitlines()
                    if line.startswith("data:") and '"process_completed"' in line)
    assert done["success"] is False and done["output"]["title"] == "bad_request", done
    assert "handle_file" in done["output"]["error"]
    check_verdict(call(client, good), server["model"])  # still serving
    log = server["log"].read_text()
    assert "Traceback" not in log and "jane_doe" not in log and str(good.parent) not in log


@pytest.mark.slow
def test_ui_handler_in_process(tmp_path, tiny_data, monkeypatch):
    """analyze_ui: band card, overlay and a PNG report from one forward pass; retake message when the gate fails."""
    model = make_tiny_model(tmp_path / "m")
    monkeypatch.setenv("DERMO_MODEL", str(model))
    sys.modules.pop("app", None)
    monkeypatch.syspath_prepend(str(ROOT))
    app = importlib.import_module("app")
    try:
        html, overlay, report = app.analyze_ui(str(good_images(tiny_data, 1)[0]))
        assert "risk" in html and "%" in html and overlay["value"].mode == "RGB"
        assert overlay["label"].startswith(app.HEATMAP_LABEL)
        assert html.count(" risk</h2>") == 1 and " risk: " not in html  # the band's text, without its heading again
        # the colour key runs along the overlay's own colour map, least weighed to most
        from dermo.report_card import _lut

        lo, hi = ("#%02x%02x%02x" % tuple(int(c) for c in _lut()[i]) for i in (0, 255))
        assert f"linear-gradient(to right, {lo}, " in app.HEATMAP_KEY and app.HEATMAP_KEY.count("#") == 6
        assert f", {hi})" in app.HEATMAP_KEY and ">less<" in app.HEATMAP_KEY and ">more<" in app.HEATMAP_KEY
        # the label says why a map is faint: an even spread is, a map peaked on a few cells is not
        assert app.heatmap_label(np.full((7, 7), 1 / 49)) == app.HEATMAP_LABEL + (
            ": spread over much of the photo, so the map is faint")
        peaked = np.full((7, 7), 0.5 / 48)
        peaked[3, 3] = 0.5  # 24.5x an even share
        assert app.heatmap_label(peaked) == app.HEATMAP_LABEL
        edge = np.full((7, 7), 1.0)
        edge[0, 0] = 1.5 * 48 / 47.5  # 1.5x the mean exactly: strength 0.5, the edge, not faint
        assert abs(app.attention_strength(edge) - 0.5) < 1e-9 and app.heatmap_label(edge) == app.HEATMAP_LABEL
        assert Path(report["value"]).read_bytes()[:4] == b"\x89PNG"
        bad = make_bad_inputs(tmp_path / "bad")
        html, overlay, report = app.analyze_ui(str(bad["one_pixel"]))
        assert app.RETAKE in html and overlay is None and report["visible"] is False
        # a file that cannot be used: its message stays on the page in place of any earlier verdict
        for path, words in ((str(bad["zero_byte"]), "empty"), (None, "No photo")):
            html, overlay, report = app.analyze_ui(path)
            assert "dh-error" in html and words in html and "risk" not in html.lower()
            assert overlay is None and report["visible"] is False and report["value"] is None
        # a new photo clears the last result; one that cannot be used says so before Analyse
        for path in (None, str(good_images(tiny_data, 1)[0])):
            html, overlay, report = app.on_new_photo(path)
            assert html == app.WELCOME and overlay is None and report["visible"] is False
        html, overlay, report = app.on_new_photo(str(bad["zero_byte"]))
        assert "dh-error" in html and "empty" in html and overlay is None and report["visible"] is False
        # a photo most browsers cannot preview (the photo box stays blank) is said to have arrived
        tif = tmp_path / "photo.tif"
        Image.open(good_images(tiny_data, 1)[0]).save(tif)
        for path, kind in ((tif, "TIFF"), (bad.get("good_heic"), "HEIC/HEIF")):
            if path is not None:
                html, overlay, report = app.on_new_photo(str(path))
                assert "dh-no-preview" in html and f"Your {kind} photo arrived" in html and overlay is None
        html, _, _ = app.analyze_ui(str(tif))
        assert "risk" in html and "dh-no-preview" not in html
        assert app.predict(str(good_images(tiny_data, 1)[0]))["band"] in BANDS
        assert app.demo.delete_cache is not None  # uploads and results are swept from the cache
        with pytest.raises(app.gr.Error, match="handle_file") as e:  # an API call that carried no file
            app.predict(None)
        assert e.value.title == "bad_request"  # the code an API caller branches on (not the page's no_image)
        photo = str(good_images(tiny_data, 1)[0])
        # a fault of the server (here: the model raises) is said as such, in the API and in the card
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(app.PREDICTOR, "predict", lambda img: 1 / 0)
            with pytest.raises(app.gr.Error) as e:
                app.predict(photo)
            assert e.value.message == app.SERVER_FAULT and e.value.title == "server_fault"  # the one to retry
            html, overlay, report = app.analyze_ui(photo)
            assert "Something went wrong" in html and "not because of the photo" in html and report["visible"] is False
        # within 1e-6 of a band edge: the band is that of the reported (rounded) probability, in the API and the card
        real = app.PREDICTOR.predict(app.open_upload(photo))
        low, high = app.BAND_EDGES["low"], app.BAND_EDGES["high"]
        for p in (low - 1e-7, low + 1e-7, high - 1e-7, high - 4e-7, high + 1e-7):
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(app.PREDICTOR, "predict", lambda img, p=p: dataclasses.replace(real, probability=p))
                mp.setattr(app, "check_ood", lambda *a: None)
                r = app.predict(photo)
                rule = "high" if r["probability"] >= high else "low" if r["probability"] < low else "medium"
                assert r["band"] == rule, (p, r["probability"])
                html = app.analyze_ui(photo)[0]
                assert f"{rule.capitalize()} risk" in html, p
        with pytest.MonkeyPatch.context() as mp:  # a decoder failure that is no ImageError: the file, not the server
            mp.setattr(app, "load_image", lambda path: 1 / 0)
            with pytest.raises(app.gr.Error) as e:
                app.predict(photo)
            assert e.value.title == "corrupt" and "could not be read as a photo" in e.value.message
        with pytest.MonkeyPatch.context() as mp:  # the result PNG fails half-way: nothing of it is left
            mp.setattr(app, "render_report", lambda name, *a: Path(name).write_bytes(b"half") and 1 / 0)
            before = set(Path(app._TMP).iterdir())
            html, overlay, report = app.analyze_ui(photo)
            assert "Something went wrong" in html and overlay is None and report["visible"] is False
            assert set(Path(app._TMP).iterdir()) == before
    finally:
        sys.modules.pop("app", None)


def test_result_contents_lesion_check_and_file_lifetimes(tmp_path, tiny_data, tiny_manifest, monkeypatch):
    """What the API result and the card say, field by field, for a model with the not-a-lesion statistics (every
    other app test runs a model without them), and how long files stay: the page's figure is the code's."""
    import numpy as np

    from dermo.inference import BAND_TEXT, bands_text, format_banded
    from dermo.ood import fit_for_model

    model = make_tiny_model(tmp_path / "m")
    fit_for_model(model, data_dir=tiny_data, manifest=tiny_manifest, components=4)
    monkeypatch.setenv("DERMO_MODEL", str(model))
    monkeypatch.delenv("DERMO_CACHE_TTL", raising=False)
    sys.modules.pop("app", None)
    monkeypatch.syspath_prepend(str(ROOT))
    app = importlib.import_module("app")
    try:
        assert app.OOD is not None
        photo = str(good_images(tiny_data, 1)[0])
        r = app.predict(photo)
        assert r["quality"]["ok"] and r["quality"]["lesion_check"] is True
        assert r["band_text"] == BAND_TEXT[r["band"]]
        pred = app.PREDICTOR.predict(app.open_upload(photo))
        assert r["heatmap"] == np.round(np.asarray(pred.attention, np.float64), 6).tolist()
        low, high = r["band_edges"]["low"], r["band_edges"]["high"]
        for p, band in ((low / 2, "low"), ((low + high) / 2, "medium"), ((high + 1) / 2, "high")):  # each band's words
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(app.PREDICTOR, "predict", lambda img, p=p: dataclasses.replace(pred, probability=p))
                r = app.predict(photo)
                assert r["band"] == band and r["band_text"] == BAND_TEXT[band]
                html = app.analyze_ui(photo)[0]
                assert bands_text(*format_banded(r["probability"], low, high)[1:]) in html
                heading, rest = BAND_TEXT[band].split(": ", 1)  # the text under its heading, not repeated
                assert heading == f"{band.capitalize()} risk" and f">{heading}</h2><p>{rest[0].upper()}{rest[1:]}</p>" in html
        # the statistics are used: a threshold this photo's embedding exceeds turns the verdict into a retake
        score = app.OOD.score(pred.embedding[None])[0]
        monkeypatch.setattr(app.OOD, "threshold", float(score) * 0.5)
        r = app.predict(photo)
        assert r["quality"]["codes"] == ["not_skin"] and r["band"] is None and r["probability"] is None
        html = app.analyze_ui(photo)[0]
        assert app.RETAKE in html and r["quality"]["reasons"][0] in html
        # a retake card says why
        small = tmp_path / "small.png"
        Image.new("RGB", (40, 30), (180, 120, 100)).save(small)
        r = app.predict(str(small))
        assert r["quality"]["codes"] == ["too_small"] and r["quality"]["reasons"][0] in app.analyze_ui(str(small))[0]
        # files: deleted at the first sweep after the cache's lifetime, and the page says that long
        assert (app.CACHE_TTL, app.SWEEP_S, app.KEPT_S) == (300, 60, 360)
        notes = [b.value for b in app.demo.blocks.values() if isinstance(getattr(b, "value", None), str)
                 and "deleted from the server within" in b.value]
        assert len(notes) == 1 and "within 6 minutes" in notes[0]
        old, new = app._TMP / "old", app._TMP / "new"
        for d in (old, new):
            d.mkdir()
            (d / "card.png").write_bytes(b"x")
        os.utime(old, (time.time() - app.REPORT_TTL - 5,) * 2)
        app._sweep()
        assert not old.exists() and new.exists()
        assert [app._minutes(s) for s in (1, 60, 61, 360, 361)] == ["1 minute", "1 minute", "2 minutes", "6 minutes",
                                                                   "7 minutes"]  # never shorter than the truth
        # the sweeper thread: every SWEEP_S, our result cards and the empty folders Gradio's sweep leaves behind
        calls = []

        class Stop(Exception):
            pass

        def sleep(s):
            calls.append(("sleep", s))
            if len(calls) > 3:
                raise Stop

        with pytest.MonkeyPatch.context() as mp, pytest.raises(Stop):
            mp.setattr(app.time, "sleep", sleep)  # the time module's: undone at once
            mp.setattr(app, "_sweep", lambda: calls.append(("sweep",)))
            mp.setattr(app, "remove_empty_folders", lambda root, min_age: calls.append(("folders", root, min_age)))
            app._sweep_forever()
        assert calls[:3] == [("sleep", app.SWEEP_S), ("sweep",), ("folders", app.demo.GRADIO_CACHE, app.SWEEP_S)]
    finally:
        sys.modules.pop("app", None)


# ------------------------------------------------------------------------------------------------------ the Space
def load_build():
    spec = importlib.util.spec_from_file_location("space_build", ROOT / "space" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def front_matter(readme: Path) -> dict[str, str]:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head = text.split("---\n")[1]
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in head.splitlines()
                                               if ":" in line and not line.startswith(" "))}


def test_space_folder_is_complete_and_pinned(tmp_path):
    import gradio

    from dermo.imageio import load_image

    build = load_build()
    model = make_tiny_model(tmp_path / "model")
    out = build.build_space(tmp_path / "space", model)
    for rel in ("app.py", "README.md", "requirements.txt", "dermo/__init__.py", "dermo/inference.py",
                "dermo/ood.py", "dermo/report_card.py", "dermo/assets/config.json",
                "dermo/assets/model.safetensors", "examples/ATTRIBUTION.md", "LICENSE", "LICENSE-MODELS"):
        assert (out / rel).is_file(), rel
    assert not list(out.rglob("__pycache__")) and not list(out.rglob("*.pyi"))
    meta = front_matter(out / "README.md")
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__ and meta["app_file"] == "app.py"
    assert meta["license"] == "cc-by-nc-sa-4.0" and "models" in meta and meta["title"] and meta["emoji"]
    lock = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    lock = {k.lower().replace("-", "_"): v.strip() for k, v in lock.items()}
    reqs = [r for r in (out / "requirements.txt").read_text().splitlines() if r.strip() and not r.startswith("#")]
    for r in reqs:
        name, version = r.split("==")
        assert lock[name.lower().replace("-", "_")] == version, r
    # pinned all the way down: every package the Space's own list pulls in (gradio's fastapi, onnxruntime's
    # protobuf, ...) has its line, so the Space cannot install a newer one than the tests ran with
    from tests.space_env import canonical, closure, requirement_names

    assert closure(requirement_names(ROOT / "space" / "requirements.txt")) == {canonical(r.split("==")[0]) for r in reqs}
    examples = sorted((out / "examples").glob("*.jpg"))
    assert len(examples) >= 2 and all(min(load_image(p).size) >= 64 for p in examples)
    with pytest.raises(FileNotFoundError, match="export"):
        build.build_space(tmp_path / "x", tmp_path / "no_model")
    with pytest.raises(ValueError, match="overwrite"):
        build.build_space(ROOT, model)
    with pytest.raises(ValueError, match="overwrite"):  # any folder with files of its own, e.g. the package
        build.build_space(ROOT / "dermo", model)
    assert (ROOT / "dermo" / "__init__.py").is_file()
    assert build.build_space(out, model) == out  # a previous build is rebuilt in place
    bad = tmp_path / "tampered"  # a bundle whose ONNX file fails its sha256 never becomes a Space
    shutil.copytree(ROOT / "dermo" / "assets", bad)
    with open(bad / "model.onnx", "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(SystemExit, match="corrupted or was replaced"):
        build.main(["--out", str(tmp_path / "space_bad"), "--model", str(bad)])


def test_space_serves_with_only_its_own_requirements(tmp_path):
    """The built Space (bundled ONNX model) predicts, renders its card and result PNG when only what
    space/requirements.txt installs can be imported: a module the app needs but the Space lacks fails here."""
    from tests.space_env import bundled_modules, closure, requirement_names, write_blocker

    out = load_build().build_space(tmp_path / "space")
    allowed = closure(requirement_names(out / "requirements.txt"))
    assert "scipy" not in closure(["gradio", "onnxruntime", "pillow"])  # the blocker has something to block
    assert {"app", "dermo"} <= bundled_modules(out)
    write_blocker(tmp_path / "site", allowed, bundled_modules(out))
    code = ("import sys, app\n"
            "r = app.predict(sys.argv[1]); assert r['band'] in ('low', 'medium', 'high'), r\n"
            "html, overlay, report = app.analyze_ui(sys.argv[1]); assert 'risk' in html and report['visible'], html\n"
            "print('served')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
           "HF_HUB_OFFLINE": "1"}
    env.pop("DERMO_MODEL", None)
    example = sorted((out / "examples").glob("*.jpg"))[0]
    run = lambda c: subprocess.run([sys.executable, "-c", c, str(example)], cwd=out, env=env,  # noqa: E731
                                   capture_output=True, text=True, timeout=300)
    blocked = run("import torch")  # installed here, not in the Space
    assert "No module named 'torch': the Space does not install torch" in blocked.stderr, blocked.stderr[-2000:]
    proc = run(code)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("served"), proc.stderr[-3000:]


def test_space_push_fails_clearly_without_token_or_network(tmp_path, monkeypatch):
    build = load_build()
    folder = build.build_space(tmp_path / "space", make_tiny_model(tmp_path / "model"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(PermissionError, match="HF_TOKEN"):
        build.push_space(folder, "someone/dermohelper")
    with pytest.raises(SystemExit, match="HF_TOKEN"):
        build.main(["--out", str(tmp_path / "space2"), "--model", str(tmp_path / "model"),
                    "--push", "someone/dermohelper"])
    # a token but no Hub reachable (closed local port): a clear network error, the folder stays ready
    with pytest.raises(ConnectionError, match="cannot reach the Hugging Face Hub"):
        build.push_space(folder, "someone/dermohelper", token="hf_fake", endpoint="http://127.0.0.1:9")
    assert (folder / "app.py").is_file()


def test_every_error_and_quality_code_a_caller_can_get_is_documented(monkeypatch):
    """The README's API section and the endpoint's own description (view_api) name every code an API caller can
    get: an error's title (API_ERROR_CODES, less those an upload cannot cause) and quality.codes (the gate's and the
    lesion check's); and they name no code that does not exist."""
    import re

    from dermo.quality import MESSAGES

    sys.modules.pop("app", None)
    monkeypatch.syspath_prepend(str(ROOT))
    app = importlib.import_module("app")
    # paths and arrays, not files; and no_image, the page's "no photo yet" (an API call without a file: bad_request)
    not_by_upload = {"not_found", "not_a_file", "unreadable", "unsupported_array", "no_image"}
    errors = set(app.API_ERROR_CODES) - not_by_upload
    readme = (ROOT / "README.md").read_text()
    api = readme[readme.index("**The API**"):readme.index("**The command line**")]
    named = set(re.findall(r"`([a-z_]+)`", api))
    assert errors <= named, errors - named
    assert errors <= set(re.findall(r"[a-z_]+", app.API_DESCRIPTION)), errors
    gate = set(MESSAGES) | {"not_skin"}
    assert gate <= named, gate - named
    codes_named = {c for c in named if c in set(app.API_ERROR_CODES) | gate}
    assert codes_named == errors | gate  # nothing documented that cannot happen
    space = (ROOT / "space" / "README.md").read_text()  # the Space's page says the same
    space_named = set(re.findall(r"`([a-z_]+)`", space[space.index("## API"):space.index("## Privacy")]))
    assert {c for c in space_named if c in set(app.API_ERROR_CODES) | gate} == errors | gate
