#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job on its embedded default: the efficiency table of every
# method on ViT-B/16 (random weights, no download), written to results/efficiency/.
# Extra arguments go to `petlbench bench`, e.g. scripts/demo.sh --batch-sizes 1 --device cuda --dtype bf16
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PETLBENCH_VENV:-.venv}/bin/petlbench" bench "$@"
