"""Host memory: keep the memory XLA:CPU frees for its next step instead of returning it.

XLA:CPU allocates every buffer of a step (activations, gradients, temporaries: gigabytes for a
ParT train step) with ``malloc`` and frees it when the step ends. glibc serves allocations that
large with fresh ``mmap`` regions, and those of XLA's worker threads from per-thread arenas that it
shrinks as they empty, so every step touches memory the kernel has to fault in and zero again:
1.2 million page faults and 3.4 s of system time in a 6.2 s default ParT train step on a 2-core
host (docs/benchmarks.md). The settings of ``train.host_memory`` (:data:`MODES`), applied by
``reco train``, ``reco run`` and ``reco evaluate`` after reading the config and before JAX
starts (libraries that import ``reco`` are left alone):

- ``keep`` (:func:`keep_freed_memory`): glibc's malloc, through ``mallopt``, gets one arena, no
  ``mmap`` for large blocks and no returning of freed memory to the system: the second step
  reuses the first one's pages, with no page faults. One arena slows steps whose threads
  allocate often: the station transformer's planned step 0.7x on an AMD EPYC, and on a Xeon
  with AMX every ParT step (default 0.69x, small 0.86-0.91x against malloc as it comes).
- ``huge_pages`` (:func:`huge_pages`): no ``mmap`` and no returning either, but in malloc's
  usual per-thread arenas, and on transparent huge pages (glibc's ``hugetlb`` tunable, glibc
  2.35 and later, where the kernel's THP mode is ``madvise`` or ``always``): one page fault per
  2 MiB instead of per 4 KiB. A block larger than a thread's arena (64 MiB) is still mapped
  for each use: XLA's buffer of a step's temporaries (2.9 GB for the default ParT train step)
  is, by the thread that runs the step, so ~0.46 s of system time per step remain. On the
  Xeon: default ParT step 1.17-1.22x, small 1.2x, station transformer 1.35x against malloc as
  it comes.
- ``mimalloc`` (:func:`preload_mimalloc`): Microsoft's mimalloc (from the ``cmeel-mimalloc``
  wheel, a dependency on Linux) replaces malloc, with its arenas holding blocks up to
  :data:`MIMALLOC_OPTIONS`' size (by default it maps those above 2 GiB for each use) and freed
  memory never given back (by default after 10 ms unused): the step's temporaries too are
  reused, across pauses to compile or validate as well, no page faults at all (~10 ms of
  system time per default step), and threads allocate without contention. On the Xeon
  against ``huge_pages``: default ParT step 1.12-1.2x, small 1.2x (and none of glibc's
  every-8th-step stalls), station transformer 1.1-1.2x and its whole run 1.16x; against malloc
  as it comes: ParticleNet and P-CNN 1.2x, the CNN's and PFN's steps the same. Where the wheel
  is missing: ``huge_pages``, with a message.

glibc reads its tunables, and the dynamic loader ``LD_PRELOAD``, only when a process starts,
so for ``huge_pages`` and ``mimalloc`` the ``reco`` command restarts itself once, at once, in
:func:`started_environment` (``os.execve``: the same process id, arguments and open files);
the user's own values win and are handed back to child processes. Called from Python (no
restart), both set the ``mallopt`` part of ``huge_pages`` only.

The price of all: the process's resident memory stays at its peak (a training job reaches the
same peak every step anyway). ``RECO_MALLOC=system`` (environment) turns them off. Other
platforms and C libraries (macOS, musl) are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MODES = ("system", "keep", "huge_pages", "mimalloc")  # train.host_memory
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
KEPT = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # mallopt: no mmap, no trimming (what Python
# can set of huge_pages without a restart)
# mimalloc: blocks up to 256 GiB from its arenas (reused; above its default, 2 GiB, each is
# mapped for its use), freed memory never given back to the system (by default after 10 ms
# unused; after 1 s, the pauses to compile, validate or save cost the next steps their page
# faults again: 2.5x the system time of a short station-transformer run, docs/benchmarks.md)
MIMALLOC_OPTIONS = {"MIMALLOC_ARENA_MAX_OBJECT_SIZE": "256GiB", "MIMALLOC_PURGE_DELAY": "-1"}
ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")  # names in LD_PRELOAD that replace malloc
# set in a process started in started_environment: the values it changed, as the user had them
STARTED = "RECO_MALLOC_STARTED"


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


def mimalloc_library() -> Path | None:
    """mimalloc's shared library from the installed ``cmeel-mimalloc`` wheel, or None."""
    try:
        dist = importlib.metadata.distribution("cmeel-mimalloc")
    except importlib.metadata.PackageNotFoundError:
        return None
    libs = sorted(f for f in dist.files or () if f.name.startswith("libmimalloc.so"))
    return Path(dist.locate_file(libs[0])) if libs else None


def started_environment(
    mode: str, environ: Mapping[str, str] = os.environ, library: Path | None = None
) -> dict[str, str]:
    """``environ`` as a process starts in to run with ``mode`` (``huge_pages``:
    :data:`HUGE_PAGES_TUNABLES` in ``GLIBC_TUNABLES``, before the user's own, which glibc reads
    later; ``mimalloc``: ``library`` (:func:`mimalloc_library`) first in ``LD_PRELOAD`` and
    :data:`MIMALLOC_OPTIONS` where the user set none), with the user's values of what it
    changed in :data:`STARTED`, for :func:`_started` to hand back."""
    env = dict(environ)
    if mode == "huge_pages":
        changes = {GLIBC_TUNABLES: HUGE_PAGES_TUNABLES}
    elif mode == "mimalloc":
        if (library := library or mimalloc_library()) is None:
            raise FileNotFoundError("host_memory mimalloc: the cmeel-mimalloc wheel is missing")
        changes = {"LD_PRELOAD": str(library)}
        changes |= {k: v for k, v in MIMALLOC_OPTIONS.items() if k not in env}
    else:
        raise ValueError(f"no process start needed for host_memory {mode!r}")
    user = {k: env.get(k) for k in changes}
    for key, value in changes.items():  # the user's LD_PRELOAD and GLIBC_TUNABLES after ours
        env[key] = f"{value}:{user[key]}" if user[key] else value
    env[STARTED] = json.dumps({"mode": mode, "user": user})
    return env


def _started() -> str | None:
    """In a process started in :func:`started_environment`: the user's values back into the
    environment (child processes start as the user would have them), and the mode it started
    in; else None."""
    if STARTED not in os.environ:
        return None
    started = json.loads(os.environ.pop(STARTED))
    for key, value in started["user"].items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return started["mode"]


def _restart(mode: str, library: Path | None = None) -> None:
    """Replace the process with the same command in ``mode``'s :func:`started_environment`;
    returns only where that fails (with a message)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        env = started_environment(mode, library=library)
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError as err:  # no interpreter to run again: go on without
        print(f"reco: {mode}: could not restart ({err}); not applied", file=sys.stderr)


def huge_pages(*, restart: bool) -> bool:
    """Freed memory kept in malloc's arenas, on transparent huge pages (``huge_pages``, see the
    module docstring); True when the process runs with them.

    In a process started in :func:`started_environment` (the ``reco`` command after its
    restart, a benchmark's worker): True, and the user's ``GLIBC_TUNABLES`` goes back into the
    environment. Otherwise, with ``restart``, the process replaces itself with the same command
    in that environment (does not return, unless that fails; the caller must not have started
    anything); without (or where the restart failed), sets the ``mallopt`` part (no ``mmap``,
    no trimming; no huge pages) and returns False. Off Linux/glibc or with
    ``RECO_MALLOC=system``: False, changing nothing.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    if _started() is not None:
        return True
    if restart:
        _restart("huge_pages")
    _set(mallopt, KEPT)
    return False


def mimalloc_loaded() -> bool:
    """mimalloc is this process's malloc (its symbols are in the global namespace)."""
    return hasattr(ctypes.CDLL(None), "mi_version")


def preload_mimalloc(*, restart: bool) -> bool:
    """mimalloc as malloc (``mimalloc``, see the module docstring); True when the process runs
    with it.

    In a process started in :func:`started_environment`: the user's ``LD_PRELOAD`` handed
    back, and True if mimalloc did load (else a message, and the ``mallopt`` part of
    :func:`huge_pages`); True too where the user preloaded it. An allocator of the user's in
    ``LD_PRELOAD`` (:data:`ALLOCATORS`) is left as it is (False, with a message). Otherwise,
    with ``restart`` and the wheel's library found, the process replaces itself with the same
    command preloading it (as :func:`huge_pages`);
    without the library, :func:`huge_pages` (with a message); without ``restart``, the
    ``mallopt`` part. Off Linux/glibc or with ``RECO_MALLOC=system``: False, changing nothing.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    started = _started()
    if started == "huge_pages":  # restarted without the wheel (below)
        return True
    if mimalloc_loaded():  # restarted with it, or the user preloaded it
        return True
    if started == "mimalloc":
        print("reco: mimalloc: did not load; freed memory kept by glibc's malloc", file=sys.stderr)
    elif other := next((a for a in ALLOCATORS if a in os.environ.get("LD_PRELOAD", "")), None):
        print(f"reco: mimalloc: LD_PRELOAD has {other}, the user's choice: kept", file=sys.stderr)
        return False
    elif restart:
        library = mimalloc_library()
        if library is None:
            print(
                "reco: mimalloc: the cmeel-mimalloc wheel is not installed "
                "(pip install cmeel-mimalloc); huge_pages instead",
                file=sys.stderr,
            )
            return huge_pages(restart=True)
        _restart("mimalloc", library)
    _set(mallopt, KEPT)
    return False


def apply(mode: str, *, restart: bool) -> bool:
    """``train.host_memory`` ``mode`` (:data:`MODES`): ``keep`` (:func:`keep_freed_memory`),
    ``huge_pages`` (:func:`huge_pages`), ``mimalloc`` (:func:`preload_mimalloc`; ``restart`` as
    there) or ``system`` (nothing); True when applied."""
    if mode == "keep":
        return keep_freed_memory()
    if mode == "huge_pages":
        return huge_pages(restart=restart)
    if mode == "mimalloc":
        return preload_mimalloc(restart=restart)
    return False
