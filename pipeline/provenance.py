"""Where a result came from: git commit, package versions, device, dataset digests."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = ("reco", "numpy", "h5py", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "mlflow")


def git_sha(cwd: Path | None = None) -> str:
    """The commit of the source tree (with ``-dirty`` if it has uncommitted changes)."""
    where = cwd or Path(__file__).resolve().parent

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True
        )
        return proc.stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that decide a result ("missing" if not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def reco_version() -> str:
    return package_versions(("reco",))["reco"]


def file_digest(path: Path, length: int = 16) -> str:
    """sha256 of a file's bytes (streamed), shortened; identical files give identical digests.

    A shard manifest (:mod:`pipeline.shards`) digests its shards' bytes in order (not its own,
    which carry the time it was written), so rewriting a manifest keeps the digest.
    """
    from pipeline.shards import shard_paths

    h = hashlib.sha256()
    for part in shard_paths(Path(path)) or [Path(path)]:
        with open(part, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:length]


def machine() -> str:
    """One line: CPU model, cores, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"
