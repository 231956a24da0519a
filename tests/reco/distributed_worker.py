"""Training runs for the distributed tests, run as subprocesses (JAX's device count and
``jax.distributed`` are fixed per process, so the tests cannot run them in pytest's own).

    python distributed_worker.py devices OUT          # in a process with 4 (fake) CPU devices
    python distributed_worker.py process OUT ADDR N I  # process I of N, coordinator ADDR
    python distributed_worker.py single OUT            # one process, one device: the reference
    python distributed_worker.py restore OUT RUN_DIR   # load a checkpoint, save its parameters
    python distributed_worker.py killed OUT            # SIGKILLed while writing a checkpoint

Every run trains a tiny CNN for a few steps on the same synthetic events with global batches of
32: ``ShardedLoader`` gives process ``i`` of ``n`` rows ``i*32/n : (i+1)*32/n`` of every global
batch, so all layouts see the same global batches. Parameters are saved as ``.npz`` files (flat
``path -> array``) under OUT for the test to compare.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

GLOBAL_BATCH = 32


class ShardedLoader:
    """Process ``index`` of ``count``'s share of every global batch (the loader interface)."""

    def __init__(self, image, target, index: int, count: int, shuffle: bool) -> None:
        self.image, self.target, self.shuffle = image, target, shuffle
        self.index, self.count = index, count
        self.batch_size = GLOBAL_BATCH // count
        self.n_events = len(image) // count
        self.input_spec = {"image": tuple(image.shape[1:])}

    def __len__(self) -> int:
        return -(-len(self.image) // GLOBAL_BATCH)

    def epoch(self, e: int) -> Iterator[dict[str, np.ndarray]]:
        n = len(self.image)
        order = np.random.default_rng([7, e]).permutation(n) if self.shuffle else np.arange(n)
        order = np.concatenate([order, np.full(len(self) * GLOBAL_BATCH - n, -1)])
        for start in range(0, len(order), GLOBAL_BATCH):
            rows = order[start : start + GLOBAL_BATCH]
            rows = rows[self.index * self.batch_size : (self.index + 1) * self.batch_size]
            real = rows >= 0
            take = np.where(real, rows, 0)
            yield {
                "image": np.where(real[:, None, None, None], self.image[take], 0.0).astype(
                    np.float32
                ),
                "target": np.where(real[:, None], self.target[take], 0.0).astype(np.float32),
                "valid": real.astype(np.float32),
                "index": np.where(real, rows, -1).astype(np.int64),
            }


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, 11, 11, 3)).astype(np.float32)
    target = 18.5 + 3.3 * image[..., 0].mean(axis=(1, 2))
    return image, target[:, None].astype(np.float32)


def model_config():
    from reco.models.cnn import CNNConfig

    return CNNConfig(stem_width=4, widths=(4, 8), head_widths=(8,), dropout=0.2)


def fsdp_split(parallel) -> int:
    """How many arrays of the tiny CNN's training state ``parallel`` splits over devices."""
    import jax
    import optax

    from reco.models import build_model
    from reco.state import init_state

    model = build_model(model_config(), {"image": (11, 11, 3)}, 1, 0)
    _, state = init_state(model, optax.adam(0.1))
    return sum("data" in tuple(s.spec) for s in jax.tree.leaves(parallel.state_shardings(state)))


def train(
    run_dir: Path,
    index: int = 0,
    count: int = 1,
    parallel=None,
    epochs: int = 2,
    resume: bool = False,
    tracker=None,
    **train_kw,
):
    """``fit`` the tiny CNN (2 epochs of 3 steps, dropout on) and return its FitResult."""
    from pipeline.tracking import NoopTracker
    from reco.tasks import TaskConfig
    from reco.train import TrainConfig, fit

    image, target = data(96, 0)
    val_image, val_target = data(64, 1)
    stats = {
        "variables": {},
        "targets": {
            "log10_energy": {"mean": float(target.mean()), "std": float(target.std()), "count": 96}
        },
    }
    cfg = TrainConfig(  # a constant lr: the schedule does not depend on the planned epochs
        epochs=epochs,
        lr=3e-3,
        warmup_steps=0,
        log_every_steps=2,
        early_stopping_patience=None,
        schedule="constant",
    )
    cfg = cfg.__class__(**{**cfg.__dict__, **train_kw})
    return fit(
        model_config(),
        TaskConfig(targets=("log10_energy",)),
        cfg,
        ShardedLoader(image, target, index, count, shuffle=True),
        ShardedLoader(val_image, val_target, index, count, shuffle=False),
        stats,
        run_dir=run_dir,
        tracker=tracker or NoopTracker(),
        seed=0,
        config_dict={},
        resume=resume,
        progress=False,
        parallel=parallel,
    )


def save_params(path: Path, checkpoint: Path) -> None:
    """The parameters and BatchNorm statistics of ``checkpoint`` as a flat ``.npz``."""
    from flax import nnx

    from reco.checkpoint import load_for_inference

    model, _, _ = load_for_inference(checkpoint, "last")
    flat = {
        ".".join(map(str, k)): np.asarray(v.get_value())
        for state in nnx.state(model, nnx.Param, nnx.BatchStat)
        for k, v in nnx.to_flat_state(state)
    }
    np.savez(path, **flat)


def save_metrics(path: Path, tracker) -> None:
    """What this process computed and logged: the train and validation losses per step (every
    process computes them from the global batch, so they must agree)."""
    import json

    keep = ("train/loss", "train/grad_norm", "val/loss")
    path.write_text(json.dumps({k: tracker.metrics[k] for k in keep}))


def main(argv: list[str]) -> None:
    from pipeline.tracking import DictTracker

    mode, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    if mode == "devices":
        import jax

        from reco.distributed import DataParallel, data_mesh

        assert jax.device_count() == 4, jax.devices()
        layouts = {
            "four": DataParallel(data_mesh()),
            "fsdp": DataParallel(data_mesh(), "fsdp", fsdp_min_size=64),
            "one": DataParallel(data_mesh(jax.devices()[:1])),
        }
        for name, parallel in layouts.items():
            tracker = DictTracker()
            kw = {"param_sharding": parallel.param_sharding}
            result = train(out / name, parallel=parallel, tracker=tracker, **kw)
            save_params(out / f"{name}.npz", result.last_checkpoint)
            save_metrics(out / f"metrics_{name}.json", tracker)
        (out / "fsdp_split.txt").write_text(str(fsdp_split(layouts["fsdp"])))
        # bfloat16 compute on 4 devices
        tracker = DictTracker()
        result = train(
            out / "bf16", parallel=layouts["four"], tracker=tracker, precision="bfloat16"
        )
        save_params(out / "bf16.npz", result.last_checkpoint)
        save_metrics(out / "metrics_bf16.json", tracker)
        # 1 epoch on 4 devices, resumed for the second on 2 (the checkpoint is restored into the
        # new layout)
        train(out / "moved", parallel=layouts["four"], epochs=1)
        two = DataParallel(data_mesh(jax.devices()[:2]))
        result = train(out / "moved", parallel=two, resume=True)
        save_params(out / "moved.npz", result.last_checkpoint)
    elif mode == "process":
        address, count, index = argv[2], int(argv[3]), int(argv[4])
        from reco import distributed

        assert distributed.initialize(address, count, index)
        import jax

        assert jax.process_count() == count and jax.process_index() == index
        tracker = DictTracker()
        train(out / "run", index=index, count=count, tracker=tracker)
        save_metrics(out / f"metrics_{index}.json", tracker)
    elif mode == "single":
        tracker = DictTracker()
        result = train(out / "single", tracker=tracker)
        save_params(out / "single.npz", result.last_checkpoint)
        save_metrics(out / "metrics_single.json", tracker)
    elif mode == "restore":
        save_params(out / "restored.npz", Path(argv[2]))
    elif mode == "killed":  # killed in the middle of epoch 1's first checkpoint write
        import os
        import signal

        from orbax.checkpoint import JsonCheckpointHandler

        calls = {"n": 0}
        original = JsonCheckpointHandler.async_save

        async def dying_save(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 8:  # epoch 0 wrote best and last (3 JSON items each); then 1 more
                os.kill(os.getpid(), signal.SIGKILL)
            return await original(self, *args, **kwargs)

        JsonCheckpointHandler.async_save = dying_save
        train(out / "single")
        raise SystemExit("not killed")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
