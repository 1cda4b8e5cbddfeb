# Sourced by scripts/gpu/*.sh: installs the wheels carried in .whl/ (the GPU image lacks them; see prepare.sh) into
# /tmp/site and sets PYTHONPATH to them and the repository; without .whl/ only the repository is put on the path.
# Needs PYTHON set by the caller.
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
