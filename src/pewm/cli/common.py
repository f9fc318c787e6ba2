"""Helpers shared by the CLI commands: turning library errors into clear one-line messages."""

from __future__ import annotations

import contextlib
from typing import Iterator

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)  # long paths stay on one line


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print ``ValueError``/``OSError`` messages as ``error: ...`` and exit with status 2 (no traceback)."""
    try:
        yield
    except (ValueError, OSError, KeyError) as e:
        msg = str(e) if not isinstance(e, KeyError) else f"missing key {e}"
        console.print(f"[bold red]error:[/] {msg}", highlight=False, markup=True)
        raise typer.Exit(2) from None


def parse_key_values(items, option: str, form: str = "KEY=VALUE") -> dict[str, str]:
    """Repeated ``KEY=VALUE`` options as a dict; a malformed item is an error naming ``option``."""
    out = {}
    for item in items or ():
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ValueError(f"{option} {item!r}: expected {form}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False,
    )
