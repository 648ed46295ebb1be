#!/usr/bin/env bash
# README's main job: set up, adversarially train a small denoising network on Fashion-MNIST
# (and a baseline without denoising beside it), evaluate both clean and under targeted PGD-10
# and PGD-100 at epsilon 0.1 of the range (the paper's protocol), and under AutoAttack's
# APGD-CE followed by APGD-T (the figure to publish), and print a table.
#
#   bash scripts/demo.sh [--data DIR] [--out DIR] [--no-baseline] [--steps N]
#
# Runs resume: started again, finished training is skipped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA=/usr/share/datasets/fashion-mnist
OUT="$ROOT/runs/demo"
BASELINE=1
STEPS=400
AA_IMAGES=200      # scripts/demo_table.py's AA_IMAGES
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --no-baseline) BASELINE=0; shift ;;
    --steps) STEPS="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "demo: unknown option '$1' (valid: --data DIR, --out DIR, --no-baseline, --steps N)" >&2; exit 2 ;;
  esac
done

bash "$ROOT/scripts/setup.sh"
PY="${FDENOISE_VENV:-$ROOT/.venv}/bin/python"
export TF_CPP_MIN_LOG_LEVEL=2
cd "$ROOT"
start=$(date +%s)

# The recipe is the demo preset (config/presets.py; README, docs/DEMO.md): small-image ResNet
# S14 of width 8, targeted PGD-3 adversarial training at epsilon 25.5 (0..255 scale), batch
# 128, one pass of 400 steps with the learning rate divided by 10 at 75%.
RECIPE=(--data "$DATA" --dataset fashion-mnist --preset demo)
[ "$STEPS" = 400 ] || RECIPE+=(--steps-per-epoch "$STEPS")

MODELS=("denoise:--denoise nonlocal-dot")
[ "$BASELINE" = 1 ] && MODELS+=("baseline:")
for entry in "${MODELS[@]}"; do
  name="${entry%%:*}"; flags="${entry#*:}"
  dir="$OUT/$name"
  if [ -f "$dir/model-final.npz" ]; then
    echo "[demo] $name: already trained ($dir/model-final.npz)"
  else
    echo "[demo] training $name ($flags) ..."
    # shellcheck disable=SC2086
    "$PY" train.py "${RECIPE[@]}" $flags --logdir "$dir"
  fi
  if [ ! -f "$dir/eval-pgd10.json" ]; then
    echo "[demo] evaluating $name: clean and targeted PGD-10 on 2000 test images ..."
    "$PY" eval.py --load "$dir/model-final.npz" --data "$DATA" --dataset fashion-mnist \
        --attack-iter 0,10 --limit 2000 --seed 0 --json-out "$dir/eval-pgd10.json"
  fi
  if [ ! -f "$dir/eval-500.json" ]; then
    # PGD-10 again on the same 500 images: the first 500 are not as hard as the first 2000, so
    # PGD-100 is only comparable with PGD-10 on the same images.
    echo "[demo] evaluating $name: targeted PGD-10 and PGD-100 on the first 500 test images ..."
    "$PY" eval.py --load "$dir/model-final.npz" --data "$DATA" --dataset fashion-mnist \
        --attack-iter 10,100 --limit 500 --seed 0 --json-out "$dir/eval-500.json"
  fi
  if [ ! -f "$dir/eval-aa.json" ]; then
    # AutoAttack's two members that remove nearly every image it breaks on these models
    # (docs/ROBUSTNESS.md), with the standard version's settings (one run each; APGD-T over
    # the 9 runner-up classes), untargeted, at the training epsilon; on fewer images, for time
    echo "[demo] evaluating $name: AutoAttack's APGD-CE then APGD-T on the first $AA_IMAGES test images ..."
    "$PY" eval.py --load "$dir/model-final.npz" --data "$DATA" --dataset fashion-mnist \
        --attack autoattack --aa-version custom --aa-attacks apgd-ce,apgd-t --restarts 1 --attack-iter 0,100 \
        --limit "$AA_IMAGES" --seed 0 --json-out "$dir/eval-aa.json"
  fi
done
"$PY" scripts/demo_table.py "$OUT"
echo "[demo] finished in $(( $(date +%s) - start )) s (after set-up)"
