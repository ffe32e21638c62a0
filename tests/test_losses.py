"""Every loss against an independent computation, its reductions, gradients and numerics."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from bench.errors import UsageError
from losses import LOSSES, build_loss, resolve_loss_params

C = 5
COUNTS = (50, 30, 10, 5, 5)


def make(name, **params):
    return build_loss(name, resolve_loss_params(name, params, C), COUNTS)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, C, dtype=torch.float64, generator=g) * 2
    targets = torch.randint(0, C, (40,), generator=g)
    return logits, targets


def probs_of(logits, targets):
    p = logits.softmax(1)
    return p, p[torch.arange(len(targets)), targets]


def hinge_by_hand(s, y, margin=1.0):
    total = 0.0
    for i in range(len(y)):
        total += sum(max(0.0, margin - s[i][y[i]] + s[i][k]) for k in range(C) if k != y[i]) / C
    return total / len(y)


def reference(name, logits, targets):
    """Independent value of each loss at its defaults, written from the papers' formulas."""
    p, py = probs_of(logits, targets)
    y = F.one_hot(targets, C).double()
    ce = -py.log()
    rce = -math.log(1e-4) * (1 - py)
    if name == "ce":
        return F.cross_entropy(logits, targets)
    if name == "focal":
        return ((1 - py) ** 2 * ce).mean()
    if name == "poly1":
        return (ce + (1 - py)).mean()
    if name in ("l1", "mae"):
        return (p - y).abs().mean()
    if name in ("brier", "mse"):
        return ((p - y) ** 2).sum(1).mean()
    if name == "hinge":
        return torch.tensor(hinge_by_hand(logits.tolist(), targets.tolist()))
    if name == "bce":
        q = torch.sigmoid(logits)
        return -(y * q.log() + (1 - y) * (1 - q).log()).mean()
    if name == "sigmoid-focal":
        return sigmoid_focal_loss(logits, y, alpha=0.25, gamma=2.0, reduction="mean")
    if name == "class-balanced":
        w = torch.tensor([(1 - 0.999) / (1 - 0.999**n) for n in COUNTS], dtype=torch.float64)
        w = w * C / w.sum()
        return (w[targets] * ce).mean()
    if name == "gce":
        return ((1 - py**0.7) / 0.7).mean()
    if name == "sce":
        # the reference implementation's form: -sum_k p_k log clamp(y_k, 1e-4, 1)
        rce_ref = -(p.clamp(1e-7, 1) * y.clamp(1e-4, 1).log()).sum(1)
        assert torch.allclose(rce_ref, rce, atol=1e-5)
        return (0.1 * ce + rce_ref).mean()
    if name == "nce+rce":
        return (ce / -(p.log().sum(1)) + rce).mean()
    if name == "zlpr":
        e = logits.exp()
        neg = (e * (1 - y)).sum(1)
        return ((1 + neg).log() + (1 + (-logits[torch.arange(len(targets)), targets]).exp()).log()).mean()
    if name == "dice":
        dice = (2 * (p * y).sum(0) + 1) / (p.sum(0) + y.sum(0) + 1)
        return 1 - dice.mean()
    raise AssertionError(f"no reference for {name}")


def test_the_catalogue_has_at_least_14_losses():
    assert len(LOSSES.names()) >= 14


@pytest.mark.parametrize("name", LOSSES.names())
def test_value_matches_independent_reference(name, batch):
    logits, targets = batch
    got = make(name)(logits, targets)
    assert got.dim() == 0
    assert got.item() == pytest.approx(reference(name, logits, targets).item(), rel=1e-6, abs=1e-9)


def test_ce_options_match_torch(batch):
    logits, targets = batch
    expected = F.cross_entropy(logits, targets, label_smoothing=0.1)
    assert make("ce", label_smoothing=0.1)(logits, targets).item() == pytest.approx(expected.item(), rel=1e-9)
    w = torch.tensor([sum(COUNTS) / (C * n) for n in COUNTS], dtype=torch.float64)
    by_hand = (w[targets] * -logits.log_softmax(1)[torch.arange(40), targets]).sum() / w[targets].sum()
    assert make("ce", class_weights="balanced")(logits, targets).item() == pytest.approx(by_hand.item(), rel=1e-6)
    listed = make("ce", class_weights=(1.0, 2.0, 3.0, 4.0, 5.0))(logits, targets)
    expected = F.cross_entropy(logits, targets, weight=torch.arange(1.0, 6.0, dtype=torch.float64))
    assert listed.item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_per_class_alpha(batch):
    logits, targets = batch
    alpha = (0.1, 0.2, 0.3, 0.4, 0.5)
    _, py = probs_of(logits, targets)
    expected = (torch.tensor(alpha, dtype=torch.float64)[targets] * -(1 - py) ** 2 * py.log()).mean()
    assert make("focal", alpha=alpha)(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_gce_q_one_is_mae_scaled(batch):
    logits, targets = batch
    _, py = probs_of(logits, targets)
    assert make("gce", q=1.0)(logits, targets).item() == pytest.approx((1 - py).mean().item(), rel=1e-9)


@pytest.mark.parametrize(
    "name, params",
    [
        ("focal", {"gamma": 0.0}),
        ("poly1", {"epsilon": 0.0}),
        ("class-balanced", {"beta": 0.0, "base": "ce"}),
    ],
)
def test_reduces_to_cross_entropy(name, params, batch):
    logits, targets = batch
    got = make(name, **params)(logits, targets)
    assert got.item() == pytest.approx(F.cross_entropy(logits, targets).item(), abs=1e-6)


@pytest.mark.parametrize("base, other", [("focal", "focal"), ("bce", "bce")])
def test_class_balanced_beta_zero_is_its_base(base, other, batch):
    logits, targets = batch
    got = make("class-balanced", beta=0.0, base=base)(logits, targets)
    assert got.item() == pytest.approx(make(other)(logits, targets).item(), rel=1e-9)


@pytest.mark.parametrize("name", LOSSES.names())
def test_gradcheck_float64(name):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, C, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    loss = make(name)
    # hinge has kinks where a margin is exactly met; random logits stay away from them
    assert torch.autograd.gradcheck(lambda x: loss(x, targets), (logits,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", LOSSES.names())
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_finite_value_and_gradient_for_huge_logits(name, scale):
    logits = torch.tensor([[1.0, -1.0, 0.0, 0.5, -0.5], [-1.0, 1.0, 0.0, 0.2, 0.1]] * 2) * scale
    logits.requires_grad_(True)
    targets = torch.tensor([0, 0, 1, 4])
    loss = build_loss(name, resolve_loss_params(name, {"gamma": 0.5} if name == "focal" else {}, C), COUNTS)(
        logits, targets
    )
    loss.backward()
    assert torch.isfinite(loss), loss
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", LOSSES.names())
def test_finite_under_bf16_autocast(name):
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, C)
    x = torch.randn(32, 16) * 10
    targets = torch.randint(0, C, (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(x)
        assert logits.dtype == torch.bfloat16
        loss = make(name)(logits, targets)
    loss.backward()
    assert loss.dtype in (torch.float32, torch.float64) and torch.isfinite(loss)
    assert torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("name", [n for n in LOSSES.names() if n != "dice"])  # dice is a batch statistic
def test_mean_is_invariant_to_batch_size(name, batch):
    logits, targets = batch
    loss = make(name)
    whole = loss(logits, targets)
    halves = (loss(logits[:20], targets[:20]) + loss(logits[20:], targets[20:])) / 2
    quarters = sum(loss(logits[i : i + 10], targets[i : i + 10]) for i in range(0, 40, 10)) / 4
    assert whole.item() == pytest.approx(halves.item(), rel=1e-9)
    assert whole.item() == pytest.approx(quarters.item(), rel=1e-9)


def test_out_of_range_and_unknown_hyperparameters_are_usage_errors():
    with pytest.raises(UsageError, match="gamma must lie in"):
        resolve_loss_params("focal", {"gamma": -1.0}, C)
    with pytest.raises(UsageError, match="one value per class"):
        resolve_loss_params("focal", {"alpha": (0.5, 0.5)}, C)
    with pytest.raises(UsageError, match="has no hyperparameter gamma"):
        resolve_loss_params("ce", {"gamma": 2.0}, C)
    with pytest.raises(UsageError, match="base must be ce | focal | bce"):
        resolve_loss_params("class-balanced", {"base": "mse"}, C)
    with pytest.raises(UsageError, match=r"q must lie in \(0, 1\]"):
        resolve_loss_params("gce", {"q": 0.0}, C)
    with pytest.raises(UsageError, match="did you mean focal"):
        LOSSES.get("focl")


def test_every_declared_tuning_range_lies_inside_the_valid_range():
    for name in LOSSES.names():
        for key, hp in LOSSES.get(name).params.items():
            if hp.tune is not None:
                for v in hp.tune:
                    hp.check(key, v, C)
