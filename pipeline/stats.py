"""Statistics of the features and targets, fitted on the training file and saved with every
checkpoint (:func:`pipeline.features.fit_stats` fits them; the loader standardises with them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Mean and standard deviation of one quantity over ``count`` entries."""

    mean: float
    std: float
    count: int


@dataclass(frozen=True)
class FeatureStats:
    """Statistics fitted on the training file; saved with every checkpoint.

    ``variables`` is keyed ``"<group>/<variable>"`` (transformed values, unmasked entries only);
    ``targets`` by target name (raw ``truth/<target>`` values).
    """

    variables: dict[str, Moments] = field(default_factory=dict)
    targets: dict[str, Moments] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return {
            "variables": {k: dataclasses.asdict(m) for k, m in self.variables.items()},
            "targets": {k: dataclasses.asdict(m) for k, m in self.targets.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureStats:
        def moments(d: Mapping[str, Any]) -> dict[str, Moments]:
            return {
                k: Moments(float(m["mean"]), float(m["std"]), int(m["count"])) for k, m in d.items()
            }

        return cls(moments(data["variables"]), moments(data["targets"]))

    def target_mean_std(self, targets: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) arrays of shape (n_targets,) float32, in the order of ``targets``."""
        missing = [t for t in targets if t not in self.targets]
        if missing:
            raise KeyError(f"feature stats have no target(s) {missing}")
        mean = np.array([self.targets[t].mean for t in targets], np.float32)
        std = np.array([self.targets[t].std for t in targets], np.float32)
        return mean, std


class RunningMoments:
    """Streaming count/mean/M2 in float64 (Chan et al. parallel update): exact for any chunking."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).ravel()
        if x.size == 0:
            return
        with np.errstate(over="ignore", invalid="ignore"):  # NaN/inf: fit_stats names them
            n_b, mean_b = x.size, float(x.mean())
            m2_b = float(((x - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta**2 * self.n * n_b / n
        self.n = n

    def moments(self) -> Moments:
        std = float(np.sqrt(self.m2 / self.n)) if self.n else 0.0
        # A constant (or empty) quantity has std 0; dividing by it would make inf/NaN. Scale 1
        # leaves it merely centred, which is what a model can use of a constant.
        return Moments(self.mean, std if std > 0.0 else 1.0, self.n)
