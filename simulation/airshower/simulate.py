"""The air-shower simulator: events -> the arrays of the event-file contract (docs/architecture.md).

Vectorised over events and stations (arrays (n, S) with S = R * C stations), in chunks of
`cfg.chunk_size` events so that memory stays bounded. Chunk i draws from its own stream
SeedSequence(seed, spawn_key=(i,)), split into a physics stream and a trace stream, so the same
seed gives identical arrays, and switching traces on or off leaves all other arrays unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from simulation.airshower.atmosphere import height_from_depth, vertical_depth
from simulation.airshower.config import AirshowerConfig
from simulation.airshower.detector import (
    muon_vem_per_particle,
    sample_counted_signal,
    time_sigma,
    trigger_and_saturate,
)
from simulation.airshower.geometry import axis_vector, front_time, shower_frame, station_positions
from simulation.airshower.ldf import (
    em_ldf_beta,
    em_s1000,
    ldf,
    ldf_log_terms,
    lognormal_unit_mean,
    muon_fluctuation_rms,
    muon_ldf_beta,
    muon_s1000,
    shower_age,
)
from simulation.airshower.primaries import sample_primaries
from simulation.airshower.traces import pulse_medians, station_traces
from simulation.airshower.xmax import sample_xmax

STATION_NAMES = ("signal", "signal_mu", "signal_em", "time", "trigger")


def _simulate_chunk(
    cfg: AirshowerConfig, n: int, seeds: np.random.SeedSequence
) -> dict[str, np.ndarray]:
    """Simulate `n` events; returns the contract's event arrays (no meta/)."""
    rng, rng_trace = (np.random.default_rng(s) for s in seeds.spawn(2))
    arr, sh, det = cfg.array, cfg.shower, cfg.detector
    n_rows, n_cols = arr.shape
    sx, sy, _ = (a.ravel() for a in station_positions(arr))

    # Primary and longitudinal development, per event, shape (n,).
    prim = sample_primaries(rng, cfg, n)
    lg_e, mass = prim["log10_energy"], prim["mass_number"]
    ln_a = np.log(mass.astype(np.float64))
    zenith, cos_t = prim["zenith"], np.cos(prim["zenith"])
    x_vertical = float(vertical_depth(arr.altitude))
    x_ground = x_vertical / cos_t  # g/cm^2, slant depth of the ground along the axis
    xmax = sample_xmax(rng, lg_e, ln_a, x_ground, sh.hadronic_model)
    energy_eev = 10.0 ** (lg_e - 18.0)
    fluct_mu = lognormal_unit_mean(
        rng, muon_fluctuation_rms(ln_a, sh.muon_fluct_p, sh.muon_fluct_fe)
    )
    s1000_mu = muon_s1000(energy_eev, mass, x_ground, x_vertical, sh) * fluct_mu
    s1000_em = em_s1000(energy_eev, x_ground - xmax, sh)
    # Distances (m) from the core up the axis to Xmax and to the front's virtual origin. The
    # origin sits front_origin_offset above Xmax, where most muons are made: at Xmax itself the
    # front of a vertical shower would have a radius of ~1 km, against the ~5-15 km measured.
    d_xmax = (height_from_depth(xmax * cos_t) - arr.altitude) / cos_t
    x_origin = np.maximum(xmax - sh.front_origin_offset, 1.0)
    d_origin = (height_from_depth(x_origin * cos_t) - arr.altitude) / cos_t

    # Stations in the shower frame, shape (n, S).
    r, along, rho2 = shower_frame(
        sx[None, :] - prim["core_x"][:, None],
        sy[None, :] - prim["core_y"][:, None],
        axis_vector(zenith, prim["azimuth"]),
    )
    logs = ldf_log_terms(r, cfg.ldf.r_min)
    beta_mu = muon_ldf_beta(cos_t, cfg.ldf)[:, None]
    beta_em = em_ldf_beta(shower_age(x_ground, xmax), cfg.ldf)[:, None]
    expected_mu = ldf(s1000_mu[:, None], logs, beta_mu, cfg.ldf.muon_gamma)
    expected_em = ldf(s1000_em[:, None], logs, beta_em, cfg.ldf.em_gamma)

    # Particle counting and the station trigger.
    q_mu = muon_vem_per_particle(cos_t, arr)[:, None]
    signal_mu = sample_counted_signal(rng, expected_mu, q_mu)
    signal_em = sample_counted_signal(rng, expected_em, det.em_particle_vem)
    total = signal_mu + signal_em
    trigger, signal = trigger_and_saturate(total, det)

    # Arrival times of the triggered stations (flat index k), relative to the core-plane crossing.
    ev, st = np.nonzero(trigger)
    r_k, sig_mu_k, sig_em_k = r[ev, st], signal_mu[ev, st], signal_em[ev, st]
    t_front = front_time(rho2[ev, st], along[ev, st], d_origin[ev])
    # m, from the station's foot on the axis to the muon source (front origin) and to Xmax
    muon_source, em_source = d_origin[ev] - along[ev, st], d_xmax[ev] - along[ev, st]
    m_mu, m_em = pulse_medians(r_k, muon_source, em_source, cfg.traces)
    width = (sig_mu_k * m_mu + sig_em_k * m_em) / total[ev, st]
    n_particles = sig_mu_k / q_mu[ev, 0] + sig_em_k / det.em_particle_vem
    jitter = time_sigma(width, n_particles, det) * rng.standard_normal(ev.size)
    time = np.zeros((n, n_rows * n_cols))
    time[ev, st] = t_front + jitter

    image = (n, n_rows, n_cols)
    out = {
        "station/signal": signal.reshape(image).astype(np.float32),
        "station/signal_mu": signal_mu.reshape(image).astype(np.float32),
        "station/signal_em": signal_em.reshape(image).astype(np.float32),
        "station/time": time.reshape(image).astype(np.float32),
        "station/trigger": trigger.reshape(image),
    }
    if cfg.traces.enabled:
        # Saturation caps the integral: scale both components so the trace sums to the signal.
        scale = signal[ev, st] / total[ev, st]
        trace = np.zeros((n, n_rows * n_cols, cfg.traces.n_bins), dtype=np.float16)
        trace[ev, st] = station_traces(
            rng_trace,
            sig_mu_k * scale,
            sig_em_k * scale,
            r_k,
            muon_source,
            em_source,
            cfg.traces.pre_trigger - jitter,
            cfg.traces,
        )
        out["station/trace"] = trace.reshape(*image, cfg.traces.n_bins)
    out |= {
        "truth/log10_energy": lg_e.astype(np.float32),
        "truth/energy_eev": energy_eev.astype(np.float32),
        "truth/mass_number": mass.astype(np.int16),
        "truth/ln_a": ln_a.astype(np.float32),
        "truth/xmax": xmax.astype(np.float32),
        "truth/zenith": zenith.astype(np.float32),
        "truth/azimuth": prim["azimuth"].astype(np.float32),
        "truth/core_x": prim["core_x"].astype(np.float32),
        "truth/core_y": prim["core_y"].astype(np.float32),
        "truth/s1000": (s1000_mu + s1000_em).astype(np.float32),
        "truth/n_triggered": trigger.sum(axis=1).astype(np.int16),
    }
    return out


def meta_arrays(cfg: AirshowerConfig) -> dict[str, np.ndarray]:
    """Per-file constants: station positions meta/station_{x,y,z}, each (R, C) float32, m."""
    x, y, z = station_positions(cfg.array)
    return {
        "meta/station_x": x.astype(np.float32),
        "meta/station_y": y.astype(np.float32),
        "meta/station_z": z.astype(np.float32),
    }


def simulate_chunks(
    cfg: AirshowerConfig, n_events: int, seed: int, chunks: range | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Yield the event arrays of `n_events` events in chunks of at most cfg.chunk_size events.

    Concatenated, the chunks are exactly what :func:`simulate` returns (without meta/). Chunk i
    has its own seed, so ``chunks`` (a range of chunk indices: a shard, pipeline.shards) yields
    just those chunks, identical to the same chunks of the whole.
    """
    if n_events < 0:
        raise ValueError(f"n_events: must be >= 0, got {n_events}")
    for i, start in enumerate(range(0, max(n_events, 1), cfg.chunk_size)):
        if chunks is not None and i not in chunks:
            continue
        n = min(cfg.chunk_size, n_events - start)
        yield _simulate_chunk(cfg, n, np.random.SeedSequence(seed, spawn_key=(i,)))


def simulate(cfg: AirshowerConfig, n_events: int, seed: int) -> dict[str, np.ndarray]:
    """Simulate `n_events` air showers on the configured array, reproducibly from `seed`.

    Returns the arrays of the air-shower event file (docs/architecture.md): station/signal,
    signal_mu, signal_em, time (n, R, C) float32, trigger (n, R, C) bool, trace (n, R, C, T)
    float16 when cfg.traces.enabled; truth/* (n,); meta/station_{x,y,z} (R, C) float32.
    Non-triggered stations have signal, time and trace 0; signal_mu/signal_em are the true
    deposited (Poisson-fluctuated, unsaturated) component signals of every station.
    """
    chunks = list(simulate_chunks(cfg, n_events, seed))
    out = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
    return out | meta_arrays(cfg)


def as_station_list(
    arrays: dict[str, np.ndarray], max_stations: int | None = None
) -> dict[str, np.ndarray]:
    """Turn station images into padded per-event station lists (sets), largest signal first.

    Args:
        arrays: output of :func:`simulate` (or an event file's datasets): station/* (n, R, C[, T])
            and meta/station_{x,y,z} (R, C).
        max_stations: K, the list length; None -> the largest number of triggered stations
            (at least 1). Events with more triggered stations keep the K largest signals.

    Returns:
        x, y, z (n, K) float32 m; row, col (n, K) int16 image indices; signal, signal_mu,
        signal_em (VEM), time (ns) (n, K) float32; trace (n, K, T) float16 if present;
        mask (n, K) bool (True for a real station, padding is 0 everywhere);
        n_stations (n,) int16 (triggered stations, before truncation to K).
    """
    trigger = arrays["station/trigger"]
    n, n_rows, n_cols = trigger.shape
    trig = trigger.reshape(n, -1)
    counts = trig.sum(axis=1)
    k = max_stations if max_stations is not None else max(int(counts.max(initial=0)), 1)
    key = np.where(trig, arrays["station/signal"].reshape(n, -1), -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")[:, :k]
    mask = np.take_along_axis(trig, order, axis=1)
    events = np.arange(n)[:, None]

    def gather(values: np.ndarray) -> np.ndarray:
        flat = values.reshape(n, n_rows * n_cols, *values.shape[3:])[events, order]
        return flat * mask.reshape(*mask.shape, *([1] * (flat.ndim - 2))).astype(flat.dtype)

    out = {
        name: np.where(mask, arrays[f"meta/station_{name}"].ravel()[order], 0).astype(np.float32)
        for name in ("x", "y", "z")
    }
    out["row"] = np.where(mask, order // n_cols, 0).astype(np.int16)
    out["col"] = np.where(mask, order % n_cols, 0).astype(np.int16)
    for name in ("signal", "signal_mu", "signal_em", "time", "trace"):
        if f"station/{name}" in arrays:
            out[name] = gather(arrays[f"station/{name}"])
    out["mask"] = mask
    out["n_stations"] = counts.astype(np.int16)
    return out
