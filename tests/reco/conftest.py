"""Fixtures for the reco tests: synthetic footprints with a learnable target and a fake loader.

The fake loader has the interface of ``pipeline.loader.Loader`` that reco uses (``epoch(e)``,
``len``, ``n_events``, ``input_spec``) and yields batches of the documented contract: fixed shapes,
``valid`` = 0 and ``index`` = -1 on the padding of the last batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from reco.models.cnn import CNNConfig
from reco.train import TrainConfig


class FakeLoader:
    def __init__(
        self,
        image: np.ndarray,
        target: np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        corrupt_epochs: tuple[int, ...] = (),
    ) -> None:
        self.image, self.target = image, target
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.corrupt_epochs = corrupt_epochs  # epochs whose images are NaN (non-finite tests)
        self.n_events = len(image)
        self.input_spec = {"image": tuple(image.shape[1:])}

    def __len__(self) -> int:
        return -(-self.n_events // self.batch_size)

    def epoch(self, e: int) -> Iterator[dict[str, np.ndarray]]:
        order = np.arange(self.n_events)
        if self.shuffle:
            order = np.random.default_rng([self.seed, e]).permutation(self.n_events)
        bs = self.batch_size
        for start in range(0, self.n_events, bs):
            idx = order[start : start + bs]
            pad = bs - len(idx)
            image = self.image[idx]
            if e in self.corrupt_epochs:
                image = np.full_like(image, np.nan)
            yield {
                "image": np.concatenate([image, np.zeros((pad, *image.shape[1:]), np.float32)]),
                "target": np.concatenate(
                    [self.target[idx], np.zeros((pad, self.target.shape[1]), np.float32)]
                ),
                "valid": np.concatenate([np.ones(len(idx)), np.zeros(pad)]).astype(np.float32),
                "index": np.concatenate([idx, np.full(pad, -1)]).astype(np.int64),
            }


def make_data(n: int, shape: tuple[int, int, int] = (11, 11, 3), seed: int = 0):
    """Images and a target log10(E/eV) that depends smoothly on the total 'signal' channel."""
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, *shape)).astype(np.float32)
    log10_e = 18.5 + 0.3 * image[..., 0].mean(axis=(1, 2)) * np.sqrt(shape[0] * shape[1])
    return image, log10_e[:, None].astype(np.float32)


def stats_for(target: np.ndarray, names: tuple[str, ...] = ("log10_energy",)) -> dict:
    return {
        "variables": {},
        "targets": {
            name: {
                "mean": float(target[:, i].mean()),
                "std": float(target[:, i].std()),
                "count": len(target),
            }
            for i, name in enumerate(names)
        },
    }


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    return make_data(96)


@pytest.fixture
def loaders(data) -> Callable[..., tuple[FakeLoader, FakeLoader]]:
    """``loaders(**kw) -> (train, val)``: 96 train events in batches of 32, 40 val events."""
    image, target = data
    val_image, val_target = make_data(40, seed=1)

    def make(batch_size: int = 32, **kw) -> tuple[FakeLoader, FakeLoader]:
        return (
            FakeLoader(image, target, batch_size, **kw),
            FakeLoader(val_image, val_target, batch_size, shuffle=False),
        )

    return make


@pytest.fixture
def stats(data) -> dict:
    return stats_for(data[1])


@pytest.fixture
def tiny_cnn() -> CNNConfig:
    return CNNConfig(stem_width=4, widths=(4, 8), head_widths=(8,))


@pytest.fixture
def fast_train() -> TrainConfig:
    return TrainConfig(epochs=2, lr=3e-3, warmup_steps=0, log_every_steps=2)


@pytest.fixture
def fake_loader() -> type[FakeLoader]:
    return FakeLoader


@pytest.fixture
def synth() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    return make_data
