"""Test-wide settings.

JAX raises on implicit rank promotion, so silent broadcasting bugs fail. Compiled programs are
kept in a persistent cache (``.cache/jax`` in the checkout, at most 2 GiB, least recently used
dropped; ``JAX_COMPILATION_CACHE_DIR`` chooses another): the many ``reco`` subprocesses of the
chain tests and the tests that build the same small models compile each program once, not once
per process. XLA:CPU compiles a tiny ParT's initialisers in ~10 s and reads them back in ~1 s.
The settings are environment variables, set before JAX loads, so subprocesses inherit them.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

_CACHE = {  # JAX option -> (environment variable's default, type)
    "jax_compilation_cache_dir": (str(Path(__file__).resolve().parents[1] / ".cache" / "jax"), str),
    "jax_persistent_cache_min_compile_time_secs": ("0", float),
    "jax_persistent_cache_min_entry_size_bytes": ("0", int),
    "jax_compilation_cache_max_size": (str(2 * 2**30), int),
}
for _name, (_default, _) in _CACHE.items():
    os.environ.setdefault(_name.upper(), _default)

import jax  # noqa: E402  (after the cache settings)
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

for _name, (_, _type) in _CACHE.items():  # in case a plugin loaded JAX first
    jax.config.update(_name, _type(os.environ[_name.upper()]))
jax.config.update("jax_numpy_rank_promotion", "raise")

# The fuzz tests' hypothesis settings: ``@settings(settings.get_profile("fuzz"), max_examples=n)``.
# Derandomized, no example database: every run replays the same cases.
settings.register_profile(
    "fuzz",
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    """One folder per fuzz module, reused by every case (hypothesis reruns a test body)."""
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture
def fresh_name():
    """``fresh_name(folder, "x.h5")`` -> a path not used before in this test (``x-<n>.h5``).

    Damaged HDF5 files get one each: with one name rewritten in place, the damaged-file fuzz
    test's outcome depended on the earlier cases (hypothesis reported it as flaky). After some
    failed reads (a chunk that fails to decompress) one more HDF5 object stays alive, and HDF5
    knows open files by inode: most likely a stale open file was read. New names avoid that.
    """
    count = itertools.count()

    def name(folder: Path, filename: str) -> Path:
        stem, _, suffix = filename.partition(".")
        return folder / f"{stem}-{next(count)}.{suffix}"

    return name


@pytest.fixture
def damage():
    """``damage(data, valid) -> bytes``: a copy of the bytes ``valid`` cut at a random length
    and/or with up to 8 bits flipped (at least one change), drawn from ``st.data()``."""

    def damaged(data: st.DataObject, valid: bytes) -> bytes:
        raw = bytearray(valid)
        if data.draw(st.booleans(), label="truncate"):
            raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
        if raw:
            for _ in range(data.draw(st.integers(0 if len(raw) < len(valid) else 1, 8))):
                pos = data.draw(st.integers(0, len(raw) - 1), label="byte")
                raw[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        return bytes(raw)

    return damaged


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip where JAX has no GPU backend (CI, laptops)."""
    if jax.default_backend() == "gpu":
        return
    skip = pytest.mark.skip(reason="needs a GPU (JAX backend is not gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def full_disk(tmp_path, request):
    """A small tmpfs: 256 KiB, or the size given by indirect parametrisation (``"4m"``); needs
    root and mount (skipped where that is not allowed)."""
    import subprocess

    where = tmp_path / "small"
    where.mkdir()
    size = getattr(request, "param", "256k")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()[:200]}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


@pytest.fixture
def run_snippet():
    """Run a Python snippet in a process of its own (``python -c code *args``) with the checkout
    on ``PYTHONPATH`` and JAX on the CPU; returns the completed process (output as text). For
    code that leaves its process in a state the test process must not inherit (a failed HDF5
    flush, Orbax's writer threads after a failed save)."""
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[1])

    def run(code: str, *args: object, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": root, "JAX_PLATFORMS": "cpu"}
        cmd = [sys.executable, "-c", code, *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)

    return run


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a jax.distributed coordinator)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` (SQLite backend, local artifact root) on 127.0.0.1, started and
    stopped by the tests (``stop()`` then ``start()`` again: the same store, the same port)."""

    def __init__(self, root, port: int | None = None) -> None:
        import socket
        from pathlib import Path

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.uri = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self) -> MlflowServer:
        import os
        import subprocess
        import sys
        import time
        import urllib.request
        from pathlib import Path

        mlflow = Path(sys.executable).with_name("mlflow")
        cmd = [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}"]
        cmd += ["--default-artifact-root", str(self.root / "artifacts"), "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--workers", "1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        with open(self.root / "server.log", "a") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + 120  # measured here: 12-30 s on a first start
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_text = (self.root / "server.log").read_text()[-3000:]
                pytest.fail(f"mlflow server did not start:\n{log_text}")
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM to its process group (which ends its workers too); SIGKILL if it lingers."""
        import os
        import signal
        import subprocess

        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        self.proc = None


@pytest.fixture
def new_mlflow_server():
    """``new_mlflow_server(root, port=None)``: an :class:`MlflowServer` to start and stop in the
    test (a fixture, because ``conftest`` is not importable by name from every test folder)."""
    return MlflowServer


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server for the whole test session; yields its URI."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server")).start()
    try:
        yield server.uri
    finally:
        server.stop()
