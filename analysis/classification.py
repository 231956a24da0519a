"""Performance of a jet tagger: accuracy, confusion matrix, ROC, AUC, background rejection (numpy).

Conventions
-----------
- ``probs`` has shape ``(n, K)`` (softmax probabilities, rows summing to 1) and ``labels`` shape
  ``(n,)`` (true class index in ``[0, K)``). Binary functions take the scores of the signal events
  ``(n_sig,)`` and of the background events ``(n_bkg,)``; a higher score means "more signal-like".
- A ROC curve is the list of (signal efficiency eps_S, background efficiency eps_B) of the cuts
  ``score >= t`` over every distinct score t, from (0, 0) to (1, 1). Tied scores move both
  efficiencies in one step (a diagonal segment), which is what the Mann-Whitney AUC with mid-ranks
  integrates: the AUC equals the trapezoidal area under the exact ROC.
- Per signal class s against the background class (QCD), the discriminant is the ParT paper's
  ``p_s / (p_s + p_QCD)`` (arXiv:2202.03772), evaluated on the events of classes s and QCD only.
- Background rejection is ``1 / eps_B`` at a fixed eps_S. Uncertainties are 1-sigma: binomial on
  eps_B for the rejection, Hanley-McNeil (1982) for the AUC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _as_1d(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of shape (n,), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: {int(np.sum(~np.isfinite(arr)))} non-finite scores")
    return arr


def _binary_inputs(sig: np.ndarray, bkg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, b = _as_1d(sig, "signal scores"), _as_1d(bkg, "background scores")
    if s.size == 0 or b.size == 0:
        raise ValueError(f"need signal and background events, got {s.size} and {b.size}")
    return s, b


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of events whose arg-max class, probs (n, K), equals the label (n,); NaN if n = 0."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    if labels.size == 0:
        return float("nan")
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def confusion_matrix(
    labels: np.ndarray, predicted: np.ndarray, n_classes: int, normalize: bool = True
) -> np.ndarray:
    """(K, K) matrix, row = true class, column = predicted class, from two (n,) int arrays.

    With ``normalize`` each row is divided by its number of events (rows sum to 1; the diagonal is
    the per-class efficiency); a class without events has a row of NaN. Otherwise counts (float).
    """
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
    if labels.shape != predicted.shape:
        raise ValueError(f"labels {labels.shape} and predicted {predicted.shape} differ in shape")
    counts = np.zeros((n_classes, n_classes), np.float64)
    np.add.at(counts, (labels, predicted), 1.0)
    if not normalize:
        return counts
    rows = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, rows, out=np.full_like(counts, np.nan), where=rows > 0)


def discriminant(probs: np.ndarray, signal: int, background: int) -> np.ndarray:
    """ParT's binary score p_s / (p_s + p_b), shape (n,), from probs (n, K); 0.5 where both are 0."""
    probs = np.asarray(probs, np.float64)
    ps, pb = probs[:, signal], probs[:, background]
    den = ps + pb
    return np.divide(ps, den, out=np.full_like(ps, 0.5), where=den > 0)


def roc_curve(sig: np.ndarray, bkg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC of the cuts ``score >= t``: (eff_sig, eff_bkg, thresholds), each shape (m + 1,).

    m is the number of distinct scores; the first point is (0, 0) at t = +inf, the last (1, 1).
    Both efficiencies are non-decreasing; thresholds decrease.
    """
    s, b = _binary_inputs(sig, bkg)
    scores = np.concatenate([s, b])
    is_sig = np.concatenate([np.ones(s.size), np.zeros(b.size)])
    order = np.argsort(-scores, kind="stable")
    scores, is_sig = scores[order], is_sig[order]
    ends = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # last index of each tie group
    tp = np.cumsum(is_sig)[ends]
    fp = (ends + 1) - tp
    return np.r_[0.0, tp / s.size], np.r_[0.0, fp / b.size], np.r_[np.inf, scores[ends]]


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x (n,), tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(x.size, np.float64)
    ranks[order] = np.repeat(first + 0.5 * (counts + 1.0), counts)
    return ranks


def auc(sig: np.ndarray, bkg: np.ndarray) -> float:
    """Area under the ROC, P(score_sig > score_bkg) + P(tie) / 2, by the Mann-Whitney U statistic.

    U = (sum of the mid-ranks of the signal) - n_s (n_s + 1) / 2 and AUC = U / (n_s n_b); mid-ranks
    give a tied pair half a count (the tie correction). 0.5 for identical distributions, 1 for a
    perfect separation. Exact, O(n log n).
    """
    s, b = _binary_inputs(sig, bkg)
    ranks = _midranks(np.concatenate([s, b]))
    u = float(np.sum(ranks[: s.size])) - 0.5 * s.size * (s.size + 1.0)
    return u / (float(s.size) * float(b.size))


def auc_error(a: float, n_sig: int, n_bkg: int) -> float:
    """1-sigma uncertainty of an AUC ``a`` from n_sig and n_bkg events (Hanley & McNeil 1982).

    Exponential-score approximation; 0 for a = 0 or 1, NaN without events.
    """
    if n_sig < 1 or n_bkg < 1:
        return float("nan")
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1 - a) + (n_sig - 1) * (q1 - a * a) + (n_bkg - 1) * (q2 - a * a)) / (n_sig * n_bkg)
    return float(np.sqrt(max(var, 0.0)))


@dataclass(frozen=True)
class Rejection:
    """Background rejection 1 / eps_B at a signal efficiency ``eff_sig`` (all fractions in [0, 1])."""

    eff_sig: float  # the requested signal efficiency
    eff_bkg: float  # interpolated background efficiency at eff_sig
    value: float  # 1 / eff_bkg, or n_bkg when it is a lower limit
    err: float  # 1-sigma binomial uncertainty of value; NaN for a lower limit
    is_lower_limit: bool  # fewer than one background event passes: value = n_bkg is a lower limit
    n_bkg: int  # background events the efficiency was measured on


def eff_bkg_at(eff_sig: np.ndarray, eff_bkg: np.ndarray, target: float) -> float:
    """eps_B at eps_S = ``target`` along the ROC (eff_sig, eff_bkg), each (m,), from :func:`roc_curve`.

    The ROC is followed as a path and interpolated linearly. Where eps_S stays constant over several
    points (cuts that only add background), the lowest eps_B is taken at that eps_S (the best cut
    reaching it) and the highest one starts the segment towards the next eps_S.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"signal efficiency {target} outside (0, 1]")
    xs, first = np.unique(eff_sig, return_index=True)
    last = np.r_[first[1:], eff_sig.size] - 1  # eff_sig is sorted, so each value is one block
    lo_b, hi_b = eff_bkg[first], eff_bkg[last]
    j = int(np.searchsorted(xs, target, side="left"))
    if np.isclose(xs[j], target, rtol=0.0, atol=1e-12):
        return float(lo_b[j])
    w = (target - xs[j - 1]) / (xs[j] - xs[j - 1])
    return float(hi_b[j - 1] + w * (lo_b[j] - hi_b[j - 1]))


def rejection(eff_sig: np.ndarray, eff_bkg: np.ndarray, target: float, n_bkg: int) -> Rejection:
    """Background rejection 1 / eps_B at eps_S = ``target`` on a ROC measured with n_bkg background.

    Never infinite: when fewer than one background event passes (eps_B < 1 / n_bkg, e.g. a perfect
    separation with eps_B = 0) the sample cannot measure the rejection and it is reported as the
    lower limit 1 / (1 / n_bkg) = n_bkg with ``is_lower_limit`` set and a NaN error. Otherwise the
    error is the binomial one, sigma(eps_B) / eps_B^2 with sigma(eps_B) = sqrt(eps_B (1 - eps_B) / n_bkg).
    """
    eb = eff_bkg_at(eff_sig, eff_bkg, target)
    if eb * n_bkg < 1.0:
        return Rejection(target, eb, float(n_bkg), float("nan"), True, n_bkg)
    err = np.sqrt(eb * (1.0 - eb) / n_bkg) / eb**2
    return Rejection(target, eb, 1.0 / eb, float(err), False, n_bkg)


def macro_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the one-vs-rest AUC of p_k (class k vs all others), probs (n, K).

    Classes without events, or without other events, are skipped; NaN if none is left.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    aucs = []
    for k in range(probs.shape[1]):
        is_k = labels == k
        if is_k.any() and (~is_k).any():
            aucs.append(auc(probs[is_k, k], probs[~is_k, k]))
    return float(np.mean(aucs)) if aucs else float("nan")


@dataclass(frozen=True)
class BinaryPerformance:
    """One signal class against the background class with the ParT discriminant."""

    signal: str  # class name of the signal, e.g. "Hbb"
    background: str  # class name of the background, e.g. "QCD"
    n_sig: int  # signal events
    n_bkg: int  # background events
    auc: float  # area under the ROC
    auc_err: float  # 1-sigma uncertainty of auc
    rejections: tuple[Rejection, ...]  # one per requested signal efficiency, in the given order
    eff_sig: np.ndarray  # ROC signal efficiencies, (m,)
    eff_bkg: np.ndarray  # ROC background efficiencies, (m,)


def signal_vs_background(
    probs: np.ndarray,
    labels: np.ndarray,
    signal: int,
    background: int,
    efficiencies: tuple[float, ...],
    names: tuple[str, str] = ("signal", "background"),
) -> BinaryPerformance:
    """AUC, ROC and rejections of class ``signal`` vs class ``background`` (indices into probs' K).

    Uses the events of these two classes only and the score p_s / (p_s + p_b); probs (n, K),
    labels (n,). Raises ValueError when either class has no events.
    """
    labels = np.asarray(labels)
    score = discriminant(probs, signal, background)
    s, b = score[labels == signal], score[labels == background]
    eff_s, eff_b, _ = roc_curve(s, b)
    a = auc(s, b)
    rej = tuple(rejection(eff_s, eff_b, e, b.size) for e in efficiencies)
    return BinaryPerformance(
        names[0], names[1], s.size, b.size, a, auc_error(a, s.size, b.size), rej, eff_s, eff_b
    )
