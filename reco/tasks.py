"""Regression targets: their normalisation, the loss, and predictions back in physical units.

The loader hands over raw physical targets (``truth/<name>`` in the order of ``task.targets``); the
model works in normalised units, ``(y - mean) / std`` with the mean and standard deviation fitted
on the training split (``stats["targets"][name]``). Everything here is a pure function of arrays.

Losses (all weighted by ``valid``, so the padding of a last partial batch never counts):

- ``"mse"``: squared error in normalised units;
- ``"huber"``: Huber loss in normalised units (``huber_delta`` standard deviations);
- ``"relative"``: ``((y_pred - y_true) / y_true)^2`` in physical units, for a target such as
  ``energy_eev`` where the resolution is relative (dE/E). Targets must be non-zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """What the model predicts and how it is scored."""

    targets: tuple[str, ...] = ("log10_energy",)  # truth/<name> datasets, in output order
    loss: Literal["mse", "huber", "relative"] = "mse"  # see reco.tasks module docstring
    huber_delta: float = 1.0  # Huber transition, in train standard deviations of the target

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("task.targets must name at least one target")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"task.targets has duplicates: {self.targets}")
        if self.huber_delta <= 0:
            raise ValueError(f"huber_delta must be positive, got {self.huber_delta}")


class TargetScaler(NamedTuple):
    """Per-target affine normalisation, fitted on the training split (physical units)."""

    mean: np.ndarray  # (n_targets,) float32
    std: np.ndarray  # (n_targets,) float32, > 0

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any], targets: tuple[str, ...]) -> TargetScaler:
        """From a ``FeatureStats.to_dict()`` mapping: ``stats["targets"][name] = {mean, std}``.

        Raises:
            KeyError: a target has no statistics (they were not fitted on train).
            ValueError: a standard deviation is not positive and finite.
        """
        table = stats.get("targets", {})
        missing = [t for t in targets if t not in table]
        if missing:
            raise KeyError(
                f"no normalisation statistics for targets {missing}; the feature stats have "
                f"{sorted(table)} (fit them on train with these targets)"
            )
        mean = np.array([float(table[t]["mean"]) for t in targets], dtype=np.float32)
        std = np.array([float(table[t]["std"]) for t in targets], dtype=np.float32)
        if not (np.isfinite(std).all() and (std > 0).all() and np.isfinite(mean).all()):
            raise ValueError(f"bad target statistics for {targets}: mean {mean}, std {std}")
        return cls(mean, std)


def normalise(y: jax.Array, scaler: TargetScaler) -> jax.Array:
    """Physical targets Float[Array, "batch n_targets"] -> normalised units."""
    return (y - scaler.mean[None, :]) / scaler.std[None, :]


def denormalise(pred: jax.Array, scaler: TargetScaler) -> jax.Array:
    """Normalised predictions Float[Array, "batch n_targets"] -> physical units of the targets."""
    return pred * scaler.std[None, :] + scaler.mean[None, :]


def weighted_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean of Float[Array, "batch"] over the rows with ``valid`` = 1 (0 if there are none)."""
    return jnp.sum(x * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def per_event_loss(
    cfg: TaskConfig, pred: jax.Array, target: jax.Array, scaler: TargetScaler
) -> jax.Array:
    """Loss of each event, summed over targets: Float[Array, "batch"].

    Args:
        pred: model output, Float[Array, "batch n_targets"], normalised units.
        target: raw physical targets, Float[Array, "batch n_targets"].
    """
    if cfg.loss == "relative":
        # Padding rows may hold y_true = 0; a safe denominator keeps their (masked) terms finite,
        # because a NaN times a zero weight is still NaN.
        safe = jnp.where(target == 0, 1.0, target)
        terms = ((denormalise(pred, scaler) - target) / safe) ** 2
    else:
        err = pred - normalise(target, scaler)
        if cfg.loss == "mse":
            terms = err**2
        else:
            d = cfg.huber_delta
            abs_err = jnp.abs(err)
            terms = jnp.where(abs_err <= d, 0.5 * err**2, d * (abs_err - 0.5 * d))
    return terms.sum(axis=-1)


def loss(
    cfg: TaskConfig, pred: jax.Array, target: jax.Array, valid: jax.Array, scaler: TargetScaler
) -> jax.Array:
    """Scalar loss: the ``valid``-weighted mean over events of :func:`per_event_loss`."""
    return weighted_mean(per_event_loss(cfg, pred, target, scaler), valid)


def error_sums(
    pred: jax.Array, target: jax.Array, valid: jax.Array, scaler: TargetScaler
) -> dict[str, jax.Array]:
    """Valid-weighted sums of the physical error ``y_pred - y_true`` per target, for metrics.

    Returns ``{"n": scalar, "err": (n_targets,), "sq_err": (n_targets,)}``; host code divides by
    ``n`` across batches (bias = err / n, RMSE = sqrt(sq_err / n)).
    """
    err = (denormalise(pred, scaler) - target) * valid[:, None]
    return {"n": valid.sum(), "err": err.sum(axis=0), "sq_err": (err * err).sum(axis=0)}
