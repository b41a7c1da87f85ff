#!/usr/bin/env bash
# One prepared run of the GPU benchmarks on a machine with one NVIDIA GPU, under a time budget.
#
#   bash benchmarks/run_gpu.sh                 # from the repository root; results in $OUT (default /tmp/bench-out)
#
# Expects (the device tool's carry=[".gpu"] brings them):
#   .gpu/cifar10/{train,test}.parquet   CIFAR-10 (a copy of ../shared/data/cifar10)
#   .gpu/gpu_anchor.py                  a copy of ../shared/tools/gpu_anchor.py (the bare reference)
#   .gpu/site/                          pure-Python packages the GPU image lacks (omegaconf, antlr4),
#                                       put on PYTHONPATH
#   .gpu/wheels/ (optional)             kornia + kornia_rs wheels for the GPU's Python, for section 5
#                                       (7.3 MB: with the CIFAR copy the carry is ~66 of its 67 MB)
# Sections, in order of importance, each under its own `timeout`; a section that would not fit in
# what is left of BUDGET_S is skipped (and says so):
#   throughput (+ bench_augment in-process), stream_gpu, e2e_gpu, packing, anchor subset (same machine, bare
#   reference), augmentation libraries, throughput with trainer.compile=true.
# Each writes its JSON into $OUT; the log goes to $OUT/run_gpu.log.
set -u
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
BUDGET_S=${BUDGET_S:-500}
DATA=${DATA:-.gpu/cifar10}
export PYTHONUNBUFFERED=1
export SSLSWEEP_CACHE=${SSLSWEEP_CACHE:-/tmp/sslsweep-cache}
[ -d .gpu/site ] && export PYTHONPATH="$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
exec > >(tee -a "$OUT/run_gpu.log") 2>&1

left() { echo $((BUDGET_S - SECONDS)); }
section() {  # section NAME MAX_SECONDS CMD...
    local name=$1 max=$2; shift 2
    if [ "$(left)" -lt "$max" ]; then
        echo "=== $name: SKIPPED (needs up to ${max}s, $(left)s left)"; return
    fi
    echo "=== $name (up to ${max}s) at ${SECONDS}s: $*"
    local t0=$SECONDS
    timeout --kill-after=5 "$max" "$@"
    echo "=== $name: exit $? after $((SECONDS - t0))s"
}

echo "=== environment $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
$PY - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for m in ("torch", "torchvision", "numpy", "pyarrow", "PIL", "sklearn", "omegaconf", "yaml"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:
        print(m, "MISSING", e)
EOF

# 1. trial step vs bare loop (+ bench_augment: BatchAugment vs torchvision DataLoader, 14 workers)
section throughput 80 $PY benchmarks/throughput.py --device cuda --device-targets --augment-workers 14 --rounds 4

# 1b. issue 12: ResNet-50 at 224 px fed by the stream (nvJPEG) vs pre-decoded device tensors, and the data path alone
section stream_gpu 150 $PY benchmarks/stream_gpu.py --device cuda --workers 14

# 2. end to end: SimCLR ResNet-18 on CIFAR-10 through the trial's code path, 150 s of training
section e2e_gpu 210 $PY benchmarks/e2e_gpu.py --data "$DATA" --seconds 150

# 3. several trials per GPU
section packing 75 $PY benchmarks/packing.py --device cuda --configs small_cnn:256 resnet18:128 resnet18:512 --seconds 3 --warmup-s 1

# 4. the bare reference on this same machine (shared/tools/gpu_anchor.py's own functions, a subset):
#    train steps (bf16 + channels_last at b512 and b128, 4-layer CNN b512) and its GPU augmentation.
section anchor 45 $PY - <<'EOF'
import os, sys, time
sys.argv = [sys.argv[0]]
sys.path.insert(0, ".gpu")
import torch
import gpu_anchor as A
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
A.OUT = os.environ.get("OUT", "/tmp")
A.emit("device", gpu=torch.cuda.get_device_name(), torch=torch.__version__)
xg = torch.randint(0, 256, (1024, 3, 32, 32), dtype=torch.uint8, device="cuda")
dt = A.time_loop(lambda: A.gpu_augment(xg), 30, 2)
A.emit("gpu_aug", views_per_s=round(1024 * 30 / dt))
for args in (("step_bf16_cl", A.resnet18_cifar, 512, 512), ("step_bf16_cl_b128", A.resnet18_cifar, 512, 128),
             ("tiny_bf16_cl", A.tiny_cnn, 256, 512)):
    try:
        A.step_bench(*args, True, True, False, 30)
    except Exception as e:
        A.emit(args[0], error=repr(e)[:300])
EOF
[ -f "$OUT/anchor.json" ] && echo "anchor.json written"


# 5. BatchAugment vs the libraries the issue asks to prefer, batched on the GPU: torchvision v2 on
#    device tensors (per image; one draw per batch) and kornia (installed from .gpu/wheels/ when there)
if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
    $PY -m pip install --quiet --no-index --no-deps --target /tmp/gpu-wheels .gpu/wheels/*.whl \
        && export PYTHONPATH="/tmp/gpu-wheels${PYTHONPATH:+:$PYTHONPATH}"
fi
section augment_libraries 60 $PY benchmarks/bench_augment.py --device cuda --libraries --n 8192 --batch 512 \
    --workers 0 --rounds 3 --json augment_libraries.json

# 6. trainer.compile=true (first steps compile for tens of seconds)
section throughput_compile 120 $PY benchmarks/throughput.py --device cuda --compile --configs resnet18:512 \
    --cudnn-benchmark off --rounds 3 --skip-augment --json throughput_compile.json
echo "=== done in ${SECONDS}s; files:"; ls -la "$OUT"
