"""How training stops when it cannot go on: each error says where it stopped and what to do."""

from __future__ import annotations

from pathlib import Path

import jax


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf; the run stopped (its last good checkpoint is kept)."""

    def __init__(
        self,
        step: int,
        epoch: int,
        where: str = "train",
        last_checkpoint: Path | None = None,
        skipped: tuple[int, int] | None = None,
    ) -> None:
        self.step, self.epoch, self.where = step, epoch, where
        self.last_checkpoint = last_checkpoint
        what = "loss or gradient" if where == "train" else "loss"
        how = f"at step {step}"
        if skipped is not None:
            how = f"in {skipped[0]} steps by step {step} (train.max_skipped_steps = {skipped[1]})"
        super().__init__(
            f"non-finite {where} {what} {how} (epoch {epoch}); training stopped. "
            f"Last good checkpoint: {last_checkpoint or 'none'}. Lower train.lr, set "
            f"train.grad_clip, or check the inputs and the target statistics."
        )


class Preempted(RuntimeError):
    """SIGTERM stopped training; a checkpoint of the exact position was written first."""

    def __init__(self, step: int, epoch: int, batches_done: int, checkpoint: Path | None) -> None:
        self.step, self.epoch, self.batches_done = step, epoch, batches_done
        self.checkpoint = checkpoint
        super().__init__(
            f"stopped by SIGTERM at step {step} (epoch {epoch}, after {batches_done} of its "
            f"batches); checkpoint {checkpoint}. Continue with reco train --resume (a requeued "
            f"job: --requeue) from exactly there."
        )


class BatchTooLargeError(MemoryError):
    """A train step did not fit in the device's memory."""

    def __init__(self, batch_size: int | None, devices: int, err: Exception) -> None:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        per_device = f" ({batch_size // max(devices, 1)} per device)" if batch_size else ""
        super().__init__(
            f"a train step with batch size {batch_size or '?'}{per_device} does not fit in the "
            f"memory of {jax.devices()[0].device_kind}: lower loader.batch_size (e.g. halve it), "
            f"or use train.precision=bfloat16, or train.param_sharding=fsdp over several "
            f"devices. XLA said: {first}"
        )


def out_of_memory(err: Exception) -> bool:
    return "RESOURCE_EXHAUSTED" in str(err) or "out of memory" in str(err).lower()
