"""Synthetic predictions files with a known injected resolution and bias, written with h5py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

ENERGY_EDGES = (18.5, 18.75, 19.0, 19.25, 19.5, 19.75, 20.0)
# Injected relative resolution per energy bin (Gaussian sigma of (E_rec - E_true) / E_true),
# decreasing with energy like a real surface detector.
SIGMA_PER_BIN = (0.20, 0.16, 0.13, 0.10, 0.08, 0.07)
BIAS = 0.02  # injected relative bias below 50 deg zenith
BIAS_INCLINED = 0.06  # injected relative bias at zenith >= 50 deg
N_EVENTS = 24_000


def make_arrays(n: int = N_EVENTS, seed: int = 11) -> dict[str, np.ndarray]:
    """Truth (lgE uniform in [18.5, 20], zenith ~ sin cos up to 60 deg) and a smeared prediction."""
    rng = np.random.default_rng(seed)
    lg_true = rng.uniform(18.5, 20.0, n)
    zenith = np.arcsin(np.sqrt(rng.uniform(0.0, np.sin(np.radians(60.0)) ** 2, n)))
    ibin = np.minimum(((lg_true - 18.5) / 0.25).astype(int), 5)
    sigma = np.asarray(SIGMA_PER_BIN)[ibin]
    bias = np.where(np.degrees(zenith) >= 50.0, BIAS_INCLINED, BIAS)
    e_true = 10.0 ** (lg_true - 18.0)
    e_rec = e_true * (1.0 + bias + sigma * rng.standard_normal(n))
    return {
        "prediction/log10_energy": np.log10(e_rec).astype(np.float32) + np.float32(18.0),
        "truth/log10_energy": lg_true.astype(np.float32),
        "truth/energy_eev": e_true.astype(np.float32),
        "truth/zenith": zenith.astype(np.float32),
        "truth/mass_number": rng.choice([1, 4, 14, 56], n).astype(np.int16),
        "truth/xmax": rng.normal(750.0, 60.0, n).astype(np.float32),
        "observer/n_triggered": rng.integers(3, 20, n).astype(np.int16),
    }


def write_predictions(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as f:
        f.attrs["kind"] = "predictions"
        f.attrs["config_hash"] = "abc123"
        f.attrs["model"] = "cnn"
        f.attrs["schema_version"] = 1
        for name, arr in arrays.items():
            f.create_dataset(name, data=arr)
    return path


@pytest.fixture(scope="session")
def predictions_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_predictions(tmp_path_factory.mktemp("pred") / "predictions.h5", make_arrays())


@pytest.fixture(scope="session")
def synthetic() -> SimpleNamespace:
    """The injected constants and the file writers, for tests that build their own files.

    (A fixture rather than an import: tests/ has no __init__.py, so conftest is not importable.)
    """
    return SimpleNamespace(
        energy_edges=ENERGY_EDGES,
        sigma_per_bin=SIGMA_PER_BIN,
        bias=BIAS,
        bias_inclined=BIAS_INCLINED,
        n_events=N_EVENTS,
        make_arrays=make_arrays,
        write_predictions=write_predictions,
    )
