"""Helpers shared by the CLI commands: the one error style of ``pewm``.

Every user-facing error is one or two plain-text lines on stderr, ``error: ...`` naming the option,
file or value and what to do (user values are never read as Rich markup), and exit status 2 for
bad input (1 for an unexpected error, a bug). No traceback unless ``pewm --debug`` or the
environment variable ``PEWM_DEBUG=1``. :class:`PewmGroup` (the ``pewm`` app's group) applies
this to typer's own parameter errors and to any error a command lets through; each command also
wraps its library call in :func:`user_errors` (so it keeps the style when registered elsewhere).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
from typing import Callable, Iterator

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

# long paths stay on one line; user values (paths, names) are never read as Rich markup
console = Console(stderr=True, soft_wrap=True, markup=False)
DEBUG_ENV = "PEWM_DEBUG"
_debug_flag: contextvars.ContextVar[bool] = contextvars.ContextVar("pewm_debug", default=False)  # pewm --debug
_OS_HINTS = {
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EEXIST: "a file of that name is in the way (a part of the path is a file, not a directory?)",
    errno.ELOOP: "a symbolic link loop",
    errno.EACCES: "permission denied",
    errno.ENOSPC: "no space left on the device",
}


def debug_enabled() -> bool:
    """``pewm --debug`` was given, or ``PEWM_DEBUG`` is set to anything but ``0``."""
    return _debug_flag.get() or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def error(message: str, hint: str | None = None) -> None:
    """Print ``error: message`` (and an optional second line) as plain text, never as markup."""
    console.print(Text("error: ", style="bold red") + Text(str(message)), highlight=False)
    if hint:
        console.print(Text(hint), highlight=False)


def describe(e: BaseException) -> str:
    """The one-line message of a library error (``OSError``: the path and what is wrong with it)."""
    if isinstance(e, KeyError):  # a sentence (``KeyError("unknown ...")``) or a bare key
        return e.args[0] if e.args and isinstance(e.args[0], str) and " " in e.args[0] else f"missing key {e}"
    if isinstance(e, OSError) and e.strerror:
        what = _OS_HINTS.get(e.errno, e.strerror[:1].lower() + e.strerror[1:])
        where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "") if e.filename else ""
        return f"{where}: {what}" if where else what
    return str(e)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print ``ValueError``/``OSError``/``KeyError`` as ``error: ...`` and exit with status 2; any other
    exception as an unexpected error (status 1). With ``--debug``/``PEWM_DEBUG=1``: the traceback."""
    try:
        yield
    except (typer.TyperException, typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except (ValueError, OSError, KeyError) as e:
        if debug_enabled():
            raise
        error(describe(e))
        raise typer.Exit(2) from None
    except Exception as e:
        if debug_enabled():
            raise
        error(f"unexpected {type(e).__name__}: {e}",
              f"this is a bug in pewm: rerun with --debug (or {DEBUG_ENV}=1) for the traceback and report it")
        raise typer.Exit(1) from None


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """typer's/click's parameter errors in the one style: ``error: ...`` and where to find help."""
    try:
        yield
    except typer.TyperException as e:  # (typer's click exceptions: UsageError, BadParameter, ...)
        if type(e).__name__ == "NoArgsIsHelpError" or not hasattr(e, "format_message"):  # help was printed
            raise
        ctx = getattr(e, "ctx", None)
        error(e.format_message(), f"Try '{ctx.command_path} --help' for help." if ctx is not None else None)
        raise typer.Exit(getattr(e, "exit_code", 2)) from None


def _empty_argument(args: list[str]) -> str | None:
    """The message for the first empty argument (``--out ""``), which would mean the current directory."""
    for i, a in enumerate(args):
        if a == "" or (a.startswith("--") and a.endswith("=") and "=" not in a[:-1]):
            if a:
                return f"{a[:-1]}: empty value; give a value"
            prev = args[i - 1] if i else ""
            if prev.startswith("-") and "=" not in prev:
                return f"{prev}: empty value; give a value"
            return f"an empty argument ('') after {prev!r}; give a value" if prev else "an empty argument ('')"
    return None


class PewmGroup(TyperGroup):
    """The ``pewm`` app's group: every error of every command in the one style (module docstring)."""

    def make_context(self, info_name, args, parent=None, **extra):
        with usage_errors():
            if parent is None and (msg := _empty_argument(list(args))):
                error(msg, f"Try '{info_name} --help' for help.")
                raise typer.Exit(2)
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        token = _debug_flag.set(bool(ctx.params.get("debug")))
        try:
            with usage_errors(), user_errors():
                return super().invoke(ctx)
        finally:
            _debug_flag.reset(token)


def parse_key_values(items, option: str, form: str = "KEY=VALUE") -> dict[str, str]:
    """Repeated ``KEY=VALUE`` options as a dict; a malformed item is an error naming ``option``."""
    out = {}
    for item in items or ():
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ValueError(f"{option} {item!r}: expected {form}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@contextlib.contextmanager
def progress_callback(description: str) -> Iterator[Callable[[int, int | None], None]]:
    """A ``(done, total)`` callback for a library function, drawing a progress bar that starts at
    its first call: an error found while the inputs are checked is not preceded by an empty bar."""
    state: dict = {}

    def update(done: int, total: int | None) -> None:
        if not state:
            state["bar"] = bar = progress()
            bar.start()
            state["task"] = bar.add_task(description, total=total)
        state["bar"].update(state["task"], completed=done, total=total)

    try:
        yield update
    finally:
        if state:
            state["bar"].stop()


def progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), console=console,
        transient=True, disable=not console.is_terminal,  # no stray "0/N" (or empty) line before an error
    )
