"""The messages between the play page and the server (JSON over one websocket per tab).

Client -> server (each a JSON object with a ``type``):

* ``{"type": "hello", "session": ID | null}`` -- first message: resume session ``ID`` (a page
  reload; the page keeps the ID in ``sessionStorage``) or start a new one;
* ``{"type": "action", "action": "forward" | "left" | "right"}`` -- one step;
* ``{"type": "settings", "memory": bool, "anchor": str, "steps": int}`` -- any subset;
* ``{"type": "reset"}`` / ``{"type": "new_house"}``.

Server -> client: ``welcome`` (session ID and settings), ``frame`` (images, PSNR, pose, the map's
new points and its top-down image), ``busy`` (a step started), ``error`` (a bad message: the
connection and the session go on), ``full`` (no free session), ``expired`` (idle timeout).

:func:`parse_message` validates a client message and returns it as a :class:`Message`, or raises
:class:`ProtocolError` with a message meant for the person at the page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pewm.model.config import ANCHORS
from pewm.play.session import ACTIONS, MAX_SAMPLING_STEPS

MAX_MESSAGE_BYTES = 4096  # the largest valid message is ~100 bytes
MAX_SESSION_ID = 64
TYPES = ("hello", "action", "settings", "reset", "new_house")
SETTINGS = {"memory": bool, "anchor": str, "steps": int}


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


class ProtocolError(ValueError):
    """A client message that is not valid; its text goes back to that client."""


@dataclass(frozen=True)
class Message:
    type: str
    action: str | None = None
    session: str | None = None
    settings: dict = field(default_factory=dict)


def parse_message(raw: str | bytes | None) -> Message:
    """Validate one websocket message (see the module doc)."""
    if raw is None:
        raise ProtocolError("binary messages are not accepted; send JSON text")
    if isinstance(raw, bytes):
        raise ProtocolError("binary messages are not accepted; send JSON text")
    if len(raw.encode("utf-8", "replace")) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message too large ({len(raw)} characters; at most {MAX_MESSAGE_BYTES} bytes)")
    try:
        msg = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("malformed JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(msg).__name__}")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in TYPES:
        raise ProtocolError(f"unknown message type {_short(kind)}; valid: {list(TYPES)}")
    extra = sorted(set(msg) - {"type", "action", "session", *SETTINGS})
    if extra:
        raise ProtocolError(f"{kind}: unknown field(s) {[str(k)[:40] for k in extra][:5]}")
    if kind == "action":
        action = msg.get("action")
        if not isinstance(action, str) or action not in ACTIONS:
            raise ProtocolError(f"unknown action {_short(action)}; valid: {sorted(ACTIONS)}")
        return Message("action", action=action)
    if kind == "hello":
        sid = msg.get("session")
        if sid is not None and (not isinstance(sid, str) or not 0 < len(sid) <= MAX_SESSION_ID):
            raise ProtocolError("hello: session must be null or the session ID string the server gave")
        return Message("hello", session=sid)
    if kind == "settings":
        settings = {k: msg[k] for k in SETTINGS if k in msg}
        if not settings:
            raise ProtocolError(f"settings: give at least one of {sorted(SETTINGS)}")
        for k, v in settings.items():
            want = SETTINGS[k]
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                raise ProtocolError(f"settings: {k} must be a {want.__name__}, got {type(v).__name__}")
        if "anchor" in settings and settings["anchor"] not in ANCHORS:
            raise ProtocolError(f"settings: anchor must be one of {list(ANCHORS)}, got {_short(settings['anchor'])}")
        if "steps" in settings and not 1 <= settings["steps"] <= MAX_SAMPLING_STEPS:
            raise ProtocolError(f"settings: steps must be from 1 to {MAX_SAMPLING_STEPS}, got {settings['steps']}")
        return Message("settings", settings=settings)
    return Message(kind)


__all__ = ["MAX_MESSAGE_BYTES", "Message", "ProtocolError", "TYPES", "parse_message"]
