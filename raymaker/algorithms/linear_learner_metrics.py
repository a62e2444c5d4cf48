"""Linear Learner's evaluation metrics and binary threshold calibration, in NumPy.

Names are the part after ``validation:`` / ``test:`` in SageMaker's metric names. Every function takes
one model's outputs; the caller loops over the models it trains side by side.
"""

from __future__ import annotations

import numpy as np

BINARY_CRITERIA = (
    "accuracy",
    "f_beta",
    "precision_at_target_recall",
    "recall_at_target_precision",
    "loss_function",
)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties averaged); None when one class is absent."""
    positive = labels > 0.5
    n_pos = int(positive.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _fbeta(precision: np.ndarray, recall: np.ndarray, beta: float) -> np.ndarray:
    b2 = beta * beta
    denom = b2 * precision + recall
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (1 + b2) * precision * recall / denom, 0.0)


def binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float, beta: float) -> dict[str, float]:
    """Accuracy, precision, recall and F-beta of ``score > threshold``, plus ROC AUC."""
    truth = labels > 0.5
    predicted = scores > threshold
    tp = float(np.sum(truth & predicted))
    fp = float(np.sum(~truth & predicted))
    fn = float(np.sum(truth & ~predicted))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    out = {
        "binary_classification_accuracy": float(np.mean(truth == predicted)) if labels.size else float("nan"),
        "precision": precision,
        "recall": recall,
        "binary_f_beta": float(_fbeta(np.array(precision), np.array(recall), beta)),
    }
    auc = roc_auc(scores, labels)
    if auc is not None:
        out["roc_auc_score"] = auc
    return out


def calibrate_threshold(
    scores: np.ndarray,
    labels: np.ndarray,
    criterion: str,
    *,
    beta: float = 1.0,
    target_recall: float = 0.8,
    target_precision: float = 0.8,
) -> tuple[float, float]:
    """(threshold, criterion value) maximising ``criterion`` for predictions ``score > threshold``.

    Every distinct cut of the sorted scores is tried at once; among equally good cuts the one closest
    to 0.5 wins, so a small validation set does not push the threshold to an extreme."""
    if criterion == "loss_function" or scores.size == 0:
        return 0.5, float("nan")
    order = np.argsort(-scores, kind="stable")
    s = scores[order].astype(np.float64)
    y = (labels[order] > 0.5).astype(np.float64)
    n, n_pos = s.size, y.sum()
    # cut i: the first i rows (highest scores) are predicted positive, i = 0..n
    tp = np.concatenate([[0.0], np.cumsum(y)])
    fp = np.concatenate([[0.0], np.cumsum(1 - y)])
    lower = np.concatenate([[np.inf], s])  # score of the last positive row
    upper = np.concatenate([s, [-np.inf]])  # score of the first negative row
    valid = lower > upper  # a threshold exists strictly between them
    thresholds = np.where(
        np.isinf(lower),
        np.nextafter(s[0], np.inf),
        np.where(np.isinf(upper), np.nextafter(s[-1], -np.inf), 0),
    )
    mid = (lower + upper) / 2
    thresholds = np.where(np.isfinite(mid), mid, thresholds)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        recall = tp / n_pos if n_pos else np.zeros_like(tp)
    if criterion == "accuracy":
        value = (tp + (n - n_pos) - fp) / n
    elif criterion == "f_beta":
        value = _fbeta(precision, recall, beta)
    elif criterion == "precision_at_target_recall":
        value = np.where(recall >= target_recall, precision, -1.0)
    elif criterion == "recall_at_target_precision":
        value = np.where(precision >= target_precision, recall, -1.0)
    else:
        raise ValueError(f"unknown model selection criterion {criterion!r}; use one of {BINARY_CRITERIA}")
    value = np.where(valid, value, -np.inf)
    best = value.max()
    ties = np.flatnonzero(value >= best - 1e-12)
    pick = ties[np.argmin(np.abs(thresholds[ties] - 0.5))]
    return float(thresholds[pick]), float(max(best, 0.0))


def multiclass_metrics(probs: np.ndarray, labels: np.ndarray, top_k: int, beta: float) -> dict[str, float]:
    """Accuracy, top-k accuracy, macro precision / recall / F-beta (over classes seen as truth or
    prediction, as scikit-learn averages) and DCG (one relevant class: 1 / log2(1 + its rank))."""
    k = probs.shape[1]
    truth = labels.astype(np.int64)
    predicted = probs.argmax(axis=1)
    true_score = probs[np.arange(truth.size), truth]
    rank = 1 + (probs > true_score[:, None]).sum(axis=1)  # 1 = the true class scored highest
    confusion = np.bincount(truth * k + predicted, minlength=k * k).reshape(k, k).astype(np.float64)
    tp, pred_n, true_n = np.diag(confusion), confusion.sum(axis=0), confusion.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_n > 0, tp / pred_n, 0.0)
        recall = np.where(true_n > 0, tp / true_n, 0.0)
    present = (pred_n + true_n) > 0
    return {
        "multiclass_accuracy": float(np.mean(predicted == truth)),
        "multiclass_top_k_accuracy": float(np.mean(rank <= min(top_k, k))),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f_beta": float(_fbeta(precision, recall, beta)[present].mean()),
        "dcg": float(np.mean(1.0 / np.log2(1.0 + rank))),
    }


def regression_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    err = predictions.astype(np.float64) - labels
    mse = float(np.mean(err**2))
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "absolute_loss": float(np.mean(np.abs(err)))}


def _rankdata(values: np.ndarray, method: str = "average") -> np.ndarray:
    from scipy.stats import rankdata  # scipy.stats takes 0.4 s to import: only when a metric needs it

    return rankdata(values, method=method)
