"""``pewm play`` in a real headless Chromium (tests/browser.py): the command is started on a free
port, the page is driven with real key presses and clicks, and what a person would check is
asserted: the step counter advances, the imagined image changes, the map gains points, the memory
toggle changes the next frame, a reload resumes, the 3D view orbits, downloads arrive, and the
page makes no request to any other origin. A screenshot is saved as an artefact."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from browser import Browser, artifact_path, free_port

from pewm.play.server import STATIC_DIR

PAGE_BUDGET_BYTES = 2_000_000


@pytest.fixture(scope="module")
def play_url():
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "pewm.cli.main", "play", "--port", str(port), "--no-open",
                          "--sampling-steps", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "PEWM_THREADS": "1"})
    out = ""
    try:
        while True:
            line = p.stdout.readline()
            assert line, f"pewm play exited: {out}"
            out += line
            m = re.search(r"open (http://\S+)", line)
            if m:
                break
        yield m.group(1)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


STATE = "window.pewmPlay"


@pytest.fixture(scope="module")
def page():
    with Browser(window_size=(1280, 1000)) as b:  # tall enough for the whole page in the screenshot
        yield b.page


def _wait_step(page, n, timeout=60):
    return page.wait_for(f"{STATE}.step === {n} && !{STATE}.busy && {STATE}.lastImagined", timeout=timeout)


def test_walk_the_page_like_a_person(page, play_url):
    origin = play_url.rstrip("/")
    assert page.goto(play_url) == 200
    page.wait_for(f"{STATE}.connected && {STATE}.frames >= 1", timeout=60)
    session = page.evaluate(f"{STATE}.session")
    assert page.evaluate("document.getElementById('step').textContent") == "0"
    first = page.evaluate(f"{STATE}.lastImagined")
    points0 = page.evaluate(f"{STATE}.points")
    assert points0 > 0

    page.press("ArrowUp")
    _wait_step(page, 1)
    assert page.evaluate("document.getElementById('step').textContent") == "1"
    assert page.evaluate(f"{STATE}.lastImagined") != first
    for i, key in enumerate(["ArrowLeft", "a", "ArrowLeft", "d"]):
        page.press(key)
        _wait_step(page, 2 + i)
    assert page.evaluate(f"{STATE}.points") > points0  # the map view gained points
    assert page.evaluate("document.getElementById('points').textContent") != "0"
    page.click("#btn-right")
    _wait_step(page, 6)

    # the 3D view draws the map and orbits under the mouse
    shot = "document.getElementById('view3d').toDataURL()"
    before = page.evaluate(shot)
    page.drag("#view3d", 120, 40)
    page.wait_for(f"{shot} !== {before!r}", timeout=10)
    page.screenshot(artifact_path("play_walk.png"))

    # a reload resumes the same session where it was
    page.reload()
    page.wait_for(f"{STATE}.connected && {STATE}.frames >= 1", timeout=60)
    assert page.evaluate(f"{STATE}.session") == session
    assert page.evaluate(f"{STATE}.step") == 6 and page.evaluate(f"{STATE}.path.length") == 7

    # the memory toggle changes the next frame: reset (same house, same noise) and take the same
    # step with memory on, on again (identical: the comparison is fair), then off
    def after_reset_step():
        page.click("#btn-reset")
        page.wait_for(f"{STATE}.step === 0 && {STATE}.frames > 0", timeout=60)
        n = page.evaluate(f"{STATE}.frames")
        page.press("ArrowLeft")
        page.wait_for(f"{STATE}.frames > {n} && {STATE}.step === 1 && !{STATE}.busy", timeout=60)
        return page.evaluate(f"{STATE}.lastImagined")

    on1, on2 = after_reset_step(), after_reset_step()
    assert on1 == on2
    page.click("#memory")
    page.wait_for(f"{STATE}.settings && {STATE}.settings.memory === false", timeout=30)
    off = after_reset_step()
    assert off != on1

    # downloads arrive as files of their kind
    mp4 = page.evaluate("fetch(document.getElementById('dl-video').href).then(r => r.arrayBuffer())"
                        ".then(b => String.fromCharCode(...new Uint8Array(b).slice(4, 8)))")
    assert mp4 == "ftyp"
    ply = page.evaluate("fetch(document.getElementById('dl-ply').href).then(r => r.text()).then(t => t.slice(0, 3))")
    assert ply == "ply"

    page.screenshot(artifact_path("play_memory_off.png"))
    assert page.foreign_requests(origin) == []
    assert page.errors == []


def test_page_weight_and_no_external_references():
    files = [p for p in STATIC_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= PAGE_BUDGET_BYTES
    for p in files:
        text = p.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text.replace("http://www.w3.org", "")), p.name
