"""Tagging metrics against closed forms and hand-made examples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from analysis import classification as cm

N = 200_000


def test_roc_hand_example_with_ties() -> None:
    eff_s, eff_b, thr = cm.roc_curve(np.array([0.9, 0.5]), np.array([0.5, 0.1]))
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.5, 0.1])
    np.testing.assert_array_equal(eff_s, [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(eff_b, [0.0, 0.0, 0.5, 1.0])
    # pairs: 0.9 beats both, 0.5 ties 0.5 (half a count) and beats 0.1 -> 3.5 / 4
    assert cm.auc(np.array([0.9, 0.5]), np.array([0.5, 0.1])) == 0.875


def test_roc_monotone_and_auc_is_its_trapezoid_area() -> None:
    rng = np.random.default_rng(1)
    sig = np.round(rng.normal(0.7, 1.0, 5000), 1)  # rounding makes many ties
    bkg = np.round(rng.normal(0.0, 1.0, 7000), 1)
    eff_s, eff_b, thr = cm.roc_curve(sig, bkg)
    assert (eff_s[0], eff_b[0], eff_s[-1], eff_b[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(eff_s) >= 0) and np.all(np.diff(eff_b) >= 0)
    assert np.all(np.diff(thr) < 0)
    assert eff_s.size == np.unique(np.r_[sig, bkg]).size + 1
    assert cm.auc(sig, bkg) == pytest.approx(np.trapezoid(eff_s, eff_b), abs=1e-12)


@pytest.mark.parametrize("d", [0.5, 1.0, 2.0])
def test_auc_of_two_gaussians(d: float) -> None:
    rng = np.random.default_rng(2)
    sig, bkg = rng.normal(d, 1.0, 20_000), rng.normal(0.0, 1.0, 20_000)
    expected = stats.norm.cdf(d / np.sqrt(2.0))
    a = cm.auc(sig, bkg)
    err = cm.auc_error(a, sig.size, bkg.size)
    assert 0.0 < err < 0.01
    assert a == pytest.approx(expected, abs=4.0 * err)


def test_auc_of_identical_distributions_is_one_half() -> None:
    rng = np.random.default_rng(3)
    sig, bkg = rng.uniform(size=30_000), rng.uniform(size=30_000)
    a = cm.auc(sig, bkg)
    assert a == pytest.approx(0.5, abs=4.0 * cm.auc_error(0.5, sig.size, bkg.size))
    assert cm.auc(np.full(10, 0.3), np.full(7, 0.3)) == 0.5  # all tied: exactly 1/2


def test_perfect_separation() -> None:
    rng = np.random.default_rng(4)
    sig, bkg = rng.uniform(0.6, 1.0, 1000), rng.uniform(0.0, 0.4, 2500)
    assert cm.auc(sig, bkg) == 1.0
    assert cm.auc(bkg, sig) == 0.0
    assert cm.auc_error(1.0, sig.size, bkg.size) == 0.0
    eff_s, eff_b, _ = cm.roc_curve(sig, bkg)
    for target in (0.3, 0.5, 0.99, 1.0):
        r = cm.rejection(eff_s, eff_b, target, bkg.size)
        assert r.is_lower_limit and r.value == 2500.0 and np.isnan(r.err)
        assert np.isfinite(r.value)
    assert not cm.rejection(eff_s, eff_b, 1.0, bkg.size).eff_bkg > 0


def test_rejection_exponential_closed_form() -> None:
    # score ~ Exp(1) for signal, Exp(rate 2) for background: eps_B = eps_S^2 for every cut.
    rng = np.random.default_rng(5)
    sig, bkg = rng.exponential(1.0, N), rng.exponential(0.5, N)
    eff_s, eff_b, _ = cm.roc_curve(sig, bkg)
    r50, r30 = (cm.rejection(eff_s, eff_b, e, bkg.size) for e in (0.5, 0.3))
    assert r50.value == pytest.approx(4.0, rel=0.03)  # ~0.6% statistical
    assert r30.value == pytest.approx(1.0 / 0.09, rel=0.05)  # ~1% statistical
    assert not r50.is_lower_limit
    # binomial error on eps_B: sigma(R) / R = sqrt((1 - eps_B) / (eps_B n_B))
    assert r50.err / r50.value == pytest.approx(np.sqrt(0.75 / (0.25 * N)), rel=0.05)


def test_rejection_gaussian_closed_form() -> None:
    # signal N(2, 1), background N(0, 1): the 50% cut is at 2, eps_B = 1 - Phi(2) = 0.02275.
    rng = np.random.default_rng(6)
    sig, bkg = rng.normal(2.0, 1.0, N), rng.normal(0.0, 1.0, N)
    eff_s, eff_b, _ = cm.roc_curve(sig, bkg)
    r = cm.rejection(eff_s, eff_b, 0.5, bkg.size)
    expected = 1.0 / stats.norm.sf(2.0)  # 43.96
    assert r.value == pytest.approx(expected, rel=0.08)  # ~1.7% statistical
    assert r.value == pytest.approx(expected, abs=5.0 * np.hypot(r.err, 0.008 * expected))


def test_eff_bkg_interpolation_on_vertical_segments() -> None:
    eff_s = np.array([0.0, 0.5, 0.5, 1.0])
    eff_b = np.array([0.0, 0.2, 0.6, 1.0])
    assert cm.eff_bkg_at(eff_s, eff_b, 0.5) == pytest.approx(0.2)  # best cut reaching 50%
    assert cm.eff_bkg_at(eff_s, eff_b, 0.75) == pytest.approx(0.8)  # from (0.5, 0.6) to (1, 1)
    assert cm.eff_bkg_at(eff_s, eff_b, 0.25) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="outside"):
        cm.eff_bkg_at(eff_s, eff_b, 0.0)


def test_confusion_matrix_hand_example() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0, 2])
    m = cm.confusion_matrix(labels, pred, 4)
    np.testing.assert_allclose(m[:3], [[0.5, 0.5, 0, 0], [1 / 3, 2 / 3, 0, 0], [0, 0, 1, 0]])
    assert np.all(np.isnan(m[3]))  # class 3 has no events
    counts = cm.confusion_matrix(labels, pred, 4, normalize=False)
    assert counts.sum() == 6 and counts[1, 1] == 2


def test_accuracy_discriminant_and_macro_auc() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4], [0.0, 0.0, 1.0]])
    labels = np.array([0, 1, 2, 2])
    assert cm.accuracy(probs, labels) == 0.75
    np.testing.assert_allclose(cm.discriminant(probs, 1, 0), [0.2 / 0.9, 0.8 / 0.9, 1 / 6, 0.5])
    rng = np.random.default_rng(7)
    onehot = np.eye(3)[rng.integers(0, 3, 3000)]
    assert cm.macro_auc(onehot, np.argmax(onehot, axis=1)) == 1.0
    random = rng.dirichlet(np.ones(3), 30_000)
    assert cm.macro_auc(random, rng.integers(0, 3, 30_000)) == pytest.approx(0.5, abs=0.015)


def test_signal_vs_background_uses_the_two_classes_only() -> None:
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 3, 9000)
    probs = rng.dirichlet(np.ones(3), labels.size)
    probs[labels == 1] = [0.1, 0.8, 0.1]  # signal always above every background event
    probs[labels == 0] = [0.8, 0.1, 0.1]
    bp = cm.signal_vs_background(probs, labels, 1, 0, (0.5, 0.3), ("Hbb", "QCD"))
    assert (bp.n_sig, bp.n_bkg) == (np.sum(labels == 1), np.sum(labels == 0))
    assert bp.auc == 1.0  # class-2 events, randomly scored, are not in the problem
    assert [r.eff_sig for r in bp.rejections] == [0.5, 0.3]
    assert all(r.is_lower_limit and r.value == bp.n_bkg for r in bp.rejections)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        cm.auc(np.array([0.1, np.nan]), np.array([0.2]))
    with pytest.raises(ValueError, match="need signal and background"):
        cm.roc_curve(np.array([]), np.array([0.2]))
    with pytest.raises(ValueError, match="1-D"):
        cm.auc(np.ones((2, 2)), np.ones(2))


def test_roc_overlay_draws_every_run_per_signal_class(tmp_path) -> None:
    """One panel per signal class, one curve per run (a unit check of the comparison plot)."""
    from analysis.classification_plots import plot_roc_overlay

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 3000)
    runs = {}
    for name, sharpness in (("weak", 0.5), ("strong", 2.0)):
        logits = rng.normal(size=(labels.size, 3)) + sharpness * np.eye(3)[labels]
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        runs[name] = [
            cm.signal_vs_background(probs, labels, s, 0, (0.5,), (f"S{s}", "QCD")) for s in (1, 2)
        ]
    assert runs["strong"][0].auc > runs["weak"][0].auc
    path = plot_roc_overlay(runs, tmp_path / "roc.png")
    assert path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="no ROC curves"):
        plot_roc_overlay({}, tmp_path / "none.png")
