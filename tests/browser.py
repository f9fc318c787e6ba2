"""A small Chrome DevTools Protocol client for tests that drive a real headless Chromium.

No Playwright, no downloads: it starts the Chromium that the machine's packages installed
(``apt-get install chromium``) and talks CDP over one websocket per page (``websockets`` sync client).

Typical use::

    from browser import Browser, artifact_path, require_chromium

    def test_page(tmp_path):
        require_chromium()                        # skips without a browser (fails when PEWM_REQUIRE_BROWSER=1)
        with Browser() as browser:
            page = browser.page
            page.goto("http://127.0.0.1:8000/")   # waits for the load event, returns the HTTP status
            page.press("ArrowUp")                  # real keyDown/keyUp events
            page.click("#reset")                   # real mouse events at the element's centre
            page.wait_for("document.querySelector('#step').textContent === '1'", timeout=10)
            assert page.evaluate("1 + 1") == 2
            page.screenshot(artifact_path("page.png", tmp_path))
            assert page.foreign_requests("http://127.0.0.1:8000") == []
            assert page.errors == []

Fixtures ``browser`` (one Chromium per test module) and ``page`` (a fresh window per test) are
defined here too; import them into a test module to use them: ``from browser import browser, page``.

Environment:

* ``PEWM_CHROMIUM``: the browser binary (else ``chromium``, ``chromium-browser``, ``google-chrome``,
  ``google-chrome-stable`` on PATH);
* ``PEWM_REQUIRE_BROWSER=1``: a missing browser fails the test instead of skipping it (CI sets it);
* ``PEWM_TEST_ARTIFACTS``: the folder where :func:`artifact_path` puts screenshots and logs.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

import pytest

__all__ = [
    "CHROMIUM_FLAGS", "MODIFIERS", "Browser", "BrowserError", "JSError", "Page", "artifact_path", "browser",
    "find_chromium", "free_port", "key_definition", "live_processes", "page", "require_chromium", "same_origin",
]

# A websocket message may carry a full-window PNG screenshot (base64): allow plenty.
_MAX_MESSAGE = 256 * 1024 * 1024

# Flags that make Chromium start headless as root in a container, without any network traffic of its
# own, and with WebGL rendered in software (SwiftShader through ANGLE; no GPU needed).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",                       # root in a container: the setuid/namespace sandbox is unavailable
    "--disable-dev-shm-usage",            # containers often have a 64 MB /dev/shm
    "--disable-gpu",                      # no GPU process on hardware; WebGL goes through SwiftShader below
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",        # since Chromium 137 WebGL no longer falls back to SwiftShader by itself
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",    # no update checks, safe browsing lists, ...
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--hide-scrollbars",
    "--disable-background-timer-throttling",   # timers and requestAnimationFrame keep running in every window
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--disable-features=Translate,MediaRouter,OptimizationHints,DialMediaRouteProvider,AutofillServerCommunication",
    "--remote-debugging-port=0",          # the port chosen is read from <user-data-dir>/DevToolsActivePort
)


class BrowserError(RuntimeError):
    """Chromium could not be started, a CDP command failed, or a wait timed out."""


class JSError(BrowserError):
    """JavaScript evaluated by :meth:`Page.evaluate` threw; the message carries the exception's text."""


# --------------------------------------------------------------------------------------------------
# finding the browser, artefacts


def find_chromium() -> str | None:
    """The Chromium/Chrome binary to use, or None.

    ``PEWM_CHROMIUM`` wins; else the first of chromium, chromium-browser, google-chrome,
    google-chrome-stable on PATH. Debian's ``/usr/bin/chromium`` is a shell wrapper that adds flags
    of its own (extensions, GPU rasterization); the binary it wraps (``/usr/lib/chromium/chromium``)
    is used instead when it is there.
    """
    env = os.environ.get("PEWM_CHROMIUM")
    if env:
        path = shutil.which(env)
        return path if path else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            real = Path(path).resolve()
            if _is_script(real):
                for cand in (real.parent.parent / "lib" / "chromium" / "chromium",
                             Path("/usr/lib/chromium/chromium"), Path("/usr/lib/chromium-browser/chromium-browser")):
                    if cand.is_file() and os.access(cand, os.X_OK) and not _is_script(cand):
                        return str(cand)
            return path
    return None


def _is_script(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def require_chromium() -> str:
    """The browser binary; skips the calling test when there is none (fails if PEWM_REQUIRE_BROWSER=1)."""
    path = find_chromium()
    if path is None:
        why = ("no Chromium found (set PEWM_CHROMIUM, or install it: apt-get install -y chromium)"
               if not os.environ.get("PEWM_CHROMIUM") else
               f"PEWM_CHROMIUM={os.environ['PEWM_CHROMIUM']!r} is not an executable")
        if os.environ.get("PEWM_REQUIRE_BROWSER", "") not in ("", "0"):
            pytest.fail(f"{why}; PEWM_REQUIRE_BROWSER is set, so this is an error", pytrace=False)
        pytest.skip(why)
    return path


def artifact_path(name: str, tmp_path: Path | None = None) -> Path:
    """A path for a test artefact (a screenshot, a log): ``$PEWM_TEST_ARTIFACTS/name`` when that is set
    (CI keeps the folder), else ``tmp_path/name`` (pytest's per-test folder; a temp folder without it).
    Parent folders are created."""
    root = os.environ.get("PEWM_TEST_ARTIFACTS")
    if root:
        base = Path(root)
    elif tmp_path is not None:
        base = Path(tmp_path)
    else:
        base = Path(tempfile.gettempdir()) / "pewm-test-artifacts"
    path = base / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (bound, then released): for a server
    the test starts (``pewm play --port``), or as a port where connections are refused."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def live_processes(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` that are still running (zombies excluded); Linux only
    (reads /proc), [] elsewhere. After :meth:`Browser.close` it is [] for ``browser.pgid``."""
    pids = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(d.name))
    return pids


def same_origin(url: str, origin: str) -> bool:
    """Whether ``url`` belongs to ``origin`` (``"http://127.0.0.1:8000"``): same host and port, with
    ws:// counted as http:// and wss:// as https:// (a page's websocket to its own server)."""
    def key(u):
        s = urlsplit(u)
        scheme = {"ws": "http", "wss": "https"}.get(s.scheme, s.scheme)
        port = s.port or {"http": 80, "https": 443}.get(scheme)
        return scheme, (s.hostname or "").lower(), port
    return key(url) == key(origin)


# --------------------------------------------------------------------------------------------------
# one CDP websocket


class _Connection:
    """A CDP websocket: commands are matched to their responses by id, events are handed to a callback.

    A reader thread receives everything, so events are recorded even while the test is not calling in.
    """

    def __init__(self, url: str, on_event, timeout: float):
        from websockets.sync.client import connect

        self.url = url
        # entered like ``with connect(...)`` (websockets >= 17.1 warns about a bare connect()), left in close()
        self._stack = contextlib.ExitStack()
        kwargs = {"max_size": _MAX_MESSAGE, "open_timeout": timeout, "close_timeout": 2}
        try:   # no keepalive pings: a loaded machine must not drop the connection (websockets >= 14)
            ws = connect(url, ping_interval=None, **kwargs)
        except TypeError:
            ws = connect(url, **kwargs)
        self._ws = self._stack.enter_context(ws)
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._responses: dict[int, dict] = {}
        self._closed: str | None = None
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    def _read(self):
        from websockets.exceptions import ConnectionClosed

        try:
            for raw in self._ws:
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._responses[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    try:
                        self._on_event(msg.get("method", ""), msg.get("params", {}))
                    finally:
                        with self._cond:
                            self._cond.notify_all()
        except ConnectionClosed as e:
            reason = f"websocket closed ({e})"
        except Exception as e:  # noqa: BLE001 - reported to every waiting caller
            reason = f"CDP reader failed: {e!r}"
        else:
            reason = "websocket closed"
        with self._cond:
            self._closed = reason
            self._cond.notify_all()

    def send(self, method: str, params: dict | None = None) -> int:
        """Send a command without waiting for its response; returns its id."""
        if self._closed:
            raise BrowserError(f"{method}: {self._closed}")
        i = next(self._ids)
        self._ws.send(json.dumps({"id": i, "method": method, "params": params or {}}))
        return i

    def call(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        """Send a command and wait for its result (raises BrowserError on a CDP error or timeout)."""
        i = self.send(method, params)
        deadline = time.monotonic() + timeout
        with self._cond:
            while i not in self._responses:
                if self._closed:
                    raise BrowserError(f"{method}: {self._closed}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"{method}: no response within {timeout:g} s")
                self._cond.wait(left)
            msg = self._responses.pop(i)
        if "error" in msg:
            err = msg["error"]
            raise BrowserError(f"{method} failed: {err.get('message')} {err.get('data', '')}".strip())
        return msg.get("result", {})

    def wait(self, predicate, timeout: float, what: str):
        """Wait until ``predicate()`` is true; it is re-checked after every message received."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                if self._closed:
                    raise BrowserError(f"while waiting for {what}: {self._closed}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"timed out after {timeout:g} s waiting for {what}")
                self._cond.wait(min(left, 0.5))

    def close(self):
        try:
            self._stack.close()
        except Exception:  # noqa: BLE001
            pass
        self._reader.join(timeout=5)


# --------------------------------------------------------------------------------------------------
# keys

# key -> (code, windowsVirtualKeyCode, text)
_SPECIAL_KEYS = {
    "ArrowUp": ("ArrowUp", 38, ""), "ArrowDown": ("ArrowDown", 40, ""),
    "ArrowLeft": ("ArrowLeft", 37, ""), "ArrowRight": ("ArrowRight", 39, ""),
    "Enter": ("Enter", 13, "\r"), "Escape": ("Escape", 27, ""), "Tab": ("Tab", 9, ""),
    "Backspace": ("Backspace", 8, ""), "Delete": ("Delete", 46, ""), " ": ("Space", 32, " "),
    "Home": ("Home", 36, ""), "End": ("End", 35, ""), "PageUp": ("PageUp", 33, ""),
    "PageDown": ("PageDown", 34, ""), "Shift": ("ShiftLeft", 16, ""), "Control": ("ControlLeft", 17, ""),
    "Alt": ("AltLeft", 18, ""),
}
_PUNCT = {"-": ("Minus", 189), "=": ("Equal", 187), ",": ("Comma", 188), ".": ("Period", 190),
          "/": ("Slash", 191), ";": ("Semicolon", 186), "[": ("BracketLeft", 219), "]": ("BracketRight", 221)}
MODIFIERS = {"Alt": 1, "Control": 2, "Meta": 4, "Shift": 8}


def key_definition(key: str) -> dict:
    """The Input.dispatchKeyEvent fields (key, code, windowsVirtualKeyCode, text) of a key name:
    "ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "Enter", "Escape", "Tab", "Backspace", "Delete",
    " " (or "Space"), "Home", "End", "PageUp", "PageDown", a letter ("w", "W"), a digit, or - = , . / ; [ ]."""
    if key == "Space":
        key = " "
    if key in _SPECIAL_KEYS:
        code, vk, text = _SPECIAL_KEYS[key]
    elif len(key) == 1 and key.isascii() and key.isalpha():
        code, vk, text = f"Key{key.upper()}", ord(key.upper()), key
    elif len(key) == 1 and key.isdigit():
        code, vk, text = f"Digit{key}", ord(key), key
    elif key in _PUNCT:
        (code, vk), text = _PUNCT[key], key
    else:
        raise ValueError(f"unknown key {key!r}; known: {sorted(_SPECIAL_KEYS)}, letters, digits, {sorted(_PUNCT)}")
    return {"key": key, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk, "text": text}


# --------------------------------------------------------------------------------------------------
# pages


class Page:
    """One browser window (a CDP page target). Create with :meth:`Browser.new_page` or use ``Browser.page``.

    Recorded since the page was opened (lists grow while the page lives; :meth:`clear_records` empties them):

    * ``requests``: every request the page made, as dicts ``{"url", "method", "type"}`` (``type`` is
      Document, Script, Image, Fetch, XHR, WebSocket, ...; websockets come from Network.webSocketCreated);
    * ``responses``: ``{"url", "status", "type"}`` of every response received;
    * ``console``: ``{"type", "text"}`` of every console.* call (type is log, info, warning, error, ...);
    * ``exceptions``: the text of every uncaught JS exception / unhandled rejection;
    * ``log``: ``{"level", "source", "text", "url"}`` browser log entries (e.g. a failed resource load);
    * ``dialogs``: messages of alert/confirm/prompt dialogs (accepted automatically so they never block).
    """

    def __init__(self, browser: Browser, target_id: str, timeout: float = 30.0):
        self.browser = browser
        self.target_id = target_id
        self.timeout = timeout
        self.requests: list[dict] = []
        self.responses: list[dict] = []
        self.console: list[dict] = []
        self.exceptions: list[str] = []
        self.log: list[dict] = []
        self.dialogs: list[str] = []
        self.events: deque = deque(maxlen=5000)   # the most recent raw (method, params) events
        self.crashed = False
        self._loads = 0
        self._lock = threading.Lock()
        url = f"ws://127.0.0.1:{browser.port}/devtools/page/{target_id}"
        self._conn = _Connection(url, self._on_event, timeout)
        for method, params in (("Page.enable", {}), ("Runtime.enable", {}), ("Log.enable", {}),
                               ("Network.enable", {}), ("Page.setLifecycleEventsEnabled", {"enabled": True}),
                               ("Emulation.setFocusEmulationEnabled", {"enabled": True}),
                               ("Emulation.setDeviceMetricsOverride",
                                {"width": browser.window_size[0], "height": browser.window_size[1],
                                 "deviceScaleFactor": 1, "mobile": False})):
            self._conn.call(method, params, timeout)

    # --- events

    def _on_event(self, method: str, p: dict):
        with self._lock:
            self.events.append((method, p))
            if method == "Network.requestWillBeSent":
                r = p.get("request", {})
                self.requests.append({"url": r.get("url", ""), "method": r.get("method", ""),
                                      "type": p.get("type", "")})
            elif method == "Network.webSocketCreated":
                self.requests.append({"url": p.get("url", ""), "method": "GET", "type": "WebSocket"})
            elif method == "Network.responseReceived":
                r = p.get("response", {})
                self.responses.append({"url": r.get("url", ""), "status": r.get("status"),
                                       "type": p.get("type", ""), "request_id": p.get("requestId")})
            elif method == "Runtime.consoleAPICalled":
                self.console.append({"type": p.get("type", ""),
                                     "text": " ".join(_remote_object_text(a) for a in p.get("args", []))})
            elif method == "Runtime.exceptionThrown":
                self.exceptions.append(_exception_text(p.get("exceptionDetails", {})))
            elif method == "Log.entryAdded":
                e = p.get("entry", {})
                self.log.append({"level": e.get("level", ""), "source": e.get("source", ""),
                                 "text": e.get("text", ""), "url": e.get("url", "")})
            elif method == "Page.loadEventFired":
                self._loads += 1
            elif method == "Page.javascriptDialogOpening":
                self.dialogs.append(p.get("message", ""))
                self._conn.send("Page.handleJavaScriptDialog", {"accept": True})
            elif method in ("Inspector.targetCrashed", "Inspector.detached"):
                self.crashed = True

    @property
    def request_urls(self) -> list[str]:
        """The URLs of all requests recorded so far (``requests``' urls)."""
        with self._lock:
            return [r["url"] for r in self.requests]

    def foreign_requests(self, origin: str, ignore_schemes=("data", "blob", "about")) -> list[str]:
        """Recorded request URLs that do not belong to ``origin`` (see :func:`same_origin`); data:,
        blob: and about: URLs never leave the page and are ignored. Assert it is ``[]``."""
        return [u for u in self.request_urls
                if urlsplit(u).scheme not in ignore_schemes and not same_origin(u, origin)]

    def wait_for_request(self, url_part: str, timeout: float = 10.0) -> dict:
        """Wait until a request whose URL contains ``url_part`` has been recorded and return it
        (``{"url", "method", "type"}``); requests recorded before the call count too."""
        found: list[dict] = []

        def seen():
            with self._lock:
                found[:] = [r for r in self.requests if url_part in r["url"]]
            return bool(found)

        self._conn.wait(seen, timeout, f"a request to a URL containing {url_part!r}")
        return found[0]

    @property
    def errors(self) -> list[str]:
        """Uncaught JS exceptions, console.error calls and error-level log entries (failed resource
        loads, ...), as text. Assert it is ``[]``. The browser's own request for /favicon.ico, made when
        a page declares no icon, is not counted when it fails."""
        with self._lock:
            return (list(self.exceptions)
                    + [f"console.error: {c['text']}" for c in self.console if c["type"] == "error"]
                    + [f"{e['source']}: {e['text']} {e['url']}".rstrip() for e in self.log
                       if e["level"] == "error" and not e["url"].endswith("/favicon.ico")])

    def clear_records(self):
        """Forget recorded requests, responses, console messages, exceptions, log entries and dialogs."""
        with self._lock:
            for lst in (self.requests, self.responses, self.console, self.exceptions, self.log, self.dialogs):
                lst.clear()
            self.events.clear()

    # --- commands

    def send(self, method: str, params: dict | None = None, timeout: float | None = None) -> dict:
        """Any raw CDP command on this page (e.g. ``send("Emulation.setCPUThrottlingRate", {"rate": 2})``)."""
        if self.crashed:
            raise BrowserError(f"{method}: the page crashed or was closed")
        return self._conn.call(method, params, self.timeout if timeout is None else timeout)

    def _wait_load(self, before: int, timeout: float, what: str):
        self._conn.wait(lambda: self._loads > before or self.crashed, timeout, what)
        if self.crashed:
            raise BrowserError(f"the page crashed during {what}")

    def goto(self, url: str, timeout: float | None = None) -> int | None:
        """Navigate to ``url`` and wait for its load event. Returns the HTTP status of the document
        (None for about:, data: and same-document navigations). Raises BrowserError when the
        navigation fails (e.g. connection refused)."""
        timeout = self.timeout if timeout is None else timeout
        before = self._loads
        r = self.send("Page.navigate", {"url": url}, timeout)
        if r.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {r['errorText']}")
        loader = r.get("loaderId")
        if not loader:
            return None   # same-document navigation (#fragment): no load event
        self._wait_load(before, timeout, f"the load event of {url}")
        with self._lock:
            statuses = [x["status"] for x in self.responses if x["request_id"] == loader]
        return statuses[-1] if statuses else None

    def reload(self, timeout: float | None = None, ignore_cache: bool = False):
        """Reload the page and wait for its load event."""
        timeout = self.timeout if timeout is None else timeout
        before = self._loads
        self.send("Page.reload", {"ignoreCache": ignore_cache}, timeout)
        self._wait_load(before, timeout, "the load event after reload")

    @property
    def url(self) -> str:
        """The page's current location.href."""
        return self.evaluate("location.href")

    def evaluate(self, js: str, timeout: float | None = None):
        """Evaluate a JS expression in the page and return its value (JSON-serialisable values come back
        as Python objects; undefined as None). A Promise is awaited. Statements need wrapping:
        ``evaluate("(() => { const a = 1; return a + 1; })()")``. Raises JSError with the exception's
        text when the code throws."""
        r = self.send("Runtime.evaluate", {"expression": js, "returnByValue": True, "awaitPromise": True,
                                           "userGesture": True}, timeout)
        if "exceptionDetails" in r:
            raise JSError(f"{_exception_text(r['exceptionDetails'])}\n  in: {js[:300]}")
        res = r.get("result", {})
        return res.get("value")

    def wait_for(self, js_predicate: str, timeout: float = 10.0, interval: float = 0.05):
        """Evaluate ``js_predicate`` until it is truthy and return that value. Exceptions while polling
        (e.g. an element not there yet, or a navigation in progress) count as "not yet". Raises
        BrowserError on timeout, with the last value or exception and the page's errors."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                value = self.evaluate(js_predicate, timeout=max(1.0, deadline - time.monotonic()))
                if value:
                    return value
                last = f"last value: {value!r}"
            except JSError as e:
                last = f"last exception: {e}"
            except BrowserError as e:
                if self.crashed:
                    raise
                last = f"last error: {e}"
            if time.monotonic() >= deadline:
                raise BrowserError(f"timed out after {timeout:g} s waiting for {js_predicate!r}; {last}; "
                                   f"page errors: {self.errors}")
            time.sleep(interval)

    def key_down(self, key: str, modifiers: int = 0):
        """Dispatch a keydown (and keypress/input for keys that type text). See :func:`key_definition`."""
        d = key_definition(key)
        if len(key) == 1 and key.isupper():
            modifiers |= MODIFIERS["Shift"]
        params = {**d, "type": "keyDown" if d["text"] else "rawKeyDown", "modifiers": modifiers}
        if not d["text"]:
            params.pop("text")
        else:
            params["unmodifiedText"] = d["text"]
        self.send("Input.dispatchKeyEvent", params)

    def key_up(self, key: str, modifiers: int = 0):
        """Dispatch a keyup."""
        d = key_definition(key)
        if len(key) == 1 and key.isupper():
            modifiers |= MODIFIERS["Shift"]
        params = {**d, "type": "keyUp", "modifiers": modifiers}
        params.pop("text")
        self.send("Input.dispatchKeyEvent", params)

    def press(self, key: str, modifiers: int = 0, hold: float = 0.0):
        """Press and release a key ("ArrowUp", "ArrowLeft", "ArrowRight", "w", "a", "d", "Enter", " ",
        ...) as real input events delivered to the focused element (the document body by default).
        ``modifiers`` is a sum of :data:`MODIFIERS`; ``hold`` seconds pass between down and up."""
        self.key_down(key, modifiers)
        if hold:
            time.sleep(hold)
        self.key_up(key, modifiers)

    def box(self, selector: str) -> dict:
        """The element's bounding box in CSS pixels of the viewport, after scrolling it into view:
        ``{"x", "y", "width", "height"}``. Raises BrowserError when no element matches."""
        r = self.evaluate(f"""(() => {{
            const el = document.querySelector({json.dumps(selector)});
            if (!el) return null;
            el.scrollIntoView({{block: "center", inline: "center"}});
            const r = el.getBoundingClientRect();
            return {{x: r.x, y: r.y, width: r.width, height: r.height}};
        }})()""")
        if r is None:
            raise BrowserError(f"no element matches {selector!r}")
        return r

    def mouse(self, type_: str, x: float, y: float, button: str = "left", buttons: int = 0, click_count: int = 0):
        """One raw Input.dispatchMouseEvent (``type_``: mouseMoved, mousePressed, mouseReleased, mouseWheel)."""
        self.send("Input.dispatchMouseEvent", {"type": type_, "x": x, "y": y, "button": button,
                                               "buttons": buttons, "clickCount": click_count})

    def click(self, selector: str):
        """Click the centre of the first element matching the CSS ``selector`` with real mouse events
        (move, press, release). Raises BrowserError when it is missing or has no size, or when another
        element covers its centre."""
        b = self.box(selector)
        if b["width"] <= 0 or b["height"] <= 0:
            raise BrowserError(f"element {selector!r} has no size (hidden?): {b}")
        x, y = b["x"] + b["width"] / 2, b["y"] + b["height"] / 2
        hit = self.evaluate(f"""(() => {{
            const el = document.querySelector({json.dumps(selector)});
            const at = document.elementFromPoint({x}, {y});
            return at === el || el.contains(at);
        }})()""")
        if not hit:
            raise BrowserError(f"element {selector!r} is covered by another element at its centre ({x:.0f}, {y:.0f})")
        self.mouse("mouseMoved", x, y, button="none")
        self.mouse("mousePressed", x, y, buttons=1, click_count=1)
        self.mouse("mouseReleased", x, y, buttons=0, click_count=1)

    def drag(self, selector: str, dx: float, dy: float, steps: int = 10):
        """Press the left button at the element's centre, move by (dx, dy) CSS pixels in ``steps`` moves,
        and release (e.g. to orbit a 3D view)."""
        b = self.box(selector)
        x, y = b["x"] + b["width"] / 2, b["y"] + b["height"] / 2
        self.mouse("mouseMoved", x, y, button="none")
        self.mouse("mousePressed", x, y, buttons=1, click_count=1)
        for i in range(1, steps + 1):
            self.mouse("mouseMoved", x + dx * i / steps, y + dy * i / steps, buttons=1)
        self.mouse("mouseReleased", x + dx, y + dy, buttons=0, click_count=1)

    def screenshot(self, path: str | os.PathLike, selector: str | None = None) -> Path:
        """Save a PNG of the viewport (or of the element ``selector``) to ``path``; returns the path."""
        params: dict = {"format": "png"}
        if selector is not None:
            b = self.box(selector)
            sx, sy = self.evaluate("[window.scrollX, window.scrollY]")
            params["clip"] = {"x": b["x"] + sx, "y": b["y"] + sy, "width": b["width"], "height": b["height"],
                              "scale": 1}
        r = self.send("Page.captureScreenshot", params)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(r["data"]))
        return path

    def close(self):
        """Close this window (the browser keeps running)."""
        try:
            self.browser._conn.call("Target.closeTarget", {"targetId": self.target_id}, 5)
        except BrowserError:
            pass
        self._conn.close()
        if self in self.browser.pages:
            self.browser.pages.remove(self)


def _remote_object_text(o: dict) -> str:
    if "value" in o:
        v = o["value"]
        return v if isinstance(v, str) else json.dumps(v)
    return o.get("description") or o.get("unserializableValue") or o.get("type", "")


def _exception_text(d: dict) -> str:
    exc = d.get("exception") or {}
    text = exc.get("description") or (str(exc["value"]) if "value" in exc else "") or d.get("text", "exception")
    where = d.get("url") or ""
    if where:
        text += f" (at {where}:{d.get('lineNumber', 0) + 1}:{d.get('columnNumber', 0) + 1})"
    return text


# --------------------------------------------------------------------------------------------------
# the browser


class Browser:
    """A headless Chromium process with a private, temporary profile; use as a context manager.

    ``Browser()`` starts it on entering and always ends it (the whole process group) and deletes the
    profile on leaving, also when the test fails. ``browser.page`` is the first window; more come from
    :meth:`new_page`. ``binary`` defaults to :func:`find_chromium`; ``window_size`` is the viewport in
    CSS pixels; ``timeout`` is the default for start-up, navigation and commands; ``extra_args`` are
    appended to :data:`CHROMIUM_FLAGS`. The browser's own stderr is kept in ``browser.log_path`` while
    it runs and quoted in start-up errors.
    """

    def __init__(self, binary: str | None = None, window_size: tuple[int, int] = (1280, 800),
                 timeout: float = 30.0, extra_args=()):
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise BrowserError("no Chromium found (set PEWM_CHROMIUM or apt-get install chromium)")
        self.window_size = window_size
        self.timeout = timeout
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.pgid: int | None = None
        self.port: int | None = None
        self.pages: list[Page] = []
        self._tmp: str | None = None
        self._conn: _Connection | None = None

    # --- lifecycle

    def __enter__(self) -> Browser:
        _LIVE.add(self)
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _start(self):
        self._tmp = tempfile.mkdtemp(prefix="pewm-chromium-")
        profile = Path(self._tmp) / "profile"
        profile.mkdir()
        self.log_path = Path(self._tmp) / "chromium.log"
        w, h = self.window_size
        args = [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={w},{h}",
                *self.extra_args, "about:blank"]
        env = dict(os.environ)
        env.setdefault("HOME", self._tmp)
        # no D-Bus in a container: without this Chromium retries the session bus noisily
        env.setdefault("DBUS_SESSION_BUS_ADDRESS", "disabled:")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                         start_new_session=True, cwd=self._tmp)
        self.pgid = self.proc.pid   # start_new_session: the browser leads its own process group
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise BrowserError(f"Chromium exited with code {self.proc.returncode} at start-up:\n{self._log_tail()}")
            try:
                lines = port_file.read_text().split("\n")
                if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].strip():
                    self.port, path = int(lines[0]), lines[1].strip()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BrowserError(f"Chromium did not open its DevTools port within {self.timeout:g} s:\n"
                                   f"{self._log_tail()}")
            time.sleep(0.05)
        self._conn = _Connection(f"ws://127.0.0.1:{self.port}{path}", lambda m, p: None, self.timeout)
        self.version = self._conn.call("Browser.getVersion", timeout=self.timeout).get("product", "")
        targets = self._conn.call("Target.getTargets", timeout=self.timeout).get("targetInfos", [])
        first = next((t["targetId"] for t in targets if t.get("type") == "page"), None)
        if first is None:
            first = self._conn.call("Target.createTarget", {"url": "about:blank"}, self.timeout)["targetId"]
        self.pages.append(Page(self, first, self.timeout))

    def _log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except (OSError, AttributeError):
            return ""

    def close(self):
        """End the browser and delete its profile: Browser.close over CDP, then SIGTERM to its whole
        process group, SIGKILL 5 s later if needed, and a wait until no process of the group is left."""
        for p in list(self.pages):
            p._conn.close()
        self.pages.clear()
        if self._conn is not None:
            try:
                self._conn.send("Browser.close")
            except Exception:  # noqa: BLE001
                pass
            self._conn.close()
            self._conn = None
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.proc.wait(timeout=2)   # Browser.close lets it shut down on its own
                except subprocess.TimeoutExpired:
                    pass
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)   # renderer, GPU and zygote processes share its group
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    self.proc.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    continue
                # the group leader is gone; make sure the rest of the group (renderers, GPU, zygote) is too
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                break
            deadline = time.monotonic() + 5
            while live_processes(self.pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.proc = None
        if self._tmp is not None:
            for _ in range(5):
                shutil.rmtree(self._tmp, ignore_errors=True)
                if not os.path.exists(self._tmp):
                    break
                time.sleep(0.1)
            self._tmp = None
        _LIVE.discard(self)

    # --- pages

    @property
    def page(self) -> Page:
        """The first window (opened at start-up)."""
        if not self.pages:
            raise BrowserError("the browser has no open page")
        return self.pages[0]

    def new_page(self) -> Page:
        """Open another window (its own viewport, visible and focused-as-far-as-the-page-can-tell, so
        timers and requestAnimationFrame run); close it with :meth:`Page.close`."""
        w, h = self.window_size
        tid = self._conn.call("Target.createTarget", {"url": "about:blank", "newWindow": True,
                                                      "width": w, "height": h}, self.timeout)["targetId"]
        page = Page(self, tid, self.timeout)
        self.pages.append(page)
        return page


# Browsers still open when the interpreter exits (a test run interrupted with Ctrl-C, ...) are closed.
_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all():
    for b in list(_LIVE):
        b.close()


# --------------------------------------------------------------------------------------------------
# pytest fixtures (import them into a test module: ``from browser import browser, page``)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the test module (skipped, or failed under PEWM_REQUIRE_BROWSER=1,
    when there is none)."""
    binary = require_chromium()
    with Browser(binary) as b:
        yield b


@pytest.fixture
def page(browser):  # noqa: F811 - the fixture above
    """A fresh window in the module's browser, closed after the test."""
    p = browser.new_page()
    try:
        yield p
    finally:
        p.close()
