"""Classical surface-detector (SD) reconstruction of air showers: the baseline the networks must beat.

Per event, vectorised over events (arrays (n, K) of K stations per event; batched fits with a fixed
number of iterations and masks, no Python loop over events):

1. **Axis**: weighted plane fit of the trigger times, then a spherical front centred on the axis
   through the LDF core.
2. **LDF**: S(r) = S1000 (r/1000)^beta ((r + 700)/1700)^(beta + gamma), beta(theta, S1000) fitted on
   the training split; S1000 and the core from a Poisson-like quasi-likelihood (silent stations
   upper, saturated ones lower limits). Axis and LDF alternate ``n_passes`` times.
3. **CIC**: S38 = S1000 / f_CIC(theta, S38), fitted on the training split by the
   constant-intensity method.
4. **Energy**: E = A S38^B, from a forward fit of log10 S38 against the true energy, inverted.

The code is split into (each module's docstring has the details):

- :mod:`analysis.sd_common`: constants, :class:`ReconstructionConfig`, :class:`SDCalibration`
  (JSON), :class:`SDReconstruction`, the calibrated parametrisations (beta, f_CIC, S38, energy)
  and the check of the input arrays;
- :mod:`analysis.sd_fits`: steps 1 and 2 (LDF shape, front-time model, the batched fits) and
  :func:`reconstruct`;
- :mod:`analysis.sd_calibration`: the fits on the training split (beta, CIC, energy),
  :class:`CalibrationConfig` and :func:`calibrate`;
- this module: the entry point, with the files (:func:`read_event_arrays`,
  :func:`calibrate_file`, :func:`reconstruct_file`); it re-exports the public names of the three
  others, so ``analysis.baselines`` keeps its whole API.

Conventions (those of ``simulation/airshower``, docs/architecture.md; this module does not import
it): x east, y north, z up (m); the axis u = (sin t cos p, sin t sin p, cos t) points from the ground
to where the shower comes from; azimuth p from x, counter-clockwise, in [0, 2 pi); station times in
ns relative to the core-plane crossing; signals in VEM. The array must be flat (``meta/station_z``
constant, checked).

Events with fewer than ``min_stations`` triggered stations, or whose triggered stations are
(nearly) aligned, are not reconstructable: ``SDReconstruction.valid`` is False and their outputs
are 0 (never NaN). Predictions files (:func:`reconstruct_file`) hold only the reconstructed
events; ``observer/event_index`` gives their rows in the event file and the attributes
``n_events_input`` / ``n_not_reconstructed`` count what was left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis.sd_calibration import (
    CalibrationConfig,
    calibrate,
    fit_beta_parametrisation,
    fit_cic,
    fit_energy_calibration,
    full_efficiency_energy,
)
from analysis.sd_common import (
    C_LIGHT,
    CALIBRATION_VERSION,
    COS2_38,
    LDF_S_REF,
    STATION_DATASETS,
    ReconstructionConfig,
    SDCalibration,
    SDReconstruction,
    _check_arrays,
    beta_of_zenith,
    cic_factor,
    energy_from_s38,
    s38_from_s1000,
)
from analysis.sd_fits import (
    curvature_prior,
    fit_plane_front,
    front_time,
    ldf_shape,
    reconstruct,
    time_sigma,
)
from pipeline.events import open_events, write_events

__all__ = [
    "CALIBRATION_VERSION",
    "COS2_38",
    "C_LIGHT",
    "LDF_S_REF",
    "META_DATASETS",
    "MODEL_NAME",
    "STATION_DATASETS",
    "CalibrationConfig",
    "ReconstructionConfig",
    "SDCalibration",
    "SDReconstruction",
    "beta_of_zenith",
    "calibrate",
    "calibrate_file",
    "cic_factor",
    "curvature_prior",
    "energy_from_s38",
    "fit_beta_parametrisation",
    "fit_cic",
    "fit_energy_calibration",
    "fit_plane_front",
    "front_time",
    "full_efficiency_energy",
    "ldf_shape",
    "read_event_arrays",
    "reconstruct",
    "reconstruct_file",
    "s38_from_s1000",
    "time_sigma",
]

META_DATASETS = ("meta/station_x", "meta/station_y", "meta/station_z")
MODEL_NAME = "classical_sd"

# --- files --------------------------------------------------------------------------------------


def read_event_arrays(path: Path, extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The station, meta and ``extra`` datasets of an air-shower event file, checked.

    Raises ``pipeline.events.EventFileError`` / ValueError naming the file and the dataset.
    """
    path = Path(path)
    need = (*STATION_DATASETS, "meta/station_x", "meta/station_y", *extra)
    with open_events(path, kind="airshower", require=need) as ev:
        arrays = {name: ev.read(name) for name in (*STATION_DATASETS, *extra)}
        for name in META_DATASETS:
            if name in ev.names:
                arrays[name] = ev.read_meta(name)
    _check_arrays(arrays, str(path))
    return arrays


def calibrate_file(
    events_path: Path,
    cfg: CalibrationConfig = CalibrationConfig(),  # noqa: B008
) -> SDCalibration:
    """:func:`calibrate` on an event file (the training split)."""
    return calibrate(read_event_arrays(events_path, ("truth/log10_energy",)), cfg)


def reconstruct_file(
    events_path: Path,
    calibration: SDCalibration,
    out_path: Path,
    observers: Sequence[str] = ("n_triggered",),
    attrs: Mapping[str, Any] | None = None,
    calibration_path: Path | None = None,
) -> Path:
    """Reconstruct an event file into a predictions file (the schema of ``reco/evaluate.py``).

    Writes, for the reconstructed events only (rows in event-file order): ``prediction/
    log10_energy``, ``energy_eev``, ``s1000``, ``s38``, ``zenith``, ``azimuth``, ``core_x``,
    ``core_y`` (float32; units as :class:`SDReconstruction`), ``prediction/valid`` (bool, all
    True: the rows kept), ``truth/*`` (all of the event file's), ``observer/<name>`` (a bare name is
    ``truth/<name>``), ``observer/event_index`` (int64 row in the event file) and
    ``observer/n_stations``. Attributes: the event file's split, config_hash, seed; kind =
    "predictions", task = "regression", targets = ["log10_energy"], model = "classical_sd",
    model_config (the calibration JSON), checkpoint (``calibration_path`` if given),
    n_events_input, n_not_reconstructed, plus ``attrs``. Written atomically
    (``pipeline.events.write_events``). Events that cannot be reconstructed are left out, so the
    analysis never sees a placeholder.
    """
    events_path = Path(events_path)
    obs_paths = [o if "/" in o else f"truth/{o}" for o in observers]
    arrays = read_event_arrays(events_path, obs_paths)
    rec = reconstruct(arrays, calibration)
    keep = np.flatnonzero(rec.valid)
    out: dict[str, np.ndarray] = {
        f"prediction/{name}": getattr(rec, name)[keep].astype(np.float32)
        for name in ("log10_energy", "energy_eev", "s1000", "s38", "zenith", "azimuth",
                     "core_x", "core_y")
    }  # fmt: skip
    out["prediction/valid"] = np.ones(keep.size, dtype=bool)
    with open_events(events_path, kind="airshower") as ev:
        for name in ev.names:
            if name.startswith("truth/"):
                out[name] = ev.read(name)[keep]
        file_attrs = {k: v for k, v in ev.attrs.items() if k in ("split", "config_hash", "seed")}
    for obs, path in zip(observers, obs_paths, strict=True):
        out[f"observer/{obs.rsplit('/', 1)[-1]}"] = arrays[path][keep]
    out["observer/event_index"] = keep.astype(np.int64)
    out["observer/n_stations"] = rec.n_stations[keep].astype(np.int16)
    file_attrs |= {
        "kind": "predictions",
        "events_kind": "airshower",
        "events_file": str(events_path.absolute()),
        "model": MODEL_NAME,
        "model_config": json.dumps(calibration.to_dict(), sort_keys=True),
        "targets": json.dumps(["log10_energy"]),
        "task": "regression",
        "checkpoint": str(calibration_path) if calibration_path is not None else None,
        "n_events_input": int(rec.valid.size),
        "n_not_reconstructed": int(rec.valid.size - keep.size),
        **(attrs or {}),
    }
    return write_events(Path(out_path), out, file_attrs)
