"""A suite of two jet taggers through `reco run`: shared data, two runs, one comparison table."""

from __future__ import annotations

import json

import pytest
import yaml
from test_run_chain import ROOT, reco

pytestmark = pytest.mark.e2e

SUITE = {
    "name": "mini",
    "problem": "jets",
    "simulation": {"kind": "jets", "classes": ["QCD", "Tbqq"]},
    "features": {
        "groups": [
            {
                "name": "particles",
                "layout": "jagged",
                "source_group": "part",
                "length": 32,
                "variables": [
                    {"name": "part_deta", "source": "part_deta", "transform": "identity"},
                    {"name": "part_dphi", "source": "part_dphi", "transform": "identity"},
                ],
            },
            {
                "name": "vectors",
                "layout": "jagged",
                "source_group": "part",
                "length": 32,
                "variables": [
                    {"name": v, "source": v, "transform": "identity"}
                    for v in ("part_px", "part_py", "part_pz", "part_energy")
                ],
            },
        ]
    },
    "task": {"targets": ["label"], "loss": "cross_entropy", "classes": ["QCD", "Tbqq"]},
    "loader": {"trim_buckets": [16, 32]},
    "model": {"name": "pfn", "phi_widths": [8], "f_widths": [8]},
    "variants": [
        {"name": "pfn"},
        {
            "name": "part",
            "model": {
                "name": "part",
                "num_layers": 1,
                "num_heads": 2,
                "embed_dims": [16, 16],
                "pair_embed_dims": [8],
            },
        },
    ],
}


@pytest.mark.slow  # minutes on 2 cores: CI runs it in its second pass (-m slow)
def test_suite_runs_every_variant_on_shared_data_and_compares(tmp_path):
    from mlflow.tracking import MlflowClient

    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    proc = reco("run", str(path), "--smoke", cwd=tmp_path)
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert [p.name.split("-2")[0] for p in runs] == ["mini-part", "mini-pfn"]
    data = {json.loads((r / "run.json").read_text())["data"]["train"] for r in runs}
    assert len(data) == 1  # one shared dataset
    assert len(list((tmp_path / "data").iterdir())) == 1
    (table,) = (tmp_path / "runs").glob("mini-comparison-*.md")
    text = table.read_text()
    for name, model in (("mini-pfn", "pfn"), ("mini-part", "part")):
        assert f"| {name} | {model} |" in text
    assert "Rej50 Tbqq" in text and "| mini-pfn |" in proc.stdout
    info = json.loads((runs[1] / "run.json").read_text())
    assert info["train"]["n_params"] > 0 and info["train"]["epochs_run"] == 2
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    found = client.search_runs(
        [client.get_experiment_by_name("jets").experiment_id], "tags.suite = 'mini'"
    )
    assert len(found) == 2
    out = reco("compare", *map(str, runs), "--out", str(tmp_path / "t.md"), cwd=tmp_path)
    assert "| mini-part | part |" in out.stdout
    assert (tmp_path / "t.md").read_text() == out.stdout.rstrip("\n") + "\n"


def test_suite_with_a_bad_variant_fails_before_any_work(tmp_path):
    bad = {**SUITE, "variants": [{"name": "a"}, {"name": "b", "model": {"name": "nope"}}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = reco("run", str(path), cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "variant b" in proc.stderr and "nope" in proc.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow  # minutes on 2 cores: CI runs it in its second pass (-m slow)
def test_airshower_comparison_suite_with_the_classical_baseline(tmp_path):
    """The shipped comparison suite, shrunk: classical, CNN and transformer rows, per-bin tables
    and the plot, all three runs on the same test showers."""
    config = ROOT / "configs" / "experiments" / "airshower_comparison.yaml"
    names = ("classical_sd", "cnn", "transformer")  # not the other seeds of the CNN
    reco("run", str(config), "--smoke", *(f"--variant={n}" for n in names), cwd=tmp_path)
    runs = {p.name.split("-2")[0]: p for p in (tmp_path / "runs").iterdir() if p.is_dir()}
    assert sorted(runs) == [f"airshower_comparison-{n}" for n in names]
    tests = {json.loads((r / "run.json").read_text())["data"]["test"] for r in runs.values()}
    assert len(tests) == 1
    (table,) = (tmp_path / "runs").glob("airshower_comparison-comparison-*.md")
    text = table.read_text()
    for name, model in zip(names, ("classical_sd", "cnn", "set_transformer"), strict=True):
        assert f"| airshower_comparison-{name} | {model} |" in text
    assert "| log10(E/eV) | classical_sd | cnn | transformer |" in text
    assert "p/Fe merit factor per bin" in text
    assert table.with_suffix(".png").stat().st_size > 10_000
