#!/usr/bin/env bash
# Regenerate every table and plot of the suite, running only what the result store lacks.
#
#   scripts/run_all.sh                               no data root: the offline mini-benchmark (same as --mini)
#   scripts/run_all.sh --mini                        the offline mini-benchmark, then all tables and plots
#   scripts/run_all.sh --data-root /data [--results results] [--videomae-weights FILE] [--coop-root DIR]
#                      [--dino-weights FILE] [--executor local|slurm]
#
# With a data root, in order: efficiency (petlbench bench, skipped when its CSV exists), VTAB-1k, few-shot,
# domain generalization (the shipped sweeps, tasks/sweeps/*.yaml, by name: `petlbench sweep vtab1k`; a task
# whose data is absent is skipped with one line), video (given the VideoMAE checkpoint), ADE20K segmentation
# (the seg sweep), CLIP on CoOp's 11 datasets (coop_zeroshot and coop sweeps, from --coop-root, default the
# data root; CaFo too when --dino-weights names DINO's ResNet-50 checkpoint), then `petlbench table`,
# `petlbench plot` and `petlbench site` (the HTML pages, $RESULTS/site/index.html).
# Killed at any point, the same command finishes the job. Exit status 1 when a run failed (it is recorded,
# with its reason, and the tables are still written).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_ROOT="" RESULTS="results" MINI=0 SWEEP_ARGS=() VIDEOMAE="" COOP_ROOT="" DINO=""
while [ $# -gt 0 ]; do
  case "$1" in
    --mini) MINI=1; shift ;;
    --data-root) DATA_ROOT="$2"; shift 2 ;;
    --results) RESULTS="$2"; shift 2 ;;
    --videomae-weights) VIDEOMAE="$2"; shift 2 ;;
    --coop-root) COOP_ROOT="$2"; shift 2 ;;
    --dino-weights) DINO="$2"; shift 2 ;;
    --executor|--partition|--gpus|--parallel|--timeout-min) SWEEP_ARGS+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$DATA_ROOT" ] && [ ! -d "$DATA_ROOT" ]; then
  echo "run_all.sh: --data-root '$DATA_ROOT' is not a folder" >&2; exit 2
fi
if [ -n "$VIDEOMAE" ] && [ ! -f "$VIDEOMAE" ]; then
  echo "run_all.sh: --videomae-weights '$VIDEOMAE' is not a file" >&2; exit 2
fi
if [ -n "$COOP_ROOT" ] && [ ! -d "$COOP_ROOT" ]; then
  echo "run_all.sh: --coop-root '$COOP_ROOT' is not a folder" >&2; exit 2
fi
if [ -n "$DINO" ] && [ ! -f "$DINO" ]; then
  echo "run_all.sh: --dino-weights '$DINO' is not a file" >&2; exit 2
fi

bash scripts/setup.sh
PB="${PETLBENCH_VENV:-.venv}/bin/petlbench"
STORE="$RESULTS/store" OUT="$RESULTS/runs" STATUS=0
step() { echo "== $1 ($(date -u +%H:%M:%S))"; }

if [ "$MINI" = 1 ] || [ -z "$DATA_ROOT" ]; then
  [ -z "$DATA_ROOT" ] && [ "$MINI" = 0 ] && echo "no --data-root given: running the offline mini-benchmark (--mini)"
  step "mini-benchmark"
  "$PB" mini --results "$RESULTS" --store "$STORE" --out "$OUT" --quiet || STATUS=1
else
  CUDA=$("${PETLBENCH_VENV:-.venv}/bin/python" -c "import torch; print(int(torch.cuda.is_available()))")
  if [ "$CUDA" = 1 ]; then BENCH=(--device cuda --dtype bf16); STEM=vit_base_patch16_224_cuda_bf16
  else BENCH=(); STEM=vit_base_patch16_224; fi
  step "efficiency"
  if [ -f "$RESULTS/efficiency/$STEM.csv" ]; then
    echo "efficiency: $RESULTS/efficiency/$STEM.csv exists (delete it to measure again)"
  else
    "$PB" bench "${BENCH[@]}" --out "$RESULTS/efficiency" --quiet || STATUS=1
  fi
  for sweep in vtab1k vtab1k_noah fewshot domain; do
    step "$sweep"
    "$PB" sweep "$sweep" --data-root "$DATA_ROOT" --store "$STORE" --out "$OUT" --quiet \
      "${SWEEP_ARGS[@]}" || STATUS=1
  done
  step video
  if [ -n "$VIDEOMAE" ]; then
    "$PB" sweep video --data-root "$DATA_ROOT" --store "$STORE" --out "$OUT" --quiet \
      --set "weights=$VIDEOMAE" "${SWEEP_ARGS[@]}" || STATUS=1
  else
    echo "video: skipped (give --videomae-weights FILE, the VideoMAE ViT-B K400 checkpoint the protocol starts from)"
  fi
  if [ -n "$("$PB" tasks --benchmark seg 2>/dev/null)" ]; then
    step seg
    "$PB" sweep seg --data-root "$DATA_ROOT" --store "$STORE" --out "$OUT" --quiet \
      "${SWEEP_ARGS[@]}" || STATUS=1
  else
    echo "seg: skipped (petlbench lists no segmentation tasks)"
  fi
  for sweep in coop_zeroshot coop; do
    step "$sweep"
    "$PB" sweep "$sweep" --data-root "${COOP_ROOT:-$DATA_ROOT}" --store "$STORE" --out "$OUT" --quiet \
      "${SWEEP_ARGS[@]}" || STATUS=1
  done
  step cafo
  if [ -n "$DINO" ]; then
    "$PB" sweep coop_cafo --data-root "${COOP_ROOT:-$DATA_ROOT}" --store "$STORE" --out "$OUT" --quiet \
      --set "dino_weights=$DINO" "${SWEEP_ARGS[@]}" || STATUS=1
  else
    echo "cafo: skipped (give --dino-weights FILE, DINO's ResNet-50 checkpoint dino_resnet50_pretrain.pth)"
  fi
fi
step "tables and plots"
"$PB" table --store "$STORE" --results "$RESULTS"
"$PB" plot --store "$STORE" --results "$RESULTS"
"$PB" site "$RESULTS/site" --store "$STORE" --results "$RESULTS"
exit $STATUS
