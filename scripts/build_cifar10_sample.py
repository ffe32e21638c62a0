"""Build bench/assets/cifar10-sample.tar.gz: a balanced sample of real CIFAR-10 images.

    python scripts/build_cifar10_sample.py [--source ../shared/datasets/cifar10-jpeg.tar.gz]

The JPEG bytes are copied unchanged from the source archive (train/<class>/NNNN.jpg,
test/<class>/NNNN.jpg); the pick is seeded and the archive byte-reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import io
import random
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/assets/cifar10-sample.tar.gz")
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    files: dict[tuple[str, str], dict[str, bytes]] = {}
    with tarfile.open(args.source, "r:gz") as src:
        for member in src:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 3 and parts[-3] in ("train", "test"):
                files.setdefault((parts[-3], parts[-2]), {})[parts[-1]] = src.extractfile(member).read()

    rng = random.Random(args.seed)
    quota = {"train": args.train_per_class, "test": args.test_per_class}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as out:
        for (split, cls), images in sorted(files.items()):
            for name in sorted(rng.sample(sorted(images), quota[split])):
                info = tarfile.TarInfo(f"{split}/{cls}/{name}")
                info.size, info.mode = len(images[name]), 0o644
                out.addfile(info, io.BytesIO(images[name]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buffer.getvalue())
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
