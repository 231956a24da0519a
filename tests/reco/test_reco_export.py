"""Deployment export: ONNX (run with onnxruntime) and jax.export against the JAX model itself.

Each model (CNN, station transformer, ParT) is a tiny initialised checkpoint on event files
written here (toy air-shower stations, simulated jets); it is exported once per module and run
on real loader batches of two batch sizes and, for the set models, two set lengths (loaders with
a shorter padding length: the exported graph pads them to the checkpoint's length).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
import pytest
from tiny_sets import TINY_STATIONS

from pipeline.config import to_dict
from pipeline.events import open_events, write_events
from pipeline.features import (
    FeatureConfig,
    FeatureStats,
    InputGroupConfig,
    VariableConfig,
    fit_stats,
)
from pipeline.jet_features import jetclass_features
from pipeline.loader import Loader
from reco import export
from reco.checkpoint import Checkpoints, load_for_inference
from reco.models import build_model
from reco.models.cnn import CNNConfig
from reco.models.part import PartConfig
from reco.state import init_state
from reco.tasks import TaskConfig
from reco.train import model_inputs

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("jax2onnx")

N, R, C, T = 40, 6, 6, 12  # events, station grid rows x cols, trace bins
TOL = 1e-4  # max |ONNX - JAX| of the raw outputs
# The test programs are tiny: XLA's compile time dominates, and LLVM's optimisations triple it.
FAST_COMPILE = {"xla_backend_optimization_level": 0}

MODELS = {
    "cnn": CNNConfig(stem_width=4, widths=(4, 8), head_widths=(8,)),
    "set_transformer": TINY_STATIONS,
    "part": PartConfig(
        embed_dims=(16, 16),
        pair_embed_dims=(8,),
        num_heads=2,
        num_layers=1,
        num_cls_layers=1,
        ffn_ratio=2,
    ),
}
SET_LENGTH = {"set_transformer": 8, "part": 16}  # the checkpoints' padding lengths


def _airshower_file(path: Path) -> Path:
    rng = np.random.default_rng(0)
    trig = rng.random((N, R, C)) < 0.25
    trig[:, 2, 2] = True  # every event has a triggered station
    signal = np.where(trig, rng.exponential(10.0, (N, R, C)), 0.0).astype(np.float32)
    time = np.where(trig, rng.normal(0.0, 500.0, (N, R, C)), 0.0).astype(np.float32)
    x, y = np.meshgrid(np.arange(C) * 1500.0, np.arange(R) * 1300.0)
    arrays = {
        "station/signal": signal,
        "station/time": time,
        "station/trigger": trig,
        "station/trace": (rng.random((N, R, C, T)) * trig[..., None]).astype(np.float16),
        "truth/log10_energy": rng.uniform(18.5, 20, N).astype(np.float32),
        "meta/station_x": x.astype(np.float32),
        "meta/station_y": y.astype(np.float32),
        "meta/station_z": rng.normal(1400.0, 30.0, (R, C)).astype(np.float32),
    }
    return write_events(path, arrays, {"kind": "airshower"})


def _airshower_features(model: str, length: int) -> FeatureConfig:
    trig = "station/trigger"
    log_s = VariableConfig(name="log_s", source="station/signal", transform="log10_1p", mask=trig)
    t = VariableConfig(name="time", source="station/time", mask=trig, standardize=True)
    if model == "cnn":
        return FeatureConfig(groups=(InputGroupConfig(name="image", variables=(log_s, t)),))
    group = dict(layout="set", mask=trig, compact=True, length=length)
    positions = tuple(VariableConfig(name=c, source=f"meta/station_{c}", scale=1e-3) for c in "xyz")
    trace = VariableConfig(name="trace", source="station/trace", transform="log10_1p")
    return FeatureConfig(
        groups=(
            InputGroupConfig(name="stations", variables=(log_s, t), **group),
            InputGroupConfig(name="positions", variables=positions, **group),
            InputGroupConfig(name="traces", variables=(trace,), **group),
        )
    )


def _jets_file(path: Path) -> Path:
    from simulation.jets.config import JetsConfig
    from simulation.jets.simulate import simulate

    sample = simulate(JetsConfig(), N, seed=7)
    return write_events(path, sample.arrays, {"kind": "jets"}, jagged={"part": sample.particles})


def _features(model: str, length: int | None = None) -> FeatureConfig:
    length = SET_LENGTH.get(model, 0) if length is None else length
    if model == "part":
        return jetclass_features("kin", length=length)
    return _airshower_features(model, length)


@dataclasses.dataclass
class Exported:
    """A checkpoint, its event file and statistics, and the ONNX export of its model."""

    run: Path
    events: Path
    stats: FeatureStats
    target: str
    onnx: Path
    model: Any  # the checkpoint's model, loaded once (``load_for_inference``)

    def reference(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """The JAX model's raw outputs on ``batch`` (jitted: one compilation per shape)."""
        if not hasattr(self, "_predict"):
            self._predict = jax.jit(
                lambda x: self.model(x, train=False), compiler_options=FAST_COMPILE
            )
        return np.asarray(self._predict(model_inputs(batch)))

    def loader(self, model: str, batch_size: int, length: int | None = None) -> Loader:
        return Loader(
            self.events,
            _features(model, length),
            self.stats,
            (self.target,),
            batch_size=batch_size,
            shuffle=False,
            seed=0,
            prefetch=0,
        )


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request, tmp_path_factory) -> tuple[str, Exported]:
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    if name == "part":
        events, target, n_out = _jets_file(tmp / "test.h5"), "label", 6
    else:
        events, target, n_out = _airshower_file(tmp / "test.h5"), "log10_energy", 1
    features = _features(name)
    with open_events(events) as f:
        stats = fit_stats(features, f, (target,))
    loader = Loader(events, features, stats, (target,), batch_size=8, shuffle=False, seed=0)
    spec = dict(loader.input_spec)
    loader.close()
    model = build_model(MODELS[name], spec, n_out, seed=0)
    _, state = init_state(model, optax.set_to_zero())
    meta = {
        "model": to_dict(MODELS[name]),
        "task": to_dict(TaskConfig(targets=(target,))),
        "n_outputs": n_out,
        "input_spec": {k: list(v) for k, v in spec.items()},
        "epoch": 0,
        "step": 0,
    }
    ckpt = Checkpoints(tmp / "run" / "checkpoints")
    ckpt.save("best", state, meta, {"features": to_dict(features)}, stats.to_dict())
    ckpt.close()
    onnx = export.export(tmp / "run", "onnx")
    model, _, _ = load_for_inference(tmp / "run")
    return name, Exported(tmp / "run", events, stats, target, onnx, model)


def _batches(name: str, ex: Exported) -> list[dict[str, np.ndarray]]:
    """First batches of two batch sizes, and for the set models of two set lengths."""
    lengths = [None, SET_LENGTH[name] - 3] if name in SET_LENGTH else [None]
    out = []
    for batch_size, length in [(8, None), (5, None), *[(6, n) for n in lengths[1:]]]:
        with ex.loader(name, batch_size, length) as loader:
            out.append(next(iter(loader.epoch(0))))
    return out


def test_onnx_matches_the_jax_model(exported) -> None:
    name, ex = exported
    assert ex.onnx == ex.run / "export" / "model.onnx"
    session = ort.InferenceSession(str(ex.onnx), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert [o.name for o in session.get_outputs()] == ["outputs"]
    diffs = []
    for batch in _batches(name, ex):
        assert set(names) <= set(batch)
        feed = {k: batch[k] for k in names}
        out = session.run(None, feed)[0]
        ref = ex.reference(batch)
        assert out.shape == ref.shape == (len(batch["valid"]), 6 if name == "part" else 1)
        assert np.std(ref[:, 0]) > 0  # the outputs depend on the event
        diffs.append(float(np.abs(out - ref).max()))
    print(f"{name}: max |onnx - jax| per batch {diffs}")
    assert max(diffs) <= TOL
    if name == "cnn":
        assert names == ["image"] and shapes["image"][0] == "B"
        with ex.loader(name, 2) as loader:
            assert shapes["image"][1:] == list(loader.input_spec["image"])
    else:
        mask = "particles" if name == "part" else "stations"
        assert f"{mask}_mask" in names
        assert all(s[:2] == ["B", "P"] for s in shapes.values())


def test_jax_export_round_trip(exported, tmp_path) -> None:
    name, ex = exported
    out = export.export_jax(ex.run, tmp_path / "m.jaxexport")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jaxexport"]  # no temporary left
    predict = jax.jit(export.load_jax_export(out), compiler_options=FAST_COMPILE)
    for batch in _batches(name, ex)[::2]:
        got = np.asarray(predict(batch))  # a whole batch: the keys it does not read are ignored
        np.testing.assert_allclose(got, ex.reference(batch), rtol=0, atol=1e-6)


def test_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        export.export(tmp_path / "nowhere", "onnx")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="empty"):
        export.export_onnx(tmp_path / "empty", tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export.export(tmp_path, "tflite")
    with pytest.raises(FileNotFoundError, match="missing.jaxexport"):
        export.load_jax_export(tmp_path / "missing.jaxexport")
    (tmp_path / "junk.jaxexport").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.jaxexport"):
        export.load_jax_export(tmp_path / "junk.jaxexport")


@pytest.mark.parametrize("exported", ["cnn"], indirect=True)  # one model is enough
def test_a_conversion_failure_names_the_model_and_the_op(exported, monkeypatch, tmp_path) -> None:
    name, ex = exported
    import jax2onnx

    def unsupported(*args, **kwargs):
        raise NotImplementedError("[converter] No plugins registered for primitive 'erf_inv'")

    monkeypatch.setattr(jax2onnx, "to_onnx", unsupported)
    with pytest.raises(ValueError, match="'cnn' model .*: op 'erf_inv' failed"):
        export.export_onnx(ex.run, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("exported", ["part"], indirect=True)  # BatchNorms and ~100 values
def test_onnx_export_says_nothing_but_errors(exported, caplog, tmp_path) -> None:
    """No warnings of jax2onnx or onnx_ir: a line per BatchNorm (logged on the root logger,
    which in a command without logging set up also installs a handler there, after which every
    library's warnings print) and a line per value whose type onnx_ir does not write, ~100
    lines on a terminal before."""
    _, ex = exported
    with caplog.at_level(logging.WARNING):
        export.export(ex.run, "onnx", out=tmp_path / "m.onnx")
    assert [f"{r.name}: {r.getMessage()}" for r in caplog.records] == []
    assert logging.getLogger("onnx_ir").level == logging.NOTSET  # as it was


@pytest.mark.parametrize("exported", ["cnn"], indirect=True)  # one model is enough
def test_cli_export_writes_the_default_file_and_fails_cleanly(exported, tmp_path) -> None:
    from typer.testing import CliRunner

    from reco.cli import app

    name, ex = exported
    result = CliRunner().invoke(app, ["export", str(ex.run), "--format", "jax"])
    assert result.exit_code == 0, result.output
    assert (ex.run / "export" / "model.jaxexport").is_file()
    out = tmp_path / "deploy" / "cnn.onnx"
    result = CliRunner().invoke(app, ["export", str(ex.run), "--out", str(out), "--which", "best"])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    result = CliRunner().invoke(app, ["export", str(ex.run), "--format", "tflite"])
    assert result.exit_code == 1 and "unknown export format 'tflite'" in result.output
    result = CliRunner().invoke(app, ["export", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "nowhere" in result.output
