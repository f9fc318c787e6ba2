"""How many CPU threads torch computes with (#14: chosen deliberately, not left to torch).

torch's default is one intra-op thread per core. On a small machine that also runs other work
(the browser, the simulator, another process) every OpenMP region then waits for a descheduled
thread: on this project's shared 2-core machine a rollout of the shipped model ran 2.6-6.7x
*slower* with 2 threads than with 1, and only up to ~1.3x faster when the machine was quiet
(``docs/design.md``, "#14: a faster imagination loop"). So pewm's long-running entry points
(``pewm play``, the rollout benchmark) call :func:`set_threads`, which takes, in order:

1. an explicit number (a command-line option);
2. the environment variable ``PEWM_THREADS`` (a positive integer, or ``auto``);
3. :data:`DEFAULT_THREADS` = 1: never the busy-machine disaster; set ``PEWM_THREADS=2`` on a
   machine with a free core.

``auto`` (or ``0``) leaves torch's setting as it is (``OMP_NUM_THREADS``, else the core count).
"""

from __future__ import annotations

import os

import torch

ENV_VAR = "PEWM_THREADS"
DEFAULT_THREADS = 1


def resolve_threads(threads: int | str | None = None) -> int | None:
    """The thread count :func:`set_threads` would use: ``threads`` if given, else ``$PEWM_THREADS``,
    else :data:`DEFAULT_THREADS`; None for ``auto``/``0`` (torch's default). Raises ``ValueError``
    naming the source on anything else."""
    source = "threads"
    if threads is None:
        env = os.environ.get(ENV_VAR, "").strip()
        if not env:
            return DEFAULT_THREADS
        threads, source = env, ENV_VAR
    if isinstance(threads, str):
        text = threads.strip().lower()
        if text == "auto":
            return None
        try:
            threads = int(text)
        except ValueError:
            raise ValueError(f"{source} must be a positive integer or 'auto', got {threads!r}") from None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"{source} must be a positive integer or 'auto', got {threads!r}")
    return threads or None


def set_threads(threads: int | str | None = None) -> int:
    """Set torch's intra-op threads by :func:`resolve_threads` and return the number now in use."""
    n = resolve_threads(threads)
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


__all__ = ["DEFAULT_THREADS", "ENV_VAR", "resolve_threads", "set_threads"]
