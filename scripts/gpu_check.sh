#!/usr/bin/env bash
# segdino on one CUDA GPU, in one go (about 8 minutes on an H100, by design; see README "On
# a GPU"): the tests marked `cuda` (bf16 autocast, CUDA graphs, pinned memory, NCCL DDP,
# ONNX Runtime's CUDA provider, each against the CPU's float32), then `segdino bench
# --device cuda` for ViT-S/16 and ViT-L/16 at 256 and 512 with every decoder.
#
#   scripts/gpu_check.sh [OUT]     OUT: a new folder (default gpu_check-<UTC time>)
#
# Uses .venv (made by `make install` when missing) or the Python in $PYTHON. Writes OUT/env.txt
# (GPU, driver, versions), OUT/tests.txt, OUT/bench.txt (every table, one after another) and
# OUT/bench-ARCH-SIZE-DECODER[-graphs].json. GPU_CHECK_FULL=1 also times CUDA graphs at 512 and
# for v1-proj and v2 (each is one more compilation: a minute or two more per row).
# Exit status: 0 when every test passed and every bench ran.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-gpu_check-$(date -u +%Y%m%d-%H%M%S)}
if [[ -e $OUT ]]; then
    echo "gpu_check.sh: $OUT exists; give a new folder" >&2
    exit 2
fi
if [[ -z ${PYTHON:-} ]]; then
    [[ -x .venv/bin/python ]] || make install || exit 2
    PYTHON=.venv/bin/python
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check.sh: torch sees no CUDA device (install a CUDA build of torch)" >&2
    exit 2
fi
mkdir -p "$OUT"
started=$SECONDS
failed=0

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$PYTHON" -c "import torch, segdino; print('torch', torch.__version__, 'cuda',
torch.version.cuda, 'segdino', segdino.__version__, 'gpus', torch.cuda.device_count())"
} | tee "$OUT/env.txt"

echo "== tests marked cuda" | tee "$OUT/tests.txt"
"$PYTHON" -m pytest -m cuda -rs -p no:cacheprovider 2>&1 | tee -a "$OUT/tests.txt"
(( PIPESTATUS[0] == 0 )) || failed=1

bench() {  # NAME, then segdino bench's flags
    local name=$1
    shift
    echo "== segdino bench $*" | tee -a "$OUT/bench.txt"
    "$PYTHON" -m segdino bench --device cuda --no-progress --warmup 3 --repeats 20 \
        --budget 10 --json "$OUT/$name.json" "$@" 2>&1 | tee -a "$OUT/bench.txt"
    (( PIPESTATUS[0] == 0 )) || failed=1
    echo | tee -a "$OUT/bench.txt"
}

for arch in vits16 vitl16; do
    for size in 256 512; do
        for decoder in v1 v1-proj v2; do
            # eager float32 and bf16 autocast, batch 1 and a large batch; a training step
            bench "bench-$arch-$size-$decoder" --arch "$arch" --size "$size" \
                --decoder "$decoder" --engines fp32 bf16 --batch-sizes 1 128 --train-batch 8
            # CUDA graphs (torch.compile, mode="reduce-overhead") at batch 1: latency
            if [[ $decoder == v1 && $size == 256 ]] || [[ ${GPU_CHECK_FULL:-0} == 1 ]]; then
                bench "bench-$arch-$size-$decoder-graphs" --arch "$arch" --size "$size" \
                    --decoder "$decoder" --engines bf16 compile-bf16 --batch-sizes 1 \
                    --train-batch 0
            fi
        done
    done
done

echo "gpu_check.sh: $((SECONDS - started)) s; results in $OUT/ (failed: $failed)" \
    | tee -a "$OUT/env.txt"
exit $failed
