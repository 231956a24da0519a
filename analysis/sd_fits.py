"""Event reconstruction of the classical SD baseline (:mod:`analysis.baselines`): the fits.

Holds the LDF shape (:func:`ldf_shape`), the front-time model (:func:`time_sigma`,
:func:`curvature_prior`, :func:`front_time`), the batched fits (plane front, curved front, the
Levenberg-Marquardt LDF fit), the station lists, the per-chunk reconstruction and
:func:`reconstruct`. Settings, results and the calibration it applies live in
:mod:`analysis.sd_common`; :mod:`analysis.sd_calibration` fits that calibration.

Per event, vectorised over events (arrays (n, K) of K stations per event; batched fits with a fixed
number of iterations and masks, no Python loop over events):

1. **Axis**: weighted linear least-squares plane fit of the trigger times, then (``curved_front``)
   a Gauss-Newton fit of a spherical front centred on the axis through the LDF core (parameters
   t0, u, v and the curvature kappa = 1/R with a Gaussian prior on kappa around kappa0(theta)).
2. **LDF**: S(r) = S1000 (r/1000)^beta ((r + 700)/1700)^(beta + gamma), r the distance to the
   fitted axis; gamma fixed (-0.2; -0.2, 0 and +0.3 give the same energy resolution on the toy),
   beta = quadratic in (sec theta - 1) + linear in log10(S1000 / 30 VEM), from the calibration
   (fitted by :mod:`analysis.sd_calibration`). S1000 and the core (x, y) maximise a Poisson-like
   quasi-likelihood (variance proportional to the expected signal, as Auger's sigma^2 ~ a S; the
   scale a cancels from the estimate): triggered stations are measurements, silent stations upper
   limits at the trigger threshold and saturated ones lower limits (one-sided deviance terms).
   Batched Levenberg-Marquardt from the signal-weighted barycentre. Axis and LDF alternate
   ``n_passes`` times (the curved front needs the core, the LDF the axis; beta follows the new
   zenith and S1000 between passes).

S38 and the energy then follow from the calibration (``analysis.sd_common._with_energy``). Events
with fewer than ``min_stations`` triggered stations, or whose triggered stations are (nearly)
aligned, are not reconstructable: ``SDReconstruction.valid`` is False and their outputs are 0
(never NaN).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from analysis.sd_common import (
    C_LIGHT,
    ReconstructionConfig,
    SDCalibration,
    SDReconstruction,
    _check_arrays,
    _with_energy,
    beta_of_zenith,
)

_SIN_MAX = float(np.sin(np.radians(89.0)))  # reconstructed axes are kept above the horizon


# --- pure physics functions -------------------------------------------------------------------


def ldf_shape(r: np.ndarray, beta: np.ndarray | float, gamma: float) -> np.ndarray:
    """S(r) / S1000 = (r/1000)^beta ((r + 700)/1700)^(beta + gamma); r in m (> 0), any shape."""
    r = np.asarray(r, dtype=np.float64)
    return np.exp(beta * np.log(r * 1e-3) + (beta + gamma) * np.log((r + 700.0) / 1700.0))


def time_sigma(signal: np.ndarray, r: np.ndarray, cfg: ReconstructionConfig) -> np.ndarray:
    """Arrival-time uncertainty in ns of a station of signal (VEM) at axis distance r (m)."""
    width = cfg.time_width_ns + cfg.time_width_ns_per_km * 1e-3 * r
    n = np.maximum(signal, 0.0) / cfg.time_vem_per_particle
    return np.sqrt(cfg.time_floor_ns**2 + width * width / (1.0 + n))


def curvature_prior(zenith: np.ndarray, cfg: ReconstructionConfig) -> np.ndarray:
    """Prior mean of the front curvature kappa0 = 1/R0(theta) in 1/km, elementwise."""
    cos_t = np.cos(np.asarray(zenith, dtype=np.float64))
    return 1e3 / cfg.curvature_radius_m * cos_t**cfg.curvature_sec_power


def front_time(
    dx: np.ndarray, dy: np.ndarray, u: np.ndarray, v: np.ndarray, kappa_km: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Arrival time (ns) of a spherical front and its derivatives, flat array, shapes (n, K).

    The front crosses the core (dx = dy = 0) at t = 0 and is a sphere of radius 1/kappa centred
    on the axis; kappa = 0 is the plane front -(u dx + v dy)/c. Written as
    (k rho^2 - 2 a) / (c (1 + sqrt(1 - 2 k a + k^2 rho^2))), a = u dx + v dy, k = kappa, which is
    smooth through k = 0. Returns T and (dT/du, dT/dv, dT/dkappa) (kappa in 1/km).
    u, v, kappa_km have shape (n, 1) or broadcast.
    """
    k = kappa_km * 1e-3
    along = u * dx + v * dy
    rho2 = dx * dx + dy * dy
    g = np.sqrt(np.maximum(1.0 - 2.0 * k * along + k * k * rho2, 1e-12))
    num = k * rho2 - 2.0 * along
    den = 1.0 / (C_LIGHT * (1.0 + g) ** 2)
    d_u = (-2.0 * dx * (1.0 + g) + num * k * dx / g) * den
    d_v = (-2.0 * dy * (1.0 + g) + num * k * dy / g) * den
    d_k = (rho2 * (1.0 + g) - num * (k * rho2 - along) / g) * den * 1e-3
    return num / (C_LIGHT * (1.0 + g)), (d_u, d_v, d_k)


# --- batched fits -------------------------------------------------------------------------------


def _solve_damped(h: np.ndarray, g: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """delta of (H + lam diag H) delta = g per event, Jacobi-scaled; h (n, P, P), g (n, P)."""
    d = np.sqrt(np.maximum(np.einsum("npp->np", h), 1e-12))
    hs = h / (d[:, :, None] * d[:, None, :])
    hs = hs + (lam[:, None, None] + 1e-9) * np.eye(h.shape[1])
    return np.linalg.solve(hs, (g / d)[..., None])[..., 0] / d


def fit_plane_front(
    x: np.ndarray, y: np.ndarray, t: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares plane front t = t0 - (u (x - xb) + v (y - yb)) / c, per event.

    Args:
        x, y: station positions, m, shape (n, K); t: arrival times, ns, (n, K);
        weight: 1/sigma_t^2 (ns^-2), 0 for stations not used, (n, K).

    Returns:
        u, v: the axis direction cosines (x, y), clipped to u^2 + v^2 <= sin^2(89 deg);
        xb, yb, t0: the weighted barycentre (m) and the time there (ns). All (n,); events whose
        stations are aligned (singular system) get u = v = 0.
    """
    wsum = np.maximum(weight.sum(axis=1), 1e-300)
    xb, yb, tb = ((weight * a).sum(axis=1) / wsum for a in (x, y, t))
    dx, dy, dt = x - xb[:, None], y - yb[:, None], t - tb[:, None]
    sxx, syy, sxy = ((weight * a * b).sum(axis=1) for a, b in ((dx, dx), (dy, dy), (dx, dy)))
    sxt, syt = (weight * dx * dt).sum(axis=1), (weight * dy * dt).sum(axis=1)
    det = sxx * syy - sxy * sxy
    ok = det > 1e-12 * np.maximum(sxx * syy, 1e-300)
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    u = -C_LIGHT * (syy * sxt - sxy * syt) * inv
    v = -C_LIGHT * (sxx * syt - sxy * sxt) * inv
    u, v = _clip_axis(u, v)
    return u, v, xb, yb, tb


def _clip_axis(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.sqrt(u * u + v * v)
    scale = np.where(s > _SIN_MAX, _SIN_MAX / np.maximum(s, 1e-300), 1.0)
    return u * scale, v * scale


def _axis_distance(
    dx: np.ndarray, dy: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(r, along): distance to the axis and projection on it of ground offsets (n, K); u, v (n, 1)."""
    along = u * dx + v * dy
    return np.sqrt(np.maximum(dx * dx + dy * dy - along * along, 0.0)), along


def _fit_curved_front(
    st: dict[str, np.ndarray],
    core_x: np.ndarray,
    core_y: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    kappa: np.ndarray,
    ok: np.ndarray,
    cfg: ReconstructionConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Newton fit of (t0, u, v, kappa) of a spherical front through the core; (n,) each."""
    dx, dy = st["x"] - core_x[:, None], st["y"] - core_y[:, None]
    mask = st["trigger"] & ok[:, None]
    r, _ = _axis_distance(dx, dy, u[:, None], v[:, None])
    w = np.where(mask, 1.0 / time_sigma(st["signal"], r, cfg) ** 2, 0.0)
    t = st["time"]
    zenith = np.arcsin(np.sqrt(u * u + v * v))
    k0 = curvature_prior(zenith, cfg)
    wk = 1.0 / (cfg.curvature_prior_rel * k0) ** 2
    front, _ = front_time(dx, dy, u[:, None], v[:, None], kappa[:, None])
    wsum = np.maximum(w.sum(axis=1), 1e-300)
    t0 = (w * (t - front)).sum(axis=1) / wsum
    eye = np.eye(4)
    for _ in range(cfg.axis_iterations):
        front, (d_u, d_v, d_k) = front_time(dx, dy, u[:, None], v[:, None], kappa[:, None])
        res = t - t0[:, None] - front
        jac = np.stack([np.ones_like(d_u), d_u, d_v, d_k], axis=-1)  # (n, K, 4)
        jw_t = (jac * w[..., None]).transpose(0, 2, 1)
        h, g = jw_t @ jac, (jw_t @ res[..., None])[..., 0]
        h[:, 3, 3] += wk
        g[:, 3] += wk * (k0 - kappa)
        h = np.where(ok[:, None, None], h, eye)
        g = np.where(ok[:, None], g, 0.0)
        delta = _solve_damped(h, g, np.full(len(u), 1e-6))
        # at most 0.1 in a direction cosine per step (~6 deg): keeps the linearisation valid
        step = np.maximum(np.abs(delta[:, 1]), np.abs(delta[:, 2]))
        delta *= np.minimum(1.0, 0.1 / np.maximum(step, 1e-300))[:, None]
        t0, u, v, kappa = t0 + delta[:, 0], u + delta[:, 1], v + delta[:, 2], kappa + delta[:, 3]
        u, v = _clip_axis(u, v)
    return u, v, kappa


def _ldf_eval(
    p: np.ndarray,
    st: dict[str, np.ndarray],
    u: np.ndarray,
    v: np.ndarray,
    beta_fixed: np.ndarray,
    cfg: ReconstructionConfig,
    free_beta: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected signals f (n, K), d ln f / d p (n, K, P) and the deviance (n,) at parameters p.

    p = (ln S1000, core_x, core_y[, beta]) per event, (n, P).
    """
    dx, dy = st["x"] - p[:, 1:2], st["y"] - p[:, 2:3]
    uu, vv = u[:, None], v[:, None]
    r, along = _axis_distance(dx, dy, uu, vv)
    rc = np.maximum(r, cfg.r_min)
    beta = p[:, 3:4] if free_beta else beta_fixed[:, None]
    l_r, l_rr = np.log(rc * 1e-3), np.log((rc + 700.0) / 1700.0)
    ln_f = np.clip(p[:, 0:1] + beta * l_r + (beta + cfg.ldf_gamma) * l_rr, -50.0, 30.0)
    f = np.exp(ln_f)
    dlnf_dr = np.where(r > cfg.r_min, beta / rc + (beta + cfg.ldf_gamma) / (rc + 700.0), 0.0)
    cols = [
        np.ones_like(f),
        -dlnf_dr * (dx - along * uu) / rc,
        -dlnf_dr * (dy - along * vv) / rc,
    ]
    if free_beta:
        cols.append(l_r + l_rr)
    jac = np.stack(cols, axis=-1)
    y, kind = st["y_obs"], st["kind"]
    # kind 1: measured; 2: upper limit (silent); 3: lower limit (saturated); 0: unused
    active = (kind == 1) | ((kind == 2) & (f > y)) | ((kind == 3) & (f < y))
    dev = np.where(active, 2.0 * (f - y + y * (np.log(np.maximum(y, 1e-300)) - ln_f)), 0.0)
    return np.where(active, f, 0.0), jac, dev.sum(axis=1)


def _fit_ldf(
    p: np.ndarray,
    st: dict[str, np.ndarray],
    u: np.ndarray,
    v: np.ndarray,
    beta_fixed: np.ndarray,
    ok: np.ndarray,
    cfg: ReconstructionConfig,
    free_beta: bool,
    n_iter: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched Levenberg-Marquardt maximum of the LDF quasi-likelihood; returns (p, converged, dev).

    Fisher scoring on ln f: H = sum f J J^T, g = sum (y - f) J over the active terms (the
    quasi-likelihood scale cancels). A step is kept where it lowers the deviance (else lambda x 10).
    At most ``n_iter`` steps; an event leaves the batch once an accepted step is below tolerance
    (|d ln S1000| < 1e-5, |d core| < 0.1 m, |d beta| < 1e-4): ``converged``.
    """
    n, n_par = p.shape
    p = p.copy()
    lam = np.full(n, 1e-3)
    f, jac, dev = _ldf_eval(p, st, u, v, beta_fixed, cfg, free_beta)
    converged = np.zeros(n, dtype=bool)
    limits = np.array([2.0, 500.0, 500.0, 0.5][:n_par])  # largest step: ln S, m, m, beta
    tol = np.array([1e-5, 0.1, 0.1, 1e-4][:n_par])
    idx = np.flatnonzero(ok)  # the events still iterating
    for _ in range(n_iter):
        if idx.size == 0:
            break
        sub = {k: st[k][idx] for k in ("x", "y", "y_obs", "kind")}
        fi, ji = f[idx], jac[idx]
        resid = np.where(fi > 0, sub["y_obs"] - fi, 0.0)
        jac_t = ji.transpose(0, 2, 1)
        h, g = (jac_t * fi[:, None, :]) @ ji, (jac_t @ resid[..., None])[..., 0]
        # box trust region: clipping each component keeps a descent direction
        delta = np.clip(_solve_damped(h, g, lam[idx]), -limits, limits)
        p_try = p[idx] + delta
        f_try, jac_try, dev_try = _ldf_eval(
            p_try, sub, u[idx], v[idx], beta_fixed[idx], cfg, free_beta
        )
        accept = dev_try <= dev[idx]
        keep = idx[accept]
        p[keep], f[keep], jac[keep], dev[keep] = (
            p_try[accept], f_try[accept], jac_try[accept], dev_try[accept]
        )  # fmt: skip
        lam[idx] = np.clip(np.where(accept, lam[idx] * 0.3, lam[idx] * 10.0), 1e-7, 1e7)
        # only an accepted small step means convergence: a rejected one is small because of a
        # large damping
        small = accept & (np.abs(delta) < tol).all(axis=1)
        converged[idx[small]] = True
        idx = idx[~small]
    return p, converged & ok, dev


def _station_lists(
    signal: np.ndarray,
    time: np.ndarray,
    trigger: np.ndarray,
    sx: np.ndarray,
    sy: np.ndarray,
    cfg: ReconstructionConfig,
) -> dict[str, np.ndarray]:
    """(n, K) lists: all triggered stations, then the silent ones nearest the barycentre.

    K = the most triggered stations of an event in the batch + cfg.n_silent (at most all
    stations); keys x, y, signal, time (float64), trigger (bool), y_obs (the observation of the
    LDF likelihood, VEM), kind (1 measured, 2 upper limit, 3 lower limit; int8).
    """
    n = signal.shape[0]
    n_st = sx.size
    sig = signal.reshape(n, n_st).astype(np.float64)
    trig = trigger.reshape(n, n_st).astype(bool)
    w = np.where(trig, sig, 0.0)
    wsum = np.maximum(w.sum(axis=1), 1e-300)
    bx, by = w @ sx / wsum, w @ sy / wsum
    d2 = (sx[None, :] - bx[:, None]) ** 2 + (sy[None, :] - by[:, None]) ** 2
    key = np.where(trig, -1.0, d2)
    k = min(n_st, int(trig.sum(axis=1).max(initial=0)) + cfg.n_silent)
    order = np.argpartition(key, k - 1, axis=1)[:, :k] if k < n_st else np.argsort(key, axis=1)
    tr = np.take_along_axis(trig, order, axis=1)
    s = np.take_along_axis(sig, order, axis=1)
    t = np.take_along_axis(time.reshape(n, n_st).astype(np.float64), order, axis=1)
    sat = np.zeros_like(tr) if cfg.saturation_vem is None else tr & (s >= cfg.saturation_vem)
    kind = np.where(sat, 3, np.where(tr, 1, 2)).astype(np.int8)
    return {
        "x": sx[order],
        "y": sy[order],
        "signal": np.where(tr, s, 0.0),
        "time": np.where(tr, t, 0.0),
        "trigger": tr,
        "y_obs": np.where(tr, np.maximum(s, 1e-6), cfg.trigger_vem),
        "kind": kind,
        "bary_x": bx,
        "bary_y": by,
    }


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median of values[i, mask[i]] per row, (n,); 0 for rows without entries."""
    count = mask.sum(axis=1)
    srt = np.sort(np.where(mask, values, np.inf), axis=1)
    lo = np.take_along_axis(srt, np.maximum((count - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(srt, np.maximum(count // 2, 0)[:, None], axis=1)[:, 0]
    return 0.5 * (np.where(count > 0, lo, 0.0) + np.where(count > 0, hi, 0.0))


def _geometry_ok(st: dict[str, np.ndarray], cfg: ReconstructionConfig) -> np.ndarray:
    """Enough triggered stations, not aligned (smallest position-covariance eigenvalue)."""
    m = st["trigger"].astype(np.float64)
    cnt = m.sum(axis=1)
    c = np.maximum(cnt, 1.0)
    mx, my = (m * st["x"]).sum(axis=1) / c, (m * st["y"]).sum(axis=1) / c
    dx, dy = (st["x"] - mx[:, None]) * m, (st["y"] - my[:, None]) * m
    sxx, syy, sxy = (dx * dx).sum(axis=1) / c, (dy * dy).sum(axis=1) / c, (dx * dy).sum(axis=1) / c
    half_tr = 0.5 * (sxx + syy)
    lam_min = half_tr - np.sqrt(np.maximum(half_tr**2 - (sxx * syy - sxy * sxy), 0.0))
    return (cnt >= cfg.min_stations) & (lam_min > cfg.min_spread_m2)


def _reconstruct_chunk(
    signal: np.ndarray,
    time: np.ndarray,
    trigger: np.ndarray,
    sx: np.ndarray,
    sy: np.ndarray,
    cal: SDCalibration,
    free_beta: bool,
) -> dict[str, np.ndarray]:
    cfg = cal.reconstruction
    st = _station_lists(signal, time, trigger, sx, sy, cfg)
    n = signal.shape[0]
    n_trig = st["trigger"].sum(axis=1)
    ok = _geometry_ok(st, cfg)
    mask = st["trigger"] & ok[:, None]

    # 1. plane front, weights with a nominal axis distance of 1 km (the core is not known yet)
    w = np.where(mask, 1.0 / time_sigma(st["signal"], 1000.0, cfg) ** 2, 0.0)
    u, v, _, _, _ = fit_plane_front(st["x"], st["y"], st["time"], w)
    zenith = np.arcsin(np.sqrt(u * u + v * v))
    kappa = curvature_prior(zenith, cfg) if cfg.curved_front else np.zeros(n)

    # 2. LDF from the barycentre. Start amplitude: median over the triggered stations of
    # ln(S / shape), with r clipped at 300 m (the barycentre sits close to the largest station,
    # where the LDF is steep: unclipped, that station would set a far too small S1000)
    beta = beta_of_zenith(zenith, cal.ldf_beta)
    r, _ = _axis_distance(
        st["x"] - st["bary_x"][:, None], st["y"] - st["bary_y"][:, None], u[:, None], v[:, None]
    )
    ln_ratio = np.log(np.maximum(st["signal"], 1e-3)) - np.log(
        ldf_shape(np.maximum(r, 300.0), beta[:, None], cfg.ldf_gamma)
    )
    ln_amp = _masked_median(ln_ratio, mask)
    cols = [ln_amp, st["bary_x"], st["bary_y"]]
    if free_beta:
        cols.append(beta)
    p = np.stack(cols, axis=1)
    n_iter = cfg.ldf_iterations
    for _ in range(cfg.n_passes):
        p, converged, dev = _fit_ldf(p, st, u, v, beta, ok, cfg, free_beta, n_iter)
        n_iter = cfg.ldf_iterations_refit
        if cfg.curved_front:
            u, v, kappa = _fit_curved_front(st, p[:, 1], p[:, 2], u, v, kappa, ok, cfg)
        else:  # plane refit with the axis distances of the fitted core
            r, _ = _axis_distance(st["x"] - p[:, 1:2], st["y"] - p[:, 2:3], u[:, None], v[:, None])
            w = np.where(mask, 1.0 / time_sigma(st["signal"], r, cfg) ** 2, 0.0)
            u, v, _, _, _ = fit_plane_front(st["x"], st["y"], st["time"], w)
        zenith = np.arcsin(np.sqrt(u * u + v * v))
        if not free_beta:  # beta of the new zenith and S1000, fixed during the next LDF fit
            beta = beta_of_zenith(zenith, cal.ldf_beta, np.exp(p[:, 0]), cal.ldf_beta_log_s)
    p, converged, dev = _fit_ldf(p, st, u, v, beta, ok, cfg, free_beta, n_iter)

    s1000 = np.exp(p[:, 0])
    valid = ok & np.isfinite(p).all(axis=1) & np.isfinite(u) & np.isfinite(v) & (s1000 > 0)
    if free_beta:
        beta = p[:, 3]
    return {
        "valid": valid,
        "n_stations": n_trig,
        "zenith": np.where(valid, zenith, 0.0),
        "azimuth": np.where(valid, np.mod(np.arctan2(v, u), 2.0 * np.pi), 0.0),
        "core_x": np.where(valid, p[:, 1], 0.0),
        "core_y": np.where(valid, p[:, 2], 0.0),
        "s1000": np.where(valid, s1000, 0.0),
        "beta": np.where(valid, beta, 0.0),
        "curvature": np.where(valid, kappa, 0.0),
        "ldf_converged": converged & valid,
        "ldf_deviance": np.where(valid, dev, 0.0),
    }


def reconstruct(
    arrays: Mapping[str, np.ndarray], calibration: SDCalibration, free_beta: bool = False
) -> SDReconstruction:
    """Reconstruct air-shower events: axis, core, S1000, S38 and energy.

    Args:
        arrays: ``station/signal`` (n, R, C) VEM, ``station/time`` (n, R, C) ns,
            ``station/trigger`` (n, R, C) bool and ``meta/station_x``, ``meta/station_y``
            (``meta/station_z`` optional, must be constant) (R, C) m: the arrays of an event file
            or of ``simulation.airshower.simulate``.
        calibration: LDF shape, CIC and energy scale (:func:`calibrate`; the defaults give an
            uncalibrated energy).
        free_beta: fit beta per event as well (used by :func:`calibrate`; needs many stations).
    """
    _check_arrays(arrays, "<arrays>")
    cfg = calibration.reconstruction
    sx = np.asarray(arrays["meta/station_x"], dtype=np.float64).ravel()
    sy = np.asarray(arrays["meta/station_y"], dtype=np.float64).ravel()
    n = arrays["station/signal"].shape[0]
    parts = []
    for start in range(0, max(n, 1), cfg.chunk_size):  # n = 0: one empty chunk
        sl = slice(start, start + cfg.chunk_size)
        parts.append(
            _reconstruct_chunk(
                np.asarray(arrays["station/signal"][sl]),
                np.asarray(arrays["station/time"][sl]),
                np.asarray(arrays["station/trigger"][sl]),
                sx,
                sy,
                calibration,
                free_beta,
            )
        )
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return _with_energy(out, calibration)
