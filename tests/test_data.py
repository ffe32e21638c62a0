import tarfile
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bench.augment import draw_crop_flip, normalize, random_crop_flip
from bench.config import RunConfig
from bench.datasets import channel_stats, prepare_splits, stratified_pick
from bench.errors import UsageError
from bench.imagefolder import ImageSet, load_image_tree
from bench import loader
from bench.loader import TensorBatches


def test_stratified_pick_is_exact_balanced_and_seeded():
    labels = torch.arange(10).repeat_interleave(50)
    a = stratified_pick(labels, 123, torch.Generator().manual_seed(1))
    b = stratified_pick(labels, 123, torch.Generator().manual_seed(1))
    c = stratified_pick(labels, 123, torch.Generator().manual_seed(2))
    assert len(a) == 123 and torch.equal(a, b) and not torch.equal(a, c)
    counts = torch.bincount(labels[a], minlength=10)
    assert counts.max() - counts.min() <= 1
    assert len(set(a.tolist())) == 123


def test_channel_stats_match_numpy():
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk=7)
    x = images.numpy().astype(np.float64) / 255
    assert np.allclose(mean, x.mean(axis=(0, 2, 3)))
    assert np.allclose(std, x.std(axis=(0, 2, 3)))


@pytest.mark.parametrize("fill", ["zeros", "reflect"])
def test_random_crop_flip_matches_pad_slice_flip(fill):
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(images, 2, *draw_crop_flip([6], 2, torch.Generator().manual_seed(3)), fill)
    g = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 5, (2, 6), generator=g)
    flips = torch.rand(6, generator=g) < 0.5
    mirrored = torch.tensor([2, 1, *range(8), 6, 5])  # reflect: the edge pixel is not repeated
    padded = F.pad(images, (2, 2, 2, 2)) if fill == "zeros" else images[:, :, mirrored][..., mirrored]
    for i in range(6):
        dy, dx = offsets[:, i].tolist()
        expected = padded[i, :, dy : dy + 8, dx : dx + 8]
        if flips[i]:
            expected = expected.flip(2)
        assert torch.equal(out[i], expected)
    assert flips.any() and not flips.all()


def batches_of(seed, device="cpu"):
    pixels = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(9))
    data = ImageSet(pixels, torch.arange(40) % 4, list("abcd"))
    return TensorBatches(data, 8, (0.5,) * 3, (0.25,) * 3, torch.device(device), train=True, seed=seed)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_split_in_pinned_host_memory_gives_the_batches_of_one_on_the_gpu(monkeypatch):
    """A split too big for the GPU stays in pinned host memory, and each batch is gathered into
    pinned memory again (indexing gives a pageable tensor, whose copy would block the host)."""
    on_gpu = [(x.cpu(), y.cpu()) for x, y in batches_of(0, "cuda").epoch(1)]
    monkeypatch.setattr(loader, "place", lambda images, device: images.pin_memory())
    pinned = batches_of(0, "cuda")
    assert pinned.pin_batches and pinned.labels.is_cuda
    from_host = [(x.cpu(), y.cpu()) for x, y in pinned.epoch(1)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(on_gpu, from_host))


def test_batches_depend_only_on_seed_and_epoch():
    first = [(x.clone(), y.clone()) for x, y in batches_of(0).epoch(1)]
    again = list(batches_of(0).epoch(1))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    other_epoch = list(batches_of(0).epoch(2))
    other_seed = list(batches_of(1).epoch(1))
    assert not torch.equal(first[0][1], other_epoch[0][1]) or not torch.equal(first[0][0], other_epoch[0][0])
    assert not torch.equal(first[0][0], other_seed[0][0])


def test_an_epochs_augmentation_is_drawn_batch_after_batch_as_before():
    """The loader draws a whole epoch's crops and flips at once (one copy to the GPU an epoch);
    they must be the draws of the earlier per-batch code, so published runs still reproduce."""
    loader, epoch = batches_of(5), 2
    order = loader.order(epoch)
    g = torch.Generator().manual_seed(5 * 100_003 + epoch + 50_000)
    for i, (x, y) in enumerate(loader.epoch(epoch)):
        index = order[i * 8 : (i + 1) * 8]
        offsets, flips = torch.randint(0, 9, (2, 8), generator=g), torch.rand(8, generator=g) < 0.5
        expected = normalize(random_crop_flip(loader.images[index], 4, offsets, flips), loader.mean, loader.std)
        assert torch.equal(x, expected) and torch.equal(y, loader.labels[index])
    assert i == len(loader) - 1


def write_tree(root, splits=("train", "test"), classes=("cat", "dog"), n=6, modes=("RGB", "L", "RGBA")):
    for split in splits:
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                mode = modes[i % len(modes)]
                Image.new(mode, (12, 10), color=(i * 20,) * len(mode) if mode != "L" else i * 20).save(
                    root / split / cls / f"{i}.png"
                )


def test_image_folder_and_tar_give_the_same_tensors(tmp_path):
    write_tree(tmp_path / "tree")
    with tarfile.open(tmp_path / "tree.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "tree", arcname="prefix")
    from_dir = load_image_tree(tmp_path / "tree", ("train", "test"), 16).splits
    from_tar = load_image_tree(tmp_path / "tree.tar.gz", ("train", "test"), 16).splits
    for split in ("train", "test"):
        assert from_dir[split].images.shape == (12, 3, 16, 16)
        assert torch.equal(from_dir[split].images, from_tar[split].images)
        assert from_dir[split].labels.tolist() == [0] * 6 + [1] * 6
    assert from_dir["train"].class_names == ["cat", "dog"]


def test_class_mismatch_and_bad_images_are_usage_errors(tmp_path):
    write_tree(tmp_path / "a")
    (tmp_path / "a" / "test" / "dog").rename(tmp_path / "a" / "test" / "wolf")
    with pytest.raises(UsageError, match="differ"):
        load_image_tree(tmp_path / "a", ("train", "test"), 16)
    write_tree(tmp_path / "b")
    (tmp_path / "b" / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UsageError, match="1 unreadable image file"):
        load_image_tree(tmp_path / "b", ("train", "test"), 16)


def test_val_is_carved_from_train_disjoint_and_per_seed(tmp_path):
    write_tree(tmp_path / "tree", n=10)
    config = RunConfig(model="cnn", loss="ce", dataset="cifar10", data_root=str(tmp_path / "tree"), val_fraction=0.2)
    s0, s0b = prepare_splits(config), prepare_splits(config)
    assert s0.sizes() == {"train": 16, "val": 4, "test": 20}
    assert torch.equal(s0.val.images, s0b.val.images)
    assert torch.bincount(s0.val.labels).tolist() == [2, 2]
    # seeds 0..4 cannot all carve the same val split
    vals = {tuple(prepare_splits(replace(config, seed=s)).val.images.sum((1, 2, 3)).tolist()) for s in range(5)}
    assert len(vals) > 1
