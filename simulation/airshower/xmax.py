"""Depth of shower maximum: the generalised Gumbel distribution of De Domenico et al. (2013).

pdf g(X) = lambda^lambda / (sigma Gamma(lambda)) exp(-lambda z - lambda e^-z), z = (X - mu)/sigma,
with mu, sigma, lambda polynomials in lE = log10(E / 10^19 eV) and lnA (JCAP 07 (2013) 050).
All depths in g/cm^2. Functions are elementwise over numpy arrays of any (broadcast) shape.
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, polygamma

# Rows k = 0, 1, 2 (power of lE), columns (const, lnA, lnA^2); PHYSICS.md.
GUMBEL_CONSTANTS: dict[str, dict[str, tuple[tuple[float, float, float], ...]]] = {
    "EPOS-LHC": {
        "mu": ((775.589, -7.047, -2.427), (57.589, -0.743, 0.214), (-0.820, -0.169, -0.027)),
        "sigma": ((29.403, 13.553, -3.154), (0.096, -0.961, 0.150)),
        "lambda": ((0.563, 0.711, 0.058), (0.039, 0.067, -0.004)),
    },
    "QGSJetII-04": {
        "mu": ((761.383, -11.719, -1.372), (57.344, -1.731, 0.309), (-0.355, 0.273, -0.137)),
        "sigma": ((35.221, 12.335, -2.889), (0.307, -1.147, 0.271)),
        "lambda": ((0.673, 0.694, -0.007), (0.060, -0.019, 0.017)),
    },
}


def _poly(rows: tuple[tuple[float, float, float], ...], lg_e: np.ndarray, ln_a: np.ndarray):
    out = np.zeros(np.broadcast(lg_e, ln_a).shape)
    for k, (c0, c1, c2) in enumerate(rows):
        out = out + (c0 + c1 * ln_a + c2 * ln_a**2) * lg_e**k
    return out


def gumbel_parameters(
    log10_energy: np.ndarray | float, ln_a: np.ndarray | float, model: str = "EPOS-LHC"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu, sigma, lambda) of the Gumbel Xmax pdf; mu, sigma in g/cm^2, lambda dimensionless.

    Args:
        log10_energy: log10(E / eV), any shape.
        ln_a: natural log of the mass number, broadcastable with `log10_energy`.
        model: hadronic interaction model, a key of GUMBEL_CONSTANTS.
    """
    if model not in GUMBEL_CONSTANTS:
        raise ValueError(f"hadronic_model: unknown {model!r}; known: {', '.join(GUMBEL_CONSTANTS)}")
    c = GUMBEL_CONSTANTS[model]
    lg_e = np.asarray(log10_energy, dtype=np.float64) - 19.0
    ln_a = np.asarray(ln_a, dtype=np.float64)
    return _poly(c["mu"], lg_e, ln_a), _poly(c["sigma"], lg_e, ln_a), _poly(c["lambda"], lg_e, ln_a)


def gumbel_mean(mu: np.ndarray, sigma: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Mean of the generalised Gumbel: mu + sigma (ln lambda - digamma(lambda)), g/cm^2."""
    return mu + sigma * (np.log(lam) - digamma(lam))


def gumbel_std(sigma: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Standard deviation of the generalised Gumbel: sigma sqrt(trigamma(lambda)), g/cm^2."""
    return sigma * np.sqrt(polygamma(1, lam))


def xmax_moments(
    log10_energy: np.ndarray | float, ln_a: np.ndarray | float, model: str = "EPOS-LHC"
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, standard deviation) of Xmax in g/cm^2 at log10(E/eV) and lnA, without the ground cut."""
    mu, sigma, lam = gumbel_parameters(log10_energy, ln_a, model)
    return gumbel_mean(mu, sigma, lam), gumbel_std(sigma, lam)


def sample_xmax(
    rng: np.random.Generator,
    log10_energy: np.ndarray,
    ln_a: np.ndarray,
    max_depth: np.ndarray | float = np.inf,
    model: str = "EPOS-LHC",
    max_rounds: int = 100,
) -> np.ndarray:
    """Sample Xmax (g/cm^2), shape (n,), as X = mu - sigma ln G with G ~ Gamma(lambda, 1/lambda).

    Samples deeper than `max_depth` (the ground's slant depth, shape (n,) or scalar) are drawn
    again: a shower reaching its maximum below ground is not a shower the array records as such,
    and the truncated distribution is what a ground array sees.
    """
    mu, sigma, lam = gumbel_parameters(log10_energy, ln_a, model)
    limit = np.broadcast_to(np.asarray(max_depth, dtype=np.float64), mu.shape)
    xmax = np.empty(mu.shape)
    todo = np.arange(mu.size)
    for _ in range(max_rounds):
        g = rng.gamma(lam[todo], 1.0 / lam[todo])
        xmax[todo] = mu[todo] - sigma[todo] * np.log(g)
        todo = todo[xmax[todo] > limit[todo]]
        if todo.size == 0:
            return xmax
    raise RuntimeError(
        f"sample_xmax: {todo.size} samples still below ground after {max_rounds} rounds"
    )
