"""Does bf16 autocast on the CPU change the answer? Paired runs, fp32 against bf16, same cells and
seeds: the difference in test accuracy, its 95% interval, a paired t-test and an equivalence test
(TOST, ±0.5 pp). Runs into benchmarks/bf16-accuracy/ (resumable) and prints a markdown table.

    python benchmarks/bf16_accuracy.py

Cells: imagenet10 mlp2 x ce at its board's budget and tuned lr (30 epochs on 3,600 images,
lr 0.014), and cifar10 cnn x ce at a reduced budget (5 epochs on 10,000 images, the board's tuned
lr 0.0358; the board's own 10 epochs on 45,000 would take an hour per precision here).
"""

from __future__ import annotations

import sys
from pathlib import Path

import bench
from bench.stats import equivalence_p, paired_comparison, probability_better

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
OUT = Path(__file__).resolve().parent / "bf16-accuracy"
CELLS = {
    "imagenet10 mlp2 x ce (30 epochs, 3,600 images)": dict(
        model="mlp2", loss="ce", dataset="imagenet10", data_root=str(SHARED / "imagenette-128.tar.gz"),
        epochs=30, lr=0.014, label_smoothing=0.0),
    "cifar10 cnn x ce (5 epochs, 10,000 images)": dict(
        model="cnn", loss="ce", dataset="cifar10", data_root=str(SHARED / "cifar10-jpeg.tar.gz"),
        epochs=5, limit_train=10000, lr=0.0358, label_smoothing=0.0),
}
SEEDS = range(5)


def main() -> None:
    print("| cell | fp32 mean % | bf16 mean % | bf16 - fp32 (pp) | 95% CI (pp) | p (paired t) | "
          "p equiv. (±0.5 pp) | P(bf16 > fp32) | fp32 / bf16 train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, cell in CELLS.items():
        acc, seconds = {}, {}
        for precision in ("fp32", "bf16"):
            runs = [bench.run(**cell, seed=seed, precision=precision, device="cpu", out=OUT, resume=True)
                    for seed in SEEDS]
            assert all(r["config"]["precision"] == precision for r in runs)
            acc[precision] = [r["metrics"]["test"]["accuracy"] for r in runs]
            seconds[precision] = sum(r["timing"]["train_seconds"] for r in runs) / len(runs)
            print(f"{name} {precision}: {[round(100 * a, 2) for a in acc[precision]]}", file=sys.stderr)
        p = paired_comparison(acc["bf16"], acc["fp32"])
        equiv = equivalence_p(acc["bf16"], acc["fp32"], 0.005)
        print(f"| {name} | {100 * sum(acc['fp32']) / 5:.2f} | {100 * sum(acc['bf16']) / 5:.2f} | "
              f"{100 * p.mean_diff:+.2f} | [{100 * p.ci_low:+.2f}, {100 * p.ci_high:+.2f}] | {p.p_value:.3g} | "
              f"{equiv:.3g} | {probability_better(acc['bf16'], acc['fp32']):.2f} | "
              f"{seconds['fp32']:.0f} / {seconds['bf16']:.0f} |")


if __name__ == "__main__":
    main()
