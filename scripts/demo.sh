#!/usr/bin/env bash
# Sets up .venv if needed, then runs the main job: `dicomnode demo` (embedded defaults, offline, no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/dicomnode ] || ./scripts/setup.sh
exec .venv/bin/dicomnode demo "$@"
