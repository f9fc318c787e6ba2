"""The ``pewm play`` server over real sockets: uvicorn on a free port, websockets and raw HTTP.

Sessions, resume after a reload, coalesced key presses, limits (sessions, message size and
rate), idle timeout, downloads, static files confined to the package, host and origin checks,
and the ``pewm play`` command itself."""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from websockets.sync.client import connect

from pewm.assets import load_model
from pewm.model.testing import torch_threads
from pewm.play import PlayConfig
from pewm.play.server import CSP, PlayServer, ServerConfig, start_server


@pytest.fixture(scope="module")
def model():
    with torch_threads(1):
        yield load_model()


def _start(model, **kw):
    return start_server(PlayServer(model, ServerConfig(port=0, play=PlayConfig(sampling_steps=1), **kw)))


@pytest.fixture(scope="module")
def server(model):
    running = _start(model, max_sessions=20)
    yield running
    running.stop()


def _ws(running, origin=None):
    headers = {"Origin": origin} if origin else None
    return connect(running.url.replace("http://", "ws://") + "ws", max_size=2**25, open_timeout=10,
                   additional_headers=headers, origin=None)


def _recv(ws, want: str, timeout: float = 60.0) -> dict:
    """Messages until one of type ``want`` (others are skipped; an unexpected error fails)."""
    end = time.monotonic() + timeout
    while True:
        m = json.loads(ws.recv(timeout=max(0.1, end - time.monotonic())))
        if m["type"] == want:
            return m
        assert m["type"] in ("busy", "frame", "settings", "welcome"), m


def _hello(ws, session=None) -> tuple[dict, dict]:
    ws.send(json.dumps({"type": "hello", "session": session}))
    return _recv(ws, "welcome"), _recv(ws, "frame")


def _get(running, path: str, host: str | None = None) -> tuple[int, dict, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
    c.putrequest("GET", path, skip_host=True)
    c.putheader("Host", host or f"127.0.0.1:{running.port}")
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def test_page_static_files_and_security_headers(server):
    status, headers, body = _get(server, "/")
    assert status == 200 and b"pewm play" in body
    assert headers["content-security-policy"] == CSP and headers["x-content-type-options"] == "nosniff"
    for name in ("play.js", "view3d.js", "play.css"):
        assert _get(server, f"/static/{name}")[0] == 200
    srcs = re.findall(rb'(?:src|href)="([^"]+)"', body)
    assert srcs and all(s.startswith(b"/static/") or s.startswith(b"data:") or s == b"#" for s in srcs), srcs


@pytest.mark.parametrize("path", [
    "/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py", "/static/%2e%2e%2fsession.py",
    "/static/../../../../etc/passwd", "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/../pyproject.toml",
    "/static/..\\server.py", "/static/.%2e/protocol.py",
])
def test_static_files_never_leave_the_package_folder(server, path):
    status, _, body = _get(server, path)
    assert status in (400, 404), (path, status)
    assert b"import" not in body and b"root:" not in body


def test_foreign_host_and_origin_are_refused(server):
    assert _get(server, "/", host="evil.example:80")[0] == 400  # DNS rebinding
    with pytest.raises(Exception):
        with _ws(server, origin="http://evil.example") as ws:
            ws.send(json.dumps({"type": "hello", "session": None}))
            ws.recv(timeout=10)


def test_a_session_steps_resumes_after_reload_and_downloads(server, tmp_path):
    with _ws(server) as ws:
        welcome, frame = _hello(ws)
        sid = welcome["session"]
        assert not welcome["resumed"] and frame["full"] and frame["step"] == 0 and frame["points"]["count"] > 0
        first_points = frame["points"]["count"]
        ws.send(json.dumps({"type": "action", "action": "left"}))
        assert _recv(ws, "busy")["action"] == "left"
        f1 = _recv(ws, "frame")
        assert f1["step"] == 1 and not f1["full"] and f1["imagined"]["rgb"] != frame["imagined"]["rgb"]
        assert f1["points"]["start"] == first_points and f1["server_seconds"] > 0
        assert f1["imagined"]["rgb"].startswith("data:image/png;base64,")
    with _ws(server) as ws:  # a reload: same session, the full state again
        welcome, frame = _hello(ws, sid)
        assert welcome["resumed"] and welcome["session"] == sid
        assert frame["full"] and frame["step"] == 1 and len(frame["path"]) == 2 and frame["points"]["start"] == 0
        assert frame["imagined"]["rgb"] == f1["imagined"]["rgb"]
    status, headers, body = _get(server, f"/session/{sid}/video.mp4")
    assert status == 200 and body[4:8] == b"ftyp" and "attachment" in headers["content-disposition"]
    status, _, body = _get(server, f"/session/{sid}/map.ply")
    assert status == 200 and body.startswith(b"ply")
    o3d = pytest.importorskip("open3d")  # an ordinary point-cloud reader opens it
    ply = tmp_path / "map.ply"
    ply.write_bytes(body)
    cloud = o3d.io.read_point_cloud(str(ply))
    assert len(cloud.points) == frame["points"]["map_size"] and cloud.has_colors()
    assert _get(server, "/session/nosuchsession/video.mp4")[0] == 404
    assert _get(server, f"/session/{sid}/other.txt")[0] == 404


def test_key_presses_during_a_step_are_coalesced(server):
    with _ws(server) as ws:
        _hello(ws)
        for _ in range(6):  # far faster than a step: one runs, the rest collapse into one pending
            ws.send(json.dumps({"type": "action", "action": "left"}))
        frames = [_recv(ws, "frame")]
        while frames[-1]["coalesced"] + len(frames) < 6:
            frames.append(_recv(ws, "frame"))
        assert len(frames) <= 3 and frames[-1]["step"] == len(frames) and frames[-1]["coalesced"] >= 3
        with pytest.raises(TimeoutError):  # and nothing else is still queued
            _recv(ws, "frame", timeout=3)


def test_two_sessions_and_fifty_malformed_messages(server):
    bad = ["not json", "[]", '{"type": "jump"}', '{"type": "action", "action": "up"}', "x" * 20000,
           '{"type": "settings", "steps": 99}', '{"type": "action", "action": {"a": 1}}', b"\x00\x01", '{"type": "hello", "session": 3}',
           '{"type": "action", "action": "forward", "evil": ' + "[" * 2000 + "]" * 2000 + "}"]
    with _ws(server) as a, _ws(server) as b:
        sa, _ = _hello(a)
        sb, _ = _hello(b)
        assert sa["session"] != sb["session"]
        b.send(json.dumps({"type": "action", "action": "forward"}))
        errors = 0
        for i in range(50):
            a.send(bad[i % len(bad)])
            if i % 10 == 9:
                time.sleep(0.6)  # stay under the rate limit: these must be answered as malformed
        while errors < 50:
            m = json.loads(a.recv(timeout=30))
            if m["type"] == "error":
                assert "slow down" not in m["message"], m
                errors += 1
        assert _recv(b, "frame")["step"] == 1
        a.send(json.dumps({"type": "action", "action": "left"}))
        assert _recv(a, "frame")["step"] == 1
    status, _, body = _get(server, "/api/health")
    assert status == 200 and json.loads(body)["errors"] == 0


def test_message_rate_is_bounded(server):
    with _ws(server) as ws:
        _hello(ws)
        for _ in range(120):
            ws.send(json.dumps({"type": "settings", "memory": True}))
        slow = 0
        for _ in range(120):
            m = json.loads(ws.recv(timeout=30))
            slow += m["type"] == "error" and "slow down" in m["message"]
        assert slow >= 40
        time.sleep(1.5)
        ws.send(json.dumps({"type": "settings", "steps": 2}))
        assert _recv(ws, "settings")["settings"]["steps"] == 2


def test_settings_reset_and_new_house(server):
    with _ws(server) as ws:
        welcome, frame = _hello(ws)
        ws.send(json.dumps({"type": "settings", "memory": False, "anchor": "none", "steps": 3}))
        s = _recv(ws, "settings")["settings"]
        assert (s["memory"], s["anchor"], s["steps"]) == (False, "none", 3)
        ws.send(json.dumps({"type": "action", "action": "forward"}))
        assert _recv(ws, "frame")["memory"] is False
        ws.send(json.dumps({"type": "reset"}))
        f = _recv(ws, "frame")
        assert f["full"] and f["step"] == 0 and f["house_seed"] == frame["house_seed"]
        ws.send(json.dumps({"type": "new_house"}))
        f = _recv(ws, "frame")
        assert f["full"] and f["step"] == 0 and f["house_seed"] != frame["house_seed"]


def test_session_limit_and_idle_timeout(model):
    running = _start(model, max_sessions=1, idle_timeout_s=1.0)
    try:
        with _ws(running) as a:
            _hello(a)
            with _ws(running) as b:
                b.send(json.dumps({"type": "hello", "session": None}))
                m = json.loads(b.recv(timeout=30))
                assert m["type"] == "full" and "all 1 play sessions are in use" in m["message"]
            m = _recv(a, "expired", timeout=10)  # no messages for 1 s: closed
            assert "idle" in m["message"]
        with _ws(running) as c:  # the slot is free again
            welcome, _ = _hello(c)
            assert not welcome["resumed"]
        # a closed tab's session goes after the (short) grace period, not the idle timeout
    finally:
        running.stop()
    running = _start(model, max_sessions=1, idle_timeout_s=600, disconnected_grace_s=0.5)
    try:
        with _ws(running) as a:
            _hello(a)
        time.sleep(1.5)
        with _ws(running) as c:  # the slot is free again
            welcome, _ = _hello(c)
            assert not welcome["resumed"]
    finally:
        running.stop()


def _pewm(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "pewm.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PEWM_THREADS": "1"}, **kw)


def test_the_play_command_serves_and_stops_on_sigterm():
    p = _pewm("play", "--port", "0", "--no-open", "--sampling-steps", "1")
    try:
        lines = []
        while True:
            line = p.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            m = re.search(r"open (http://127\.0\.0\.1:(\d+)/)", line)
            if m:
                break
        port = int(m.group(2))

        class R:  # what _ws/_get need
            url = m.group(1)
        R.port = port
        with _ws(R) as ws:
            _, frame = _hello(ws)
            assert frame["step"] == 0
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=30)[0]
        assert p.returncode == 0 and "stopped" in out
    finally:
        if p.poll() is None:
            p.kill()


def test_the_play_command_warns_on_a_public_host_and_refuses_bad_options():
    p = _pewm("play", "--host", "0.0.0.0", "--port", "0", "--no-open")
    try:
        out = ""
        while "open http" not in out:
            line = p.stdout.readline()
            assert line, out
            out += line
        assert "warning" in out and "0.0.0.0" in out
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
    for args, match in ((["--port", "70000"], "--port"), (["--sampling-steps", "0"], "sampling steps"),
                        (["--anchor", "sideways"], "anchor"), (["--max-sessions", "0"], "--max-sessions")):
        r = subprocess.run([sys.executable, "-m", "pewm.cli.main", "play", "--no-open", *args], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
