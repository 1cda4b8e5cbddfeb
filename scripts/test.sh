#!/usr/bin/env bash
# Runs the whole test suite; "no tests collected" (pytest exit 5) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || ./scripts/setup.sh
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
if [ "$status" = "5" ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
