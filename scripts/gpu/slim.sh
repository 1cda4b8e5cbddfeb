#!/usr/bin/env bash
# The device tool sends the checkout (tracked files too) and refuses one over 64 MiB; the shipped models, kept
# experiment weights and the demo cine make this one ~195 MB. `slim.sh out` moves them beside the checkout (into
# ../.dicomnode-gpu-stash) before a device call, `slim.sh in` puts them back after it; the GPU scripts need none of
# them. `git status` shows them as deleted while they are out.
set -euo pipefail
cd "$(dirname "$0")/../.."
stash="../.dicomnode-gpu-stash"
large=(engines/models/lge_unet.onnx engines/models/lge_unet.pt engines/models/lge_unet_localiser.onnx
       engines/models/lge_unet_localiser.pt engines/models/cine_unet.onnx engines/models/cine_unet.pt
       engines/models/text_encoder engines/checkpoints dicomnode/demo_data/sunnybrook_SCD0000301.zip)
case "${1:-}" in
    out)
        for path in "${large[@]}"; do
            [ -e "$path" ] || continue
            mkdir -p "$stash/$(dirname "$path")"
            mv "$path" "$stash/$path"
        done ;;
    in)
        for path in "${large[@]}"; do
            [ -e "$stash/$path" ] || continue
            [ -e "$path" ] && { echo "slim.sh: $path exists here and in $stash; left both" >&2; continue; }
            mkdir -p "$(dirname "$path")"
            mv "$stash/$path" "$path"
        done
        find "$stash" -depth -type d -empty -delete 2>/dev/null || true ;;
    *) echo "usage: slim.sh out|in" >&2; exit 2 ;;
esac
present=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{total += $1} END {print total / 1e6}' || true)
echo "tracked files present in the checkout: $present MB"
