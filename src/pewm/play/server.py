"""The ``pewm play`` web server: Starlette (ASGI) on uvicorn, one websocket per browser tab.

Design (``docs/design.md``, "#14"):

* **One worker thread does all the work** (generation, simulation, encoding): the event loop only
  moves messages, so a step never blocks other tabs' messages, and all MuJoCo renderers live on
  the thread that created them. Sessions take turns on that thread; on a 2-core CPU two
  generations at once would only slow each other down.
* **Sessions live on the server**, keyed by a random ID the page keeps in ``sessionStorage``: a
  reload sends it back and continues. At most ``max_sessions`` exist (others get a clear "full"
  message); one without messages for ``idle_timeout_s`` is closed.
* **Key presses are coalesced**: while a step is imagined, further actions replace one pending
  action (the page does the same), so nothing queues without bound.
* **Bounded input**: websocket messages over ``MAX_MESSAGE_BYTES`` or faster than
  ``max_messages_per_s`` get an error message; malformed ones too; none of them ends the
  connection or touches another session. Static files come only from the package's ``static``
  folder (Starlette's ``StaticFiles`` refuses paths that leave it); pages are served with a
  Content-Security-Policy that allows no other origin, and requests whose ``Host`` (or websocket
  ``Origin``) is not this server are refused (DNS rebinding, cross-site websockets).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from pewm.model import WorldModel
from pewm.model.config import ANCHORS
from pewm.play.protocol import MAX_MESSAGE_BYTES, ProtocolError, parse_message
from pewm.play.session import ACTIONS, MAX_SAMPLING_STEPS, Frame, PlayConfig, PlaySession

STATIC_DIR = Path(__file__).parent / "static"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CSP = ("default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; style-src 'self'; "
       "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


@dataclass
class ServerConfig:
    """``host``/``port``: where to listen (port 0: any free port); ``max_sessions``: browser tabs
    served at once; ``idle_timeout_s``: a session without messages for this long is closed;
    ``disconnected_grace_s``: a session whose tab is gone (no connection) is closed after this
    long (a reload reconnects well within it); ``max_messages_per_s``: per connection (bursts of twice that are fine); ``max_points``: map
    points sent to the 3D view per session (the newest beyond it are not sent); ``play``: each
    new session's settings."""

    host: str = "127.0.0.1"
    port: int = 8765
    max_sessions: int = 4
    idle_timeout_s: float = 900.0
    disconnected_grace_s: float = 120.0
    max_messages_per_s: float = 20.0
    max_points: int = 400_000
    points_per_message: int = 50_000
    play: PlayConfig = field(default_factory=PlayConfig)

    def __post_init__(self) -> None:
        if not 0 <= int(self.port) <= 65535:
            raise ValueError(f"--port must be from 0 to 65535, got {self.port}")
        if self.max_sessions < 1:
            raise ValueError(f"--max-sessions must be >= 1, got {self.max_sessions}")
        if not self.idle_timeout_s > 0:
            raise ValueError(f"--idle-timeout must be > 0 seconds, got {self.idle_timeout_s}")
        if not self.max_messages_per_s > 0:
            raise ValueError(f"max_messages_per_s must be > 0, got {self.max_messages_per_s}")

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.t = rate, burst, burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class _Entry:
    id: str
    session: PlaySession
    ws: WebSocket | None = None
    last_active: float = field(default_factory=time.monotonic)
    pending: str | None = None
    busy: bool = False
    coalesced: int = 0
    points_sent: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _png(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _pose2d(pose: np.ndarray) -> dict:
    """Camera position and heading on the floor plan (the camera looks along its +z axis)."""
    fwd = pose[:3, 2]
    return {"x": float(pose[0, 3]), "y": float(pose[1, 3]), "yaw": float(np.arctan2(fwd[1], fwd[0]))}


class PlayServer:
    """The sessions and their worker thread; :meth:`app` is the ASGI application."""

    def __init__(self, model: WorldModel, config: ServerConfig | None = None) -> None:
        self.model = model
        self.config = config or ServerConfig()
        self.sessions: dict[str, _Entry] = {}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pewm-play")
        self.errors = 0  # errors inside a step (reported to the client; counted for tests)

    # -- the worker --------------------------------------------------------------------------------
    async def on_worker(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _frame_message(self, e: _Entry, f: Frame, full: bool) -> dict:
        """Everything the page shows after a step (``full``: also the whole path, for a new page)."""
        s, cfg = e.session, self.config
        if full:
            e.points_sent = 0
        n_map = len(s.surface_map)
        start = e.points_sent
        limit = max(0, min(cfg.points_per_message, cfg.max_points - start))
        xyz, rgb = s.map_points(start, limit)
        e.points_sent = start + len(xyz)
        msg = {
            "type": "frame", "step": s.step_count, "full": full,
            "imagined": {"rgb": _png(f.imagined_rgb), "depth": _png(s.depth_image(f.imagined_depth))},
            "real": {"rgb": _png(f.real_rgb), "depth": _png(s.depth_image(f.real_depth))},
            "psnr": f.psnr, "collided": f.collided, "seconds": f.seconds, "memory": f.memory,
            "pose": _pose2d(f.pose), "fov_deg": s.fov_deg(),
            "topdown": {"png": _png(s.top_down()), "bounds": list(s.bounds), "px_per_m": s.config.px_per_m,
                        "z_max": s.z_max},
            "points": {"start": start, "count": int(len(xyz)), "xyz": _b64(xyz), "rgb": _b64(rgb),
                       "map_size": n_map, "more": e.points_sent < min(n_map, cfg.max_points)},
            "settings": self._settings(s), "house_seed": s.house_seed, "coalesced": e.coalesced,
        }
        if full:
            msg["path"] = [_pose2d(fr.pose) for fr in s.frames]
        return msg

    @staticmethod
    def _settings(s: PlaySession) -> dict:
        return {"memory": s.memory, "anchor": s.anchor, "steps": s.sampling_steps, "can_anchor": s.can_anchor,
                "anchors": list(ANCHORS), "max_steps": MAX_SAMPLING_STEPS, "actions": sorted(ACTIONS)}

    def _current(self, e: _Entry) -> dict:
        return self._frame_message(e, e.session.frames[-1], full=True)

    def _step(self, e: _Entry, action: str) -> dict:
        return self._frame_message(e, e.session.step(action), full=False)

    def _reset(self, e: _Entry, new_house: bool) -> dict:
        return self._frame_message(e, e.session.reset(new_house=new_house), full=True)

    def _settings_change(self, e: _Entry, settings: dict) -> dict:
        s = e.session
        if "memory" in settings:
            s.memory = settings["memory"]
        if "anchor" in settings:
            s.anchor = settings["anchor"]
        if "steps" in settings:
            s.sampling_steps = settings["steps"]
        return {"type": "settings", "settings": self._settings(s)}

    # -- messaging ---------------------------------------------------------------------------------
    @staticmethod
    async def _send(ws: WebSocket | None, msg: dict) -> None:
        if ws is None:
            return
        with contextlib.suppress(Exception):  # the tab went away: its next hello gets the full state
            await ws.send_text(json.dumps(msg))

    async def _step_loop(self, e: _Entry) -> None:
        """Imagine pending actions one after another until none is left (coalescing: a new action
        replaces the pending one)."""
        e.busy = True
        try:
            while e.pending is not None:
                action, e.pending = e.pending, None
                t0 = time.perf_counter()
                await self._send(e.ws, {"type": "busy", "action": action})
                async with e.lock:
                    try:
                        msg = await self.on_worker(self._step, e, action)
                    except Exception as exc:  # a bug must not take the server down: tell the page
                        self.errors += 1
                        msg = {"type": "error", "message": f"step failed: {type(exc).__name__}: {exc}"}
                msg["server_seconds"] = time.perf_counter() - t0
                await self._send(e.ws, msg)
        finally:
            e.busy = False

    async def _hello(self, ws: WebSocket, sid: str | None) -> _Entry | None:
        e = self.sessions.get(sid) if sid else None
        if e is None:
            if len(self.sessions) >= self.config.max_sessions:
                await self._send(ws, {"type": "full", "message": (
                    f"all {self.config.max_sessions} play sessions are in use; close another tab "
                    f"or wait (idle sessions close after {self.config.idle_timeout_s:.0f} s), then reload")})
                return None
            sid = secrets.token_urlsafe(18)
            session = await self.on_worker(PlaySession, self.model, self.config.play)
            e = self.sessions[sid] = _Entry(sid, session)
            resumed = False
        else:
            resumed = True
            if e.ws is not None and e.ws is not ws:  # the same tab reconnected: the old socket is stale
                await self._send(e.ws, {"type": "error", "message": "this session continued in another connection"})
        e.ws = ws
        e.last_active = time.monotonic()
        await self._send(ws, {"type": "welcome", "session": e.id, "resumed": resumed,
                              "settings": self._settings(e.session), "house_seed": e.session.house_seed})
        async with e.lock:
            msg = await self.on_worker(self._current, e)
        await self._send(ws, msg)
        return e

    async def _handle(self, ws: WebSocket, e: _Entry, msg) -> None:
        if msg.type == "action":
            if e.pending is not None:
                e.coalesced += 1
            e.pending = msg.action
            if not e.busy:
                asyncio.get_running_loop().create_task(self._step_loop(e))
            return
        e.pending = None
        async with e.lock:
            if msg.type == "settings":
                out = await self.on_worker(self._settings_change, e, msg.settings)
            else:  # reset / new_house
                out = await self.on_worker(self._reset, e, msg.type == "new_house")
        await self._send(ws, out)

    async def websocket(self, ws: WebSocket) -> None:
        origin = ws.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != ws.headers.get("host"):
            await ws.close(code=1008)  # another site's page may not drive a session
            return
        await ws.accept()
        bucket = TokenBucket(self.config.max_messages_per_s, 2 * self.config.max_messages_per_s)
        e: _Entry | None = None
        try:
            while True:
                m = await ws.receive()
                if m["type"] == "websocket.disconnect":
                    break
                if not bucket.take():
                    await self._send(ws, {"type": "error", "message": "too many messages; slow down"})
                    continue
                try:
                    msg = parse_message(m.get("text"))
                    if msg.type == "hello":
                        e = await self._hello(ws, msg.session)
                        continue
                    if e is None or e.id not in self.sessions:
                        raise ProtocolError("send {\"type\": \"hello\"} first (or reload the page)")
                    e.last_active = time.monotonic()
                    await self._handle(ws, e, msg)
                except (ProtocolError, ValueError) as exc:
                    await self._send(ws, {"type": "error", "message": str(exc)})
                except Exception as exc:  # a bug must not end this connection or touch another session
                    self.errors += 1
                    await self._send(ws, {"type": "error", "message": f"server error: {type(exc).__name__}: {exc}"})
        except WebSocketDisconnect:
            pass
        finally:
            if e is not None and e.ws is ws:
                e.ws = None
                e.last_active = time.monotonic()  # the grace period for a reload starts now

    # -- housekeeping ------------------------------------------------------------------------------
    async def reap_idle(self) -> list[str]:
        """Close the sessions idle for longer than ``idle_timeout_s`` (``disconnected_grace_s`` when
        no tab is connected); returns their IDs."""
        now, gone = time.monotonic(), []
        for sid, e in list(self.sessions.items()):
            limit = self.config.idle_timeout_s if e.ws is not None else min(self.config.idle_timeout_s,
                                                                             self.config.disconnected_grace_s)
            if not e.busy and now - e.last_active > limit:
                del self.sessions[sid]
                gone.append(sid)
                await self._send(e.ws, {"type": "expired", "message": "this session was idle too long and was closed; reload to start a new one"})
                if e.ws is not None:
                    with contextlib.suppress(Exception):
                        await e.ws.close(code=1000)
                await self.on_worker(e.session.close)
        return gone

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(min(10.0, self.config.idle_timeout_s / 4, self.config.disconnected_grace_s / 4))
            await self.reap_idle()

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        task = asyncio.get_running_loop().create_task(self._reaper())
        try:
            yield
        finally:
            task.cancel()
            for e in list(self.sessions.values()):
                with contextlib.suppress(Exception):
                    await self.on_worker(e.session.close)
            self.sessions.clear()
            self.executor.shutdown(wait=False, cancel_futures=True)

    # -- HTTP --------------------------------------------------------------------------------------
    async def index(self, request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=_HEADERS)

    async def health(self, request) -> Response:
        return JSONResponse({"sessions": len(self.sessions), "max_sessions": self.config.max_sessions,
                             "errors": self.errors, "reader": self.model.config.reader})

    async def download(self, request) -> Response:
        """``/session/{id}/video.mp4`` (real | imagined | map) or ``/session/{id}/map.ply``."""
        e = self.sessions.get(request.path_params["sid"])
        what = request.path_params["file"]
        if e is None or what not in ("video.mp4", "map.ply"):
            return JSONResponse({"error": "no such session or file"}, status_code=404)
        tmp = Path(tempfile.mkdtemp(prefix="pewm-play-"))
        name = f"pewm-play-house{e.session.house_seed}-step{e.session.step_count}{Path(what).suffix}"
        async with e.lock:
            fn = e.session.export_video if what == "video.mp4" else e.session.export_ply
            path = await self.on_worker(fn, tmp / what)
        media = "video/mp4" if what == "video.mp4" else "application/octet-stream"
        return FileResponse(path, media_type=media, filename=name,
                            background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))

    def app(self) -> Starlette:
        hosts = list(LOOPBACK_HOSTS) if self.config.is_loopback else ["*"]
        return Starlette(
            routes=[
                Route("/", self.index),
                Route("/api/health", self.health),
                Route("/session/{sid}/{file}", self.download),
                WebSocketRoute("/ws", self.websocket),
                Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
            ],
            middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts), Middleware(_SecurityHeaders)],
            lifespan=self.lifespan,
        )


_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store"}


class _SecurityHeaders:
    """Adds :data:`_HEADERS` to every HTTP response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in _HEADERS.items() if k.lower().encode() not in have]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass
class RunningServer:
    """A server started by :func:`start_server`: its address, and :meth:`stop`."""

    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_server(play: PlayServer, log_level: str = "warning") -> RunningServer:
    """Run ``play`` on uvicorn in a background thread; returns once it accepts connections."""
    cfg = play.config
    config = uvicorn.Config(play.app(), host=cfg.host, port=int(cfg.port), log_level=log_level,
                            ws_max_size=4 * MAX_MESSAGE_BYTES * 16, limit_concurrency=64, timeout_keep_alive=5,
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="pewm-play-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"pewm play: the server did not start on {cfg.host}:{cfg.port} (is the port in use?)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("pewm play: the server did not start within 30 s")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(server, thread, cfg.host, int(port))


__all__ = ["CSP", "LOOPBACK_HOSTS", "PlayServer", "RunningServer", "STATIC_DIR", "ServerConfig", "TokenBucket",
           "start_server"]
