"""Experiment tracking behind a small interface; MLflow is one implementation.

The tracker is passed explicitly to the stages (never a global). :class:`MLflowTracker` is the only
place in the project that imports ``mlflow``, and it uses ``MlflowClient`` with an explicit run id
rather than MLflow's global "active run", so several trackers can coexist in one process (tests).

Metrics are buffered by the callers and sent in batches (``log_batch``), never one call per step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    """Where runs are recorded."""

    enabled: bool = True  # log to MLflow (false: record nothing)
    experiment: str | None = None  # MLflow experiment name; None: the problem name ("airshower")
    uri: str | None = (
        None  # tracking URI; None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working dir
    )
    system_metrics: bool = True  # sample CPU/memory/GPU usage into the run
    system_metrics_interval: float = 10.0  # seconds between system-metric samples
    # runs with a folder journal every call there and send it in the background
    # (pipeline/tracking_journal.py): a server that is down costs nothing and loses nothing
    retry_interval: float = 15.0  # seconds between attempts while the server does not answer
    flush_timeout: float = 60.0  # the longest the end of a stage waits for unsent entries


@dataclasses.dataclass(frozen=True)
class DatasetRef:
    """A dataset logged as a run input: a name, where it lives and a content digest."""

    name: str  # e.g. "airshower/train"
    path: str  # file path
    digest: str  # content digest (see pipeline.provenance.file_digest)
    context: str  # "train", "val" or "test"
    n_events: int | None = None  # events in the file


@runtime_checkable
class Tracker(Protocol):
    """What the stages may call on a tracker."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def log_input(self, dataset: DatasetRef) -> None: ...

    def finish(self, status: str = "FINISHED") -> None: ...


class NoopTracker:
    """Records nothing (tracking disabled)."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_input(self, dataset: DatasetRef) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass


class DictTracker:
    """Keeps everything in memory (tests, notebooks)."""

    run_id: str | None = None

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.tags: dict[str, str] = {}
        self.artifacts: list[tuple[Path, str | None]] = []
        self.inputs: list[DatasetRef] = []
        self.status: str | None = None
        self.metric_calls = 0  # number of log_metrics calls (batching is part of the contract)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.metric_calls += 1
        for name, value in metrics.items():
            self.metrics[name].append((step, float(value)))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.artifacts.append((Path(path), artifact_path))

    def log_input(self, dataset: DatasetRef) -> None:
        self.inputs.append(dataset)

    def finish(self, status: str = "FINISHED") -> None:
        self.status = status


def default_tracking_uri(workdir: Path | None = None) -> str:
    """$MLFLOW_TRACKING_URI, else MLflow's embedded default: ``mlflow.db`` in the working dir."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = Path(workdir) if workdir else Path.cwd()
    return f"sqlite:///{(base / 'mlflow.db').resolve()}"


def mlflow_client(uri: str | None = None) -> Any:
    """An ``MlflowClient`` of `uri` (default: :func:`default_tracking_uri`).

    MLflow announces a new SQLite store's tables at INFO ("Creating initial MLflow database
    tables...", "Updating database tables") in its own log format, into the first run's output;
    those two lines are dropped (its warnings and errors still show).
    """
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri or default_tracking_uri())


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:6000]  # MLflow's limit on a param value


class MLflowTracker:
    """Logs one run to MLflow through ``MlflowClient``.

    ``run_id`` resumes an existing run (``reco train --resume``) instead of starting a new one.
    """

    _BATCH = 100  # params per log_batch call (MLflow's limit) ; metrics: 1000

    def __init__(
        self,
        experiment: str,
        run_name: str,
        uri: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        system_metrics: bool = False,
        system_metrics_interval: float = 10.0,
    ) -> None:
        import mlflow

        self._mlflow = mlflow
        self.uri = uri or default_tracking_uri()
        self.client = mlflow_client(self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            artifact_location = None
            if self.uri.startswith("sqlite:///"):
                # Keep artifacts next to the database (MLflow's layout: ./mlruns) wherever the
                # run is started from, so `mlflow ui` in that folder finds them.
                root = Path(self.uri.removeprefix("sqlite:///")).parent / "mlruns"
                artifact_location = root.resolve().as_uri()
            exp_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id
        if run_id is None:
            run = self.client.create_run(exp_id, run_name=run_name, tags=dict(tags or {}))
            self.run_id = run.info.run_id
        else:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            if tags:
                self.set_tags(tags)
        self._monitor = None
        if system_metrics:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            # its INFO lines (started, stopped, no GPU to sample) printed four lines per run and
            # evaluation into every job's log; its warnings still show
            logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
            self._monitor = SystemMetricsMonitor(
                self.run_id,
                sampling_interval=system_metrics_interval,
                resume_logging=run_id is not None,
                tracking_uri=self.uri,
            )
            self._monitor.start()

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, _param_value(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), self._BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + self._BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.log_metric_entries([{"metrics": metrics, "step": step, "ts": now}])

    def log_metric_entries(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Several ``{"metrics": {name: value}, "step": s, "ts": ms}`` in as few calls as MLflow
        allows (non-finite values are dropped); ``ts`` is when they were measured."""
        from mlflow.entities import Metric

        items = [
            Metric(k, float(v), int(e["ts"]), int(e["step"]))
            for e in entries
            for k, v in e["metrics"].items()
            if math.isfinite(float(v))
        ]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_input(self, dataset: DatasetRef) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entity = Dataset(
            name=dataset.name,
            digest=dataset.digest,
            source_type="local",
            source=json.dumps({"uri": str(Path(dataset.path).resolve())}),
            profile=json.dumps({"num_events": dataset.n_events}) if dataset.n_events else None,
        )
        tag = InputTag("mlflow.data.context", dataset.context)
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(entity, tags=[tag])])

    def close(self) -> None:
        """Stops sampling system metrics; the run stays as it is (see :meth:`finish`)."""
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None

    def finish(self, status: str = "FINISHED") -> None:
        self.close()
        self.client.set_terminated(self.run_id, status=status)


def make_tracker(
    cfg: TrackingConfig,
    experiment: str,
    run_name: str,
    run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    journal_dir: Path | None = None,
) -> Tracker:
    """The tracker a config asks for: MLflow (through a journal in ``journal_dir`` when given,
    see :class:`pipeline.tracking_journal.JournaledTracker`), or nothing."""
    if not cfg.enabled:
        return NoopTracker()
    if journal_dir is not None:
        from pipeline.tracking_journal import JournaledTracker

        return JournaledTracker(
            journal_dir,
            cfg.experiment or experiment,
            run_name,
            uri=cfg.uri or default_tracking_uri(),
            run_id=run_id,
            tags=tags,
            system_metrics=cfg.system_metrics,
            system_metrics_interval=cfg.system_metrics_interval,
            retry_interval=cfg.retry_interval,
            flush_timeout=cfg.flush_timeout,
        )
    return MLflowTracker(
        cfg.experiment or experiment,
        run_name,
        uri=cfg.uri,
        run_id=run_id,
        tags=tags,
        system_metrics=cfg.system_metrics,
        system_metrics_interval=cfg.system_metrics_interval,
    )


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One MLflow run as the comparison reads it."""

    run_id: str
    name: str
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]  # the latest value of each metric


def find_runs(experiment: str, uri: str | None = None) -> list[RunRecord]:
    """All runs of an MLflow experiment (newest first); empty when it does not exist."""
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    out, token = [], None
    while True:
        page = client.search_runs(
            [exp.experiment_id], max_results=1000, page_token=token, order_by=["start_time DESC"]
        )
        out += [
            RunRecord(
                r.info.run_id,
                r.info.run_name or "",
                r.info.status,
                dict(r.data.tags),
                dict(r.data.metrics),
            )
            for r in page
        ]
        token = page.token
        if not token:
            return out
