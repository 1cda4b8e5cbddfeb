#!/usr/bin/env bash
# Runs the whole test suite; "no tests collected" (pytest exit 5) is a failure.
#
# Test files run side by side in DICOMNODE_TEST_WORKERS processes (pytest-xdist, one file per process at a time so
# that a module's fixtures are built once; default: the machine's cores, at most 4; 1 runs them in this process).
# Most of the suite waits on one single-threaded peer or node process at a time, so two workers on two cores take
# about half the time of one.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || ./scripts/setup.sh
workers="${DICOMNODE_TEST_WORKERS:-$(nproc 2>/dev/null || echo 1)}"
[ "$workers" -gt 4 ] 2>/dev/null && workers=4
parallel=()
if [ "$workers" -gt 1 ] 2>/dev/null; then
    if .venv/bin/python -c "import xdist" 2>/dev/null; then
        parallel=(-n "$workers" --dist loadfile)
    else
        echo "pytest-xdist is not installed in .venv (re-run ./scripts/setup.sh): running the tests one at a time" >&2
    fi
fi
.venv/bin/python -m pytest -q -p no:cacheprovider "${parallel[@]}" "$@"
status=$?
if [ "$status" = "5" ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
