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

Fine-tuning (:func:`init_from_checkpoint`) starts a new model from another run's checkpoint: the
parameters and the other non-RNG variables (BatchNorm running statistics) are copied, the head
(:func:`reco.state.head_modules`) too or not, after every path and shape has been checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from reco.state import TrainState, abstract, head_modules, in_head, merge_model, split_model

KINDS = ("best", "last")
# how tensorstore (Orbax's array writer) reports a failed write: a ValueError with a status
_IO_FAILURE = re.compile(r"RESOURCE_EXHAUSTED|PERMISSION_DENIED|os_error_code|Failed writing")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, no permission); names the folder, the
    reason and the last complete checkpoint of that kind, which is left as it was."""

    def __init__(self, path: Path, kept: Path | None, err: BaseException) -> None:
        reason = " ".join(str(err).split())
        if len(reason) > 300:
            reason = reason[:300] + " ..."
        then = (
            f"the last complete one, {kept}, is intact: make room (or fix the permissions) "
            "and continue with --resume"
            if kept is not None
            else "there is no complete one yet"
        )
        super().__init__(f"{path}: could not write the checkpoint ({reason}); {then}")


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
        kept = self.path(kind)
        try:
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
        except (OSError, ValueError) as err:
            if isinstance(err, ValueError) and not _IO_FAILURE.search(str(err)):
                raise
            raise CheckpointWriteError(self.directory / kind / str(step), kept, err) from err
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
    restored = _restore_model(step_dir, params, rest)
    return merge_model(graphdef, restored["params"], restored["rest"]), config, stats


def _restore_model(step_dir: Path, params: nnx.State, rest: nnx.State) -> Any:
    """The ``model`` item of a step folder, restored into the structure of ``params``/``rest``."""
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
    return restored.model


def _copyable(*states: nnx.State) -> dict[tuple[Any, ...], nnx.Variable]:
    """Flat ``{path: variable}`` of the variables fine-tuning copies: all but RNG streams (the
    new run draws its own dropout randomness from its seed)."""
    return {
        tuple(path): var
        for state in states
        for path, var in nnx.to_flat_state(state)
        if not isinstance(var, nnx.RngState)
    }


def _names(paths: Iterable[tuple[Any, ...]]) -> list[str]:
    return sorted(".".join(str(k) for k in path) for path in paths)


def _task_mismatch(source: Mapping[str, Any] | None, task: Mapping[str, Any] | None) -> str | None:
    """Why a kept head would predict something else than ``task`` (None: nothing known against)."""
    if not source or not task:
        return None
    for key in ("loss", "targets", "classes"):
        a, b = source.get(key), task.get(key)
        a, b = (list(v) if isinstance(v, list | tuple) else v for v in (a, b))
        if a != b:
            return f"{key} {a!r} in the checkpoint, {b!r} in this run"
    return None


def init_from_checkpoint(
    model: nnx.Module,
    model_cfg: Any,
    path: Path,
    init_head: Literal["replace", "keep"] = "replace",
    task: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Copy a pre-trained checkpoint's weights into ``model`` (in place): fine-tuning.

    Every parameter and every non-RNG variable (BatchNorm running statistics) is copied, except
    the head's (``model``'s class ``head_modules``) with ``init_head="replace"``: those keep the
    fresh initialisation ``model`` was built with (this run's seed). Nothing is copied unless
    everything matches.

    Args:
        model: the freshly built model of the new run.
        model_cfg: its config section (``reco.models.ModelConfig``); the architecture name must be
            the checkpoint's.
        path: a run dir, its ``checkpoints`` dir, ``.../best`` or ``.../last``, or a step folder;
            run and checkpoints dirs give their best checkpoint (as ``reco evaluate``).
        init_head: ``"replace"`` (a new head, e.g. other classes) or ``"keep"`` (copy the head
            too: it must have the same shapes and, when both are known, the same task).
        task: the new run's task section (``to_dict(TaskConfig)``), checked with ``"keep"``.

    Returns:
        The record of what was done (JSON-serialisable): ``checkpoint`` (the step folder),
        ``model``, the source's ``epoch``, ``step`` and ``val_loss``, ``init_head``, ``copied``
        (number of variables), ``reinitialised`` (head variable paths), ``model_differences``
        (model config fields that differ from the checkpoint's, ``[checkpoint, this run]``) and
        ``imported_from`` when the checkpoint was imported (``reco import-part``).

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: another architecture, variable paths missing on either side, or shapes that
            differ (all named, with the checkpoint), or a kept head of another task.
    """
    from pipeline.config import from_dict, to_dict
    from reco.models import ModelConfig, build_model

    if init_head not in ("replace", "keep"):
        raise ValueError(f"init_head must be 'replace' or 'keep', got {init_head!r}")
    step_dir = resolve(path, "best")
    meta, _, _ = _read_json(step_dir)
    source_name = meta["model"]["name"]
    if source_name != model_cfg.name:
        raise ValueError(
            f"cannot fine-tune from {step_dir}: it holds a {source_name!r} model, this run "
            f"builds {model_cfg.name!r} (the architecture must be the same)"
        )
    head = head_modules(model)
    if init_head == "keep":
        why = _task_mismatch(meta.get("task"), task)
        if why is not None:
            raise ValueError(
                f"cannot keep the head of {step_dir}: it was trained for another task ({why}); "
                f"use train.init_head=replace for a new head"
            )
    # the checkpoint's structure, from its own model section (abstract: nothing is allocated)
    source_cfg = from_dict(ModelConfig, meta["model"], source=f"{step_dir}/meta")
    spec = {k: tuple(v) for k, v in meta["input_spec"].items()}
    skeleton = nnx.eval_shape(lambda: build_model(source_cfg, spec, int(meta["n_outputs"]), 0))
    _, params, rest = split_model(skeleton)
    restored = _restore_model(step_dir, params, rest)
    source = _copyable(restored["params"], restored["rest"])
    target = _copyable(nnx.state(model))

    def wanted(paths: Iterable[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
        return {p for p in paths if init_head == "keep" or not in_head(p, head)}

    src_paths, dst_paths = wanted(source), wanted(target)
    missing, unknown = dst_paths - src_paths, src_paths - dst_paths
    shapes = sorted(
        f"{'.'.join(map(str, p))}: checkpoint {tuple(source[p].shape)}, "
        f"this model {tuple(target[p].shape)}"
        for p in src_paths & dst_paths
        if tuple(source[p].shape) != tuple(target[p].shape)
    )
    new_cfg = to_dict(model_cfg)
    differences = {
        k: [meta["model"].get(k), new_cfg.get(k)]
        for k in sorted(set(meta["model"]) | set(new_cfg))
        if meta["model"].get(k) != new_cfg.get(k)
    }
    if missing or unknown or shapes:
        problems = []
        if shapes:
            problems.append(f"shapes differ: {'; '.join(shapes)}")
        if missing:
            problems.append(f"not in the checkpoint: {_names(missing)}")
        if unknown:
            problems.append(f"not in this model: {_names(unknown)}")
        hint = "The model config and the input features must be those of the pre-trained run"
        if differences:
            hint += f" (model fields [checkpoint, this run]: {differences})"
        if init_head == "keep":
            hint += "; with init_head=keep the head too (init_head=replace gives a new head)"
        raise ValueError(
            f"cannot fine-tune from {step_dir} ({init_head} head {list(head)}): "
            f"{' | '.join(problems)}. {hint}."
        )
    copied = [
        (p, target[p].replace(jnp.asarray(source[p].get_value(), target[p].get_value().dtype)))
        for p in sorted(dst_paths, key=str)
    ]
    nnx.update(model, nnx.from_flat_state(copied))
    record: dict[str, Any] = {
        "checkpoint": str(step_dir),
        "model": source_name,
        "epoch": meta.get("epoch"),
        "step": meta.get("step"),
        "val_loss": meta.get("val_loss"),
        "init_head": init_head,
        "copied": len(copied),
        "reinitialised": _names(set(target) - dst_paths),
        "model_differences": differences,
    }
    if meta.get("imported_from") is not None:
        record["imported_from"] = meta["imported_from"]
    return record
