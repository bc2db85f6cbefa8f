#!/usr/bin/env bash
# Creates the virtual environment (default .venv, or $PETLBENCH_VENV) and installs petlbench into it with
# the test extras. Idempotent: a second run with the same pyproject.toml and torch spec does nothing.
#
# torch is pinned HERE, not in pyproject.toml (whose ranges must fit any user's CUDA machine):
#   PETLBENCH_TORCH   the pip requirement(s) for torch + torchvision
#                     default "torch==2.14.1 torchvision==0.29.1" (a matching pair; installs on CPU-only machines too)
#                     e.g. PETLBENCH_TORCH="torch==2.5.1 torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cu124"
#                     or   PETLBENCH_TORCH=skip  to keep the torch already in the venv
#   PYTHON            the interpreter that creates the venv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PETLBENCH_VENV:-.venv}
torch_spec=${PETLBENCH_TORCH:-"torch==2.14.1 torchvision==0.29.1"}
stamp="$venv/.petlbench-setup"
want="$(sha256sum pyproject.toml | cut -c1-16) $torch_spec"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv with ${PYTHON:-python3} ($(${PYTHON:-python3} --version 2>&1))" >&2
  "${PYTHON:-python3}" -m venv "$venv"
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
if [ "$torch_spec" != "skip" ]; then
  echo "setup: installing $torch_spec (first run: a few minutes)" >&2
  # shellcheck disable=SC2086  # the spec is a list of pip arguments on purpose
  "${pip[@]}" $torch_spec
fi
echo "setup: installing petlbench (editable) with test extras" >&2
"${pip[@]}" -e ".[test]"
"$venv/bin/python" -c "import torch, torchvision, timm, petlbench" \
  || { echo "setup: the installed packages do not import; see the errors above" >&2; exit 1; }
echo "$want" > "$stamp"
