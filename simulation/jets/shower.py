"""Angular-ordered parton shower in the soft-collinear (independent emission) approximation.

Each emitter of energy E radiates gluons with density, in the Lund plane,

    dN = (2 C alpha_s(kT) / pi) d ln(1/theta) d ln(1/z) * r(z),   kT = z E theta > kt_cut,

with C = C_F = 4/3 for quarks and C_A = 3 for gluons, theta below the emitter's angular-ordering
cone theta_max, z <= z_max, one-loop running alpha_s frozen below kt_cut, and r(z) the ratio of the
full splitting function to its soft limit (P_gq = C_F (1 + (1 - z)^2) / z, P_gg symmetrised).
Emissions are drawn as a Poisson process on the rectangle that encloses the allowed triangle and
thinned (kT cut, running coupling, r(z)). Recoil: the emitter loses the emitted three-momenta, so
three-momentum is conserved exactly; partons stay massless. Emitted gluons radiate in the next
generation inside their own emission angle (angular ordering / colour coherence). g -> q qbar is
left out.
"""

from __future__ import annotations

import numpy as np

from simulation.jets.config import ShowerConfig
from simulation.jets.decays import GLUON
from simulation.jets.kinematics import group_sum, rotate_off_axis

C_F = 4.0 / 3.0
C_A = 3.0
_B0 = (33.0 - 2.0 * 5.0) / (12.0 * np.pi)  # one-loop beta0 for nf = 5
_R_MAX = 1.125  # max over z <= 1/2 of r(z) for g -> gg


def alpha_s(kt: np.ndarray, lambda_qcd: float, kt_freeze: float) -> np.ndarray:
    """One-loop alpha_s(kT) = 1 / (beta0 ln(kT^2 / Lambda^2)), frozen below kt_freeze (GeV)."""
    kt = np.maximum(kt, kt_freeze)
    return 1.0 / (_B0 * np.log(kt * kt / (lambda_qcd * lambda_qcd)))


def splitting_ratio(z: np.ndarray, is_gluon: np.ndarray) -> np.ndarray:
    """Full splitting function over its soft limit 2C/z at gluon fraction z <= 1/2.

    Quark: (1 + (1 - z)^2) / 2. Gluon: z P_gg(z) / (2 C_A) with P_gg = 2 C_A (z/(1-z) + (1-z)/z
    + z(1-z)), i.e. z^2/(1-z) + (1-z) + z^2(1-z), which is 1 at z -> 0 and 1.125 at z = 1/2.
    """
    quark = 0.5 * (1.0 + (1.0 - z) ** 2)
    gluon = z * z / (1.0 - z) + (1.0 - z) + z * z * (1.0 - z)
    return np.where(is_gluon, gluon, quark)


def emit(
    rng: np.random.Generator,
    energy: np.ndarray,
    theta_max: np.ndarray,
    is_gluon: np.ndarray,
    cfg: ShowerConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Primary emissions of each emitter: (emitter index, z, theta), each (k,).

    Args:
        energy: (m,) GeV emitter energies; theta_max: (m,) rad cones; is_gluon: (m,) bool.
    """
    kt_cut, z_max = cfg.kt_cut, cfg.z_max
    alpha_max = cfg.alpha_scale * float(alpha_s(np.array(kt_cut), cfg.lambda_qcd, kt_cut))
    colour = np.where(is_gluon, C_A, C_F)
    # Rectangle in (ln 1/theta, ln 1/z) enclosing the region kT > kt_cut.
    theta_min = kt_cut / (np.maximum(energy, 1e-9) * z_max)
    l_theta = np.log(np.maximum(theta_max / theta_min, 1.0))
    z_min = kt_cut / np.maximum(energy * theta_max, 1e-9)
    l_z = np.log(np.maximum(z_max / z_min, 1.0))
    lam = 2.0 * colour * alpha_max / np.pi * l_theta * l_z * _R_MAX
    counts = rng.poisson(lam)
    idx = np.repeat(np.arange(len(energy)), counts)
    theta = theta_max[idx] * np.exp(-l_theta[idx] * rng.random(idx.size))
    z = z_max * np.exp(-l_z[idx] * rng.random(idx.size))
    kt = z * energy[idx] * theta
    accept = alpha_s(kt, cfg.lambda_qcd, kt_cut) * cfg.alpha_scale / max(alpha_max, 1e-12)
    accept = accept * splitting_ratio(z, is_gluon[idx]) / _R_MAX
    keep = (kt > kt_cut) & (rng.random(idx.size) < accept)
    return idx[keep], z[keep], theta[keep]


def shower(
    rng: np.random.Generator,
    p: np.ndarray,
    flavour: np.ndarray,
    theta_max: np.ndarray,
    cfg: ShowerConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shower massless partons into final partons.

    Args:
        p: (m, 3) GeV initial parton momenta; flavour: (m,) codes (decays.GLUON = 21);
            theta_max: (m,) rad angular-ordering cones of their first emissions.

    Returns:
        final parton momenta (m', 3) GeV, flavours (m',), and the index (m',) of the initial
        parton each descends from (the initial partons come first, in their order). The
        momentum sum of each initial parton's descendants equals its momentum.
    """
    m0 = len(p)
    p_all, flav_all, origin = [p.copy()], [flavour], [np.arange(m0)]
    cur_p, cur_theta, cur_origin, cur_gluon = p.copy(), theta_max, np.arange(m0), flavour == GLUON
    for _ in range(cfg.n_generations):
        if cur_p.shape[0] == 0:
            break
        e = np.linalg.norm(cur_p, axis=-1)
        idx, z, theta = emit(rng, e, cur_theta, cur_gluon, cfg)
        if idx.size == 0:
            break
        # Energy fractions of one emitter must leave it some momentum: cap their sum at 0.8.
        z_sum = group_sum(z, idx, len(e))
        z = z * np.minimum(1.0, 0.8 / np.maximum(z_sum, 1e-12))[idx]
        direction = cur_p[idx] / e[idx, None]
        k = (z * e[idx])[:, None] * rotate_off_axis(
            direction, theta, rng.uniform(0, 2 * np.pi, idx.size)
        )
        p_all[-1] -= group_sum(k, idx, len(e))  # recoil of this generation's emitters
        p_all.append(k)
        flav_all.append(np.full(len(idx), GLUON, dtype=flavour.dtype))
        origin.append(cur_origin[idx])
        cur_p, cur_theta, cur_origin = k.copy(), theta, cur_origin[idx]
        cur_gluon = np.ones(len(idx), bool)
    return np.concatenate(p_all), np.concatenate(flav_all), np.concatenate(origin)
