"""Tracking that survives a tracking server that is down or goes away: a local journal.

Every call on a :class:`JournaledTracker` is appended to ``<dir>/journal.jsonl`` (one JSON line,
numbered) before anything is sent, and a background thread sends the lines to MLflow in order.
Training never waits on the network: when the server does not answer, the thread keeps the
entries and retries every ``retry_interval`` seconds; :meth:`JournaledTracker.finish` waits at
most ``flush_timeout`` seconds for what is left. ``<dir>/state.json`` records the MLflow run id and
the number of the last entry the server accepted, so a later process on the same run folder (an
evaluation, a ``--resume``) sends the backlog first, and :func:`sync` (``reco sync RUN_DIR``)
uploads it on its own. Nothing is lost: an entry leaves the backlog only once MLflow accepted it.

A journal belongs to one MLflow run. Its first entry is ``start`` (create the run) or ``resume``
(continue a run created elsewhere); each later process appends ``resume``. Metrics keep the time
they were logged, so a late upload shows the same history as a live one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.atomic import write_atomic
from pipeline.tracking import DatasetRef, MLflowTracker

JOURNAL = "journal.jsonl"
STATE = "state.json"
_METRICS_PER_BATCH = 1000  # MLflow's limit per log_batch

# the MLflow client retries a refused connection 7 times with exponential backoff (minutes);
# the journal retries on its own, so one request may fail fast (the environment wins if set)
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}

Connect = Callable[[Mapping[str, Any], str | None], Any]  # (start entry, run id) -> tracker


def _mlflow_connect(system_metrics: bool, interval: float, uri: str | None = None) -> Connect:
    """Opens the journal's run in MLflow: creates it (``run_id`` None) or continues it."""

    def connect(entry: Mapping[str, Any], run_id: str | None) -> MLflowTracker:
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        return MLflowTracker(
            entry["experiment"],
            entry["run_name"],
            uri=uri or entry["uri"],
            run_id=run_id,
            tags=entry.get("tags") or None,
            system_metrics=system_metrics,
            system_metrics_interval=interval,
        )

    return connect


class Journal:
    """The files of one run's journal: append entries, read the backlog, record progress."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / JOURNAL
        self.state_path = self.dir / STATE
        self._lock = threading.Lock()
        self._next = self._count()
        self._cut = self._ends_mid_line()  # a process killed mid-write: start a fresh line

    def _count(self) -> int:
        entries = self.entries()
        return entries[-1]["seq"] + 1 if entries else 0

    def _ends_mid_line(self) -> bool:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return False
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"

    def entries(self) -> list[dict[str, Any]]:
        """All complete entries, in order (a line cut short by a crash is ignored)."""
        if not self.path.is_file():
            return []
        out = []
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line of a killed process
                if isinstance(entry, dict) and "seq" in entry and "op" in entry:
                    out.append(entry)
        return out

    def append(self, op: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            entry = {"seq": self._next, "op": op, **fields}
            self._next += 1
            self.dir.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(("\n" if self._cut else "") + json.dumps(entry) + "\n")
            self._cut = False
        return entry

    def state(self) -> dict[str, Any]:
        if not self.state_path.is_file():
            return {"run_id": None, "sent": -1}
        try:
            return json.loads(self.state_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.state_path}: not valid JSON ({err})") from err

    def save_state(self, **changes: Any) -> dict[str, Any]:
        state = self.state() | changes
        write_atomic(self.state_path, json.dumps(state, indent=1), "the journal state")
        return state

    def backlog(self) -> list[dict[str, Any]]:
        """Entries MLflow has not accepted yet."""
        sent = self.state().get("sent", -1)
        return [e for e in self.entries() if e["seq"] > sent]

    def first(self) -> dict[str, Any] | None:
        """The entry that names the run (``start`` or ``resume``)."""
        for entry in self.entries():
            if entry["op"] in ("start", "resume"):
                return entry
        return None


class _Sender:
    """Sends journal entries in order through a tracker opened by ``connect``."""

    def __init__(self, journal: Journal, connect: Connect) -> None:
        self.journal = journal
        self.connect = connect
        self.tracker: Any = None

    def send(self, group: list[dict[str, Any]]) -> None:
        """Sends one entry, or several consecutive metric entries as one batch; then records it."""
        entry = group[0]
        op = entry["op"]
        if op in ("start", "resume"):
            run_id = self.journal.state().get("run_id") or entry.get("run_id")
            if self.tracker is None or self.tracker.run_id != run_id:
                self.tracker = self.connect(self.journal.first() or entry, run_id)
            self.journal.save_state(run_id=self.tracker.run_id, uri=self.tracker.uri)
        elif self.tracker is None:  # a backlog whose start/resume was sent by an earlier process
            run_id = self.journal.state().get("run_id")
            first = self.journal.first()
            if run_id is None or first is None:
                raise ValueError(f"{self.journal.path}: entries without the run they belong to")
            self.tracker = self.connect(first, run_id)
        if op == "metrics":
            self.tracker.log_metric_entries(group)
        elif op == "params":
            self.tracker.log_params(entry["params"])
        elif op == "tags":
            self.tracker.set_tags(entry["tags"])
        elif op == "artifact":
            path = Path(entry["path"])
            if path.exists():  # removed since: nothing left to upload (reported by sync)
                self.tracker.log_artifact(path, entry.get("artifact_path"))
        elif op == "input":
            self.tracker.log_input(DatasetRef(**entry["dataset"]))
        elif op == "finish":
            self.tracker.finish(entry["status"])
            self.tracker = None
        self.journal.save_state(sent=group[-1]["seq"])


def _groups(entries: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive metric entries merged (up to MLflow's batch size); every other entry alone."""
    group: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        n = len(entry.get("metrics", ()))
        if group and entry["op"] == "metrics" == group[0]["op"] and size + n <= _METRICS_PER_BATCH:
            group.append(entry)
            size += n
            continue
        if group:
            yield group
        group, size = [entry], n
    if group:
        yield group


class JournaledTracker:
    """A :class:`~pipeline.tracking.Tracker` that journals every call and sends it in the
    background (see the module docstring).

    Args:
        directory: the journal's folder (``<run>/tracking``).
        experiment, run_name, uri, tags: the MLflow run, when the journal is new.
        run_id: an MLflow run to continue (from run.json) when the journal has none yet.
        connect: opens the run (tests pass a fake); default: MLflow.
        retry_interval: seconds between attempts while the server does not answer.
        flush_timeout: the longest :meth:`finish` waits for the backlog to be sent.
    """

    def __init__(
        self,
        directory: Path,
        experiment: str,
        run_name: str,
        uri: str,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        connect: Connect | None = None,
        system_metrics: bool = False,
        system_metrics_interval: float = 10.0,
        retry_interval: float = 15.0,
        flush_timeout: float = 60.0,
    ) -> None:
        self.journal = Journal(directory)
        self.uri = uri
        self.retry_interval = retry_interval
        self.flush_timeout = flush_timeout
        connect = connect or _mlflow_connect(system_metrics, system_metrics_interval)
        self._sender = _Sender(self.journal, connect)
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._pending = self.journal.backlog()  # left by an earlier process: sent first
        self._closing = threading.Event()
        self._error: str | None = None
        is_new = self.journal.first() is None
        op = "start" if is_new and run_id is None else "resume"
        self._put(
            op,
            experiment=experiment,
            run_name=run_name,
            uri=uri,
            tags=dict(tags or {}),
            run_id=self.journal.state().get("run_id") or run_id,
        )
        self._flush_now()  # opens the run now when the server answers (run.json gets its id)
        self._thread = threading.Thread(target=self._run, name="reco-tracking", daemon=True)
        self._thread.start()

    # ---- the Tracker interface: journal first, then queue for the sender

    @property
    def run_id(self) -> str | None:
        return self.journal.state().get("run_id")

    def _put(self, op: str, **fields: Any) -> None:
        self._queue.put(self.journal.append(op, **fields))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._put("params", params={k: _jsonable(v) for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        values = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        if values:
            self._put("metrics", metrics=values, step=int(step), ts=int(time.time() * 1000))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if tags:
            self._put("tags", tags={k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._put("artifact", path=str(Path(path).resolve()), artifact_path=artifact_path)

    def log_input(self, dataset: DatasetRef) -> None:
        self._put("input", dataset=dataclasses.asdict(dataset))

    def finish(self, status: str = "FINISHED") -> None:
        """Journals the end of the run and waits (at most ``flush_timeout`` s) for the backlog."""
        self._put("finish", status=status)
        self._closing.set()
        self._thread.join(self.flush_timeout)
        left = len(self.journal.backlog())
        if left:
            print(
                f"MLflow ({self.uri}) did not take {left} tracking entries"
                f"{f' ({self._error})' if self._error else ''}; they are kept in "
                f"{self.journal.path}: upload them with `reco sync {self.journal.dir.parent}`",
                file=sys.stderr,
            )

    # ---- the sender thread

    def _drain(self) -> None:
        while True:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def _flush_now(self) -> bool:
        """Sends what is pending; False when the server refused (the rest stays pending)."""
        self._drain()
        while self._pending:
            group = next(_groups(self._pending))
            try:
                self._sender.send(group)
            except Exception as err:  # noqa: BLE001 - any failure: keep the entries, retry later
                if self._error is None:
                    print(
                        f"MLflow ({self.uri}) is not answering ({type(err).__name__}: "
                        f"{str(err)[:200]}): training goes on, tracking is kept in "
                        f"{self.journal.path} and sent when it answers again",
                        file=sys.stderr,
                    )
                self._error = f"{type(err).__name__}: {str(err)[:200]}"
                self._sender.tracker = None  # reconnect next time
                return False
            self._error = None
            del self._pending[: len(group)]
            self._drain()
        return True

    def _run(self) -> None:
        while True:
            closing = self._closing.is_set()  # finish() queues its entry before it sets this
            ok = self._flush_now()
            if closing:
                return  # all sent, or the last attempt after finish() failed: sync sends the rest
            if ok:
                try:
                    self._pending.append(self._queue.get(timeout=0.5))
                except queue.Empty:
                    pass
            else:
                self._closing.wait(self.retry_interval)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def sync(directory: Path, uri: str | None = None, connect: Connect | None = None) -> dict:
    """Uploads a journal's backlog (``reco sync``); returns ``{"sent", "run_id", "missing"}``.

    Args:
        directory: the journal's folder (``<run>/tracking``).
        uri: send to this tracking server instead of the one the run was started with.

    Raises:
        FileNotFoundError: no journal in ``directory``.
        whatever MLflow raises when the server does not answer (nothing is lost: run it again).
    """
    journal = Journal(directory)
    if not journal.path.is_file():
        raise FileNotFoundError(f"{journal.path}: no tracking journal (was tracking enabled?)")
    sender = _Sender(journal, connect or _mlflow_connect(False, 10.0, uri))
    backlog = journal.backlog()
    missing = [e["path"] for e in backlog if e["op"] == "artifact" and not Path(e["path"]).exists()]
    sent = 0
    try:
        for group in _groups(backlog):
            sender.send(group)
            sent += len(group)
    finally:
        if sender.tracker is not None:  # a run whose process died: leave it as it was
            with contextlib.suppress(Exception):
                sender.tracker.close()
    return {"sent": sent, "run_id": journal.state().get("run_id"), "missing": missing}
