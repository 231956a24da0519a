"""Run a trained model over an event file and write the predictions file for analysis.

``predictions.h5`` (docs/architecture.md): ``prediction/<target>`` (n,) float32 in the target's
physical units (plus ``prediction/energy_eev`` in EeV when the model predicts ``log10_energy``), or
for classification ``prediction/probs`` (n, n_classes) with the attributes ``task =
"classification"`` and ``class_names`` (JSON list),
``truth/<name>`` copied from the event file's ``truth/`` group (all of it), ``observer/<name>``
(extra per-event quantities), and the event-file attributes with ``kind = "predictions"``,
``model`` and ``checkpoint``. The file is written atomically (``pipeline.events.write_events``).
Rows are in the event file's order, whatever order the loader yields them in (batches carry the
event ``index``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from reco import tasks
from reco.train import BatchSource, layout_planner, make_predict_fn, model_inputs

LoaderFactory = Callable[[Mapping[str, Any], tuple[str, ...]], BatchSource]


def _observer_path(name: str) -> str:
    """Loader convention: a bare name is ``truth/<name>``; a path with "/" is taken as is."""
    return name if "/" in name else f"truth/{name}"


def predict_file(model: Any, loader: BatchSource, n_events: int) -> np.ndarray:
    """Raw model outputs for every event of the loader's file, in file order: (n_events, n_out).

    Models with layouts (ParT, the station transformer) run each batch in the one their
    inference planner chooses (``layout_planner(..., train=False)``: sets cut to their
    multiplicity, at most ``predict_plans`` compiled), chosen on the host from its mask.

    Raises:
        ValueError: the loader does not yield every event of the file exactly once.
    """
    from reco.state import split_model

    graphdef, params, rest = split_model(model)
    predict = make_predict_fn(graphdef)
    planner = layout_planner(model, loader.input_spec, train=False)
    outputs, indices = [], []
    for batch in loader.epoch(0):
        plan = planner(batch) if planner is not None else None
        outputs.append(predict(params, rest, model_inputs(batch), plan))  # on device: no sync
        indices.append(np.where(batch["valid"] > 0, batch["index"], -1))
    pred_norm = np.concatenate(jax.device_get(outputs)) if outputs else np.empty((0, 0))
    index = np.concatenate(indices) if indices else np.empty(0, np.int64)
    keep = index >= 0
    index, pred_norm = index[keep], pred_norm[keep]
    counts = np.bincount(index, minlength=n_events) if index.size else np.zeros(n_events, int)
    if counts.size != n_events or not (counts == 1).all():
        missing, repeated = int((counts == 0).sum()), int((counts > 1).sum())
        raise ValueError(
            f"the loader must yield each of the {n_events} events once (unshuffled single-process "
            f"loader of the whole file): {missing} missing, {repeated} repeated, "
            f"{max(counts.size - n_events, 0)} out of range"
        )
    out = np.empty((n_events, pred_norm.shape[1]), np.float32)
    out[index] = pred_norm
    return out


def loader_from_config(
    config: Mapping[str, Any],
    stats: Mapping[str, Any],
    targets: tuple[str, ...],
    events_path: Path,
) -> Any:
    """An unshuffled ``pipeline.loader.Loader`` over ``events_path`` with the features and batch
    size of the experiment config stored in a checkpoint (``config["features"]``, ``["loader"]``).
    """
    from pipeline.config import from_dict
    from pipeline.features import FeatureConfig, FeatureStats
    from pipeline.loader import Loader, LoaderConfig

    if "features" not in config:
        raise KeyError(
            "the checkpoint's config has no 'features' section; pass loader or loader_factory"
        )
    features = from_dict(FeatureConfig, config["features"], source="checkpoint config")
    batching = from_dict(LoaderConfig, config.get("loader", {}), source="checkpoint config")
    return Loader(
        Path(events_path),
        features,
        FeatureStats.from_dict(stats),
        targets,
        batch_size=batching.batch_size,
        shuffle=False,
        seed=0,
        prefetch=batching.prefetch,
        trim_buckets=batching.trim_buckets,
    )


def evaluate(
    checkpoint: Path,
    events_path: Path,
    out_path: Path,
    loader: BatchSource | None = None,
    loader_factory: LoaderFactory | None = None,
    observers: Sequence[str] = ("n_triggered",),
    attrs: Mapping[str, Any] | None = None,
    which: str = "best",
) -> Path:
    """Predict every event of ``events_path`` with ``checkpoint``; write ``out_path``; return it.

    Args:
        checkpoint: a run dir or its ``checkpoints`` dir (then its ``which`` checkpoint), a
            ``checkpoints/{best,last}`` dir or a step folder (``reco.checkpoint.resolve``).
        events_path: the event file to predict (e.g. ``data/airshower/test.h5``).
        out_path: the predictions file to write (e.g. ``runs/<run>/predictions.h5``).
        loader: a loader over ``events_path`` built with the checkpoint's feature statistics;
            or ``loader_factory(stats_dict, targets) -> loader``, called with the statistics and
            targets stored in the checkpoint; or neither: :func:`loader_from_config` builds one
            from the features and loader sections of the stored experiment config.
        observers: per-event quantities copied to ``observer/<name>``; a bare name means
            ``truth/<name>``, a path with "/" is read as is.
        attrs: extra file attributes (e.g. ``run_id``); they override the ones copied from the
            event file.
        which: "best" or "last", for run and checkpoints dirs.
    """
    from pipeline.events import open_events, write_events
    from reco.checkpoint import load_for_inference, read_meta

    if loader is not None and loader_factory is not None:
        raise ValueError("pass at most one of loader and loader_factory")
    meta = read_meta(checkpoint, which)
    model, config, stats = load_for_inference(Path(meta["path"]))
    from pipeline.config import from_dict

    task = from_dict(tasks.TaskConfig, meta["task"], source=f"{meta['path']} (task)")
    targets = task.targets
    scaler = tasks.make_scaler(task, stats)
    own_loader = loader is None and loader_factory is None
    if loader_factory is not None:
        loader = loader_factory(stats, targets)
    elif own_loader:
        loader = loader_from_config(config, stats, targets, Path(events_path))
    assert loader is not None
    try:
        with open_events(events_path) as events:
            outputs = predict_file(model, loader, events.n_events)
            arrays = _arrays(events, tasks.predictions(task, outputs, scaler), observers)
            file_attrs = {
                k: v for k, v in events.attrs.items() if k in ("split", "config_hash", "seed")
            }
            file_attrs |= {
                "kind": "predictions",
                "events_kind": events.attrs.get("kind"),
                "events_file": str(Path(events_path).absolute()),
                "model": meta["model"]["name"],
                "model_config": json.dumps(meta["model"], sort_keys=True),
                "targets": json.dumps(list(targets)),
                "task": "classification" if task.is_classification else "regression",
                **({"class_names": json.dumps(list(task.classes))} if task.classes else {}),
                "checkpoint": meta["path"],
                "checkpoint_step": int(meta["step"]),
                **(attrs or {}),
            }
    finally:
        if own_loader and hasattr(loader, "close"):
            loader.close()
    return write_events(Path(out_path), arrays, file_attrs)


def _arrays(
    events: Any, predictions: Mapping[str, np.ndarray], observers: Sequence[str]
) -> dict[str, np.ndarray]:
    """The datasets of the predictions file (see the module docstring)."""
    arrays = {f"prediction/{k}": v for k, v in predictions.items()}
    for name in events.names:
        if name.startswith("truth/"):
            arrays[name] = events.read(name)
    for obs in observers:
        arrays[f"observer/{obs.rsplit('/', 1)[-1]}"] = events.read(_observer_path(obs))
    return arrays
