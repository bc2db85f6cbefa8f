#!/usr/bin/env bash
# GPU check: what petlbench measures on one CUDA GPU, in one script sized for under 8 minutes of one GPU.
#
#   bash scripts/device_check.sh [--out DIR] [--python PY]    on a CUDA machine (default out: device_check)
#   bash scripts/device_check.sh --dry-run --out DIR          every step on the CPU at toy size (< 60 s)
#
# Steps, each written under DIR and summarised at the end (DIR/summary.json, DIR/steps.csv):
#   1. estimate   `petlbench estimate-vtab --device cuda`: a whole VTAB-1k run's time from measured step costs
#                 (DIR/estimate/vtab_estimate_repadapter_cuda.json)
#   2. bench      `petlbench bench --device cuda --dtype bf16`, batch 1 and 64: merged vs unmerged vs plain
#                 latency, GMACs, memory (DIR/bench/vit_base_patch16_224_cuda_bf16.{csv,md,json})
#   3. throughput a ViT-B/16 (random weights) RepAdapter run in the VTAB-1k format on generated data (768 training
#                 images at 224 px, 200 test images) for 1, 2 and 4 epochs, eager and with compile=true, as one
#                 `petlbench sweep` (DIR/throughput.csv). Steady-state training images/s is taken between the
#                 2- and 4-epoch runs, which pay the same warm-up (the 1-epoch run pays the cold compile); the
#                 record's own images/s (compilation included) is listed beside it.
#
# It needs torch (with CUDA), timm, pandas, numpy, Pillow, PyYAML, safetensors and huggingface_hub, and no network
# (random weights) and no installed petlbench: it runs this checkout through a temporary package folder that maps
# tasks/ and methods/ to petlbench.tasks / petlbench.methods as the installed package does.
# A step that fails is recorded in steps.csv with its log (DIR/logs/STEP.log), and the next one runs; the exit
# status is 1 when any step failed. All steps share a budget of DEVICE_CHECK_BUDGET_S seconds (default 470): a step
# still running when it is spent is stopped (status "timeout"), and the steps after it are "skipped".
set -u -o pipefail

OUT=device_check
DRY=0
PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) OUT=$2; shift ;;
        --python) PY=$2; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "device_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/petlbench_device_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# petlbench from this checkout without installing it: the package folder's files, plus tasks/ and methods/ under
# the names pyproject's package-dir gives them.
mkdir -p "$WORK/src/petlbench"
for f in "$REPO"/petlbench/*; do
    [ "$(basename "$f")" = __pycache__ ] || ln -s "$f" "$WORK/src/petlbench/"
done
ln -s "$REPO/tasks" "$WORK/src/petlbench/tasks"
ln -s "$REPO/methods" "$WORK/src/petlbench/methods"
export PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"  # the first compile of this check is a cold one
export HF_HUB_OFFLINE=1

if [ "$DRY" = 1 ]; then
    DEVICE=cpu
    # the mini ViT (32 px, 0.8M parameters) instead of ViT-B/16; a tiny VTAB-format folder
    N_TRAIN=16; N_TEST=8; SIZE=32; BATCH=8
    RUN_KEYS=(backbone=petlbench_vit_mini img_size=32 num_workers=0 eval_batch_size=8)
    EST_KEYS=(--backbone vit_tiny_patch16_224 --batch-size 2 --eval-batch-size 2 --steps 1)
    BENCH_KEYS=(--backbone petlbench_vit_mini --img-size 32 --methods repadapter --batch-sizes 1,4 --min-time 0.05
                --min-repeats 1)
    export TORCH_COMPILE_DISABLE=1  # the compile=true runs take the same path, uncompiled: the CPU compiler is slow
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # toy models gain nothing from threads; a shared CPU loses
else
    DEVICE=cuda
    N_TRAIN=768; N_TEST=200; SIZE=224; BATCH=64
    RUN_KEYS=()
    EST_KEYS=()
    BENCH_KEYS=(--methods adapter,bitfit,full,linear,lora,repadapter,ssf,vpt --batch-sizes 1,64)
fi

echo "step,status,seconds" > "$OUT/steps.csv"
FAILED=0
DEADLINE=$((SECONDS + ${DEVICE_CHECK_BUDGET_S:-470}))  # all steps together stay inside one 8-minute device slot
step() {  # step NAME COMMAND...: run it within what is left of the budget, log it, record status and seconds
    local name=$1; shift
    local t0=$SECONDS left=$((DEADLINE - SECONDS)) rc=0
    echo "== $name: $*" >&2
    if [ "$left" -le 5 ]; then
        echo "$name,skipped,0" >> "$OUT/steps.csv"; FAILED=1
        echo "   skipped: the time budget is spent" >&2
        return
    fi
    timeout -k 10 "$left" "$@" > "$OUT/logs/$name.log" 2>&1 || rc=$?
    case $rc in 0) status=ok ;; 124|137) status=timeout; FAILED=1 ;; *) status=failed; FAILED=1 ;; esac
    echo "$name,$status,$((SECONDS - t0))" >> "$OUT/steps.csv"
    echo "   $status in $((SECONDS - t0)) s (log: $OUT/logs/$name.log)" >&2
    [ "$status" = ok ] || tail -5 "$OUT/logs/$name.log" >&2
}

step environment "$PY" - "$OUT/environment.json" "$DEVICE" <<'EOF'
import json, platform, sys
from importlib.metadata import version
import torch
import petlbench
out, device = sys.argv[1], sys.argv[2]
env = {"python": platform.python_version(), "torch": torch.__version__, "timm": version("timm"),
       "petlbench": petlbench.__version__, "cuda": torch.version.cuda, "device": device,
       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
if device == "cuda" and not torch.cuda.is_available():
    raise SystemExit("no CUDA device here: use --dry-run for the CPU check")
json.dump(env, open(out, "w"), indent=1)
print(env)
EOF
if ! grep -q '^environment,ok' "$OUT/steps.csv"; then  # no CUDA (or no torch): nothing else can run
    exit 1
fi

# the same command both ways; the dry run at toy size (a tiny ViT, batch 2, one timed step)
step estimate "$PY" -m petlbench estimate-vtab --device "$DEVICE" "${EST_KEYS[@]}" --out "$OUT/estimate" --quiet

step bench "$PY" -m petlbench bench --device "$DEVICE" --dtype bf16 "${BENCH_KEYS[@]}" --out "$OUT/bench" --quiet

step data "$PY" - "$WORK/data/eurosat" "$N_TRAIN" "$N_TEST" "$SIZE" <<'EOF'
# VTAB-1k's layout (NOAH's export): <dataset>/<split>.txt, lines "<relative path> <label>"; eurosat has 10 classes
import os, sys
import numpy as np
from PIL import Image
folder, n_train, n_test, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
os.makedirs(os.path.join(folder, "images"), exist_ok=True)
lines = []
for i in range(n_train + n_test):
    low = rng.integers(0, 255, (max(2, size // 8), max(2, size // 8), 3), dtype=np.uint8)
    rel = f"images/{i:06d}.jpg"
    Image.fromarray(low).resize((size, size), Image.BILINEAR).save(os.path.join(folder, rel), quality=90)
    lines.append(f"{rel} {i % 10}\n")
splits = {"train800val200": lines[:n_train], "train800": lines[:n_train * 4 // 5],
          "val200": lines[n_train * 4 // 5:n_train], "test": lines[n_train:]}
for split, part in splits.items():
    with open(os.path.join(folder, f"{split}.txt"), "w") as f:
        f.writelines(part)
EOF

cat > "$WORK/throughput.yaml" <<EOF
tasks: [vtab/eurosat]
methods: [repadapter]
search: {compile: [false, true], epochs: [1, 2, 4]}
overrides: {weights: none, device: $DEVICE, batch_size: $BATCH, warmup_epochs: 0, eval_every: 1000}
EOF
step throughput "$PY" -m petlbench sweep "$WORK/throughput.yaml" --data-root "$WORK/data" --store "$WORK/store" \
    --out "$WORK/runs" --quiet "${RUN_KEYS[@]/#/--set=}"

step summary "$PY" - "$OUT" "$WORK/store" "$N_TRAIN" <<'EOF'
import csv, glob, json, os, sys
out, store, n_train = sys.argv[1], sys.argv[2], int(sys.argv[3])
summary = {"environment": json.load(open(os.path.join(out, "environment.json")))}
est = glob.glob(os.path.join(out, "estimate", "vtab_estimate_*.json"))
if est:
    e = json.load(open(est[0]))
    summary["estimate"] = {k: e[k] for k in ("backbone", "device", "amp", "batch_size", "train_step_s",
                                             "eval_s_per_image", "total_minutes")}
bench = glob.glob(os.path.join(out, "bench", "*.csv"))
if bench:
    rows = list(csv.DictReader(open(bench[0])))
    cols = [c for c in rows[0] if c.startswith(("latency_ms_bs", "latency_ratio_bs"))]
    summary["bench"] = [{"method": r["method"], "form": r["form"], "gmacs": float(r["gmacs"]),
                         **{c: float(r[c]) for c in cols}} for r in rows]
recs = [json.load(open(p)) for p in glob.glob(os.path.join(store, "**", "*.json"), recursive=True)]
runs = {}
for r in recs:
    if r.get("status") != "ok":
        continue
    compiled, epochs = bool(r["execution"]["compile"]), r["protocol"]["epochs"]
    ips = r["train_images_per_second"]
    runs[(compiled, epochs)] = {"compile": compiled, "epochs": epochs, "images": epochs * n_train,
                                "record_images_per_s": ips, "train_s": epochs * n_train / ips if ips else None,
                                "run_s": r["seconds"]}
table = []
for compiled in (False, True):
    for epochs in (1, 2, 4):
        row = runs.get((compiled, epochs))
        if row is None:
            continue
        short = runs.get((compiled, 2))
        if epochs == 4 and short and row["train_s"] and short["train_s"] and row["train_s"] > short["train_s"]:
            row["steady_images_per_s"] = (row["images"] - short["images"]) / (row["train_s"] - short["train_s"])
        table.append(row)
keys = ["compile", "epochs", "images", "train_s", "record_images_per_s", "steady_images_per_s", "run_s"]
with open(os.path.join(out, "throughput.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, keys)
    w.writeheader()
    w.writerows(table)
summary["throughput"] = table
steps = list(csv.DictReader(open(os.path.join(out, "steps.csv"))))
summary["steps"] = steps
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
env = summary["environment"]
print(f"device check on {env['gpu'] or env['device']} (torch {env['torch']}, timm {env['timm']})")
if "estimate" in summary:
    e = summary["estimate"]
    print(f"  estimate-vtab ({e['backbone']}, amp {e['amp']}): train step (batch {e['batch_size']}) "
          f"{e['train_step_s'] * 1e3:.1f} ms, eval {e['eval_s_per_image'] * 1e3:.3f} ms/image, "
          f"VTAB-1k ~{e['total_minutes']:.1f} min")
for r in summary.get("bench", []):
    lat = ", ".join(f"{c[len('latency_ms_'):]} {r[c]:.2f} ms (x{r['latency_ratio_' + c[len('latency_ms_'):]]:.3f})"
                    for c in r if c.startswith("latency_ms_"))
    print(f"  bench {r['method']:<11} {r['form']:<9} {lat}")
for r in table:
    steady = f", steady {r['steady_images_per_s']:.1f} images/s" if "steady_images_per_s" in r else ""
    print(f"  run compile={str(r['compile']).lower():<5} {r['epochs']} epochs: {r['record_images_per_s']:.1f} "
          f"images/s (record){steady}")
EOF

cat "$OUT/logs/summary.log"
echo "wrote $OUT/summary.json, throughput.csv, steps.csv, estimate/, bench/ (logs: $OUT/logs/)"
if [ "$FAILED" = 1 ]; then
    echo "failed steps:" >&2
    grep -v ',ok,' "$OUT/steps.csv" | tail -n +2 >&2
    exit 1
fi
