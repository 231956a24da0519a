"""Trained runs as versions of MLflow registered models, and back.

``register(run_dir, name)`` logs the run's best checkpoint (Orbax folder, unchanged) into its
MLflow run as a ``pyfunc`` model — :class:`RecoModel`, which loads the checkpoint and runs the
jitted model on numpy inputs, logged as code (``reco/pyfunc_model.py``: nothing is pickled, so
loading a version runs no stored bytecode) — and registers it as a new version of ``name``
(the ONNX export rides along when it can be made, the run's ``config.yaml`` always). ``fetch(MODEL_URI)``
downloads a version's files and ``load`` its model; ``reco evaluate models:/NAME/VERSION``
reads the version's config first (:func:`registered_config`), then evaluates its checkpoint
like a run's own.

This module imports ``mlflow`` (the pyfunc wrapper has to subclass its ``PythonModel`` and loads
reco checkpoints, so it lives in the reco layer; docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

MODEL_URI = re.compile(r"^models:/(?P<name>[^/]+)/(?P<version>[^/]+)$")
ARTIFACT = "model"  # the logged model's name inside the run
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")  # what MLflow runs to make the model
PROGRESS_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class RecoModel(mlflow.pyfunc.PythonModel):
    """A reco checkpoint as an MLflow ``pyfunc`` model.

    ``predict`` takes the model's input groups as a dict of numpy arrays — the same names and
    normalised features a ``pipeline.loader.Loader`` batch holds (``reco.train.model_inputs``),
    batch first — and returns the predictions in physical units as a dict of arrays:
    ``{target: (n,)}`` for regression (plus ``energy_eev``), ``{"probs": (n, n_classes)}`` for
    classification (as in ``predictions.h5``).
    """

    checkpoint: Path | None = None
    onnx: Path | None = None  # the ONNX export logged with the model, where there is one
    # MLflow reads predict's type hints as the input schema and, without any, asks for them in
    # a warning when the class is defined (under its own "once" filter, which outranks the
    # caller's): it has no schema for a dict of arrays, and the signature is given when
    # logging. MLflow's flag for its own ChatModel skips that reading.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        self.load(Path(context.artifacts["checkpoint"]))
        if context.artifacts.get("onnx"):
            self.onnx = Path(context.artifacts["onnx"])

    def load(self, checkpoint: Path) -> RecoModel:
        from pipeline.config import from_dict
        from reco import tasks
        from reco.checkpoint import load_for_inference, read_meta
        from reco.state import split_model
        from reco.train import make_predict_fn

        meta = read_meta(checkpoint)
        model, self.config, stats = load_for_inference(Path(meta["path"]))
        self.checkpoint = Path(meta["path"])
        self.meta = meta
        self.input_names = tuple(meta["input_spec"])
        self._task = from_dict(tasks.TaskConfig, meta["task"], source=f"{self.checkpoint} (task)")
        self._scaler = tasks.make_scaler(self._task, stats)
        graphdef, self._params, self._rest = split_model(model)
        self._predict = make_predict_fn(graphdef)
        return self

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        # no type hints: MLflow reads them as a schema, and has none for a dict of arrays
        from reco import tasks

        if not isinstance(model_input, Mapping):
            raise TypeError(
                f"{self.checkpoint}: give the inputs as a dict of arrays with the keys of the "
                f"loader's batches, got {type(model_input).__name__}"
            )
        inputs = {k: np.asarray(v) for k, v in model_input.items()}
        outputs = np.asarray(self._predict(self._params, self._rest, inputs))
        return tasks.predictions(self._task, outputs, self._scaler)


@contextlib.contextmanager
def _dropping(text: str) -> Iterator[None]:
    """The warnings raised inside whose message contains ``text`` dropped, the others passed
    on. Caught as they are shown, because MLflow raises its advice under its own "once" filter,
    which outranks any filter of the caller's."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        for w in caught:
            if text not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@contextlib.contextmanager
def _quiet_transfers() -> Iterator[None]:
    """MLflow's artifact progress bars off where stderr is not a terminal (a batch job's log
    would get a line of bars per file), unless ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` is set."""
    if PROGRESS_BARS in os.environ or sys.stderr.isatty():
        yield
        return
    os.environ[PROGRESS_BARS] = "false"
    try:
        yield
    finally:
        os.environ.pop(PROGRESS_BARS, None)


def _signature(meta: Mapping[str, Any]) -> Any:
    """Input tensors: any batch size. A group of per-event shape ``(items, features)`` is a set
    (stations, particles) with a bool ``<group>_mask`` and any item count; an image keeps its
    shape (pipeline/features.py)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    specs = []
    for name, shape in meta["input_spec"].items():
        if len(shape) == 2:
            specs.append(TensorSpec(np.dtype(np.float32), (-1, -1, shape[1]), name))
            specs.append(TensorSpec(np.dtype(np.bool_), (-1, -1), f"{name}_mask"))
        else:
            specs.append(TensorSpec(np.dtype(np.float32), (-1, *shape), name))
    return ModelSignature(inputs=Schema(specs))


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("jax", "flax", "orbax-checkpoint", "numpy", "mlflow")]


def register(run_dir: Path, name: str, which: str = "best", onnx: bool = True) -> dict[str, Any]:
    """Registers a run's checkpoint as a new version of the model ``name``.

    The model is logged into the run's own MLflow run (``mlflow_run_id`` in run.json, on the
    server it was logged to), so the version links to the run's parameters and metrics.
    Returns ``{"name", "version", "uri", "run_id", "onnx"}``.

    Raises:
        ValueError: the run has no MLflow run (tracking was off, or never reached the server:
            ``reco sync`` first).
    """
    from reco.checkpoint import resolve
    from reco.experiment import find_run_dir, read_run_info

    run_dir = find_run_dir(run_dir)
    info = read_run_info(run_dir)
    run_id, uri = info.get("mlflow_run_id"), info.get("tracking_uri")
    if not run_id or not uri:
        raise ValueError(
            f"{run_dir}/run.json: no MLflow run to register into (mlflow_run_id is empty: "
            f"tracking was disabled, or the server was down — run `reco sync {run_dir}` first)"
        )
    config = run_dir / "config.yaml"  # rides along on its own, read before the model loads
    if not config.is_file():
        raise ValueError(f"{config}: missing (the run's resolved config, written by reco train)")
    step_dir = resolve(run_dir, which)
    model = RecoModel().load(step_dir)
    artifacts = {"checkpoint": str(step_dir), "config": str(config)}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_note = None
        if onnx:
            onnx_note = _try_onnx(step_dir, Path(tmp) / "model.onnx", which)
            if onnx_note is None:
                artifacts["onnx"] = str(Path(tmp) / "model.onnx")
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        # the signature is given: not MLflow's advice to log an input example to check it by
        no_example = _dropping("An input example was not provided")
        with mlflow.start_run(run_id=run_id), _quiet_transfers(), no_example:
            logged = mlflow.pyfunc.log_model(
                name=ARTIFACT,
                python_model=str(MODEL_CODE),  # models from code: no pickled object
                artifacts=artifacts,
                signature=_signature(model.meta),
                pip_requirements=_requirements(),
                registered_model_name=name,
                metadata={"reco_checkpoint_step": int(model.meta["step"]), "which": which},
            )
    version = logged.registered_model_version
    return {
        "name": name,
        "version": str(version),
        "uri": f"models:/{name}/{version}",
        "run_id": run_id,
        "onnx": "onnx" in artifacts,
        "onnx_note": onnx_note,
    }


def _try_onnx(step_dir: Path, out: Path, which: str) -> str | None:
    """Exports the checkpoint to ONNX; None when done, else why not (registration goes on)."""
    try:
        from reco.export import export_onnx
    except ImportError as err:
        return f"no ONNX export ({err})"
    try:
        export_onnx(step_dir, out, which=which)
    except (ImportError, ValueError, NotImplementedError) as err:
        return f"ONNX export failed: {err}"
    return None


def fetch(model_uri: str, dst: Path | None = None) -> Path:
    """Download the files of ``models:/NAME/VERSION`` (its MLmodel, checkpoint, config and ONNX
    export) into ``dst`` (a temporary folder when None) from the registry at
    ``$MLFLOW_TRACKING_URI`` (or ``mlflow.db`` in the working folder); returns the local folder."""
    from pipeline.tracking import default_tracking_uri

    match = MODEL_URI.match(str(model_uri))
    if match is None:
        raise ValueError(f"{model_uri!r}: expected models:/NAME/VERSION")
    uri = default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if dst is not None:
        Path(dst).mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_transfers():
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=str(dst) if dst else None
            )
    except mlflow.exceptions.MlflowException as err:
        raise ValueError(f"{model_uri}: not found in the model registry at {uri} ({err})") from err
    return Path(local)


def registered_config(local: Path) -> Any:
    """The experiment config registered with a version (``local`` from :func:`fetch`), read
    without loading the model, so before JAX starts; None for a version registered before the
    config rode along as its own artifact (its config then comes with the loaded model)."""
    from reco.experiment import read_resolved_config

    flavor = mlflow.models.Model.load(str(local)).flavors.get("python_function", {})
    entry = flavor.get("artifacts", {}).get("config")
    if entry is None:
        return None
    return read_resolved_config(Path(local) / entry["path"])


def open_local(local: Path) -> RecoModel:
    """The :class:`RecoModel` of a version's files downloaded by :func:`fetch`."""
    return mlflow.pyfunc.load_model(str(local)).unwrap_python_model()


def load(model_uri: str, dst: Path | None = None) -> RecoModel:
    """The :class:`RecoModel` of ``models:/NAME/VERSION`` (downloaded into ``dst``, see
    :func:`fetch`)."""
    return open_local(fetch(model_uri, dst))


def download_folder(model_uri: str, base: str) -> Path:
    """``<base>/NAME-vVERSION``: where a command puts what it makes of a registered version."""
    match = MODEL_URI.match(str(model_uri))
    if match is None:
        raise ValueError(f"{model_uri!r}: expected models:/NAME/VERSION")
    return Path(base) / f"{match['name']}-v{match['version']}"


def evaluate_model(
    model_uri: str,
    events: Path | None,
    out_dir: Path | None = None,
    analyze: bool = True,
    on_config: Callable[[Any], None] | None = None,
) -> tuple[Path, Any]:
    """``reco evaluate models:/NAME/VERSION``: predictions (and the analysis, not logged) of a
    registered version on ``events``, written to ``out_dir`` (default
    ``evaluations/NAME-vVERSION``). ``on_config`` gets the version's experiment config before
    its model is loaded, so before JAX starts (the CLI applies its ``train.host_memory`` there);
    for a version registered without its config as an artifact (before 2026-12-06), once the
    model is loaded, from the checkpoint. Returns (predictions file, analysis result or None)."""
    from pipeline.config import from_dict
    from reco import experiment
    from reco.evaluate import evaluate

    if events is None:
        raise ValueError(f"{model_uri}: give the event file to evaluate on (--events FILE)")
    out_dir = Path(out_dir or download_folder(model_uri, "evaluations"))
    out_dir.mkdir(parents=True, exist_ok=True)
    local = fetch(model_uri, out_dir / "model")
    cfg = registered_config(local)
    if cfg is not None and on_config is not None:
        on_config(cfg)
    model = open_local(local)
    assert model.checkpoint is not None
    if cfg is None:
        cfg = from_dict(experiment.ExperimentConfig, model.config, source=f"{model_uri} (config)")
        if on_config is not None:
            on_config(cfg)
    predictions = evaluate(
        model.checkpoint,
        Path(events),
        out_dir / "predictions.h5",
        observers=experiment.OBSERVERS[cfg.problem],
        attrs={"model_uri": model_uri},
    )
    result = experiment.analyze(cfg, predictions, out_dir / "analysis") if analyze else None
    return predictions, result
