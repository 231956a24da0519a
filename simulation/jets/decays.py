"""Hard process: resonance masses (Breit-Wigner), decays in the rest frame, boosts to the jet.

Flavour codes of partons: 21 gluon, 1 light quark (u, d, s), 4 charm, 5 bottom. Every function is
vectorised over jets and returns plain arrays; momenta in GeV, angles in rad.
"""

from __future__ import annotations

import numpy as np

from simulation.jets.config import JetsConfig
from simulation.jets.kinematics import (
    boost,
    isotropic_directions,
    pt_eta_phi,
    pt_eta_phi_m_to_p4,
    wrap_phi,
)

GLUON, LIGHT, CHARM, BOTTOM = 21, 1, 4, 5

# Z -> q qbar hadronic fractions (PDG): d, s, b 0.152/0.699 each; u, c 0.116/0.699 each.
_Z_FLAVOURS = np.array([LIGHT, LIGHT, LIGHT, CHARM, BOTTOM])
_Z_WEIGHTS = np.array([0.152, 0.116, 0.152, 0.116, 0.152]) / 0.688


def breit_wigner(
    rng: np.random.Generator, mass: float, width: float, n: int, n_widths: float = 10.0
) -> np.ndarray:
    """n masses (GeV): a Cauchy (non-relativistic Breit-Wigner) of full width `width` (GeV),
    truncated to mass +- n_widths half-widths (quartiles at +- width/2 tan(atan(n_widths)/2))."""
    if width == 0:
        return np.full(n, mass)
    lo, hi = np.arctan(-n_widths), np.arctan(n_widths)
    return mass + 0.5 * width * np.tan(rng.uniform(lo, hi, n))


def two_body_decay(
    rng: np.random.Generator, mass: np.ndarray, m1: np.ndarray, m2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic two-body decay at rest: daughter momenta p1 = -p2 (n, 3), GeV.

    |p*| = sqrt((M^2 - (m1 + m2)^2)(M^2 - (m1 - m2)^2)) / (2 M).
    """
    s = mass * mass
    p_star = np.sqrt(np.maximum((s - (m1 + m2) ** 2) * (s - (m1 - m2) ** 2), 0.0)) / (2.0 * mass)
    p1 = p_star[:, None] * isotropic_directions(rng, len(mass))
    return p1, -p1


def sample_jet_kinematics(
    rng: np.random.Generator, cfg: JetsConfig, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generated pT (GeV, uniform), eta (uniform in |eta| < eta_max), phi (rad), each (n,)."""
    kin = cfg.kinematics
    pt = rng.uniform(kin.pt_min, kin.pt_max, n)
    eta = rng.uniform(-kin.eta_max, kin.eta_max, n)
    return pt, eta, rng.uniform(-np.pi, np.pi, n)


def _opening_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    cos = np.sum(a * b, axis=-1) / np.maximum(norm, 1e-300)
    return np.arccos(np.clip(cos, -1.0, 1.0))


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """n rotation matrices (n, 3, 3) uniform on SO(3) (normalised Gaussian quaternions)."""
    q = rng.normal(size=(n, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=-1, keepdims=True)).T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def contain_prongs(
    rng: np.random.Generator,
    prongs_rest: list[np.ndarray],
    present: list[np.ndarray],
    beta: np.ndarray,
    axis: np.ndarray,
    radius: float,
    max_redraws: int,
) -> list[np.ndarray]:
    """Rotate each decay in its rest frame at random until every present prong, boosted by beta
    (n, 3), lies within Delta R < radius of `axis` (n, 3): the decay orientation conditioned on a
    contained decay, as truth matching selects jets in generator samples (Pythia engine).

    Args:
        prongs_rest: rest-frame prong momenta, each (n, 3) GeV; present: (n,) bool per prong.
    Returns the rotated prongs; decays still uncontained after max_redraws keep their last draw.
    """
    prongs = [q.copy() for q in prongs_rest]
    _, eta_j, phi_j = pt_eta_phi(axis)

    def outside(rows: np.ndarray) -> np.ndarray:
        """The decays among `rows` with a present prong outside the radius."""
        bad = np.zeros(rows.size, bool)
        for q, here in zip(prongs, present, strict=True):
            q_lab, _ = boost(q[rows], np.linalg.norm(q[rows], axis=-1), beta[rows])
            _, eta, phi = pt_eta_phi(q_lab)
            dr2 = (eta - eta_j[rows]) ** 2 + wrap_phi(phi - phi_j[rows]) ** 2
            bad |= here[rows] & (dr2 >= radius * radius)
        return rows[bad]

    bad = outside(np.arange(len(axis)))
    for _ in range(max_redraws):
        if bad.size == 0:
            break
        rot = random_rotations(rng, bad.size)
        for q in prongs:
            q[bad] = np.einsum("nij,nj->ni", rot, q[bad])
        bad = outside(bad)  # only the redrawn decays are checked again
    return prongs


def hard_process(
    rng: np.random.Generator, cfg: JetsConfig, label: np.ndarray
) -> dict[str, np.ndarray]:
    """Initial partons of n jets of the given class indices (into cfg.classes).

    Returns:
        jet-level (n,): ``axis`` (n, 3) unit direction of the generated object, ``p`` (n, 3) and
        ``energy`` its four-momentum, ``mass`` its mass (GeV; 0 for QCD), ``resonance`` bool.
        parton-level (m,): ``parton_jet`` jet index, ``parton_p`` (m, 3) GeV (massless partons),
        ``parton_flavour`` code, ``parton_theta_max`` (rad) the angular-ordering cone of the
        first emissions (the angle to the nearest colour-connected prong, at most R).
    """
    res = cfg.resonances
    n = len(label)
    names = np.array(cfg.classes)[label]
    pt, eta, phi = sample_jet_kinematics(rng, cfg, n)
    mass = np.zeros(n)
    top = names == "Tbqq"
    qcd = names == "QCD"
    for name, (m0, w0) in {
        "Hbb": (res.mass_h, res.width_h),
        "Hcc": (res.mass_h, res.width_h),
        "Wqq": (res.mass_w, res.width_w),
        "Zqq": (res.mass_z, res.width_z),
        "Tbqq": (res.mass_t, res.width_t),
    }.items():
        sel = names == name
        mass[sel] = breit_wigner(rng, m0, w0, int(sel.sum()))
    p_jet, e_jet = pt_eta_phi_m_to_p4(pt, eta, phi, mass)
    # QCD partons are massless (beta = 1): they are not boosted, so give them beta = 0 here.
    beta = np.where(qcd[:, None], 0.0, p_jet / e_jet[:, None])

    zeros = np.zeros(n)

    # Two-prong decays: flavours per class.
    f1 = np.full(n, LIGHT)
    f1[names == "Hbb"] = BOTTOM
    f1[names == "Hcc"] = CHARM
    w_to_cs = (names == "Wqq") & (rng.random(n) < 0.5)  # W -> ud' or cs' (CKM-favoured)
    f1[w_to_cs] = CHARM
    zsel = names == "Zqq"
    f1[zsel] = rng.choice(_Z_FLAVOURS, int(zsel.sum()), p=_Z_WEIGHTS)
    f2 = np.where(np.isin(names, ("Hbb", "Hcc", "Zqq")), f1, LIGHT)

    # Top: t -> b W at rest, W -> q q' in the W frame, then into the top frame.
    p_b, p_q1_t, p_q2_t = (np.zeros((n, 3)) for _ in range(3))
    it = np.flatnonzero(top)
    m_t = mass[it]
    m_w = np.minimum(breit_wigner(rng, res.mass_w, res.width_w, it.size), 0.95 * m_t)
    zt = np.zeros(it.size)
    p_b[it], p_w = two_body_decay(rng, m_t, zt, m_w)
    p_q1, p_q2 = two_body_decay(rng, m_w, zt, zt)
    beta_w = p_w / np.sqrt(np.sum(p_w * p_w, axis=-1) + m_w * m_w)[:, None]
    e_q = np.linalg.norm(p_q1, axis=-1)
    p_q1_t[it], _ = boost(p_q1, e_q, beta_w)
    p_q2_t[it], _ = boost(p_q2, e_q, beta_w)
    # Two-prong decays (H, W, Z): q1 = -q2 with |p*| = M / 2 at rest.
    p_a, p_b2 = two_body_decay(rng, np.maximum(mass, 1e-3), zeros, zeros)

    prongs_rest = [
        np.where(top[:, None], p_b, p_a),
        np.where(top[:, None], p_q1_t, p_b2),
        p_q2_t,
    ]
    w_cs_top = rng.random(n) < 0.5  # W -> cs' in half of the top's W decays
    flav = [np.where(top, BOTTOM, f1), np.where(top, LIGHT, f2), np.where(w_cs_top, CHARM, LIGHT)]
    present = [~qcd, ~qcd, top]
    if res.contained:
        prongs_rest = contain_prongs(
            rng, prongs_rest, present, beta, p_jet, cfg.kinematics.radius, res.max_redraws
        )
    lab = [boost(q, np.linalg.norm(q, axis=-1), beta)[0] for q in prongs_rest]

    # QCD: one massless parton along the jet direction.
    lab[0] = np.where(qcd[:, None], p_jet, lab[0])
    flav[0] = np.where(qcd, np.where(rng.random(n) < res.qcd_gluon_fraction, GLUON, LIGHT), flav[0])
    present[0] = np.ones(n, bool)

    radius = cfg.kinematics.radius
    theta_max = []
    for i in range(3):
        others = [_opening_angle(lab[i], lab[j]) for j in range(3) if j != i]
        others[1] = np.where(top, others[1], np.inf)  # only top has a third prong
        theta_max.append(np.minimum(np.minimum(*others), radius))
    theta_max[0] = np.where(qcd, radius, theta_max[0])

    jet_idx = np.arange(n)
    keep = np.concatenate(present)
    return {
        "axis": p_jet / np.linalg.norm(p_jet, axis=-1, keepdims=True),
        "p": p_jet,
        "energy": e_jet,
        "mass": mass,
        "resonance": ~qcd,
        "parton_jet": np.concatenate([jet_idx] * 3)[keep],
        "parton_p": np.concatenate(lab)[keep],
        "parton_flavour": np.concatenate(flav)[keep].astype(np.int16),
        "parton_theta_max": np.concatenate(theta_max)[keep],
    }
