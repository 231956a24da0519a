"""The tagging analysis end to end through analyze(), on synthetic classification predictions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from analysis import classification as cm
from analysis.report import AnalysisConfig, PredictionsFileError, analyze

CLASSES = ["QCD", "Hbb", "Hcc", "Wqq", "Zqq", "Tbqq"]
# Logit shift of the true class: Hbb easiest, Zqq hardest (no class separates perfectly).
SEPARATION = (0.0, 2.0, 1.2, 1.0, 0.6, 1.5)
N = 12_000


def make_arrays(n: int = N, seed: int = 21) -> dict[str, np.ndarray]:
    """Softmax of Gaussian logits with the true class shifted up by SEPARATION[label]."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(0.0, 1.0, (n, len(CLASSES)))
    logits[np.arange(n), labels] += np.asarray(SEPARATION)[labels] + 1.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return {
        "prediction/probs": probs.astype(np.float32),
        "truth/label": labels.astype(np.int64),
        "observer/jet_pt": rng.uniform(500.0, 1000.0, n).astype(np.float32),
    }


def write(path: Path, arrays: dict[str, np.ndarray], task: str | None = "classification") -> Path:
    with h5py.File(path, "w") as f:
        f.attrs["kind"] = "predictions"
        f.attrs["config_hash"] = "cls123"
        f.attrs["class_names"] = json.dumps(CLASSES)
        if task is not None:
            f.attrs["task"] = task
        for name, arr in arrays.items():
            f.create_dataset(name, data=arr)
    return path


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory):
    pred = write(tmp_path_factory.mktemp("cls") / "predictions.h5", make_arrays())
    out = tmp_path_factory.mktemp("cls_analysis")
    return analyze(pred, AnalysisConfig(), out), out


def test_outputs_written(result) -> None:
    res, out = result
    names = {"roc_curves.png", "score_distributions.png", "confusion_matrix.png"}
    assert {p.name for p in res.figures} == names
    for png in res.figures:
        assert png.parent == out and png.stat().st_size > 10_000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["metrics"] == pytest.approx(res.metrics)
    assert payload["attrs"]["config_hash"] == "cls123"
    assert payload["config"]["background_class"] == "QCD"
    assert (out / "classification_table.md").read_text() == res.table_markdown
    assert not list(out.glob(".*tmp"))
    assert res.overall is None and res.energy_bins is None


def test_metric_names_and_values(result) -> None:
    m = result[0].metrics
    assert m["test/n_events"] == N
    for c in CLASSES[1:]:
        for name in (f"auc_{c}_vs_QCD", f"auc_{c}_vs_QCD_err", f"rejection50_{c}",
                     f"rejection30_{c}", f"rejection50_{c}_err", f"n_events_{c}"):  # fmt: skip
            assert f"test/{name}" in m, name
    assert all(re.fullmatch(r"[A-Za-z0-9_./-]+", k) for k in m)
    assert all(np.isfinite(v) for v in m.values())
    arrays = make_arrays()
    probs, labels = arrays["prediction/probs"], arrays["truth/label"]
    assert m["test/accuracy"] == pytest.approx(cm.accuracy(probs, labels))
    assert m["test/auc_macro"] == pytest.approx(cm.macro_auc(probs, labels))
    assert 0.5 < m["test/accuracy"] < 1.0
    # ordering follows the injected separation: Hbb > Tbqq > Hcc > Wqq > Zqq
    aucs = [m[f"test/auc_{c}_vs_QCD"] for c in ("Hbb", "Tbqq", "Hcc", "Wqq", "Zqq")]
    assert aucs == sorted(aucs, reverse=True)
    for c in CLASSES[1:]:
        assert m[f"test/rejection30_{c}"] >= m[f"test/rejection50_{c}"] > 1.0
    assert "| Hbb |" in result[0].table_markdown


def test_dispatch_on_probs_dataset_and_extra_efficiency(tmp_path: Path) -> None:
    pred = write(tmp_path / "p.h5", make_arrays(3000), task=None)
    cfg = AnalysisConfig(signal_efficiencies=(0.5, 0.3, 0.99), prefix="val")
    m = analyze(pred, cfg, tmp_path / "out").metrics
    assert "val/rejection99_Hbb" in m and "val/rejection50_Zqq" in m
    assert m["val/rejection99_Hbb"] < m["val/rejection50_Hbb"]


def test_perfect_tagger_reports_lower_limit(tmp_path: Path) -> None:
    labels = np.repeat(np.arange(len(CLASSES)), 500)
    probs = np.eye(len(CLASSES), dtype=np.float32)[labels] * 0.9 + 0.1 / len(CLASSES)
    pred = write(tmp_path / "p.h5", {"prediction/probs": probs, "truth/label": labels})
    res = analyze(pred, AnalysisConfig(), tmp_path / "out")
    m = res.metrics
    assert m["test/accuracy"] == 1.0 and m["test/auc_macro"] == 1.0
    assert m["test/rejection50_Hbb"] == 500.0 and m["test/rejection50_Hbb_is_lower_limit"] == 1.0
    assert "test/rejection50_Hbb_err" not in m
    assert "> 500 (limit)" in res.table_markdown


def test_class_without_events_has_only_its_count(tmp_path: Path) -> None:
    arrays = make_arrays(3000)
    keep = arrays["truth/label"] != CLASSES.index("Wqq")
    arrays = {k: v[keep] for k, v in arrays.items()}
    m = analyze(write(tmp_path / "p.h5", arrays), AnalysisConfig(), tmp_path / "out").metrics
    assert m["test/n_events_Wqq"] == 0.0
    assert not [k for k in m if "Wqq" in k and "n_events" not in k]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda a: a.pop("prediction/probs"), r"'prediction/probs' is missing"),
        (lambda a: a.pop("truth/label"), r"'truth/label' is missing"),
        (lambda a: a["prediction/probs"].__setitem__((3, 1), np.nan), r"'prediction/probs'.*NaN"),
        (lambda a: a["prediction/probs"].__imul__(1.01), r"'prediction/probs'.*summing to 1"),
        (lambda a: a["truth/label"].__setitem__(0, 6), r"'truth/label'.*outside"),
    ],
)
def test_bad_files_name_the_dataset(tmp_path: Path, mutate, match: str) -> None:
    arrays = make_arrays(500)
    mutate(arrays)
    pred = write(tmp_path / "bad.h5", arrays)
    with pytest.raises(PredictionsFileError, match=match) as info:
        analyze(pred, AnalysisConfig(), tmp_path / "out")
    assert str(pred) in str(info.value)


def test_bad_class_names_and_background(tmp_path: Path) -> None:
    pred = write(tmp_path / "p.h5", make_arrays(500))
    with pytest.raises(ValueError, match="background class 'Zjets'"):
        analyze(pred, AnalysisConfig(background_class="Zjets"), tmp_path / "out")
    with pytest.raises(ValueError, match="outside"):
        analyze(pred, AnalysisConfig(signal_efficiencies=(0.0,)), tmp_path / "out")
    with h5py.File(pred, "a") as f:
        f.attrs["class_names"] = json.dumps(CLASSES[:3])
    with pytest.raises(PredictionsFileError, match="class_names"):
        analyze(pred, AnalysisConfig(), tmp_path / "out")
