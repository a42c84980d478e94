#!/usr/bin/env bash
# The GPU performance measurements in one go, in order of priority (about 7-8 minutes on one
# H100/H200; every figure comes with the card's name and the peak GPU memory):
#   (a) reward-gradient guidance against stock at K = 4: fk_guided, fk_guided_ckpt (gradient
#       checkpointing) and a profile of one guided run (runs/gpu/sd15/guided_profile.txt);
#   (b) unguided steered / stock at K = 4, 8, 16 with 10 scoring points: fk_tiny (TAESD
#       intermediate decoding), fk_auto (the default: the VAE on half-size latents), fk_full;
#   (c) the same at SDXL size (2.6B-parameter UNet, 1024 px), K = 4 and 8.
# Run from the repository root, with diffusers importable (see benchmarks/gpu_overhead.py for
# a machine without it). Results: runs/gpu/{sd15,sdxl}/ (config.json, results.jsonl, report.md).
set -euo pipefail
out=${1:-runs/gpu}
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src
timeout 330 python3 benchmarks/gpu_overhead.py --model sd15 --particles 4,8,16 \
    --guided-particles 4 --checkpointing --profile-guided --repeats 2 --out "$out/sd15"
timeout 240 python3 benchmarks/gpu_overhead.py --model sdxl --size 1024 --particles 4,8 \
    --guided-particles "" --repeats 1 --out "$out/sdxl"
cat "$out/sd15/report.md" "$out/sdxl/report.md"
