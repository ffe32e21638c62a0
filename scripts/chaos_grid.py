"""Kill a running grid at random moments, restart it, and check that nothing was lost or doubled.

    python scripts/chaos_grid.py [--kills 12] [--storage sqlite:///PATH] [--seed 0]

Runs a small grid (cnn x ce, focal, l1 x 2 seeds on the bundled cifar10-sample), SIGKILLs
it after a random delay --kills times, then lets it finish. At the end every grid point must have
exactly one valid completed record, and no checkpoint or temp file may be left behind. With
--storage the grid is shared through that Optuna storage (as several machines would share it).
Exit code 0 when that holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

EXPERIMENT = """
dataset = "cifar10-sample"
models = ["cnn"]
seeds = [0, 1]
epochs = 3
limit_train = 2000
limit_test = 200

[[losses]]
name = "ce"

[[losses]]
name = "focal"
gamma = 2.0

[[losses]]
name = "l1"
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--storage", help="Optuna storage URL to share the grid through")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=12.0, help="longest wait before a kill (s)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    experiment = work / "experiment.toml"
    experiment.write_text(EXPERIMENT)
    cmd = [sys.executable, "-m", "bench", "grid", str(experiment), "--quiet", "--out", str(work / "runs")]
    if args.storage:
        cmd += ["--storage", args.storage]
    kills = 0
    while kills < args.kills:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(0.3, args.max_delay)
        try:
            proc.wait(timeout=delay)
            print(f"the grid finished after only {kills} kills: raise the grid's size or lower --max-delay")
            return 1
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            print(f"kill {kills}: SIGKILL after {delay:.1f} s")
    final = subprocess.run(cmd, capture_output=True, text=True)
    print(final.stdout.strip().splitlines()[-1] if final.stdout.strip() else final.stderr.strip())
    records = []
    for path in (work / "runs").glob("*/record.json"):
        records.append(json.loads(path.read_text()))
    by_point = collections.Counter(r["config_hash"] for r in records if r["status"] == "completed")
    leftovers = list((work / "runs").glob("*/checkpoint.pt")) + list((work / "runs").glob("*/.*.tmp"))
    points = 6
    ok = (final.returncode == 0 and len(by_point) == points and set(by_point.values()) == {1}
          and all(r["status"] == "completed" for r in records) and not leftovers)
    resumed = sum(r.get("resumed_from") is not None for r in records)
    print(f"{kills} kills; {len(records)} records for {len(by_point)} of {points} points "
          f"({resumed} resumed from a checkpoint), "
          f"max {max(by_point.values(), default=0)} per point; leftovers: {len(leftovers)}; "
          f"{'OK' if ok else 'FAILED'} ({work})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
