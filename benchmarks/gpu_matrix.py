"""The GPU speed matrix of benchmarks/RESULTS.md: `bench speed` for every family, precision and
input size, in one process, one JSON line per configuration (flushed as it lands, so a command
stopped at its time limit keeps what it measured).

    python benchmarks/gpu_matrix.py [--data DIR] [--models cnn,mlp2] [--inputs cifar10:32,imagenet10:64]
                                    [--precisions fp32,bf16,fp16] [--compile no|yes|both] [--steps 50]

DIR (default ../shared/datasets beside the repository) holds cifar10-jpeg.tar.gz and
imagenette-64.tar.gz; the device machine gets copies carried in the working tree. Other
datasets (cifar10-sample) need no archive. `imagenet10:128` upsamples the 64 px archive
(the 128 px one is too large to carry): right for speed, not for accuracy. A configuration that
fails prints a line with its error instead of stopping the matrix.

On the lent device machine (it has torch and timm, no bench install; one call runs at most 10
minutes, so split the matrix by --inputs or --models):
    here:  mkdir -p .gpu-data && cp ../shared/datasets/{cifar10-jpeg,imagenette-64}.tar.gz .gpu-data/
           echo /.gpu-data/ >> .git/info/exclude
    there (carry .gpu-data): PYTHONPATH=. python3 benchmarks/gpu_matrix.py --data .gpu-data > $OUT/gpu.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.config import RunConfig
from bench.speed import measure_speed

MODELS = "mlp2,resmlp,cnn,cnn-tiny,timm:resnet18,timm:convnext_atto"
INPUTS = "cifar10:32,imagenet10:64,imagenet10:128"
ARCHIVES = {"cifar10": "cifar10-jpeg.tar.gz", "imagenet10": "imagenette-64.tar.gz"}


def driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--inputs", default=INPUTS, help="dataset:pixels, comma-separated")
    parser.add_argument("--precisions", default="fp32,bf16,fp16")
    parser.add_argument("--compile", default="both", choices=["no", "yes", "both"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    compiles = {"no": [False], "yes": [True], "both": [False, True]}[args.compile]
    inputs = [(name, int(size)) for name, size in (item.split(":") for item in args.inputs.split(","))]
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "driver": driver_version()}
    for (dataset, size), model, precision, compile_ in itertools.product(
            inputs, args.models.split(","), args.precisions.split(","), compiles):
        config = RunConfig(model=model, loss="ce", dataset=dataset, data_root=str(args.data / ARCHIVES[dataset]) if dataset in ARCHIVES else None,
                           image_size=size, batch_size=args.batch_size, precision=precision, compile=compile_)
        start = time.perf_counter()
        try:
            line = measure_speed(config, args.steps, args.warmup)
        except Exception as exc:  # one broken configuration must not stop the matrix
            line = {"model": model, "dataset": dataset, "precision": precision, "compile": compile_,
                    "error": f"{type(exc).__name__}: {exc}"[:500]}
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        print(json.dumps({**line, "image_size": size, "wall_seconds": time.perf_counter() - start, **env}), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
