"""``pewm play`` latency: from a key press to the new imagined frame, as a person at the page sees it.

Starts the real server (:func:`pewm.play.server.start_server`, uvicorn on a free local port) with
the model, connects a websocket client as the page does, and takes ``--steps`` steps (default 100)
of a walk through the default house (forward, with turns), waiting for each frame before the next
key, at each sampling setting: the model's default DDIM steps and the fastest the page offers.
Reported per setting, p50 / p95 / max over the steps of

* ``end_to_end``: key message sent -> frame message received and decoded (JSON) by the client;
* ``server``: action received -> frame message ready on the server (imagination, simulation,
  PNG encoding, map points, top-down image);
* ``imagination``: the world model's chunk alone (read memory, generate, fuse).

    python benchmarks/play_latency.py [--model DIR] [--steps 100] [--settings default,1] [--threads N]
        [--out benchmarks/results/play_latency.json]

Targets (issue #14, this 2-core CPU): default settings p50 <= 1.0 s, p95 <= 2.0 s; the fastest
setting p50 <= 0.4 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from _results import write_results
from websockets.sync.client import connect

from pewm.assets import load_model, resolve_model_path
from pewm.model.threads import set_threads
from pewm.play import PlayConfig
from pewm.play.server import PlayServer, ServerConfig, start_server

TARGETS = {"default": {"p50": 1.0, "p95": 2.0}, "fastest": {"p50": 0.4}}
WALK = ["forward", "forward", "forward", "left", "left", "forward", "forward", "right", "right", "right"]


def _recv(ws, want: str) -> dict:
    while True:
        m = json.loads(ws.recv(timeout=120))
        if m["type"] == want:
            return m
        if m["type"] == "error":
            raise RuntimeError(m["message"])


def _stats(x: list[float]) -> dict:
    a = np.asarray(x)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "max": float(a.max()),
            "mean": float(a.mean()), "n": int(a.size)}


def measure(url: str, steps: int, sampling_steps: int) -> dict:
    with connect(url.replace("http://", "ws://") + "ws", max_size=2**25) as ws:
        ws.send(json.dumps({"type": "hello", "session": None}))
        _recv(ws, "welcome")
        _recv(ws, "frame")
        ws.send(json.dumps({"type": "settings", "steps": sampling_steps}))
        _recv(ws, "settings")
        e2e, server, imagination, collided = [], [], [], 0
        for i in range(steps):
            action = WALK[i % len(WALK)]
            t0 = time.perf_counter()
            ws.send(json.dumps({"type": "action", "action": action}))
            f = _recv(ws, "frame")
            e2e.append(time.perf_counter() - t0)
            server.append(f["server_seconds"])
            imagination.append(f["seconds"])
            collided += bool(f["collided"])
        return {"sampling_steps": sampling_steps, "end_to_end": _stats(e2e), "server": _stats(server),
                "imagination": _stats(imagination), "blocked_moves": collided}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--steps", type=int, default=100, help="steps measured per setting")
    ap.add_argument("--settings", default="default,1",
                    help="comma-separated DDIM steps per frame; 'default' = the model's (default: default,1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: pewm's policy)")
    ap.add_argument("--out", default="benchmarks/results/play_latency.json")
    args = ap.parse_args()
    threads = set_threads(args.threads)
    model_dir = resolve_model_path(args.model)
    model = load_model(model_dir)
    default_steps = model.config.diffusion.sampling_steps
    settings = [default_steps if s.strip() == "default" else int(s) for s in args.settings.split(",")]
    running = start_server(PlayServer(model, ServerConfig(port=0, play=PlayConfig())))
    try:
        rows = {}
        for s in settings:
            name = "default" if s == default_steps else ("fastest" if s == min(settings) else f"steps{s}")
            rows[name] = measure(running.url, args.steps, s)
            r = rows[name]
            print(f"{name:8s} ({s:2d} DDIM steps): end-to-end p50 {r['end_to_end']['p50']:.3f} s "
                  f"p95 {r['end_to_end']['p95']:.3f} s | server p50 {r['server']['p50']:.3f} s | "
                  f"imagination p50 {r['imagination']['p50']:.3f} s")
    finally:
        running.stop()
    met = {name: all(rows[name]["end_to_end"][k] <= v for k, v in t.items()) for name, t in TARGETS.items() if name in rows}
    write_results(args.out, {
        "model": str(model_dir), "steps_per_setting": args.steps, "threads": threads, "settings": rows,
        "targets": TARGETS, "targets_met": met, "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    })


if __name__ == "__main__":
    main()
