#!/usr/bin/env bash
# Creates .venv with the node and its test tools, plus the engines extra (torch, CPU build on CPU machines)
# when a wheel for it can be found; the node itself never needs torch.
#
# The CPU build (torch==2.13.0+cpu, constraints-cpu.txt) is published on PyTorch's own index, not on PyPI: where the
# configured pip sources (pip.conf index / find-links) lack it, torch alone is fetched from TORCH_CPU_INDEX
# (default https://download.pytorch.org/whl/cpu; TORCH_CPU_INDEX= skips that step).
#
# --production (README "Running under systemd"): the node and its runtime dependencies only (no test tools, no
# torch), from the same pip sources; refuses a Python under /root or /home for a checkout outside them (a service
# user cannot run a venv made from it); run as root, links /usr/local/bin/dicomnode to the venv's command.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_CPU_INDEX="${TORCH_CPU_INDEX-https://download.pytorch.org/whl/cpu}"
production=false
for arg in "$@"; do
    case "$arg" in
        --production) production=true ;;
        *) echo "usage: $0 [--production]" >&2; exit 2 ;;
    esac
done

# Where under /root or /home the interpreter behind $1 lives (its real path or its installation's prefix), if it does.
private_python() {
    "$1" -c 'import os, sys
for path in (os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix)):
    if path == "/root" or path.startswith(("/root/", "/home/")):
        print(path)
        break' 2>/dev/null || true
}

if $production; then
    here="$(pwd -P)"
    case "$here/" in
        /root/*|/home/*) ;;  # a checkout in a home folder: its own user runs it
        *)
            for python in "$PYTHON" .venv/bin/python; do
                [ "$python" = .venv/bin/python ] && [ ! -x .venv/bin/python ] && continue
                where="$(private_python "$python")"
                if [ -n "$where" ]; then
                    remove=""
                    [ -e .venv ] && remove="sudo rm -rf $here/.venv && "
                    echo "error: $python is $where, under /root or /home: the dicomnode service user cannot run a" \
                         "virtual environment made from it (those folders are private, and the unit has" \
                         "ProtectHome=yes). Use the system's Python:" \
                         "${remove}sudo PYTHON=/usr/bin/python3 $here/scripts/setup.sh --production" >&2
                    exit 1
                fi
            done ;;
    esac
fi

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
if $production; then
    # the node's own dependencies (pyproject.toml [project] dependencies): no extra, so no torch, no test tools
    .venv/bin/python -m pip install -q -e . -c constraints-cpu.txt
    # on PATH for every user (sudo's secure_path included), so that `sudo -u dicomnode dicomnode status ...` works
    bin_dir="${DICOMNODE_BIN_DIR:-/usr/local/bin}"
    if [ "$(id -u)" = 0 ] && [ -d "$bin_dir" ]; then
        if [ -e "$bin_dir/dicomnode" ] && [ ! -L "$bin_dir/dicomnode" ]; then
            echo "note: $bin_dir/dicomnode exists and is not a link: left as it is; run" \
                 "$(pwd -P)/.venv/bin/dicomnode" >&2
        else
            ln -sfn "$(pwd -P)/.venv/bin/dicomnode" "$bin_dir/dicomnode"
            echo "dicomnode: $bin_dir/dicomnode -> $(pwd -P)/.venv/bin/dicomnode"
        fi
    else
        echo "note: not run as root: no link on PATH; run $(pwd -P)/.venv/bin/dicomnode" >&2
    fi
    exit 0
fi
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
