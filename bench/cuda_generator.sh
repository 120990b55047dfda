#!/usr/bin/env bash
# One call on a lent GPU (BENCHMARKS.md 3b and 8): the embedding latency after the upsampling fix,
# then the shipped generator trained on for MINUTES with its own recipe at batch 64, twice side by
# side: as it is (arm A) and with the recogniser's id and feature-map losses (arm B), which cost
# two recogniser passes a step and were only ever run for 400 steps on the CPU.
#
#   python bench/pretrain_generator.py bench/configs/pretrain/generator.yaml --out /tmp/pack \
#       --set faces_pack=gpu/faces.safetensors steps=0          # here: the faces, as JPEG (the caches are too big to send)
#   python -c "...": runs/cutouts-rmfrd-train-fit.safetensors with the pixels outside each mask zeroed
#       (paste never reads them), gzipped to gpu/cutouts-rmfrd-train-fit.safetensors.gz (8.3 -> 1.5 MB)
#   bash bench/cuda_generator.sh                                # there, with gpu/ carried
#   INIT_STEP=17100 LATENCY=0 ARMS=B MINUTES=5 SCHEDULE="steps=21300 cosine_start=17100 min_lr_ratio=0.1" \
#       bash bench/cuda_generator.sh   # the twentieth session's second call (B2), from the release before it
#
# INIT_STEP is the step the shipped generator was trained to (21,300 since the twentieth session;
# src/meer/default_model/PROVENANCE.md): the schedule and the step numbers go on from it.
#
# Back in $OUT: the logs, each arm's metrics.jsonl and its generator's weights (gen-A.safetensors,
# gen-B.safetensors; put them into the release with scripts/swap_refiner.py --part generator).
set -u
OUT=${OUT:-runs/cuda-generator}
MINUTES=${MINUTES:-5}
INIT_STEP=${INIT_STEP:-21300}  # the shipped generator's step (src/meer/default_model/PROVENANCE.md)
# shellcheck source=bench/cuda_env.sh
source bench/cuda_env.sh

if [ "${LATENCY:-1}" = 1 ]; then
  part "embedding latency after the upsampling fix"
  timeout 100 $PY bench/throughput.py --cuda --only inference 2>&1 | tee "$OUT/throughput.txt"
  timeout 45 $PY bench/upsample_layout.py --cuda --repeat 20 2>&1 | tee -a "$OUT/throughput.txt"
fi

ARMS=${ARMS:-A B}
part "the generator, $MINUTES minutes a run: arms $ARMS side by side"
gunzip -kf gpu/cutouts-rmfrd-train-fit.safetensors.gz
recipe="generator_arch=gated-encoder generator_occlusion=refined blend_dilate=4 blend_feather=4 edge=1.0 boundary=1 ssim=25
  init_generator=src/meer/default_model init_step=$INIT_STEP steps=1000000 lr=0.0001 min_lr_ratio=1.0 warmup_steps=25
  batch_size=64 device=cuda workers=$((14 / $(echo $ARMS | wc -w))) threads=1 faces_pack=gpu/faces.safetensors
  real_masks=gpu/cutouts-rmfrd-train-fit.safetensors real_mask_share=0.5
  eval_every=500 ckpt_every=100000 log_every=100 max_minutes=$MINUTES ${SCHEDULE:-}"
declare -A losses=([A]="" [B]="id=5 perceptual=2")  # A: the shipped recipe; B: with the id and feature-map losses
for arm in $ARMS; do
  # shellcheck disable=SC2086
  $PY bench/pretrain_generator.py bench/configs/pretrain/generator.yaml --out /tmp/gen-$arm --set $recipe ${losses[$arm]} \
    > "$OUT/gen-$arm.log" 2>&1 &
done
wait
for arm in $ARMS; do
  tail -4 "$OUT/gen-$arm.log"
  cp /tmp/gen-$arm/metrics.jsonl "$OUT/metrics-$arm.jsonl"
  $PY - "$arm" "$OUT" <<'EOF'
import sys
from pathlib import Path
from safetensors.torch import save_file
from meer.inference.checkpoint import latest_checkpoint, load_weights, split_state
arm, out = sys.argv[1:]
last = latest_checkpoint(Path(f"/tmp/gen-{arm}"))
save_file(split_state(load_weights(last), "model.generator"), f"{out}/gen-{arm}.safetensors", {"checkpoint": last.name})
print(f"arm {arm}: {last.name} -> {out}/gen-{arm}.safetensors")
EOF
done
part done
