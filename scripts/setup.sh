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
#
# Segmentation (mmsegmentation 1.2.2) needs mmcv 2.1.0 *compiled* against this torch (mmseg imports mmcv.ops).
# PyPI has only its source, which does not build against torch >= 2.10 unpatched, so mmcv is installed first,
# from the first of:
#   PETLBENCH_MMCV_WHEEL  a wheel you give (e.g. one built for your CUDA torch with scripts/build_mmcv.sh)
#   an mmcv already in the venv that imports with its ops
#   ../shared/wheels/     this workplace's prebuilt wheel (CPU ops; torch 2.14.1, Python 3.11, x86_64), checked
#                         against its SHA256SUMS: a cache of what build_mmcv.sh makes
#   $PETLBENCH_CACHE/wheels/ (default ~/.cache/petlbench) a wheel an earlier setup built for this torch
#   scripts/build_mmcv.sh  builds it there (about 20 minutes on 2 cores), once
#   PETLBENCH_SEG=skip    no segmentation stack (the seg tests then fail: they are part of the suite)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PETLBENCH_VENV:-.venv}
torch_spec=${PETLBENCH_TORCH:-"torch==2.14.1 torchvision==0.29.1"}
stamp="$venv/.petlbench-setup"
seg=${PETLBENCH_SEG:-auto}
want="$(sha256sum pyproject.toml scripts/build_mmcv.sh | cut -c1-16 | tr -d '\n') $torch_spec seg=$seg"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv with ${PYTHON:-python3} ($(${PYTHON:-python3} --version 2>&1))" >&2
  "${PYTHON:-python3}" -m venv "$venv"
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && { [ "$seg" = "skip" ] || "$venv/bin/python" -c "import mmcv.ops" >/dev/null 2>&1; }; then
  exit 0  # set up already (and mmcv's compiled ops still import)
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
if [ "$torch_spec" != "skip" ]; then
  echo "setup: installing $torch_spec (first run: a few minutes)" >&2
  # shellcheck disable=SC2086  # the spec is a list of pip arguments on purpose
  "${pip[@]}" $torch_spec
fi
extras=test
if [ "$seg" != "skip" ]; then
  extras=test,seg
  py="$venv/bin/python"
  if [ -n "${PETLBENCH_MMCV_WHEEL:-}" ]; then
    echo "setup: installing mmcv from $PETLBENCH_MMCV_WHEEL" >&2
    "${pip[@]}" --no-deps --force-reinstall "$PETLBENCH_MMCV_WHEEL" && "${pip[@]}" "$PETLBENCH_MMCV_WHEEL"
  elif ! "$py" -c "import mmcv.ops" >/dev/null 2>&1; then
    torch_v=$("$py" -c "import torch; print(torch.__version__.split('+')[0])")
    py_tag=$("$py" -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
    shared=../shared/wheels
    cache="${PETLBENCH_CACHE:-$HOME/.cache/petlbench}/wheels/torch-$torch_v-$py_tag-$(uname -m)"
    wheel=""
    if [ "$torch_v" = "2.14.1" ] && [ "$py_tag" = cp311 ] && [ "$(uname -m)" = x86_64 ] \
       && [ -f "$shared/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl" ] \
       && (cd "$shared" && sha256sum --quiet -c SHA256SUMS) >/dev/null 2>&1; then
      wheel="$shared/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl"
      echo "setup: installing mmcv 2.1.0 from the prebuilt wheel $wheel (checksum verified)" >&2
    else
      wheel=$(ls "$cache"/mmcv-2.1.0-*.whl 2>/dev/null | head -1 || true)
      if [ -z "$wheel" ]; then
        echo "setup: no mmcv 2.1.0 wheel for torch $torch_v / $py_tag; building one into $cache" >&2
        bash scripts/build_mmcv.sh "$cache" "$py"
        wheel=$(ls "$cache"/mmcv-2.1.0-*.whl | head -1)
      else
        echo "setup: installing mmcv 2.1.0 from $wheel (built by an earlier setup)" >&2
      fi
    fi
    # --force-reinstall: an mmcv built for another torch may be installed (it would count as satisfied)
    "${pip[@]}" --no-deps --force-reinstall "$wheel" && "${pip[@]}" "$wheel"
  fi
fi
echo "setup: installing petlbench (editable) with extras $extras" >&2
"${pip[@]}" -e ".[$extras]"
check="import torch, torchvision, timm, petlbench"
[ "$seg" = "skip" ] || check="$check; import mmcv.ops, mmseg.models"
"$venv/bin/python" -c "$check" \
  || { echo "setup: the installed packages do not import; see the errors above" >&2; exit 1; }
echo "$want" > "$stamp"
