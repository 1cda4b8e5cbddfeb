#!/usr/bin/env bash
# Creates .venv with the node and its test tools, plus the engines extra (torch, CPU build on CPU machines)
# when a wheel for it can be found; the node itself never needs torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q -e '.[test,engines]'
elif .venv/bin/python -m pip install -q -e '.[test,engines]' -c constraints-cpu.txt; then
    :
else
    echo "note: no CPU build of torch found (see constraints-cpu.txt); installing the node without the engines extra" >&2
    .venv/bin/python -m pip install -q -e '.[test]'
fi
