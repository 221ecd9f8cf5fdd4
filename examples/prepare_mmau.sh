#!/usr/bin/env bash
# MMAU test-mini -> the validation parquet (one data_source per task: sound / music / speech).
# Get the question files and audio first (docs/recipes.md, "Data"): MMAU_DIR holds mmau-test-mini.json and
# test-mini-audios/*.wav. R1-AQA reported on the v1 file (2025-03-25); pass it as the second argument to
# compare with its 64.5; the current file (v05.15.25) is the default.
#
#   bash examples/prepare_mmau.sh MMAU_DIR [QUESTIONS_JSON] [extra `r1aqa data build` options]
#   bash examples/prepare_mmau.sh ~/MMAU ~/MMAU/mmau-test-mini-v1.json      # -> data/mmau-test-mini-v1.parquet
set -euo pipefail
MMAU_DIR=${1:?usage: prepare_mmau.sh MMAU_DIR [QUESTIONS_JSON] [options]}
JSON=${2:-$MMAU_DIR/mmau-test-mini.json}
shift $(( $# < 2 ? $# : 2 ))
OUT=${DATA:-data}; mkdir -p "$OUT"
case $(basename "$JSON") in
  *v1*) NAME=mmau-test-mini-v1 ;;   # the builder tags these rows mmau-test-mini-v1/<task>
  *)    NAME=mmau-test-mini ;;
esac
${R1AQA:-r1aqa} data build "$NAME" --json "$JSON" --audio-dir "$MMAU_DIR" --out "$OUT/$NAME.parquet" "$@"
