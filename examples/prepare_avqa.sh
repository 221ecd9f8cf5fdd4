#!/usr/bin/env bash
# AVQA train questions + extracted audio -> the training parquet, as R1-AQA trains on them (every "video" in a
# question becomes "audio"; no question dropped). AUDIO_DIR holds one wav per clip (<youtube_id>_<start>.wav, as
# R1-AQA extracted them from VGGSound; AVQA ships no audio, see docs/recipes.md). Questions whose clip is missing
# are counted and skipped (R1-AQA kept ~38k of 40k). Ke-Omni-R's filtering: add --drop-view --drop-color.
#
#   bash examples/prepare_avqa.sh TRAIN_QA_JSON AUDIO_DIR [extra `r1aqa data build avqa` options]
#   bash examples/prepare_avqa.sh AVQA/train_qa.json AVQA/audio          # -> data/avqa-train.parquet
set -euo pipefail
QA=${1:?usage: prepare_avqa.sh TRAIN_QA_JSON AUDIO_DIR [options]}
AUDIO_DIR=${2:?usage: prepare_avqa.sh TRAIN_QA_JSON AUDIO_DIR [options]}
shift 2
OUT=${DATA:-data}; mkdir -p "$OUT"
${R1AQA:-r1aqa} data build avqa --qa "$QA" --audio-dir "$AUDIO_DIR" --out "$OUT/avqa-train.parquet" "$@"
