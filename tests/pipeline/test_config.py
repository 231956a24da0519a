"""Strict config loading: types, unknown keys, overrides, variants, hash."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from pipeline import config as C


@dataclasses.dataclass(frozen=True)
class Opt:
    lr: float = 1e-3  # learning rate
    steps: int = 10  # optimiser steps
    schedule: Literal["cosine", "constant"] = "cosine"  # decay shape
    betas: tuple[float, float] = (0.9, 0.999)  # Adam moments
    clip: float | None = None  # global-norm clip, None: off


@dataclasses.dataclass(frozen=True)
class ModelBase:
    name: str = "a"  # variant
    __config_variants__: ClassVar[dict[str, type]] = {}
    __config_tag__: ClassVar[str] = "name"


@dataclasses.dataclass(frozen=True)
class ModelA(ModelBase):
    name: str = "a"
    width: int = 8  # channels


@dataclasses.dataclass(frozen=True)
class ModelB(ModelBase):
    name: str = "b"
    depth: int = 2  # blocks

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError("depth must be >= 1")


ModelBase.__config_variants__.update(a=ModelA, b=ModelB)


@dataclasses.dataclass(frozen=True)
class Root:
    seed: int = 0  # seed
    opt: Opt = Opt()  # optimiser
    model: ModelBase = ModelA()  # model variant
    mixture: dict[str, float] = dataclasses.field(default_factory=lambda: {"p": 1.0})  # fractions
    layers: tuple[int, ...] = (1, 2)  # widths


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_types(tmp_path):
    cfg = C.load(
        Root, write(tmp_path, "opt:\n  lr: 3e-4\n  betas: [0.8, 0.99]\nlayers: [4, 5, 6]\n")
    )
    assert cfg.opt.lr == pytest.approx(3e-4)
    assert cfg.opt.betas == (0.8, 0.99)
    assert cfg.layers == (4, 5, 6)
    assert cfg.opt.steps == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


def test_int_widens_to_float_but_not_reverse(tmp_path):
    assert C.load(Root, write(tmp_path, "opt: {lr: 1}\n")).opt.lr == 1.0
    with pytest.raises(C.ConfigError, match=r"'opt.steps' expects an integer"):
        C.load(Root, write(tmp_path, "opt: {steps: 2.5}\n"))


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "opt:\n  lrr: 0.1\n")
    with pytest.raises(C.ConfigError) as err:
        C.load(Root, path)
    assert "opt.lrr" in str(err.value) and str(path) in str(err.value)


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(C.ConfigError, match=r"'opt.schedule' expects one of"):
        C.load(Root, write(tmp_path, "opt: {schedule: linear}\n"))
    with pytest.raises(C.ConfigError, match=r"'seed' expects an integer"):
        C.load(Root, write(tmp_path, "seed: true\n"))
    with pytest.raises(C.ConfigError, match=r"'mixture.Fe' expects a number"):
        C.load(Root, write(tmp_path, "mixture: {Fe: lots}\n"))


def test_overrides(tmp_path):
    path = write(tmp_path, "seed: 1\n")
    cfg = C.load(Root, path, overrides=["opt.lr=3e-4", "opt.clip=1.5", "seed=7", "layers=[3]"])
    assert cfg.opt.lr == pytest.approx(3e-4) and cfg.opt.clip == 1.5 and cfg.seed == 7
    assert cfg.layers == (3,)
    with pytest.raises(C.ConfigError, match=r"opt.lrate"):
        C.load(Root, path, overrides=["opt.lrate=1"])
    with pytest.raises(C.ConfigError, match="KEY=VALUE"):
        C.load(Root, path, overrides=["opt.lr"])


def test_overlay_file_named_in_error(tmp_path):
    path = write(tmp_path, "seed: 1\n")
    overlay = write(tmp_path, "opt: {nope: 1}\n", "smoke.yaml")
    with pytest.raises(C.ConfigError, match="smoke.yaml"):
        C.load(Root, path, overlays=[overlay])
    good = write(tmp_path, "opt: {steps: 2}\n", "smoke2.yaml")
    assert C.load(Root, path, overlays=[good]).opt.steps == 2


def test_variants(tmp_path):
    cfg = C.load(Root, write(tmp_path, "model: {name: b, depth: 3}\n"))
    assert isinstance(cfg.model, ModelB) and cfg.model.depth == 3
    with pytest.raises(C.ConfigError, match="registered: a, b"):
        C.load(Root, write(tmp_path, "model: {name: c}\n"))
    with pytest.raises(C.ConfigError, match="model.width"):
        C.load(Root, write(tmp_path, "model: {name: b, width: 3}\n"))
    with pytest.raises(C.ConfigError, match="depth must be >= 1"):
        C.load(Root, write(tmp_path, "model: {name: b, depth: 0}\n"))


def test_round_trip_and_hash(tmp_path):
    cfg = C.load(Root, write(tmp_path, "model: {name: b}\nmixture: {p: 0.5, Fe: 0.5}\n"))
    again = C.from_dict(Root, C.to_dict(cfg))
    assert again == cfg
    assert C.config_hash(again) == C.config_hash(cfg)
    changed = C.load(
        Root, write(tmp_path, "model: {name: b}\nmixture: {p: 0.5, Fe: 0.5}\nseed: 1\n")
    )
    assert C.config_hash(changed) != C.config_hash(cfg)
    # key order in the file does not change the hash
    swapped = C.load(Root, write(tmp_path, "mixture: {Fe: 0.5, p: 0.5}\nmodel: {name: b}\n"))
    assert C.config_hash(swapped) == C.config_hash(cfg)


def test_flatten():
    flat = C.flatten(Root())
    assert flat["opt.lr"] == 1e-3 and flat["model.name"] == "a" and flat["mixture.p"] == 1.0


def test_bad_yaml_and_missing(tmp_path):
    with pytest.raises(C.ConfigError, match="not found"):
        C.load(Root, tmp_path / "nope.yaml")
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        C.load(Root, write(tmp_path, "opt: [1,\n"))
    with pytest.raises(C.ConfigError, match="must be a mapping"):
        C.load(Root, write(tmp_path, "- 1\n- 2\n"))


@dataclasses.dataclass(frozen=True)
class SimA:
    kind: Literal["a"] = "a"  # simulator
    n: int = 1  # events


@dataclasses.dataclass(frozen=True)
class SimB:
    kind: Literal["b"] = "b"  # simulator
    width: float = 2.0  # m


@dataclasses.dataclass(frozen=True)
class WithSim:
    simulation: SimA | SimB = SimA()  # picked by kind


def test_union_of_sections_dispatches_on_kind(tmp_path):
    assert C.load(WithSim, write(tmp_path, "simulation: {n: 5}\n")).simulation == SimA(n=5)
    assert C.load(WithSim, write(tmp_path, "simulation: {kind: b, width: 3}\n")).simulation == SimB(
        width=3.0
    )
    # the error names the key of the selected member, not a generic union mismatch
    with pytest.raises(C.ConfigError, match=r"'simulation.n'.*section SimB"):
        C.load(WithSim, write(tmp_path, "simulation: {kind: b, n: 3}\n"))
    with pytest.raises(C.ConfigError, match=r"'simulation.kind' is 'c'; known: a, b"):
        C.load(WithSim, write(tmp_path, "simulation: {kind: c}\n"))
