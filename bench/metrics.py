"""Classification metrics from a confusion matrix and calibration bins accumulated on the device.

`EvalAccumulator.update` does no host synchronisation; everything is read back once in
`result()`. The formulas live in plain functions so tests can check them on hand-worked numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ECE_BINS = 15


def per_class_metrics(confusion: torch.Tensor, class_names: list[str]) -> dict[str, dict[str, float]]:
    """Rows of `confusion` are true classes, columns predictions.

    Per-class accuracy is the fraction of that class's samples predicted correctly (= recall).
    A class never predicted has precision 0; a class with no samples has recall 0.
    """
    cm = confusion.double()
    tp = cm.diagonal()
    support = cm.sum(1)
    predicted = cm.sum(0)
    recall = torch.where(support > 0, tp / support.clamp_min(1), torch.zeros_like(tp))
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), torch.zeros_like(tp))
    return {
        name: {
            "accuracy": recall[i].item(),
            "precision": precision[i].item(),
            "recall": recall[i].item(),
            "f1": f1[i].item(),
            "support": int(support[i].item()),
        }
        for i, name in enumerate(class_names)
    }


def expected_calibration_error(count: torch.Tensor, confidence: torch.Tensor, correct: torch.Tensor) -> float:
    """ECE = sum_b (n_b / N) |accuracy_b - confidence_b| from per-bin counts and sums."""
    total = count.sum()
    if total == 0:
        return 0.0
    gap = (correct.double() - confidence.double()).abs()  # n_b * |acc_b - conf_b|
    return (gap.sum() / total).item()


def confidence_bin(confidence: torch.Tensor, bins: int = ECE_BINS) -> torch.Tensor:
    """Equal-width bins over (0, 1]: bin b holds confidences in (b/bins, (b+1)/bins]."""
    return (confidence * bins).ceil().long().sub_(1).clamp_(0, bins - 1)


class EvalAccumulator:
    """Accumulates loss, NLL, the confusion matrix and calibration bins over batches."""

    def __init__(self, num_classes: int, device: torch.device, bins: int = ECE_BINS) -> None:
        self.num_classes = num_classes
        self.bins = bins
        self.confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
        self.bin_count = torch.zeros(bins, dtype=torch.float64, device=device)
        self.bin_confidence = torch.zeros_like(self.bin_count)
        self.bin_correct = torch.zeros_like(self.bin_count)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.nll_sum = torch.zeros_like(self.loss_sum)
        self.n = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, mean_loss: torch.Tensor) -> None:
        logits = logits.float()
        n = len(targets)
        self.n += n
        self.loss_sum += mean_loss.double() * n
        self.nll_sum += F.cross_entropy(logits, targets, reduction="sum").double()
        confidence, predicted = logits.softmax(1).max(1)
        self.confusion += torch.bincount(targets * self.num_classes + predicted,
                                         minlength=self.num_classes**2)
        b = confidence_bin(confidence, self.bins)
        self.bin_count += torch.bincount(b, minlength=self.bins)
        self.bin_confidence += torch.bincount(b, weights=confidence.double(), minlength=self.bins)
        self.bin_correct += torch.bincount(b, weights=(predicted == targets).double(), minlength=self.bins)

    def summary(self) -> dict[str, float]:
        """The scalar metrics (each epoch's validation, and the test headline)."""
        cm = self._matrix()
        return self._scalars(cm, per_class_metrics(cm, [str(i) for i in range(self.num_classes)]))

    def result(self, class_names: list[str]) -> dict:
        """Everything the run record's `metrics.test` holds."""
        cm = self._matrix()
        per_class = per_class_metrics(cm, class_names)
        return {**self._scalars(cm, per_class), "per_class": per_class, "confusion_matrix": cm.tolist()}

    def _matrix(self) -> torch.Tensor:
        return self.confusion.view(self.num_classes, self.num_classes).cpu()

    def _scalars(self, cm: torch.Tensor, per_class: dict[str, dict[str, float]]) -> dict[str, float]:
        def macro(key: str) -> float:
            return sum(c[key] for c in per_class.values()) / len(per_class)

        return {
            "loss": (self.loss_sum / max(self.n, 1)).item(),
            "accuracy": int(cm.diagonal().sum()) / max(self.n, 1),
            "macro_f1": macro("f1"),
            "macro_precision": macro("precision"),
            "macro_recall": macro("recall"),
            "nll": (self.nll_sum / max(self.n, 1)).item(),
            "ece": expected_calibration_error(self.bin_count, self.bin_confidence, self.bin_correct),
        }
