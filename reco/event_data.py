"""Where an experiment's event files come from: simulated (whole, or in shards) or given.

The files of a simulation config live in ``data/<problem>-<simulation hash>/`` and are reused by
every experiment with the same simulation section and seed. With ``data.shards: S`` each split is
simulated as S shard files (``reco simulate --shard i``, e.g. one task of a SLURM job array each)
and read through a manifest at the split's usual path (:mod:`pipeline.shards`); the events are the
same as unsharded, since each simulation chunk has its own seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import config as C
from pipeline.atomic import temporary_owner
from pipeline.events import SPLITS, open_events
from pipeline.shards import missing_shards, shard_name, shard_plan, write_manifest
from simulation.jets.config import JetsConfig

if TYPE_CHECKING:
    from reco.experiment import ExperimentConfig

_NOT_SPLIT_ATTRS = {"n_events", "chunk_events", "shard_index", "shard_count", "created_utc"}


def simulation_hash(cfg: ExperimentConfig) -> str:
    """Identity of the event files: the simulation config (jets: the fields its engine uses,
    ``JetsConfig.identity``) and the seed."""
    sim = cfg.simulation
    fields = sim.identity() if isinstance(sim, JetsConfig) else sim
    return C.config_hash({"simulation": C.to_dict(fields), "seed": cfg.seed})


def data_dir(cfg: ExperimentConfig) -> Path:
    return (
        Path(cfg.data.dir)
        if cfg.data.dir
        else Path("data") / f"{cfg.problem}-{simulation_hash(cfg)}"
    )


# ----------------------------------------------------------------------------------------------
# simulate


def simulate(
    cfg: ExperimentConfig, progress: Callable[[int, int], None] | None = None
) -> dict[str, Path]:
    """Event files for the experiment: reused when files of the same simulation config exist.

    In a multi-process job process 0 simulates while the others wait, then find its files.
    """
    from reco import distributed

    if distributed.process_count() > 1:
        paths = _simulate(cfg, progress) if distributed.is_main() else None
        distributed.barrier("reco-simulate")
        if paths is None:  # the others: process 0's files (checked by the loaders)
            folder = data_dir(cfg) if cfg.data.simulate else Path(cfg.data.dir or "")
            paths = {s: folder / f"{s}.h5" for s in SPLITS}
        return paths
    return _simulate(cfg, progress)


def _writer(cfg: ExperimentConfig) -> Callable[..., dict[str, Path]]:
    if cfg.simulation.kind == "jets":
        from simulation.jets.dataset import write_dataset
    else:
        from simulation.airshower.dataset import write_dataset
    return write_dataset


def _hashes(cfg: ExperimentConfig, paths: dict[str, Path]) -> dict[str, str | None] | None:
    """The simulation hash of each existing file (None: a manifest whose shards are not all
    there); None if a file is missing."""
    if not all(p.is_file() for p in paths.values()):
        return None
    found: dict[str, str | None] = {}
    for split, path in paths.items():
        if missing_shards(path):  # a manifest whose shards are not all there (yet)
            found[split] = None
            continue
        with open_events(path, kind=cfg.problem) as ev:
            found[split] = ev.attrs.get("config_hash")
    return found


def _check_other(cfg: ExperimentConfig, found: dict[str, str | None] | None, sim_hash: str) -> None:
    """An explicit folder holding data of another config: never overwrite it silently."""
    other = {k: v for k, v in (found or {}).items() if v is not None and v != sim_hash}
    if other and cfg.data.dir and not cfg.data.regenerate:
        raise FileExistsError(
            f"{data_dir(cfg)}: holds event files of another simulation config (hash {other}); "
            f"expected {sim_hash}. Set data.regenerate=true to overwrite, or another data.dir."
        )


def _remove_stale_temporaries(folder: Path) -> None:
    """Half-written event files (``.<name>.<pid>.<thread>.tmp``, ``pipeline.atomic``) of
    processes no longer running here.

    Only for unsharded data: the tasks of a job array write shards of one folder from several
    hosts, whose process ids mean nothing on this one.
    """
    for tmp in Path(folder).glob(".*.h5.*.tmp"):
        pid = temporary_owner(tmp)
        if pid is None:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, another user's


def _simulate(
    cfg: ExperimentConfig, progress: Callable[[int, int], None] | None
) -> dict[str, Path]:
    if not cfg.data.simulate:
        return external_files(cfg)
    out = data_dir(cfg)
    sim_hash = simulation_hash(cfg)
    paths = {s: out / f"{s}.h5" for s in SPLITS}
    found = _hashes(cfg, paths)
    if not cfg.data.regenerate and found and all(h == sim_hash for h in found.values()):
        return paths
    _check_other(cfg, found, sim_hash)
    if cfg.data.shards == 1:
        _remove_stale_temporaries(out)
        write = _writer(cfg)
        return write(cfg.simulation, out, seed=cfg.seed, config_hash=sim_hash, progress=progress)
    for i in range(cfg.data.shards):
        simulate_shard(cfg, i, progress)
    return write_manifests(cfg)


def shard_files(cfg: ExperimentConfig, index: int) -> dict[str, Path]:
    """The files of shard ``index`` of ``data.shards`` (splits with a chunk in this shard)."""
    sim, count = cfg.simulation, cfg.data.shards
    counts = {"train": sim.n_train, "val": sim.n_val, "test": sim.n_test}
    return {
        split: data_dir(cfg) / shard_name(split, index, count)
        for split, n in counts.items()
        if shard_plan(n, sim.chunk_size, (index, count))[0]
    }


def simulate_shard(
    cfg: ExperimentConfig, index: int, progress: Callable[[int, int], None] | None = None
) -> dict[str, Path]:
    """Simulate shard ``index`` of ``data.shards`` of every split (kept if already there with
    this simulation config); returns its files. What one task of a job array runs.

    Raises:
        ValueError: ``data.shards`` is 1, ``data.simulate`` is false, or ``index`` is out of range.
    """
    count = cfg.data.shards
    if count < 2 or not cfg.data.simulate:
        raise ValueError(
            f"--shard needs data.shards >= 2 and data.simulate: true (data.shards is {count})"
        )
    if not 0 <= index < count:
        raise ValueError(f"--shard {index} is not in [0, {count}) (data.shards = {count})")
    sim_hash = simulation_hash(cfg)
    files = shard_files(cfg, index)
    found = _hashes(cfg, files)
    if found and all(h == sim_hash for h in found.values()):
        return files
    _check_other(cfg, found, sim_hash)
    write = _writer(cfg)
    out = data_dir(cfg)
    return write(
        cfg.simulation,
        out,
        seed=cfg.seed,
        config_hash=sim_hash,
        progress=progress,
        shard=(index, count),
    )


def write_manifests(cfg: ExperimentConfig) -> dict[str, Path]:
    """The manifest of each split over its shards (all must exist with this config's hash).

    Raises:
        FileNotFoundError: shards are missing (named: simulate them with --shard).
    """
    sim_hash = simulation_hash(cfg)
    shards = [shard_files(cfg, i) for i in range(cfg.data.shards)]
    missing = [f"--shard {i}" for i, files in enumerate(shards) if _hashes(cfg, files) is None]
    if missing:
        raise FileNotFoundError(
            f"{data_dir(cfg)}: shards not simulated yet ({', '.join(missing)} of "
            f"data.shards={cfg.data.shards}): run reco simulate CONFIG --shard I for each"
        )
    paths = {}
    for split in SPLITS:
        files = [s[split] for s in shards if split in s]
        with open_events(files[0], kind=cfg.problem) as ev:
            attrs = {k: v for k, v in ev.attrs.items() if k not in _NOT_SPLIT_ATTRS}
        if attrs.get("config_hash") != sim_hash:
            raise ValueError(f"{files[0]}: of another simulation config")
        paths[split] = write_manifest(data_dir(cfg) / f"{split}.h5", files, attrs)
    return paths


def external_files(cfg: ExperimentConfig) -> dict[str, Path]:
    """The train/val/test event files of ``data.dir`` (``data.simulate: false``), checked.

    Raises:
        FileNotFoundError: a split file is missing (named).
        EventFileError / ValueError: a file is not an event file of this problem, or its
            ``classes`` attribute does not list ``task.classes`` in the same order.
    """
    out = Path(cfg.data.dir or "")
    paths = {s: out / f"{s}.h5" for s in SPLITS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"data.simulate is false but split file(s) {missing} do not exist; convert or copy "
            f"the event files there first (e.g. reco convert-jetclass ... --out {out}/train.h5)"
        )
    for path in paths.values():
        with open_events(path, kind=cfg.problem) as ev:
            classes = ev.attrs.get("classes")
        if cfg.task.is_classification and classes is not None:
            if [str(c) for c in classes] != list(cfg.task.classes):
                raise ValueError(
                    f"{path}: its classes {list(classes)} differ from task.classes "
                    f"{list(cfg.task.classes)} (the label is the position); convert with "
                    f"--classes {','.join(cfg.task.classes)}"
                )
    return paths
