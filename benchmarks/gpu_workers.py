"""Grid throughput (runs per minute) with 1, 2, 4, 8 concurrent workers on one GPU, for issue #28's
"many small runs at once": the small families are launch-bound on an H200, so several processes
may keep it busier than one.

    python benchmarks/gpu_workers.py --data ../shared/datasets/cifar10-jpeg.tar.gz > FILE.jsonl

For each family and worker count: one fresh grid of `--runs` runs (seeds 0..runs-1 of family x ce,
`--epochs` epochs on `--limit-train` images), run by `bench.grid(..., workers=N)` through a shared
SQLite storage, timed from start to the last record (worker start-up and dataset loading included,
as a user's grid pays them). One JSON line per measurement (the lines starting with "{"; the
workers' own summary lines come between them): family, workers, runs, seconds, runs_per_minute,
completed. `--compile` adds torch.compile in each mode given (e.g. `--compile no,reduce-overhead`:
CUDA graphs, fewer launches a step), each measured at every worker count. Datasets are decoded once beforehand (bench's cache), so no worker
pays the decoding. Try it on a CPU first with tiny settings (`--runs 2 --epochs 1 --limit-train 512
--workers 1,2`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

import bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--families", default="mlp2,resmlp,cnn,airbench")
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit-train", type=int, default=10000)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--compile", default="no", help="comma-separated: no, default, reduce-overhead")
    args = parser.parse_args()
    settings = dict(dataset="cifar10", data_root=str(args.data.resolve()), epochs=args.epochs,
                    limit_train=args.limit_train, limit_test=2000, precision=args.precision)
    bench.api.config("mlp2", "ce", **settings)  # name and value errors before anything runs
    modes = args.compile.split(",")
    for mode in modes:
        bench.api.config("mlp2", "ce", **settings, **compiled(mode))
    for family in args.families.split(","):
        for mode in modes:
            for workers in map(int, args.workers.split(",")):
                out = Path(tempfile.mkdtemp(prefix=f"workers-{family}-{workers}-"))
                start = time.perf_counter()
                tally = bench.grid(models=family, losses="ce", seeds=range(args.runs), out=out, workers=workers,
                                   quiet=True, log=lambda *_: None, **settings, **compiled(mode))
                seconds = time.perf_counter() - start
                print(json.dumps({"family": family, "workers": workers, "compile": mode, "runs": args.runs,
                                  "seconds": seconds, "runs_per_minute": 60 * args.runs / seconds,
                                  "completed": tally.get("completed", 0), "epochs": args.epochs,
                                  "limit_train": args.limit_train, "precision": args.precision,
                                  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}),
                      flush=True)
                shutil.rmtree(out, ignore_errors=True)


def compiled(mode: str) -> dict:
    """Run settings for one --compile choice."""
    return {} if mode == "no" else {"compile": True, "compile_mode": mode}


if __name__ == "__main__":
    main()
