"""Every shipped experiment config loads strictly and its features fit its simulator's files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import read_yaml
from pipeline.events import open_events
from pipeline.features import input_spec
from reco.experiment import ExperimentConfig, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "experiments").glob("*.yaml"))


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("smoke", [False, True])
def test_config_loads_and_features_match_events(path, smoke, tmp_path):
    from reco import experiment, suite

    tiny = ["simulation.n_train=24", "simulation.n_val=12", "simulation.n_test=12"]
    if read_yaml(path).get("simulation", {}).get("engine") == "pythia":  # optional extras
        pytest.importorskip("pythia8mc")
        pytest.importorskip("fastjet")
        tiny.append("simulation.pythia.workers=1")
    overrides = [*tiny, f"data.dir={tmp_path}"]
    if suite.is_suite(path):  # every variant of a suite file
        cfgs = list(suite.load_suite(path, overrides, smoke=smoke).values())
        assert len({experiment.data_dir(c) for c in cfgs}) == 1  # one shared dataset
    else:
        cfgs = [load_config(path, overrides, smoke=smoke)]
    for cfg in cfgs:
        assert isinstance(cfg, ExperimentConfig)
        paths = experiment.simulate(cfg)
        with open_events(paths["train"], kind=cfg.problem) as ev:
            spec = input_spec(cfg.features, ev)
            for target in cfg.task.targets:
                assert f"truth/{target}" in ev.names
        assert set(spec) == {g.name for g in cfg.features.groups}
        if cfg.problem == "airshower":
            for g in cfg.features.groups:  # an image of the array, or sets of its stations
                if g.layout == "image":
                    assert spec[g.name][:2] == cfg.simulation.array.shape
                else:
                    assert spec[g.name][0] == (g.length or np.prod(cfg.simulation.array.shape))
        else:
            length = spec["particles"][0]
            assert spec["particles"] == (length, 17)
            assert spec.get("vectors", (length, 4)) == (length, 4)
            assert spec.get("points", (length, 2)) == (length, 2)


def test_jets_problem_simulates_toy_jets(tmp_path):
    from pipeline.config import ConfigError, from_dict
    from reco import experiment

    data = {
        "problem": "jets",
        "simulation": {"kind": "jets", "n_train": 60, "n_val": 12, "n_test": 12},
        "data": {"dir": str(tmp_path / "jets")},
    }
    cfg = from_dict(ExperimentConfig, data)
    paths = experiment.simulate(cfg)
    with open_events(paths["train"], kind="jets") as ev:
        assert ev.n_events == 60
        assert "truth/label" in ev.names
    with pytest.raises(ConfigError, match="does not match problem"):
        from_dict(ExperimentConfig, {**data, "problem": "airshower"})


def test_train_seed_retrains_on_the_same_events(tmp_path, monkeypatch):
    """``train.seed`` sets initialisation and shuffling; the data stay the experiment seed's."""
    import dataclasses

    from reco import experiment

    path = CONFIGS[0].parent / "airshower_cnn_energy.yaml"
    tiny = ["simulation.n_train=24", "simulation.n_val=12", "simulation.n_test=12"]
    overrides = [*tiny, f"data.dir={tmp_path}", f"runs_dir={tmp_path / 'runs'}"]
    cfg = load_config(path, [*overrides, "train.seed=7"], smoke=True)
    base = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=None))
    assert experiment.data_dir(cfg) == experiment.data_dir(base)
    seen: dict[str, int] = {}

    def fake_fit(model, task, train, train_loader, val_loader, *args, seed, **kwargs):
        seen.update(init=seed, shuffle=train_loader.seed, val=val_loader.seed)
        raise RuntimeError("stop before training")

    monkeypatch.setattr("reco.train.fit", fake_fit)
    for config, expected in ((cfg, 7), (base, base.seed)):
        with pytest.raises(RuntimeError, match="stop before training"):
            experiment.train(config, experiment.simulate(config))
        assert seen == {"init": expected, "shuffle": expected, "val": expected}


def test_classical_sd_section_reaches_the_baseline_calibration(tmp_path, monkeypatch):
    from pipeline.config import ConfigError
    from reco import experiment

    path = CONFIGS[0].parent / "airshower_cnn_energy.yaml"
    section = ["classical_sd.cic_bins=6", "classical_sd.reconstruction.min_stations=4"]
    cfg = load_config(path, [*section, f"runs_dir={tmp_path}"], smoke=True)
    assert cfg.classical_sd.cic_bins == 6 and cfg.classical_sd.reconstruction.min_stations == 4
    with pytest.raises(ConfigError, match="'classical_sd.cic_binz'"):
        load_config(path, ["classical_sd.cic_binz=6"])
    seen = []

    def fake_calibrate(events, calibration_cfg):
        seen.append(calibration_cfg)
        raise RuntimeError("stop before calibrating")

    monkeypatch.setattr("analysis.baselines.calibrate_file", fake_calibrate)
    monkeypatch.setattr(experiment, "make_tracker", lambda *a, **k: experiment.NoopTracker())
    with pytest.raises(RuntimeError, match="stop before calibrating"):
        experiment.run_baseline(cfg, {"train": tmp_path / "train.h5"}, tmp_path / "run")
    assert seen == [cfg.classical_sd]


def test_jets_data_hash_ignores_sections_the_engine_does_not_use():
    """Toy settings do not move Pythia data and Pythia settings do not move toy data."""
    import dataclasses

    from reco.experiment import simulation_hash
    from simulation.jets.config import HadronisationConfig, KinematicsConfig, PythiaConfig

    def with_sim(path: str, **sim):
        cfg = load_config(CONFIGS[0].parent / path, variant="scratch" if "pythia" in path else None)
        return simulation_hash(
            dataclasses.replace(cfg, simulation=dataclasses.replace(cfg.simulation, **sim))
        )

    pythia, toy = "jets_pythia_top.yaml", "jets_toy_top.yaml"
    other_had = HadronisationConfig(photon_fraction=0.1)
    assert with_sim(pythia) == with_sim(pythia, hadronisation=other_had)
    assert with_sim(pythia) != with_sim(pythia, pythia=PythiaConfig(seed_offset=3))
    assert with_sim(toy) == with_sim(toy, pythia=PythiaConfig(seed_offset=3))
    assert with_sim(toy) != with_sim(toy, hadronisation=other_had)
    assert with_sim(toy) != with_sim(toy, kinematics=KinematicsConfig(pt_min=600.0))


def test_a_model_input_the_features_do_not_make_fails_when_read():
    """A typo in a model's batch key stops `reco` when it reads the config, before simulating."""
    from pipeline.config import ConfigError

    root = Path(__file__).resolve().parents[1] / "configs" / "experiments"
    with pytest.raises(ConfigError, match=r"model.input = 'img'.*'image'"):
        load_config(root / "airshower_cnn_energy.yaml", overrides=["model.input=img"])
    with pytest.raises(ConfigError, match=r"model.mask_key = 'particle_mask'.*particles_mask"):
        load_config(root / "jets_part.yaml", overrides=["model.mask_key=particle_mask"])
