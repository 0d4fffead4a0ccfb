"""Round trips through gradio_client against the real app and, in the same run, a bare Gradio app.

    python benchmarks/app.py [--model DIR] [--requests 200] [--json reports/app_benchmark.json]

Both servers run as subprocesses on free ports with the same endpoint shape (a file upload in, JSON out,
``api_name="predict"``, same queue and concurrency settings); the bare app's handler only echoes a small JSON,
so its figures are the framework's own cost (upload, queue, SSE, client). Each measurement: ``--requests``
round trips of one real HAM10000 photo with 1 client, then with 8 concurrent clients (each thread its own
``Client``); the two apps alternate in blocks so that background load hits both alike. Reports p50/p95 latency,
throughput and errors, and checks the targets: single-client p50 at most 25 ms above the bare app's;
8 clients: 0 errors and throughput >= 0.8x the bare app's. Writes the JSON and a Markdown table (same stem).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGET_P50_MS, TARGET_TPUT = 25.0, 0.8


def serve_bare(port: int) -> None:
    """The bare app: same components and settings as app.py's API, handler echoes a small JSON."""
    import gradio as gr

    def predict(file: str | None) -> dict:
        return {"probability": 0.5, "band": "medium", "ok": file is not None}

    with gr.Blocks() as demo:
        f = gr.File(visible=False, type="filepath")
        out = gr.JSON(visible=False)
        gr.Button(visible=False).click(predict, f, out, api_name="predict", concurrency_limit=4)
    demo.queue(default_concurrency_limit=2).launch(server_name="127.0.0.1", server_port=port,
                                                   max_file_size="30mb")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **env},
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 300) -> None:
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"server at {url} not ready after {timeout}s")


def run_load(url: str, image: Path, n: int, clients: int) -> dict:
    """n round trips split over ``clients`` threads; latency per request in ms, wall-clock throughput."""
    from gradio_client import Client, handle_file

    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    per = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    conns = [Client(url, verbose=False) for _ in range(clients)]
    for c in conns:  # warm-up, not timed
        c.predict(handle_file(str(image)), api_name="/predict")

    def worker(i: int) -> None:
        for _ in range(per[i]):
            t = time.perf_counter()
            try:
                r = conns[i].predict(handle_file(str(image)), api_name="/predict")
                assert isinstance(r, dict)
                with lock:
                    lat.append(1000 * (time.perf_counter() - t))
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(repr(e)[:200])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"lat": lat, "errors": errors, "wall": wall}


def stats(parts: list[dict]) -> dict:
    lat = np.array([x for p in parts for x in p["lat"]])
    errors = [e for p in parts for e in p["errors"]]
    wall = sum(p["wall"] for p in parts)
    n = len(lat) + len(errors)
    return {"requests": n, "errors": len(errors), "error_samples": errors[:3],
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p95_ms": float(np.percentile(lat, 95)) if len(lat) else None,
            "mean_ms": float(lat.mean()) if len(lat) else None,
            "throughput_rps": len(lat) / wall if wall else None}


def git_commit() -> str:
    """The checkout's commit (short), with ``+dirty`` when tracked files outside ``reports/`` (which this benchmark
    rewrites) differ from it; ``unknown`` outside git."""
    try:
        run = lambda *c: subprocess.run(["git", "-C", str(ROOT), *c], capture_output=True, text=True,  # noqa: E731
                                        check=True).stdout.strip()
        return run("rev-parse", "--short", "HEAD") + ("+dirty" if run("status", "--porcelain", "-uno", "--", ".", ":!reports") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model for the app (DERMO_MODEL; default: the bundled one)")
    p.add_argument("--requests", type=int, default=200, help="round trips per app and concurrency level")
    p.add_argument("--blocks", type=int, default=4, help="alternate the apps in this many blocks")
    p.add_argument("--image", default=None, help="photo to send (default: a HAM10000 validation image)")
    p.add_argument("--json", default=str(ROOT / "reports" / "app_benchmark.json"))
    a = p.parse_args()

    if a.image:
        image = Path(a.image)
    else:
        sys.path.insert(0, str(ROOT))
        from dermo.config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST
        from dermo.ood import split_paths

        image = Path(split_paths(DEFAULT_DATA_DIR, "validation", DEFAULT_MANIFEST)[0])
    load_before = os.getloadavg()  # 1, 5, 15 min: other work on the machine slows both apps and shows here
    logdir = Path(tempfile.mkdtemp(prefix="dermo_app_bench_"))  # server logs, shown if a server fails
    ports = {"app": free_port(), "bare": free_port()}
    env_app = {"GRADIO_SERVER_PORT": str(ports["app"]), "GRADIO_SERVER_NAME": "127.0.0.1"}
    if a.model:
        env_app["DERMO_MODEL"] = a.model
    procs = {"app": start([sys.executable, "app.py"], env_app, logdir / "bench_app.log"),
             "bare": start([sys.executable, __file__, "--serve-bare", str(ports["bare"])], {},
                           logdir / "bench_bare.log")}
    urls = {k: f"http://127.0.0.1:{v}/" for k, v in ports.items()}
    try:
        for k in procs:
            wait_ready(procs[k], urls[k], logdir / f"bench_{k}.log")
        from gradio_client import Client, handle_file

        probe = Client(urls["app"], verbose=False).predict(handle_file(str(image)), api_name="/predict")
        results: dict = {}
        for clients in (1, 8):
            parts: dict[str, list[dict]] = {"app": [], "bare": []}
            per_block = [a.requests // a.blocks + (1 if i < a.requests % a.blocks else 0) for i in range(a.blocks)]
            for i, n in enumerate(per_block):
                order = ("bare", "app") if i % 2 == 0 else ("app", "bare")
                for k in order:
                    parts[k].append(run_load(urls[k], image, n, clients))
            results[f"{clients}_client" + ("s" if clients > 1 else "")] = {k: stats(v) for k, v in parts.items()}
            r = results[f"{clients}_client" + ("s" if clients > 1 else "")]
            print(f"{clients} client(s): app p50 {r['app']['p50_ms']:.1f} ms, {r['app']['throughput_rps']:.1f} req/s; "
                  f"bare p50 {r['bare']['p50_ms']:.1f} ms, {r['bare']['throughput_rps']:.1f} req/s", flush=True)
    finally:
        for pr in procs.values():
            pr.terminate()
        for pr in procs.values():
            try:
                pr.wait(10)
            except subprocess.TimeoutExpired:
                pr.kill()

    one, eight = results["1_client"], results["8_clients"]
    overhead = one["app"]["p50_ms"] - one["bare"]["p50_ms"]
    ratio = eight["app"]["throughput_rps"] / eight["bare"]["throughput_rps"]
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "python " + " ".join(sys.argv), "commit": git_commit(), "platform": platform.platform(),
              "cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "image": image.name, "model": probe.get("model"), "probe_band": probe.get("band"),
              "results": results,
              "single_client_p50_overhead_ms": overhead, "eight_client_throughput_ratio": ratio,
              "targets": {"single_client_p50_overhead_ms_max": TARGET_P50_MS, "eight_client_throughput_ratio_min":
                          TARGET_TPUT, "eight_client_errors": 0},
              "meets_targets": {"single_client_p50": overhead <= TARGET_P50_MS,
                                "eight_client_errors": eight["app"]["errors"] == 0,
                                "eight_client_throughput": ratio >= TARGET_TPUT}}
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = ["# App round trips (gradio_client)\n",
          f"`{report['command']}` on {report['date']} at commit {report['commit']}, {report['cpus']} CPUs, client "
          f"and servers on one machine (load average over 1 min {report['load_average_before'][0]:.2f} before the "
          f"run, {report['load_average_after'][0]:.2f} after it, its own load included); model "
          f"{probe['model']['name']} {probe['model']['version']} (sha256 {probe['model']['sha256'][:12]}...).\n",
          "| clients | app | requests | errors | p50 ms | p95 ms | throughput req/s |",
          "|---:|---|---:|---:|---:|---:|---:|"]
    for key, c in (("1_client", 1), ("8_clients", 8)):
        for k, name in (("app", "DermoHelper"), ("bare", "bare Gradio (echo)")):
            s = results[key][k]
            md.append(f"| {c} | {name} | {s['requests']} | {s['errors']} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} "
                      f"| {s['throughput_rps']:.2f} |")
    md.append(f"\nSingle-client p50 overhead over the bare app: {overhead:.1f} ms (target <= {TARGET_P50_MS:.0f}: "
              f"{'met' if report['meets_targets']['single_client_p50'] else 'NOT met'}). 8 clients: "
              f"{eight['app']['errors']} errors, throughput {ratio:.2f}x the bare app's (target >= {TARGET_TPUT}: "
              f"{'met' if report['meets_targets']['eight_client_throughput'] else 'NOT met'}).")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]))
    else:
        main()
