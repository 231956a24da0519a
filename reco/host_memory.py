"""Host memory: keep the memory XLA:CPU frees for its next step instead of returning it.

XLA:CPU allocates every buffer of a step (activations, gradients, temporaries: gigabytes for a
ParT train step) with ``malloc`` and frees it when the step ends. glibc serves allocations that
large with fresh ``mmap`` regions, and those of XLA's worker threads from per-thread arenas that it
shrinks as they empty, so every step touches memory the kernel has to fault in and zero again:
1.2 million page faults and 3.4 s of system time in a 6.2 s default ParT train step on a 2-core
host (docs/benchmarks.md). Two settings (``train.host_memory``), applied by ``reco train``,
``reco run`` and ``reco evaluate`` after reading the config and before JAX starts (libraries
that import ``reco`` are left alone):

- ``keep`` (:func:`keep_freed_memory`): glibc's malloc, through ``mallopt``, gets one arena, no
  ``mmap`` for large blocks and no returning of freed memory to the system: the second step
  reuses the first one's pages, with no page faults. One arena slows steps whose threads
  allocate often: the station transformer's planned step 0.7x on an AMD EPYC, and on a Xeon
  with AMX every ParT step (default 0.69x, small 0.86-0.91x against malloc as it comes).
- ``huge_pages`` (:func:`huge_pages`): no ``mmap`` and no returning either, but in malloc's
  usual per-thread arenas (a block larger than a thread's arena, 64 MiB, is still mapped for
  each use), and on transparent huge pages (glibc's ``hugetlb`` tunable, glibc 2.35 and later,
  where the kernel's THP mode is ``madvise`` or ``always``): one page fault per 2 MiB instead
  of per 4 KiB, and fewer TLB misses. glibc reads these tunables only when a process starts,
  so the ``reco`` command restarts itself once, at once, with ``GLIBC_TUNABLES`` set
  (``os.execve``: the same process id, arguments and open files; the user's ``GLIBC_TUNABLES``
  is kept and handed back to child processes). Called from Python (no restart), it sets the
  ``mallopt`` part only. On the Xeon: default ParT step 1.31x, small 1.2x, station
  transformer 1.35x against malloc as it comes.

The price of both: the process's resident memory stays at its peak (a training job reaches the
same peak every step anyway). ``RECO_MALLOC=system`` (environment) turns both off. Other
platforms and C libraries (macOS, musl) are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
ENV = "RECO_MALLOC"  # "system": leave malloc as it is
GLIBC_TUNABLES = "GLIBC_TUNABLES"
# huge_pages: glibc's THP for its heaps, no mmap for large blocks, never trim (2^62 bytes)
HUGE_PAGES_TUNABLES = (
    "glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4611686018427387904"
)
STARTED = "RECO_MALLOC_STARTED"  # set in a process started with them: the user's GLIBC_TUNABLES


def _mallopt() -> Any:
    """glibc's ``mallopt``, or None where malloc is not glibc's (or ``RECO_MALLOC=system``)."""
    if os.environ.get(ENV, "").lower() == "system":
        return None
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def _set(mallopt: Any, settings: tuple[tuple[int, int], ...]) -> bool:
    # the trim threshold (free memory at the heap's top above which it is returned) is a size_t
    # that mallopt takes as an int: -1 converts to the largest size, "never"
    return all(mallopt(param, value) == 1 for param, value in settings)


def keep_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed memory in one arena (``keep``, see the module
    docstring); True when set.

    Call it before JAX's CPU backend starts (its threads take their arenas when they first
    allocate). Returns False, changing nothing, off Linux/glibc or with ``RECO_MALLOC=system``.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return _set(mallopt, ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)))


def tuned_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``environ`` with :data:`HUGE_PAGES_TUNABLES` in ``GLIBC_TUNABLES`` (before the user's
    own, which glibc reads later: theirs win) and the user's value kept in :data:`STARTED` for
    :func:`huge_pages` to hand back: the environment a process starts in to get ``huge_pages``."""
    env = dict(environ)
    user = env.get(GLIBC_TUNABLES, "")
    env[GLIBC_TUNABLES] = f"{HUGE_PAGES_TUNABLES}:{user}" if user else HUGE_PAGES_TUNABLES
    env[STARTED] = user
    return env


def huge_pages(*, restart: bool) -> bool:
    """Freed memory kept in malloc's arenas, on transparent huge pages (``huge_pages``, see the
    module docstring); True when the process runs with them.

    In a process started in :func:`tuned_environment` (the ``reco`` command after its restart,
    a benchmark's worker): True, and the user's ``GLIBC_TUNABLES`` goes back into the
    environment, so that child processes start as the user would have them. Otherwise, with
    ``restart``, the process replaces itself with the same command in that environment (does
    not return, unless that fails; the caller must not have started anything); without (or
    where the restart failed), sets the ``mallopt`` part (no ``mmap``, no trimming; no huge
    pages) and returns False. Off Linux/glibc or with
    ``RECO_MALLOC=system``: False, changing nothing.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    if STARTED in os.environ:
        user = os.environ.pop(STARTED)
        if user:
            os.environ[GLIBC_TUNABLES] = user
        else:
            os.environ.pop(GLIBC_TUNABLES, None)
        return True
    if restart:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], tuned_environment())
        except OSError as err:  # no interpreter to run again: go on without the huge pages
            print(f"reco: huge_pages: could not restart ({err}); no huge pages", file=sys.stderr)
    _set(mallopt, ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)))
    return False


def apply(mode: str, *, restart: bool) -> bool:
    """``train.host_memory`` ``mode``: ``keep`` (:func:`keep_freed_memory`), ``huge_pages``
    (:func:`huge_pages`, ``restart`` as there) or ``system`` (nothing); True when applied."""
    if mode == "keep":
        return keep_freed_memory()
    if mode == "huge_pages":
        return huge_pages(restart=restart)
    return False
