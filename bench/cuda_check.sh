#!/usr/bin/env bash
# Every GPU check in one go, for a machine with one CUDA device (BENCHMARKS.md section 3b):
#   1. the speed targets at the real scale: IResNet-50, 112x112, batch 128, bf16 (bench/throughput.py --cuda),
#      and bilinear upsampling in the two layouts (bench/upsample_layout.py --cuda);
#   2. the GPU tests (pytest -m gpu): mixed precision, the loss scaler, GPU vs CPU answers,
#      deterministic resume, torch.compile;
#   3. `meer train --config iresnet50` end to end on synthetic faces: images/s with the data
#      loader rendering masks, and peak GPU memory.
# Runs from the repository root with the python3 that has torch (meer itself need not be
# installed); logs go to $OUT (default runs/cuda-check). Each part has its own time limit, so
# one that hangs leaves the others' figures.
#
#   bash bench/cuda_check.sh            # under 10 minutes on an H200
set -u
OUT=${OUT:-runs/cuda-check}
# shellcheck source=bench/cuda_env.sh
source bench/cuda_env.sh

part "speed at the real scale"
timeout 200 $PY bench/throughput.py --cuda --only training --only inference 2>&1 | tee "$OUT/throughput.txt"
part "bilinear upsampling: the default layout against channels-last"
timeout 100 $PY bench/upsample_layout.py --cuda --repeat 20 2>&1 | tee "$OUT/upsample-layout.txt"

part "GPU tests"
timeout 150 $PY -m pytest -p no:cacheprovider -q -m gpu tests/integration/test_cuda.py -rA --durations=8 \
  --deselect tests/integration/test_cuda.py::test_compiled_training_matches_eager_training 2>&1 | tee "$OUT/tests.txt"

part "meer train --config iresnet50, end to end"
run=/tmp/meer-cuda-e2e
rm -rf "$run"
timeout 120 $PY -m meer train --config iresnet50 --out "$run" --quiet \
  --set data.source=synthetic --set data.synthetic_identities=1000 --set data.synthetic_images_per_identity=4 \
  --set data.workers="$(( $(nproc) - 2 ))" --set train.log_every=50 --set train.ckpt_every=100000 \
  --set optim.warmup_steps=50 --set train.tensorboard=false \
  --set "stages=[{name: recognition, steps: 200, train: [backbone, decouple, centres], losses: [recognition]},
{name: synthesis, steps: 100, train: [generator, discriminator], losses: [synthesis]},
{name: joint, steps: 100, train: [backbone, decouple, centres, generator, discriminator],
losses: [recognition, synthesis, feedback], lr_scale: 0.1}]" 2>&1 | tail -25 | tee "$OUT/e2e.txt"
$PY - "$run" <<'EOF' 2>&1 | tee -a "$OUT/e2e.txt"
import json, sys
rows = [json.loads(line) for line in open(f"{sys.argv[1]}/history.jsonl")]
for stage in ("recognition", "synthesis", "joint"):
    mine = [r for r in rows if r["stage"] == stage]
    steady = mine[1:] or mine  # the first window holds the loader's start and cuDNN's autotuning
    print(f"{stage:<12} images/s after the first window: {sum(r['images_per_s'] for r in steady) / len(steady):7.0f}"
          f"  (windows: {', '.join('%.0f' % r['images_per_s'] for r in mine)}); last total loss {mine[-1]['total']:.3f}")
EOF

part "torch.compile test"
timeout 240 $PY -m pytest -p no:cacheprovider -q -m gpu -rA --durations=2 \
  tests/integration/test_cuda.py::test_compiled_training_matches_eager_training 2>&1 | tee "$OUT/tests-compile.txt"
part done
