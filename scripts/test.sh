#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint (ruff, configured in pyproject.toml) and run the test suite on the CPU. Extra
# arguments go to pytest, e.g. scripts/test.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
py="${PETLBENCH_VENV:-.venv}/bin/python"
"$py" -m ruff check .
exec "$py" -m pytest "$@"
