"""The tracking journal: a server that is down, goes away or comes back loses nothing."""

from __future__ import annotations

import itertools
import json

import pytest

from pipeline.tracking import DatasetRef, DictTracker, TrackingConfig, make_tracker
from pipeline.tracking_journal import Journal, JournaledTracker, sync


class FakeServer:
    """MLflow stand-in: runs are DictTrackers; every call fails while ``up`` is False."""

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.runs: dict[str, DictTracker] = {}
        self.ts: dict[str, list[int]] = {}
        self.connects = 0
        self._ids = itertools.count()

    def check(self) -> None:
        if not self.up:
            raise ConnectionError("connection refused")

    def connect(self, entry, run_id):
        self.check()
        self.connects += 1
        if run_id is None:
            run_id = f"run{next(self._ids)}"
            self.runs[run_id] = DictTracker()
            self.runs[run_id].tags.update(entry["tags"])
        return FakeRun(self, run_id)


class FakeRun:
    uri = "fake://server"

    def __init__(self, server: FakeServer, run_id: str) -> None:
        self.server, self.run_id = server, run_id
        self.store = server.runs[run_id]

    def __getattr__(self, name):  # every Tracker call: refused while the server is down
        def call(*args, **kwargs):
            self.server.check()
            return getattr(self.store, name)(*args, **kwargs)

        return call

    def log_metric_entries(self, entries):
        self.server.check()
        for e in entries:
            self.store.log_metrics(e["metrics"], e["step"])
            self.server.ts.setdefault(self.run_id, []).append(e["ts"])

    def close(self) -> None:
        pass


def _tracker(tmp_path, server, **kwargs) -> JournaledTracker:
    kwargs = {"retry_interval": 0.02, "flush_timeout": 10.0} | kwargs
    return JournaledTracker(
        tmp_path / "tracking", "airshower", "run-a", uri="fake://server", connect=server.connect,
        tags={"model": "cnn"}, **kwargs,
    )  # fmt: skip


def _log_epochs(tracker, epochs, start=0) -> None:
    for epoch in range(start, start + epochs):
        tracker.log_metrics({"train/loss": 1.0 / (epoch + 1), "val/loss": 2.0 / (epoch + 1)}, epoch)


def test_server_up_everything_arrives_in_order(tmp_path):
    server = FakeServer()
    tracker = _tracker(tmp_path, server)
    assert tracker.run_id == "run0"  # opened in the constructor: run.json gets the id at once
    tracker.log_params({"train.lr": 1e-3, "features": ["a", "b"]})
    _log_epochs(tracker, 5)
    tracker.log_metrics({"bad": float("nan")}, 5)  # non-finite: not journaled, not sent
    plot = tmp_path / "roc.png"
    plot.write_bytes(b"png")
    tracker.log_artifact(plot, "plots")
    tracker.log_input(DatasetRef("airshower/train", "x.h5", "abc", "train", 10))
    tracker.finish()

    run = server.runs["run0"]
    assert run.metrics["val/loss"] == [(e, 2.0 / (e + 1)) for e in range(5)]
    assert "bad" not in run.metrics
    assert run.params == {"train.lr": 1e-3, "features": ["a", "b"]}
    assert run.artifacts == [(plot.resolve(), "plots")] and run.inputs[0].digest == "abc"
    assert run.status == "FINISHED" and run.tags == {"model": "cnn"}
    journal = Journal(tmp_path / "tracking")
    assert journal.backlog() == [] and journal.state()["run_id"] == "run0"
    assert server.connects == 1


def test_server_down_throughout_then_sync_uploads_everything(tmp_path, capsys):
    server = FakeServer(up=False)
    tracker = _tracker(tmp_path, server, flush_timeout=1.0)
    assert tracker.run_id is None  # no run yet: created by the upload
    tracker.log_params({"train.lr": 1e-3})
    _log_epochs(tracker, 3)
    tracker.finish("FINISHED")
    assert "not answering" in capsys.readouterr().err
    journal = Journal(tmp_path / "tracking")
    assert len(journal.backlog()) == 6  # start, params, 3 x metrics, finish
    logged_ts = [e["ts"] for e in journal.entries() if e["op"] == "metrics"]

    with pytest.raises(ConnectionError):
        sync(tmp_path / "tracking", connect=server.connect)  # still down: nothing lost
    assert len(journal.backlog()) == 6

    server.up = True
    result = sync(tmp_path / "tracking", connect=server.connect)
    assert result["sent"] == 6 and result["run_id"] == "run0"
    run = server.runs["run0"]
    assert run.metrics["train/loss"] == [(e, 1.0 / (e + 1)) for e in range(3)]
    assert server.ts["run0"] == logged_ts  # measured times, not upload times
    assert run.status == "FINISHED" and journal.backlog() == []
    assert sync(tmp_path / "tracking", connect=server.connect)["sent"] == 0  # idempotent
    assert len(server.runs) == 1


def test_server_goes_away_mid_run_and_comes_back(tmp_path, capsys):
    server = FakeServer()
    tracker = _tracker(tmp_path, server)
    _log_epochs(tracker, 3)
    server.up = False
    _log_epochs(tracker, 3, start=3)  # journaled; the sender retries in the background
    server.up = True
    _log_epochs(tracker, 2, start=6)
    tracker.finish()
    run = server.runs["run0"]
    assert [s for s, _ in run.metrics["val/loss"]] == list(range(8))  # all, once, in order
    assert run.status == "FINISHED" and len(server.runs) == 1


def test_next_process_sends_the_backlog_first(tmp_path):
    """A resume (or the evaluation after training) on the same run folder uploads what the
    previous process could not, into the same MLflow run."""
    server = FakeServer()
    first = _tracker(tmp_path, server, flush_timeout=1.0)
    _log_epochs(first, 2)
    server.up = False
    _log_epochs(first, 2, start=2)
    first.finish("KILLED")
    server.up = True
    again = _tracker(tmp_path, server, run_id="run0")
    _log_epochs(again, 2, start=4)
    again.finish()
    run = server.runs["run0"]
    assert [s for s, _ in run.metrics["train/loss"]] == list(range(6))
    assert run.status == "FINISHED" and list(server.runs) == ["run0"]


def test_journal_ignores_a_line_cut_short(tmp_path):
    server = FakeServer(up=False)
    tracker = _tracker(tmp_path, server, flush_timeout=0.5)
    _log_epochs(tracker, 2)
    tracker.finish()
    path = tmp_path / "tracking" / "journal.jsonl"
    with path.open("a") as f:
        f.write('{"seq": 99, "op": "metr')  # the process died mid-write
    journal = Journal(tmp_path / "tracking")
    assert [e["seq"] for e in journal.entries()] == [0, 1, 2, 3]
    assert journal.append("tags", tags={"a": "b"})["seq"] == 4
    server.up = True
    assert sync(tmp_path / "tracking", connect=server.connect)["sent"] == 5


def test_sync_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="journal.jsonl"):
        sync(tmp_path / "tracking")
    (tmp_path / "tracking").mkdir()
    (tmp_path / "tracking" / "journal.jsonl").write_text("")
    (tmp_path / "tracking" / "state.json").write_text("{oops")
    with pytest.raises(ValueError, match="state.json"):
        sync(tmp_path / "tracking")


def test_real_mlflow_through_the_journal(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = TrackingConfig(uri=uri, system_metrics=False)
    tracker = make_tracker(cfg, "jets", "run-j", tags={"a": "1"}, journal_dir=tmp_path / "t")
    tracker.log_params({"model.name": "part"})
    _log_epochs(tracker, 3)
    tracker.finish()
    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    history = client.get_metric_history(tracker.run_id, "val/loss")
    assert [(m.step, m.value) for m in history] == [(e, 2.0 / (e + 1)) for e in range(3)]
    journal_ts = [e["ts"] for e in Journal(tmp_path / "t").entries() if e["op"] == "metrics"]
    assert [m.timestamp for m in history] == journal_ts
    assert run.info.status == "FINISHED" and run.data.tags["a"] == "1"
    assert json.loads((tmp_path / "t" / "state.json").read_text())["run_id"] == tracker.run_id
