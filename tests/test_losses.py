import pytest
import torch
import torch.nn.functional as F

from bench.errors import UsageError
from losses import LOSSES, build_loss, resolve_loss_params


def make(name, **params):
    return build_loss(name, resolve_loss_params(name, params, num_classes=5))


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(32, 5, dtype=torch.float64) * 2, torch.randint(0, 5, (32,))


def test_ce_matches_torch_with_label_smoothing(batch):
    logits, targets = batch
    for eps in (0.0, 0.1):
        expected = F.cross_entropy(logits, targets, label_smoothing=eps)
        assert make("ce", label_smoothing=eps)(logits, targets).item() == pytest.approx(expected.item(), abs=1e-6)


def test_focal_gamma_zero_is_cross_entropy(batch):
    logits, targets = batch
    focal = make("focal", gamma=0.0)(logits, targets)
    assert focal.item() == pytest.approx(F.cross_entropy(logits, targets).item(), abs=1e-6)


def test_focal_closed_form_with_per_class_alpha(batch):
    logits, targets = batch
    alpha = (0.1, 0.2, 0.3, 0.4, 0.5)
    p = logits.float().softmax(1)[torch.arange(32), targets].double()
    expected = (torch.tensor(alpha, dtype=torch.float64)[targets] * -(1 - p) ** 2 * p.log()).mean()
    got = make("focal", gamma=2.0, alpha=alpha)(logits, targets)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_l1_closed_form():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    targets = torch.tensor([0, 1])
    p = torch.sigmoid(torch.tensor(2.0)).item()  # softmax of (2, 0) puts p on class 0
    # sample 1: |0.5-1| + |0.5-0| = 1; sample 2: |p-0| + |1-p-1| = 2p; mean over 4 entries
    expected = (1 + 2 * p) / 4
    assert make("l1")(logits, targets).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", ["ce", "focal", "l1"])
def test_extreme_logits_give_finite_value_and_gradient(name):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], requires_grad=True)
    targets = torch.tensor([0, 0])
    params = {"gamma": 0.5} if name == "focal" else {}
    loss = build_loss(name, resolve_loss_params(name, params, 3))(logits, targets)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_out_of_range_and_unknown_hyperparameters_are_usage_errors():
    with pytest.raises(UsageError, match="gamma must lie in"):
        resolve_loss_params("focal", {"gamma": -1.0}, 5)
    with pytest.raises(UsageError, match="one value per class"):
        resolve_loss_params("focal", {"alpha": (0.5, 0.5)}, 5)
    with pytest.raises(UsageError, match="has no hyperparameter gamma"):
        resolve_loss_params("ce", {"gamma": 2.0}, 5)
    with pytest.raises(UsageError, match="did you mean focal"):
        LOSSES.get("focl")
