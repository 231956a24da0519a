"""reco.host_memory: freed host memory is reused by the next allocation, without page faults.

Each check runs in a fresh Python process: the malloc settings are process-wide and must come
before anything allocates from other threads.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from reco.host_memory import mimalloc_library

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt settings exist on Linux with glibc only",
)

# Allocates and touches a 256 MiB block from a worker thread (as XLA's threads allocate), frees
# it, waits (argv[3] seconds of small allocations: a pause between steps, as compiling or
# validating makes one), then does it again in the same thread (a second thread could start
# before the first one's arena is free, and get a fresh arena); prints whether the settings were
# applied and the page faults of the second round (the first round faults the pages in either
# way).
# huge_pages and mimalloc (restart or not): also the faults of the first round, the kB of the
# process's memory on transparent huge pages while the block is held, GLIBC_TUNABLES,
# RECO_MALLOC_STARTED and LD_PRELOAD as the process's children would get them, and whether
# mimalloc is malloc.
PROBE = """
import ctypes, os, pathlib, resource, sys, threading, time
from reco import host_memory
mode = sys.argv[1]
print("started", flush=True)  # once per process: a restart starts it again
if mode == "keep":
    applied = host_memory.keep_freed_memory()
elif mode.startswith("huge_pages"):
    if mode == "huge_pages_no_interpreter":
        sys.executable = "/nonexistent/python"
    applied = host_memory.huge_pages(restart=mode != "huge_pages")
elif mode.startswith("mimalloc"):
    if mode == "mimalloc_missing":  # no wheel
        host_memory.mimalloc_library = lambda: None
    if mode == "mimalloc_broken":  # a library the loader cannot preload
        host_memory.mimalloc_library = lambda: pathlib.Path("/nonexistent/libmimalloc.so")
    applied = host_memory.preload_mimalloc(restart=mode != "mimalloc_no_restart")
else:
    applied = False
libc = ctypes.CDLL(None)  # malloc as the process resolves it (mimalloc if preloaded)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size, pause = int(sys.argv[2]) * 2**20, float(sys.argv[3])
huge, faults = [], []
def touch():  # twice in one thread, as XLA's pool threads allocate step after step
    for turn in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)
        with open("/proc/self/smaps_rollup") as f:
            huge.extend(int(l.split()[1]) for l in f if l.startswith("AnonHugePages:"))
        libc.free(p)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        end = time.monotonic() + (pause if turn == 0 else 0.0)
        while time.monotonic() < end:  # other work allocates meanwhile (as compiling does)
            libc.free(libc.malloc(2**20))
            time.sleep(0.01)
t = threading.Thread(target=touch)
t.start(); t.join()
env = [os.environ.get(k) or "-" for k in ("GLIBC_TUNABLES", host_memory.STARTED, "LD_PRELOAD")]
print(applied, faults[1], faults[0], huge[0], *env, host_memory.mimalloc_loaded())
"""


def _probe(mode: str, **env: str) -> tuple[str, int]:
    return _run_probe(mode, 256, **env)[1:3]


def _run_probe(mode: str, mib: int, pause: float = 0.0, **env: str) -> list:
    """[times the probe started, applied, faults of the 2nd round, of the 1st, AnonHugePages
    kB, GLIBC_TUNABLES, RECO_MALLOC_STARTED and LD_PRELOAD at the end ("-": unset or empty),
    mimalloc is malloc] for a block of ``mib`` MiB, ``pause`` seconds between the rounds."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode, str(mib), str(pause)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    starts = out.count("started")
    out = [o for o in out if o != "started"]
    return [starts, out[0], int(out[1]), int(out[2]), int(out[3]), *out[4:7], out[7] == "True"]


def _thp_for_malloc() -> bool:
    """The kernel gives madvised memory huge pages and glibc (>= 2.35) madvises its heaps."""
    try:
        mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return False
    glibc = tuple(int(v) for v in platform.libc_ver()[1].split(".")[:2])
    return "[never]" not in mode and glibc >= (2, 35)


def test_freed_memory_is_reused_without_page_faults():
    pages = 256 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    applied, faults = _probe("keep", RECO_MALLOC="")
    assert applied == "True"
    assert faults < pages // 100  # the second 256 MiB comes back without faulting
    # the system's default: the block is returned on free and faulted in again
    applied, faults = _probe("system", RECO_MALLOC="")
    assert applied == "False"
    assert faults > pages // 2


def test_reco_malloc_system_leaves_malloc_alone():
    pages = 256 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    applied, faults = _probe("keep", RECO_MALLOC="system")
    assert applied == "False"
    assert faults > pages // 2


def test_huge_pages_restarts_the_command_with_glibc_tunables():
    """huge_pages(restart=True) starts the process again with glibc's tunables (once): a freed
    32 MiB block comes back without page faults; a 256 MiB one, which glibc maps for each use
    when a thread asks (larger than a thread's arena), is on huge pages where the kernel and
    glibc give them (~128 faults instead of 65,536); the user's GLIBC_TUNABLES is what child
    processes get."""
    page = os.sysconf("SC_PAGE_SIZE")
    user = "glibc.malloc.tcache_count=0"
    for env in ({}, {"GLIBC_TUNABLES": user}):
        base = {"RECO_MALLOC": "", "GLIBC_TUNABLES": ""} | env
        starts, applied, faults, _, _, tunables, started, *_ = _run_probe(
            "huge_pages_restart", 32, **base
        )
        assert (starts, applied) == (2, "True")
        assert faults < 32 * 2**20 // page // 100
        assert tunables == env.get("GLIBC_TUNABLES", "-") and started == "-"
        if _thp_for_malloc():
            _, _, faults, first, huge, *_ = _run_probe("huge_pages_restart", 256, **base)
            assert huge > 0 and max(first, faults) < 256 * 2**20 // page // 10, (huge, first)
    # as it comes: no restart, every 32 MiB block faulted in again
    starts, applied, faults, *_ = _run_probe("system", 32, RECO_MALLOC="", GLIBC_TUNABLES="")
    assert (starts, applied) == (1, "False") and faults > 32 * 2**20 // page // 2


def test_huge_pages_without_restart_sets_what_mallopt_can():
    """From Python (no restart), or where the restart fails: freed memory kept (no mmap, no
    trimming), no restart; with RECO_MALLOC=system nothing at all."""
    pages = 32 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    for mode in ("huge_pages", "huge_pages_no_interpreter"):
        starts, applied, faults, *_ = _run_probe(mode, 32, RECO_MALLOC="", GLIBC_TUNABLES="")
        assert (starts, applied) == (1, "False") and faults < pages // 100
    starts, applied, faults, *_ = _run_probe("huge_pages_restart", 32, RECO_MALLOC="system")
    assert (starts, applied) == (1, "False") and faults > pages // 2


_needs_mimalloc = pytest.mark.skipif(
    mimalloc_library() is None,
    reason="the cmeel-mimalloc wheel (a dependency on Linux) is not installed",
)


@_needs_mimalloc
def test_mimalloc_restarts_the_command_preloading_it():
    """preload_mimalloc(restart=True) starts the process again (once) with mimalloc preloaded: a
    freed 2.2 GiB block, above the size mimalloc maps per use by default (2 GiB; XLA's temporaries of
    a default ParT train step are 2.9 GB), comes back without page faults, and so does a block
    left unused for 2 s (mimalloc gives freed memory back after 10 ms by default: a pause to
    compile or validate would cost the next steps their faults again); the user's LD_PRELOAD is
    what child processes get."""
    page = os.sysconf("SC_PAGE_SIZE")
    pages = 2200 * 2**20 // page
    user = "libm.so.6"  # any library the loader finds
    for env, mib, pause in (({}, 2200, 0.0), ({}, 256, 2.0), ({"LD_PRELOAD": user}, 32, 0.0)):
        base = {"RECO_MALLOC": "", "LD_PRELOAD": ""} | env
        starts, applied, faults, first, _, _, started, preload, loaded = _run_probe(
            "mimalloc", mib, pause, **base
        )
        assert (starts, applied, loaded) == (2, "True", True)
        # (a block mapped for each use faults as often each round: 1,100 times on huge pages)
        assert 0 < first and faults < first // 10, (faults, first)
        assert preload == env.get("LD_PRELOAD", "-") and started == "-"
    # glibc as it comes faults the 2.2 GiB in again
    starts, applied, faults, *_, loaded = _run_probe("system", 2200, RECO_MALLOC="")
    assert (starts, applied, loaded) == (1, "False", False) and faults > pages // 2


def test_mimalloc_falls_back_without_its_library():
    """Without the wheel: huge_pages (restarted with glibc's tunables); a library the loader
    cannot preload: glibc's malloc with the mallopt part, and a message; from Python (no
    restart): the mallopt part."""
    pages = 32 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    base = {"RECO_MALLOC": "", "GLIBC_TUNABLES": "", "LD_PRELOAD": ""}
    starts, applied, faults, _, _, tunables, started, preload, loaded = _run_probe(
        "mimalloc_missing", 32, **base
    )
    assert (starts, applied, loaded) == (2, "True", False)
    assert faults < pages // 100 and (tunables, started, preload) == ("-", "-", "-")
    for mode, restarts in (("mimalloc_broken", 2), ("mimalloc_no_restart", 1)):
        starts, applied, faults, *_, preload, loaded = _run_probe(mode, 32, **base)
        assert (starts, applied, loaded) == (restarts, "False", False), mode
        assert faults < pages // 100 and preload == "-"
    starts, applied, *_, loaded = _run_probe("mimalloc", 32, RECO_MALLOC="system")
    assert (starts, applied, loaded) == (1, "False", False)


@_needs_mimalloc
def test_mimalloc_leaves_the_users_own_allocator():
    """An allocator the user preloads is kept, no restart: mimalloc itself (applied), another
    one (not applied, malloc left as it is; here a path the loader cannot find)."""
    pages = 32 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    mimalloc = str(mimalloc_library())
    starts, applied, faults, *_, preload, loaded = _run_probe(
        "mimalloc", 32, RECO_MALLOC="", LD_PRELOAD=mimalloc
    )
    assert (starts, applied, loaded, preload) == (1, "True", True, mimalloc) and faults < 16
    other = "/nonexistent/libjemalloc.so.2"
    starts, applied, faults, *_, preload, loaded = _run_probe(
        "mimalloc", 32, RECO_MALLOC="", LD_PRELOAD=other
    )
    assert (starts, applied, loaded, preload) == (1, "False", False, other)
    assert faults > pages // 2


def test_train_host_memory_setting_is_checked_and_applied_only_when_keep(monkeypatch):
    import types

    from reco import cli, host_memory
    from reco.train import TrainConfig

    with pytest.raises(ValueError, match="host_memory"):
        TrainConfig(host_memory="huge")
    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(host_memory, "huge_pages", lambda restart: calls.append(restart) or True)
    configs = [types.SimpleNamespace(train=TrainConfig(host_memory=m)) for m in ("system", "keep")]
    cli._host_memory(configs[0])
    assert calls == []
    cli._host_memory(*configs)  # a suite: any variant that keeps
    assert calls == [1]
    huge = types.SimpleNamespace(train=TrainConfig(host_memory="huge_pages"))
    cli._host_memory(*configs, huge)  # huge_pages first; no restart outside the reco command
    assert calls == [1, False]
    monkeypatch.setattr(cli, "_AS_COMMAND", True)
    cli._host_memory(huge)
    cli._host_memory(huge, restart=False)  # a registered version's, after its download
    assert calls == [1, False, True, False]
    monkeypatch.setattr(host_memory, "preload_mimalloc", lambda restart: calls.append("mi"))
    mimalloc = types.SimpleNamespace(train=TrainConfig(host_memory="mimalloc"))
    cli._host_memory(*configs, huge, mimalloc)  # mimalloc first
    assert calls == [1, False, True, False, "mi"]


def test_evaluate_applies_the_runs_host_memory_setting(monkeypatch, tmp_path):
    """``reco evaluate RUN`` reuses freed host memory when the run trained with
    ``train.host_memory: keep`` (its planned inference allocates whole-batch buffers)."""
    import types

    from typer.testing import CliRunner

    from reco import cli, experiment, host_memory
    from reco.train import TrainConfig

    calls, evaluated = [], []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(experiment, "find_run_dir", lambda path: tmp_path)
    for mode in ("system", "keep"):
        cfg = types.SimpleNamespace(train=TrainConfig(host_memory=mode))
        monkeypatch.setattr(experiment, "config_of_run", lambda run_dir, cfg=cfg: cfg)
        monkeypatch.setattr(experiment, "evaluate", lambda run, events: evaluated.append(run))
        result = CliRunner().invoke(cli.app, ["evaluate", str(tmp_path), "--no-analyze"])
        assert result.exit_code == 0, result.output
        assert calls == ([] if mode == "system" else [1])
    assert evaluated == [tmp_path, tmp_path]


@pytest.mark.parametrize("registered_with_config", [True, False])
@pytest.mark.parametrize("mode", ["system", "keep"])
def test_evaluate_of_a_registered_version_applies_its_host_memory_setting(
    mode, registered_with_config, monkeypatch, tmp_path
):
    """``reco evaluate models:/NAME/VERSION`` applies the version's ``train.host_memory`` (from
    the config registered with it) before it evaluates, as for a run folder: before the model
    loads (JAX starts there) when the config rides along as its own artifact; for a version
    registered before that, from the loaded checkpoint's config, before the evaluation."""
    import dataclasses
    import types

    from typer.testing import CliRunner

    import reco.evaluate
    from pipeline.config import to_dict
    from reco import cli, experiment, host_memory, registry

    events = tmp_path / "events.h5"
    events.touch()
    calls, expected = [], ([] if mode == "system" else [1])
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(1) or True)
    cfg = experiment.ExperimentConfig()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, host_memory=mode))
    version = types.SimpleNamespace(checkpoint=tmp_path / "ckpt", config=to_dict(cfg))
    local = tmp_path / "out" / "model"
    monkeypatch.setattr(registry, "fetch", lambda uri, dst: local if dst == local else None)
    monkeypatch.setattr(
        registry, "registered_config", lambda path: cfg if registered_with_config else None
    )

    def open_local(path):
        assert path == local
        assert calls == (expected if registered_with_config else [])  # before the model loads
        return version

    def evaluate(checkpoint, events, out, **kwargs):
        assert calls == expected  # set before the evaluation
        return out

    monkeypatch.setattr(registry, "open_local", open_local)
    monkeypatch.setattr(reco.evaluate, "evaluate", evaluate)
    args = ["evaluate", "models:/jets/1", "--events", str(events), "--no-analyze"]
    result = CliRunner().invoke(cli.app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert calls == expected


def test_the_cli_and_registry_leave_jax_unstarted_on_import():
    """The host-memory setting is applied after these imports (config read, registered version
    fetched) and must come before JAX's CPU backend starts: importing them starts none."""
    probe = (
        "import reco.cli, reco.registry, reco.experiment, reco.models\n"
        "from jax._src import xla_bridge\n"
        "print(xla_bridge.backends_are_initialized())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.split()[-1] == "False"
