# Sourced by the scripts for a lent GPU (bench/cuda_check.sh, bench/cuda_generator.sh): the
# output folder, the python that has torch with meer's sources on its path, a `part` header
# with the seconds since the start, and the machine written to $OUT/environment.txt.
# The sourcing script sets OUT's default before it sources this.
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
started=$SECONDS
part() { echo; echo "=== $1 ($((SECONDS - started)) s)"; }

part environment
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  $PY -c "import torch, platform; print('python', platform.python_version(), '| torch', torch.__version__,
'| CUDA', torch.version.cuda, '| cuDNN', torch.backends.cudnn.version(), '|', torch.cuda.get_device_name(0))"
  nproc; } 2>&1 | tee "$OUT/environment.txt"
