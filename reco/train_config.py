"""The training section of an experiment config (``train:``): the optimiser, its schedule and
the loop's settings, validated when the config is read. :func:`reco.train.fit` runs it; the
optimiser is built from it by :func:`reco.optim.make_optimizer`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from reco.host_memory import MODES as HOST_MEMORY_MODES


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and the training loop."""

    seed: int | None = None  # initialisation and shuffling; None = the experiment's seed (which
    # also seeds the simulation): another value trains again on the same events
    epochs: int = 20  # passes over the training split
    max_steps: int | None = None  # stop after this many optimiser steps (None: epochs decide)
    lr: float = 2e-3  # peak learning rate
    weight_decay: float = 1e-4  # AdamW decoupled weight decay, kernels only
    warmup_steps: int = 200  # linear warm-up from 0 to lr, optimiser steps
    optimizer: Literal["adamw", "ranger"] = (
        "adamw"  # ranger = Lookahead(RAdam), as ParT was trained
    )
    betas: tuple[float, float] = (0.9, 0.999)  # Adam/RAdam moment decay rates (ParT: 0.95, 0.999)
    eps: float = 1e-8  # Adam/RAdam denominator epsilon (ParT: 1e-5)
    lookahead_steps: int = 6  # ranger: fast steps between slow-weight synchronisations
    lookahead_alpha: float = 0.5  # ranger: slow-weight step size towards the fast weights
    schedule: Literal["cosine", "constant", "plateau", "flat_decay"] = "cosine"  # see reco.optim
    final_lr_fraction: float = 0.01  # cosine: final lr as a fraction of lr
    plateau_factor: float = 0.5  # plateau: lr multiplier when the epoch train loss stalls
    plateau_patience: int = 2  # plateau: epochs without improvement before reducing the lr
    grad_clip: float | None = 1.0  # clip gradients to this global L2 norm (None: off)
    early_stopping_patience: int | None = 5  # epochs without val improvement to stop (None: off)
    min_delta: float = 0.0  # smallest val-loss decrease that counts as an improvement
    log_every_steps: int = 50  # steps between train-metric logs (host syncs)
    init_from: str | None = None  # fine-tuning: a run folder or checkpoint to start from (a run's
    # best checkpoint); None = random initialisation. A resumed run continues from its own
    init_head: Literal["replace", "keep"] = "replace"  # init_from: replace = new head from this
    # run's seed, keep = copy it too (same output shapes)
    head_lr_multiplier: float = 1.0  # learning rate of the head's parameters / lr (ParT: 50)
    precision: Literal["float32", "bfloat16"] = "float32"  # compute dtype; weights, optimiser
    # state, norm statistics, softmax and loss stay float32 (reco.precision)
    param_sharding: Literal["replicated", "fsdp"] = "replicated"  # parameters and optimiser
    # state on every device, or split over the devices (FSDP; reco.distributed)
    nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient: stop (the last
    # good checkpoint is kept), or skip that step's update and go on
    max_skipped_steps: int = 10  # nonfinite = skip: stop once more steps than this were skipped
    host_memory: Literal["system", "keep", "huge_pages", "mimalloc"] = "system"  # keep: glibc's
    # malloc reuses the memory freed between steps in one arena; huge_pages: in its arenas, on
    # huge pages; mimalloc: mimalloc as malloc (reco.host_memory, set by the `reco` command)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or null, got {self.max_steps}")
        if self.lr <= 0 or self.log_every_steps < 1 or self.warmup_steps < 0:
            raise ValueError("lr and log_every_steps must be positive, warmup_steps >= 0")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("early_stopping_patience must be >= 1 or null")
        if self.init_from is not None and not self.init_from.strip():
            raise ValueError("init_from must be a run folder or checkpoint path, or null")
        if self.host_memory not in HOST_MEMORY_MODES:
            raise ValueError(f"host_memory must be in {HOST_MEMORY_MODES}: {self.host_memory!r}")
        if self.init_head not in ("replace", "keep"):
            raise ValueError(f"init_head must be 'replace' or 'keep', got {self.init_head!r}")
        if self.precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be float32 or bfloat16, got {self.precision!r}")
        if self.param_sharding not in ("replicated", "fsdp"):
            raise ValueError(
                f"param_sharding must be 'replicated' or 'fsdp', got {self.param_sharding!r}"
            )
        if self.nonfinite not in ("stop", "skip") or self.max_skipped_steps < 0:
            raise ValueError(
                f"nonfinite must be 'stop' or 'skip' and max_skipped_steps >= 0, got "
                f"{self.nonfinite!r} and {self.max_skipped_steps}"
            )
        if not (math.isfinite(self.head_lr_multiplier) and self.head_lr_multiplier > 0):
            raise ValueError(
                f"head_lr_multiplier must be a positive number, got {self.head_lr_multiplier}"
            )
