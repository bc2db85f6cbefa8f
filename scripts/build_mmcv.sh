#!/usr/bin/env bash
# Builds mmcv 2.1.0 with its compiled ops (mmcv._ext, CPU; CUDA ops too when nvcc and a CUDA torch are there)
# from PyPI's source release, against the torch of the given Python, and writes the wheel to OUT_DIR.
# mmsegmentation 1.2.2 needs mmcv >= 2.0.0rc4, < 2.2.0 with mmcv.ops; OpenMMLab publishes no wheel for recent
# torch, and the 2.1.0 source asks the compiler for C++17 while torch >= 2.10's headers need C++20: that one flag
# is raised (checked below), nothing else changes. About 20 minutes on 2 cores.
#
# Usage: scripts/build_mmcv.sh OUT_DIR [PYTHON]      (PYTHON: default .venv/bin/python)
#        MAX_JOBS=N limits parallel compiles (default: all cores); FORCE_CUDA=1 builds the CUDA ops as well
set -euo pipefail
out=$(mkdir -p "${1:?usage: build_mmcv.sh OUT_DIR [PYTHON]}" && realpath "$1")
py=${2:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip=("$py" -m pip --disable-pip-version-check)
"${pip[@]}" install -q 'setuptools<70' wheel ninja   # mmcv 2.1.0's setup.py imports pkg_resources
"${pip[@]}" download -q --no-deps --no-binary :all: --no-build-isolation mmcv==2.1.0 -d "$work"
tar xzf "$work"/mmcv-2.1.0.tar.gz -C "$work"
sed -i "s/extra_compile_args\['cxx'\] = \['-std=c++17'\]/extra_compile_args['cxx'] = ['-std=c++20']/" \
  "$work"/mmcv-2.1.0/setup.py
grep -q "c++20" "$work"/mmcv-2.1.0/setup.py || { echo "build_mmcv: the C++ standard patch did not apply" >&2; exit 1; }
echo "build_mmcv: compiling mmcv 2.1.0 ops against torch $("$py" -c 'import torch; print(torch.__version__)')" \
  "(about 20 minutes on 2 cores)" >&2
MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
  "${pip[@]}" wheel -q --no-deps --no-build-isolation -w "$out" "$work"/mmcv-2.1.0
"${pip[@]}" install -q 'setuptools>=77'              # give torch back the setuptools it declares
ls "$out"/mmcv-2.1.0-*.whl
