"""Targets, losses and predictions: regression (energy, Xmax, ...) and classification (jets).

The loader hands over raw physical targets (``truth/<name>`` in the order of ``task.targets``); the
model works in normalised units, ``(y - mean) / std`` with the mean and standard deviation fitted
on the training split (``stats["targets"][name]``). Everything here is a pure function of arrays.

Losses (all weighted by ``valid``, so the padding of a last partial batch never counts):

- ``"mse"``: squared error in normalised units;
- ``"huber"``: Huber loss in normalised units (``huber_delta`` standard deviations);
- ``"relative"``: ``((y_pred - y_true) / y_true)^2`` in physical units, for a target such as
  ``energy_eev`` where the resolution is relative (dE/E). Targets must be non-zero.
- ``"cross_entropy"``: classification. The one target ``truth/<targets[0]>`` holds the class
  index into ``classes``; the model outputs one logit per class; no normalisation (the scaler is
  the identity); predictions are the softmax probabilities.
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
    loss: Literal["mse", "huber", "relative", "cross_entropy"] = "mse"  # see module docstring
    huber_delta: float = 1.0  # Huber transition, in train standard deviations of the target
    classes: tuple[str, ...] = ()  # cross_entropy: class names, in the order of the label index
    label_smoothing: float = 0.0  # cross_entropy: weight moved uniformly onto all classes
    loss_weights: tuple[float, ...] = ()  # regression: one weight per target; () = all 1

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("task.targets must name at least one target")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"task.targets has duplicates: {self.targets}")
        if self.huber_delta <= 0:
            raise ValueError(f"huber_delta must be positive, got {self.huber_delta}")
        if self.is_classification:
            if len(self.targets) != 1 or len(self.classes) < 2:
                raise ValueError(
                    "loss cross_entropy needs one target (the class index, e.g. [label]) and "
                    f"at least two classes; got targets {self.targets}, classes {self.classes}"
                )
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"task.classes has duplicates: {self.classes}")
        elif self.classes:
            raise ValueError(f"task.classes is only for loss cross_entropy (loss is {self.loss})")
        if self.loss_weights:
            if self.is_classification or len(self.loss_weights) != len(self.targets):
                raise ValueError(
                    f"task.loss_weights needs one weight per regression target {self.targets}, "
                    f"got {self.loss_weights}"
                )
            if min(self.loss_weights) < 0 or not any(w > 0 for w in self.loss_weights):
                raise ValueError(f"task.loss_weights must be >= 0, not all 0: {self.loss_weights}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    @property
    def is_classification(self) -> bool:
        return self.loss == "cross_entropy"

    @property
    def n_outputs(self) -> int:
        """Model outputs: one logit per class, or one value per regression target."""
        return len(self.classes) if self.is_classification else len(self.targets)


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


def make_scaler(cfg: TaskConfig, stats: Mapping[str, Any]) -> TargetScaler:
    """The target normalisation of a task: fitted statistics, or the identity for classes."""
    if cfg.is_classification:
        return TargetScaler(np.zeros(1, np.float32), np.ones(1, np.float32))
    return TargetScaler.from_stats(stats, cfg.targets)


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
    """Loss of each event, summed over targets (weighted by ``loss_weights``): Float[Array, "batch"].

    Args:
        pred: model output, Float[Array, "batch n_targets"], normalised units.
        target: raw physical targets, Float[Array, "batch n_targets"].
    """
    if cfg.is_classification:
        labels = target[:, 0].astype(jnp.int32)
        n_classes = pred.shape[-1]
        one_hot = jax.nn.one_hot(labels, n_classes, dtype=pred.dtype)
        smoothed = one_hot * (1.0 - cfg.label_smoothing) + cfg.label_smoothing / n_classes
        return -jnp.sum(smoothed * jax.nn.log_softmax(pred, axis=-1), axis=-1)
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
    if cfg.loss_weights:  # multi-task: the weighted sum over targets
        terms = terms * jnp.asarray(cfg.loss_weights, terms.dtype)[None, :]
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


def metric_sums(
    cfg: TaskConfig, pred: jax.Array, target: jax.Array, valid: jax.Array, scaler: TargetScaler
) -> dict[str, jax.Array]:
    """Valid-weighted sums for validation metrics (summed over batches, divided on the host).

    Regression: :func:`error_sums`. Classification: ``{"n", "correct"}``.
    """
    if cfg.is_classification:
        hit = (jnp.argmax(pred, axis=-1) == target[:, 0].astype(jnp.int32)).astype(jnp.float32)
        return {"n": valid.sum(), "correct": jnp.sum(hit * valid)}
    return error_sums(pred, target, valid, scaler)


def summarise_sums(cfg: TaskConfig, sums: Mapping[str, Any]) -> dict[str, float]:
    """Host metrics from :func:`metric_sums` totals: ``accuracy``, or ``rmse/<t>``, ``bias/<t>``
    per target in physical units."""
    n = max(float(sums["n"]), 1.0)
    if cfg.is_classification:
        return {"accuracy": float(sums["correct"]) / n}
    out = {}
    for i, name in enumerate(cfg.targets):
        out[f"rmse/{name}"] = float(np.sqrt(float(sums["sq_err"][i]) / n))
        out[f"bias/{name}"] = float(sums["err"][i]) / n
    return out


def predictions(
    cfg: TaskConfig, outputs: np.ndarray, scaler: TargetScaler
) -> dict[str, np.ndarray]:
    """Model outputs (n, n_outputs) -> the datasets ``prediction/<name>`` of a predictions file.

    Regression: one (n,) array per target in physical units (plus ``energy_eev`` in EeV when the
    target is ``log10_energy``). Classification: ``probs`` (n, n_classes), the softmax.
    """
    outputs = np.asarray(outputs, np.float32)
    if cfg.is_classification:
        shifted = outputs - outputs.max(axis=-1, keepdims=True)
        probs = np.exp(shifted)
        return {"probs": (probs / probs.sum(axis=-1, keepdims=True)).astype(np.float32)}
    phys = outputs * scaler.std[None, :] + scaler.mean[None, :]
    out = {t: phys[:, i] for i, t in enumerate(cfg.targets)}
    if "log10_energy" in cfg.targets and "energy_eev" not in cfg.targets:
        out["energy_eev"] = (10.0 ** (out["log10_energy"].astype(np.float64) - 18.0)).astype(
            np.float32
        )
    return out
