"""Write the train / val / test event files of a jet config (kind = "jets")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.events import split_seeds, write_events
from pipeline.shards import shard_attrs, shard_plan, split_path
from simulation.jets.config import JetsConfig
from simulation.jets.simulate import JetSample, concatenate, simulate_chunks


def _simulate_split(
    cfg: JetsConfig,
    n_jets: int,
    split_seed: int,
    report: Callable[[int], None],
    chunk_range: range | None = None,
) -> tuple[JetSample, dict[str, str]]:
    """The jets of one split and the engine's extra file attributes; report(jets_done) as they
    come (after each chunk of the toy, each shard of Pythia)."""
    if cfg.engine == "pythia":
        from simulation.jets import pythia  # pythia8mc is optional: imported only when asked

        sample = pythia.simulate_pythia(cfg, n_jets, split_seed, lambda k, _: report(k))
        return sample, {"engine": "pythia", "generator": f"pythia8mc {pythia.pythia_version()}"}
    chunks, done = [], 0
    for chunk in simulate_chunks(cfg, n_jets, split_seed, chunk_range):
        chunks.append(chunk)
        done += chunk.n_jets
        report(done)
    return concatenate(chunks), {}


def write_dataset(
    cfg: JetsConfig,
    out_dir: Path,
    seed: int,
    config_hash: str,
    progress: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] | None = None,
) -> dict[str, Path]:
    """Simulate cfg.n_train / n_val / n_test jets and write out_dir/{train,val,test}.h5.

    Classes are balanced (labels cycle through cfg.classes). Each file holds jet/* and truth/*
    (n,) datasets and the particles as the jagged group ``part`` (pipeline.events), with attributes
    kind = "jets", split, config_hash, seed, split_seed (simulate(cfg, n, split_seed) reproduces
    the file) and classes (the label names in index order). With ``cfg.engine == "pythia"`` the
    jets come from :func:`simulation.jets.pythia.simulate_pythia` (same layout; reproduced by
    simulate_pythia(cfg, n, split_seed)) and the files also carry engine = "pythia" and
    generator (the pythia8mc version).

    Args:
        progress: called as progress(jets_done, jets_total) after every chunk (toy) or shard
            (Pythia), over all splits.
        shard: ``(i, S)``: only shard i of S of every split, to ``<split>.shard-<i>-of-<S>.h5``
            (:mod:`pipeline.shards`; the toy only: Pythia runs in parallel with pythia.workers).

    Returns:
        split name -> path of the written file (written atomically, one split at a time).
    """
    out_dir = Path(out_dir)
    if shard is not None and cfg.engine == "pythia":
        raise ValueError(
            "data.shards: the Pythia engine is not simulated in shards; it runs its own "
            "processes in parallel (simulation.pythia.workers)"
        )
    counts = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    plans = {split: shard_plan(n, cfg.chunk_size, shard) for split, n in counts.items()}
    total, done = sum(n for _, n in plans.values()), 0
    paths = {}
    for split, split_seed in split_seeds(seed).items():
        chunks, _ = plans[split]
        if shard is not None and not chunks:
            continue

        def report(k: int, before: int = done) -> None:
            if progress is not None:
                progress(before + k, total)

        sample, extra = _simulate_split(cfg, counts[split], split_seed, report, chunks)
        done += sample.n_jets
        attrs = {
            "kind": "jets",
            "split": split,
            "config_hash": config_hash,
            "seed": seed,
            "split_seed": split_seed,
            "classes": list(cfg.classes),
            **extra,
            **shard_attrs(shard),
        }
        path = split_path(out_dir, split, shard)
        paths[split] = write_events(path, sample.arrays, attrs, jagged=sample.jagged)
    return paths
