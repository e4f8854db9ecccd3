#!/usr/bin/env bash
# GPU check: what CI (CPU only) cannot run. On a machine with an NVIDIA GPU, from the repo root:
#
#     bash scripts/gpu_check.sh [OUT]
#
# 1. the whole test suite with CUDA visible (`--device auto` then picks the GPU);
# 2. bench/tag_throughput.py on cuda (bf16 auto against fp32, plain loop, forward ceiling);
# 3. bench/feeding.py: what the decoding processes deliver with a no-op model, against the
#    real ViT-B/16 path on cuda with the same workers (issue 17: at least 80% of it);
# 4. bench/train_throughput.py on cuda (stage 1 images/s, stage 2 against the baseline);
# 5. `mkt-tag train --amp` on cuda stopped after 2 steps, resumed to the end, then `eval`;
# 6. the same training under `torchrun --nproc_per_node 1` on NCCL (one process still joins a
#    process group: DDP, all_reduce, barriers): epoch 1 and its validation, a stop
#    (--max-steps), a resume to the end, then a check of the run folder.
#
# Logs go to OUT (default bench/out/gpu); each part runs under a time limit and the script
# goes on after a failure, printing a PASS/FAIL line per part. Expects mkt-tag's dependencies
# importable (pip install -e . or PYTHONPATH=src).
set -uo pipefail
out=${1:-bench/out/gpu}
work=${WORK:-/tmp/mkt-gpu}
mkdir -p "$out" "$work"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
status=0

part() {  # part NAME SECONDS COMMAND...: run with a limit, log to OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    local verdict=PASS
    [ $rc -eq 0 ] || { verdict="FAIL (exit $rc)"; status=1; }
    echo "$verdict  $name  $((SECONDS - started)) s"
    tail -n "${TAIL:-25}" "$out/$name.log"
    echo
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

TAIL=8 part pytest 240 $python -m pytest -q -p no:cacheprovider tests
part tag 200 $python bench/tag_throughput.py --device cuda --n-large 48 --n-small 96 \
    --out "$work/bench"
cpus=$(nproc)
feeding=(--n 480 --workers 8 $((cpus - cpus / 8)) --rounds 2 --out "$work/bench")
part feeding-no-op 300 $python bench/feeding.py "${feeding[@]}" --parts decode handover pipeline
part feeding-gpu 300 $python bench/feeding.py "${feeding[@]}" --parts tagger cli \
    --model ViT-B-16 --device cuda
part train 150 $python bench/train_throughput.py --device cuda --images 256 --batch-size 32 \
    --out "$work/bench"

data=$work/bench/train
export HF_HUB_OFFLINE=1 MKT_TAG_CACHE=$work/bench/cache
train=(
    $python -m mkt_tag train --data "$data/data-0.csv" --val "$data/data-1.csv"
    --labels "$data/labels.txt" --model ViT-B-16:openai --device cuda --amp
    --epochs 1 --warmup-epochs 0 --prompt-epochs 1 --batch-size 32 --prompt-batch-size 32
)
rm -rf "$work/amp"
part amp-stop 120 "${train[@]}" --out "$work/amp" --max-steps 2
part amp-resume 120 $python -m mkt_tag train --resume "$work/amp"
part amp-eval 120 $python -m mkt_tag eval --data "$data/data-1.csv" --labels "$data/labels.txt" \
    --model "$work/amp/best" --device cuda --out "$work/amp-eval"

# 256 images at batch 32: 8 steps an epoch. --max-steps 9 stops one step into epoch 2, after
# epoch 1's validation has been reduced over the NCCL group.
torchrun=($python -m torch.distributed.run --standalone --nproc_per_node 1 -m mkt_tag train)
rm -rf "$work/nccl"
NCCL_DEBUG=INFO part nccl-stop 240 "${torchrun[@]}" --data "$data/data-0.csv" \
    --val "$data/data-1.csv" --labels "$data/labels.txt" --model ViT-B-16:openai --device cuda \
    --epochs 2 --warmup-epochs 1 --prompt-epochs 1 --batch-size 32 --prompt-batch-size 32 \
    --out "$work/nccl" --max-steps 9
part nccl-used 10 grep -m 3 "NCCL INFO" "$out/nccl-stop.log"
part nccl-stopped 10 $python -c '
import csv, json, sys
run = sys.argv[1]
state = json.load(open(f"{run}/state/state.json"))
rows = list(csv.DictReader(open(f"{run}/metrics.csv")))
print(state, rows, sep="\n")
assert state["total_steps"] == 9 and state["done"] == [], state
assert [(r["stage"], r["epoch"]) for r in rows] == [("1", "1")] and rows[0]["val_map"], rows
' "$work/nccl"
part nccl-resume 300 "${torchrun[@]}" --resume "$work/nccl"
part nccl-finished 10 $python -c '
import csv, json, sys
run = sys.argv[1]
state = json.load(open(f"{run}/state/state.json"))
rows = list(csv.DictReader(open(f"{run}/metrics.csv")))
print(state, rows, sep="\n")
assert state["done"] == [1, 2] and state["total_steps"] == 24, state
assert [(r["stage"], r["epoch"]) for r in rows] == [("1", "1"), ("1", "2"), ("2", "1")], rows
' "$work/nccl"
cp "$work/bench/"*.json "$out/" 2>/dev/null
exit $status
