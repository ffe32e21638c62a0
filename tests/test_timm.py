"""timm backbones by name, adapted to small images, with size and cost in every record."""

import pytest
import torch

from bench.config import RunConfig
from bench.models import MODELS, ModelSpec, build_model
from bench.train import run

TIMM_MODELS = ["resnet18", "efficientnet_b0", "convnext_atto", "vit_tiny_patch16_224", "mobilenetv3_small_100"]


def test_cifar_stem_replaces_the_imagenet_stem():
    small = build_model("timm:resnet18", (3, 32, 32), 10, stem="cifar")
    large = build_model("timm:resnet18", (3, 32, 32), 10, stem="imagenet")
    assert small.stem == "cifar" and large.stem == "imagenet"
    assert small.module.conv1.kernel_size == (3, 3) and small.module.conv1.stride == (1, 1)
    assert isinstance(small.module.maxpool, torch.nn.Identity)
    assert large.module.conv1.kernel_size == (7, 7)
    assert build_model("timm:resnet18", (3, 32, 32), 10).stem == "cifar"  # auto at 32 px
    assert build_model("timm:resnet18", (3, 64, 64), 10).stem == "imagenet"  # auto above 32 px
    assert small.module(torch.randn(2, 3, 32, 32)).shape == (2, 10)



def test_patchify_stems_get_small_image_variants():
    convnext = build_model("timm:convnext_atto", (3, 32, 32), 10, stem="cifar")
    assert convnext.stem == "cifar" and convnext.module.stem[0].stride == (1, 1)
    auto = build_model("timm:convnext_atto", (3, 32, 32), 10)  # auto keeps the patchify stem
    assert auto.stem == "imagenet" and auto.module.stem[0].stride == (4, 4)
    vit = build_model("timm:vit_tiny_patch16_224", (3, 32, 32), 10, stem="cifar")
    assert vit.stem == "cifar" and tuple(vit.module.patch_embed.grid_size) == (8, 8)  # 4 px patches
    large = build_model("timm:vit_tiny_patch16_224", (3, 32, 32), 10)
    assert large.stem == "imagenet" and tuple(large.module.patch_embed.grid_size) == (2, 2)
    assert vit.module(torch.randn(2, 3, 32, 32)).shape == (2, 10)

def test_bogus_timm_name_lists_the_closest(cli):
    code, _, err = cli("run", "--model", "timm:resnet19x", "--loss", "ce", "--dataset", "cifar10-sample")
    assert code == 2 and err.count("\n") == 1 and "closest:" in err and "resnet" in err


def test_timm_listing_with_wildcards(cli):
    code, out, _ = cli("models", "--timm", "convnext_at*")
    assert code == 0 and "timm:convnext_atto" in out and "resnet" not in out


def test_pretrained_offline_is_a_clear_error_and_weights_file_loads(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["run", "--model", "timm:mobilenetv3_small_100", "--loss", "ce", "--dataset", "cifar10-sample",
            "--epochs", "1", "--limit-train", "100", "--limit-test", "20", "--quiet", "--out", str(tmp_path)]
    code, _, err = cli(*args, "--pretrained")
    assert code == 2 and "pretrained weights" in err and "--weights FILE" in err
    weights = tmp_path / "w.pt"
    torch.save(build_model("timm:mobilenetv3_small_100", (3, 32, 32), 10).module.state_dict(), weights)
    code, _, err = cli(*args, "--weights", str(weights))
    assert code == 0, err
    wrong = tmp_path / "wrong.pt"
    torch.save(build_model("timm:resnet18", (3, 32, 32), 10).module.state_dict(), wrong)
    code, _, err = cli(*args, "--weights", str(wrong))
    assert code == 2 and "does not fit" in err


@pytest.fixture
def oom_model():
    """A model that runs out of memory above 64 images per batch, like a GPU would."""
    name = "test-oom-above-64"

    class OOMAbove64(torch.nn.Module):
        def __init__(self, shape, k):
            super().__init__()
            self.linear = torch.nn.Linear(shape[0] * shape[1] * shape[2], k)

        def forward(self, x):
            if len(x) > 64:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.linear(x.flatten(1))

    if name not in MODELS:
        MODELS.add(name, ModelSpec(name, OOMAbove64, False))
    return name


def test_out_of_memory_names_the_batch_size_and_auto_batch_halves(cli, oom_model, tmp_path):
    args = ["run", "--model", oom_model, "--loss", "ce", "--dataset", "cifar10-sample", "--epochs", "1",
            "--limit-train", "600", "--limit-test", "50", "--batch-size", "256", "--quiet", "--out", str(tmp_path)]
    code, _, err = cli(*args)
    assert code == 2 and "out of memory" in err and "batch size 256" in err and "--auto-batch" in err
    code, _, err = cli(*args, "--auto-batch")
    assert code == 0, err
    records = [p.read_text() for p in tmp_path.glob("*/record.json")]
    assert any('"batch_size_used": 64' in r and '"completed"' in r for r in records)


@pytest.mark.integration
@pytest.mark.parametrize("name", TIMM_MODELS)
def test_timm_models_train_on_cifar10_and_imagenet10(name, tmp_path, cifar10_archive, imagenette64_archive):
    for dataset, root in (("cifar10", cifar10_archive), ("imagenet10", imagenette64_archive)):
        config = RunConfig(model=f"timm:{name}", loss="ce", dataset=dataset, data_root=str(root),
                           epochs=1, limit_train=128, limit_test=64, batch_size=64)
        record = run(config, tmp_path)[0]
        assert record["status"] == "completed"
        assert record["model"]["params"] > 100_000 and record["model"]["macs"] > 1_000_000
        assert record["model"]["stem"] in ("cifar", "imagenet")
        assert len(record["metrics"]["test"]["per_class"]) == 10
