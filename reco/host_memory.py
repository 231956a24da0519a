"""Host memory: keep the memory XLA:CPU frees for its next step instead of returning it.

XLA:CPU allocates every buffer of a step (activations, gradients, temporaries: gigabytes for a
ParT train step) with ``malloc`` and frees it when the step ends. glibc serves allocations that
large with fresh ``mmap`` regions, and those of XLA's worker threads from per-thread arenas that it
shrinks as they empty, so every step touches memory the kernel has to fault in and zero again:
1.2 million page faults and 3.4 s of system time in a 6.2 s default ParT train step on a 2-core
host (docs/benchmarks.md). :func:`keep_freed_memory` sets glibc's malloc, through ``mallopt``, to
one arena, no ``mmap`` for large blocks, and no returning of freed memory to the system: the
second step reuses the first one's pages, with no page faults.

The price: the process's resident memory stays at its peak (a training job reaches the same peak
every step anyway), and one arena slows small steps whose threads allocate often (the air-shower
CNN's train step 0.87x, the station transformer's planned step 0.7x). So it is per experiment: ``reco train`` and ``reco run`` call it, after
reading the config and before JAX starts, when ``train.host_memory`` is ``keep``; libraries that
import ``reco`` are left alone. ``RECO_MALLOC=system`` (environment) turns it off. Other
platforms and C libraries (macOS, musl) are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
ENV = "RECO_MALLOC"  # "system": leave malloc as it is


def keep_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed memory (see the module docstring); True when set.

    Call it before JAX's CPU backend starts (its threads take their arenas when they first
    allocate). Returns False, changing nothing, off Linux/glibc or with ``RECO_MALLOC=system``.
    """
    if os.environ.get(ENV, "").lower() == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the trim threshold (free memory at the heap's top above which it is returned) is a size_t
    # that mallopt takes as an int: -1 converts to the largest size, "never"
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
    return all(mallopt(param, value) == 1 for param, value in settings)
