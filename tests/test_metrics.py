import math

import pytest
import torch

from bench.metrics import EvalAccumulator, confidence_bin, expected_calibration_error, per_class_metrics


def test_per_class_metrics_hand_worked():
    # rows: true class, columns: predicted
    cm = torch.tensor([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    m = per_class_metrics(cm, ["a", "b", "c"])
    # class a: tp 5, support 6, predicted 7
    assert m["a"]["recall"] == pytest.approx(5 / 6)
    assert m["a"]["accuracy"] == pytest.approx(5 / 6)
    assert m["a"]["precision"] == pytest.approx(5 / 7)
    assert m["a"]["f1"] == pytest.approx(2 * (5 / 7) * (5 / 6) / (5 / 7 + 5 / 6))
    # class b: tp 3, support 6, predicted 4
    assert m["b"]["precision"] == pytest.approx(3 / 4)
    assert m["b"]["recall"] == pytest.approx(3 / 6)
    assert m["b"]["f1"] == pytest.approx(0.6)
    # class c: tp 4, support 4, predicted 5
    assert m["c"]["precision"] == pytest.approx(4 / 5)
    assert m["c"]["recall"] == 1.0
    assert [m[k]["support"] for k in "abc"] == [6, 6, 4]


def test_per_class_metrics_never_predicted_and_empty_class():
    cm = torch.tensor([[3, 0, 0], [2, 0, 0], [0, 0, 0]])
    m = per_class_metrics(cm, ["a", "b", "c"])
    assert m["b"] == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["c"]["support"] == 0 and m["c"]["f1"] == 0.0
    assert m["a"]["precision"] == pytest.approx(3 / 5)


def test_confidence_bins_are_right_closed():
    conf = torch.tensor([1e-9, 1 / 15, 1 / 15 + 1e-6, 0.5, 1.0])
    assert confidence_bin(conf).tolist() == [0, 0, 1, 7, 14]


def test_ece_hand_worked():
    # bin 0: 2 samples, mean confidence 0.6, accuracy 0.5; bin 1: 2 samples, conf 0.9, acc 1.0
    count = torch.tensor([2.0, 2.0])
    conf = torch.tensor([1.2, 1.8])
    correct = torch.tensor([1.0, 2.0])
    assert expected_calibration_error(count, conf, correct) == pytest.approx(0.5 * 0.1 + 0.5 * 0.1)


def test_accumulator_against_direct_computation():
    torch.manual_seed(0)
    logits = torch.randn(257, 4) * 3
    targets = torch.randint(0, 4, (257,))
    acc = EvalAccumulator(4, torch.device("cpu"))
    for chunk in range(0, 257, 64):  # batches of uneven size
        lg, tg = logits[chunk : chunk + 64], targets[chunk : chunk + 64]
        acc.update(lg, tg, torch.nn.functional.cross_entropy(lg, tg))
    r = acc.result(["w", "x", "y", "z"])
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    assert r["accuracy"] == pytest.approx((pred == targets).double().mean().item())
    assert r["nll"] == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-5)
    assert r["loss"] == pytest.approx(r["nll"], rel=1e-5)
    direct_ece = 0.0
    for b in range(15):
        inside = (conf > b / 15) & (conf <= (b + 1) / 15)
        if inside.any():
            gap = (pred[inside] == targets[inside]).double().mean() - conf[inside].double().mean()
            direct_ece += inside.double().mean().item() * abs(gap.item())
    assert r["ece"] == pytest.approx(direct_ece, abs=1e-6)
    assert sum(map(sum, r["confusion_matrix"])) == 257
    f1s = [c["f1"] for c in r["per_class"].values()]
    assert r["macro_f1"] == pytest.approx(sum(f1s) / 4)
    assert not math.isnan(r["ece"])
