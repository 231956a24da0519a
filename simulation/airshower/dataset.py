"""Write the train / val / test event files of an air-shower config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.events import split_seeds, write_events
from pipeline.shards import shard_attrs, shard_plan, split_path
from simulation.airshower.config import AirshowerConfig
from simulation.airshower.simulate import meta_arrays, simulate_chunks


def write_dataset(
    cfg: AirshowerConfig,
    out_dir: Path,
    seed: int,
    config_hash: str,
    progress: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] | None = None,
) -> dict[str, Path]:
    """Simulate cfg.n_train / n_val / n_test events and write out_dir/{train,val,test}.h5.

    With ``shard = (i, S)`` only shard i of S of every split is simulated and written, to
    ``<split>.shard-<i>-of-<S>.h5`` (:mod:`pipeline.shards`; a split with fewer chunks than
    shards has no file for the shards past its chunks, and no entry in the returned dict).

    Args:
        cfg: the simulator config.
        out_dir: folder of the split files (created if missing).
        seed: master seed, stored as the files' `seed` attribute; each split draws from its own
            derived seed (:func:`split_seeds`), stored as `split_seed`, so that
            simulate(cfg, n_events, split_seed) reproduces the file's arrays.
        config_hash: hash of the experiment config, stored in each file's attributes.
        progress: called as progress(events_done, events_total) after every chunk, totals over
            all three splits.

    Returns:
        split name -> path of the written file. Files are written atomically by
        :func:`pipeline.events.write_events`, one split at a time (a split is held in memory).
    """
    out_dir = Path(out_dir)
    plans = {split: shard_plan(n, cfg.chunk_size, shard) for split, n in counts_of(cfg).items()}
    total, done = sum(n for _, n in plans.values()), 0
    meta = meta_arrays(cfg)
    paths = {}
    for split, split_seed in split_seeds(seed).items():
        chunks, n_events = plans[split]
        if shard is not None and not chunks:
            continue
        arrays: dict[str, np.ndarray] = {}
        start = 0
        for chunk in simulate_chunks(cfg, counts_of(cfg)[split], split_seed, chunks):
            if not arrays:  # preallocate: peak memory is one split plus one chunk
                arrays = {k: np.empty((n_events, *v.shape[1:]), v.dtype) for k, v in chunk.items()}
            stop = start + len(chunk["truth/xmax"])
            for name, values in chunk.items():
                arrays[name][start:stop] = values
            done += stop - start
            start = stop
            if progress is not None:
                progress(done, total)
        attrs = {
            "kind": "airshower",
            "split": split,
            "config_hash": config_hash,
            "seed": seed,
            "split_seed": split_seed,
            **shard_attrs(shard),
        }
        # Traces are zero at the stations that did not trigger (~90%): stored for the others only.
        sparse = {"station/trace": "station/trigger"} if "station/trace" in arrays else None
        paths[split] = write_events(
            split_path(out_dir, split, shard), arrays | meta, attrs, sparse=sparse
        )
    return paths


def counts_of(cfg: AirshowerConfig) -> dict[str, int]:
    """Events per split."""
    return {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
