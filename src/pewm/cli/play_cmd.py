"""``pewm play``: walk through an imagined house in the browser (see :mod:`pewm.play`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = """Walk through an imagined house in your browser, with the memory and the map in view.

Starts a local web server and prints its address (and opens it in a browser when one is
available). Arrow keys or W A D move the agent in a procedural house that the model never saw
in training; each step the real simulator moves (walls block it) and the world model imagines the
view at the new pose from its persistent 3D memory. The page shows the imagined RGB and depth next
to the real view of the same pose (with their PSNR), the map from above with the path and the
field of view, and the 3D map (drag to orbit). Toggle the memory to see the paper's point: turn
away and back, and the room is still there with memory; without it, it is imagined anew. The
session can be downloaded as an mp4 (real | imagined | map) and the map as a PLY point cloud.

\b
Serves only this machine (127.0.0.1) unless --host says otherwise: the server has no login, so
another --host lets anyone who can reach it use it. One session per browser tab (a reload
continues it), at most --max-sessions at once. Ctrl+C stops the server.
"""

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _can_open_browser() -> bool:
    import os
    import sys

    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def register(app: typer.Typer) -> None:
    @app.command("play", help=HELP)
    def play_command(
        model: Optional[Path] = typer.Option(None, help="model directory or training run [the shipped model]"),
        house_seed: Optional[int] = typer.Option(
            None, help="house to walk in [the demo's unseen house of --seed]; 'new house' on the page moves on"
        ),
        seed: int = typer.Option(0, help="start pose and sampling noise (and the default house)"),
        port: int = typer.Option(8765, help="port to listen on (0: any free port)"),
        host: str = typer.Option("127.0.0.1", help="address to listen on; anything but 127.0.0.1/localhost/::1 "
                                                    "exposes the server to the network"),
        sampling_steps: Optional[int] = typer.Option(None, help="DDIM steps per imagined frame at the start [model default]"),
        anchor: Optional[str] = typer.Option(None, help="anchoring at the start: none | latent | pixel | both [model default]"),
        max_sessions: int = typer.Option(4, help="browser tabs served at once"),
        idle_timeout: float = typer.Option(900.0, help="seconds without input after which a session is closed"),
        threads: Optional[int] = typer.Option(None, help="torch CPU threads [$PEWM_THREADS, else 1: see docs/design.md]"),
        open_browser: bool = typer.Option(True, "--open/--no-open", help="open the page in a browser when one is available"),
    ) -> None:
        import signal
        import time
        import webbrowser

        from pewm.assets import load_model, resolve_model_path
        from pewm.cli.common import console, user_errors
        from pewm.play import PlayConfig
        from pewm.model.threads import set_threads
        from pewm.play.server import PlayServer, ServerConfig, start_server

        with user_errors():
            play = PlayConfig(house_seed=house_seed, seed=seed, sampling_steps=sampling_steps, anchor=anchor)
            config = ServerConfig(host=host, port=port, max_sessions=max_sessions, idle_timeout_s=idle_timeout, play=play)
            if threads is not None and threads < 1:
                raise ValueError(f"--threads must be >= 1, got {threads}")
            set_threads(threads)
            model_dir = resolve_model_path(model)
            wm = load_model(model_dir)
            if not config.is_loopback:
                console.print(f"[bold yellow]warning:[/] --host {host} serves pewm play to every machine that can reach "
                              "this one; it has no login. Use 127.0.0.1 unless you mean that.")
            running = start_server(PlayServer(wm, config))
        url = running.url
        console.print(f"pewm play: model {model_dir}")
        console.print(f"pewm play: open {url} in a browser (Ctrl+C to stop)", soft_wrap=True)
        if open_browser and _can_open_browser():
            webbrowser.open(url)
        signal.signal(signal.SIGTERM, lambda *_: setattr(running.server, "should_exit", True))
        try:
            while running.thread.is_alive():
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            running.stop()
            console.print("pewm play: stopped")
