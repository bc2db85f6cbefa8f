#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job on its embedded default: the offline mini-benchmark (every
# method on generated data and scikit-learn's digits, with the shipped tiny pretrained ViT, on the CPU; about
# 8 minutes on 2 cores), written to results/mini/. Extra arguments go to `petlbench mini`.
# The efficiency table on ViT-B/16 is `.venv/bin/petlbench bench` (about 15 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PETLBENCH_VENV:-.venv}/bin/petlbench" mini "$@"
