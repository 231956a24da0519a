"""Orbax checkpoints of a run: ``run_dir/checkpoints/{best,last}/<step>/``.

Two managers keep one checkpoint each: ``last`` (written at the end of every epoch, what
``resume`` continues from) and ``best`` (the lowest validation loss so far, what evaluation
loads). Each checkpoint holds the items

- ``model``: ``{"params", "rest"}``, the model variables (enough for inference);
- ``train``: ``{"step", "opt_state"}``, the rest of the training state;
- ``meta`` (JSON): epoch, step, losses, early-stopping counters, and what rebuilds the model
  (``model`` and ``task`` config sections, ``input_spec``, ``n_outputs``);
- ``config`` (JSON): the resolved experiment config as given to ``fit``;
- ``stats`` (JSON): the feature statistics fitted on train (``FeatureStats.to_dict()``).

Orbax writes each checkpoint under a temporary name and renames it when complete, so a killed job
never leaves a checkpoint that looks whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
from flax import nnx

from reco.state import TrainState, abstract, merge_model, split_model

KINDS = ("best", "last")


class Checkpoints:
    """The ``best`` and ``last`` checkpoint managers of one run (``run_dir/checkpoints``)."""

    def __init__(self, directory: Path, read_only: bool = False) -> None:
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=1,
            create=not read_only,
            read_only=read_only,
            # Synchronous: a save must not race the next step, which donates the state's buffers.
            enable_async_checkpointing=False,
        )
        self._managers = {
            kind: ocp.CheckpointManager(self.directory / kind, options=options) for kind in KINDS
        }

    def latest_step(self, kind: str) -> int | None:
        return self._managers[kind].latest_step()

    def path(self, kind: str) -> Path | None:
        """Directory of the ``kind`` checkpoint, or None if there is none yet."""
        step = self.latest_step(kind)
        return None if step is None else self.directory / kind / str(step)

    def save(
        self,
        kind: str,
        state: TrainState,
        meta: dict[str, Any],
        config: dict[str, Any],
        stats: dict[str, Any],
    ) -> Path:
        """Write ``state`` (numbered by its step) as the ``kind`` checkpoint; return its folder."""
        step = int(state.step)
        self._managers[kind].save(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave({"params": state.params, "rest": state.rest}),
                train=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
                meta=ocp.args.JsonSave(meta),
                config=ocp.args.JsonSave(config),
                stats=ocp.args.JsonSave(stats),
            ),
            force=True,
        )
        self._managers[kind].wait_until_finished()
        return self.directory / kind / str(step)

    def restore(self, kind: str, template: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """The ``kind`` checkpoint restored into the structure of ``template``, and its meta.

        Raises:
            FileNotFoundError: there is no ``kind`` checkpoint.
        """
        step = self.latest_step(kind)
        if step is None:
            raise FileNotFoundError(f"no {kind!r} checkpoint under {self.directory}")
        out = self._managers[kind].restore(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardRestore(
                    abstract({"params": template.params, "rest": template.rest})
                ),
                train=ocp.args.StandardRestore(
                    abstract({"step": template.step, "opt_state": template.opt_state})
                ),
                meta=ocp.args.JsonRestore(),
            ),
        )
        state = TrainState(
            out.train["step"], out.model["params"], out.model["rest"], out.train["opt_state"]
        )
        return state, dict(out.meta)

    def close(self) -> None:
        for manager in self._managers.values():
            manager.close()


def resolve(path: Path, which: str = "best") -> Path:
    """A run dir, its ``checkpoints`` dir, a ``best``/``last`` dir or a step dir -> a step dir.

    Run and ``checkpoints`` dirs resolve to their ``which`` ("best" or "last") checkpoint.
    """
    if which not in KINDS:
        raise ValueError(f"which must be one of {KINDS}, got {which!r}")
    path = Path(path).absolute()
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if (path / which).is_dir():
        path = path / which
    if (path / "meta").is_dir():  # already a step dir
        return path
    steps = sorted((int(p.name) for p in path.glob("*") if p.name.isdigit()), reverse=True)
    for step in steps:
        if (path / str(step) / "meta").is_dir():
            return path / str(step)
    raise FileNotFoundError(
        f"{path}: no checkpoint found (expected a run dir, its checkpoints/ dir, "
        f"checkpoints/best or checkpoints/last, or one step folder in them)"
    )


def _read_json(step_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    try:
        items = checkpointer.restore(
            step_dir,
            args=ocp.args.Composite(
                meta=ocp.args.JsonRestore(),
                config=ocp.args.JsonRestore(),
                stats=ocp.args.JsonRestore(),
            ),
        )
    finally:
        checkpointer.close()
    return dict(items.meta), dict(items.config), dict(items.stats)


def read_meta(path: Path, which: str = "best") -> dict[str, Any]:
    """The ``meta`` item of a checkpoint (``path`` as in :func:`load_for_inference`), plus its
    folder under ``"path"``: epoch, step, val_loss, model and task sections, input_spec, n_outputs.
    """
    step_dir = resolve(path, which)
    meta, _, _ = _read_json(step_dir)
    return {**meta, "path": str(step_dir)}


def load_for_inference(
    path: Path, which: str = "best"
) -> tuple[nnx.Module, dict[str, Any], dict[str, Any]]:
    """Rebuild the model of a checkpoint with its weights: ``(model, config_dict, stats_dict)``.

    Args:
        path: a run dir, ``run_dir/checkpoints``, ``.../best`` or ``.../last``, or a step folder;
            run and checkpoints dirs load their ``which`` checkpoint ("best" or "last").

    The model (call it with ``train=False``) is built from the ``model`` section stored in the
    checkpoint's meta through the registry, so no code is imported by path. ``config_dict`` is the
    experiment config given to ``fit``; ``stats_dict`` the feature statistics fitted on train.
    :func:`read_meta` gives the targets (``meta["task"]["targets"]``) and the input spec.
    """
    from pipeline.config import from_dict
    from reco.models import ModelConfig, build_model

    step_dir = resolve(path, which)
    meta, config, stats = _read_json(step_dir)
    model_cfg = from_dict(ModelConfig, meta["model"], source=f"{step_dir}/meta")
    input_spec = {k: tuple(v) for k, v in meta["input_spec"].items()}
    model = build_model(model_cfg, input_spec, int(meta["n_outputs"]), seed=0)
    graphdef, params, rest = split_model(model)
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    try:
        restored = checkpointer.restore(
            step_dir,
            args=ocp.args.Composite(
                model=ocp.args.StandardRestore(abstract({"params": params, "rest": rest}))
            ),
        )
    finally:
        checkpointer.close()
    return merge_model(graphdef, restored.model["params"], restored.model["rest"]), config, stats
