"""Metrics against hand-computed values, brute-force definitions and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coarse2fine.objectives.metrics import (
    METRICS,
    average_precision,
    d_prime,
    evaluate,
    higher_is_better,
    roc_auc,
    top1_accuracy,
)


def brute_auc(scores: np.ndarray, targets: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half, over all pairs."""
    pos, neg = scores[targets == 1], scores[targets == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def brute_ap(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP by definition: thresholds at each distinct score, high to low; sum (R_n - R_{n-1}) P_n."""
    total, prev_recall, n_pos = 0.0, 0.0, targets.sum()
    for t in sorted(set(scores.tolist()), reverse=True):
        selected = scores >= t
        tp = targets[selected].sum()
        precision, recall = tp / selected.sum(), tp / n_pos
        total += (recall - prev_recall) * precision
        prev_recall = recall
    return total


# --- hand-computed values (scikit-learn's documented examples) ---------------------------------

def test_sklearn_doc_example():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert average_precision(s, y) == pytest.approx(0.8333333333333333)
    assert roc_auc(s, y) == pytest.approx(0.75)


def test_ap_with_tie_by_hand():
    # thresholds 0.9: 1 tp of 1 -> P=1, R=1/2; 0.5 (tie of pos+neg): 2 tp of 3 -> P=2/3, R=1
    y = np.array([1, 1, 0, 0])
    s = np.array([0.9, 0.5, 0.5, 0.1])
    assert average_precision(s, y) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # pairs: (0.9 > both) 2, (0.5 vs 0.5) 0.5, (0.5 > 0.1) 1 -> 3.5 / 4
    assert roc_auc(s, y) == pytest.approx(3.5 / 4)


def test_perfect_and_inverted_rankings():
    y = np.array([0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.7, 0.8, 0.9])
    assert roc_auc(s, y) == 1.0 and average_precision(s, y) == 1.0
    assert roc_auc(-s, y) == 0.0
    # inverted: positives come last, precision 1/3, 2/4, 3/5 at recall 1/3, 2/3, 1
    assert average_precision(-s, y) == pytest.approx((1 / 3 + 2 / 4 + 3 / 5) / 3)


def test_all_equal_scores():
    y = np.array([1, 0, 0, 1, 0])
    s = np.full(5, 0.3)
    assert roc_auc(s, y) == 0.5
    assert average_precision(s, y) == pytest.approx(2 / 5)  # one threshold: the prevalence


def test_undefined_cases_are_nan():
    s = np.array([0.1, 0.5, 0.9])
    assert math.isnan(average_precision(s, np.zeros(3)))
    assert math.isnan(roc_auc(s, np.zeros(3)))
    assert math.isnan(roc_auc(s, np.ones(3)))
    assert average_precision(s, np.ones(3)) == 1.0  # only positives: precision 1 everywhere


def test_targets_may_be_bool_or_float():
    s = np.array([0.1, 0.4, 0.35, 0.8])
    for y in (np.array([False, False, True, True]), np.array([0.0, 0.0, 1.0, 1.0])):
        assert roc_auc(s, y) == pytest.approx(0.75)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        roc_auc(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError):
        average_precision(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError):
        evaluate(np.zeros(5), np.zeros(5))


# --- random data with ties against brute force -----------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_against_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    y = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
    y[0], y[1] = 0, 1  # both classes present
    s = rng.integers(0, 6, size=n) / 5.0  # few distinct values: many ties
    if seed % 2:
        s = s.astype(np.float32)  # float32 input (softmax outputs) is accepted
    assert roc_auc(s, y) == pytest.approx(brute_auc(s.astype(np.float64), y), abs=1e-12)
    assert average_precision(s, y) == pytest.approx(brute_ap(s.astype(np.float64), y), abs=1e-12)


def test_continuous_scores_against_brute_force():
    rng = np.random.default_rng(42)
    y = (rng.random(200) < 0.3).astype(int)
    s = rng.normal(size=200) + y
    assert roc_auc(s, y) == pytest.approx(brute_auc(s, y), abs=1e-12)
    assert average_precision(s, y) == pytest.approx(brute_ap(s, y), abs=1e-12)


def test_auc_matches_scipy_mannwhitney():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    y = (rng.random(300) < 0.4).astype(int)
    s = np.round(rng.normal(size=300) + 0.8 * y, 1)  # rounded: ties
    u = stats.mannwhitneyu(s[y == 1], s[y == 0]).statistic
    assert roc_auc(s, y) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)


# --- d-prime -----------------------------------------------------------------------------------

def test_d_prime_hand_values():
    assert d_prime(0.5) == 0.0
    assert d_prime(0.8413447460685429) == pytest.approx(math.sqrt(2), rel=1e-9)  # Phi(1)
    assert d_prime(1.0) == math.inf and d_prime(0.0) == -math.inf
    assert math.isnan(d_prime(math.nan))
    with pytest.raises(ValueError):
        d_prime(1.5)


def test_d_prime_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for auc in (0.01, 0.3, 0.6, 0.9, 0.95, 0.97, 0.999):
        assert d_prime(auc) == pytest.approx(math.sqrt(2) * stats.norm.ppf(auc), rel=1e-10)


# --- top-1 accuracy ----------------------------------------------------------------------------

def test_top1_with_int_labels_and_one_hot():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]])
    labels = np.array([1, 1, 2, 0])
    assert top1_accuracy(scores, labels) == 0.5
    assert top1_accuracy(scores, np.eye(3)[labels]) == 0.5


def test_top1_multi_hot_hits_any_positive_and_ties_take_lowest_index():
    scores = np.array([[0.1, 0.7, 0.2], [0.4, 0.4, 0.2]])
    targets = np.array([[0, 1, 1], [0, 1, 0]])  # row 2: argmax tie -> class 0 -> miss
    assert top1_accuracy(scores, targets) == 0.5


def test_top1_rejects_bad_labels():
    with pytest.raises(ValueError):
        top1_accuracy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError):
        top1_accuracy(np.zeros((2, 3)), np.array([0.5, 1.0]))
    with pytest.raises(ValueError):
        top1_accuracy(np.zeros((2, 3)), np.zeros((2, 4)))


# --- evaluate ------------------------------------------------------------------------------------

def test_evaluate_skips_classes_without_positives_or_negatives():
    rng = np.random.default_rng(3)
    scores = rng.random((30, 4))
    targets = (rng.random((30, 4)) < 0.4).astype(int)
    targets[:, 2] = 0  # no positive: out of mAP and mAUC
    targets[:, 3] = 1  # no negative: in mAP (AP = 1), out of mAUC
    out = evaluate(scores, targets)
    assert set(out) == set(METRICS)
    aps = [brute_ap(scores[:, c], targets[:, c]) for c in (0, 1, 3)]
    aucs = [brute_auc(scores[:, c], targets[:, c]) for c in (0, 1)]
    assert out["mAP"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert out["mAUC"] == pytest.approx(np.mean(aucs), abs=1e-12)
    assert out["d_prime"] == pytest.approx(d_prime(out["mAUC"]))
    assert out["acc"] == top1_accuracy(scores, targets)


def test_evaluate_int_labels_equal_one_hot():
    rng = np.random.default_rng(5)
    scores = rng.random((40, 5)).astype(np.float32)
    labels = rng.integers(0, 4, size=40)  # class 4 never occurs: skipped
    a, b = evaluate(scores, labels), evaluate(scores, np.eye(5)[labels])
    assert a == pytest.approx(b)
    aps = [brute_ap(scores[:, c].astype(np.float64), (labels == c).astype(int)) for c in range(4)]
    assert a["mAP"] == pytest.approx(np.mean(aps), abs=1e-9)
    assert all(isinstance(v, float) for v in a.values())


def test_evaluate_perfect_scores():
    labels = np.array([0, 1, 2, 0, 1, 2])
    out = evaluate(np.eye(3)[labels] * 0.9 + 0.05, labels)
    assert out["acc"] == 1.0 and out["mAP"] == 1.0 and out["mAUC"] == 1.0 and out["d_prime"] == math.inf


def test_evaluate_without_any_positive_is_nan():
    out = evaluate(np.random.default_rng(0).random((4, 3)), np.zeros((4, 3)))
    assert out["acc"] == 0.0
    assert all(math.isnan(out[k]) for k in ("mAP", "mAUC", "d_prime"))


def test_higher_is_better():
    assert all(higher_is_better(m) for m in METRICS)
    assert not higher_is_better("val_loss") and not higher_is_better("train_loss")
    with pytest.raises(ValueError):
        higher_is_better("bogus")


def test_logs_and_the_command_line_say_fractions_in_percent_as_the_tables_do():
    # train printed "best acc 0.3633" beside tables of 36.33 (a new user's case)
    from coarse2fine.objectives.metrics import metric_text

    assert metric_text(0.36333, "acc") == "36.33 %" and metric_text(0.5, "mAP") == "50.00 %"
    assert metric_text(2.29721, "val_loss") == "2.2972" and metric_text(0.0648, "masked_acc") == "0.0648"
