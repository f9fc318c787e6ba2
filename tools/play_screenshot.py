"""The README's screenshot of ``pewm play`` (docs/media/play.png), taken in headless Chromium.

Starts ``pewm play`` on a free port with the shipped model and its default settings, walks out of
the start room and turns back (real key presses through tests/browser.py's DevTools client), and
saves the page.

    python tools/play_screenshot.py [--out docs/media/play.png] [--keys ...]
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import Browser, free_port  # noqa: E402

KEYS = "ArrowLeft " * 4 + "ArrowUp " * 6 + "ArrowRight " * 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/media/play.png")
    ap.add_argument("--keys", default=KEYS.strip(), help="space-separated key names pressed one step at a time")
    args = ap.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "pewm.cli.main", "play", "--port", str(port), "--no-open"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in server.stdout:
            m = re.search(r"open (http://\S+)", line)
            if m:
                break
        else:
            raise SystemExit("pewm play did not start")
        with Browser(window_size=(1280, 1000)) as b:
            page = b.page
            page.goto(m.group(1))
            page.wait_for("window.pewmPlay.connected && window.pewmPlay.frames >= 1", timeout=120)
            for i, key in enumerate(args.keys.split(), start=1):
                page.press(key)
                page.wait_for(f"window.pewmPlay.step === {i} && !window.pewmPlay.busy", timeout=120)
            page.drag("#view3d", 60, -20)
            out = page.screenshot(args.out)
            print(f"wrote {out}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


if __name__ == "__main__":
    main()
