#!/usr/bin/env bash
# Scores a model zero-shot on the real sample MR (and, apart, on the real CT whose anatomy the demo
# model saw in training) against the samples' TotalSegmentator labels, and on variants of the MR
# (scripts/make_mr_variants.py); see docs/training.md.
#
#   scripts/score_demo_model.sh CHECKPOINT [WORKDIR]     (default WORKDIR: demo-score/)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
checkpoint=$1
work=${2:-demo-score}
swinbob=${SWINBOB:-swinbob}
samples="$here/Testing/Data/totalsegmentator-samples"

dataset() {  # dataset NAME SCHEME IMAGE LABEL: a one-case Decathlon folder
  mkdir -p "$work/$1"
  cp "$samples/$3.nii.gz" "$samples/$4.nii.gz" "$work/$1/"
  printf '{"name": "%s", "scheme": "%s", "training": [{"image": "%s.nii.gz", "label": "%s.nii.gz"}]}\n' \
    "$1" "$2" "$3" "$4" > "$work/$1/dataset.json"
}
dataset mr total_mr example_mr_sm example_seg_mr
dataset ct total example_ct example_seg_fast_force_split

"$swinbob" benchmark --dataset "$work/mr" --checkpoint "$checkpoint" --modes plain,etta -o "$work/mr-scores" --device cpu
"$swinbob" benchmark --dataset "$work/ct" --checkpoint "$checkpoint" --modes plain -o "$work/ct-scores" --device cpu
# The same MR in other orientations, with a bias field, a gamma change and noise (stand-ins for the
# held-out variants; never used to select a model).
"${PYTHON:-python}" "$here/scripts/make_mr_variants.py" "$samples/example_mr_sm.nii.gz" "$samples/example_seg_mr.nii.gz" \
  "$work/mr-variants"
"$swinbob" benchmark --dataset "$work/mr-variants" --checkpoint "$checkpoint" --modes plain -o "$work/mr-variant-scores" \
  --device cpu
echo "per-structure tables: $work/mr-scores/per_class.csv, $work/ct-scores/per_class.csv," \
  "$work/mr-variant-scores/per_case.csv"
