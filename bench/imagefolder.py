"""Decode an image tree (a folder or a .tar.gz of `SPLIT/<class>/<image>`) once into uint8 tensors.

The decoded arrays are cached as .npy files keyed by the source's path, size, modification
time and the target image size, so the second run of a dataset starts in seconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from bench.errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CACHE_FORMAT = 1


@dataclass
class ImageSet:
    """Images as one uint8 tensor [N, C, H, W] with int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index], self.class_names)


def cache_root() -> Path:
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "bench"))


def is_tree(path: Path, splits: tuple[str, ...]) -> bool:
    return path.is_dir() and all((path / s).is_dir() for s in splits)


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar"))


def _walk_folder(root: Path, splits: tuple[str, ...]) -> Iterator[tuple[str, str, str, bytes]]:
    for split in splits:
        for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            for file in sorted(class_dir.iterdir()):
                if file.suffix.lower() in IMAGE_SUFFIXES:
                    yield split, class_dir.name, str(file), file.read_bytes()


def _walk_archive(path: Path, splits: tuple[str, ...]) -> Iterator[tuple[str, str, str, bytes]]:
    """Yield (split, class, member name, bytes); any leading folders before SPLIT are ignored."""
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            parts = Path(member.name).parts
            if not member.isfile() or Path(member.name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            hits = [i for i, part in enumerate(parts[:-2]) if part in splits]
            if not hits:
                continue
            i = hits[-1]
            if i + 2 != len(parts) - 1:
                continue  # not SPLIT/<class>/<file>
            yield parts[i], parts[i + 1], member.name, archive.extractfile(member).read()


def _decode(data: bytes, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


PROGRESS_SECONDS = 3.0  # a decode that takes longer says how far it is, every this many seconds
log = logging.getLogger("bench")


def _decode_tree(source: Path, splits: tuple[str, ...], size: int, skip_bad: bool) -> dict[str, dict]:
    walk = _walk_archive if is_archive(source) else _walk_folder
    found: dict[str, dict[str, list]] = {s: {} for s in splits}
    bad: list[str] = []
    if not is_archive(source):  # an empty class folder is a mistake, not a class with no images
        for split in splits:
            for class_dir in (source / split).iterdir():
                if class_dir.is_dir() and not any(
                    f.suffix.lower() in IMAGE_SUFFIXES for f in class_dir.iterdir()
                ):
                    raise UsageError(f"class folder {class_dir} holds no images; remove it or add images")
    start, seen, shown = time.monotonic(), 0, 0.0
    for split, cls, name, data in walk(source, splits):
        try:
            found[split].setdefault(cls, []).append(_decode(data, size))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            bad.append(name)
        seen += 1
        if (elapsed := time.monotonic() - start) - shown >= PROGRESS_SECONDS:  # quick decodes print nothing
            if not shown:
                log.info("decoding the images of %s at %d px, once (later starts read the cache under %s)",
                         source, size, cache_root() / "decoded")
            log.info("  %s images decoded (%.0f s)", f"{seen:,}", elapsed)
            shown = elapsed
    if shown:
        log.info("decoded %s images in %.0f s", f"{seen:,}", time.monotonic() - start)
    if bad and not skip_bad:
        raise UsageError(
            f"{len(bad)} unreadable image file(s) in {source}, first: {', '.join(bad[:3])}; remove or "
            "replace them, or pass --skip-bad-images"
        )
    empty = [s for s in splits if not found[s]]
    if empty:
        raise UsageError(
            f"{source} has no images under {'/, '.join(empty)}/ (expected SPLIT/<class>/<image>)"
        )
    class_names = sorted(found[splits[0]])
    for split in splits[1:]:
        if sorted(found[split]) != class_names:
            raise UsageError(
                f"{source}: classes of {split}/ {sorted(found[split])} differ from {splits[0]}/ {class_names}"
            )
    out = {}
    for split in splits:
        arrays = [np.stack(found[split][c]) for c in class_names]
        labels = np.concatenate([np.full(len(a), i, dtype=np.int64) for i, a in enumerate(arrays)])
        out[split] = {"images": np.concatenate(arrays), "labels": labels}
    return {"splits": out, "class_names": class_names, "skipped": bad}


def _cache_key(source: Path, splits: tuple[str, ...], size: int, skip_bad: bool) -> str:
    stat = source.stat()
    ident = [CACHE_FORMAT, str(source.resolve()), stat.st_size, stat.st_mtime_ns, splits, size, skip_bad]
    return hashlib.sha1(json.dumps(ident).encode()).hexdigest()[:16]


@dataclass
class DecodedTree:
    splits: dict[str, ImageSet]
    skipped: list[str]  # unreadable files left out (only with skip_bad)


def load_image_tree(source: Path, splits: tuple[str, ...], size: int, skip_bad: bool = False) -> DecodedTree:
    """Decode (or load from cache) every image of `source` at `size` x `size` pixels.

    `source` is a folder or a .tar.gz holding SPLIT/<class>/<image> for each of `splits`.
    """
    key = _cache_key(source, splits, size, skip_bad)
    folder = cache_root() / "decoded" / f"{source.name}-{size}px-{key}"
    if not (folder / "meta.json").exists():
        decoded = _decode_tree(source, splits, size, skip_bad)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
        for split, arrays in decoded["splits"].items():
            np.save(tmp / f"{split}-images.npy", arrays["images"])
            np.save(tmp / f"{split}-labels.npy", arrays["labels"])
        meta = {"class_names": decoded["class_names"], "skipped": decoded["skipped"]}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            tmp.rename(folder)
        except OSError:  # another process cached it first
            shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads((folder / "meta.json").read_text())
    sets = {
        split: ImageSet(
            torch.from_numpy(np.load(folder / f"{split}-images.npy")),
            torch.from_numpy(np.load(folder / f"{split}-labels.npy")),
            meta["class_names"],
        )
        for split in splits
    }
    return DecodedTree(sets, meta["skipped"])
