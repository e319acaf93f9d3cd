#!/usr/bin/env bash
# Sourced by the GPU benchmark scripts on the offline GPU machine: the bundle's packages on the
# path (benchmarks/gpu_bundle.sh ships and unpacks it into BUNDLE), offline hubs, caches in /tmp.
B=${BUNDLE:-/tmp/g}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/pk
# Each wheel once: sourcing again (a later call while jobs run) must not rewrite files in use.
for w in "$B"/whl/*.whl; do
    stamp="/tmp/pk/.unpacked-$(basename "$w")"
    [ -f "$stamp" ] || { python3 -m zipfile -e "$w" /tmp/pk >/dev/null && touch "$stamp"; }
done
export PYTHONPATH="/tmp/pk:$B/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
export HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 WANDB_DISABLED=true WANDB_MODE=disabled
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 HF_HOME=/tmp/hf
export PYTHONWARNINGS=ignore::SyntaxWarning MEDSWEEP_GGUF_CACHE=/tmp/ggcache
export UNSLOTH_COMPILE_LOCATION=/tmp/cc/unsloth TORCHINDUCTOR_CACHE_DIR=/tmp/cc/inductor
export TRITON_CACHE_DIR=/tmp/cc/triton
