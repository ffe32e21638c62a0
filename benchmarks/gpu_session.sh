#!/usr/bin/env bash
# Issue #15 on a lent GPU machine (a session gets about 15 minutes of device time, one call at most
# 10): every step has its own time box, writes under $OUT as it goes, and a step that fails or runs
# out of time never stops the next one. STEPS picks the steps, in this order:
#   tests    the GPU-only tests (the pinned-batch path)
#   matrix   the speed matrix (benchmarks/gpu_matrix.py): every family x fp32/bf16/fp16 x 32/64/128 px
#   board    the GPU board (leaderboards/imagenet10-gpu), --workers processes sharing one GPU; stopped
#            with SIGINT at its box (a later start of the same grid resumes what it stopped)
#   timed    one cnn x ce run on CIFAR-10 (the CPU board's tuned lr, 10 epochs), bf16
#   compile  the matrix with torch.compile, bf16, 32 px
#   airbench issue #28's speed-run board (leaderboards/cifar10-airbench-gpu: bench's airbench model at
#            airbench94's recipe x ce, ce+ls 0.2, focal, poly1 x 5 seeds), --workers AIRBENCH_WORKERS
#            processes; not yet measured on a GPU (airbench94: 3-4 s a run on an A100)
#   workers  grid throughput with 1, 2, 4, 8 workers on the GPU (benchmarks/gpu_workers.py, WORKERS_ARGS;
#            CUDA graphs beside them: WORKERS_ARGS="--families mlp2 --compile no,reduce-overhead")
#   peer     airbench94 itself (the airbench package, carried as a wheel) on the same images, timed:
#            benchmarks/airbench_peer.py, PEER_RUNS runs after a warm-up
#
# Measured on an H200 (2026-11-26): datasets decoded in 47 s; the matrix took about 230 s (30 steps
# a configuration); the board about 5 minutes with 6 workers (80 tuning trials, 50 eval runs);
# timed 25 s; compile 1-28 s a model before its measurement. So the whole issue needs two calls,
# e.g. STEPS="tests matrix compile" then STEPS="board timed" on the same warm machine.
# Issue #28's remaining GPU work (planned 2026-12-03, not yet run): STEPS="airbench peer" first (the
# speed-run board and airbench94 beside it, about 6 minutes), then STEPS="board workers" if device
# time is left (the unfinished imagenet10-gpu runs, the workers table).
#
# Here, once:  mkdir -p .gpu-data && cp ../shared/datasets/{cifar10-jpeg,imagenette-64}.tar.gz .gpu-data/
#              echo /.gpu-data/ >> .git/info/exclude   (and optuna's wheels in .whl/, see ../.library/device;
#              for the peer step: pip wheel --no-deps -w .whl airbench==0.1.8, a pure-Python sdist)
# There (carry .gpu-data and .whl):  STEPS="..." bash benchmarks/gpu_session.sh
# Boxes and sizes are variables (MATRIX_BOX, BOARD_BOX, WORKERS, ...) so the script can be tried
# end to end on a CPU with tiny settings first. $OUT brings back at most 8 files: the logs come back
# as one logs.tar.gz, the records as results.tar.gz.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 BENCH_HEARTBEAT_SECONDS=${BENCH_HEARTBEAT_SECONDS:-3}
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
DATA=../shared/datasets
PY=${PY:-python3}
STEPS=${STEPS:-tests matrix board timed compile}
SETUP_BOX=${SETUP_BOX:-60} TEST_BOX=${TEST_BOX:-30} MATRIX_BOX=${MATRIX_BOX:-270} BOARD_BOX=${BOARD_BOX:-360}
TIMED_BOX=${TIMED_BOX:-60} COMPILE_BOX=${COMPILE_BOX:-150} WORKERS=${WORKERS:-6}
AIRBENCH_BOX=${AIRBENCH_BOX:-240} AIRBENCH_WORKERS=${AIRBENCH_WORKERS:-4}
AIRBENCH=${AIRBENCH:-leaderboards/cifar10-airbench-gpu/experiment.toml}
PEER_BOX=${PEER_BOX:-150} PEER_RUNS=${PEER_RUNS:-5}
WORKERS_BOX=${WORKERS_BOX:-240} WORKERS_ARGS=${WORKERS_ARGS:-"--families mlp2,cnn,airbench --runs 8 --epochs 3"}
MATRIX_ARGS=${MATRIX_ARGS:-"--compile no --steps 30 --warmup 10"}
COMPILE_ARGS=${COMPILE_ARGS:-"--compile yes --precisions bf16 --inputs cifar10:32 --models cnn,timm:resnet18,mlp2,timm:convnext_atto,resmlp,cnn-tiny --steps 30 --warmup 10"}
TIMED_ARGS=${TIMED_ARGS:-"--epochs 10"}
BOARD=${BOARD:-leaderboards/imagenet10-gpu/experiment.toml} RUNS_OUT=${RUNS_OUT:-gpu-runs}

log() { echo "[$(date -u +%T) +${SECONDS}s] $*" | tee -a "$OUT/session.log"; }
box() {  # box SECONDS NAME COMMAND...: SIGINT at the box, SIGKILL 20 s later; output in $OUT/NAME.log
    local seconds=$1 name=$2; shift 2
    case " $STEPS " in *" $name "*) ;; *) return ;; esac
    log "$name: start (box ${seconds}s)"
    timeout -s INT -k 20 "$seconds" "$@" >"$OUT/$name.log" 2>&1
    log "$name: exit $? after ${SECONDS}s in all"
}

log "setup"
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >>"$OUT/session.log" 2>&1 || log "wheel install failed"
fi
mkdir -p "$DATA"
for f in .gpu-data/*.tar.gz; do [ -e "$DATA/$(basename "$f")" ] || ln -s "$PWD/$f" "$DATA/"; done
{ nvidia-smi; $PY -c "import torch, timm, optuna; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__, 'optuna', optuna.__version__)"; } \
    >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tail -3

# Decode each dataset once (cached for every later step), three at a time, beside the GPU tests.
decode() {  # decode NAME ARGS...: a one-step CPU speed run leaves the decoded splits in bench's cache
    local name=$1; shift
    timeout "$SETUP_BOX" $PY -m bench speed --model mlp2 --device cpu --steps 1 --warmup 0 --json "$@" \
        >"$OUT/decode-$name.log" 2>&1
}
decode cifar10 --dataset cifar10 --data-root $DATA/cifar10-jpeg.tar.gz &
decode in64 --dataset imagenet10 --data-root $DATA/imagenette-64.tar.gz --image-size 64 &
decode in128 --dataset imagenet10 --data-root $DATA/imagenette-64.tar.gz --image-size 128 &
box "$TEST_BOX" tests $PY -m pytest -q -p no:cacheprovider tests/test_data.py -k "pinned or cuda or gpu"
wait
log "decoded: $(ls "${BENCH_CACHE:-$HOME/.cache/bench}/decoded" 2>/dev/null | tr '\n' ' ')"

box "$MATRIX_BOX" matrix $PY benchmarks/gpu_matrix.py --data $DATA $MATRIX_ARGS
box "$BOARD_BOX" board $PY -m bench grid "$BOARD" --workers "$WORKERS"

# The CPU board's cnn x ce cell (leaderboards/cifar10: lr tuned there, plain ce, 10 epochs, seed 0).
box "$TIMED_BOX" timed $PY -m bench run --model cnn --loss ce --label-smoothing 0 --dataset cifar10 \
    --data-root $DATA/cifar10-jpeg.tar.gz --lr 0.03576378881291617 --seed 0 --precision bf16 --out "$RUNS_OUT" $TIMED_ARGS

box "$COMPILE_BOX" compile $PY benchmarks/gpu_matrix.py --data $DATA $COMPILE_ARGS
box "$AIRBENCH_BOX" airbench $PY -m bench grid "$AIRBENCH" --workers "$AIRBENCH_WORKERS"
box "$PEER_BOX" peer $PY benchmarks/airbench_peer.py --data $DATA/cifar10-jpeg.tar.gz --runs "$PEER_RUNS"
box "$WORKERS_BOX" workers $PY benchmarks/gpu_workers.py --data $DATA/cifar10-jpeg.tar.gz $WORKERS_ARGS
board_dir=$(dirname "$BOARD")
log "board records: $(ls "$board_dir"/runs/*/record.json 2>/dev/null | wc -l)"
tar czf "$OUT/results.tar.gz" --exclude=checkpoint.pt "$board_dir/runs" "$(dirname "$AIRBENCH")/runs" "$RUNS_OUT" \
    2>>"$OUT/session.log"
log "done"
(cd "$OUT" && tar czf logs.tar.gz ./*.log env.txt && rm -f ./*.log env.txt)
