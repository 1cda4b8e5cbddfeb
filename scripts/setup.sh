#!/usr/bin/env bash
# Creates .venv with the node and its test tools, plus the engines extra (torch, CPU build on CPU machines)
# when a wheel for it can be found; the node itself never needs torch.
#
# The CPU build (torch==2.13.0+cpu, constraints-cpu.txt) is published on PyTorch's own index, not on PyPI: where the
# configured pip sources (pip.conf index / find-links) lack it, torch alone is fetched from TORCH_CPU_INDEX
# (default https://download.pytorch.org/whl/cpu; TORCH_CPU_INDEX= skips that step).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_CPU_INDEX="${TORCH_CPU_INDEX-https://download.pytorch.org/whl/cpu}"
if [ ! -x .venv/bin/python ]; then
    # Debian ships venv's pip bootstrap apart: without it `python3 -m venv` leaves a .venv with no pip in it
    if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        echo "error: $PYTHON cannot create a virtual environment (no venv / ensurepip module): on Debian" \
             "install it with: sudo apt-get install python3-venv" >&2
        exit 1
    fi
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
install_cpu() {
    .venv/bin/python -m pip install -q -e '.[test,engines]' -c constraints-cpu.txt "$@"
}
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q -e '.[test,engines]'
elif install_cpu 2>/dev/null; then
    :
elif [ -n "$TORCH_CPU_INDEX" ] && echo "note: the configured pip sources have no CPU build of torch; fetching it" \
        "from $TORCH_CPU_INDEX" >&2 \
        && .venv/bin/python -m pip install -q torch -c constraints-cpu.txt --index-url "$TORCH_CPU_INDEX" \
        && install_cpu; then
    :
else
    echo "note: no CPU build of torch found (see constraints-cpu.txt); installing the node without the engines extra" >&2
    .venv/bin/python -m pip install -q -e '.[test]'
fi
