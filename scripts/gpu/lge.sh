#!/usr/bin/env bash
# LGE model family on a lent CUDA GPU, in one call of under 9 minutes: trains the 5 cross-validation folds and the
# two leave-one-centre-out models in parallel, evaluates them, exports the shipped ensemble, and writes everything
# to $OUT (runs/, EVALUATION.md/.json, models/lge_unet.{onnx,json,pt}, train logs, nvidia-smi).
#
# Run through the device tool from the repository root, e.g.
#   run(command="bash scripts/gpu/lge.sh", carry=[".whl", ".data"], timeout_s=560)
# after `bash scripts/gpu/prepare.sh` here, which downloads the wheels the GPU image lacks (monai, nibabel,
# pydicom, pydantic, ...) into .whl/ and packs the shared LGE datasets into .data/ (both git-ignored).
# STEPS (default 4000) sets the batches per model; the CPU recipe used 16000. MEMBERS (default 0: all five) fold
# models go into the shipped ensemble (five, with the one-member localiser, meet the 1 s CPU latency goal,
# bench/lge_latency.py). FILTERS (default the
# trainer's 16,32,64,128,256) and PATCH (default 128, the node's crop) size the network and its patches: the CPU
# models fit their own training cases hardly better than held-out ones (engines/lge/EVALUATION.md, "Fit on the
# models' own training cases"), so a GPU budget should go to a wider network, e.g. FILTERS=32,64,128,256,320,
# checked against the latency goal before it ships. Checked end to end on the
# CPU with STEPS=3 (PYTHON=.venv/bin/python OUT=/tmp/x STEPS=3 bash scripts/gpu/lge.sh).
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/lge_gpu}"
STEPS="${STEPS:-4000}"
PYTHON="${PYTHON:-python3}"
SIZES=(--patch-size "${PATCH:-128}")
if [ -n "${FILTERS:-}" ]; then SIZES+=(--filters "$FILTERS"); fi
mkdir -p "$OUT"
source "$(dirname "$0")/site.sh"
if [ -d .data/datasets ]; then
    export DICOMNODE_SHARED_DATASETS="$PWD/.data/datasets"
fi
(nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1
started=$(date +%s)
pids=()
for fold in 0 1 2 3 4; do
    "$PYTHON" -m engines.lge.train --out "$OUT/runs/cv" --folds 5 --only-folds "$fold" --steps "$STEPS" \
        "${SIZES[@]}" --threads 2 > "$OUT/train_fold$fold.log" 2>&1 &
    pids+=($!)
done
for centre in emidec myops; do
    "$PYTHON" -m engines.lge.train --out "$OUT/runs/loco_$centre" --train-centres "$centre" --steps "$STEPS" \
        "${SIZES[@]}" --threads 2 > "$OUT/train_loco_$centre.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
echo "training: $(( $(date +%s) - started )) s, status $status"
[ "$status" = 0 ] || { tail -n 20 "$OUT"/train_*.log; exit 1; }
"$PYTHON" -m engines.lge.calibrate --cv "$OUT/runs/cv" --threads 8 > "$OUT/calibrate.log" 2>&1
"$PYTHON" -m engines.lge.evaluate --cv "$OUT/runs/cv" --loco "$OUT/runs/loco_emidec" "$OUT/runs/loco_myops" \
    --calibration "$OUT/runs/cv/lge_calibration.json" --training-fit 6 \
    --report "$OUT/EVALUATION.md" --threads 8 > "$OUT/evaluate.log" 2>&1
# all fold models (MEMBERS=0) with the one-member localiser, as shipped
"$PYTHON" -m engines.lge.export --runs "$OUT/runs/cv" --out "$OUT/models" --members "${MEMBERS:-0}" \
    --calibration "$OUT/runs/cv/lge_calibration.json" --evaluation "$OUT/EVALUATION.json" > "$OUT/export.log" 2>&1
find "$OUT/runs" -name checkpoint.pt -delete
echo "total: $(( $(date +%s) - started )) s"
sed -n '/## Patient-level/,/## Classical/p' "$OUT/EVALUATION.md"
