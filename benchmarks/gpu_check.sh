#!/usr/bin/env bash
# The GPU path, checked (issue 34): every learned policy trains 200 steps with --profile gpu
# --device cuda and is evaluated on 10 test episodes; one pixel-observation training
# (obs_mode=pixels_state); the CUDA scan (mamba-ssm's kernel where it is installed) against the
# CPU scan on the same inputs, values and gradients; then one table with the training steps per
# second, success and times of every run, read from the records.
#
#   bash benchmarks/gpu_check.sh --dry-run        # print the commands only (any machine)
#   bash benchmarks/gpu_check.sh [OUT]            # run them (a CUDA machine; OUT: runs/gpu-check)
#
# A failing command is reported and the others go on; the exit code is the number that failed.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
OUT="${1:-runs/gpu-check}"
STEPS=200
FAILED=0
COMMON=(--profile gpu --device cuda --env PassagePassing --source-hz 2.5 --episodes 10 --val-episodes 2
        --results-dir "$OUT/results" --checkpoints-dir "$OUT/checkpoints" --no-leaderboard)

run() {
    echo "+ $*"
    if [[ $DRY_RUN == 0 ]] && ! "$@"; then
        echo "FAILED: $*" >&2
        FAILED=$((FAILED + 1))
    fi
}

for policy in dp-c dp-t d-ma dispo vq-bet pf-dag e0 ct-t; do
    budget=(train_steps=$STEPS eval_every=$STEPS)
    case $policy in
        dispo) budget+=(finetune_steps=50) ;;               # also through the three fine-tuning rounds
        vq-bet) budget+=(tokenizer_steps=$STEPS) ;;
        pf-dag) budget+=(mode_steps=$STEPS) ;;
    esac
    run cfbench-eval --policy "$policy" "${COMMON[@]}" --variant gpu-check --set "${budget[@]}"
done
run cfbench-eval --policy dp-c "${COMMON[@]}" --variant gpu-check-pixels \
    --set obs_mode=pixels_state train_steps=$STEPS eval_every=$STEPS
run python benchmarks/scan_check.py --device cuda
if [[ $DRY_RUN == 0 ]]; then
    python - "$OUT/results" "$STEPS" <<'PY'
import sys
from pathlib import Path

import pandas as pd

from cfbench.results import read_all

records = read_all(Path(sys.argv[1]), allow_empty=True)
rows = [{"policy": r["policy"], "obs": r["provenance"]["config"].get("obs_mode", "state"),
         "train steps/s": round(int(sys.argv[2]) / max(r["metrics"]["train_wall_s"], 1e-9), 1),
         "train s": round(r["metrics"]["train_wall_s"]), "test s": round(r["metrics"]["eval_wall_s"]),
         "success %": 100 * r["metrics"]["success_rate"], "ms per chunk": r["metrics"].get("inference_ms_per_call"),
         "device": r["provenance"]["config"].get("device")} for r in records]
print(pd.DataFrame(rows).sort_values(["policy", "obs"]).to_string(index=False))
PY
fi
exit $FAILED
