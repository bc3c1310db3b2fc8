#!/usr/bin/env bash
# Reproduces the bundled demo model (Resources/Models/swinbob_demo.pt); see docs/training.md.
#
# Training data: synthetic phantoms plus the real CT label maps of Testing/Data remapped to UKBOB,
# images rendered from the label maps (swinbob train --synthesis labels). The real MR sample and its
# labels are never used: they are the zero-shot test. Resumable: run the same command again.
#
#   scripts/train_demo_model.sh [WORKDIR]      (default: demo-train/)
#   DESIGN=xsec scripts/train_demo_model.sh [WORKDIR]
#       the cross-section design (Resources/Models/swinbob_demo_xsec.yaml): 40 phantoms (36 train,
#       5 synthetic validation); PARTS=N runs parts 1..N (WORKDIR/xsec-partK), one per session.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-demo-train}
swinbob=${SWINBOB:-swinbob}
samples="$here/Testing/Data/totalsegmentator-samples"
design=${DESIGN:-stages}
data="$work/data"
[ "$design" = xsec ] && data="$work/data-xsec"
phantoms=16; [ "$design" = xsec ] && phantoms=40
mkdir -p "$data/ct"

# 1. Phantoms (fixed seeds): their label maps; their simulated images only split unlabelled tissue.
[ -f "$data/phantoms/dataset.json" ] || "$swinbob" phantom -o "$data/phantoms" --n "$phantoms" --size small --seed 100

# 2. The real CT's TotalSegmentator label maps, remapped to UKBOB (images kept for the tissue split).
for pair in "example_ct:example_seg_fast_force_split" "example_ct_sm:example_seg"; do
  image=${pair%%:*}; label=${pair##*:}
  cp -n "$samples/$image.nii.gz" "$data/ct/$image.nii.gz"
  [ -f "$data/ct/$label.ukbob.nii.gz" ] || "$swinbob" remap "$samples/$label.nii.gz" "$data/ct/$label.ukbob.nii.gz" --from total --to ukbob
done

# 3. The case list. The one real anatomy is listed several times (oversampled: about half the
#    training crops come from it); two phantoms are the (synthetic) validation set.
{
  echo "id,image,label,subject,split"
  for i in $(seq 0 $((phantoms - 1))); do
    c=$(printf "case_%04d" "$i"); split=train; [ "$i" -ge $((phantoms * 7 / 8)) ] && split=val
    echo "$c,phantoms/imagesTr/$c.nii.gz,phantoms/labelsTr/$c.nii.gz,$c,$split"
  done
  for r in $(seq 1 $((phantoms * 5 / 8))); do echo "ct_full_$r,ct/example_ct.nii.gz,ct/example_seg_fast_force_split.ukbob.nii.gz,ct,train"; done
  for r in $(seq 1 $((phantoms / 4))); do echo "ct_slab_$r,ct/example_ct_sm.nii.gz,ct/example_seg.ukbob.nii.gz,ct,train"; done
} > "$data/cases.csv"

if [ "$design" = xsec ]; then
  # Parts of one session each (about 6,000 steps): part 1 from scratch, part k from part k-1's best
  # weights, each its own cosine cycle (a warm restart) with its own seed. PARTS=k runs parts 1..k;
  # each resumes when run again, and a finished part is not run again. Part k-1's weights come from
  # its run folder, or, on a machine without it, from the float16 copy committed at the end of its
  # session (scripts/parts/, scripts/package_demo_model.py --design xsec).
  # A part's own settings where they differ from the recipe's (none now; an entry reads like
  # [2]="--set max_steps=2100 --set restart_epochs=30"). Each part runs the recipe's 6,000 steps:
  # about 65 min on 2 cores with native bf16 (AVX512-BF16 / AMX); in float32 on a CPU without it
  # (about 0.45 steps/s) a part spans several sessions, resuming where the last one stopped.
  declare -A part_settings=()
  for part in $(seq 1 "${PARTS:-1}"); do
    committed="$here/scripts/parts/swinbob_demo_xsec_part$part.pt"
    if [ ! -d "$work/xsec-part$part" ] && [ -f "$committed" ]; then
      echo "part $part: no run folder here; its committed weights ($committed) start part $((part + 1))"
      continue
    fi
    init=()
    if [ "$part" -gt 1 ]; then
      previous="$work/xsec-part$((part - 1))/checkpoints/best.pt"
      [ -f "$previous" ] || previous="$here/scripts/parts/swinbob_demo_xsec_part$((part - 1)).pt"
      init=(--init-checkpoint "$previous")
    fi
    "$swinbob" train --dataset "$data/cases.csv" --dataset-scheme ukbob -o "$work/xsec-part$part" \
      --config "$here/Resources/Models/swinbob_demo_xsec.yaml" --set seed="$((part - 1))" \
      ${part_settings[$part]:-} "${init[@]}" "${@:2}"
  done
  exit 0
fi

# 4. Stage 1 (CPU, 2 cores: about 1 h 50 min for the committed max_steps; resumable): the unlabelled
#    body of the CT label maps is left out of the loss.
"$swinbob" train --dataset "$data/cases.csv" --dataset-scheme ukbob -o "$work/run" \
  --config "$here/Resources/Models/swinbob_demo.yaml" "${@:2}"

# 5. Stage 2 (about 40 min more; resumable): fine-tunes stage 1's best weights with partial labels on
#    the unlabelled body, on a 6 x 6 x 4 mm grid.
"$swinbob" train --dataset "$data/cases.csv" --dataset-scheme ukbob -o "$work/run2" \
  --config "$here/Resources/Models/swinbob_demo_stage2.yaml" \
  --init-checkpoint "$work/run/checkpoints/best.pt" "${@:2}"

# 6. Stage 3 (about 25 min more; resumable): a second cosine cycle from stage 2's best weights.
#    Its best.pt is the shipped model (scripts/package_demo_model.py).
"$swinbob" train --dataset "$data/cases.csv" --dataset-scheme ukbob -o "$work/run3" \
  --config "$here/Resources/Models/swinbob_demo_stage3.yaml" \
  --init-checkpoint "$work/run2/checkpoints/best.pt" "${@:2}"
