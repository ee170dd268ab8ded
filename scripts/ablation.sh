#!/usr/bin/env bash
# DRConv ablation: the shipped recipe (configs/default.yaml) on the same data and budget for every arm:
# DRConv m=8 (the default), the plain MobileFaceNet and (ARMS to choose) DRConv m=4, each with seeds 0 and 1.
# With DRFACE_TEACHER set, every arm distils from that ONNX teacher with utkface as unlabelled faces, as the
# shipped model does.
# Each run writes <runs>/<arm>-s<seed>/ with its artifact + card (10-fold CFP-FF/FP, training time);
# `python scripts/ablation_table.py <runs>` turns the cards into the README table.
#
#   scripts/ablation.sh [RUNS_DIR] [EPOCHS]        # defaults: runs/ablation 4
#   env: DRFACE_DATA_ROOT (../shared/data), DRFACE_CACHE_DIR (RUNS_DIR/../.cache), DRFACE_BIN (drface),
#        DRFACE_TEACHER (none), ARMS ("drconv-m8 plain drconv-m4")
#
# Resumable: a finished run (artifact present) is skipped, an interrupted one continues from its checkpoint.
# Monitoring is off until the last epoch so every arm spends the same time training.
set -euo pipefail

runs=${1:-runs/ablation}
epochs=${2:-4}
data=${DRFACE_DATA_ROOT:-../shared/data}
drface=${DRFACE_BIN:-drface}
cache=${DRFACE_CACHE_DIR:-$runs/../.cache}  # aligned faces, shared with the default run beside it
arms=${ARMS:-drconv-m8 plain drconv-m4}
distill_args=()
[[ -n "${DRFACE_TEACHER:-}" ]] && distill_args=(--teacher "$DRFACE_TEACHER" --unlabelled "$data/utkface")

for seed in 0 1; do
  for arm in $arms; do
    case $arm in
      drconv-m8) model_args=(--region-num 8) ;;
      drconv-m4) model_args=(--region-num 4) ;;
      plain) model_args=(--plain) ;;
    esac
    out="$runs/$arm-s$seed"
    if [[ -f "$out/drface-default.safetensors" ]]; then
      echo "ablation: $out done, skipped"
      continue
    fi
    resume=()
    [[ -f "$out/checkpoints/last.pt" ]] && resume=(--resume)
    echo "ablation: $out ($epochs epochs) started $(date -u +%FT%TZ)"
    "$drface" train --data "$data/celeba299" "$data/faces94" --out "$out" --epochs "$epochs" --seed "$seed" \
      "${model_args[@]}" "${distill_args[@]}" --set eval.every_epochs=1000 --set runtime.progress=false \
      --set "data.cache_dir=$cache" "${resume[@]}"
  done
done
