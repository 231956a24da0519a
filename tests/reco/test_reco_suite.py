"""Suite files: variants merge over the base, share the data, and errors name file and variant."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError
from reco import experiment, suite
from reco.compare import RunSummary, render_markdown

BASE = {
    "name": "abl",
    "problem": "jets",
    "simulation": {"kind": "jets", "n_train": 64, "n_val": 32, "n_test": 32},
    "task": {
        "targets": ["label"],
        "loss": "cross_entropy",
        "classes": ["QCD", "Hbb", "Hcc", "Wqq", "Zqq", "Tbqq"],
    },
    "model": {"name": "pfn", "phi_widths": [16, 16]},
    "train": {"epochs": 3, "lr": 1.0e-3},
    # the particle inputs of the shipped PFN experiment (the models' batch keys are checked)
    "features": yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "configs/experiments/jets_pfn.yaml").read_text()
    )["features"],
}


def _write(tmp_path: Path, variants: object, base: dict | None = None) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({**(base or BASE), "variants": variants}))
    return path


def test_variants_merge_and_replace_the_model(tmp_path):
    path = _write(
        tmp_path,
        [
            {"name": "pfn"},
            {"name": "part", "model": {"name": "part", "num_layers": 1}, "train": {"lr": 3.0e-4}},
        ],
    )
    assert suite.is_suite(path)
    cfgs = suite.load_suite(path)
    assert list(cfgs) == ["pfn", "part"]
    pfn, part = cfgs["pfn"], cfgs["part"]
    assert (pfn.name, part.name) == ("abl-pfn", "abl-part")
    assert pfn.suite == part.suite == "abl"
    assert pfn.model.phi_widths == (16, 16)
    assert part.model.name == "part" and part.model.num_layers == 1  # replaced, no pfn keys
    assert part.train.lr == 3.0e-4 and part.train.epochs == 3  # merged key by key
    assert experiment.data_dir(pfn) == experiment.data_dir(part)  # one shared dataset
    assert "suite" in experiment.run_tags(pfn) and experiment.run_tags(pfn)["suite"] == "abl"


def test_overrides_and_smoke_apply_to_every_variant(tmp_path):
    path = _write(tmp_path, [{"name": "a"}, {"name": "b", "train": {"epochs": 7}}])
    cfgs = suite.load_suite(path, overrides=["train.lr=0.01"], smoke=True)
    assert {c.train.lr for c in cfgs.values()} == {0.01}
    assert {c.train.epochs for c in cfgs.values()} == {2}  # the smoke overlay wins
    assert list(suite.load_suite(path, only=["b"])) == ["b"]


def test_load_config_needs_a_variant_for_a_suite(tmp_path):
    path = _write(tmp_path, [{"name": "a"}, {"name": "b"}])
    with pytest.raises(ConfigError, match=r"suite of variants \['a', 'b'\].*--variant"):
        experiment.load_config(path)
    with pytest.raises(ConfigError, match="no variant 'c'"):
        experiment.load_config(path, variant="c")
    assert experiment.load_config(path, variant="b").name == "abl-b"
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match="no variants"):
        experiment.load_config(plain, variant="a")


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([], "non-empty list"),
        ({"a": {}}, "non-empty list"),
        (["pfn"], r"variants\[0\] must be a mapping"),
        ([{"model": {"name": "pfn"}}], r"variants\[0\]: needs a 'name'"),
        ([{"name": "a b"}], "needs a 'name'"),
        ([{"name": "a"}, {"name": "a"}], "used twice"),
        ([{"name": "a", "suite": "x"}], "may not set"),
    ],
)
def test_bad_variant_lists(tmp_path, variants, message):
    with pytest.raises(ConfigError, match=message):
        suite.load_suite(_write(tmp_path, variants))


def test_errors_name_the_variant_and_key(tmp_path):
    path = _write(tmp_path, [{"name": "ok"}, {"name": "bad", "train": {"lrr": 1.0}}])
    with pytest.raises(ConfigError, match=r"\[variant bad\].*'train.lrr'"):
        suite.load_suite(path)
    with pytest.raises(ConfigError, match="no variant"):
        suite.load_suite(path, only=["nope"])


def _summary(name: str, model: str, metrics: dict[str, float]) -> RunSummary:
    return RunSummary(
        Path(name), name, model, "jets", 1234, 90.0, 3, metrics, ("QCD", "Tbqq", "Hbb")
    )


def test_compare_table_classification_and_regression():
    rows = [
        _summary("a", "pfn", {"test/accuracy": 0.71, "test/auc_macro": 0.9,
                              "test/rejection50_Hbb": 120.0,
                              "test/rejection50_Hbb_is_lower_limit": 0.0}),
        _summary("b", "part", {"test/accuracy": 0.75, "test/auc_macro": 0.93,
                               "test/rejection50_Hbb": 4000.0,
                               "test/rejection50_Hbb_is_lower_limit": 1.0}),
    ]  # fmt: skip
    rows[0].metrics["test/rejection50_Tbqq"] = 30.0
    table = render_markdown(rows)
    head = "| accuracy | macro AUC | Rej50 Tbqq | Rej50 Hbb |"  # classes in label order
    assert "| run | model | params | train [min] | epochs " + head in table
    assert "| a | pfn | 1,234 | 1.5 | 3 | 0.7100 | 0.9000 | 30 | 120 |" in table
    assert "| b | part | 1,234 | 1.5 | 3 | 0.7500 | 0.9300 | – | > 4000 |" in table
    reg = render_markdown([_summary("c", "cnn", {"test/energy_resolution_68": 0.1,
                                                 "test/energy_bias": -0.01})])  # fmt: skip
    assert "energy resolution 68%" in reg and "0.1000" in reg and "-0.0100" in reg
    assert "merit" not in reg
    comp = render_markdown([_summary("d", "cnn", {"test/xmax_resolution_68": 30.0,
                                                  "test/merit_factor_xmax": 1.234})])  # fmt: skip
    assert "| xmax resolution 68% | xmax bias | p/Fe merit (xmax) |" in comp and "| 1.23 |" in comp


def test_compare_names_an_unanalysed_run(tmp_path):
    from reco.compare import compare_runs

    with pytest.raises(FileNotFoundError, match="not a run folder"):
        compare_runs([tmp_path])
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="not analysed yet"):
        compare_runs([tmp_path])
    with pytest.raises(ValueError, match="no run folders"):
        compare_runs([])


def test_baselines_run_on_the_first_variants_data_under_the_suite_name(tmp_path):
    base = {**BASE, "problem": "airshower", "simulation": {"kind": "airshower"}, "task": {}}
    base["model"] = {"name": "cnn"}
    base["baselines"] = ["classical_sd"]
    path = _write(tmp_path, [{"name": "a"}, {"name": "b", "seed": 3}], base)
    assert suite.suite_baselines(path) == ("classical_sd",)
    (name, cfg), = suite.load_baselines(path, smoke=True).items()  # fmt: skip
    first = suite.load_suite(path, smoke=True)["a"]
    assert name == "classical_sd" and cfg.name == cfg.suite == "abl"
    assert experiment.data_dir(cfg) == experiment.data_dir(first)
    assert list(suite.load_suite(path, only=["classical_sd"])) == []  # a known name
    assert suite.load_baselines(path, only=["b"]) == {}
    assert suite.suite_baselines(_write(tmp_path, [{"name": "a"}])) == ()


@pytest.mark.parametrize(
    ("baselines", "variants", "message"),
    [
        ("classical_sd", [{"name": "a"}], "must be a list of names"),
        (["hough"], [{"name": "a"}], r"distinct names from \['classical_sd'\]"),
        (["classical_sd", "classical_sd"], [{"name": "a"}], "distinct names"),
        (["classical_sd"], [{"name": "classical_sd"}], "names a baseline"),
        (["classical_sd"], [{"name": "a", "baselines": []}], "may not set"),
    ],
)
def test_bad_baselines(tmp_path, baselines, variants, message):
    path = _write(tmp_path, variants, {**BASE, "baselines": baselines})
    with pytest.raises(ConfigError, match=message):
        suite.load_baselines(path)
        suite.load_suite(path)


def _binned_run(name: str, scale: float, merit: bool) -> RunSummary:
    metrics = {"test/energy_resolution_68": 0.1 * scale}
    for lo, hi in ((18.5, 19.0), (19.0, 19.5)):
        tail = f"lgE{lo:.2f}-{hi:.2f}"
        metrics |= {
            f"test/energy_resolution_68_{tail}": 0.12 * scale,
            f"test/energy_resolution_68_err_{tail}": 0.002,
            f"test/energy_bias_{tail}": -0.01,
            f"test/energy_bias_err_{tail}": 0.003,
            f"test/energy_bias_mean_{tail}": 0.5,  # other metrics of the bin are ignored
        }
        if merit:
            metrics |= {
                f"test/xmax_resolution_68_{tail}": 25.0,
                f"test/merit_factor_xmax_{tail}": 1.5,
                f"test/merit_factor_xmax_err_{tail}": 0.05,
            }
    if merit:
        metrics |= {"test/xmax_resolution_68_lgEabove19.50": 20.0,
                    "test/merit_factor_xmax_true_lgEabove19.50": 1.6}  # fmt: skip
    return RunSummary(Path(name), name, "cnn", "airshower", 10, 60.0, 2, metrics)


def test_compare_per_energy_bin_tables_and_plot(tmp_path):
    from reco import compare

    rows = [_binned_run("s-classical_sd", 1.0, False), _binned_run("s-cnn", 0.5, True)]
    assert compare.short_names(rows) == ["classical_sd", "cnn"]
    assert compare.short_names(rows[:1]) == ["s-classical_sd"]
    assert compare.binned(rows[1], "energy_resolution_68") == {
        (18.5, 19.0): (0.06, 0.002),
        (19.0, 19.5): (0.06, 0.002),
    }
    assert compare.binned(rows[1], "xmax_resolution_68")[(19.5, None)] == (
        20.0,
        pytest.approx(float("nan"), nan_ok=True),
    )
    text = compare.render_markdown(rows)
    assert "| log10(E/eV) | classical_sd | cnn |" in text
    assert "| 18.50-19.00 | 12.0 ± 0.2 (-1.0) | 6.0 ± 0.2 (-1.0) |" in text
    assert "| >= 19.50 | – | 20.0 ± nan |" not in text  # NaN errors print as a dash
    assert "| >= 19.50 | – | 20.0 ± – |" in text
    assert "| 19.00-19.50 | 1.50 ± 0.05 | – |" in text  # merit: cnn (Xmax), true Xmax
    assert "| >= 19.50 | – | 1.60 ± – |" in text  # the true-Xmax limit alone
    png = compare.plot_binned(rows, tmp_path / "cmp.png")
    assert png is not None and png.stat().st_size > 10_000
    flat = [RunSummary(Path("x"), "x", "cnn", "airshower", 1, 1.0, 1, {"test/energy_bias": 0.0})]
    assert compare.plot_binned(flat, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists() and compare.render_binned(flat) == ""
