#!/bin/bash
# Train and evaluate one model: the seed's example script, ported to medsweep.
# Every value is quoted (the seed's passed the system prompt unquoted), and the trained
# adapter is kept. For sweeps, use: python -m launcher submit sweeps/medical.yaml
set -euo pipefail
# Runs from any folder: the repository's modules on the path, its venv's python if there is one.
REPO="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${PYTHON:-}" ] && [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; fi
PYTHON="${PYTHON:-python}"

BASE_STORAGE_DIR="${BASE_STORAGE_DIR:-.}"
BASE_PROJECT_DIR="${BASE_PROJECT_DIR:-.}"
DATASET_DIR="${DATASET_DIR:-data/final}"
MODELS_DIR="${MODELS_DIR:-models}"
RESULTS_DIR="${RESULTS_DIR:-results}"

TRAIN_DATASET_FILE="${TRAIN_DATASET_FILE:-train.json}"
TEST_DATASET_FILE="${TEST_DATASET_FILE:-test.json}"

# Model parameters
MODEL_NAME="${MODEL_NAME:-unsloth/Llama-3.1-8B-Instruct}"
MODEL_MAX_SEQ_LENGTH="${MODEL_MAX_SEQ_LENGTH:-4096}"
MODEL_LOAD_IN_4BIT="${MODEL_LOAD_IN_4BIT:-true}"
MODEL_LOAD_IN_8BIT="${MODEL_LOAD_IN_8BIT:-false}"
MODEL_FULL_FINETUNING="${MODEL_FULL_FINETUNING:-false}"

# PEFT parameters
PEFT_FT_VISION_LAYERS="${PEFT_FT_VISION_LAYERS:-false}"
PEFT_FT_LANGUAGE_LAYERS="${PEFT_FT_LANGUAGE_LAYERS:-true}"
PEFT_FT_ATTENTION_MODULES="${PEFT_FT_ATTENTION_MODULES:-true}"
PEFT_FT_MLP_MODULES="${PEFT_FT_MLP_MODULES:-true}"
PEFT_RANK="${PEFT_RANK:-8}"
PEFT_LORA_ALPHA="${PEFT_LORA_ALPHA:-16}"
PEFT_LORA_DROPOUT="${PEFT_LORA_DROPOUT:-0.0}"
PEFT_LORA_BIAS="${PEFT_LORA_BIAS:-false}"

# Training parameters
TRAIN_PER_DEVICE_BATCH_SIZE="${TRAIN_PER_DEVICE_BATCH_SIZE:-4}"
TRAIN_GRADIENT_ACCUMULATION_STEPS="${TRAIN_GRADIENT_ACCUMULATION_STEPS:-4}"
TRAIN_NUM_EPOCHS="${TRAIN_NUM_EPOCHS:-10}"
TRAIN_LEARNING_RATE="${TRAIN_LEARNING_RATE:-2e-4}"
TRAIN_WEIGHT_DECAY="${TRAIN_WEIGHT_DECAY:-0.01}"
TRAIN_WARMUP_STEPS="${TRAIN_WARMUP_STEPS:-5}"
TRAIN_LR_SCHEDULER_TYPE="${TRAIN_LR_SCHEDULER_TYPE:-linear}"
TRAIN_SEED="${TRAIN_SEED:-42}"

SYSTEM_PROMPT="${SYSTEM_PROMPT:-You are a medical entity extractor from clinical texts. Extract the entities from the text and return them in a structured JSON format.}"
UNIQUE_ENTITIES="${UNIQUE_ENTITIES:-true}"

TRAIN_DATASET_FILE_PATH="${BASE_STORAGE_DIR}/${DATASET_DIR}/${TRAIN_DATASET_FILE}"
EVAL_DATASET_FILE_PATH="${BASE_STORAGE_DIR}/${DATASET_DIR}/${TEST_DATASET_FILE}"
MODEL_STORE_NAME="${MODEL_NAME//[:\/]/_}-$(date +%Y%m%d-%H%M%S)"
TRAIN_OUTPUT_DIR="${BASE_STORAGE_DIR}/${MODELS_DIR}/${MODEL_STORE_NAME}"
TEST_OUTPUT_DIR="${BASE_PROJECT_DIR}/${RESULTS_DIR}/${MODEL_STORE_NAME}"

echo "Training the model..."
"$PYTHON" -m jobs.train \
    --train-dataset-file "${TRAIN_DATASET_FILE_PATH}" \
    --output-dir "${TRAIN_OUTPUT_DIR}" \
    --model-name "${MODEL_NAME}" \
    --model-max-seq-length "${MODEL_MAX_SEQ_LENGTH}" \
    --model-load-in-4bit "${MODEL_LOAD_IN_4BIT}" \
    --model-load-in-8bit "${MODEL_LOAD_IN_8BIT}" \
    --model-full-finetuning "${MODEL_FULL_FINETUNING}" \
    --peft-ft-vision-layers "${PEFT_FT_VISION_LAYERS}" \
    --peft-ft-language-layers "${PEFT_FT_LANGUAGE_LAYERS}" \
    --peft-ft-attention-modules "${PEFT_FT_ATTENTION_MODULES}" \
    --peft-ft-mlp-modules "${PEFT_FT_MLP_MODULES}" \
    --peft-rank "${PEFT_RANK}" \
    --peft-lora-alpha "${PEFT_LORA_ALPHA}" \
    --peft-lora-dropout "${PEFT_LORA_DROPOUT}" \
    --peft-lora-bias "${PEFT_LORA_BIAS}" \
    --train-per-device-batch-size "${TRAIN_PER_DEVICE_BATCH_SIZE}" \
    --train-gradient-accumulation-steps "${TRAIN_GRADIENT_ACCUMULATION_STEPS}" \
    --train-num-epochs "${TRAIN_NUM_EPOCHS}" \
    --train-learning-rate "${TRAIN_LEARNING_RATE}" \
    --train-weight-decay "${TRAIN_WEIGHT_DECAY}" \
    --train-warmup-steps "${TRAIN_WARMUP_STEPS}" \
    --train-lr-scheduler-type "${TRAIN_LR_SCHEDULER_TYPE}" \
    --train-seed "${TRAIN_SEED}" \
    --model-system-prompt "${SYSTEM_PROMPT}" \
    --unique-entities "${UNIQUE_ENTITIES}"

echo "Testing the model..."
"$PYTHON" -m jobs.evaluate \
    --eval-dataset-file "${EVAL_DATASET_FILE_PATH}" \
    --results-dir "${TEST_OUTPUT_DIR}" \
    --model-dir "${TRAIN_OUTPUT_DIR}" \
    --model-max-seq-length "${MODEL_MAX_SEQ_LENGTH}" \
    --model-load-in-4bit "${MODEL_LOAD_IN_4BIT}" \
    --model-load-in-8bit "${MODEL_LOAD_IN_8BIT}" \
    --eval-batch-size "${TRAIN_PER_DEVICE_BATCH_SIZE}" \
    --model-system-prompt "${SYSTEM_PROMPT}" \
    --unique-entities "${UNIQUE_ENTITIES}"
