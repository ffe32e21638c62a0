import pytest
import torch

from bench.models import MODELS, build_model


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 64, 64), (1, 28, 28)])
def test_every_model_gives_logits_sized_from_the_dataset(name, shape):
    model = build_model(name, shape, 7).module
    assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_cnn_tiny_is_the_seed_report_convnet_at_32px():
    model = build_model("cnn-tiny", (3, 32, 32), 10).module
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(288, 32), (32, 10)]


def test_cnn_has_a_few_hundred_thousand_parameters():
    n = sum(p.numel() for p in build_model("cnn", (3, 32, 32), 10).module.parameters())
    assert 100_000 < n < 1_000_000


def test_cnn_tiny_rejects_too_small_inputs():
    with pytest.raises(ValueError, match="at least 10x10"):
        build_model("cnn-tiny", (3, 8, 8), 10)
