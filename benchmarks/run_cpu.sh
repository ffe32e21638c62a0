#!/usr/bin/env bash
# The CPU measurements recorded in benchmarks/RESULTS.md. Run on an otherwise idle machine:
#   bash benchmarks/run_cpu.sh > benchmarks/cpu-$(date +%F).jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
CIFAR=${CIFAR:-../shared/datasets/cifar10-jpeg.tar.gz}
# 1. bench's loop vs the DataLoader + PIL loop, same model, batch 128, 2 workers
python benchmarks/loader_vs_dataloader.py --model cnn-tiny --batch-size 128 --steps 150 --workers 2
python benchmarks/loader_vs_dataloader.py --model cnn --batch-size 128 --steps 30 --workers 2
# 2. train vs compute-only images/s for every model family and CPU precision
for model in cnn-tiny cnn mlp2 resmlp; do
  for precision in fp32 bf16; do
    bench speed --model "$model" --dataset cifar10 --data-root "$CIFAR" --batch-size 128 \
      --precision "$precision" --steps 40 --device cpu --json
  done
done
# 3. peak host memory of a full CIFAR-10 run (50,000 images, one epoch), from /usr/bin/time
/usr/bin/time -f '{"full_cifar10_run_peak_rss_kib": %M, "wall_seconds": %e}' \
  bench run --model cnn --loss ce --dataset cifar10 --data-root "$CIFAR" --epochs 1 --quiet --out /tmp/bench-mem 2>&1 | tail -1
