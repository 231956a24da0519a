"""Jagged input groups: JetClass derived features, padding, truncation, loader batches, errors."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import dump_yaml, from_dict, to_dict
from pipeline.events import EventFile, JaggedGroup, open_events, write_events
from pipeline.features import (
    FeatureConfig,
    FeatureStats,
    InputGroupConfig,
    VariableConfig,
    build_inputs,
    fit_stats,
    input_spec,
    sources,
    validate,
)
from pipeline.jet_features import JETCLASS_SETS, jetclass_features, read_block
from pipeline.loader import Loader
from simulation.jets.config import JetsConfig
from simulation.jets.simulate import PARTICLE_FIELDS, simulate

N_JETS = 40
EMPTY_JET = 5  # this jet's particles are removed in the fixture file


def _drop_particles(particles: JaggedGroup, jet: int) -> JaggedGroup:
    """The same lists with jet ``jet`` emptied."""
    off = particles.offsets
    keep = np.ones(off[-1], bool)
    keep[off[jet] : off[jet + 1]] = False
    counts = np.diff(off)
    counts[jet] = 0
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return JaggedGroup(offsets, {k: v[keep] for k, v in particles.content.items()})


def _write(path: Path, drop_fields: tuple[str, ...] = ()) -> Path:
    sample = simulate(JetsConfig(), N_JETS, seed=7)
    part = _drop_particles(sample.particles, EMPTY_JET)
    part = JaggedGroup(
        part.offsets, {k: v for k, v in part.content.items() if k not in drop_fields}
    )
    arrays = dict(sample.arrays)
    arrays["jet/jet_nparticles"] = np.diff(part.offsets).astype(arrays["jet/jet_nparticles"].dtype)
    return write_events(path, arrays, {"kind": "jets"}, jagged={"part": part})


@pytest.fixture(scope="module")
def jets_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("jets") / "train.h5")


@pytest.fixture
def jfile(jets_path: Path) -> EventFile:
    with open_events(jets_path) as f:
        yield f


def _arrays(cfg: FeatureConfig, f: EventFile, sel: slice = slice(None)) -> dict[str, np.ndarray]:
    raw = {p: f.read(p, sel) for p in sources(cfg)}
    raw.update(read_block(tuple(g for g in cfg.groups if g.layout == "jagged"), f, sel))
    return raw


def _build(cfg: FeatureConfig, f: EventFile) -> dict[str, np.ndarray]:
    return build_inputs(cfg, FeatureStats(), _arrays(cfg, f))


def _clip(x: float, lo: float = -5.0, hi: float = 5.0) -> float:
    return min(max(x, lo), hi)


def test_full_features_match_part_formulas(jfile: EventFile) -> None:
    cfg = jetclass_features("full")
    out = _build(cfg, jfile)
    assert out["particles"].shape == (N_JETS, 128, 17)
    assert out["vectors"].shape == (N_JETS, 128, 4)
    event, slot = 3, 2
    offsets, content = jfile.read_jagged("part")
    row = {k: float(v[offsets[event] + slot]) for k, v in content.items()}
    jet_pt = float(jfile.read("jet/jet_pt")[event])
    jet_e = float(jfile.read("jet/jet_energy")[event])
    pt = math.hypot(row["part_px"], row["part_py"])
    expected = [
        _clip((math.log(pt) - 1.7) * 0.7),
        _clip((math.log(row["part_energy"]) - 2.0) * 0.7),
        _clip((math.log(pt / jet_pt) + 4.7) * 0.7),
        _clip((math.log(row["part_energy"] / jet_e) + 4.7) * 0.7),
        _clip((math.hypot(row["part_deta"], row["part_dphi"]) - 0.2) * 4.0),
        _clip(row["part_charge"]),
        *(
            _clip(row[k])
            for k in (
                "part_isChargedHadron",
                "part_isNeutralHadron",
                "part_isPhoton",
                "part_isElectron",
                "part_isMuon",
            )
        ),
        _clip(math.tanh(row["part_d0val"])),
        _clip(row["part_d0err"], 0.0, 1.0),
        _clip(math.tanh(row["part_dzval"])),
        _clip(row["part_dzerr"], 0.0, 1.0),
        _clip(row["part_deta"]),
        _clip(row["part_dphi"]),
    ]
    np.testing.assert_allclose(out["particles"][event, slot], expected, rtol=1e-5, atol=1e-5)
    vec = [row[k] for k in ("part_px", "part_py", "part_pz", "part_energy")]
    np.testing.assert_allclose(out["vectors"][event, slot], vec, rtol=1e-6)
    np.testing.assert_array_equal(out["particles_mask"], out["vectors_mask"])


def test_presets_order_and_sizes(jfile: EventFile) -> None:
    assert len(JETCLASS_SETS["full"]) == 17
    for kind, size in (("full", 17), ("kinpid", 13), ("kin", 7)):
        cfg = jetclass_features(kind, length=64)
        assert input_spec(cfg, jfile) == {"particles": (64, size), "vectors": (64, 4)}
    names = [v.name for v in jetclass_features("kin").groups[0].variables]
    assert names == [*JETCLASS_SETS["full"][:5], "part_deta", "part_dphi"]
    names = [v.name for v in jetclass_features("kinpid").groups[0].variables]
    assert names == [*JETCLASS_SETS["full"][:11], "part_deta", "part_dphi"]
    with pytest.raises(ValueError, match="kind"):
        jetclass_features("nope")  # type: ignore[arg-type]


def test_padding_mask_from_offsets_and_empty_jet(jfile: EventFile) -> None:
    out = _build(jetclass_features("full"), jfile)
    counts = np.diff(jfile.read_jagged("part", ["part_px"])[0])
    assert counts[EMPTY_JET] == 0
    mask = out["particles_mask"]
    assert mask.dtype == bool and mask.shape == (N_JETS, 128)
    np.testing.assert_array_equal(mask.sum(axis=1), np.minimum(counts, 128))
    assert mask[:, 0].sum() == N_JETS - 1  # real particles first, then padding
    np.testing.assert_array_equal(mask, np.arange(128) < np.minimum(counts, 128)[:, None])
    assert not mask[EMPTY_JET].any()
    for key in ("particles", "vectors"):
        assert np.isfinite(out[key]).all()
        assert (out[key][~mask] == 0).all()
    assert (out["particles"][EMPTY_JET] == 0).all()


def test_truncation_keeps_leading_particles(jfile: EventFile) -> None:
    full = _build(jetclass_features("full", length=128), jfile)
    short = _build(jetclass_features("full", length=8), jfile)
    assert short["particles"].shape == (N_JETS, 8, 17)
    np.testing.assert_array_equal(short["particles"], full["particles"][:, :8])
    np.testing.assert_array_equal(short["particles_mask"], full["particles_mask"][:, :8])
    np.testing.assert_array_equal(short["vectors"], full["vectors"][:, :8])


def test_nonfinite_names_variable_and_event(jfile: EventFile) -> None:
    cfg = jetclass_features("full")
    raw = _arrays(cfg, jfile)
    offsets = raw["jagged/part/offsets"]
    energy = raw["jagged/part/part_energy"].copy()
    energy[offsets[7] + 1] = 0.0  # ln 0 in part_e_log on a real particle
    raw["jagged/part/part_energy"] = energy
    with pytest.raises(ValueError, match=r"part_e_log.*event index 17"):
        build_inputs(cfg, FeatureStats(), raw, event_index=np.arange(10, 10 + N_JETS))
    raw = _arrays(cfg, jfile)
    deta = raw["jagged/part/part_deta"].copy()
    deta[offsets[2]] = np.nan
    raw["jagged/part/part_deta"] = deta
    with pytest.raises(ValueError, match=r"part_deltaR.*event 2"):
        build_inputs(cfg, FeatureStats(), raw)


def test_missing_field_names_field_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "nod0.h5", drop_fields=("part_d0val",))
    with open_events(path) as f:
        with pytest.raises(ValueError, match=r"'part_d0val'.*nod0\.h5"):
            validate(jetclass_features("full"), f)
        validate(jetclass_features("kinpid"), f)  # does not need it


def test_config_errors() -> None:
    v = (VariableConfig(name="pt", source="part_pt"),)
    with pytest.raises(ValueError, match="source_group"):
        validate(FeatureConfig((InputGroupConfig(name="p", layout="jagged", variables=v),)))
    with pytest.raises(ValueError, match="source_group"):
        validate(FeatureConfig((InputGroupConfig(name="p", layout="set", source_group="part"),)))


def test_fit_stats_over_real_particles(jfile: EventFile) -> None:
    var = VariableConfig(name="pt_log", source="part_pt_log", standardize=True)
    group = InputGroupConfig(
        name="p", layout="jagged", variables=(var,), source_group="part", length=16
    )
    cfg = FeatureConfig((group,))
    stats = fit_stats(cfg, jfile, ("label",))
    offsets, content = jfile.read_jagged("part", ["part_px", "part_py"])
    logs = [
        np.log(np.hypot(content["part_px"][a:b], content["part_py"][a:b]))[:16]
        for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ]
    ref = np.concatenate(logs)
    m = stats.variables["p/pt_log"]
    assert m.count == ref.size
    assert m.mean == pytest.approx(ref.mean(), rel=1e-5)
    assert m.std == pytest.approx(ref.std(), rel=1e-4)
    out = build_inputs(cfg, stats, _arrays(cfg, jfile))
    real = out["p"][..., 0][out["p_mask"]]
    assert real.mean() == pytest.approx(0.0, abs=1e-4)
    assert real.std() == pytest.approx(1.0, rel=1e-3)


def _loader(path: Path, **kw: object) -> Loader:
    args: dict[str, object] = {
        "batch_size": 16,
        "shuffle": True,
        "seed": 3,
        "prefetch": 0,
        "shuffle_block": 16,
        "observers": ("jet/jet_pt",),
    }
    args.update(kw)
    return Loader(path, jetclass_features("full"), FeatureStats(), ("label",), **args)  # type: ignore[arg-type]


def test_loader_batches(jets_path: Path, jfile: EventFile) -> None:
    with _loader(jets_path) as loader:
        assert loader.input_spec == {"particles": (128, 17), "vectors": (128, 4)}
        batches = list(loader)
    assert len(batches) == 3  # 40 events in batches of 16, the last padded
    for b in batches:
        assert b["particles"].shape == (16, 128, 17) and b["particles"].dtype == np.float32
        assert b["vectors"].shape == (16, 128, 4) and b["vectors"].dtype == np.float32
        assert b["particles_mask"].shape == (16, 128) and b["particles_mask"].dtype == bool
        assert b["target"].shape == (16, 1)
        assert {"valid", "index", "observer/jet_pt", "vectors_mask"} <= set(b)
    index = np.concatenate([b["index"] for b in batches])
    assert sorted(index[index >= 0]) == list(range(N_JETS))
    last = batches[-1]
    assert last["valid"][8:].sum() == 0 and (last["index"][8:] == -1).all()
    assert not last["particles_mask"][8:].any()
    # each event's inputs equal the unshuffled build of the whole file
    ref = _build(jetclass_features("full"), jfile)
    labels = jfile.read("truth/label")
    for b in batches:
        real = b["index"] >= 0
        idx = b["index"][real]
        np.testing.assert_array_equal(b["particles"][real], ref["particles"][idx])
        np.testing.assert_array_equal(b["vectors"][real], ref["vectors"][idx])
        np.testing.assert_array_equal(b["particles_mask"][real], ref["particles_mask"][idx])
        np.testing.assert_array_equal(b["target"][real, 0], labels[idx])


def _same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_loader_deterministic_and_cache(jets_path: Path) -> None:
    with _loader(jets_path) as a, _loader(jets_path, prefetch=2) as b:
        first = list(a.epoch(1))
        _same(first, list(b.epoch(1)))
        assert not np.array_equal(first[0]["index"], list(a.epoch(2))[0]["index"])
    with _loader(jets_path, cache=True) as c, _loader(jets_path) as d:
        for e in (0, 1, 0):
            _same(list(c.epoch(e)), list(d.epoch(e)))


def test_variable_config_center_scale_on_set_group() -> None:
    """center/scale also apply to the existing layouts (after standardisation, before clip)."""
    var = VariableConfig(name="x", source="s/x", center=1.0, scale=2.0, clip=(-3.0, 3.0))
    cfg = FeatureConfig((InputGroupConfig(name="g", layout="set", variables=(var,)),))
    x = np.array([[0.0, 1.0, 2.5, 9.0]], np.float32)
    out = build_inputs(cfg, FeatureStats(), {"s/x": x})
    np.testing.assert_allclose(out["g"][0, :, 0], [-2.0, 0.0, 3.0, 3.0])


def test_preset_is_plain_config() -> None:
    """The presets are ordinary configs, so a YAML can spell them out field by field."""
    cfg = jetclass_features("kin", length=32)
    g = cfg.groups[0]
    assert g.layout == "jagged" and g.source_group == "part" and g.length == 32
    d = dataclasses.asdict(g.variables[0])
    assert d["source"] == "part_pt_log" and d["center"] == 1.7 and d["scale"] == 0.7
    assert d["clip"] == (-5.0, 5.0) and d["transform"] == "identity"
    assert set(JETCLASS_SETS["full"]) <= {*PARTICLE_FIELDS, "part_pt_log", "part_e_log",
                                          "part_logptrel", "part_logerel", "part_deltaR",
                                          "part_d0", "part_dz"}  # fmt: skip


def test_preset_roundtrips_through_config_dicts() -> None:
    """An experiment YAML can spell the preset out: dict -> FeatureConfig gives it back."""
    cfg = jetclass_features("full")
    assert from_dict(FeatureConfig, to_dict(cfg)) == cfg
    assert "source_group: part" in dump_yaml(cfg)


def test_trimming_crops_to_bucket_without_losing_particles(jets_path: Path) -> None:
    buckets = (16, 32, 64, 96)
    with _loader(jets_path, trim_buckets=buckets) as trimmed, _loader(jets_path) as full:
        pairs = list(zip(trimmed.epoch(0), full.epoch(0), strict=True))
    lengths = set()
    for t, f in pairs:
        longest = int(f["particles_mask"].sum(axis=1).max())
        length = t["particles"].shape[1]
        lengths.add(length)
        # the smallest bucket that holds the longest jet of the batch (or 128 beyond the last)
        assert length == next((b for b in buckets if b >= longest), 128)
        for key in ("particles", "vectors", "particles_mask", "vectors_mask"):
            assert t[key].shape[1] == length
            np.testing.assert_array_equal(t[key], f[key][:, :length])
            assert not f[key][:, length:].any()  # only padding was cut
        np.testing.assert_array_equal(t["index"], f["index"])
    assert min(lengths) < 128  # most batches of toy jets are shorter than the padded length


def test_trim_buckets_must_increase() -> None:
    from pipeline.loader import LoaderConfig

    with pytest.raises(ValueError, match="trim_buckets"):
        LoaderConfig(trim_buckets=(64, 32))
    with pytest.raises(ValueError, match="trim_buckets"):
        LoaderConfig(trim_buckets=(0, 32))


def test_trim_quantile_drops_only_the_softest_particles(jets_path: Path) -> None:
    with (
        _loader(jets_path, trim_buckets=(8, 16, 32), trim_quantile=0.5) as q,
        _loader(jets_path) as full,
    ):
        for t, f in zip(q.epoch(0), full.epoch(0), strict=True):
            n = f["particles_mask"].sum(axis=1)
            length = t["particles"].shape[1]
            assert length == next(
                (b for b in (8, 16, 32) if b >= np.ceil(np.quantile(n, 0.5))), 128
            )
            # leading (hardest) particles kept, in order; longer jets lose their tails
            np.testing.assert_array_equal(t["particles"], f["particles"][:, :length])
            np.testing.assert_array_equal(t["particles_mask"].sum(axis=1), np.minimum(n, length))
    with pytest.raises(ValueError, match="trim_quantile"):
        _loader(jets_path, trim_quantile=0.0)
