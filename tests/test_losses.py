"""Every loss against an independent computation, its reductions, gradients and numerics."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from bench.errors import UsageError
from bench.losses import LOSSES, build_loss, resolve_loss_params

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
    if name == "perceptron":
        return torch.tensor(perceptron_by_hand(logits.tolist(), targets.tolist()))
    if name == "exponential":
        s, t = logits.tolist(), targets.tolist()
        per_sample = [sum(math.exp(s[i][k] - s[i][t[i]]) for k in range(C) if k != t[i]) for i in range(len(t))]
        # documented: past -log p_y = log(1 + e) = 50 the loss follows its tangent, e^50 (1 + s - 50) - 1
        capped = [e if math.log1p(e) <= 50 else math.exp(50) * (1 + math.log1p(e) - 50) - 1 for e in per_sample]
        return torch.tensor(sum(capped) / len(t))
    if name == "huber":
        r = (p - y).abs()
        return torch.where(r <= 0.5, 0.5 * r**2, 0.5 * (r - 0.25)).sum(1).mean()
    if name == "log-cosh":
        return torch.cosh(p - y).log().sum(1).mean()
    if name == "kl":
        q = y * 0.9 + 0.1 / C
        return (q * (q / p).log()).sum(1).mean()
    if name == "logit-adjust":
        prior = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
        adjusted = logits + prior.log()
        return -(adjusted.exp()[torch.arange(len(targets)), targets] / adjusted.exp().sum(1)).log().mean()
    if name == "ghm-c":
        return torch.tensor(ghm_by_hand(logits, targets, bins=10))
    raise AssertionError(f"no reference for {name}")


def perceptron_by_hand(s, y):
    return sum(max(0.0, max(s[i][k] for k in range(C) if k != y[i]) - s[i][y[i]]) for i in range(len(y))) / len(y)


def ghm_by_hand(logits, targets, bins, counts=None):
    """The paper's recipe, sample by sample: bin of g = 1 - p_y, weight N / count / non-empty bins."""
    _, py = probs_of(logits, targets)
    n = len(targets)
    which = [min(int((1 - float(v)) * bins), bins - 1) for v in py]
    in_bin = [which.count(b) for b in range(bins)]
    counts = counts or in_bin
    nonempty = sum(1 for c in in_bin if c > 0)
    return sum(n / counts[which[i]] / nonempty * -math.log(float(py[i])) for i in range(n)) / n


def test_the_catalogue_has_the_seed_surveys_losses():
    assert {"perceptron", "exponential", "huber", "log-cosh", "kl", "ghm-c", "logit-adjust"} <= set(LOSSES.names())
    assert len(LOSSES.names()) >= 23


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


# dice and ghm-c are batch statistics (ghm-c weights a sample by its bin's count in the batch)
@pytest.mark.parametrize("name", [n for n in LOSSES.names() if n not in ("dice", "ghm-c")])
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


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0, 30.0])
@pytest.mark.parametrize("name", ["perceptron", "exponential", "huber", "log-cosh", "kl", "ghm-c", "logit-adjust"])
def test_new_losses_match_their_formulas_and_gradients_at_several_scales(name, scale, batch):
    logits, targets = batch
    x = (logits * scale).detach().requires_grad_(True)
    got = make(name)(x, targets)
    assert got.item() == pytest.approx(reference(name, x.detach(), targets).item(), rel=1e-6, abs=1e-9)
    if name in ("exponential", "ghm-c") and scale >= 10:
        return  # exponential: e^(gap) past float64's finite-difference precision; ghm-c: see gradcheck above
    head = x[:8].detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: make(name)(z, targets[:8]), (head,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_kl_has_the_gradient_of_label_smoothed_ce_and_is_zero_at_a_perfect_prediction(batch):
    logits, targets = batch
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    make("kl", smoothing=0.2)(a, targets).backward()
    F.cross_entropy(b, targets, label_smoothing=0.2).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-12)
    q = F.one_hot(targets, C).double() * 0.8 + 0.2 / C
    assert make("kl", smoothing=0.2)(q.log(), targets).item() == pytest.approx(0.0, abs=1e-12)
    assert make("kl", smoothing=0.0)(F.one_hot(targets, C).double() * 60, targets).item() == pytest.approx(0.0, abs=1e-12)


def test_exponential_is_one_over_p_minus_one_and_finite_for_a_confident_wrong_sample():
    logits = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64)
    p = logits.softmax(1)[0, 1]
    assert make("exponential")(logits, torch.tensor([1])).item() == pytest.approx((1 / p - 1).item(), rel=1e-12)
    wrong = torch.tensor([[200.0, 0.0, 0.0]], requires_grad=True)  # float32, exp(200) overflows
    loss = make("exponential")(wrong, torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(wrong.grad).all()
    assert loss.item() == pytest.approx(math.exp(50) * (1 + 200 - 50), rel=1e-4)  # the documented tangent
    assert wrong.grad[0, 1] < 0  # still pushes the target's logit up


def test_logit_adjust_with_tau_zero_is_ce_and_favours_rare_classes(batch):
    logits, targets = batch
    assert make("logit-adjust", tau=0.0)(logits, targets).item() == pytest.approx(F.cross_entropy(logits, targets).item())
    rare, common = torch.tensor([4]), torch.tensor([0])
    even = torch.zeros(1, C, dtype=torch.float64)
    assert make("logit-adjust")(even, rare) > make("logit-adjust")(even, common)  # rare targets cost more


def test_ghm_momentum_averages_counts_across_training_batches_only(batch):
    logits, targets = batch
    loss = make("ghm-c", bin_momentum=0.75)
    first, second = (logits[:20], targets[:20]), (logits[20:], targets[20:])
    loss(*first)
    counts_after_first = loss.average_counts.clone()
    loss.eval()
    loss(*second)  # evaluation leaves the state alone
    assert torch.equal(loss.average_counts, counts_after_first)
    loss.train()
    got = loss(*second)
    _, py = probs_of(*second)
    hits = [0] * 10
    for v in py:
        hits[min(int((1 - float(v)) * 10), 9)] += 1
    expected = [0.75 * c + 0.25 * h if h else c for c, h in zip(counts_after_first.tolist(), hits)]
    assert loss.average_counts.tolist() == pytest.approx(expected)
    assert got.item() == pytest.approx(ghm_by_hand(*second, bins=10, counts=expected), rel=1e-9)
    state = loss.state_dict()
    assert "average_counts" in state  # saved in checkpoints, restored by --resume


def test_ghm_bins_must_be_whole():
    with pytest.raises(UsageError, match="bins must be a whole number"):
        resolve_loss_params("ghm-c", {"bins": 2.5}, C)


def test_no_loss_hyperparameter_shadows_a_run_setting():
    import dataclasses

    from bench.config import RunConfig

    settings = {f.name for f in dataclasses.fields(RunConfig)}
    for name in LOSSES.names():
        assert not set(LOSSES.get(name).params) & settings, name
