"""The pure, jitted train and eval steps and the fit loop around them.

``train_step(state, batch) -> (state, metrics)`` is the one implementation of a training step: the
model's graph definition, the optimiser and the target scaling are closed over, the
:class:`~reco.state.TrainState` pytree is donated (DESIGN: 3-8x faster per step than ``nnx.jit``).
The loop keeps step metrics on the device and brings them to the host only every
``log_every_steps`` steps, evaluates on the validation split at each epoch end, saves the ``last``
and ``best`` checkpoints, stops early when the validation loss stalls, and stops with
:class:`NonFiniteLossError` when a loss is NaN/inf (the last good checkpoint stays on disk).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from reco import tasks
from reco.distributed import DataParallel, StopSignal
from reco.failures import (  # noqa: F401  (re-exported: what fit raises)
    BatchTooLargeError,
    NonFiniteLossError,
    Preempted,
    out_of_memory,
)
from reco.state import TrainState, merge_model
from reco.train_config import TrainConfig

if TYPE_CHECKING:
    from pipeline.tracking import Tracker

Batch = Mapping[str, np.ndarray]
NON_INPUT_KEYS = ("target", "valid", "index")  # batch keys that are not model inputs


class BatchSource(Protocol):
    """What fit and evaluate need of a ``pipeline.loader.Loader``."""

    input_spec: Mapping[str, tuple[int, ...]]
    n_events: int

    def epoch(self, e: int) -> Iterator[dict[str, np.ndarray]]: ...

    def __len__(self) -> int: ...


def model_inputs(batch: Batch) -> dict[str, Any]:
    """The input groups of a batch (with their masks): not target/valid/index/observer/*."""
    return {
        k: v for k, v in batch.items() if k not in NON_INPUT_KEYS and not k.startswith("observer/")
    }


def device_batch(batch: Batch) -> dict[str, Any]:
    """What the jitted steps take: the inputs, ``target`` and ``valid`` (the rest stays here)."""
    return {**model_inputs(batch), "target": batch["target"], "valid": batch["valid"]}


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformationExtraArgs,
    task: tasks.TaskConfig,
    scaler: tasks.TargetScaler,
    parallel: DataParallel | None = None,
    state_shardings: Any = None,
    skip_nonfinite: bool = False,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """The jitted ``train_step(state, batch, plan=None) -> (state, {"loss", "n", "grad_norm"})``.

    ``plan`` (static: one compiled step per plan) goes to the model as ``model(inputs,
    train=True, plan=plan)``: the batch's layout a model's ``planner`` chose for it
    (ParT: the jets sorted and cut to their multiplicity, ``reco.models.trimming``).

    ``state`` is donated: do not use the state passed in after the call. With ``parallel`` the
    new state keeps ``state_shardings`` (:meth:`DataParallel.state_shardings`) and the metrics
    are replicated; the step itself is the same function (the batch's sharding drives it).
    With ``skip_nonfinite`` a step whose loss or gradient is not finite leaves parameters,
    optimiser state and BatchNorm statistics as they were (its step still counts).
    """

    def train_step(
        state: TrainState, batch: Batch, plan: Hashable | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        def loss_fn(params: nnx.State) -> tuple[jax.Array, nnx.State]:
            model = merge_model(graphdef, params, state.rest)
            planned = {} if plan is None else {"plan": plan}  # models without layouts: none
            pred = model(model_inputs(batch), train=True, **planned).astype(jnp.float32)
            value = tasks.loss(task, pred, batch["target"], batch["valid"], scaler)
            _, _, rest = nnx.split(model, nnx.Param, ...)  # updated BatchNorm stats, RNG counts
            return value, rest

        (value, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params, value=value)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
        metrics = {"loss": value, "n": batch["valid"].sum(), "grad_norm": grad_norm}
        if skip_nonfinite:
            finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
            params, rest, opt_state = _keep_if(
                finite, (params, rest, opt_state), (state.params, state.rest, state.opt_state)
            )
        return TrainState(state.step + 1, params, rest, opt_state), metrics

    if parallel is None:
        return jax.jit(train_step, donate_argnums=0, static_argnames="plan")
    out = (state_shardings, parallel.replicated)
    return jax.jit(train_step, donate_argnums=0, out_shardings=out, static_argnames="plan")


def layout_planner(
    model: nnx.Module, input_spec: Mapping[str, Any], n_devices: int = 1, *, train: bool = True
) -> Any:
    """The model's per-batch layout chooser in training or at inference (``model.planner``;
    ParT and the station transformer: sets cut to their multiplicity), on one device only,
    else None."""
    make = getattr(model, "planner", None)
    return make(input_spec, train=train) if make is not None and n_devices == 1 else None


def make_eval_step(
    graphdef: nnx.GraphDef, task: tasks.TaskConfig, scaler: tasks.TargetScaler
) -> Callable[..., dict[str, jax.Array]]:
    """The jitted ``eval_step(state, batch, plan=None) -> sums`` (loss_sum, n, err, sq_err per
    target); ``plan`` (static) as ``make_predict_fn``'s predict takes it."""

    def eval_step(
        state: TrainState, batch: Batch, plan: Hashable | None = None
    ) -> dict[str, jax.Array]:
        model = merge_model(graphdef, state.params, state.rest)
        planned = {} if plan is None else {"plan": plan}
        pred = model(model_inputs(batch), train=False, **planned).astype(jnp.float32)
        per_event = tasks.per_event_loss(task, pred, batch["target"], scaler)
        sums = tasks.metric_sums(task, pred, batch["target"], batch["valid"], scaler)
        return {"loss_sum": jnp.sum(per_event * batch["valid"]), **sums}

    return jax.jit(eval_step, static_argnames="plan")


def make_predict_fn(graphdef: nnx.GraphDef) -> Callable[..., jax.Array]:
    """Jitted ``predict(params, rest, inputs, plan=None) -> Float[Array, "batch n_outputs"]``
    (normalised). ``plan`` (static: one compiled program per plan): the batch's layout the
    model's ``planner(spec, train=False)`` chose for it (:func:`layout_planner`)."""

    def predict(
        params: nnx.State, rest: nnx.State, inputs: Mapping[str, Any], plan: Hashable | None = None
    ) -> jax.Array:
        model, planned = merge_model(graphdef, params, rest), {} if plan is None else {"plan": plan}
        return model(inputs, train=False, **planned).astype(jnp.float32)

    return jax.jit(predict, static_argnames="plan")


def evaluate_loss(
    eval_step: Callable[..., dict[str, jax.Array]],
    state: TrainState,
    batches: Iterable[Batch],
    task: tasks.TaskConfig,
    put: Callable[[Batch], Any] = lambda b: b,
    planner: Callable[[Batch], Hashable | None] | None = None,
) -> dict[str, float]:
    """Validation metrics over ``batches``: ``loss`` and the task's metrics
    (:func:`reco.tasks.summarise_sums`: ``rmse/<t>``, ``bias/<t>`` or ``accuracy``).

    Sums stay on the device until the end (one host transfer). ``put`` moves a host batch to
    the devices (:meth:`DataParallel.batch`: every process's batch into one global batch, whose
    sums are then global too). ``planner``: each batch's inference layout, chosen on the host
    (:func:`layout_planner` with ``train=False``), else the unplanned pass.
    """
    total: dict[str, jax.Array] | None = None
    for batch in batches:
        plan = planner(batch) if planner is not None else None
        sums = eval_step(state, put(device_batch(batch)), plan=plan)
        total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    if total is None:
        raise ValueError("the validation loader yielded no batches")
    host = jax.device_get(total)
    n = max(float(host["n"]), 1.0)
    return {"loss": float(host["loss_sum"]) / n, **tasks.summarise_sums(task, host)}


def _keep_if(ok: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``ok``, else ``old``, leaf by leaf (RNG keys always advance: harmless)."""

    def pick(a: jax.Array, b: jax.Array) -> jax.Array:
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            return a
        return jnp.where(ok, a, b)

    return jax.tree.map(pick, new, old)


def summarise(
    pending: list[dict[str, jax.Array]], skip: bool = False
) -> tuple[dict[str, float], int | None, int]:
    """Host averages of buffered step metrics (one transfer); the index of the first step whose
    loss or gradient norm is not finite (None if all are finite, and always None with ``skip``:
    those steps are left out of the averages); and how many steps were not finite."""
    host = jax.device_get(pending)
    losses = np.array([float(m["loss"]) for m in host])
    weights = np.array([float(m["n"]) for m in host])
    grad_norms = np.array([float(m["grad_norm"]) for m in host])
    # A finite loss can come with a NaN gradient (e.g. relu(NaN) = 0 in XLA): check both.
    good = np.isfinite(losses) & np.isfinite(grad_norms)
    n_bad = int((~good).sum())
    if n_bad and not skip:
        return {}, int(np.flatnonzero(~good)[0]), n_bad
    if not good.any():
        return {}, None, n_bad
    losses, weights, grad_norms = losses[good], weights[good], grad_norms[good]
    mean = float((losses * weights).sum() / max(weights.sum(), 1.0))
    return {"loss": mean, "grad_norm": float(grad_norms.mean())}, None, n_bad


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What a finished ``fit`` reports."""

    best_val_loss: float  # lowest validation loss (task loss units)
    best_epoch: int  # epoch (0-based) of the best validation loss
    epochs_run: int  # epochs completed, including those before a resume
    steps: int  # optimiser steps taken in total
    stopped_early: bool  # early stopping ended the run
    best_checkpoint: Path  # folder of the best checkpoint (load_for_inference/evaluate take it)
    last_checkpoint: Path  # folder of the last checkpoint (resume continues from it)
    n_params: int  # trainable parameters of the model
    init_from: dict[str, Any] | None = None  # fine-tuning: what the model started from
    # (reco.checkpoint.init_from_checkpoint's record), also after a resume; None = random init

    def summary(self) -> str:
        """One line for a log: steps, epochs, the best validation loss and where it is."""
        early = ", stopped early" if self.stopped_early else ""
        return (
            f"trained {self.steps} steps, {self.epochs_run} epochs{early} ({self.n_params:,} "
            f"parameters); best val loss {self.best_val_loss:.5g} at epoch {self.best_epoch}: "
            f"{self.best_checkpoint}"
        )


def _progress(enabled: bool) -> Any:
    from rich import progress as rp

    return rp.Progress(
        rp.TextColumn("[progress.description]{task.description}"), rp.BarColumn(),
        rp.MofNCompleteColumn(), rp.TimeElapsedColumn(), rp.TimeRemainingColumn(),
        disable=not enabled,
    )  # fmt: skip


def fit(
    model_cfg: Any,
    task_cfg: tasks.TaskConfig,
    train_cfg: TrainConfig,
    train_loader: BatchSource,
    val_loader: BatchSource,
    stats_dict: Mapping[str, Any],
    run_dir: Path,
    tracker: Tracker,
    seed: int,
    config_dict: Mapping[str, Any],
    resume: bool = False,
    progress: bool = True,
    parallel: DataParallel | None = None,
) -> FitResult:
    """Train ``model_cfg`` on ``train_loader``; checkpoints go to ``run_dir/checkpoints``.

    Args:
        model_cfg: a registered model config (``reco.models.ModelConfig`` subclass).
        stats_dict: ``FeatureStats.to_dict()`` of the training split (target mean/std); stored
            in every checkpoint with ``config_dict`` (the resolved experiment config).
        tracker: a ``pipeline.tracking.Tracker``; gets train metrics every ``log_every_steps``
            steps and validation metrics once per epoch (``val/loss``, ``val/rmse/<target>``).
        seed: model initialisation seed (the loaders carry their own shuffling seed).
        resume: continue from ``run_dir/checkpoints/last`` (at the epoch after it).
            With ``train_cfg.init_from`` the model starts from that checkpoint's weights (see
            :func:`reco.checkpoint.init_from_checkpoint`), except on a resume, which continues
            from the run's own checkpoint (the record of the source is kept in its meta).
        parallel: the device mesh and state layout (default: every device of every process,
            ``train_cfg.param_sharding``). With several processes every process calls ``fit``
            with its own share of the events (its loaders); a batch is then the union of every
            process's batch, and the state is restored into this layout on a resume, whatever
            the device count of the run that wrote the checkpoint.

    Raises:
        NonFiniteLossError: a train or validation loss became NaN/inf.
        FileExistsError: ``run_dir`` has checkpoints and ``resume`` is False.
        FileNotFoundError: ``resume`` is True and there is no ``last`` checkpoint.
    """
    from pipeline.config import to_dict
    from reco import precision
    from reco.checkpoint import Checkpoints, init_from_checkpoint
    from reco.distributed import data_mesh, is_main
    from reco.models import build_model
    from reco.optim import current_lr, make_optimizer
    from reco.state import count_params, head_modules, init_state

    cfg = train_cfg
    input_spec = {k: tuple(int(d) for d in v) for k, v in train_loader.input_spec.items()}
    scaler = tasks.make_scaler(task_cfg, stats_dict)
    n_outputs = task_cfg.n_outputs
    model = build_model(model_cfg, input_spec, n_outputs, seed)
    precision.apply(model, cfg.precision)
    head = head_modules(model)
    if parallel is None:
        parallel = DataParallel(data_mesh(), cfg.param_sharding)
    batch_size = getattr(train_loader, "batch_size", None)
    if batch_size is not None:
        parallel.check_batch_size(int(batch_size))
    progress = progress and is_main()
    init_record = None
    if cfg.init_from is not None and not resume:  # before init_state: Lookahead copies params
        init_record = init_from_checkpoint(
            model, model_cfg, Path(cfg.init_from), cfg.init_head, task=to_dict(task_cfg)
        )
    steps_per_epoch = len(train_loader)
    if steps_per_epoch < 1:
        hint = "with drop_last a split needs at least one full batch"
        if jax.process_count() > 1:
            hint += (
                f"; the file's blocks (loader.shuffle_block events) are dealt to the "
                f"{jax.process_count()} processes, so every process needs a full batch of "
                f"whole blocks: lower loader.shuffle_block or the process count"
            )
        raise ValueError(
            f"the training loader yields no batches ({train_loader.n_events} events on this "
            f"process; {hint})"
        )
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    tx, schedule = make_optimizer(cfg, total_steps, steps_per_epoch, head)
    graphdef, state = init_state(model, tx)
    planner = layout_planner(model, input_spec, parallel.n_devices)
    val_planner = layout_planner(model, input_spec, parallel.n_devices, train=False)
    del model
    n_params = count_params(state.params)
    shardings = parallel.state_shardings(state)
    state = parallel.place(state, shardings)
    skip_bad = cfg.nonfinite == "skip"
    train_step = make_train_step(graphdef, tx, task_cfg, scaler, parallel, shardings, skip_bad)
    eval_step = make_eval_step(graphdef, task_cfg, scaler)

    ckpt = Checkpoints(Path(run_dir) / "checkpoints")
    meta_base = {
        "model": to_dict(model_cfg),
        "task": to_dict(task_cfg),
        "input_spec": {k: list(v) for k, v in input_spec.items()},
        "n_outputs": n_outputs,
        "seed": seed,
        "init_from": init_record,
    }
    config, stats = to_dict(dict(config_dict)), to_dict(dict(stats_dict))
    start_epoch, best, best_epoch, stale, skip, resumed_meta = 0, math.inf, -1, 0, 0, {}
    if resume:
        try:
            state, meta = ckpt.restore("last", state)
            resumed_meta = meta
        except BaseException:
            ckpt.close()
            raise
        skip = int(meta.get("batches_done") or 0)  # > 0: a checkpoint written mid-epoch
        start_epoch = int(meta["epoch"]) + (0 if skip else 1)
        best, best_epoch = float(meta["best_val_loss"]), int(meta["best_epoch"])
        stale = int(meta["epochs_without_improvement"])
        init_record = meta_base["init_from"] = meta.get("init_from")
    elif ckpt.latest_step("last") is not None:
        ckpt.close()
        raise FileExistsError(
            f"{ckpt.directory} already holds checkpoints; resume, or train into a new run dir"
        )
    step = int(state.step)
    params = {"model.n_params": n_params, "train.steps_per_epoch": steps_per_epoch}
    params |= {"train.devices": parallel.n_devices, "train.processes": jax.process_count()}
    if batch_size is not None:
        params["train.global_batch_size"] = int(batch_size) * jax.process_count()
    tracker.log_params(params)

    epochs_done = start_epoch
    stopped_early = cfg.early_stopping_patience is not None and (
        stale >= cfg.early_stopping_patience
    )  # (a resumed run that had already stopped)
    done = stopped_early or (cfg.max_steps is not None and step >= cfg.max_steps)
    pending: list[dict[str, jax.Array]] = []
    window = (step, time.perf_counter())  # (first step, start time) of the pending metrics
    skipped = int(resumed_meta.get("skipped_steps", 0))  # non-finite steps (nonfinite = skip)

    def flush(epoch: int) -> None:
        """Log the averages of the pending step metrics; stop on a non-finite loss."""
        nonlocal skipped
        means, bad, n_bad = summarise(pending, skip_bad)
        if bad is not None:
            raise NonFiniteLossError(window[0] + bad + 1, epoch, "train", ckpt.path("last"))
        skipped += n_bad
        if skipped > cfg.max_skipped_steps:
            raise NonFiniteLossError(
                step, epoch, "train", ckpt.path("last"), skipped=(skipped, cfg.max_skipped_steps)
            )
        metrics = {f"train/{k}": v for k, v in means.items()}
        if skip_bad:
            metrics["train/skipped_steps"] = float(skipped)
        metrics["train/lr"] = current_lr(schedule, state.opt_state, step)
        if cfg.head_lr_multiplier != 1.0:
            metrics["train/lr_head"] = metrics["train/lr"] * cfg.head_lr_multiplier
        metrics["train/steps_per_s"] = len(pending) / (time.perf_counter() - window[1])
        tracker.log_metrics(metrics, step)
        loss = f"loss {means['loss']:.4g}" if means else "every step skipped"
        bar.update(task_id, description=f"epoch {epoch} {loss}")

    try:
        with _progress(progress) as bar, StopSignal() as stop:
            task_id = bar.add_task("train", total=total_steps, completed=min(step, total_steps))
            for epoch in range(start_epoch, cfg.epochs):
                if done:
                    break
                batches: Iterable[Batch] = train_loader.epoch(epoch)
                done_in_epoch, skip = skip, 0  # a mid-epoch resume: the same batches follow
                if done_in_epoch:
                    batches = itertools.islice(batches, done_in_epoch, None)
                for batch in batches:
                    try:
                        on_device = parallel.batch(device_batch(batch))
                        plan = planner(batch) if planner is not None else None
                        args = (state, on_device) if plan is None else (state, on_device, plan)
                        state, metrics = train_step(*args)
                    except jax.errors.JaxRuntimeError as err:
                        if out_of_memory(err):
                            raise BatchTooLargeError(batch_size, parallel.n_devices, err) from err
                        raise
                    pending.append(metrics)
                    step += 1
                    done_in_epoch += 1
                    bar.advance(task_id)
                    at_log = step % cfg.log_every_steps == 0
                    if at_log:
                        flush(epoch)
                        pending.clear()
                        window = (step, time.perf_counter())
                    if (at_log or jax.process_count() == 1) and stop.agreed():
                        if pending:
                            flush(epoch)
                        meta = {
                            **meta_base,
                            "epoch": epoch,
                            "batches_done": done_in_epoch,
                            "step": step,
                            "val_loss": None,
                            "best_val_loss": best,
                            "best_epoch": best_epoch,
                            "epochs_without_improvement": stale,
                            "skipped_steps": skipped,
                        }
                        path = ckpt.save("last", state, meta, config, stats)  # synchronous
                        raise Preempted(step, epoch, done_in_epoch, path)
                    if cfg.max_steps is not None and step >= cfg.max_steps:
                        done = True
                        break
                if pending:
                    flush(epoch)
                    pending.clear()

                val = evaluate_loss(
                    eval_step, state, val_loader.epoch(0), task_cfg, parallel.batch, val_planner
                )
                if not math.isfinite(val["loss"]):
                    raise NonFiniteLossError(step, epoch, "validation", ckpt.path("last"))
                improved = val["loss"] < best - cfg.min_delta
                if improved:
                    best, best_epoch, stale = val["loss"], epoch, 0
                else:
                    stale += 1
                layouts = {} if planner is None else planner.metrics()
                layouts |= {} if val_planner is None else val_planner.metrics("val")
                tracker.log_metrics(
                    {**{f"val/{k}": v for k, v in val.items()}, "epoch": float(epoch), **layouts},
                    step,
                )
                if progress:  # one line per epoch: what a batch job's log shows
                    bar.console.print(
                        f"epoch {epoch}: step {step}, val loss {val['loss']:.5g}"
                        f"{' (best)' if improved else ''}",
                        highlight=False,
                    )
                meta = {
                    **meta_base,
                    "epoch": epoch,
                    "step": step,
                    "val_loss": val["loss"],
                    "best_val_loss": best,
                    "best_epoch": best_epoch,
                    "epochs_without_improvement": stale,
                    "skipped_steps": skipped,
                }
                if improved:
                    ckpt.save("best", state, meta, config, stats)
                ckpt.save("last", state, meta, config, stats)
                epochs_done = epoch + 1
                window = (step, time.perf_counter())  # validation time is not step time
                if cfg.early_stopping_patience is not None and stale >= cfg.early_stopping_patience:
                    stopped_early = done = True
        best_path, last_path = ckpt.path("best"), ckpt.path("last")
    finally:
        ckpt.close()
    if best_path is None or last_path is None:
        raise RuntimeError(f"fit ended without writing a checkpoint under {ckpt.directory}")
    return FitResult(
        best_val_loss=best,
        best_epoch=best_epoch,
        epochs_run=epochs_done,
        steps=step,
        stopped_early=stopped_early,
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        n_params=n_params,
        init_from=init_record,
    )
