"""Dataset protocols and variants: imagenet10's 3:1:1 split, long tails, noisy labels, folder:PATH."""

from dataclasses import replace

import pytest
import torch
from PIL import Image

from bench.config import RunConfig
from bench.datasets import prepare_splits
from bench.imagefolder import ImageSet
from bench.variants import CIFAR10_PAIR_FLIPS, long_tail, long_tail_counts, noisy_labels

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def balanced_set(per_class=100, names=CIFAR10_NAMES):
    labels = torch.arange(len(names)).repeat_interleave(per_class)
    return ImageSet(torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8), labels, list(names))


def test_long_tail_profile_is_exponential_with_ratio_r():
    counts = long_tail_counts(5000, 10, 100)
    assert counts[0] == 5000 and counts[-1] == 50
    assert all(a > b for a, b in zip(counts, counts[1:]))
    lt = long_tail(balanced_set(500), 10, torch.Generator().manual_seed(0))
    got = torch.bincount(lt.labels).tolist()
    assert got == long_tail_counts(500, 10, 10) and got[0] / got[-1] == 10


def test_symmetric_noise_flips_exactly_the_rate_to_other_classes():
    clean = balanced_set(100)
    noisy = noisy_labels(clean, 0.4, "symmetric", torch.Generator().manual_seed(0))
    flipped = noisy.labels != clean.labels
    assert flipped.sum().item() == 400
    assert len(torch.unique(noisy.labels[flipped])) == 10


def test_asymmetric_noise_flips_only_the_cifar10_pairs():
    clean = balanced_set(100)
    noisy = noisy_labels(clean, 0.4, "asymmetric", torch.Generator().manual_seed(0))
    for c, name in enumerate(CIFAR10_NAMES):
        moved = noisy.labels[clean.labels == c]
        if name in CIFAR10_PAIR_FLIPS:
            target = CIFAR10_NAMES.index(CIFAR10_PAIR_FLIPS[name])
            assert (moved == target).sum().item() == 40 and (moved == c).sum().item() == 60
        else:
            assert (moved == c).all()


def write_flat(root, classes, n, size=(20, 20)):
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", size, color=(i, 3 * i, 5)).save(root / cls / f"{i}.png")


def test_folder_dataset_without_split_level_is_split_4_to_1(tmp_path):
    write_flat(tmp_path / "pets", ["cat", "dog", "emu"], 10)
    config = RunConfig(model="cnn", loss="ce", dataset=f"folder:{tmp_path / 'pets'}", image_size=16)
    data = prepare_splits(config)
    assert data.sizes() == {"train": 22, "val": 2, "test": 6}
    assert data.class_names == ["cat", "dog", "emu"]
    assert torch.bincount(data.test.labels).tolist() == [2, 2, 2]


def test_imagenet10_needs_600_images_per_class(cli, tmp_path):
    write_flat(tmp_path / "inet", ["n01440764", "n02102040"], 5)
    code, _, err = cli("run", "--model", "cnn", "--loss", "ce", "--dataset", "imagenet10",
                       "--data-root", str(tmp_path / "inet"), "--quiet")
    assert code == 2 and "needs 600 images per class" in err and "tench (5)" in err


def test_empty_class_folder_and_skip_bad_images(cli, tmp_path):
    write_flat(tmp_path / "a", ["x", "y"], 10)
    (tmp_path / "a" / "z").mkdir()
    code, _, err = cli("run", "--model", "cnn-tiny", "--loss", "ce", "--dataset", f"folder:{tmp_path / 'a'}", "--quiet")
    assert code == 2 and "holds no images" in err
    write_flat(tmp_path / "b", ["x", "y"], 10)
    (tmp_path / "b" / "x" / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    args = ["run", "--model", "cnn-tiny", "--loss", "ce", "--dataset", f"folder:{tmp_path / 'b'}", "--quiet",
            "--epochs", "1", "--out", str(tmp_path / "runs")]
    code, _, err = cli(*args)
    assert code == 2 and "1 unreadable image file" in err and "bad.jpg" in err and "--skip-bad-images" in err
    code, _, err = cli(*args, "--skip-bad-images")
    assert code == 0, err
    [record] = (tmp_path / "runs").glob("*/record.json")
    assert '"skipped_images": 1' in record.read_text()


@pytest.mark.parametrize(
    "flag, value, message",
    [("--imbalance", "0.5", "--imbalance must be at least 1"), ("--label-noise", "1", "--label-noise must lie in [0, 1)"),
     ("--label-noise", "-0.1", "--label-noise must lie in [0, 1)")],
)
def test_bad_variant_values_exit_2(cli, flag, value, message):
    code, _, err = cli("run", "--model", "cnn", "--loss", "ce", "--dataset", "cifar10-sample", flag, value, "--quiet")
    assert code == 2 and message in err


@pytest.mark.integration
def test_imagenet10_protocol_on_imagenette(imagenette64_archive):
    config = RunConfig(model="cnn", loss="ce", dataset="imagenet10", data_root=str(imagenette64_archive))
    data = prepare_splits(config)
    assert data.sizes() == {"train": 3600, "val": 1200, "test": 1200}
    for split, per_class in ((data.train, 360), (data.val, 120), (data.test, 120)):
        assert torch.bincount(split.labels).tolist() == [per_class] * 10
    assert data.class_names[:3] == ["tench", "English springer", "cassette player"]
    assert data.input_shape == (3, 64, 64)
    again = prepare_splits(replace(config, seed=5))  # the run seed does not move the protocol split
    assert torch.equal(again.test.images, data.test.images)
    other = prepare_splits(replace(config, split_seed=1))
    assert not torch.equal(other.test.images, data.test.images)


@pytest.mark.integration
def test_cifar10_long_tail_and_label_noise(cifar10_archive):
    base = RunConfig(model="cnn", loss="ce", dataset="cifar10", data_root=str(cifar10_archive))
    clean = prepare_splits(base)
    lt = prepare_splits(replace(base, imbalance=100))
    counts = torch.bincount(lt.train.labels).tolist()
    assert counts[0] == 4500 and counts[-1] == 45 and lt.name == "cifar10-lt100"
    assert torch.bincount(lt.val.labels).tolist() == [500] * 10
    noisy = prepare_splits(replace(base, label_noise=0.4))
    assert torch.equal(noisy.train.images, clean.train.images)
    rate = (noisy.train.labels != clean.train.labels).double().mean().item()
    assert abs(rate - 0.4) <= 0.01 and noisy.name == "cifar10-sym0.4"
    assert torch.equal(noisy.test.labels, clean.test.labels)  # test is always clean
    # by default val carries the same noise as train (a real user has no clean labels)...
    assert torch.equal(noisy.val.images, clean.val.images)
    assert (noisy.val.labels != clean.val.labels).double().mean().item() == pytest.approx(0.4, abs=1e-9)
    # ...unless asked; train is the same either way
    clean_val = prepare_splits(replace(base, label_noise=0.4, clean_val=True))
    assert torch.equal(clean_val.val.labels, clean.val.labels) and clean_val.name == "cifar10-sym0.4-cleanval"
    assert torch.equal(clean_val.train.labels, noisy.train.labels)
    assert replace(base, clean_val=True).config_hash() == base.config_hash()  # no noise: no difference
    assert replace(base, label_noise=0.4, clean_val=True).config_hash() != replace(base, label_noise=0.4).config_hash()
