"""The headless-Chromium harness (tests/browser.py) itself, against a tiny local HTTP server.

The page has a counter that keydown increments, a button, a WebGL canvas that draws a point, and a
script that fetches a second local path; the browser must deliver real key and mouse events, render
WebGL in software, reload, take screenshots, and record every request and every JS error.
"""

import functools
import http.server
import os
import struct
import threading

import pytest

from browser import browser, page  # noqa: F401 - fixtures
from browser import (Browser, BrowserError, JSError, artifact_path, free_port, key_definition, live_processes,
                     require_chromium, same_origin)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>harness</title>
<style>body { margin: 0; font: 16px sans-serif; } #go { position: absolute; left: 300px; top: 200px;
width: 120px; height: 40px; }</style></head>
<body>
<div id="count">0</div><div id="keys"></div><div id="clicks">0</div><div id="fetched">-</div>
<button id="go">go</button>
<canvas id="gl" width="64" height="64" style="position: absolute; left: 10px; top: 300px"></canvas>
<script src="app.js"></script>
</body></html>
"""

APP_JS = """
let count = 0, clicks = 0;
const keys = [];
document.addEventListener("keydown", e => {
  count += 1; keys.push(e.key + "/" + e.code + "/" + e.keyCode);
  document.getElementById("count").textContent = String(count);
  document.getElementById("keys").textContent = keys.join(" ");
});
document.getElementById("go").addEventListener("click", () => {
  clicks += 1; document.getElementById("clicks").textContent = String(clicks);
});
let downAt = null;
window.dragged = null;
document.getElementById("gl").addEventListener("mousedown", e => { downAt = [e.clientX, e.clientY]; });
document.addEventListener("mouseup", e => {
  if (downAt) window.dragged = [e.clientX - downAt[0], e.clientY - downAt[1]];
  downAt = null;
});
window.loadedAt = performance.timeOrigin;
fetch("data.json").then(r => r.json()).then(d => { document.getElementById("fetched").textContent = d.hello; });

// WebGL: one big red point in the middle of the canvas
const canvas = document.getElementById("gl");
const gl = canvas.getContext("webgl", {preserveDrawingBuffer: true});
window.glInfo = null;
if (gl) {
  const sh = (type, src) => { const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s); return s; };
  const prog = gl.createProgram();
  gl.attachShader(prog, sh(gl.VERTEX_SHADER, "void main() { gl_Position = vec4(0.0, 0.0, 0.0, 1.0); gl_PointSize = 16.0; }"));
  gl.attachShader(prog, sh(gl.FRAGMENT_SHADER, "void main() { gl_FragColor = vec4(1.0, 0.0, 0.0, 1.0); }"));
  gl.linkProgram(prog);
  gl.useProgram(prog);
  gl.clearColor(0, 0, 0, 1);
  gl.clear(gl.COLOR_BUFFER_BIT);
  gl.drawArrays(gl.POINTS, 0, 1);
  const px = new Uint8Array(4);
  gl.readPixels(32, 32, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
  const corner = new Uint8Array(4);
  gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, corner);
  window.glInfo = {centre: Array.from(px), corner: Array.from(corner), linked: gl.getProgramParameter(prog, gl.LINK_STATUS),
                   renderer: gl.getParameter(gl.RENDERER)};
}
"""

BROKEN_JS = 'setTimeout(() => { throw new Error("boom from the page"); }, 0);'


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A local HTTP server (its own thread, a free port) serving the test page; yields its origin."""
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text(PAGE)
    (root / "app.js").write_text(APP_JS)
    (root / "data.json").write_text('{"hello": "world"}')
    (root / "broken.html").write_text('<!doctype html><script src="broken.js"></script>')
    (root / "broken.js").write_text(BROKEN_JS)
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _load(page, site):  # noqa: F811 - not the fixture
    assert page.goto(site + "/index.html") == 200
    page.wait_for("document.getElementById('fetched').textContent === 'world'")


def test_keys_click_and_requests(page, site):  # noqa: F811
    _load(page, site)
    for key in ("ArrowUp", "ArrowLeft", "ArrowRight", "w", "a", "d"):
        page.press(key)
    page.wait_for("document.getElementById('count').textContent === '6'", timeout=5)
    assert page.evaluate("document.getElementById('keys').textContent").split() == [
        "ArrowUp/ArrowUp/38", "ArrowLeft/ArrowLeft/37", "ArrowRight/ArrowRight/39",
        "w/KeyW/87", "a/KeyA/65", "d/KeyD/68"]

    page.click("#go")
    page.click("#go")
    page.wait_for("document.getElementById('clicks').textContent === '2'", timeout=5)
    page.drag("#gl", 40, -10)
    assert page.wait_for("window.dragged", timeout=5) == [40, -10]

    urls = page.request_urls
    assert site + "/index.html" in urls and site + "/app.js" in urls and site + "/data.json" in urls
    assert page.foreign_requests(site) == []
    assert page.errors == []


def test_webgl_draws(page, site):  # noqa: F811
    _load(page, site)
    info = page.wait_for("window.glInfo", timeout=5)
    assert info["linked"]
    assert info["centre"] == [255, 0, 0, 255], info   # the point was drawn
    assert info["corner"] == [0, 0, 0, 255], info     # and only there


def test_reload_and_screenshot(page, site, tmp_path):  # noqa: F811
    _load(page, site)
    page.press("ArrowUp")
    page.wait_for("document.getElementById('count').textContent === '1'", timeout=5)
    first = page.evaluate("window.loadedAt")
    page.reload()
    assert page.evaluate("document.getElementById('count').textContent") == "0"   # a fresh document
    assert page.evaluate("window.loadedAt") != first
    page.wait_for("document.getElementById('fetched').textContent === 'world'")

    png = page.screenshot(artifact_path("browser-harness.png", tmp_path)).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", png[16:24])
    assert (w, h) == (1280, 800)
    assert len(png) > 1000
    one = page.screenshot(tmp_path / "button.png", selector="#go").read_bytes()
    assert struct.unpack(">II", one[16:24]) == (120, 40)


def test_js_errors_are_reported(page, site):  # noqa: F811
    with pytest.raises(JSError, match="bad thing"):
        page.evaluate("(() => { throw new Error('bad thing'); })()")
    with pytest.raises(JSError, match="ReferenceError"):
        page.evaluate("no_such_variable + 1")
    assert page.evaluate("Promise.resolve(41).then(x => x + 1)") == 42
    assert page.evaluate("undefined") is None

    page.goto(site + "/broken.html")
    page.evaluate("new Promise(r => setTimeout(r, 50))")
    page.evaluate("console.error('logged', 1)")
    errors = page.errors
    assert any("boom from the page" in e for e in errors), errors
    assert any("console.error: logged 1" in e for e in errors), errors

    # a missing file and a refused connection are reported too
    assert page.goto(site + "/missing.html") == 404
    with pytest.raises(BrowserError, match="ERR_CONNECTION_REFUSED"):
        page.goto(f"http://127.0.0.1:{free_port()}/")


def test_foreign_requests_are_caught(page, site):  # noqa: F811
    _load(page, site)
    page.clear_records()
    elsewhere = f"http://127.0.0.2:{free_port()}/x"
    page.evaluate(f"fetch('{elsewhere}').catch(() => null)")
    ws_url = site.replace("http://", "ws://") + "/ws"
    page.evaluate(f"(() => {{ const w = new WebSocket('{ws_url}'); w.onerror = () => null; }})()")
    assert page.wait_for_request("/ws")["type"] == "WebSocket"
    assert page.foreign_requests(site) == [elsewhere]
    assert same_origin(ws_url, site)
    assert not same_origin("https://127.0.0.1/", "http://127.0.0.1")


def test_browser_is_gone_after_the_block():
    require_chromium()
    with pytest.raises(RuntimeError, match="inside"):
        with Browser() as b:
            pid, profile = b.pgid, b._tmp
            assert live_processes(pid)
            assert b.page.evaluate("navigator.userAgent")
            raise RuntimeError("a failing test inside the block")
    assert live_processes(pid) == []
    assert not os.path.exists(profile)


def test_key_definitions():
    assert key_definition("ArrowUp")["windowsVirtualKeyCode"] == 38
    assert key_definition("d") == {"key": "d", "code": "KeyD", "windowsVirtualKeyCode": 68,
                                   "nativeVirtualKeyCode": 68, "text": "d"}
    assert key_definition("Space")["code"] == "Space"
    with pytest.raises(ValueError):
        key_definition("NoSuchKey")
