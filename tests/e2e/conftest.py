"""Fixtures of the whole-chain tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def run_reco() -> Callable[..., subprocess.CompletedProcess]:
    """``run_reco(*args, cwd=DIR, env={...})``: ``python -m reco ARGS`` in ``cwd`` with this
    source tree, no inherited ``MLFLOW_*`` variables plus ``env``; fails the test (with the
    output) unless it exits 0 (``check=False``: returns whatever it did)."""

    def run(
        *args: str,
        cwd: Path,
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 900,
    ) -> subprocess.CompletedProcess:
        full = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        full |= {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "reco", *args],
            cwd=cwd,
            env=full,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"reco {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    return run
